//! The write path: batch parts recorded and COPYed into `sensor_data` in one transaction,
//! each part exactly once.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures_util::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

use super::error::{Context, StoreError};
use super::Store;
use crate::model::envelope::{BatchPart, WireReading};

/// What one [`Store::write`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// Rows COPYed into `sensor_data`.
    pub rows: u64,
    /// Batch parts written by this call.
    pub parts_written: usize,
    /// Batch parts skipped because an earlier call had already written them.
    pub parts_skipped: usize,
    /// Readings in the skipped parts, not written again.
    pub rows_skipped: u64,
    /// Time spent in the binary COPY.
    pub copy_time: Duration,
}

/// Bound on [`Store`]'s cache of registered locations; past it the cache starts over.
const MAX_KNOWN_LOCATIONS: usize = 100_000;

impl Store {
    /// Writes batch parts in one transaction: records each `(batch id, part)` with its number
    /// of readings and COPYs the readings of the parts not recorded before. A part already
    /// written (a redelivered message, a retried request) is skipped, so each part's rows
    /// land exactly once.
    pub async fn write(&self, parts: &[&BatchPart]) -> Result<WriteReport, StoreError> {
        self.ready().await?;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await.ctx("starting the write")?;

        let ids: Vec<&str> = parts.iter().map(|p| p.id.as_str()).collect();
        let nums: Vec<i32> = parts.iter().map(|p| p.part as i32).collect();
        // How many readings each part holds, so that a batch's record says when all of it
        // is in the table (`loadtest --verify` times the lag by it).
        let sizes: Vec<i32> = parts
            .iter()
            .map(|p| i32::try_from(p.readings.len()).unwrap_or(i32::MAX))
            .collect();
        let new: HashSet<(String, i32)> = tx
            .query(
                "INSERT INTO ingest_batches (batch_id, part, readings)
                 SELECT * FROM unnest($1::text[], $2::int4[], $3::int4[])
                 ON CONFLICT DO NOTHING
                 RETURNING batch_id, part",
                &[&ids, &nums, &sizes],
            )
            .await
            .ctx("recording batch ids")?
            .into_iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();

        let mut report = WriteReport::default();
        let mut seen = HashSet::new();
        let mut rows: Vec<&WireReading> = Vec::new();
        for part in parts {
            let key = (part.id.clone(), part.part as i32);
            if !new.contains(&key) || !seen.insert(key) {
                report.parts_skipped += 1;
                report.rows_skipped += part.readings.len() as u64;
                continue;
            }
            report.parts_written += 1;
            rows.extend(&part.readings);
        }
        // In (location, time) order, each location's rows go into the (location, time)
        // index one after another, on the same leaf pages, instead of at a thousand places
        // in turn: the COPY costs the server about a quarter less CPU.
        rows.sort_unstable_by(|a, b| (a.1.as_str(), a.0).cmp(&(b.1.as_str(), b.0)));

        let copy_started = Instant::now();
        let sink = tx
            .copy_in("COPY sensor_data (time, location, temperature) FROM STDIN (FORMAT binary)")
            .await
            .ctx("starting COPY")?;
        let writer = BinaryCopyInWriter::new(sink, &[Type::TIMESTAMPTZ, Type::TEXT, Type::FLOAT8]);
        pin_mut!(writer);
        for r in rows {
            let time = r.time()?;
            writer
                .as_mut()
                .write(&[&time, &r.1, &r.2])
                .await
                .ctx("copying readings")?;
        }
        report.rows = writer.finish().await.ctx("finishing COPY")?;
        report.copy_time = copy_started.elapsed();

        // Register locations this process has not seen written yet (for /sensor/latest).
        let fresh: Vec<&str> = {
            let known = self
                .known_locations
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let mut fresh: Vec<&str> = parts
                .iter()
                .filter(|p| new.contains(&(p.id.clone(), p.part as i32)))
                .flat_map(|p| p.readings.iter().map(|r| r.1.as_str()))
                .filter(|l| !known.contains(*l))
                .collect();
            fresh.sort_unstable();
            fresh.dedup();
            fresh
        };
        if !fresh.is_empty() {
            tx.execute(
                "INSERT INTO sensor_locations (location) SELECT unnest($1::text[])
                 ON CONFLICT DO NOTHING",
                &[&fresh],
            )
            .await
            .ctx("registering locations")?;
        }
        tx.commit().await.ctx("committing the write")?;
        let mut known = self
            .known_locations
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if known.len() + fresh.len() > MAX_KNOWN_LOCATIONS {
            known.clear();
        }
        known.extend(fresh.into_iter().map(str::to_owned));
        Ok(report)
    }
}
