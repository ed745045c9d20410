#[tokio::main]
async fn main() -> anyhow::Result<()> {
    readings::telemetry::init();
    ingest_api::run().await
}
