//! The benchmark (see BENCHMARKS.md).

pub async fn run(endpoints: anyhow::Result<crate::Endpoints>) -> anyhow::Result<()> {
    let _ = endpoints?;
    anyhow::bail!("the benchmark is not written yet")
}
