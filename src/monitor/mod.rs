//! The streaming evolution monitor (METRICS A): per-update cosine drift,
//! update magnitude (absolute and relative) and norm, aggregated by
//! interaction count, popularity and item age; trajectories of tracked
//! cohorts at count milestones and batch publishes; path efficiency.
//!
//! Design notes.
//! * Fed by the training loop itself (`UpdateObserver`): each worker thread
//!   owns a `Shard` that it fills without locks or allocation on the common
//!   path; the shard is merged into the monitor under its mutex once per
//!   `train` call (`absorb`) and then kept in a small pool, cleared, for the
//!   next call, so the sketches' allocations are reused.
//! * Per update, inside the training loop: one pass over before/after
//!   computes ‖a−b‖², ‖a‖², ‖b‖² in 4-lane accumulators (unrolled for rows
//!   of 16, 32, 64), pushed with the count, the times and id hash to a small
//!   per-shard buffer, one array per field. Every `PENDING` updates the
//!   buffer is flushed: the HyperLogLog registers, then square roots,
//!   divisions and sketch keys (one shift of the f32 bits) over the whole
//!   buffer in branch-free loops the compiler vectorises (bit-identical to
//!   the one-update form, which the tests keep as the reference), then the
//!   ages and bucket indices (an f64 conversion and a shift: the exponent
//!   and top mantissa bits) and the
//!   bucket updates, away from the loop whose dependency chains retire in
//!   order.
//!   Drift is 1 − cos computed as (‖a−b‖² − (‖a‖ − ‖b‖)²) / (2‖a‖‖b‖), which
//!   keeps its precision when the change is small (1 − a·b/(‖a‖‖b‖) cancels
//!   catastrophically in f32).
//! * `observe` (rows from another trainer) is bound by memory latency: each
//!   row's previous row is found through an index of every observed id and
//!   read from a table of them, both far larger than the caches for a large
//!   model. It resolves a block of rows first (index entries fetched ahead,
//!   then the previous rows), then compares the block's rows, now in cache,
//!   in their order (`PrevMap`, `Monitor::observe`).
//! * Tracking is a hash compare (deterministic: hash(id) < rate), a time
//!   window compare and, only when explicit ids were given, a set lookup.
//!   Only tracked items touch the per-shard hash map.
//! * Milestone records are kept once per (id, count): a shard drops a
//!   repeat of the count it recorded last (count_interactions=False), the
//!   monitor drops repeats across shards and calls.
//! * `items_seen` is a HyperLogLog estimate (2^14 registers, ~0.8% standard
//!   error): exact distinct counting would cost a hash-set insert per event.
//! * Merging adds counts, sums and sketch buckets: exact for counts and
//!   sums, within the sketch's bound for quantiles.

mod codec;
pub mod hook;
mod prev_map;
pub mod sketch;

use crate::error::{config, invalid, Result};
use crate::kernels::rng::mix64;
use crate::storage::table::{dec_time, f32_load, meta, EmbeddingTable, IdHashBuilder};
use crate::train::observer::{RowUpdate, UpdateObserver};
use prev_map::PrevMap;
use sketch::{CompactSketch, Sketch};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

/// The per-update statistics, in the order of every `[_; 4]` below.
pub const STATISTICS: [&str; 4] = ["drift", "magnitude", "relative_magnitude", "norm"];
/// The groupings reported. Only by_count and by_age are kept: every count
/// bucket lies inside one popularity (log2) bucket, so by_popularity is
/// merged from by_count when summarised — exactly, and without a third set
/// of sketch updates per event.
pub const GROUPINGS: [&str; 3] = ["by_count", "by_popularity", "by_age"];
pub use codec::FORMAT_VERSION;
const HLL_BITS: u32 = 14;
const HLL_SIZE: usize = 1 << HLL_BITS;
const NO_SLOT: u32 = u32::MAX;
const POOL: usize = 8;
const MAX_COUNT_LIMIT: u64 = 1 << 20;
/// Default `MonitorConfig::max_tracked`.
pub const DEFAULT_MAX_TRACKED: usize = 200_000;

/// The default milestone grid: every count up to 10, then about ten steps
/// per decade (12, 15, 20, 25, 30, 40, 50, 65, 80, 100, 130, 160, 200, ...).
pub fn default_milestones() -> Vec<u64> {
    let mut m: Vec<u64> = (1..=10).collect();
    m.extend([12, 15, 20, 25, 30, 40, 50, 65, 80]);
    let mut scale = 10u64;
    while scale <= 1_000_000_000 {
        m.extend([10, 13, 16, 20, 25, 32, 40, 50, 65, 80].map(|f| f * scale));
        scale *= 10;
    }
    m
}

/// Everything that defines a monitor apart from what it has seen.
#[derive(Clone, Debug, PartialEq)]
pub struct MonitorConfig {
    /// Interaction counts 0..=count_limit get a bucket each; larger counts
    /// share log-spaced buckets.
    pub count_limit: u64,
    /// Log-spaced buckets per doubling (counts above the limit and item age);
    /// a power of two up to 64.
    pub per_doubling: u32,
    /// Log-spaced item-age buckets per doubling of seconds; a power of two.
    pub age_per_doubling: u32,
    /// Share of items tracked, chosen by a hash of (id, seed).
    pub sample_rate: f64,
    /// Items tracked whatever the sampling (sorted, distinct).
    pub track_ids: Vec<u64>,
    /// Items first seen in [t0, t1) are tracked.
    pub track_window: Option<(i64, i64)>,
    /// Interaction counts at which a tracked item's row is recorded.
    pub milestones: Vec<u64>,
    /// Records kept at most. When full, the records of retired items are
    /// dropped (oldest retirement first) to make room; with none retired,
    /// new records are counted as dropped.
    pub max_records: usize,
    /// Tracked items kept at most (active and retired), enforced the same
    /// way: retired items go first; with none retired, items seen for the
    /// first time are not tracked (counted in `untracked_items`).
    pub max_tracked: usize,
    /// Retire a tracked item (and forget an `observe`d id's previous row)
    /// once this many seconds of event time pass without an update or a
    /// record of it; None: only when its row leaves the model
    /// (`record_rows(..., final=true)`).
    pub retire_after: Option<i64>,
    pub seed: u64,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            count_limit: 64,
            per_doubling: 8,
            age_per_doubling: 2,
            sample_rate: 0.01,
            track_ids: Vec::new(),
            track_window: None,
            milestones: default_milestones(),
            max_records: 1_000_000,
            max_tracked: DEFAULT_MAX_TRACKED,
            retire_after: None,
            seed: 0,
        }
    }
}

impl MonitorConfig {
    /// Check every field; sorts and deduplicates `track_ids`.
    pub fn validate(mut self) -> Result<Self> {
        if !(1..=MAX_COUNT_LIMIT).contains(&self.count_limit) {
            return Err(config(format!(
                "count_limit must be between 1 and {MAX_COUNT_LIMIT}, got {}",
                self.count_limit
            )));
        }
        for (name, v) in [
            ("per_doubling", self.per_doubling),
            ("age_per_doubling", self.age_per_doubling),
        ] {
            if !(v.is_power_of_two() && v <= 64) {
                return Err(config(format!(
                    "{name} must be a power of two between 1 and 64, got {v}"
                )));
            }
        }
        if !(0.0..=1.0).contains(&self.sample_rate) {
            return Err(config(format!(
                "sample_rate must be in [0, 1], got {}",
                self.sample_rate
            )));
        }
        if let Some((t0, t1)) = self.track_window {
            if t0 > t1 {
                return Err(config(format!(
                    "track_window ({t0}, {t1}) ends before it starts; pass (t0, t1) with t0 <= t1"
                )));
            }
        }
        if self.milestones.first() == Some(&0) {
            return Err(config(
                "milestones must be positive interaction counts, got 0",
            ));
        }
        if let Some(k) = self.milestones.windows(2).position(|w| w[0] >= w[1]) {
            return Err(config(format!(
                "milestones must be strictly increasing: milestones[{}] = {} follows {}",
                k + 1,
                self.milestones[k + 1],
                self.milestones[k]
            )));
        }
        if self.max_tracked == 0 {
            return Err(config(
                "max_tracked must be an integer >= 1, got 0".to_string(),
            ));
        }
        if let Some(a) = self.retire_after {
            if a < 1 {
                return Err(config(format!(
                    "retire_after must be a number of seconds >= 1 (or None), got {a}"
                )));
            }
        }
        self.track_ids.sort_unstable();
        self.track_ids.dedup();
        Ok(self)
    }
}

/// Precomputed lookups of the per-update path.
struct Plan {
    cfg: MonitorConfig,
    shift: u32,
    age_shift: u32,
    count_base: u64,
    /// Buckets of the kept groupings: by_count, by_age.
    sizes: [usize; 2],
    threshold: u64,
    salt: u64,
    t0: i64,
    t1: i64,
    ids: HashSet<u64, IdHashBuilder>,
    /// A track window or explicit ids are set: `is_tracked` looks past
    /// the hash (one test on the per-update path when they are not).
    tracks_more: bool,
}

/// Log-spaced key of x >= 1: the exponent and the next `s` bits.
#[inline(always)]
fn log_key(x: u64, s: u32) -> u64 {
    let e = 63 - x.leading_zeros();
    let m = if e >= s { x >> (e - s) } else { x << (s - e) };
    (u64::from(e) << s) | (m & ((1 << s) - 1))
}

/// `log_key` of 1 <= x < 2^52, from the bits of x as an f64 (exact below
/// 2^53): its biased exponent and top mantissa bits are the exponent and
/// next `s` bits of x.
#[inline(always)]
fn log_key_small(x: u64, s: u32) -> u64 {
    ((x as i64 as f64).to_bits() >> (52 - s)).wrapping_sub(1023 << s)
}

/// Smallest x >= 1 whose `log_key` is `key` (or would be, for keys no
/// integer maps to).
fn log_lower(key: u64, s: u32) -> u64 {
    let e = (key >> s) as u32;
    let m = (1u64 << s) | (key & ((1 << s) - 1));
    if e >= s {
        m.checked_shl(e - s).unwrap_or(u64::MAX)
    } else {
        m >> (s - e)
    }
}

impl Plan {
    fn new(cfg: MonitorConfig) -> Plan {
        let shift = cfg.per_doubling.trailing_zeros();
        let count_base = log_key(cfg.count_limit + 1, shift);
        let count_size =
            cfg.count_limit as usize + 1 + (log_key(u64::MAX, shift) - count_base) as usize + 1;
        let age_shift = cfg.age_per_doubling.trailing_zeros();
        let sizes = [count_size, 1 + (64usize << age_shift)];
        let threshold = (cfg.sample_rate * (1u64 << 53) as f64) as u64;
        let (t0, t1) = cfg.track_window.unwrap_or((i64::MAX, i64::MIN));
        let ids: HashSet<u64, IdHashBuilder> = cfg.track_ids.iter().copied().collect();
        Plan {
            tracks_more: t0 < t1 || !ids.is_empty(),
            shift,
            age_shift,
            count_base,
            sizes,
            threshold,
            salt: mix64(cfg.seed ^ 0x006d_6f6e_6974_6f72),
            t0,
            t1,
            ids,
            cfg,
        }
    }

    #[inline(always)]
    fn count_bucket(&self, c: u64) -> usize {
        if c <= self.cfg.count_limit {
            c as usize
        } else {
            (self.cfg.count_limit + 1 + log_key(c, self.shift) - self.count_base) as usize
        }
    }

    #[inline(always)]
    fn age_bucket(&self, timestamp: i64, first_seen: i64) -> usize {
        let age = timestamp.saturating_sub(first_seen);
        if age < 1 {
            0
        } else {
            1 + log_key(age as u64, self.age_shift) as usize
        }
    }

    /// `count_bucket` and `age_bucket` (`timestamp − first_seen` given as
    /// `age`, at least 0) of the first `n` updates of a pending buffer,
    /// into `out` (by_count, by_age). Below 2^52 a log key is read from
    /// the bits of the value as an f64 (`log_key_small`: a conversion and
    /// a shift, where `log_key` is a bit scan and variable shifts), and
    /// the choice between the exact and the log-spaced bucket is a select.
    /// A buffer holding a larger count or age takes the one-update form
    /// (the reference in the tests).
    #[inline(always)]
    fn buckets_batch(
        &self,
        n: usize,
        count: &[u64; PENDING],
        age: &[i64; PENDING],
        out: &mut [[u32; PENDING]; 2],
    ) {
        let (count, age) = (&count[..n], &age[..n]);
        // A negative age (none is pushed) falls back too.
        let big = count
            .iter()
            .zip(age)
            .fold(0u64, |b, (&c, &a)| b | c | a as u64);
        let [by_count, by_age] = out;
        if big >> 52 != 0 {
            for k in 0..n {
                by_count[k] = self.count_bucket(count[k]) as u32;
                by_age[k] = self.age_bucket(age[k], 0) as u32;
            }
            return;
        }
        let (limit, base) = (self.cfg.count_limit, self.count_base);
        for (b, &c) in by_count.iter_mut().zip(count) {
            let log = (limit + 1)
                .wrapping_add(log_key_small(c, self.shift))
                .wrapping_sub(base);
            *b = if c <= limit { c } else { log } as u32;
        }
        for (b, &a) in by_age.iter_mut().zip(age) {
            let log = log_key_small(a as u64, self.age_shift).wrapping_add(1);
            *b = if a < 1 { 0 } else { log } as u32;
        }
    }

