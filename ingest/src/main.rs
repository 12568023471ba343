#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tally_common::service_main("ingest", tally_ingest::Settings::from_env, tally_ingest::run).await
}
