#[tokio::main]
async fn main() -> anyhow::Result<()> {
    readings::observability::telemetry::init();
    query_api::run().await
}
