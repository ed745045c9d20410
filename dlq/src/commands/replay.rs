//! `replay`: dead letters back to the main queue.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;
use tokio::time::Instant;

use super::report::rfc3339;
use crate::message::{AgeLimit, DeadMessage, Filter};
use crate::scan::{scan, Scan, HOLD};
use crate::sqs::{self, Outgoing, MAX_BATCH_ENTRIES};
use crate::ui::Ui;
use crate::Queues;
use readings::queue::deadletter::{ATTR_ENQUEUED_AT, ATTR_REPLAY_FORCED};

/// Messages per second a replay without --rate is assumed to reach at worst, to size the
/// visibility timeout of the selected messages.
const ASSUMED_RATE: f64 = 20.0;

#[derive(Debug, Clone, Copy)]
pub(crate) struct ReplayOptions {
    pub max: Option<usize>,
    pub rate: Option<f64>,
    pub dry_run: bool,
    /// Dead letters older than this are refused without `force`.
    pub age: AgeLimit,
    pub force: bool,
}

pub(crate) async fn replay(
    q: &Queues<'_>,
    ui: Ui,
    filter: &Filter,
    options: ReplayOptions,
) -> Result<()> {
    let main = q.main()?.to_owned();
    let dlq = q.dlq().await?;
    if main == dlq {
        bail!("the main queue and the dead-letter queue are the same queue ({main})");
    }
    let depth = sqs::depth(q.client, &dlq).await?;
    let bar = ui.progress(Some(depth.visible), "scanning the dead-letter queue");
    let mut scanned = scan(q.client, &dlq, filter, options.max, &bar).await?;
    bar.finish_and_clear();
    let selected = std::mem::take(&mut scanned.matched);
    let skipped = scanned.skipped;
    if let Err(refused) = options.age.check(&selected, options.force, "replay") {
        scanned.release().await?;
        return Err(refused);
    }

    if options.dry_run {
        scanned.release().await?;
        if ui.json {
            let list: Vec<_> = selected
                .iter()
                .map(|m| {
                    json!({"message_id": m.message_id, "class": m.class(), "reason": m.reason(),
                           "failed_at": m.failed_at().map(rfc3339)})
                })
                .collect();
            return ui.print_json(&json!({
                "dry_run": true, "would_move": selected.len(), "skipped": skipped, "messages": list,
            }));
        }
        for m in &selected {
            println!("would move {}  {}  {}", m.message_id, m.class(), m.reason());
        }
        println!(
            "dry run: would move {}, skipped {skipped} by filter; nothing moved",
            selected.len()
        );
        return Ok(());
    }

    let moved = move_to_main(q, ui, &mut scanned, &selected, &dlq, &main, options).await;
    let released = scanned.release().await;
    let (moved, interrupted) = moved?;
    released?;
    if ui.json {
        ui.print_json(&json!({
            "dry_run": false, "moved": moved, "skipped": skipped, "interrupted": interrupted,
        }))?;
    } else {
        println!("moved {moved}, skipped {skipped} by filter");
    }
    if interrupted {
        bail!(
            "interrupted: {} of the {} selected messages were not moved; run the replay again",
            selected.len() - moved,
            selected.len()
        );
    }
    Ok(())
}

/// The message a replay sends for `m`: its body, the time its readings were first enqueued
/// when the body does not say it (version 1) and, for a dead letter older than the
/// batch records replayed with `--force`, the mark that has the writer write it anyway.
fn replayed(m: &DeadMessage, options: &ReplayOptions) -> Outgoing {
    let mut out = Outgoing::new(m.body.clone());
    if !m.body_says_when() {
        if let Some(t) = m.enqueued_at() {
            out.attributes
                .insert(ATTR_ENQUEUED_AT.to_owned(), t.to_rfc3339());
        }
    }
    if options.force && options.age.expired(m) {
        out.attributes
            .insert(ATTR_REPLAY_FORCED.to_owned(), "true".to_owned());
    }
    out
}

