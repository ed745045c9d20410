//! `stats` and `peek`: reading the dead-letter queue.

use std::collections::BTreeMap;

use anyhow::Result;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;

use crate::message::{DeadMessage, Filter, Summary};
use crate::scan::scan;
use crate::sqs::{self, Depth};
use crate::ui::Ui;
use crate::Queues;

/// Scans the whole DLQ (or up to `limit` matches) and releases it again.
async fn read_dead_letters(
    q: &Queues<'_>,
    ui: Ui,
    dlq: &str,
    filter: &Filter,
    limit: Option<usize>,
    expected: Option<u64>,
) -> Result<Vec<DeadMessage>> {
    let bar = ui.progress(expected, "scanning the dead-letter queue");
    let mut scanned = scan(q.client, dlq, filter, limit, &bar).await?;
    bar.finish_and_clear();
    let messages = std::mem::take(&mut scanned.matched);
    scanned.release().await?;
    Ok(messages)
}

pub(crate) async fn stats(q: &Queues<'_>, ui: Ui) -> Result<()> {
    let dlq = q.dlq().await?;
    let main = match q.main_if_given() {
        Some(url) => Some((url, sqs::depth(q.client, url).await?)),
        None => None,
    };
    let dlq_depth = sqs::depth(q.client, &dlq).await?;
    let messages = read_dead_letters(
        q,
        ui,
        &dlq,
        &Filter::default(),
        None,
        Some(dlq_depth.visible),
    )
    .await?;

    let now = Utc::now();
    let oldest_age = messages
        .iter()
        .filter_map(|m| m.sent_at)
        .min()
        .map(|t| (now - t).num_seconds().max(0));
    let mut by_class: BTreeMap<&str, u64> = BTreeMap::new();
    let mut by_reason: BTreeMap<(&str, String), u64> = BTreeMap::new();
    for m in &messages {
        *by_class.entry(m.class()).or_default() += 1;
        *by_reason.entry((m.class(), m.reason())).or_default() += 1;
    }
    let mut reasons: Vec<((&str, String), u64)> = by_reason.into_iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));

    if ui.json {
        let depth_json = |url: &str, d: Depth| json!({"url": url, "visible": d.visible, "in_flight": d.in_flight, "delayed": d.delayed});
        let mut dlq_json = depth_json(&dlq, dlq_depth);
        dlq_json["scanned"] = json!(messages.len());
        dlq_json["oldest_age_seconds"] = json!(oldest_age);
        dlq_json["by_class"] = json!(by_class);
        dlq_json["by_reason"] = reasons
            .iter()
            .map(|((class, reason), count)| json!({"class": class, "reason": reason, "count": count}))
            .collect();
        let main_json = main.map(|(url, d)| {
            let mut j = depth_json(url, d);
            // SQS reports it only through CloudWatch; this tool never receives from the main queue.
            j["oldest_age_seconds"] = serde_json::Value::Null;
            j
        });
        return ui.print_json(&json!({"main_queue": main_json, "dead_letter_queue": dlq_json}));
    }

    println!(
        "{:<12} {:>9} {:>10} {:>8}  oldest",
        "queue", "visible", "in flight", "delayed"
    );
    if let Some((_, d)) = main {
        println!(
            "{:<12} {:>9} {:>10} {:>8}  n/a",
            "main", d.visible, d.in_flight, d.delayed
        );
    }
    println!(
        "{:<12} {:>9} {:>10} {:>8}  {}",
        "dead-letter",
        dlq_depth.visible,
        dlq_depth.in_flight,
        dlq_depth.delayed,
        oldest_age.map_or_else(|| "-".to_owned(), age)
    );
    println!("\n{} dead letters scanned", messages.len());
    if !by_class.is_empty() {
        println!("\nby class:");
        for (class, count) in &by_class {
            println!("  {count:>7}  {class}");
        }
        println!("\nby reason:");
        for ((class, reason), count) in &reasons {
            println!("  {count:>7}  {class:<19}  {}", one_line(reason, 160));
        }
    }
    Ok(())
}

pub(crate) async fn peek(q: &Queues<'_>, ui: Ui, filter: &Filter, count: usize) -> Result<()> {
    let dlq = q.dlq().await?;
    let messages = read_dead_letters(q, ui, &dlq, filter, Some(count), None).await?;
    if ui.json {
        let list: Vec<serde_json::Value> = messages.iter().map(message_json).collect();
        return ui.print_json(&json!(list));
    }
    for m in &messages {
        print_message(m);
        println!();
    }
    match messages.len() {
        0 => println!("no matching dead letters"),
        n if n == count => {
            println!("{n} shown; there may be more (-n raises the limit)")
        }
        n => println!("{n} shown"),
    }
    Ok(())
}

/// A dead letter in JSON: attributes, class, reason and a summary of the readings.
pub(crate) fn message_json(m: &DeadMessage) -> serde_json::Value {
    json!({
        "message_id": m.message_id,
        "class": m.class(),
        "reason": m.reason(),
        "failed_at": m.failed_at().map(rfc3339),
        "sent_timestamp": m.sent_at.map(rfc3339),
        "enqueued_at": m.enqueued_at().map(rfc3339),
        "receive_count": m.receive_count,
        "attributes": m.attributes,
        "summary": m.summary(),
        "body": m.body,
    })
}

pub(crate) fn print_message(m: &DeadMessage) {
    // The writer's receive count when it gave up; for redriven messages, SQS's own count.
    let receives = m
        .attributes
        .get(readings::queue::deadletter::ATTR_RECEIVE_COUNT)
        .cloned()
        .or_else(|| m.receive_count.map(|n| n.to_string()))
        .unwrap_or_else(|| "?".to_owned());
    println!(
        "{}  {}  failed {} after {receives} receive(s)",
        m.message_id,
        m.class(),
        m.failed_at().map_or_else(|| "?".to_owned(), rfc3339),
    );
    println!("  reason:    {}", one_line(&m.reason(), 300));
    for (name, label) in [
        (readings::queue::deadletter::ATTR_ORIGINAL_ID, "original:"),
        (readings::queue::deadletter::ATTR_SQLSTATE, "sqlstate:"),
    ] {
        if let Some(v) = m.attributes.get(name) {
            println!("  {label:<10} {v}");
        }
    }
    match m.summary() {
        Summary::Readings {
            parts,
            readings,
            locations,
            first,
            last,
        } => {
            let names: Vec<String> = parts.iter().take(5).map(|p| p.part.clone()).collect();
            let more = if parts.len() > 5 { ", ..." } else { "" };
            println!(
                "  readings:  {readings} in {} part(s) ({}{more}), {locations} location(s), {} .. {}",
                parts.len(),
                names.join(", "),
                first.map_or_else(|| "?".to_owned(), rfc3339),
                last.map_or_else(|| "?".to_owned(), rfc3339),
            );
        }
        Summary::Undecodable {
            error,
            body_preview,
        } => {
            println!("  body:      {}", one_line(&error, 200));
            println!("  starts:    {}", one_line(&body_preview, 200));
        }
    }
}

pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > max {
        format!("{}...", flat.chars().take(max).collect::<String>())
    } else {
        flat
    }
}

fn age(secs: i64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}
