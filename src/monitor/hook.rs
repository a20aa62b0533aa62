//! A host framework's optimizer steps as monitor updates (`StepTracker`):
//! the per-step bookkeeping of `embcore.integrations.torch.watch` in one
//! call before each step and one after it.
//!
//! Design notes.
//! * The embedding's weight stays where the framework keeps it: each call
//!   reads the whole table as a borrowed row-major slice (a zero-copy view
//!   of a CPU float32 tensor) and copies only the rows the step touches,
//!   into buffers reused from step to step (grown, never shrunk).
//! * Before a step: the row indices looked up since the last step are
//!   checked (all of them, before anything changes), filtered by the
//!   sample, sorted; each adds one to its row's count; the step's touched
//!   rows are their distinct values (or, for the gradient's rows, the rows
//!   given), in order; a row touched for the first time has its first
//!   sighting set to the step's time; the touched rows, their counts and
//!   first sightings are copied. After it: the same rows again, and one
//!   `Monitor::observe_pairs` with the mapped ids. The result is the one a
//!   caller gets by doing each of these steps with numpy arrays and
//!   calling `observe_pairs` itself (the Python hook's reference path,
//!   which the tests compare it with, byte for byte).
//! * Bound by memory latency for a large table: a step's rows are spread
//!   over the weight and the per-row state. Each row's count and first
//!   sighting share one 16-byte entry (one cache line fetched, not two;
//!   whether it was seen is a bit in a small bitmap), the rows are walked
//!   once, in order, and the entry and weight row `AHEAD` rows on are
//!   prefetched meanwhile.
//! * The tracker keeps no reference to the monitor or the weight between
//!   calls: a step whose after-call never comes (its `step` raised) is
//!   dropped by the next before-call; pairs need no reference rows.

use super::Monitor;
use crate::error::{Error, Result};
use crate::kernels::simd;
use std::time::Instant;

/// What a watched embedding is: its rows, width, ids and sample.
#[derive(Debug, Clone, Default)]
pub struct TrackerConfig {
    /// Rows of the embedding.
    pub rows: usize,
    /// Width of a row.
    pub dim: usize,
    /// Row index → id, one per row; `None`: the index is the id.
    pub ids: Option<Vec<u64>>,
    /// Rows observed, one flag per row; `None`: every row.
    pub in_sample: Option<Vec<bool>>,
    /// A row never counted nor observed (`nn.Embedding`'s `padding_idx`).
    pub padding: Option<usize>,
}

/// Which rows a step touched, as the host knows them.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepRows<'a> {
    /// The row indices looked up since the last step (any order, repeats
    /// counted), or `None` when the module was not called.
    pub looked_up: Option<&'a [i64]>,
    /// The rows of the gradient (distinct, sorted): when given, these are
    /// the touched rows, each counted at least once.
    pub gradient: Option<&'a [i64]>,
}

/// Rows ahead whose state and weight are prefetched (enough to cover a
/// memory latency at tens of nanoseconds per row).
const AHEAD: usize = 8;

/// Sorts `v` (values below `bound`) in place: a least-significant-digit
/// radix sort in passes of at most 11 bits (two passes below 2^22 rows),
/// about 5x faster than `sort_unstable` on a batch of 1 024 indices;
/// `sort_unstable` for short inputs. `tmp` and `count` are scratch.
fn sort_rows(v: &mut Vec<usize>, bound: usize, tmp: &mut Vec<usize>, count: &mut Vec<usize>) {
    if v.len() < 256 {
        v.sort_unstable();
        return;
    }
    let bits = (usize::BITS - bound.saturating_sub(1).leading_zeros()).max(1) as usize;
    let passes = bits.div_ceil(11);
    let digit = bits.div_ceil(passes);
    let mask = (1usize << digit) - 1;
    tmp.resize(v.len(), 0);
    for pass in 0..passes {
        let shift = pass * digit;
        count.clear();
        count.resize(1 << digit, 0);
        for &x in v.iter() {
            count[(x >> shift) & mask] += 1;
        }
        let mut start = 0;
        for c in count.iter_mut() {
            (*c, start) = (start, start + *c);
        }
        for &x in v.iter() {
            let b = (x >> shift) & mask;
            tmp[count[b]] = x;
            count[b] += 1;
        }
        std::mem::swap(v, tmp);
    }
}

