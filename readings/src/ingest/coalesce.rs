//! Coalescing in the long-running host: readings of concurrent requests share SQS messages.
//!
//! Under Lambda each request is its own invocation, but a local (or container) ingest
//! service would otherwise send one tiny message per one-reading POST. Requests hand their
//! validated readings to one collector task, which waits at most `linger` for more, packs
//! every request's batch into shared envelopes (each request keeps its own batch id, so the
//! exactly-once scheme holds), sends them, and only then answers each request.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::model::envelope::Packer;
use crate::model::reading::Reading;
use crate::queue::{QueueError, Sender};

/// How many requests may wait for the collector before submitters feel back-pressure.
const QUEUE_DEPTH: usize = 10_000;

struct Job {
    batch_id: String,
    readings: Vec<Reading>,
    done: oneshot::Sender<Result<usize, QueueError>>,
}

/// A handle to the collector task.
#[derive(Clone)]
pub struct Coalescer {
    jobs: mpsc::Sender<Job>,
}

impl Coalescer {
    /// Starts the collector. It stops when every handle is dropped.
    pub fn start(sender: Sender, linger: Duration) -> Coalescer {
        let (jobs, rx) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(collect(rx, sender, linger));
        Coalescer { jobs }
    }

    /// Enqueues one request's readings; resolves once they are on the queue. Returns how
    /// many messages the shared send used.
    pub async fn submit(
        &self,
        batch_id: String,
        readings: Vec<Reading>,
    ) -> Result<usize, QueueError> {
        let (done, answer) = oneshot::channel();
        let job = Job {
            batch_id,
            readings,
            done,
        };
        self.jobs
            .send(job)
            .await
            .map_err(|_| QueueError::Unavailable("the coalescing task has stopped".into()))?;
        answer.await.map_err(|_| {
            QueueError::Unavailable("the coalescing task dropped the request".into())
        })?
    }
}

async fn collect(mut rx: mpsc::Receiver<Job>, sender: Sender, linger: Duration) {
    // One SendMessageBatch call carries at most this much.
    let flush_at = sender.max_message_bytes();
    while let Some(first) = rx.recv().await {
        let deadline = Instant::now() + linger;
        let mut packer = Packer::new(sender.packing_bytes(), chrono::Utc::now());
        let mut waiting = Vec::new();
        let mut take =
            |job: Job, packer: &mut Packer| match packer.add(&job.batch_id, &job.readings) {
                Ok(()) => waiting.push(job.done),
                // A reading no message can hold; validation keeps this from happening.
                Err(e) => {
                    let _ = job.done.send(Err(QueueError::Rejected(e.to_string())));
                }
            };
        take(first, &mut packer);
        while packer.len() < flush_at {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(job)) => take(job, &mut packer),
                Ok(None) | Err(_) => break,
            }
        }
        let bodies = packer.finish();
        let sender = sender.clone();
        // Send in the background so the next requests are collected meanwhile.
        tokio::spawn(async move {
            let messages = bodies.len();
            let result = sender.send_all(bodies).await;
            for done in waiting {
                let _ = done.send(match &result {
                    Ok(()) => Ok(messages),
                    Err(e) => Err(e.clone()),
                });
            }
        });
    }
}
