#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tally_common::service_main(
        "projector",
        tally_projector::Settings::from_env,
        tally_projector::run,
    )
    .await
}