/// One row's lookups so far and the time of its first step.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(16))]
struct RowState {
    count: i64,
    first_seen: i64,
}

/// The rows of the step in progress and what goes with them, reused
/// across steps.
#[derive(Debug, Default)]
struct Buffers {
    sorted: Vec<usize>,
    scratch: Vec<usize>,
    digits: Vec<usize>,
    touched: Vec<usize>,
    before: Vec<f32>,
    after: Vec<f32>,
    counts: Vec<i64>,
    first_seen: Vec<i64>,
    timestamps: Vec<i64>,
    ids: Vec<u64>,
}

/// Per-row counts and first sightings of one watched embedding, and its
/// step in progress (see the module notes).
#[derive(Debug)]
pub struct StepTracker {
    config: TrackerConfig,
    state: Vec<RowState>,
    /// Bit `r % 64` of word `r / 64`: row `r` was touched by a step.
    seen: Vec<u64>,
    pending: bool,
    buffers: Buffers,
    observe_seconds: f64,
}

impl StepTracker {
    /// A tracker of an embedding with nothing seen yet. Fails when the ids
    /// or the sample do not have one entry per row, or the padding row is
    /// not a row.
    pub fn new(config: TrackerConfig) -> Result<Self> {
        let n = config.rows;
        if config.dim == 0 {
            return Err(crate::error::out_of_range("dim", 0, ">= 1"));
        }
        if n.checked_mul(config.dim).is_none() {
            return Err(crate::error::out_of_range(
                "rows",
                n,
                format!("at most {} rows of {}", usize::MAX / config.dim, config.dim),
            ));
        }
        for (name, len) in [
            ("ids", config.ids.as_ref().map(Vec::len)),
            ("in_sample", config.in_sample.as_ref().map(Vec::len)),
        ] {
            if let Some(len) = len.filter(|&len| len != n) {
                return Err(crate::error::shape(
                    name,
                    format!("{n} elements (one per row)"),
                    format!("{len} elements"),
                ));
            }
        }
        if let Some(p) = config.padding.filter(|&p| p >= n) {
            return Err(crate::error::out_of_range(
                "padding_idx",
                p,
                format!("a row index in [0, {n}) or None"),
            ));
        }
        Ok(StepTracker {
            state: vec![RowState::default(); n],
            seen: vec![0; n.div_ceil(64)],
            config,
            pending: false,
            buffers: Buffers::default(),
            observe_seconds: 0.0,
        })
    }

    /// The configuration it was made with.
    pub fn config(&self) -> &TrackerConfig {
        &self.config
    }

    /// Each row's lookups in training batches so far (sampled rows only;
    /// the padding row stays 0).
    pub fn counts(&self) -> Vec<i64> {
        self.state.iter().map(|s| s.count).collect()
    }

    /// Whether each row was touched by a step yet.
    pub fn seen(&self) -> Vec<bool> {
        (0..self.config.rows).map(|r| self.is_seen(r)).collect()
    }

    /// The time of each seen row's first step (0 for the others).
    pub fn first_seen(&self) -> Vec<i64> {
        self.state.iter().map(|s| s.first_seen).collect()
    }

    fn is_seen(&self, r: usize) -> bool {
        self.seen[r / 64] >> (r % 64) & 1 == 1
    }

    /// Rows of the step in progress, if one is.
    pub fn pending(&self) -> Option<usize> {
        self.pending.then_some(self.buffers.touched.len())
    }

    /// Seconds spent in the monitor's `observe_pairs`, summed over steps.
    pub fn observe_seconds(&self) -> f64 {
        self.observe_seconds
    }

    /// Drops the step in progress (its after-call will not come).
    pub fn discard(&mut self) {
        self.pending = false;
    }

