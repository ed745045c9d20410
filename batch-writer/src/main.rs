#[tokio::main]
async fn main() -> anyhow::Result<()> {
    readings::telemetry::init();
    batch_writer::run().await
}
