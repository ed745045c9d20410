//! The write path: batch parts recorded and COPYed into `sensor_data` in one transaction,
//! each reading exactly once.
//!
//! A version-2 part names its readings by their offsets in the batch (see
//! [`crate::model::envelope`]). `written_batches` keeps, per batch id, the batch's size and
//! the offsets written so far (an `int4multirange`); a write COPYs exactly the offsets not
//! written before, whatever parts they arrive in: a redelivered message, a retried request
//! packed at another message size, or a part split differently. The row of a batch is
//! inserted (`ON CONFLICT DO NOTHING`, which waits for a concurrent writer of the same
//! batch) or locked (`FOR UPDATE`) before its offsets are read, so two writers of one batch
//! take turns. A part that says its batch has another size than the one recorded names
//! other readings under the same id; it is refused ([`StoreError::PartMismatch`]) rather
//! than written or skipped. Version-1 parts are recorded by `(batch id, part number)` in
//! `ingest_batches`, as they always were.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use futures_util::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

use super::error::{Context, StoreError};
use super::Store;
use crate::model::envelope::{BatchPart, Place, WireReading};

/// What one [`Store::write`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// Rows COPYed into `sensor_data`.
    pub rows: u64,
    /// Batch parts of which this call wrote at least one reading.
    pub parts_written: usize,
    /// Batch parts every reading of which an earlier call (or another part) had written.
    pub parts_skipped: usize,
    /// Readings not written because they already were.
    pub rows_skipped: u64,
    /// Time spent in the binary COPY.
    pub copy_time: Duration,
}

/// Bound on [`Store`]'s cache of registered locations; past it the cache starts over.
const MAX_KNOWN_LOCATIONS: usize = 100_000;

/// Half-open ranges of offsets, sorted and disjoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Offsets(Vec<(u32, u32)>);

impl Offsets {
    fn from_bounds(lower: &[i32], upper: &[i32]) -> Offsets {
        let mut o = Offsets::default();
        for (&l, &u) in lower.iter().zip(upper) {
            o.add(l.max(0) as u32, u.max(0) as u32);
        }
        o
    }

    /// Adds `[start, end)`.
    fn add(&mut self, start: u32, end: u32) {
        if start >= end {
            return;
        }
        let (mut start, mut end) = (start, end);
        let mut kept = Vec::with_capacity(self.0.len() + 1);
        for &(s, e) in &self.0 {
            if e < start || s > end {
                kept.push((s, e));
            } else {
                start = start.min(s);
                end = end.max(e);
            }
        }
        kept.push((start, end));
        kept.sort_unstable();
        self.0 = kept;
    }

    /// The pieces of `[start, end)` not in these offsets, in order.
    fn missing(&self, start: u32, end: u32) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        let mut at = start;
        for &(s, e) in &self.0 {
            if e <= at {
                continue;
            }
            if s >= end {
                break;
            }
            if s > at {
                out.push((at, s));
            }
            at = at.max(e);
            if at >= end {
                break;
            }
        }
        if at < end {
            out.push((at, end));
        }
        out
    }

    fn len(&self) -> u64 {
        self.0.iter().map(|&(s, e)| u64::from(e - s)).sum()
    }
}

/// What one call knows of a version-2 batch.
#[derive(Default)]
struct Batch {
    /// The size its parts give.
    of: u32,
    /// Offsets written before this call (from `written_batches`).
    done: Offsets,
    /// Offsets this call has taken a reading for.
    taken: Offsets,
}

impl Store {
    /// Writes batch parts in one transaction, COPYing each reading not written before and
    /// recording it, so each reading lands exactly once however often and however packed it
    /// arrives. Gives up by `deadline`: then the statement in progress is cancelled on the
    /// server, the connection is closed instead of going back to the pool, and nothing of
    /// the transaction is kept.
    pub async fn write(
        &self,
        parts: &[&BatchPart],
        deadline: Instant,
    ) -> Result<WriteReport, StoreError> {
        self.ready().await?;
        self.within(deadline, "the write", async |client| {
            self.write_on(client, parts).await
        })
        .await
    }