    /// Lower bound of bucket `b` of grouping `g` (`GROUPINGS` order; counts
    /// or seconds).
    fn lower(&self, g: usize, b: usize) -> i64 {
        self.lower_u64(g, b).min(i64::MAX as u64) as i64
    }

    fn lower_u64(&self, g: usize, b: usize) -> u64 {
        let b = b as u64;
        match g {
            0 if b <= self.cfg.count_limit => b,
            0 => log_lower(b - self.cfg.count_limit - 1 + self.count_base, self.shift)
                .max(self.cfg.count_limit + 1),
            1 if b == 0 => 0,
            1 => 1u64 << (b - 1),
            _ if b == 0 => 0,
            _ => log_lower(b - 1, self.age_shift),
        }
    }

    #[inline(always)]
    fn is_tracked(&self, h: u64, id: u64, first_seen: i64) -> bool {
        (h >> 11) < self.threshold
            || (self.tracks_more
                && ((first_seen >= self.t0 && first_seen < self.t1)
                    || (!self.ids.is_empty() && self.ids.contains(&id))))
    }

    /// Whether `is_tracked` reads `first_seen` (a track window is set):
    /// else a scan can leave the rows' metadata unread.
    fn tracks_by_time(&self) -> bool {
        self.t0 < self.t1
    }

    #[inline(always)]
    fn hash(&self, id: u64) -> u64 {
        mix64(id ^ self.salt)
    }
}

/// Count, sums, sums of squares, min and max of the four statistics.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Moments {
    n: u64,
    sum: [f64; 4],
    sumsq: [f64; 4],
    min: [f32; 4],
    max: [f32; 4],
}

impl Moments {
    const EMPTY: Moments = Moments {
        n: 0,
        sum: [0.0; 4],
        sumsq: [0.0; 4],
        min: [f32::INFINITY; 4],
        max: [f32::NEG_INFINITY; 4],
    };

    /// Add one update's statistics `v`, given with their f64 values and
    /// squares (`Wide`: computed once for both groupings).
    #[inline(always)]
    fn add(&mut self, v: &[f32; 4], w: &Wide) {
        self.n += 1;
        for j in 0..4 {
            self.sum[j] += w.x[j];
            self.sumsq[j] += w.sq[j];
        }
        min_max(&mut self.min, &mut self.max, v);
    }

    fn merge(&mut self, o: &Moments) {
        self.n += o.n;
        for j in 0..4 {
            self.sum[j] += o.sum[j];
            self.sumsq[j] += o.sumsq[j];
            self.min[j] = self.min[j].min(o.min[j]);
            self.max[j] = self.max[j].max(o.max[j]);
        }
    }
}

/// `min[j] = if v[j] < min[j] { v[j] } else { min[j] }` and the same for
/// `max` with `>`, for the four lanes: selects rather than `f32::min/max`
/// (the values are finite; no NaN fix-ups). On x86-64 as one `minps` and
/// one `maxps` (whose lanes are exactly these selects) and two plain
/// stores: left to itself, the compiler turned the selects into masked
/// stores (`vmaskmovps`) in the AVX2 flush, slow on AMD CPUs (the flush's
/// hottest instruction in `perf`; 9% fewer flush cycles without them).
#[inline(always)]
fn min_max(min: &mut [f32; 4], max: &mut [f32; 4], v: &[f32; 4]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_loadu_ps, _mm_max_ps, _mm_min_ps, _mm_storeu_ps};
        // SAFETY: SSE is part of the x86-64 baseline; each pointer is to
        // four f32s.
        unsafe {
            let y = _mm_loadu_ps(v.as_ptr());
            let lo = _mm_min_ps(y, _mm_loadu_ps(min.as_ptr()));
            let hi = _mm_max_ps(y, _mm_loadu_ps(max.as_ptr()));
            _mm_storeu_ps(min.as_mut_ptr(), lo);
            _mm_storeu_ps(max.as_mut_ptr(), hi);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    for (j, &y) in v.iter().enumerate() {
        min[j] = if y < min[j] { y } else { min[j] };
        max[j] = if y > max[j] { y } else { max[j] };
    }
}

/// One update's statistics as f64 and their squares: what `Moments::add`
/// adds (the same values whichever grouping it is added to).
struct Wide {
    x: [f64; 4],
    sq: [f64; 4],
}

impl Wide {
    #[inline(always)]
    fn of(v: &[f32; 4]) -> Wide {
        let x = v.map(f64::from);
        Wide {
            x,
            sq: x.map(|x| x * x),
        }
    }
}

/// Moments and sketches of the four statistics over one bucket.
#[derive(Clone, Debug, PartialEq)]
struct Group {
    m: Moments,
    sketch: [Sketch<u64>; 4],
}

impl Group {
    fn new() -> Self {
        Group {
            m: Moments::EMPTY,
            sketch: std::array::from_fn(|_| Sketch::new()),
        }
    }

    fn merge_from(&mut self, o: &Group) {
        if o.m.n == 0 {
            return;
        }
        self.m.merge(&o.m);
        for (a, b) in self.sketch.iter_mut().zip(&o.sketch) {
            a.merge_from(b);
        }
    }

    /// Move a shard group's contents here, leaving it empty.
    fn drain(&mut self, o: &mut ShardGroup) {
        if o.m.n == 0 {
            return;
        }
        self.m.merge(&o.m);
        for (a, b) in self.sketch.iter_mut().zip(o.sketch.iter_mut()) {
            b.drain_into(a, o.m.n);
        }
        o.m = Moments::EMPTY;
    }

    fn heap_bytes(&self) -> usize {
        self.sketch.iter().map(Sketch::heap_bytes).sum()
    }
}

/// A shard's bucket: the same moments, byte-counter sketches.
#[derive(Clone, Debug)]
struct ShardGroup {
    m: Moments,
    sketch: [CompactSketch; 4],
}

impl ShardGroup {
    fn new() -> Self {
        ShardGroup {
            m: Moments::EMPTY,
            sketch: Default::default(),
        }
    }

    #[inline(always)]
    /// Add one update: its statistics (also as `Wide`) and their sketch
    /// keys (negative: the value is counted as a zero, see
    /// `CompactSketch::add_key_or_negative`).
    fn add(&mut self, v: &[f32; 4], w: &Wide, keys: &[i32; 4]) {
        self.m.add(v, w);
        for (s, &k) in self.sketch.iter_mut().zip(keys) {
            s.add_key_or_negative(k);
        }
    }
}

/// One recorded row of a tracked item.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Record {
    pub id: u64,
    pub count: u64,
    pub timestamp: i64,
    /// Recorded by `record_publish` (else at a count milestone).
    pub publish: bool,
}

struct ShardTrack {
    id: u64,
    path: f64,
    updates: u64,
    last_milestone: u64,
    /// Latest event time of the item in this shard.
    last: i64,
}

/// The checks of `observe` and `observe_pairs`, made before any state
/// changes: a row width the monitor takes, ...
fn check_columns(cols: usize) -> Result<()> {
    if cols == 0 || cols > 65536 {
        return Err(invalid(format!(
            "rows must have between 1 and 65536 columns, got {cols}"
        )));
    }
    Ok(())
}

/// ... `n` rows of `cols` values in `rows` (the argument `name`), ...
fn check_shape(name: &str, n: usize, rows: &[f32], cols: usize) -> Result<()> {
    if rows.len() != n * cols {
        return Err(invalid(format!(
            "ids has {n} elements but {name} has {} rows",
            rows.len() / cols
        )));
    }
    Ok(())
}

/// ... finite values only, ...
fn check_finite(name: &str, ids: &[u64], rows: &[f32], cols: usize) -> Result<()> {
    // A pass of integer and/sub/or that the compiler vectorises with SSE2
    // (`position` alone exits early and stays scalar: 2/5 of
    // `observe_pairs`' instructions): a value is finite when its magnitude
    // bits are at most f32::MAX's, i.e. when MAX − magnitude keeps the sign
    // bit clear. The first bad value is looked for only when there is one.
    let mut bad = [0u32; 8];
    let mut chunks = rows.chunks_exact(8);
    for c in &mut chunks {
        for (b, x) in bad.iter_mut().zip(c) {
            *b |= 0x7f7f_ffffu32.wrapping_sub(x.to_bits() & 0x7fff_ffff);
        }
    }
    let all_finite = bad.iter().fold(0, |a, &b| a | b) >> 31 == 0;
    if all_finite && chunks.remainder().iter().all(|x| x.is_finite()) {
        return Ok(());
    }
    if let Some(k) = rows.iter().position(|x| !x.is_finite()) {
        return Err(invalid(format!(
            "{name}[{}] (id {}) has a non-finite value; nothing was recorded",
            k / cols,
            ids[k / cols]
        )));
    }
    Ok(())
}

/// ... one value per id in each given array, ...
fn check_lengths<const K: usize>(n: usize, arrays: [(&str, Option<&[i64]>); K]) -> Result<()> {
    for (name, a) in arrays {
        if let Some(a) = a.filter(|a| a.len() != n) {
            return Err(invalid(format!(
                "ids has {n} elements but {name} has {}",
                a.len()
            )));
        }
    }
    Ok(())
}

/// ... and no negative interaction count.
fn check_counts(counts: &[i64]) -> Result<()> {
    // As in `check_finite`: a vectorised minimum first.
    if counts.iter().fold(0i64, |m, &x| m.min(x)) >= 0 {
        return Ok(());
    }
    if let Some(k) = counts.iter().position(|&x| x < 0) {
        return Err(invalid(format!(
            "counts[{k}] = {} is negative; interaction counts are >= 0",
            counts[k]
        )));
    }
    Ok(())
}

/// `make_room` runs once the retired items number at least
/// 1/`ROOM_BATCH` of the tracked items (5%).
const ROOM_BATCH: usize = 20;

/// Updates buffered per shard before they are bucketed.
const PENDING: usize = 256;

/// Updates waiting to be turned into statistics and bucketed, one array
/// per field (so that `Monitor::flush` computes the statistics of many
/// updates per vector instruction): ‖after − before‖², ‖before‖², ‖after‖²,
/// the interaction count, the event time, the item's first-seen time and
/// the id's hash.
struct Pending {
    len: usize,
    dd: [f32; PENDING],
    na: [f32; PENDING],
    nb: [f32; PENDING],
    count: [u64; PENDING],
    timestamp: [i64; PENDING],
    first_seen: [i64; PENDING],
    /// The id's hash, for the distinct-items estimate.
    hash: [u64; PENDING],
    /// Scratch of `flush`: the item ages (at least 0), the four
    /// statistics, their sketch keys and buckets.
    age: [i64; PENDING],
    stats: [[f32; PENDING]; 4],
    keys: [[i32; PENDING]; 4],
    buckets: [[u32; PENDING]; 2],
}

impl Pending {
    fn new() -> Pending {
        Pending {
            len: 0,
            dd: [0.0; PENDING],
            na: [0.0; PENDING],
            nb: [0.0; PENDING],
            count: [0; PENDING],
            timestamp: [0; PENDING],
            first_seen: [0; PENDING],
            age: [0; PENDING],
            hash: [0; PENDING],
            stats: [[0.0; PENDING]; 4],
            keys: [[0; PENDING]; 4],
            buckets: [[0; PENDING]; 2],
        }
    }

    /// Buffer one update; true when the buffer is full.
    #[inline(always)]
    fn push(&mut self, dd: f32, na: f32, nb: f32, count: u64, times: [i64; 2], hash: u64) -> bool {
        // `len < PENDING` always holds here (a full buffer is flushed at
        // once); the mask only spares the bounds checks.
        let k = self.len & (PENDING - 1);
        self.dd[k] = dd;
        self.na[k] = na;
        self.nb[k] = nb;
        self.count[k] = count;
        [self.timestamp[k], self.first_seen[k]] = times;
        self.hash[k] = hash;
        self.len = k + 1;
        self.len == PENDING
    }
}

/// A worker thread's private accumulators.
pub struct Shard {
    /// by_count, by_age.
    groups: [Vec<ShardGroup>; 2],
    /// The groups given updates since the last `absorb_into`, per grouping
    /// (each once): absorb drains these rather than scanning all ~800
    /// groups, a cache miss each when a training step came in between.
    touched: [Vec<u32>; 2],
    hll: Box<[u8; HLL_SIZE]>,
    updates: u64,
    skipped: u64,
    dim: usize,
    index: HashMap<u64, u32, IdHashBuilder>,
    tracks: Vec<ShardTrack>,
    /// Two rows per track: the first `before` seen, the latest `after`.
    track_rows: Vec<f32>,
    records: Vec<Record>,
    record_rows: Vec<f32>,
    room: usize,
    /// A lock-held call's shard (`Monitor::take_direct_shard`): its
    /// distinct-item sightings went straight into the monitor's registers
    /// (`hll` is untouched zeros), and it stays resident with its groups.
    direct: bool,
    /// Statistics not yet added to the groups (see `Monitor::flush`).
    pending: Pending,
    dropped: u64,
    /// Latest event time of any update in this shard.
    latest: i64,
}

