#[tokio::main]
async fn main() -> anyhow::Result<()> {
    readings::observability::telemetry::init();
    batch_writer::run().await
}
