#[tokio::main]
async fn main() -> anyhow::Result<()> {
    readings::observability::telemetry::init();
    match std::env::args().nth(1).as_deref() {
        None => batch_writer::run().await,
        Some("migrate") => batch_writer::migrate().await,
        Some(other) => anyhow::bail!(
            "unknown command {other:?}: batch-writer runs the writer (no arguments) or `batch-writer migrate`"
        ),
    }
}