impl Shard {
    fn new(plan: &Plan) -> Shard {
        Shard {
            touched: [Vec::new(), Vec::new()],
            groups: plan
                .sizes
                .map(|n| (0..n).map(|_| ShardGroup::new()).collect()),
            hll: Box::new([0; HLL_SIZE]),
            updates: 0,
            skipped: 0,
            dim: 0,
            index: HashMap::default(),
            tracks: Vec::new(),
            track_rows: Vec::new(),
            records: Vec::new(),
            record_rows: Vec::new(),
            room: 0,
            direct: false,
            pending: Pending::new(),
            dropped: 0,
            latest: i64::MIN,
        }
    }

    /// Reset for reuse (the groups were emptied by `Group::drain`).
    fn clear(&mut self) {
        if !self.direct {
            self.hll.fill(0);
        }
        self.direct = false;
        self.updates = 0;
        self.skipped = 0;
        self.dim = 0;
        self.index.clear();
        self.tracks.clear();
        self.track_rows.clear();
        self.records.clear();
        self.record_rows.clear();
        self.dropped = 0;
        self.latest = i64::MIN;
    }

    fn bytes(&self) -> usize {
        let g: usize = self
            .groups
            .iter()
            .flatten()
            .map(|g| {
                std::mem::size_of::<ShardGroup>()
                    + g.sketch
                        .iter()
                        .map(CompactSketch::heap_bytes)
                        .sum::<usize>()
            })
            .sum();
        g + HLL_SIZE
            + self.index.capacity() * 16
            + self.tracks.capacity() * std::mem::size_of::<ShardTrack>()
            + 4 * (self.track_rows.capacity() + self.record_rows.capacity())
            + self.records.capacity() * std::mem::size_of::<Record>()
    }
}

/// Whether this CPU runs `Monitor::flush_wide` (cached by the standard
/// library after the first test), and `EMBCORE_SIMD=sse` does not ask for
/// the baseline (the setting the training kernels follow: `simd::avx`).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn wide_flush_available() -> bool {
    crate::kernels::simd::avx().is_some()
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("lzcnt")
        && std::arch::is_x86_feature_detected!("bmi1")
        && std::arch::is_x86_feature_detected!("bmi2")
}

#[inline(always)]
fn hll_add(reg: &mut [u8; HLL_SIZE], h: u64) {
    let i = (h & (HLL_SIZE as u64 - 1)) as usize;
    let rank = ((h >> HLL_BITS).leading_zeros() + 1 - HLL_BITS) as u8;
    reg[i] = reg[i].max(rank);
}

fn hll_estimate(reg: &[u8]) -> u64 {
    let m = reg.len() as f64;
    let (mut sum, mut zeros) = (0.0f64, 0usize);
    for &r in reg {
        sum += (-f64::from(r)).exp2();
        zeros += usize::from(r == 0);
    }
    let raw = 0.7213 / (1.0 + 1.079 / m) * m * m / sum;
    let est = if raw <= 2.5 * m && zeros > 0 {
        m * (m / zeros as f64).ln()
    } else {
        raw
    };
    est.round() as u64
}

/// ‖b − a‖², ‖a‖², ‖b‖² in one pass, four lanes at a time
/// (`fused::moments`: explicit vector code; left to the compiler, a fully
/// unrolled known-width loop came out scalar, with every lane spilled).
#[inline(always)]
fn moments(a: &[f32], b: &[f32]) -> (f32, f32, f32) {
    // The common widths without the loop counter and the remainder loop.
    match (a.len(), b.len()) {
        (16, 16) => moments_quads::<4>(a, b),
        (32, 32) => moments_quads::<8>(a, b),
        (64, 64) => moments_quads::<16>(a, b),
        _ => crate::kernels::simd::moments(a, b),
    }
}

/// `kernels::simd::moments` of rows of exactly `4 × Q` values, unrolled
/// (slices of a compile-time length; the same operations, so the same bits).
#[inline(always)]
fn moments_quads<const Q: usize>(a: &[f32], b: &[f32]) -> (f32, f32, f32) {
    match (a.get(..4 * Q), b.get(..4 * Q)) {
        (Some(a), Some(b)) => crate::kernels::simd::moments_quads(a, b),
        _ => crate::kernels::simd::moments(a, b),
    }
}

/// Add the first `n` updates of a pending buffer whose statistics, sketch
/// keys and buckets are computed to the shard's groups, in order (each
/// group's moments add its updates in the order they came). With `CHECK`,
/// an update whose statistics sum to a non-finite value is skipped; the
/// number skipped is returned.
#[inline(always)]
fn add_pending<const CHECK: bool>(
    q: &Pending,
    n: usize,
    groups: &mut [Vec<ShardGroup>; 2],
    touched: &mut [Vec<u32>; 2],
) -> u64 {
    let [drift, magnitude, relative, norm] = &q.stats;
    let [count_buckets, age_buckets] = &q.buckets;
    let mut skipped = 0;
    for k in 0..n {
        let v = [drift[k], magnitude[k], relative[k], norm[k]];
        if CHECK && !(v[0] + v[1] + v[2] + v[3]).is_finite() {
            skipped += 1;
            continue;
        }
        let w = Wide::of(&v);
        let keys = [q.keys[0][k], q.keys[1][k], q.keys[2][k], q.keys[3][k]];
        for ((g, t), &b) in groups
            .iter_mut()
            .zip(touched.iter_mut())
            .zip([count_buckets[k], age_buckets[k]].iter())
        {
            if let Some(g) = g.get_mut(b as usize) {
                if g.m.n == 0 {
                    t.push(b);
                }
                g.add(&v, &w, &keys);
            }
        }
    }
    skipped
}

/// Drift, magnitude, relative magnitude, norm of one update from
/// ‖b − a‖², ‖a‖², ‖b‖²: the obvious form of `statistics_batch` (its
/// reference in the tests).
#[cfg(test)]
fn statistics(dd: f32, na: f32, nb: f32) -> [f32; 4] {
    let (norm_before, norm, magnitude) = (na.sqrt(), nb.sqrt(), dd.sqrt());
    let drift = if na > 0.0 && nb > 0.0 {
        let r = norm - norm_before;
        ((dd - r * r) / (2.0 * norm_before * norm)).clamp(0.0, 2.0)
    } else if na == nb {
        0.0
    } else {
        1.0
    };
    [drift, magnitude, magnitude / norm_before, norm]
}