/// Sends each selected message to the main queue, then deletes it from the DLQ, a batch at
/// a time; stops early on Ctrl-C. Returns (moved, interrupted).
async fn move_to_main(
    q: &Queues<'_>,
    ui: Ui,
    scanned: &mut Scan,
    selected: &[DeadMessage],
    dlq: &str,
    main: &str,
    options: ReplayOptions,
) -> Result<(usize, bool)> {
    let rate = options.rate;
    let sender = sqs::sender(q.client, main).await?;
    // Keep the selection hidden for as long as the move may take (paced by --rate, else
    // assuming a slow endpoint), so no message shows up again on the DLQ half-way.
    let expected = selected.len() as f64 / rate.unwrap_or(ASSUMED_RATE);
    if expected > HOLD.as_secs_f64() / 2.0 {
        let ids: Vec<&str> = selected.iter().map(|m| m.message_id.as_str()).collect();
        scanned
            .extend(&ids, Duration::from_secs_f64(expected + HOLD.as_secs_f64()))
            .await?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let on_signal = stop.clone();
    let signal = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.store(true, Ordering::SeqCst);
        }
    });

    let group_size = rate.map_or(MAX_BATCH_ENTRIES, |r| {
        (r.floor() as usize).clamp(1, MAX_BATCH_ENTRIES)
    });
    let bar = ui.progress(Some(selected.len() as u64), "replaying");
    let started = Instant::now();
    let mut moved = 0;
    let mut interrupted = false;
    for group in selected.chunks(group_size) {
        if stop.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        let outgoing: Vec<Outgoing> = group.iter().map(|m| replayed(m, &options)).collect();
        sqs::send(&sender, &outgoing)
            .await
            .with_context(|| stopped(moved))?;
        let receipts: Vec<String> = group
            .iter()
            .filter_map(|m| scanned.receipt(&m.message_id).map(str::to_owned))
            .collect();
        let receipts: Vec<&str> = receipts.iter().map(String::as_str).collect();
        sqs::delete_batch(q.client, dlq, &receipts)
            .await
            .with_context(|| stopped(moved))?;
        for m in group {
            scanned.consumed(&m.message_id);
        }
        moved += group.len();
        bar.inc(group.len() as u64);
        if let Some(rate) = rate {
            tokio::time::sleep_until(started + Duration::from_secs_f64(moved as f64 / rate)).await;
        }
    }
    signal.abort();
    bar.finish_and_clear();
    Ok((moved, interrupted))
}

fn stopped(moved: usize) -> String {
    format!("replay stopped after moving {moved} messages (the batch in flight may have been sent without being deleted, which is harmless); run it again to continue")
}

/// `replay --native`: SQS's own StartMessageMoveTask, from the DLQ to the main queue.
pub(crate) async fn replay_native(q: &Queues<'_>, ui: Ui, rate: Option<f64>) -> Result<()> {
    let main = q.main()?.to_owned();
    let dlq = q.dlq().await?;
    let source = sqs::queue_arn(q.client, &dlq).await?;
    let destination = sqs::queue_arn(q.client, &main).await?;
    let out = q
        .client
        .start_message_move_task()
        .source_arn(&source)
        .destination_arn(&destination)
        .set_max_number_of_messages_per_second(rate.map(|r| r.round().max(1.0) as i32))
        .send()
        .await
        .map_err(|e| {
            anyhow!(
                "StartMessageMoveTask failed on the SQS endpoint {}: {}. This endpoint may not support native message moves (moto does not); run `dlq replay` without --native to move the messages one by one",
                sqs::endpoint_name(q.client),
                sqs::describe(e)
            )
        })?;
    let handle = out.task_handle.unwrap_or_default();
    if ui.json {
        return ui.print_json(&json!({
            "native": true, "task_handle": handle, "source_arn": source, "destination_arn": destination,
        }));
    }
    println!("SQS is moving every message from {source} to {destination} (task {handle}); `dlq stats` shows the progress");
    Ok(())
}