    async fn write_on(
        &self,
        client: &mut deadpool_postgres::Client,
        parts: &[&BatchPart],
    ) -> Result<WriteReport, StoreError> {
        let tx = client.transaction().await.ctx("starting the write")?;

        // Version 1: (batch id, part number) keys, as before.
        let numbered: Vec<&BatchPart> = parts
            .iter()
            .copied()
            .filter(|p| matches!(p.place, Place::Numbered(_)))
            .collect();
        let mut new_numbered: HashSet<(String, i32)> = HashSet::new();
        if !numbered.is_empty() {
            let ids: Vec<&str> = numbered.iter().map(|p| p.id.as_str()).collect();
            let nums: Vec<i32> = numbered
                .iter()
                .map(|p| match p.place {
                    Place::Numbered(n) => n as i32,
                    Place::Range { .. } => -1,
                })
                .collect();
            let sizes: Vec<i32> = numbered
                .iter()
                .map(|p| i32::try_from(p.readings.len()).unwrap_or(i32::MAX))
                .collect();
            new_numbered = tx
                .query(
                    "INSERT INTO ingest_batches (batch_id, part, readings)
                     SELECT * FROM unnest($1::text[], $2::int4[], $3::int4[])
                     ON CONFLICT DO NOTHING
                     RETURNING batch_id, part",
                    &[&ids, &nums, &sizes],
                )
                .await
                .ctx("recording batch parts")?
                .into_iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect();
        }

        // Version 2: the offsets of each batch.
        let mut batches: BTreeMap<&str, Batch> = BTreeMap::new();
        for p in parts {
            if let Place::Range { of, .. } = p.place {
                let b = batches.entry(p.id.as_str()).or_default();
                if b.of != 0 && b.of != of {
                    return Err(StoreError::PartMismatch(format!(
                        "batch {}: one part says the batch holds {} readings, another {of}",
                        p.id, b.of
                    )));
                }
                b.of = of;
            }
        }
        let incoming = |filter: &dyn Fn(&str) -> bool| {
            let mut cols = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for p in parts {
                if let (Some(r), Place::Range { of, .. }) = (p.offsets(), p.place) {
                    if filter(&p.id) {
                        cols.0.push(p.id.as_str());
                        cols.1.push(r.start as i32);
                        cols.2.push(r.end as i32);
                        cols.3.push(of as i32);
                    }
                }
            }
            cols
        };
        if !batches.is_empty() {
            let (ids, firsts, ends, ofs) = incoming(&|_| true);
            let new: HashSet<String> = tx
                .query(
                    "INSERT INTO written_batches (batch_id, readings, written)
                     SELECT id, min(of), range_agg(int4range(f, e))
                     FROM unnest($1::text[], $2::int4[], $3::int4[], $4::int4[]) AS t(id, f, e, of)
                     GROUP BY id ORDER BY id
                     ON CONFLICT (batch_id) DO NOTHING
                     RETURNING batch_id",
                    &[&ids, &firsts, &ends, &ofs],
                )
                .await
                .ctx("recording batch offsets")?
                .into_iter()
                .map(|row| row.get(0))
                .collect();
            let known: Vec<&str> = batches
                .keys()
                .copied()
                .filter(|id| !new.contains(*id))
                .collect();
            if !known.is_empty() {
                let rows = tx
                    .query(
                        "SELECT batch_id, readings,
                                ARRAY(SELECT lower(r) FROM unnest(written) r),
                                ARRAY(SELECT upper(r) FROM unnest(written) r)
                         FROM written_batches WHERE batch_id = ANY($1)
                         ORDER BY batch_id FOR UPDATE",
                        &[&known],
                    )
                    .await
                    .ctx("reading batch offsets")?;
                for row in rows {
                    let id: &str = row.get(0);
                    let recorded: i32 = row.get(1);
                    let Some(b) = batches.get_mut(id) else {
                        continue;
                    };
                    if i64::from(recorded) != i64::from(b.of) {
                        return Err(StoreError::PartMismatch(format!(
                            "batch {id}: this part says the batch holds {} readings, but {recorded} \
                             were recorded for it: the batch id names other readings (was an \
                             Idempotency-Key reused with another body?)",
                            b.of
                        )));
                    }
                    b.done = Offsets::from_bounds(
                        &row.get::<_, Vec<i32>>(2),
                        &row.get::<_, Vec<i32>>(3),
                    );
                }
                let (ids, firsts, ends, _) = incoming(&|id| known.contains(&id));
                tx.execute(
                    "UPDATE written_batches AS w
                     SET written = w.written + n.r, written_at = now()
                     FROM (SELECT id, range_agg(int4range(f, e)) AS r
                           FROM unnest($1::text[], $2::int4[], $3::int4[]) AS t(id, f, e)
                           GROUP BY id) n
                     WHERE w.batch_id = n.id",
                    &[&ids, &firsts, &ends],
                )
                .await
                .ctx("recording batch offsets")?;
            }
        }

        let mut report = WriteReport::default();
        let mut seen_numbered = HashSet::new();
        let mut rows: Vec<&WireReading> = Vec::new();
        for part in parts {
            let before = rows.len();
            match part.place {
                Place::Numbered(n) => {
                    let key = (part.id.clone(), n as i32);
                    if new_numbered.contains(&key) && seen_numbered.insert(key) {
                        rows.extend(&part.readings);
                    }
                }
                Place::Range { first, .. } => {
                    if let (Some(b), Some(range)) =
                        (batches.get_mut(part.id.as_str()), part.offsets())
                    {
                        for (s, e) in b.done.missing(range.start, range.end) {
                            for (s, e) in b.taken.missing(s, e) {
                                rows.extend(
                                    &part.readings[(s - first) as usize..(e - first) as usize],
                                );
                            }
                        }
                        b.taken.add(range.start, range.end);
                    }
                }
            }
            let written = rows.len() - before;
            if written > 0 {
                report.parts_written += 1;
            } else {
                report.parts_skipped += 1;
            }
            report.rows_skipped += (part.readings.len() - written) as u64;
        }
        debug_assert!(batches.values().all(|b| b.taken.len() <= u64::from(b.of)));
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
        for r in &rows {
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
            let mut fresh: Vec<&str> = rows
                .iter()
                .map(|r| r.1.as_str())
                .filter(|l| !known.contains(*l))
                .collect();
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

#[cfg(test)]
mod tests {
    use super::Offsets;

    #[test]
    fn offsets_merge_and_answer_membership() {
        let mut o = Offsets::default();
        o.add(10, 20);
        o.add(0, 5);
        o.add(5, 10);
        o.add(30, 31);
        o.add(15, 25);
        o.add(7, 7);
        assert_eq!(o.0, vec![(0, 25), (30, 31)]);
        assert_eq!(o.len(), 26);
        assert_eq!(o.missing(0, 40), vec![(25, 30), (31, 40)]);
        assert_eq!(o.missing(3, 24), vec![]);
        assert_eq!(o.missing(20, 31), vec![(25, 30)]);
        assert_eq!(o.missing(26, 28), vec![(26, 28)]);
        assert_eq!(Offsets::default().missing(4, 9), vec![(4, 9)]);
        assert_eq!(
            Offsets::from_bounds(&[3, 0], &[6, 2]).0,
            vec![(0, 2), (3, 6)]
        );
    }
}
