//! `purge`: empty the dead-letter queue.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;

use crate::scan::HOLD;
use crate::sqs::{self, MAX_BATCH_ENTRIES};
use crate::ui::Ui;
use crate::Queues;

pub(crate) async fn purge(q: &Queues<'_>, ui: Ui, yes: bool) -> Result<()> {
    let dlq = q.dlq().await?;
    let depth = sqs::depth(q.client, &dlq).await?;
    if !yes {
        confirm(&format!(
            "This deletes every message on {dlq} (about {} visible, {} in flight).",
            depth.visible, depth.in_flight
        ))?;
    }
    let (method, deleted) = match q.client.purge_queue().queue_url(&dlq).send().await {
        Ok(_) => ("purge_queue", None),
        Err(e) => {
            eprintln!(
                "PurgeQueue was refused ({}); receiving and deleting instead",
                sqs::describe(e)
            );
            (
                "receive_delete",
                Some(receive_and_delete(q, ui, &dlq).await?),
            )
        }
    };
    if ui.json {
        return ui.print_json(&json!({
            "queue": dlq, "method": method, "deleted": deleted, "before": depth,
        }));
    }
    match deleted {
        None => println!(
            "purged {dlq} (about {} messages); on AWS the purge takes up to 60 seconds",
            depth.visible + depth.in_flight
        ),
        Some(n) => println!("deleted {n} messages from {dlq}"),
    }
    Ok(())
}

/// Asks on the terminal; refuses without one.
fn confirm(what: &str) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!("refusing to purge without --yes: there is no terminal to confirm on");
    }
    eprint!("{what}\nType 'yes' to go on: ");
    std::io::stderr().flush().context("writing the prompt")?;
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("reading the answer")?;
    if answer.trim() != "yes" {
        bail!("not purged");
    }
    Ok(())
}

/// Deletes every message it can receive; messages other consumers hold are not reached.
async fn receive_and_delete(q: &Queues<'_>, ui: Ui, dlq: &str) -> Result<u64> {
    let bar = ui.progress(None, "deleting");
    let mut deleted = 0;
    loop {
        let out = q
            .client
            .receive_message()
            .queue_url(dlq)
            .max_number_of_messages(MAX_BATCH_ENTRIES as i32)
            .visibility_timeout(HOLD.as_secs() as i32)
            .wait_time_seconds(1)
            .send()
            .await
            .map_err(|e| anyhow!(sqs::describe(e)))
            .with_context(|| format!("receiving from {dlq} after deleting {deleted} messages"))?;
        let receipts: Vec<&str> = out
            .messages()
            .iter()
            .filter_map(|m| m.receipt_handle())
            .collect();
        if receipts.is_empty() {
            break;
        }
        let n = sqs::delete_batch(q.client, dlq, &receipts).await? as u64;
        deleted += n;
        bar.inc(n);
    }
    bar.finish_and_clear();
    Ok(deleted)
}