    /// The bookkeeping before a step whose touched rows are `step`, at
    /// time `now`, with the embedding's weight `weight` (row-major, rows ×
    /// dim) as it is before the update; drops any step in progress.
    /// Returns the rows the step touched. Everything is checked first: an
    /// error changes nothing.
    pub fn before_step(&mut self, weight: &[f32], step: StepRows<'_>, now: i64) -> Result<usize> {
        self.check_weight(weight)?;
        for (name, index) in [
            ("indices", step.looked_up),
            ("gradient rows", step.gradient),
        ] {
            if let Some(index) = index {
                self.check_rows(name, index)?;
            }
        }
        self.pending = false;
        let (cfg, b) = (&self.config, &mut self.buffers);
        let (state, seen) = (&mut self.state, &mut self.seen);
        let d = cfg.dim;
        let sampled = |r: usize| cfg.in_sample.as_ref().is_none_or(|s| s[r]);
        let not_padding = |r: usize| cfg.padding != Some(r);
        b.sorted.clear();
        if let Some(looked_up) = step.looked_up {
            // One sort; the touched rows are its distinct values, in order.
            b.sorted.extend(
                looked_up
                    .iter()
                    .map(|&r| r as usize)
                    .filter(|&r| sampled(r)),
            );
            sort_rows(&mut b.sorted, cfg.rows, &mut b.scratch, &mut b.digits);
        }
        b.touched.clear();
        b.counts.clear();
        b.first_seen.clear();
        b.before.clear();
        // A touched row: its first sighting, count (`floor` at least) and row.
        let mut touch = |r: usize, floor: i64, s: &mut RowState| {
            let (word, bit) = (r / 64, 1u64 << (r % 64));
            if seen[word] & bit == 0 {
                seen[word] |= bit;
                s.first_seen = now;
            }
            b.touched.push(r);
            b.counts.push(s.count.max(floor));
            b.first_seen.push(s.first_seen);
            b.before.extend_from_slice(&weight[r * d..(r + 1) * d]);
        };
        let sorted = &b.sorted;
        match step.gradient {
            None => {
                // Each run of one row: its count, and the row touched.
                let mut j = 0;
                while j < sorted.len() {
                    if let Some(&ahead) = sorted.get(j + AHEAD) {
                        simd::prefetch_slice(state, ahead, 1);
                        simd::prefetch_slice(weight, ahead * d, d);
                    }
                    let r = sorted[j];
                    let run = sorted[j..].iter().take_while(|&&x| x == r).count();
                    let s = &mut state[r];
                    s.count += run as i64;
                    if not_padding(r) {
                        touch(r, 0, s);
                    } else {
                        s.count = 0;
                    }
                    j += run;
                }
            }
            Some(rows) => {
                for &r in sorted {
                    state[r].count += 1;
                }
                if let Some(p) = cfg.padding.filter(|_| step.looked_up.is_some()) {
                    state[p].count = 0;
                }
                for (j, &r) in rows.iter().enumerate() {
                    if let Some(&ahead) = rows.get(j + AHEAD) {
                        simd::prefetch_slice(state, ahead as usize, 1);
                        simd::prefetch_slice(weight, ahead as usize * d, d);
                    }
                    let r = r as usize;
                    if not_padding(r) && sampled(r) {
                        // A row moved by its gradient alone has no lookup yet: it counts once.
                        touch(r, 1, &mut state[r]);
                    }
                }
            }
        }
        let k = b.touched.len();
        self.pending = true;
        Ok(k)
    }

    /// The bookkeeping after the step: its touched rows as they are now in
    /// `weight`, at time `now`, handed with the rows before it to
    /// `monitor.observe_pairs` (under the ids). Returns the rows observed
    /// (0 when no step is in progress). The step is over either way: an
    /// error (a bad weight, the monitor refusing the rows) drops it.
    pub fn after_step(&mut self, weight: &[f32], now: i64, monitor: &Monitor) -> Result<usize> {
        if !std::mem::take(&mut self.pending) {
            return Ok(0);
        }
        self.check_weight(weight)?;
        let (cfg, b) = (&self.config, &mut self.buffers);
        let (k, d) = (b.touched.len(), cfg.dim);
        if k == 0 {
            return Ok(0);
        }
        b.after.clear();
        b.ids.clear();
        for (j, &r) in b.touched.iter().enumerate() {
            if let Some(&ahead) = b.touched.get(j + AHEAD) {
                simd::prefetch_slice(weight, ahead * d, d);
                if let Some(ids) = &cfg.ids {
                    simd::prefetch_slice(ids, ahead, 1);
                }
            }
            b.after.extend_from_slice(&weight[r * d..(r + 1) * d]);
            b.ids.push(cfg.ids.as_ref().map_or(r as u64, |ids| ids[r]));
        }
        b.timestamps.clear();
        b.timestamps.resize(k, now);
        let started = Instant::now();
        let observed = monitor.observe_pairs(
            &b.ids,
            &b.before,
            &b.after,
            d,
            &b.counts,
            Some(&b.first_seen),
            Some(&b.timestamps),
        );
        self.observe_seconds += started.elapsed().as_secs_f64();
        observed.map(|()| k)
    }

