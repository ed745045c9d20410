//! The sample SQS event in events/ runs through the handler, so it never rots.

use aws_lambda_events::event::sqs::SqsEvent;
use readings::testing::{event, TestDb};
use readings::writer::Writer;

#[tokio::test]
async fn sample_sqs_event_is_written() {
    let event: SqsEvent = serde_json::from_value(event("sqs-batch.json")).unwrap();
    let messages = event.records.len();
    assert!(messages >= 3, "the sample should show several messages");

    let db = TestDb::new().await;
    let writer = Writer::new(db.store.clone());
    let response = writer.handle(event.clone(), soon()).await;
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    let expected: usize = event
        .records
        .iter()
        .flat_map(|m| {
            readings::model::envelope::decode(m.body.as_deref().unwrap())
                .unwrap()
                .batches
        })
        .map(|b| b.readings.len())
        .sum();
    assert_eq!(db.count().await, expected as i64);

    // Delivered again: nothing more is written.
    let again = writer.handle(event, soon()).await;
    assert!(again.batch_item_failures.is_empty());
    assert_eq!(db.count().await, expected as i64);
}

fn soon() -> std::time::Instant {
    std::time::Instant::now() + std::time::Duration::from_secs(20)
}
