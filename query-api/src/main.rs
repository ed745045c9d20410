#[tokio::main]
async fn main() -> anyhow::Result<()> {
    readings::telemetry::init();
    query_api::run().await
}
