#[tokio::main]
async fn main() -> anyhow::Result<()> {
    readings::observability::telemetry::init();
    ingest_api::run().await
}