    fn check_weight(&self, weight: &[f32]) -> Result<()> {
        let (n, d) = (self.config.rows, self.config.dim);
        if weight.len() != n * d {
            return Err(crate::error::shape(
                "weight",
                format!("{n} x {d} values (the watched embedding's shape)"),
                format!("{} values", weight.len()),
            ));
        }
        Ok(())
    }

    fn check_rows(&self, name: &str, index: &[i64]) -> Result<()> {
        let n = self.config.rows;
        match index.iter().position(|&r| r < 0 || r as u64 >= n as u64) {
            None => Ok(()),
            Some(k) => Err(Error::BadValue {
                name: name.into(),
                index: k,
                value: index[k].to_string(),
                allowed: format!("row indices of an embedding of {n} rows are in [0, {n})"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::MonitorConfig;

    fn monitor() -> Monitor {
        Monitor::new(MonitorConfig {
            sample_rate: 1.0,
            ..MonitorConfig::default()
        })
        .unwrap()
    }

    fn tracker(rows: usize, dim: usize) -> StepTracker {
        StepTracker::new(TrackerConfig {
            rows,
            dim,
            ..TrackerConfig::default()
        })
        .unwrap()
    }

    /// The obvious bookkeeping: sort, count, distinct, first sightings,
    /// gathers, one `observe_pairs`.
    #[allow(clippy::too_many_arguments)]
    fn reference_step(
        counts: &mut [i64],
        first: &mut [Option<i64>],
        before: &[f32],
        after: &[f32],
        d: usize,
        looked_up: &[i64],
        now: i64,
        monitor: &Monitor,
    ) {
        let mut rows: Vec<usize> = looked_up.iter().map(|&r| r as usize).collect();
        rows.sort();
        for &r in &rows {
            counts[r] += 1;
        }
        rows.dedup();
        for &r in &rows {
            first[r].get_or_insert(now);
        }
        let gather = |w: &[f32]| -> Vec<f32> {
            rows.iter()
                .flat_map(|&r| w[r * d..(r + 1) * d].iter().copied())
                .collect()
        };
        let ids: Vec<u64> = rows.iter().map(|&r| r as u64).collect();
        let c: Vec<i64> = rows.iter().map(|&r| counts[r]).collect();
        let f: Vec<i64> = rows.iter().map(|&r| first[r].unwrap()).collect();
        let t = vec![now + 1; rows.len()];
        monitor
            .observe_pairs(
                &ids,
                &gather(before),
                &gather(after),
                d,
                &c,
                Some(&f),
                Some(&t),
            )
            .unwrap();
    }

    #[test]
    fn steps_match_the_obvious_bookkeeping() {
        let (n, d) = (40, 4);
        let (a, b) = (monitor(), monitor());
        let mut t = tracker(n, d);
        let mut counts = vec![0i64; n];
        let mut first = vec![None; n];
        let mut state = 7u64;
        let mut next = || {
            state = crate::kernels::rng::mix64(state.wrapping_add(1));
            state
        };
        let mut weight: Vec<f32> = (0..n * d).map(|i| (i as f32 * 0.37).sin()).collect();
        for step in 0..30i64 {
            let size = (next() % 12) as usize; // some steps look up nothing
            let looked_up: Vec<i64> = (0..size).map(|_| (next() % 13) as i64).collect();
            let before = weight.clone();
            let k = t
                .before_step(
                    &before,
                    StepRows {
                        looked_up: Some(&looked_up),
                        gradient: None,
                    },
                    step,
                )
                .unwrap();
            for (i, w) in weight.iter_mut().enumerate() {
                *w += 0.01 * ((i as i64 + step) as f32).cos();
            }
            assert_eq!(t.after_step(&weight, step + 1, &a).unwrap(), k);
            reference_step(
                &mut counts,
                &mut first,
                &before,
                &weight,
                d,
                &looked_up,
                step,
                &b,
            );
            assert_eq!(t.counts(), counts);
        }
        assert!(a.summary().updates > 0);
        assert_eq!(a.to_bytes(), b.to_bytes());
    }

    #[test]
    fn radix_sort_sorts() {
        let mut state = 11u64;
        let (mut tmp, mut count) = (Vec::new(), Vec::new());
        for (len, bound) in [(0, 1), (300, 1), (300, 2), (1024, 100_000), (5000, 1 << 23)] {
            for bound in [bound, bound + 1] {
                let mut v: Vec<usize> = (0..len)
                    .map(|_| {
                        state = crate::kernels::rng::mix64(state.wrapping_add(1));
                        (state % bound as u64) as usize
                    })
                    .collect();
                let mut expected = v.clone();
                expected.sort_unstable();
                sort_rows(&mut v, bound, &mut tmp, &mut count);
                assert_eq!(v, expected, "{len} values below {bound}");
            }
        }
    }

    #[test]
    fn bad_indices_change_nothing() {
        let mut t = tracker(5, 2);
        let w = vec![0.5f32; 10];
        let m = monitor();
        t.before_step(
            &w,
            StepRows {
                looked_up: Some(&[1, 1, 3]),
                gradient: None,
            },
            0,
        )
        .unwrap();
        for bad in [5i64, -1] {
            let err = t
                .before_step(
                    &w,
                    StepRows {
                        looked_up: Some(&[0, bad]),
                        gradient: None,
                    },
                    1,
                )
                .unwrap_err();
            assert!(
                err.to_string().contains(&format!("indices[1] = {bad}")),
                "{err}"
            );
            assert!(err.to_string().contains("[0, 5)"), "{err}");
        }
        assert_eq!(t.counts(), [0, 2, 0, 1, 0]);
        assert_eq!(t.pending(), Some(2)); // the step in progress is still there
        assert!(t.before_step(&w[..8], StepRows::default(), 1).is_err());
        assert_eq!(t.after_step(&w, 1, &m).unwrap(), 2);
        assert_eq!(t.after_step(&w, 1, &m).unwrap(), 0); // nothing in progress
    }

    #[test]
    fn gradient_rows_padding_and_sample() {
        let mut t = StepTracker::new(TrackerConfig {
            rows: 6,
            dim: 1,
            ids: Some(vec![10, 11, 12, 13, 14, 15]),
            in_sample: Some(vec![true, true, true, false, true, true]),
            padding: Some(0),
        })
        .unwrap();
        let w = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        let step = StepRows {
            looked_up: Some(&[0, 0, 3, 4, 4]),
            gradient: Some(&[0, 2, 3, 4]),
        };
        assert_eq!(t.before_step(&w, step, 7).unwrap(), 2); // rows 2 and 4
        assert_eq!(t.counts(), [0, 0, 0, 0, 2, 0]);
        assert_eq!(t.buffers.counts, [1, 2]); // row 2: moved by its gradient alone
        assert_eq!(t.seen(), [false, false, true, false, true, false]);
        assert_eq!(t.first_seen()[2], 7);
        let m = monitor();
        assert_eq!(t.after_step(&w, 8, &m).unwrap(), 2);
        assert_eq!(t.buffers.ids, [12, 14]);
        assert!(t.observe_seconds() > 0.0);
    }

    #[test]
    fn bad_configurations_are_errors() {
        let cfg = |ids: Option<Vec<u64>>, padding: Option<usize>, dim: usize| TrackerConfig {
            rows: 3,
            dim,
            ids,
            in_sample: None,
            padding,
        };
        let msg = |c| StepTracker::new(c).unwrap_err().to_string();
        assert!(msg(cfg(Some(vec![1, 2]), None, 2)).contains("ids has 2 elements"));
        assert!(msg(cfg(None, Some(3), 2)).contains("padding_idx must be"));
        assert!(msg(cfg(None, None, 0)).contains("dim must be >= 1"));
    }
}
