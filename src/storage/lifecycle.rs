//! Table lifecycle for an endless stream of fresh ids: admission, expiry and
//! eviction, and the bookkeeping behind `changed_since` deltas.
//!
//! Design notes.
//! * Admission: a count-min sketch of 8-bit saturating counters counts the
//!   sightings of ids that have no row yet; an id gets a row at the event
//!   where its estimate reaches `min_count`. Count-min never underestimates,
//!   so admission is never late; hash collisions can only make it early.
//!   Events of ids not yet admitted are counted (exactly, in the train stats
//!   and in `unadmitted_events`) but not trained on.
//! * Eviction is incremental: each `evict` call inspects at most `budget`
//!   rows from a clock hand that walks the table, so no call is a
//!   stop-the-world pass. Rows past the TTL (in event time since their last
//!   update) are evicted; when the table is above `max_rows` / `max_bytes`,
//!   the inspected rows are ranked by LRU (oldest last update) or LFU (fewest
//!   interactions) and the lowest go first. Nothing is evicted that would
//!   take the table below `keep_floor` live rows.
//! * Reuse: an evicted row goes to a limbo list tagged with the eviction
//!   epoch and becomes reusable once every pin (training call, read) still
//!   live started after that eviction (epoch-based reclamation, see
//!   `table`), so a call that resolved an id to that row before the eviction
//!   can never write into another id's row, while a table that is never idle
//!   still reuses rows. Tables with a lifecycle never hand out zero-copy
//!   views (their `weights()` is a copy of the live rows), so no view can see
//!   a reused row either.
//! * An `evict` call that removes rows bumps the table version and logs the
//!   removals under it, so `changed_since` after a sync reports them.

use crate::error::{config, Result};
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Under a size limit, evict the rows updated longest ago first.
    Lru,
    /// Under a size limit, evict the rows with the fewest interactions first.
    Lfu,
}

impl Policy {
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "lru" => Ok(Policy::Lru),
            "lfu" => Ok(Policy::Lfu),
            _ => Err(config(format!(
                "unknown eviction policy {name:?}; choose 'lru' or 'lfu'"
            ))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Policy::Lru => "lru",
            Policy::Lfu => "lfu",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lifecycle {
    /// Rows not updated for longer than this (event-time units) expire.
    pub ttl: Option<i64>,
    /// Soft limit on live rows, enforced by `evict`.
    pub max_rows: Option<usize>,
    /// Soft limit on bytes of live rows (weights, state, metadata, map share).
    pub max_bytes: Option<usize>,
    /// Eviction never takes the table below this many live rows.
    pub keep_floor: usize,
    pub policy: Policy,
    /// Sightings an id needs before it gets a row (1 = admit at once).
    pub min_count: u32,
    /// Removals remembered for `changed_since`.
    pub removal_log: usize,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            ttl: None,
            max_rows: None,
            max_bytes: None,
            keep_floor: 0,
            policy: Policy::Lru,
            min_count: 1,
            removal_log: 1 << 20,
        }
    }
}

impl Lifecycle {
    pub fn validate(&self, capacity: usize) -> Result<()> {
        if let Some(t) = self.ttl {
            if t <= 0 {
                return Err(config(format!(
                    "ttl must be > 0 (event-time units), got {t}"
                )));
            }
        }
        if let Some(m) = self.max_rows {
            if m == 0 || m > capacity {
                return Err(config(format!(
                    "max_rows must be between 1 and the table capacity {capacity}, got {m}"
                )));
            }
            if m < self.keep_floor {
                return Err(config(format!(
                    "max_rows ({m}) is below keep_floor ({}); lower keep_floor or raise max_rows",
                    self.keep_floor
                )));
            }
        }
        if self.max_bytes == Some(0) {
            return Err(config("max_bytes must be > 0"));
        }
        if self.keep_floor > capacity {
            return Err(config(format!(
                "keep_floor ({}) exceeds the table capacity {capacity}",
                self.keep_floor
            )));
        }
        if self.min_count == 0 || self.min_count > 255 {
            return Err(config(format!(
                "min_count must be between 1 and 255, got {}",
                self.min_count
            )));
        }
        Ok(())
    }

    pub fn evicts(&self) -> bool {
        self.ttl.is_some() || self.max_rows.is_some() || self.max_bytes.is_some()
    }
}

/// Count-min sketch of saturating 8-bit counters (4 rows × `width`).
pub struct CountMin {
    counters: Vec<AtomicU8>,
    mask: usize,
}

const SKETCH_ROWS: usize = 4;

impl CountMin {
    pub fn new(width: usize) -> Self {
        let width = width.next_power_of_two().max(64);
        CountMin {
            counters: (0..width * SKETCH_ROWS).map(|_| AtomicU8::new(0)).collect(),
            mask: width - 1,
        }
    }

    pub fn bytes(&self) -> usize {
        self.counters.len()
    }

    #[inline]
    fn slot(&self, id: u64, row: usize) -> usize {
        let h = crate::kernels::rng::hash2(id, row as u64);
        row * (self.mask + 1) + (h as usize & self.mask)
    }

    /// Count one sighting of `id`; returns the new estimate.
    pub fn add(&self, id: u64) -> u32 {
        let mut est = u32::MAX;
        for row in 0..SKETCH_ROWS {
            let c = &self.counters[self.slot(id, row)];
            let v = c
                .fetch_update(Relaxed, Relaxed, |v| v.checked_add(1))
                .map_or(255, |old| old + 1);
            est = est.min(u32::from(v));
        }
        est
    }

    pub fn estimate(&self, id: u64) -> u32 {
        (0..SKETCH_ROWS)
            .map(|row| u32::from(self.counters[self.slot(id, row)].load(Relaxed)))
            .min()
            .unwrap_or(0)
    }
}

/// Rows removed by one `evict` call, with their final state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Evicted {
    pub ids: Vec<u64>,
    /// Final rows, `ids.len() × dim`.
    pub rows: Vec<f32>,
    pub interactions: Vec<u64>,
    pub first_seen: Vec<i64>,
    pub last_update: Vec<i64>,
    /// Rows inspected by this call.
    pub scanned: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_min_never_underestimates() {
        let s = CountMin::new(64);
        let mut truth = std::collections::HashMap::new();
        for k in 0..5000u64 {
            let id = k % 700;
            let e = s.add(id);
            let t = truth.entry(id).or_insert(0u32);
            *t += 1;
            assert!(e >= (*t).min(255));
        }
        let exact = CountMin::new(1 << 16);
        for k in 0..10 {
            assert_eq!(exact.add(42), k + 1);
        }
    }

    #[test]
    fn validation() {
        let ok = Lifecycle {
            ttl: Some(10),
            max_rows: Some(5),
            keep_floor: 2,
            ..Default::default()
        };
        assert!(ok.validate(100).is_ok());
        for bad in [
            Lifecycle {
                ttl: Some(0),
                ..Default::default()
            },
            Lifecycle {
                max_rows: Some(1),
                keep_floor: 2,
                ..Default::default()
            },
            Lifecycle {
                max_rows: Some(1000),
                ..Default::default()
            },
            Lifecycle {
                min_count: 0,
                ..Default::default()
            },
            Lifecycle {
                keep_floor: 101,
                ..Default::default()
            },
        ] {
            assert!(bad.validate(100).is_err(), "{bad:?}");
        }
        assert!(Policy::parse("fifo").is_err());
    }
}
