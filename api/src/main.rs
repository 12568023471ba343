#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tally_common::service_main("api", tally_api::Settings::from_env, tally_api::run).await
}
