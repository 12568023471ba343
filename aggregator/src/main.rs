#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tally_common::service_main(
        "aggregator",
        tally_aggregator::Settings::from_env,
        tally_aggregator::run,
    )
    .await
}