/// `statistics` of every update of a pending buffer, into one array per
/// statistic. Written as selects rather than branches so that the compiler
/// computes several updates per vector instruction; each lane does the
/// operations of `statistics` in the same order (square roots and divisions
/// are correctly rounded in vector form too), so the bits are the same.
///
/// Returns whether the statistics of an update sum to a non-finite value
/// (`flush` skips those): one test per buffer rather than per update.
#[inline(always)]
fn statistics_batch(
    dd: &[f32; PENDING],
    na: &[f32; PENDING],
    nb: &[f32; PENDING],
    out: &mut [[f32; PENDING]; 4],
) -> bool {
    let [drift, magnitude, relative, norm] = out;
    let mut bad = 0u32;
    for k in 0..PENDING {
        let (dd, na, nb) = (dd[k], na[k], nb[k]);
        let (norm_before, norm_after, m) = (na.sqrt(), nb.sqrt(), dd.sqrt());
        let r = norm_after - norm_before;
        let cos = ((dd - r * r) / (2.0 * norm_before * norm_after)).clamp(0.0, 2.0);
        let edge = if na == nb { 0.0 } else { 1.0 };
        drift[k] = if na > 0.0 && nb > 0.0 { cos } else { edge };
        magnitude[k] = m;
        relative[k] = m / norm_before;
        norm[k] = norm_after;
        // Finite: magnitude bits at most those of f32::MAX (as `is_finite`,
        // as integer work that vectorises).
        let sum = drift[k] + magnitude[k] + relative[k] + norm[k];
        bad |= 0x7f7f_ffffu32.wrapping_sub(sum.to_bits() & 0x7fff_ffff);
    }
    bad >> 31 != 0
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Track {
    slot: u32,
    path: f64,
    updates: u64,
    /// Latest event time of an update or a record of the item.
    last: i64,
    /// Its row left the model, or it went `retire_after` without news: its
    /// trajectory is complete, and first to go when room is needed.
    retired: bool,
}

impl Track {
    fn new(last: i64) -> Track {
        Track {
            slot: NO_SLOT,
            path: 0.0,
            updates: 0,
            last,
            retired: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Prev {
    slot: u32,
    seen: u64,
    first_seen: i64,
    /// Latest event time the id was observed.
    last: i64,
}

/// What `observe`'s first pass found for one row.
#[derive(Clone, Copy, Debug, Default)]
struct Resolved {
    /// The id's slot in `prev_rows`.
    slot: u32,
    /// First sight of the id (its row is stored, nothing to compare with).
    first: bool,
    interactions: u64,
    first_seen: i64,
    timestamp: i64,
}

/// Move the groups `sh` gave updates to into `groups`, leaving them empty.
fn drain_touched(groups: &mut [Vec<Group>; 2], sh: &mut Shard) {
    for ((dst, src), touched) in groups
        .iter_mut()
        .zip(sh.groups.iter_mut())
        .zip(sh.touched.iter_mut())
    {
        for &b in touched.iter() {
            dst[b as usize].drain(&mut src[b as usize]);
        }
        touched.clear();
    }
}

#[derive(Default)]
struct State {
    dim: usize,
    /// by_count, by_age (by_popularity is derived from by_count).
    groups: [Vec<Group>; 2],
    hll: Vec<u8>,
    updates: u64,
    skipped: u64,
    clock: i64,
    tracked: HashMap<u64, Track, IdHashBuilder>,
    track_rows: Vec<f32>,
    /// Slots of `track_rows` freed by dropped items.
    track_free: Vec<u32>,
    records: Vec<Record>,
    record_rows: Vec<f32>,
    dropped: u64,
    milestones_recorded: HashSet<(u64, u64)>,
    prev: PrevMap,
    prev_rows: Vec<f32>,
    /// Slots of `prev_rows` freed by forgotten ids.
    prev_free: Vec<u32>,
    /// Latest event time seen (an update, a record, an observed row).
    latest: i64,
    /// `latest` at the last retirement sweep.
    last_sweep: i64,
    /// Tracked items dropped (with their records) to make room.
    dropped_items: u64,
    /// Items that qualified for tracking but found no room.
    untracked: u64,
    /// `max_records`, `max_tracked`.
    limits: (usize, usize),
    /// Retired tracked items, counted as they retire and return (made exact
    /// again by every `make_room` scan). `make_room` scans and compacts only
    /// when they are a batch worth it (see `ROOM_BATCH`): without that a
    /// full monitor would scan every tracked item and every record for each
    /// further record, which made a long replay quadratic.
    retired_count: usize,
    /// Tests only: scans of the tracked items by `make_room`.
    #[cfg(test)]
    room_scans: u64,
    /// Cleared shards kept for the next call (boxed: they move between
    /// threads and this pool as `UpdateObserver::Shard`).
    #[allow(clippy::vec_box)]
    pool: Vec<Box<Shard>>,
    /// The shard of the calls that hold this lock throughout (`observe`,
    /// `observe_pairs`), kept with its groups between calls: they are
    /// drained into `groups` by `settle`, before anything reads the groups,
    /// not after every call (that drain was about half of a PyTorch hook's
    /// call on cache-cold state).
    resident: Option<Box<Shard>>,
}

impl State {
    fn new(plan: &Plan) -> State {
        State {
            groups: plan.sizes.map(|n| (0..n).map(|_| Group::new()).collect()),
            hll: vec![0; HLL_SIZE],
            latest: i64::MIN,
            last_sweep: i64::MIN,
            limits: (plan.cfg.max_records, plan.cfg.max_tracked),
            ..Default::default()
        }
    }

    /// Drain the resident shard's groups into `groups`: called by every
    /// reader of the groups (summary, bytes, merge, memory). The bucket
    /// and sketch counts are exact either way; the moments' f64 sums are
    /// added in a different order than a drain after every call would.
    fn settle(&mut self) {
        if let Some(sh) = self.resident.as_mut() {
            drain_touched(&mut self.groups, sh);
        }
    }

    fn bind_dim(&mut self, dim: usize) -> Result<()> {
        if self.dim != 0 && self.dim != dim {
            return Err(invalid(format!(
                "this monitor holds rows of dim {} but got rows of dim {dim}; \
                 use one monitor per embedding dimension",
                self.dim
            )));
        }
        self.dim = dim;
        Ok(())
    }

    /// The tracked entry of `id`, created (with room made if needed) when
    /// it has none; None when there is no room for a new one (counted in
    /// `untracked` when `count`: once per item, not per record).
    fn track_entry(&mut self, id: u64, last: i64, count: bool) -> Option<&mut Track> {
        if !self.tracked.contains_key(&id) {
            if self.tracked.len() >= self.limits.1 {
                self.make_room();
            }
            if self.tracked.len() >= self.limits.1 {
                if count {
                    self.untracked = self.untracked.saturating_add(1);
                }
                return None;
            }
            self.tracked.insert(id, Track::new(last));
        }
        let t = self.tracked.get_mut(&id)?;
        t.last = t.last.max(last);
        Some(t)
    }

    /// Add a tracked item's path segment (first row, latest row). An item
    /// with news is active again (`retired`: whether this news retires it).
    #[allow(clippy::too_many_arguments)]
    fn merge_track(
        &mut self,
        id: u64,
        path: f64,
        updates: u64,
        first: &[f32],
        last_row: &[f32],
        last: i64,
        retired: bool,
    ) -> bool {
        let d = self.dim;
        let Some(t) = self.track_entry(id, last, true) else {
            return false;
        };
        t.path += path;
        t.updates = t.updates.saturating_add(updates);
        let was = std::mem::replace(&mut t.retired, retired);
        let slot = t.slot;
        match (was, retired) {
            (false, true) => self.retired_count += 1,
            (true, false) => self.retired_count = self.retired_count.saturating_sub(1),
            _ => {}
        }
        if slot == NO_SLOT {
            let slot = store_row(
                &mut self.track_free,
                &mut self.track_rows,
                &[first, last_row],
            );
            if let Some(t) = self.tracked.get_mut(&id) {
                t.slot = slot;
            }
        } else {
            let s = slot as usize;
            self.track_rows[(2 * s + 1) * d..(2 * s + 2) * d].copy_from_slice(last_row);
        }
        true
    }

    /// Keep a record unless it repeats a milestone or finds no room; true
    /// when kept. A record is news of its item: it is active again.
    fn push_record(&mut self, r: Record, row: &[f32]) -> bool {
        if !r.publish && self.milestones_recorded.contains(&(r.id, r.count)) {
            return false;
        }
        if self.records.len() >= self.limits.0 {
            self.make_room();
        }
        if self.records.len() >= self.limits.0 {
            self.dropped = self.dropped.saturating_add(1);
            return false;
        }
        // A record of an item without a track (a publish, a final row) is
        // the item's first sight: counted once; a milestone record of an
        // item whose track found no room is not.
        let Some(t) = self.track_entry(r.id, r.timestamp, r.publish) else {
            self.dropped = self.dropped.saturating_add(1);
            return false;
        };
        if std::mem::replace(&mut t.retired, false) {
            self.retired_count = self.retired_count.saturating_sub(1);
        }
        if !r.publish {
            self.milestones_recorded.insert((r.id, r.count));
        }
        self.records.push(r);
        self.record_rows.extend_from_slice(row);
        true
    }

    fn see(&mut self, t: i64) {
        self.latest = self.latest.max(t);
    }

    /// Retire `id`'s trajectory (its row left the model) and forget its
    /// previous observed row.
    fn retire(&mut self, id: u64) {
        if let Some(t) = self.tracked.get_mut(&id) {
            if !std::mem::replace(&mut t.retired, true) {
                self.retired_count += 1;
            }
        }
        if let Some(p) = self.prev.remove(&id) {
            self.prev_free.push(p.slot);
        }
    }

    /// With `retire_after`: retire tracked items and forget observed ids
    /// without news for that long. Runs when event time has moved by a
    /// quarter of it since the last sweep, so its cost is amortised.
    fn sweep(&mut self, retire_after: Option<i64>) {
        let Some(a) = retire_after else { return };
        if self.latest == i64::MIN || self.latest.saturating_sub(self.last_sweep) < (a / 4).max(1) {
            return;
        }
        self.last_sweep = self.latest;
        let cutoff = self.latest.saturating_sub(a);
        for t in self.tracked.values_mut() {
            if t.last < cutoff && !std::mem::replace(&mut t.retired, true) {
                self.retired_count += 1;
            }
        }
        let free = &mut self.prev_free;
        self.prev.retain(|_, p| {
            let keep = p.last >= cutoff;
            if !keep {
                free.push(p.slot);
            }
            keep
        });
    }

    /// Drop retired items, those retired longest ago first (ties by id),
    /// until records and tracked items are at most 90% of their limits:
    /// their trajectories go, their updates stay in the aggregates. Items
    /// still active are never dropped.
    fn make_room(&mut self) {
        let (max_records, max_tracked) = self.limits;
        let (want_records, want_tracked) = (
            max_records - max_records / 10,
            max_tracked - max_tracked / 10,
        );
        // A scan and a compaction cost O(tracked + records): run them only
        // when the retired items are a batch, so that each costs O(1) per
        // retirement; until then a record or item that finds no room is
        // dropped and counted.
        let batch = (self.tracked.len() / ROOM_BATCH).max(1);
        if self.retired_count < batch {
            return;
        }
        #[cfg(test)]
        {
            self.room_scans += 1;
        }
        let mut retired: Vec<(i64, u64)> = self
            .tracked
            .iter()
            .filter(|(_, t)| t.retired)
            .map(|(&id, t)| (t.last, id))
            .collect();
        retired.sort_unstable();
        self.retired_count = retired.len();
        let mut per_item: HashMap<u64, usize, IdHashBuilder> = HashMap::default();
        for r in &self.records {
            *per_item.entry(r.id).or_default() += 1;
        }
        let (mut records, mut tracked) = (self.records.len(), self.tracked.len());
        let mut gone: HashSet<u64, IdHashBuilder> = HashSet::default();
        for (_, id) in retired {
            if records <= want_records && tracked <= want_tracked {
                break;
            }
            records -= per_item.get(&id).copied().unwrap_or(0);
            tracked -= 1;
            gone.insert(id);
        }
        self.retired_count -= gone.len();
        self.drop_items(&gone);
    }

    fn drop_items(&mut self, gone: &HashSet<u64, IdHashBuilder>) {
        if gone.is_empty() {
            return;
        }
        let d = self.dim;
        for id in gone {
            if let Some(t) = self.tracked.remove(id) {
                if t.slot != NO_SLOT {
                    self.track_free.push(t.slot);
                }
            }
        }
        let before = self.records.len();
        let (mut w, mut kept) = (0usize, Vec::with_capacity(before));
        for k in 0..before {
            let r = self.records[k];
            if gone.contains(&r.id) {
                continue;
            }
            if w != k {
                self.record_rows.copy_within(k * d..(k + 1) * d, w * d);
            }
            kept.push(r);
            w += 1;
        }
        self.record_rows.truncate(w * d);
        self.records = kept;
        self.milestones_recorded
            .retain(|(id, _)| !gone.contains(id));
        self.dropped = self.dropped.saturating_add((before - w) as u64);
        self.dropped_items = self.dropped_items.saturating_add(gone.len() as u64);
    }

    fn memory_bytes(&self) -> usize {
        let g: usize = self
            .groups
            .iter()
            .flatten()
            .map(|g| std::mem::size_of::<Group>() + g.heap_bytes())
            .sum();
        g + self.hll.capacity()
            + self.tracked.capacity() * (9 + std::mem::size_of::<Track>())
            + self.records.capacity() * std::mem::size_of::<Record>()
            + self.milestones_recorded.capacity() * 17
            + self.prev.capacity() * std::mem::size_of::<(u64, Prev)>()
            + 4 * (self.track_rows.capacity()
                + self.record_rows.capacity()
                + self.prev_rows.capacity()
                + self.track_free.capacity()
                + self.prev_free.capacity())
            + self.pool.iter().map(|s| s.bytes()).sum::<usize>()
            + self.resident.as_ref().map_or(0, |s| s.bytes())
    }
}

/// Store `parts` (rows laid side by side) in a free slot of `rows`, or a new
/// one at its end; returns the slot.
fn store_row(free: &mut Vec<u32>, rows: &mut Vec<f32>, parts: &[&[f32]]) -> u32 {
    let width: usize = parts.iter().map(|p| p.len()).sum();
    match free.pop() {
        Some(s) => {
            let mut at = s as usize * width;
            for p in parts {
                rows[at..at + p.len()].copy_from_slice(p);
                at += p.len();
            }
            s
        }
        None => {
            let s = (rows.len() / width.max(1)) as u32;
            for p in parts {
                rows.extend_from_slice(p);
            }
            s
        }
    }
}

/// The monitor: immutable configuration plus mutex-guarded state.
pub struct Monitor {
    plan: Plan,
    state: Mutex<State>,
}

/// Summary of one statistic over the buckets of a grouping.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatSummary {
    pub n: Vec<u64>,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub min: Vec<f64>,
    pub max: Vec<f64>,
    pub p50: Vec<f64>,
    pub p90: Vec<f64>,
    pub p99: Vec<f64>,
}

impl StatSummary {
    fn push(&mut self, n: u64, sum: f64, sumsq: f64, min: f64, max: f64, q: [f64; 3]) {
        let mean = sum / n as f64;
        self.n.push(n);
        self.mean.push(mean);
        self.std
            .push((sumsq / n as f64 - mean * mean).max(0.0).sqrt());
        self.min.push(min);
        self.max.push(max);
        self.p50.push(q[0]);
        self.p90.push(q[1]);
        self.p99.push(q[2]);
    }

    /// Exact summary of a list of values (one entry, or none when empty).
    fn of_values(mut v: Vec<f64>) -> StatSummary {
        let mut s = StatSummary::default();
        if v.is_empty() {
            return s;
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[(q * (v.len() - 1) as f64).floor() as usize];
        let sum: f64 = v.iter().sum();
        let sumsq: f64 = v.iter().map(|x| x * x).sum();
        let q = [at(0.5), at(0.9), at(0.99)];
        s.push(v.len() as u64, sum, sumsq, v[0], v[v.len() - 1], q);
        s
    }
}

/// The non-empty buckets of one grouping.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupingSummary {
    pub lower: Vec<i64>,
    pub n: Vec<u64>,
    pub stats: [StatSummary; 4],
}

impl GroupingSummary {
    fn push(&mut self, lower: i64, g: &Group) {
        let m = &g.m;
        self.lower.push(lower);
        self.n.push(m.n);
        for j in 0..4 {
            // Clamping to [min, max] keeps the bound: the true quantile lies there.
            let (lo, hi) = (f64::from(m.min[j]), f64::from(m.max[j]));
            let q = [0.5, 0.9, 0.99].map(|q| g.sketch[j].quantile(q).unwrap_or(lo).clamp(lo, hi));
            self.stats[j].push(m.n, m.sum[j], m.sumsq[j], lo, hi, q);
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// by_count, by_popularity, by_age.
    pub groupings: [GroupingSummary; 3],
    /// All updates (one bucket, or none before the first update).
    pub overall: GroupingSummary,
    /// Path efficiency of tracked items that moved.
    pub path_efficiency: StatSummary,
    pub updates: u64,
    pub skipped_updates: u64,
    pub items_seen: u64,
    pub tracked_items: usize,
    /// Tracked items whose trajectory is complete (their row left the model
    /// or went `retire_after` without news), still kept.
    pub retired_items: usize,
    /// Tracked items dropped with their records to make room.
    pub dropped_items: u64,
    /// Items that qualified for tracking but found no room.
    pub untracked_items: u64,
    pub records: usize,
    pub dropped_records: u64,
    pub memory_bytes: usize,
    pub dim: usize,
}

/// Records sorted by (id, count, record order); rows are `dim` wide.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Trajectories {
    pub ids: Vec<u64>,
    pub counts: Vec<i64>,
    pub timestamps: Vec<i64>,
    pub rows: Vec<f32>,
    pub dim: usize,
}

/// Path efficiency per tracked item that moved.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PathEfficiency {
    pub ids: Vec<u64>,
    pub efficiency: Vec<f64>,
    pub path_length: Vec<f64>,
    pub displacement: Vec<f64>,
    pub updates: Vec<u64>,
}

impl Monitor {
    pub fn new(cfg: MonitorConfig) -> Result<Monitor> {
        let plan = Plan::new(cfg.validate()?);
        let state = Mutex::new(State::new(&plan));
        Ok(Monitor { plan, state })
    }

    pub fn config(&self) -> &MonitorConfig {
        &self.plan.cfg
    }

    /// The state, once rows of `cols` values fit it (any width before the
    /// first rows).
    fn lock_for_dim(&self, cols: usize) -> Result<MutexGuard<'_, State>> {
        let st = self.lock();
        if st.dim != 0 && st.dim != cols {
            return Err(invalid(format!(
                "rows have dim {cols} but this monitor holds rows of dim {}",
                st.dim
            )));
        }
        Ok(st)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-merged
        // in a way that matters more than losing the monitor: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Dimension of the rows seen so far (0 before any).
    pub fn dim(&self) -> usize {
        self.lock().dim
    }

    /// Fails when rows of `dim` cannot be fed to this monitor.
    pub fn check_dim(&self, dim: usize) -> Result<()> {
        let d = self.lock().dim;
        if d != 0 && d != dim {
            return Err(invalid(format!(
                "this monitor holds rows of dim {d} but the model has dim {dim}; \
                 use one monitor per embedding dimension"
            )));
        }
        Ok(())
    }

    /// The per-update path (no locks, no allocation unless the item is
    /// tracked or a sketch must grow).
    #[inline(always)]
    fn update(&self, sh: &mut Shard, u: &RowUpdate<'_>) {
        let p = &self.plan;
        let (dd, na, nb) = moments(u.before, u.after);
        let h = p.hash(u.id);
        // The ages and the latest time are the flush's work (a buffer at a
        // time, out of this loop).
        let times = [u.timestamp, u.first_seen];
        if sh.pending.push(dd, na, nb, u.interactions, times, h) {
            self.flush(sh);
        }
        if p.is_tracked(h, u.id, u.first_seen) && nb.is_finite() {
            self.track(
                sh,
                u.id,
                u.interactions,
                u.timestamp,
                Some(u.before),
                u.after,
                dd.sqrt(),
            );
        }
    }

    /// Turn the pending updates into statistics and add them to the shard's
    /// groups. Run in batches, away from the training loop, the square roots
    /// and divisions leave the loop's dependency chains (which retire in
    /// order) and the hot sketch lines stay in cache. The statistics and
    /// sketch keys of the whole buffer are computed first, in loops without
    /// branches that the compiler vectorises (the same IEEE operations in
    /// the same order as `statistics`, so the same bits); only the bucket
    /// updates are per update.
    ///
    /// Compiled twice: for the x86-64 baseline (SSE2) and, chosen at run
    /// time when the CPU has them, with AVX2, LZCNT and BMI (eight lanes
    /// in the batched loops, three-operand forms, one instruction for a
    /// leading-zero count): about a quarter fewer instructions. Both do
    /// the same IEEE operations in the same order (Rust never fuses a
    /// multiply and an add on its own), so the same bits; the tests run
    /// both against the one-update reference.
    #[inline(never)]
    fn flush(&self, sh: &mut Shard) {
        #[cfg(target_arch = "x86_64")]
        if wide_flush_available() {
            // SAFETY: the CPU has every feature `flush_wide` is compiled
            // for (checked just above).
            unsafe { self.flush_wide(sh) };
            return;
        }
        self.flush_body(sh);
    }

    /// `flush_body` compiled for CPUs with AVX2, LZCNT, BMI1 and BMI2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,lzcnt,bmi1,bmi2")]
    fn flush_wide(&self, sh: &mut Shard) {
        self.flush_body(sh);
    }

    #[inline(always)]
    fn flush_body(&self, sh: &mut Shard) {
        let p = &self.plan;
        let q = &mut sh.pending;
        let n = q.len.min(PENDING);
        if n == 0 {
            return;
        }
        // The HyperLogLog registers, a random byte of 16 KiB per update: in
        // the training loop each was a cache miss the loop waited for; here
        // the updates are independent and overlap (max is order-free: the
        // same registers).
        if !sh.direct {
            for &h in &q.hash[..n] {
                hll_add(&mut sh.hll, h);
            }
        }
        let bad = statistics_batch(&q.dd, &q.na, &q.nb, &mut q.stats);
        for (keys, values) in q.keys.iter_mut().zip(&q.stats) {
            for (k, &v) in keys.iter_mut().zip(values) {
                *k = sketch::key_or_negative(v);
            }
        }
        // At least 0 (every age below 1 has bucket 0): `buckets_batch`
        // then needs one test for its fast form.
        for ((a, &t), &f) in q.age.iter_mut().zip(&q.timestamp).zip(&q.first_seen) {
            *a = t.saturating_sub(f).max(0);
        }
        let latest = q.timestamp[..n].iter().fold(i64::MIN, |m, &t| m.max(t));
        sh.latest = sh.latest.max(latest);
        p.buckets_batch(n, &q.count, &q.age, &mut q.buckets);
        // Without a non-finite update in the buffer (the rule), the loop
        // that adds them does not test each.
        let skipped = if bad {
            add_pending::<true>(q, n, &mut sh.groups, &mut sh.touched)
        } else {
            add_pending::<false>(q, n, &mut sh.groups, &mut sh.touched)
        };
        sh.skipped += skipped;
        sh.updates += n as u64 - skipped;
        q.len = 0;
    }

    /// A tracked item's update (or first sight, `before` = None).
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn track(
        &self,
        sh: &mut Shard,
        id: u64,
        count: u64,
        timestamp: i64,
        before: Option<&[f32]>,
        after: &[f32],
        magnitude: f32,
    ) {
        let d = after.len();
        if sh.dim == 0 {
            sh.dim = d;
        } else if sh.dim != d || before.is_some_and(|b| b.len() != d) {
            return;
        }
        let slot = match sh.index.entry(id) {
            Entry::Occupied(e) => *e.get() as usize,
            Entry::Vacant(e) => {
                let s = sh.tracks.len();
                e.insert(s as u32);
                sh.tracks.push(ShardTrack {
                    id,
                    path: 0.0,
                    updates: 0,
                    last_milestone: 0,
                    last: timestamp,
                });
                sh.track_rows.extend_from_slice(before.unwrap_or(after));
                sh.track_rows.extend_from_slice(after);
                s
            }
        };
        let t = &mut sh.tracks[slot];
        t.last = t.last.max(timestamp);
        if before.is_some() {
            t.updates += 1;
            if magnitude.is_finite() {
                t.path += f64::from(magnitude);
            }
        }
        sh.track_rows[(2 * slot + 1) * d..(2 * slot + 2) * d].copy_from_slice(after);
        if count != t.last_milestone && self.plan.cfg.milestones.binary_search(&count).is_ok() {
            t.last_milestone = count;
            if sh.records.len() < sh.room {
                sh.records.push(Record {
                    id,
                    count,
                    timestamp,
                    publish: false,
                });
                sh.record_rows.extend_from_slice(after);
            } else {
                sh.dropped += 1;
            }
        }
    }

    fn take_shard(&self, st: &mut State) -> Box<Shard> {
        let mut sh = st
            .pool
            .pop()
            .unwrap_or_else(|| Box::new(Shard::new(&self.plan)));
        // Room is made at `absorb` (retired items' records go first).
        sh.room = self.plan.cfg.max_records;
        sh
    }

    /// A shard for a call that holds the state's lock from its checks to
    /// its `absorb_into` (`observe`, `observe_pairs`), every one of whose
    /// `ids` is an update or a first sighting: their distinct-item
    /// sightings go straight into the monitor's registers here (max is
    /// order-free: the same registers as through the shard), which spares
    /// the shard's 16 KiB of registers, their merge and their clearing —
    /// three passes over memory a training step in between has evicted.
    fn take_direct_shard(&self, st: &mut State, ids: &[u64]) -> Box<Shard> {
        let mut sh = match st.resident.take() {
            Some(mut sh) => {
                sh.room = self.plan.cfg.max_records;
                sh
            }
            None => self.take_shard(st),
        };
        let reg: &mut [u8; HLL_SIZE] = (&mut st.hll[..]).try_into().expect("HLL_SIZE registers");
        for &id in ids {
            hll_add(reg, self.plan.hash(id));
        }
        sh.direct = true;
        sh
    }

    fn absorb_into(&self, st: &mut State, mut sh: Box<Shard>) {
        self.flush(&mut sh);
        // A direct shard keeps its groups (`State::settle` drains them) and
        // has no registers of its own to merge.
        let direct = sh.direct;
        if !direct {
            drain_touched(&mut st.groups, &mut sh);
            for (a, b) in st.hll.iter_mut().zip(sh.hll.iter()) {
                *a = (*a).max(*b);
            }
        }
        // The training path cannot fail, so its counters saturate (merge,
        // which can, refuses to overflow instead).
        st.updates = st.updates.saturating_add(sh.updates);
        st.skipped = st.skipped.saturating_add(sh.skipped);
        st.dropped = st.dropped.saturating_add(sh.dropped);
        st.see(sh.latest);
        let d = sh.dim;
        if d != 0 && st.bind_dim(d).is_ok() {
            for (k, t) in sh.tracks.iter().enumerate() {
                let rows = &sh.track_rows[2 * k * d..2 * (k + 1) * d];
                st.merge_track(
                    t.id,
                    t.path,
                    t.updates,
                    &rows[..d],
                    &rows[d..],
                    t.last,
                    false,
                );
            }
            for (k, r) in sh.records.iter().enumerate() {
                let row = &sh.record_rows[k * d..(k + 1) * d];
                st.push_record(*r, row);
            }
        } else {
            st.dropped = st.dropped.saturating_add(sh.records.len() as u64);
        }
        st.sweep(self.plan.cfg.retire_after);
        sh.clear();
        if direct {
            st.resident = Some(sh);
        } else if st.pool.len() < POOL {
            st.pool.push(sh);
        }
    }

    /// Feed a batch of updated rows from any trainer: `rows` is n × `cols`
    /// (row-major) for the n `ids`. The monitor compares each row with the
    /// previous one it saw for that id. `counts` default to the number of
    /// times the monitor has seen the id, `timestamps` to a running clock
    /// (rows observed so far). Validates everything before changing state.
    pub fn observe(
        &self,
        ids: &[u64],
        rows: &[f32],
        cols: usize,
        counts: Option<&[i64]>,
        timestamps: Option<&[i64]>,
    ) -> Result<()> {
        let n = ids.len();
        check_columns(cols)?;
        check_shape("rows", n, rows, cols)?;
        check_lengths(n, [("counts", counts), ("timestamps", timestamps)])?;
        if let Some(c) = counts {
            check_counts(c)?;
        }
        check_finite("rows", ids, rows, cols)?;
        let mut guard = self.lock_for_dim(cols)?;
        let st = &mut *guard;
        if n == 0 {
            return Ok(());
        }
        st.dim = cols;
        let d = cols;
        let mut sh = self.take_direct_shard(st, ids);
        let base = st.clock;
        // Blocks of rows, two passes each. The first resolves each row's
        // previous row in order (a repeat of an id finds the slot its
        // earlier occurrence stored or will update first): hash lookups
        // whose entries are fetched `LOOKAHEAD` rows ahead, then a fetch of
        // the previous row. The second, over rows now in cache, compares
        // them with the previous ones in the order of the rows (the shard
        // sees the same updates in the same order as one pass would). A
        // block's rows and previous rows stay in the L2 cache in between.
        const BLOCK: usize = 128;
        const LOOKAHEAD: usize = 32;
        for &id in ids.iter().take(LOOKAHEAD) {
            st.prev.prefetch(id);
        }
        let mut resolved = [Resolved::default(); BLOCK];
        for start in (0..n).step_by(BLOCK) {
            let end = (start + BLOCK).min(n);
            for (k, r) in (start..end).zip(resolved.iter_mut()) {
                let id = ids[k];
                if let Some(&ahead) = ids.get(k + LOOKAHEAD) {
                    st.prev.prefetch(ahead);
                }
                let ts = timestamps.map_or(base.saturating_add(k as i64), |t| t[k]);
                let given = counts.map(|c| c[k] as u64);
                *r = match st.prev.get_mut(&id) {
                    Some(p) => {
                        p.seen += 1;
                        p.last = p.last.max(ts);
                        crate::kernels::simd::prefetch_slice(&st.prev_rows, p.slot as usize * d, d);
                        Resolved {
                            slot: p.slot,
                            first: false,
                            interactions: given.unwrap_or(p.seen),
                            first_seen: p.first_seen,
                            timestamp: ts,
                        }
                    }
                    None => {
                        let row = &rows[k * d..(k + 1) * d];
                        let slot = store_row(&mut st.prev_free, &mut st.prev_rows, &[row]);
                        st.prev.insert(
                            id,
                            Prev {
                                slot,
                                seen: 1,
                                first_seen: ts,
                                last: ts,
                            },
                        );
                        Resolved {
                            slot,
                            first: true,
                            interactions: given.unwrap_or(1),
                            first_seen: ts,
                            timestamp: ts,
                        }
                    }
                };
            }
            for (k, r) in (start..end).zip(resolved) {
                let (id, row, ts) = (ids[k], &rows[k * d..(k + 1) * d], r.timestamp);
                if r.first {
                    sh.latest = sh.latest.max(ts);
                    let h = self.plan.hash(id);
                    if self.plan.is_tracked(h, id, ts) {
                        self.track(&mut sh, id, r.interactions, ts, None, row, 0.0);
                    }
                    continue;
                }
                let s = r.slot as usize * d;
                let before = &mut st.prev_rows[s..s + d];
                self.update(
                    &mut sh,
                    &RowUpdate {
                        id,
                        row: 0,
                        interactions: r.interactions,
                        first_seen: r.first_seen,
                        timestamp: ts,
                        before,
                        after: row,
                    },
                );
                before.copy_from_slice(row);
            }
        }
        st.clock = base.saturating_add(n as i64);
        self.absorb_into(st, sh);
        Ok(())
    }

    /// Each row's update given as the pair (`before`, `after`), as a
    /// trainer that holds both sees it: the same statistics, buckets and
    /// trajectories as the training path (`UpdateObserver`), with no
    /// previous rows kept or looked up (unlike `observe`, whose previous
    /// rows this neither reads nor changes). `counts` are each row's
    /// interactions so far (its count bucket), `first_seen` when each item
    /// was first seen (its age bucket; default: `timestamps`, age 0), and
    /// `timestamps` the update times (default: this monitor's clock, one
    /// tick per row, as `observe`).
    #[allow(clippy::too_many_arguments)]
    pub fn observe_pairs(
        &self,
        ids: &[u64],
        before: &[f32],
        after: &[f32],
        cols: usize,
        counts: &[i64],
        first_seen: Option<&[i64]>,
        timestamps: Option<&[i64]>,
    ) -> Result<()> {
        let n = ids.len();
        check_columns(cols)?;
        for (name, rows) in [("before", before), ("after", after)] {
            check_shape(name, n, rows, cols)?;
            check_finite(name, ids, rows, cols)?;
        }
        check_lengths(
            n,
            [
                ("counts", Some(counts)),
                ("first_seen", first_seen),
                ("timestamps", timestamps),
            ],
        )?;
        check_counts(counts)?;
        let mut guard = self.lock_for_dim(cols)?;
        let st = &mut *guard;
        if n == 0 {
            return Ok(());
        }
        st.dim = cols;
        let d = cols;
        let mut sh = self.take_direct_shard(st, ids);
        let base = st.clock;
        for (k, &id) in ids.iter().enumerate() {
            let timestamp = timestamps.map_or(base.saturating_add(k as i64), |t| t[k]);
            self.update(
                &mut sh,
                &RowUpdate {
                    id,
                    row: 0,
                    interactions: counts[k] as u64,
                    first_seen: first_seen.map_or(timestamp, |f| f[k]),
                    timestamp,
                    before: &before[k * d..(k + 1) * d],
                    after: &after[k * d..(k + 1) * d],
                },
            );
        }
        st.clock = base.saturating_add(n as i64);
        self.absorb_into(st, sh);
        Ok(())
    }

    /// Record every tracked item present in `table` (row and current
    /// interaction count) at `timestamp`. Returns the records kept.
    pub fn record_publish(&self, table: &EmbeddingTable, timestamp: i64) -> Result<usize> {
        self.record_publish_span(table, timestamp, 0, table.dim())
    }

    /// `record_publish` of the values `offset..offset + width` of each row
    /// (e.g. one field-aware block of an FFM row).
    pub fn record_publish_span(
        &self,
        table: &EmbeddingTable,
        timestamp: i64,
        offset: usize,
        width: usize,
    ) -> Result<usize> {
        if width == 0
            || offset
                .checked_add(width)
                .is_none_or(|end| end > table.dim())
        {
            return Err(invalid(format!(
                "columns {offset}..{} are not a non-empty range within the table's {} columns",
                offset.saturating_add(width),
                table.dim()
            )));
        }
        let d = width;
        let mut st = self.lock();
        st.bind_dim(d)?;
        st.see(timestamp);
        let mut row = vec![0.0f32; d];
        let mut kept = 0;
        // One consistent pass under a pin: each id with its own row.
        let reader = table.reader();
        // Without a track window only the ids decide (the hash cohort, listed
        // ids): the untracked rows' metadata, 64 bytes each, stays unread.
        let by_time = self.plan.tracks_by_time();
        for (&r, &id) in reader.rows().iter().zip(reader.ids()) {
            let m = table.meta(r);
            let first_seen = if by_time {
                dec_time(m[meta::FIRST_SEEN].load(std::sync::atomic::Ordering::Relaxed))
            } else {
                i64::MIN // outside the empty window: the same answer
            };
            if !self.plan.is_tracked(self.plan.hash(id), id, first_seen) {
                continue;
            }
            for (o, a) in row.iter_mut().zip(&table.row(r)[offset..offset + width]) {
                *o = f32_load(a);
            }
            let count = m[meta::INTERACTIONS].load(std::sync::atomic::Ordering::Relaxed);
            let rec = Record {
                id,
                count,
                timestamp,
                publish: true,
            };
            kept += usize::from(st.push_record(rec, &row));
        }
        st.sweep(self.plan.cfg.retire_after);
        Ok(kept)
    }

    /// Record the given rows of tracked items (e.g. the final rows returned by
    /// `EmbeddingTable::evict`, so maturity sees the embeddings of evicted
    /// items) at `timestamp`. Returns the records kept. With `final_rows`
    /// (rows that left the model) every id is retired: a tracked item's
    /// trajectory is complete (kept while there is room, the first to go
    /// when there is not), an observed id's previous row is forgotten.
    pub fn record_rows(
        &self,
        ids: &[u64],
        rows: &[f32],
        counts: &[u64],
        first_seen: &[i64],
        timestamp: i64,
        final_rows: bool,
    ) -> Result<usize> {
        let n = ids.len();
        if counts.len() != n || first_seen.len() != n || (n > 0 && rows.len() % n != 0) {
            return Err(crate::error::invalid(format!(
                "ids has {n} elements but counts has {}, first_seen {} and rows {} values",
                counts.len(),
                first_seen.len(),
                rows.len()
            )));
        }
        if n == 0 {
            return Ok(0);
        }
        let d = rows.len() / n;
        if let Some(k) = rows.iter().position(|x| !x.is_finite()) {
            return Err(crate::error::invalid(format!(
                "rows has a non-finite value in row {}",
                k / d
            )));
        }
        let mut st = self.lock();
        st.bind_dim(d)?;
        st.see(timestamp);
        let mut kept = 0;
        for k in 0..n {
            if self
                .plan
                .is_tracked(self.plan.hash(ids[k]), ids[k], first_seen[k])
            {
                let rec = Record {
                    id: ids[k],
                    count: counts[k],
                    timestamp,
                    publish: true,
                };
                kept += usize::from(st.push_record(rec, &rows[k * d..(k + 1) * d]));
            }
            if final_rows {
                st.retire(ids[k]);
            }
        }
        st.sweep(self.plan.cfg.retire_after);
        Ok(kept)
    }

    /// All records, sorted by (id, count, record order).
    pub fn trajectories(&self) -> Trajectories {
        let st = self.lock();
        let d = st.dim;
        let mut order: Vec<usize> = (0..st.records.len()).collect();
        order.sort_by_key(|&k| (st.records[k].id, st.records[k].count));
        let mut t = Trajectories {
            dim: d,
            rows: Vec::with_capacity(order.len() * d),
            ..Default::default()
        };
        for k in order {
            let r = &st.records[k];
            t.ids.push(r.id);
            t.counts.push(r.count.min(i64::MAX as u64) as i64);
            t.timestamps.push(r.timestamp);
            t.rows
                .extend_from_slice(&st.record_rows[k * d..(k + 1) * d]);
        }
        t
    }

    /// τ = ‖e(T) − e(0)‖ / Σ‖Δe‖ for tracked items whose path is > 0,
    /// sorted by id (e(0): the row before the first update the monitor saw).
    pub fn path_efficiency(&self) -> PathEfficiency {
        let st = self.lock();
        path_efficiency(&st)
    }

    pub fn summary(&self) -> Summary {
        let mut st = self.lock();
        st.settle();
        let mut groupings: [GroupingSummary; 3] = Default::default();
        let mut popularity: Vec<Group> = (0..65).map(|_| Group::new()).collect();
        for (b, grp) in st.groups[0].iter().enumerate() {
            if grp.m.n > 0 {
                let lower = self.plan.lower_u64(0, b);
                groupings[0].push(self.plan.lower(0, b), grp);
                popularity[(64 - lower.leading_zeros()) as usize].merge_from(grp);
            }
        }
        let mut all = Group::new();
        for (b, grp) in popularity.iter().enumerate() {
            if grp.m.n > 0 {
                groupings[1].push(self.plan.lower(1, b), grp);
                all.merge_from(grp);
            }
        }
        for (b, grp) in st.groups[1].iter().enumerate() {
            if grp.m.n > 0 {
                groupings[2].push(self.plan.lower(2, b), grp);
            }
        }
        let mut overall = GroupingSummary::default();
        if all.m.n > 0 {
            overall.push(0, &all);
        }
        let pe = path_efficiency(&st);
        Summary {
            groupings,
            overall,
            path_efficiency: StatSummary::of_values(pe.efficiency),
            updates: st.updates,
            skipped_updates: st.skipped,
            items_seen: hll_estimate(&st.hll),
            tracked_items: st.tracked.len(),
            retired_items: st.tracked.values().filter(|t| t.retired).count(),
            dropped_items: st.dropped_items,
            untracked_items: st.untracked,
            records: st.records.len(),
            dropped_records: st.dropped,
            memory_bytes: std::mem::size_of::<Monitor>() + st.memory_bytes(),
            dim: st.dim,
        }
    }

    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Monitor>() + self.lock().memory_bytes()
    }

    /// Add `other`'s statistics and records into `self` (as if `self` had
    /// also seen `other`'s stream afterwards). Same configuration required.
    pub fn merge(&self, other: &Monitor) -> Result<()> {
        let (a, b) = (&self.plan.cfg, &other.plan.cfg);
        if a != b {
            let field = if a.count_limit != b.count_limit {
                "count_limit"
            } else if a.per_doubling != b.per_doubling {
                "per_doubling"
            } else if a.age_per_doubling != b.age_per_doubling {
                "age_per_doubling"
            } else if a.sample_rate != b.sample_rate {
                "sample_rate"
            } else if a.track_ids != b.track_ids {
                "track_ids"
            } else if a.track_window != b.track_window {
                "track_window"
            } else if a.milestones != b.milestones {
                "milestones"
            } else if a.max_records != b.max_records {
                "max_records"
            } else if a.max_tracked != b.max_tracked {
                "max_tracked"
            } else if a.retire_after != b.retire_after {
                "retire_after"
            } else {
                "seed"
            };
            return Err(invalid(format!(
                "cannot merge monitors configured differently ({field} differs); \
                 create both with the same arguments"
            )));
        }
        // Copy the other state first: merging a monitor into itself, or two
        // monitors into each other from two threads, must not deadlock.
        let bytes = other.to_bytes();
        let o = Monitor::from_bytes(&bytes)?;
        let o = o.lock();
        let mut guard = self.lock();
        let st = &mut *guard;
        st.settle();
        // Every sum is checked before anything changes: an error leaves
        // `self` as it was. Bucket and sketch counts are bounded by
        // `updates` (decoding checks they add up to it), so checking
        // `updates` covers them.
        check_merge(st, &o)?;
        if o.dim != 0 {
            st.bind_dim(o.dim)?;
        }
        let d = st.dim;
        for (dst, src) in st.groups.iter_mut().zip(&o.groups) {
            for (x, y) in dst.iter_mut().zip(src) {
                x.merge_from(y);
            }
        }
        for (x, y) in st.hll.iter_mut().zip(&o.hll) {
            *x = (*x).max(*y);
        }
        st.updates += o.updates;
        st.skipped += o.skipped;
        st.dropped += o.dropped;
        st.clock = st.clock.saturating_add(o.clock);
        st.dropped_items = st.dropped_items.saturating_add(o.dropped_items);
        st.untracked = st.untracked.saturating_add(o.untracked);
        st.see(o.latest);
        let mut tracked: Vec<(&u64, &Track)> = o.tracked.iter().collect();
        tracked.sort_by_key(|(id, _)| **id);
        // Retired in the merge when retired (or absent) on both sides.
        let retired: Vec<bool> = tracked
            .iter()
            .map(|(id, t)| t.retired && st.tracked.get(id).is_none_or(|x| x.retired))
            .collect();
        for (k, r) in o.records.iter().enumerate() {
            st.push_record(*r, &o.record_rows[k * d..(k + 1) * d]);
        }
        for ((&id, t), retired) in tracked.into_iter().zip(retired) {
            if t.slot == NO_SLOT {
                if let Some(e) = st.track_entry(id, t.last, true) {
                    e.retired = retired;
                }
            } else {
                let s = t.slot as usize;
                let rows = &o.track_rows[2 * s * d..2 * (s + 1) * d];
                st.merge_track(
                    id,
                    t.path,
                    t.updates,
                    &rows[..d],
                    &rows[d..],
                    t.last,
                    retired,
                );
            }
        }
        let mut prev: Vec<(&u64, &Prev)> = o.prev.iter().collect();
        prev.sort_by_key(|(id, _)| **id);
        for (&id, p) in prev {
            let row = &o.prev_rows[p.slot as usize * d..(p.slot as usize + 1) * d];
            match st.prev.get_mut(&id) {
                Some(e) => {
                    e.seen += p.seen;
                    e.first_seen = e.first_seen.min(p.first_seen);
                    e.last = e.last.max(p.last);
                    let s = e.slot as usize;
                    st.prev_rows[s * d..(s + 1) * d].copy_from_slice(row);
                }
                None => {
                    let slot = store_row(&mut st.prev_free, &mut st.prev_rows, &[row]);
                    st.prev.insert(
                        id,
                        Prev {
                            slot,
                            seen: p.seen,
                            first_seen: p.first_seen,
                            last: p.last,
                        },
                    );
                }
            }
        }
        st.sweep(a.retire_after);
        Ok(())
    }
}

/// The counters `Monitor::merge` adds, checked for overflow.
fn check_merge(st: &State, o: &State) -> Result<()> {
    let sum = |name: &str, a: u64, b: u64| {
        a.checked_add(b).map(|_| ()).ok_or_else(|| {
            invalid(format!(
                "cannot merge: {name} would overflow ({a} + {b} > {}); nothing was merged",
                u64::MAX
            ))
        })
    };
    sum("updates", st.updates, o.updates)?;
    sum("skipped updates", st.skipped, o.skipped)?;
    // Records kept are bounded by max_records; the rest are counted dropped.
    sum(
        "dropped records",
        st.dropped,
        o.dropped.saturating_add(o.records.len() as u64),
    )?;
    for (id, t) in &o.tracked {
        if let Some(s) = st.tracked.get(id) {
            sum(
                &format!("tracked item {id}'s updates"),
                s.updates,
                t.updates,
            )?;
        }
    }
    for (id, p) in o.prev.iter() {
        if let Some(s) = st.prev.get(id) {
            sum(&format!("item {id}'s times seen"), s.seen, p.seen)?;
        }
    }
    Ok(())
}

fn path_efficiency(st: &State) -> PathEfficiency {
    let d = st.dim;
    let mut ids: Vec<(u64, Track)> = st
        .tracked
        .iter()
        .filter(|(_, t)| t.slot != NO_SLOT && t.path > 0.0)
        .map(|(&id, &t)| (id, t))
        .collect();
    ids.sort_by_key(|(id, _)| *id);
    let mut pe = PathEfficiency::default();
    for (id, t) in ids {
        let s = t.slot as usize;
        let rows = &st.track_rows[2 * s * d..2 * (s + 1) * d];
        let disp = rows[..d]
            .iter()
            .zip(&rows[d..])
            .map(|(a, b)| f64::from(b - a).powi(2))
            .sum::<f64>()
            .sqrt();
        pe.ids.push(id);
        pe.efficiency.push(disp / t.path);
        pe.path_length.push(t.path);
        pe.displacement.push(disp);
        pe.updates.push(t.updates);
    }
    pe
}

impl UpdateObserver for Monitor {
    type Shard = Box<Shard>;

    fn new_shard(&self) -> Box<Shard> {
        let mut st = self.lock();
        self.take_shard(&mut st)
    }

    #[inline(always)]
    fn observe(&self, shard: &mut Box<Shard>, update: &RowUpdate<'_>) {
        self.update(shard, update);
    }

    fn absorb(&self, shard: Box<Shard>) {
        let mut st = self.lock();
        self.absorb_into(&mut st, shard);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn cfg() -> MonitorConfig {
        MonitorConfig {
            sample_rate: 1.0,
            ..Default::default()
        }
    }

    #[test]
    fn buckets_cover_every_count_and_age() {
        for per in [1u32, 2, 8, 64] {
            for limit in [1u64, 7, 64, 100] {
                let p = Plan::new(
                    MonitorConfig {
                        count_limit: limit,
                        per_doubling: per,
                        age_per_doubling: per,
                        ..cfg()
                    }
                    .validate()
                    .unwrap(),
                );
                let mut last = 0;
                let mut xs: Vec<u64> = (0..5000).collect();
                xs.extend((0..64).map(|e| 1u64 << e));
                xs.extend((1..64).map(|e| (1u64 << e) - 1));
                xs.push(u64::MAX);
                xs.sort_unstable();
                for c in xs {
                    let b = p.count_bucket(c);
                    assert!(b < p.sizes[0], "count {c} bucket {b}");
                    assert!(b >= last, "bucket order");
                    last = b;
                    assert!(p.lower(0, b) as u64 <= c.min(i64::MAX as u64), "{c} {b}");
                    if c <= limit {
                        assert_eq!(b, c as usize);
                    }
                    // Each count bucket lies inside one popularity bucket.
                    let pb = (64 - c.leading_zeros()) as usize;
                    let lower = p.lower_u64(0, b);
                    assert_eq!(pb, (64 - lower.leading_zeros()) as usize, "{c}");
                    assert!(p.lower(1, pb) as u64 <= c);
                    let a = p.age_bucket(c.min(i64::MAX as u64) as i64, 0);
                    assert!(a < p.sizes[1]);
                    assert!(p.lower(2, a) as u64 <= c.max(1) || c == 0);
                }
                assert_eq!(p.age_bucket(-5, 10), 0);
                assert!(p.age_bucket(i64::MAX, i64::MIN) < p.sizes[1]);
            }
        }
    }

    #[test]
    fn fixed_width_moments_are_bitwise_the_kernel_ones() {
        for d in [3usize, 16, 32, 64, 67] {
            let a: Vec<f32> = (0..d).map(|k| (k as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..d).map(|k| (k as f32 * 0.11).cos() * 3.0).collect();
            let (x, y) = (moments(&a, &b), crate::kernels::simd::moments(&a, &b));
            assert_eq!(
                [x.0.to_bits(), x.1.to_bits(), x.2.to_bits()],
                [y.0.to_bits(), y.1.to_bits(), y.2.to_bits()],
                "{d}"
            );
        }
    }

    /// Feed `ids` (with rows derived from `seed`) through the training
    /// path (`UpdateObserver`), or through `observe_pairs`.
    fn feed(m: &Monitor, ids: &[u64], seed: f32, pairs: bool) {
        let d = 4;
        let before: Vec<f32> = (0..ids.len() * d)
            .map(|k| (k as f32 * 0.1 + seed).sin())
            .collect();
        let after: Vec<f32> = before.iter().map(|x| x + 0.01).collect();
        if pairs {
            let counts: Vec<i64> = (0..ids.len() as i64).map(|k| k % 7 + 1).collect();
            m.observe_pairs(ids, &before, &after, d, &counts, None, None)
                .unwrap();
            return;
        }
        let mut sh = m.new_shard();
        for (k, &id) in ids.iter().enumerate() {
            let u = RowUpdate {
                id,
                row: 0,
                interactions: k as u64 % 7 + 1,
                first_seen: 0,
                timestamp: k as i64,
                before: &before[k * d..(k + 1) * d],
                after: &after[k * d..(k + 1) * d],
            };
            UpdateObserver::observe(m, &mut sh, &u);
        }
        m.absorb(sh);
    }

    #[test]
    fn direct_distinct_sightings_are_the_registers_a_shard_gives() {
        let ids: Vec<u64> = (0..3000u64).map(|k| k * 7 % 1000 + 1).collect();
        let more: Vec<u64> = (0..500u64).map(|k| 5000 + k).collect();
        // observe_pairs (direct) then training (its pooled shard, reused):
        // the registers of training alone on both.
        let (a, b) = (Monitor::new(cfg()).unwrap(), Monitor::new(cfg()).unwrap());
        feed(&a, &ids, 0.0, true);
        feed(&b, &ids, 0.0, false);
        assert_eq!(a.lock().hll, b.lock().hll);
        assert!(a.lock().hll.iter().filter(|&&r| r > 0).count() > 500);
        feed(&a, &more, 1.0, false);
        feed(&b, &more, 1.0, false);
        assert_eq!(a.lock().hll, b.lock().hll);
        // A training shard used before a direct call comes back cleared.
        let c = Monitor::new(cfg()).unwrap();
        feed(&c, &more, 1.0, false);
        feed(&c, &ids, 0.0, true);
        feed(&c, &[9_999_999], 2.0, false);
        let e = Monitor::new(cfg()).unwrap();
        feed(&e, &more, 1.0, false);
        feed(&e, &ids, 0.0, false);
        feed(&e, &[9_999_999], 2.0, false);
        assert_eq!(c.lock().hll, e.lock().hll);
    }

    /// Everything of two summaries but the moments' f64 sums, which a
    /// deferred drain adds in another order: exactly equal; means and
    /// standard deviations to 1e-9 (relative) + 1e-10.
    fn assert_same_summary(a: &Summary, b: &Summary) {
        assert_eq!(
            (a.updates, a.skipped_updates, a.items_seen),
            (b.updates, b.skipped_updates, b.items_seen)
        );
        let groupings = a.groupings.iter().chain([&a.overall]);
        for (x, y) in groupings.zip(b.groupings.iter().chain([&b.overall])) {
            assert_eq!((&x.lower, &x.n), (&y.lower, &y.n));
            for (s, t) in x.stats.iter().zip(&y.stats) {
                assert_eq!(
                    (&s.n, &s.min, &s.max, &s.p50, &s.p90, &s.p99),
                    (&t.n, &t.min, &t.max, &t.p50, &t.p90, &t.p99)
                );
                for (u, v) in s.mean.iter().chain(&s.std).zip(t.mean.iter().chain(&t.std)) {
                    // A std from Σx² − n·mean² cancels: an absolute floor.
                    assert!((u - v).abs() <= 1e-10 + 1e-9 * u.abs(), "{u} {v}");
                }
            }
        }
    }

    #[test]
    fn groups_drained_at_the_first_read_equal_groups_drained_after_every_call() {
        let calls: Vec<Vec<u64>> = (0..12u64)
            .map(|c| (0..200u64).map(|k| (k * 31 + c * 7) % 500 + 1).collect())
            .collect();
        // a: drained after every call (a read settles it); b: at the end.
        let (a, b) = (Monitor::new(cfg()).unwrap(), Monitor::new(cfg()).unwrap());
        for (c, ids) in calls.iter().enumerate() {
            feed(&a, ids, c as f32, true);
            let _ = a.summary();
            feed(&b, ids, c as f32, true);
            if c % 4 == 3 {
                // The training path in between, on both.
                feed(&a, ids, 0.5, false);
                feed(&b, ids, 0.5, false);
            }
        }
        assert!(b
            .lock()
            .resident
            .as_ref()
            .is_some_and(|s| s.touched[0].len() == 7));
        let (sa, sb) = (a.summary(), b.summary());
        assert_eq!(sb.updates, 12 * 200 + 3 * 200);
        assert_same_summary(&sa, &sb);
        // What a read sees: bytes, a merge and the memory count include the
        // resident groups.
        let c = Monitor::new(cfg()).unwrap();
        for (k, ids) in calls.iter().enumerate() {
            feed(&c, ids, k as f32, true);
            if k % 4 == 3 {
                feed(&c, ids, 0.5, false);
            }
        }
        let decoded = Monitor::from_bytes(&c.to_bytes()).unwrap();
        assert_same_summary(&decoded.summary(), &sa);
        let e = Monitor::new(cfg()).unwrap();
        for (k, ids) in calls.iter().enumerate() {
            feed(&e, ids, k as f32, true);
            if k % 4 == 3 {
                feed(&e, ids, 0.5, false);
            }
        }
        let merged = Monitor::new(cfg()).unwrap();
        merged.merge(&e).unwrap();
        assert_same_summary(&merged.summary(), &sa);
        // The memory count includes the resident shard (its groups alone
        // are ~800 buckets of moments and sketches).
        let with = c.memory_bytes();
        let resident = c.lock().resident.take().expect("a resident shard");
        assert!(resident.bytes() > 100_000);
        assert_eq!(c.memory_bytes() + resident.bytes(), with);
    }

    #[test]
    fn the_vectorised_finite_check_finds_every_non_finite_value() {
        let bad = [
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::from_bits(0x7f80_0001),
            f32::from_bits(0xffff_ffff),
        ];
        let good = [
            0.0f32,
            -0.0,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            f32::from_bits(1),
            -1.5,
        ];
        for n in [1usize, 7, 8, 9, 16, 31, 64, 67] {
            let cols = if n % 8 == 0 { 8 } else { 1 };
            let ids: Vec<u64> = (0..(n / cols) as u64).map(|k| 100 + k).collect();
            let rows: Vec<f32> = (0..n).map(|k| good[k % good.len()]).collect();
            assert!(check_finite("rows", &ids, &rows, cols).is_ok(), "{n}");
            for at in 0..n {
                for &v in &bad {
                    let mut r = rows.clone();
                    r[at] = v;
                    let msg = check_finite("rows", &ids, &r, cols)
                        .unwrap_err()
                        .to_string();
                    let want = format!("rows[{}] (id {})", at / cols, ids[at / cols]);
                    assert!(msg.contains(&want), "{n} {at} {v}: {msg}");
                }
            }
        }
    }

    #[test]
    fn the_vectorised_count_check_finds_the_first_negative_count() {
        assert!(check_counts(&[0, 1, i64::MAX]).is_ok());
        assert!(check_counts(&[]).is_ok());
        for n in 1..20 {
            for at in 0..n {
                let mut c = vec![3i64; n];
                c[at] = -1;
                c[n - 1] = if at == n - 1 { -1 } else { i64::MIN };
                let msg = check_counts(&c).unwrap_err().to_string();
                assert!(msg.contains(&format!("counts[{at}]")), "{n} {at}: {msg}");
            }
        }
    }

    /// Values the batched statistics must treat as one update does: zero,
    /// tiny, ordinary, huge, the largest finite, infinity and NaN.
    const SPECIAL_VALUES: [f32; 9] = [
        0.0,
        1e-30,
        1e-20,
        1.0,
        3.5,
        1e30,
        f32::MAX,
        f32::INFINITY,
        f32::NAN,
    ];

    #[test]
    fn batched_statistics_are_bitwise_those_of_one_update() {
        let mut dd = [0.0f32; PENDING];
        let (mut na, mut nb) = (dd, dd);
        let special = SPECIAL_VALUES;
        for k in 0..PENDING {
            let h = mix64(k as u64);
            let pick = |s: u32| {
                let r = (h >> s) as u32;
                if r % 4 == 0 {
                    special[(r as usize / 4) % special.len()]
                } else {
                    crate::kernels::rng::unit_f32(mix64(h ^ u64::from(s))) * 4.0
                }
            };
            (dd[k], na[k], nb[k]) = (pick(0), pick(16), pick(32));
        }
        let mut out = [[0.0f32; PENDING]; 4];
        statistics_batch(&dd, &na, &nb, &mut out);
        for k in 0..PENDING {
            let v = statistics(dd[k], na[k], nb[k]);
            for j in 0..4 {
                assert_eq!(out[j][k].to_bits(), v[j].to_bits(), "{k} {j}");
            }
        }
    }

    #[test]
    fn a_full_monitor_without_retired_items_does_not_rescan() {
        // At max_records with every item active, each further record is
        // dropped at once, not after a scan of every tracked item (which
        // made a long replay quadratic).
        let m = Monitor::new(MonitorConfig {
            max_records: 100,
            ..cfg()
        })
        .unwrap();
        let d = 4;
        let rec = |ids: &[u64], t: i64, fin: bool| {
            let rows = vec![0.5f32; ids.len() * d];
            let counts = vec![1u64; ids.len()];
            let first = vec![0i64; ids.len()];
            m.record_rows(ids, &rows, &counts, &first, t, fin).unwrap()
        };
        let ids: Vec<u64> = (0..100).collect();
        assert_eq!(rec(&ids, 1, false), 100);
        for k in 0..50u64 {
            let more: Vec<u64> = (0..20).map(|j| 1000 + 20 * k + j).collect();
            assert_eq!(rec(&more, 2, false), 0);
        }
        assert_eq!(m.lock().room_scans, 0);
        assert_eq!(m.summary().dropped_records, 1000);
        // Retiring items makes room again: one scan drops them.
        let old: Vec<u64> = (0..30).collect();
        rec(&old, 3, true);
        let fresh: Vec<u64> = (5000..5010).collect();
        assert!(rec(&fresh, 4, false) >= 5);
        // 30 retirements at a bound make room in batches of 5% of the
        // tracked items (5 here), not once per record.
        let scans = m.lock().room_scans;
        assert!((1..=7).contains(&scans), "{scans} scans");
        let s = m.summary();
        assert!(s.records <= 100, "{}", s.records);
        assert_eq!(
            (s.retired_items as u64 + s.dropped_items, s.tracked_items),
            (30, 90)
        );
    }

    /// A sketch's contents whatever its allocation: the zero count and the
    /// non-zero (key, count) pairs.
    fn sketch_contents(s: &Sketch<u64>) -> (u64, Vec<(i32, u64)>) {
        let (zero, offset, counts) = s.parts();
        let keys = (offset..).zip(counts.iter().copied());
        (zero, keys.filter(|&(_, c)| c != 0).collect())
    }

    #[test]
    fn the_batched_flush_equals_adding_each_update_the_obvious_way() {
        // The reference: each update's `statistics`, skipped when they sum
        // to a non-finite value, else added to its buckets (`count_bucket`,
        // `age_bucket` of the raw times) with f64 conversions of its own and
        // `Sketch::add` of every value; the registers from every hash.
        // Both sides add a bucket's updates in the same order, so the
        // moments are compared bit for bit.
        let special = SPECIAL_VALUES;
        // Around 2^52 and 2^53, and 2^k − 1 above them (an f64 rounds those up
        // into the next power of two).
        let huge = [
            1u64 << 52,
            (1 << 52) - 1,
            1 << 53,
            (1 << 54) - 1,
            (1 << 58) - 1,
            (1 << 62) - 1,
            u64::MAX,
            i64::MAX as u64,
        ];
        let configs = [
            MonitorConfig::default(),
            MonitorConfig {
                count_limit: 1,
                per_doubling: 1,
                age_per_doubling: 64,
                ..Default::default()
            },
            MonitorConfig {
                count_limit: 100,
                per_doubling: 64,
                age_per_doubling: 1,
                ..Default::default()
            },
        ];
        // `flush` runs `flush_wide` on a CPU with AVX2 (most x86-64 ones):
        // the baseline form is run too, through `flush_body` compiled here.
        let runs = configs.iter().flat_map(|c| [(c, false), (c, true)]);
        for (c, (config, baseline)) in runs.enumerate() {
            let flush = |m: &Monitor, sh: &mut Shard| {
                if baseline {
                    m.flush_body(sh)
                } else {
                    m.flush(sh)
                }
            };
            let m = Monitor::new(config.clone()).unwrap();
            let p = &m.plan;
            let mut reference: [Vec<Group>; 2] =
                p.sizes.map(|n| (0..n).map(|_| Group::new()).collect());
            let mut reg = [0u8; HLL_SIZE];
            let (mut updates, mut skipped, mut latest) = (0u64, 0u64, i64::MIN);
            let mut sh = m.new_shard();
            // Blocks of a pending buffer and a half: plain ones, ones with a
            // non-finite update, ones with counts and ages of 2^52 or more,
            // each block's below its own power of two (2^53 .. 2^64).
            for block in 0..36u64 {
                let cap = 53 + (block / 3) as u32 % 12;
                let below_cap: Vec<u64> = huge
                    .iter()
                    .copied()
                    .filter(|&x| cap >= 64 || x >> cap == 0)
                    .collect();
                for k in 0..PENDING as u64 * 3 / 2 {
                    let h = mix64(k ^ (block << 32) ^ ((c as u64 / 2) << 48));
                    let unit = |s: u32| crate::kernels::rng::unit_f32(mix64(h ^ u64::from(s)));
                    let pick = |s: u32| {
                        let r = (h >> s) as u32;
                        if block % 3 == 1 && r % 16 == 0 {
                            special[(r as usize / 16) % special.len()]
                        } else if r % 64 == 1 {
                            0.0
                        } else {
                            unit(s) * 4.0
                        }
                    };
                    let (na, nb) = (pick(3), pick(17));
                    let dd = if h % 7 == 0 { 0.0 } else { pick(31) * 0.01 };
                    let count = match (block % 3, h % 5) {
                        (2, 0) => below_cap[(h >> 40) as usize % below_cap.len()],
                        (_, 1) => 1u64 << ((h >> 58) % 52),
                        _ => (h >> 20) % 5000,
                    };
                    let first_seen = (h >> 8) as i64 % 1_000_000 - 500_000;
                    let timestamp = match (block % 3, h % 11) {
                        (2, 0) if cap >= 64 => i64::MAX,
                        (2, 0) => first_seen.saturating_add(((1u64 << (cap - 1)) - 1) as i64),
                        (_, 1) => first_seen,
                        (_, 2) => i64::MIN,
                        _ => first_seen + (h >> 30) as i64 % 100_000 - 10_000,
                    };
                    latest = latest.max(timestamp);
                    let times = [timestamp, first_seen];
                    if sh.pending.push(dd, na, nb, count, times, h) {
                        flush(&m, &mut sh);
                    }
                    hll_add(&mut reg, h);
                    let v = statistics(dd, na, nb);
                    if !(v[0] + v[1] + v[2] + v[3]).is_finite() {
                        skipped += 1;
                        continue;
                    }
                    updates += 1;
                    let buckets = [p.count_bucket(count), p.age_bucket(timestamp, first_seen)];
                    for (groups, b) in reference.iter_mut().zip(buckets) {
                        let g = &mut groups[b];
                        g.m.n += 1;
                        for (j, &y) in v.iter().enumerate() {
                            let x = f64::from(y);
                            g.m.sum[j] += x;
                            g.m.sumsq[j] += x * x;
                            g.m.min[j] = g.m.min[j].min(y);
                            g.m.max[j] = g.m.max[j].max(y);
                            g.sketch[j].add(y);
                        }
                    }
                }
            }
            flush(&m, &mut sh);
            assert_eq!((sh.updates, sh.skipped), (updates, skipped), "config {c}");
            assert_eq!(sh.latest, latest);
            assert!(skipped > 0 && updates > 10 * PENDING as u64);
            assert_eq!(&sh.hll[..], &reg[..]);
            let mut got: [Vec<Group>; 2] = p.sizes.map(|n| (0..n).map(|_| Group::new()).collect());
            drain_touched(&mut got, &mut sh);
            let mut buckets_used = 0;
            for (gs, rs) in got.iter().zip(&reference) {
                for (b, (g, r)) in gs.iter().zip(rs).enumerate() {
                    assert_eq!(g.m, r.m, "config {c} bucket {b}");
                    for (s, t) in g.sketch.iter().zip(&r.sketch) {
                        assert_eq!(sketch_contents(s), sketch_contents(t), "{c} {b}");
                    }
                    buckets_used += usize::from(r.m.n > 0);
                }
            }
            assert!(buckets_used > 40, "{buckets_used}");
        }
    }

    #[test]
    fn drift_formula_is_accurate_for_small_changes() {
        let a = [0.3f32, -0.2, 0.5, 0.1];
        let mut b = a;
        b[0] += 1e-3;
        let (dd, na, nb) = moments(&a, &b);
        let v = statistics(dd, na, nb);
        let (a64, b64): (Vec<f64>, Vec<f64>) = (
            a.iter().map(|&x| x.into()).collect(),
            b.iter().map(|&x| x.into()).collect(),
        );
        let dot: f64 = a64.iter().zip(&b64).map(|(x, y)| x * y).sum();
        let n = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let exact = 1.0 - dot / (n(&a64) * n(&b64));
        assert!(
            (f64::from(v[0]) - exact).abs() < 1e-3 * exact,
            "{} {exact}",
            v[0]
        );
        assert_eq!(statistics(0.0, 0.0, 0.0)[0], 0.0);
    }

    #[test]
    fn observe_counts_and_milestones() {
        let m = Monitor::new(MonitorConfig {
            milestones: vec![1, 2, 5],
            ..cfg()
        })
        .unwrap();
        for k in 0..6 {
            let rows = [1.0 + k as f32, 0.5, 0.0];
            m.observe(&[7], &rows, 3, None, None).unwrap();
        }
        let s = m.summary();
        assert_eq!(s.updates, 5);
        assert_eq!(s.groupings[0].lower, vec![2, 3, 4, 5, 6]);
        let t = m.trajectories();
        assert_eq!(t.counts, vec![1, 2, 5]);
        assert_eq!(t.rows[6..9], [5.0, 0.5, 0.0]);
        // Bad input changes nothing.
        assert!(m
            .observe(&[7], &[f32::NAN, 0.0, 0.0], 3, None, None)
            .is_err());
        assert!(m.observe(&[7], &[1.0, 0.0], 2, None, None).is_err());
        assert!(m.observe(&[7, 8], &[1.0, 0.0, 0.0], 3, None, None).is_err());
        assert_eq!(m.summary().updates, 5);
        let pe = m.path_efficiency();
        assert_eq!(pe.ids, vec![7]);
        assert!((pe.efficiency[0] - 1.0).abs() < 1e-9);
    }

    #[test]
    fn bytes_round_trip_and_corruption() {
        let m = Monitor::new(MonitorConfig {
            track_window: Some((0, 3)),
            track_ids: vec![9, 3],
            ..cfg()
        })
        .unwrap();
        for k in 0..50u64 {
            let rows: Vec<f32> = (0..8).map(|j| ((k * 8 + j) as f32).sin()).collect();
            m.observe(&[k % 7, k % 5], &rows, 4, None, None).unwrap();
        }
        let b = m.to_bytes();
        let m2 = Monitor::from_bytes(&b).unwrap();
        assert_eq!(m2.to_bytes(), b);
        let (mut s1, mut s2) = (m.summary(), m2.summary());
        (s1.memory_bytes, s2.memory_bytes) = (0, 0);
        assert_eq!(s1, s2);
        assert_eq!(m2.trajectories(), m.trajectories());
        for cut in [0, 5, 12, b.len() / 2, b.len() - 1] {
            assert!(Monitor::from_bytes(&b[..cut]).is_err());
        }
        let mut bad = b.clone();
        bad[40] ^= 1;
        assert!(matches!(
            Monitor::from_bytes(&bad),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn merge_matches_single_stream() {
        let whole = Monitor::new(cfg()).unwrap();
        let (a, b) = (Monitor::new(cfg()).unwrap(), Monitor::new(cfg()).unwrap());
        for k in 0..200u64 {
            let rows: Vec<f32> = (0..4).map(|j| ((k * 4 + j) as f32 * 0.7).cos()).collect();
            let id = k % 10;
            whole
                .observe(&[id], &rows, 4, None, Some(&[k as i64]))
                .unwrap();
            let part = if id < 5 { &a } else { &b };
            part.observe(&[id], &rows, 4, None, Some(&[k as i64]))
                .unwrap();
        }
        a.merge(&b).unwrap();
        let (sa, sw) = (a.summary(), whole.summary());
        assert_eq!(sa.updates, sw.updates);
        for g in 0..3 {
            assert_eq!(sa.groupings[g].lower, sw.groupings[g].lower);
            assert_eq!(sa.groupings[g].stats[1].p90, sw.groupings[g].stats[1].p90);
            for (x, y) in sa.groupings[g].stats[0]
                .mean
                .iter()
                .zip(&sw.groupings[g].stats[0].mean)
            {
                assert!((x - y).abs() <= 1e-12 * y.abs().max(1.0));
            }
        }
        let other = Monitor::new(MonitorConfig {
            count_limit: 5,
            ..cfg()
        })
        .unwrap();
        assert!(a.merge(&other).is_err());
        a.merge(&a).unwrap();
        assert_eq!(a.summary().updates, 2 * sw.updates);
    }

    #[test]
    fn bad_config() {
        for c in [
            MonitorConfig {
                sample_rate: 1.5,
                ..cfg()
            },
            MonitorConfig {
                count_limit: 0,
                ..cfg()
            },
            MonitorConfig {
                milestones: vec![1, 3, 2],
                ..cfg()
            },
            MonitorConfig {
                per_doubling: 3,
                ..cfg()
            },
            MonitorConfig {
                track_window: Some((5, 1)),
                ..cfg()
            },
        ] {
            assert!(matches!(Monitor::new(c), Err(Error::Config(_))));
        }
    }

    #[test]
    fn hll_is_close() {
        for n in [0u64, 10, 1000, 100_000] {
            let mut reg = [0u8; HLL_SIZE];
            for id in 0..n {
                hll_add(&mut reg, mix64(id));
            }
            let e = hll_estimate(&reg) as f64;
            assert!((e - n as f64).abs() <= 0.03 * n as f64 + 1.0, "{n} {e}");
        }
    }
}
