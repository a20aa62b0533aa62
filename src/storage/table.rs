//! The embedding table: `dim`-wide f32 rows keyed by arbitrary u64 ids.
//!
//! Design notes.
//! * Storage: weights, per-coordinate optimizer state and a 64-byte metadata
//!   record per row live in fixed-address regions reserved for the table's
//!   whole capacity (see `region`), so rows never move and readers never wait.
//! * Concurrency (Hogwild): f32 values are stored as `AtomicU32` bit patterns
//!   and read/written with `Relaxed` ordering: on x86-64 and AArch64 this is
//!   the same machine code as plain loads and stores, and it is free of
//!   undefined behaviour (a `&mut`/`UnsafeCell` Hogwild table is not). Two
//!   threads updating one row may lose a coordinate update: that is the
//!   accepted Hogwild staleness. Counters use `fetch_add` and stay exact.
//! * The id→row map (`idmap`) stores keys inline; only the thread that wins
//!   the insert of a new id claims and initialises its row, then publishes
//!   the row index with `Release`. A reader that meets an insert in flight
//!   spins until it is published — the only wait on the per-event path, and
//!   only on the first sight of an id.
//! * Initial values depend only on (table seed, id), never on arrival order
//!   or thread timing.

use crate::error::{invalid, out_of_range, Error, Result};
use crate::kernels::optim::{Optimizer, OptimizerKind};
use crate::kernels::rng::{hash2, mix64, unit_f32};
use crate::storage::idmap::{IdMap, Inserted, MapGuard};
use crate::storage::lifecycle::{CountMin, Evicted, Lifecycle, Policy};
use crate::storage::region::Region;

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
pub use crate::kernels::rng::{IdHashBuilder, IdHasher};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::Mutex;

/// Largest capacity a table can be created with (row indices are u32).
pub const MAX_CAPACITY: usize = crate::storage::idmap::MAX_ROW as usize;
/// Largest `init_scale`: initial rows stay far from f32 overflow.
pub const MAX_INIT_SCALE: f32 = 100.0;
/// Default capacity: 2^26 rows of reserved (not committed) address space.
pub const DEFAULT_CAPACITY: usize = 1 << 26;

/// Words of the per-row metadata record (8 × u64 = one cache line).
pub mod meta {
    pub const ID: usize = 0;
    pub const INTERACTIONS: usize = 1;
    pub const UPDATES: usize = 2;
    pub const FIRST_SEEN: usize = 3;
    pub const LAST_UPDATE: usize = 4;
    /// Packed: bias f32 bits (low half) and its Adagrad accumulator (high half).
    pub const BIAS: usize = 5;
    pub const ROW_ACC: usize = 6;
    /// Table version of the row's last change; the top bit marks an evicted row.
    pub const VERSION: usize = 7;
    pub const WORDS: usize = 8;
    pub const DEAD: u64 = 1 << 63;
}

/// Everything that defines a table apart from its contents.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TableConfig {
    pub dim: usize,
    pub capacity: usize,
    pub seed: u64,
    /// Rows start uniform in [-init_scale, init_scale].
    pub init_scale: f32,
    pub optimizer: Optimizer,
}

impl TableConfig {
    pub fn new(dim: usize) -> Self {
        TableConfig {
            dim,
            capacity: DEFAULT_CAPACITY,
            seed: 0,
            init_scale: 0.1,
            optimizer: Optimizer::default(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.dim == 0 || self.dim > 65536 {
            return Err(out_of_range("dim", self.dim, "an integer in [1, 65536]"));
        }
        if self.capacity == 0 || self.capacity > MAX_CAPACITY {
            return Err(out_of_range(
                "capacity",
                self.capacity,
                format!("an integer in [1, {MAX_CAPACITY}] (rows)"),
            ));
        }
        crate::kernels::optim::check_range(
            "init_scale",
            self.init_scale,
            0.0,
            false,
            MAX_INIT_SCALE,
        )?;
        self.optimizer.validate()
    }
}

pub struct EmbeddingTable {
    cfg: TableConfig,
    state_width: usize,
    map: IdMap,
    claimed: AtomicUsize,
    ready: AtomicUsize,
    weights: Region<AtomicU32>,
    state: Region<AtomicU32>,
    meta: Region<AtomicU64>,
    lifecycle: Option<Lifecycle>,
    admission: Option<CountMin>,
    free: crossbeam_queue::SegQueue<u32>,
    dead: AtomicUsize,
    pins: AtomicUsize,
    version: AtomicU64,
    unadmitted: AtomicU64,
    evict_state: Mutex<EvictState>,
}

#[derive(Default)]
struct EvictState {
    hand: usize,
    /// Evicted rows waiting until no training call can still hold them.
    limbo: Vec<u32>,
    /// (version, id) of recent removals, for `changed_since`.
    removed: VecDeque<(u64, u64)>,
    /// Oldest version whose removals are all still in `removed`.
    log_floor: u64,
}

/// Held by a training call for its duration: blocks reuse of evicted rows.
pub struct Pin<'a>(&'a AtomicUsize);

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Release);
    }
}

/// The changes of a table after a version (see `changed_since`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Delta {
    pub ids: Vec<u64>,
    pub rows: Vec<f32>,
    pub removed: Vec<u64>,
    pub version: u64,
}

/// The cells of one row (see `EmbeddingTable::row_cells`).
#[derive(Clone, Copy)]
pub struct RowCells<'a> {
    pub weights: &'a [AtomicU32],
    pub state: &'a [AtomicU32],
    pub meta: &'a [AtomicU64; meta::WORDS],
}

/// Event times are stored sign-flipped so that unsigned `fetch_max` /
/// `fetch_min` order them as signed integers.
#[inline(always)]
pub fn enc_time(t: i64) -> u64 {
    (t as u64) ^ (1 << 63)
}

#[inline(always)]
pub fn dec_time(x: u64) -> i64 {
    (x ^ (1 << 63)) as i64
}

#[inline(always)]
pub fn f32_load(a: &AtomicU32) -> f32 {
    f32::from_bits(a.load(Relaxed))
}

#[inline(always)]
pub fn f32_store(a: &AtomicU32, v: f32) {
    a.store(v.to_bits(), Relaxed)
}

impl EmbeddingTable {
    pub fn new(cfg: TableConfig) -> Result<Self> {
        cfg.validate()?;
        let state_width = cfg.optimizer.kind.state_width(cfg.dim);
        let weights = Region::reserve(cfg.capacity.checked_mul(cfg.dim).ok_or_else(|| {
            invalid(format!(
                "capacity {} x dim {} overflows",
                cfg.capacity, cfg.dim
            ))
        })?)?;
        let state = Region::reserve(cfg.capacity * state_width)?;
        let meta = Region::reserve(cfg.capacity * meta::WORDS)?;
        Ok(EmbeddingTable {
            cfg,
            state_width,
            map: IdMap::default(),
            claimed: AtomicUsize::new(0),
            ready: AtomicUsize::new(0),
            weights,
            state,
            meta,
            lifecycle: None,
            admission: None,
            free: crossbeam_queue::SegQueue::new(),
            dead: AtomicUsize::new(0),
            pins: AtomicUsize::new(0),
            version: AtomicU64::new(0),
            unadmitted: AtomicU64::new(0),
            evict_state: Mutex::new(EvictState::default()),
        })
    }

    /// A table with a lifecycle (admission, expiry, eviction); see `lifecycle`.
    pub fn with_lifecycle(cfg: TableConfig, lc: Lifecycle) -> Result<Self> {
        lc.validate(cfg.capacity)?;
        let mut t = Self::new(cfg)?;
        if lc.min_count > 1 {
            t.admission = Some(CountMin::new(1 << 20));
        }
        t.lifecycle = Some(lc);
        Ok(t)
    }

    pub fn lifecycle(&self) -> Option<&Lifecycle> {
        self.lifecycle.as_ref()
    }

    /// The admission filter and `min_count`, when `min_count > 1`.
    pub fn admission(&self) -> Option<(&CountMin, u32)> {
        let lc = self.lifecycle.as_ref()?;
        self.admission.as_ref().map(|a| (a, lc.min_count))
    }

    /// Record events dropped because their id is not admitted yet.
    pub fn count_unadmitted(&self, n: u64) {
        self.unadmitted.fetch_add(n, Relaxed);
    }

    pub fn unadmitted_events(&self) -> u64 {
        self.unadmitted.load(Relaxed)
    }

    /// Current table version: bumped by every writing call.
    pub fn version(&self) -> u64 {
        self.version.load(Acquire)
    }

    /// Start a writing call: pins the table (no row reuse while held) and
    /// bumps its version, so rows this call changes are tagged with it.
    pub fn begin_write(&self) -> Pin<'_> {
        self.pins.fetch_add(1, Acquire);
        self.version.fetch_add(1, AcqRel);
        Pin(&self.pins)
    }

    /// Pin the table for a read: evicted rows are not reused while held.
    pub fn pin(&self) -> Pin<'_> {
        self.pins.fetch_add(1, Acquire);
        Pin(&self.pins)
    }

    /// Rows currently live (not evicted).
    pub fn live_len(&self) -> usize {
        self.len() - self.dead.load(Acquire)
    }

    /// Whether row `r` holds a live id (evicted rows keep their last values
    /// until reused).
    #[inline(always)]
    pub fn is_live(&self, r: u32) -> bool {
        self.meta(r)[meta::VERSION].load(Relaxed) & meta::DEAD == 0
    }

    /// Row indices of live rows, in row order.
    pub fn live_rows(&self) -> Vec<u32> {
        let n = self.len() as u32;
        if self.dead.load(Acquire) == 0 {
            return (0..n).collect();
        }
        (0..n).filter(|&r| self.is_live(r)).collect()
    }

    pub fn config(&self) -> &TableConfig {
        &self.cfg
    }
    pub fn dim(&self) -> usize {
        self.cfg.dim
    }
    pub fn capacity(&self) -> usize {
        self.cfg.capacity
    }
    pub fn optimizer(&self) -> &Optimizer {
        &self.cfg.optimizer
    }
    pub fn state_width(&self) -> usize {
        self.state_width
    }
    /// Bytes of the id→row map.
    pub fn map_bytes(&self) -> usize {
        self.map.bytes()
    }

    /// Number of fully initialised rows, all of them below the returned index.
    /// Spins briefly while another thread is initialising a row.
    pub fn len(&self) -> usize {
        loop {
            let ready = self.ready.load(Acquire);
            let claimed = self.claimed.load(Acquire);
            if ready == claimed {
                return claimed;
            }
            std::hint::spin_loop();
            std::thread::yield_now();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows still free before the table is full.
    pub fn remaining(&self) -> usize {
        self.cfg.capacity - self.claimed.load(Relaxed).min(self.cfg.capacity)
    }

    /// Bytes held by rows in use (weights, optimizer state, metadata).
    pub fn bytes_used(&self) -> usize {
        self.live_len() * self.row_bytes()
            + self.map.bytes()
            + self.admission.as_ref().map_or(0, CountMin::bytes)
    }

    pub fn row_bytes(&self) -> usize {
        4 * (self.cfg.dim + self.state_width) + 8 * meta::WORDS
    }

    #[inline(always)]
    pub fn row(&self, r: u32) -> &[AtomicU32] {
        let d = self.cfg.dim;
        &self.weights.as_slice()[r as usize * d..(r as usize + 1) * d]
    }

    #[inline(always)]
    pub fn row_state(&self, r: u32) -> &[AtomicU32] {
        let w = self.state_width;
        &self.state.as_slice()[r as usize * w..(r as usize + 1) * w]
    }

    #[inline(always)]
    pub fn meta(&self, r: u32) -> &[AtomicU64] {
        &self.meta.as_slice()[r as usize * meta::WORDS..(r as usize + 1) * meta::WORDS]
    }

    pub fn weights_ptr(&self) -> *const f32 {
        self.weights.as_ptr().cast()
    }

    /// Hint the CPU to fetch a row's weights, state and metadata.
    #[inline(always)]
    pub fn prefetch(&self, r: u32) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let d = self.cfg.dim;
            let w = self
                .weights
                .as_ptr()
                .wrapping_add(r as usize * d)
                .cast::<i8>();
            let m = self
                .meta
                .as_ptr()
                .wrapping_add(r as usize * meta::WORDS)
                .cast::<i8>();
            // SAFETY: prefetch never faults, whatever the address.
            unsafe {
                let mut off = 0;
                while off < d * 4 {
                    _mm_prefetch(w.wrapping_add(off), _MM_HINT_T0);
                    off += 64;
                }
                _mm_prefetch(m, _MM_HINT_T0);
                if self.state_width > 0 {
                    let s = self
                        .state
                        .as_ptr()
                        .wrapping_add(r as usize * d)
                        .cast::<i8>();
                    let mut off = 0;
                    while off < d * 4 {
                        _mm_prefetch(s.wrapping_add(off), _MM_HINT_T0);
                        off += 64;
                    }
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = r;
    }

    /// Row index of `id`, or `None`. Never inserts.
    #[inline]
    pub fn lookup(&self, guard: &MapGuard<'_>, id: u64) -> Option<u32> {
        guard.get(id)
    }

    /// A per-thread map handle for a batch of lookups and inserts. Hold at
    /// most one per thread at a time.
    pub fn guard(&self) -> MapGuard<'_> {
        self.map.guard()
    }

    pub fn contains(&self, id: u64) -> bool {
        self.guard().get(id).is_some()
    }

    /// Row of `id`, creating it (deterministically initialised, first seen at
    /// `timestamp`) when absent. Returns (row, created).
    pub fn get_or_insert(
        &self,
        guard: &MapGuard<'_>,
        id: u64,
        timestamp: i64,
    ) -> Result<(u32, bool)> {
        let made = guard.insert(id, || {
            let (r, fresh) = self.claim_row()?;
            self.init_row(r, id, timestamp);
            if fresh {
                self.ready.fetch_add(1, Release);
            }
            Ok(r)
        });
        match made {
            Inserted::Created(r) => Ok((r, true)),
            Inserted::Existing(r) => {
                // Keep first_seen the earliest timestamp among concurrent
                // first sights.
                self.meta(r)[meta::FIRST_SEEN].fetch_min(enc_time(timestamp), Relaxed);
                Ok((r, false))
            }
            Inserted::Failed(e) => Err(e),
        }
    }

    /// A row for a new id: a reusable evicted row, or a fresh one (true).
    fn claim_row(&self) -> Result<(u32, bool)> {
        if let Some(r) = self.free.pop() {
            self.dead.fetch_sub(1, AcqRel);
            return Ok((r, false));
        }
        let mut cur = self.claimed.load(Relaxed);
        loop {
            if cur >= self.cfg.capacity {
                return Err(Error::Capacity {
                    what: "the table".into(),
                    needed: 1,
                    free: 0,
                    capacity: self.cfg.capacity,
                });
            }
            match self
                .claimed
                .compare_exchange_weak(cur, cur + 1, AcqRel, Relaxed)
            {
                Ok(_) => return Ok((cur as u32, true)),
                Err(v) => cur = v,
            }
        }
    }

    /// The deterministic initial value of coordinate `k` of `id`'s row.
    #[inline]
    pub fn initial_value(&self, id: u64, k: usize) -> f32 {
        let h = mix64(hash2(self.cfg.seed, id).wrapping_add((k as u64 / 2).wrapping_mul(GOLDEN)));
        let bits = if k % 2 == 0 {
            h >> 40
        } else {
            (h >> 16) & 0xff_ffff
        };
        (2.0 * unit_f32(bits << 40) - 1.0) * self.cfg.init_scale
    }

    fn init_row(&self, r: u32, id: u64, timestamp: i64) {
        // One hash per row, then one mix per two coordinates (same values as
        // `initial_value`).
        let base = hash2(self.cfg.seed, id);
        let scale = self.cfg.init_scale;
        let row = self.row(r);
        for (pair, w) in row.chunks(2).enumerate() {
            let h = mix64(base.wrapping_add((pair as u64).wrapping_mul(GOLDEN)));
            f32_store(&w[0], (2.0 * unit_f32((h >> 40) << 40) - 1.0) * scale);
            if let Some(w1) = w.get(1) {
                f32_store(
                    w1,
                    (2.0 * unit_f32(((h >> 16) & 0xff_ffff) << 40) - 1.0) * scale,
                );
            }
        }
        let init_acc = self.cfg.optimizer.initial_accumulator;
        for s in self.row_state(r) {
            f32_store(s, init_acc);
        }
        let m = self.meta(r);
        m[meta::ID].store(id, Relaxed);
        m[meta::INTERACTIONS].store(0, Relaxed);
        m[meta::UPDATES].store(0, Relaxed);
        m[meta::FIRST_SEEN].store(enc_time(timestamp), Relaxed);
        m[meta::LAST_UPDATE].store(enc_time(timestamp), Relaxed);
        m[meta::BIAS].store(pack_bias(0.0, init_acc), Relaxed);
        m[meta::ROW_ACC].store(u64::from(init_acc.to_bits()), Relaxed);
        m[meta::VERSION].store(self.version.load(Relaxed), Release);
    }

    #[inline(always)]
    pub fn load_row(&self, r: u32, out: &mut [f32]) {
        load_atomics(self.row(r), out);
    }

    #[inline(always)]
    pub fn store_row(&self, r: u32, v: &[f32]) {
        store_atomics(self.row(r), v);
    }

    #[inline(always)]
    pub fn bias(&self, r: u32) -> f32 {
        unpack_bias(self.meta(r)[meta::BIAS].load(Relaxed)).0
    }

    /// Apply one optimizer step to row `r` whose current value the caller
    /// loaded into `w`; `grad` is the loss gradient. `w` holds the new value
    /// afterwards. `scratch` must hold at least `state_width` floats.
    #[inline(always)]
    pub fn apply_step(&self, r: u32, w: &mut [f32], grad: &mut [f32], scratch: &mut [f32]) {
        let opt = &self.cfg.optimizer;
        let st = self.row_state(r);
        let acc = &mut scratch[..st.len()];
        load_atomics(st, acc);
        let m = self.meta(r);
        let mut row_acc = f32::from_bits(m[meta::ROW_ACC].load(Relaxed) as u32);
        opt.step(w, grad, acc, &mut row_acc);
        self.store_row(r, w);
        store_atomics(st, acc);
        if opt.kind == OptimizerKind::RowWiseAdagrad {
            m[meta::ROW_ACC].store(u64::from(row_acc.to_bits()), Relaxed);
        }
    }

    #[inline(always)]
    pub fn apply_bias_step(&self, r: u32, g: f32) {
        self.bias_step_meta(self.meta(r).try_into().expect("8 metadata words"), g)
    }

    /// `apply_bias_step` on a row's metadata record `m` (from `row_cells`).
    #[inline(always)]
    pub fn bias_step_meta(&self, m: &[AtomicU64; meta::WORDS], g: f32) {
        let (mut b, mut acc) = unpack_bias(m[meta::BIAS].load(Relaxed));
        self.cfg.optimizer.step_scalar(&mut b, g, &mut acc);
        m[meta::BIAS].store(pack_bias(b, acc), Relaxed);
    }

    /// `apply_step` fused into one pass (see `simd::step_row`) on row
    /// cells `c` (from `row_cells`): `x` is the row as the caller loaded it
    /// (left unchanged), `grad` the loss gradient (overwritten with the full
    /// gradient), `out` receives the new row. `n` is the row width in
    /// vectors of four floats (`dim / 4`; `dim` must be a multiple of 4), as
    /// a compile-time width when known; `p` is this table's optimizer,
    /// prepared once per call (`Prepared::new`).
    #[inline(always)]
    pub fn step_fused<W: crate::kernels::simd::Width>(
        &self,
        p: &crate::kernels::simd::Prepared,
        n: W,
        c: RowCells<'_>,
        x: &[crate::kernels::simd::F4],
        grad: &mut [crate::kernels::simd::F4],
        out: &mut [crate::kernels::simd::F4],
    ) {
        debug_assert_eq!(4 * n.get(), self.cfg.dim);
        debug_assert_eq!(p.opt, self.cfg.optimizer);
        crate::kernels::simd::step_row(
            p,
            n,
            crate::kernels::simd::StepCells {
                weights: c.weights,
                state: c.state,
                row_acc: &c.meta[meta::ROW_ACC],
            },
            x,
            grad,
            out,
        );
    }

    /// The cells of row `r` (weights, optimizer state, metadata record), to
    /// address them once per event.
    #[inline(always)]
    pub fn row_cells(&self, r: u32) -> RowCells<'_> {
        RowCells {
            weights: self.row(r),
            state: self.row_state(r),
            meta: self.meta(r).try_into().expect("8 metadata words"),
        }
    }

    /// Record that row `r` consumed an event at `timestamp`; returns the
    /// interaction count after it.
    #[inline(always)]
    pub fn touch(&self, r: u32, timestamp: i64, count_interaction: bool) -> u64 {
        self.touch_meta(
            self.meta(r).try_into().expect("8 metadata words"),
            timestamp,
            count_interaction,
        )
    }

    /// `touch` on a row's metadata record `m` (from `row_cells`).
    #[inline(always)]
    pub fn touch_meta(
        &self,
        m: &[AtomicU64; meta::WORDS],
        timestamp: i64,
        count_interaction: bool,
    ) -> u64 {
        // Only the counters need atomic read-modify-writes (they stay exact);
        // locked instructions are full barriers on x86 and stall the
        // prefetched loads of the next events, so the time and version words
        // are plain loads and stores where that is safe.
        m[meta::UPDATES].fetch_add(1, Relaxed);
        let t = enc_time(timestamp);
        if m[meta::LAST_UPDATE].load(Relaxed) < t {
            // A racing thread with a later time may be overwritten: last_update
            // can then lag by one event under Hogwild (a documented staleness).
            m[meta::LAST_UPDATE].store(t, Relaxed);
        }
        let v = self.version.load(Relaxed);
        let cur = m[meta::VERSION].load(Relaxed);
        if cur < v {
            if self.lifecycle.is_some() {
                // fetch_max keeps the DEAD bit (above every version) of a row
                // evicted while this call held it: a stale writer never
                // revives a row.
                m[meta::VERSION].fetch_max(v, Relaxed);
            } else {
                m[meta::VERSION].store(v, Relaxed);
            }
        }
        if count_interaction {
            m[meta::INTERACTIONS].fetch_add(1, Relaxed) + 1
        } else {
            m[meta::INTERACTIONS].load(Relaxed)
        }
    }

    /// Ids of live rows, in row order (matches `live_rows`).
    pub fn ids(&self) -> Vec<u64> {
        self.meta_column(meta::ID)
    }

    /// One metadata word of every live row, in row order.
    pub fn meta_column(&self, word: usize) -> Vec<u64> {
        self.live_rows()
            .into_iter()
            .map(|r| self.meta(r)[word].load(Relaxed))
            .collect()
    }

    /// Weights of live rows, row-major, in row order.
    pub fn live_weights(&self) -> Vec<f32> {
        let d = self.cfg.dim;
        let rows = self.live_rows();
        let mut out = vec![0.0f32; rows.len() * d];
        for (o, &r) in out.chunks_exact_mut(d).zip(&rows) {
            self.load_row(r, o);
        }
        out
    }

    /// Evict at most what one call may: rows past the TTL at `now`, then,
    /// while above `max_rows`/`max_bytes`, the lowest-ranked inspected rows
    /// (LRU or LFU) — never below `keep_floor` live rows. Inspects at most
    /// `budget` rows from a clock hand. Returns the evicted rows' final state.
    pub fn evict(&self, now: i64, budget: usize) -> Result<Evicted> {
        let Some(lc) = self.lifecycle else {
            return Err(invalid(
                "this table has no lifecycle; create it with ttl=, max_rows= or max_bytes=",
            ));
        };
        let mut st = self.evict_state.lock().unwrap_or_else(|e| e.into_inner());
        self.release_limbo(&mut st);
        let mut out = Evicted::default();
        let n = self.len();
        if n == 0 || !lc.evicts() {
            return Ok(out);
        }
        // Bytes per live row, counting its share of the id map (<= 16 B / 0.7).
        let row_bytes = self.row_bytes() + 23;
        let over = |live: usize| {
            let by_rows = lc.max_rows.map_or(0, |m| live.saturating_sub(m));
            let by_bytes = lc.max_bytes.map_or(0, |b| {
                (live * row_bytes).saturating_sub(b).div_ceil(row_bytes)
            });
            by_rows.max(by_bytes)
        };
        let mut live = self.live_len();
        let scan = budget.min(n);
        let mut candidates: Vec<(u64, u32)> = Vec::new();
        let version = self.version.load(Acquire);
        let g = self.guard();
        let remove = |r: u32, live: &mut usize, out: &mut Evicted, st: &mut EvictState| {
            let m = self.meta(r);
            let id = m[meta::ID].load(Relaxed);
            if !g.remove(id, r) {
                return;
            }
            m[meta::VERSION].fetch_or(meta::DEAD, AcqRel);
            out.ids.push(id);
            let start = out.rows.len();
            out.rows.resize(start + self.cfg.dim, 0.0);
            self.load_row(r, &mut out.rows[start..]);
            out.interactions.push(m[meta::INTERACTIONS].load(Relaxed));
            out.first_seen
                .push(dec_time(m[meta::FIRST_SEEN].load(Relaxed)));
            out.last_update
                .push(dec_time(m[meta::LAST_UPDATE].load(Relaxed)));
            st.limbo.push(r);
            st.removed.push_back((version, id));
            self.dead.fetch_add(1, AcqRel);
            *live -= 1;
        };
        for k in 0..scan {
            let r = ((st.hand + k) % n) as u32;
            if !self.is_live(r) {
                continue;
            }
            let m = self.meta(r);
            let last = dec_time(m[meta::LAST_UPDATE].load(Relaxed));
            if lc.ttl.is_some_and(|ttl| now.saturating_sub(last) > ttl) && live > lc.keep_floor {
                remove(r, &mut live, &mut out, &mut st);
                continue;
            }
            if lc.max_rows.is_some() || lc.max_bytes.is_some() {
                let score = match lc.policy {
                    Policy::Lru => m[meta::LAST_UPDATE].load(Relaxed),
                    Policy::Lfu => m[meta::INTERACTIONS].load(Relaxed),
                };
                candidates.push((score, r));
            }
        }
        let excess = over(live);
        if excess > 0 && !candidates.is_empty() {
            candidates.sort_unstable();
            for &(_, r) in candidates.iter().take(excess) {
                if live <= lc.keep_floor {
                    break;
                }
                remove(r, &mut live, &mut out, &mut st);
            }
        }
        drop(g);
        st.hand = (st.hand + scan) % n;
        out.scanned = scan;
        while st.removed.len() > lc.removal_log {
            if let Some((v, _)) = st.removed.pop_front() {
                st.log_floor = st.log_floor.max(v);
            }
        }
        self.release_limbo(&mut st);
        Ok(out)
    }

    fn release_limbo(&self, st: &mut EvictState) {
        if !st.limbo.is_empty() && self.pins.load(Acquire) == 0 {
            for r in st.limbo.drain(..) {
                self.free.push(r);
            }
        }
    }

    /// Live rows changed after `version` (ids and rows), ids removed after it,
    /// and the version to pass next time. Fails when the removal log no
    /// longer reaches back to `version` (do a full sync instead).
    pub fn changed_since(&self, version: u64) -> Result<Delta> {
        let current = self.version();
        let st = self.evict_state.lock().unwrap_or_else(|e| e.into_inner());
        if version < st.log_floor {
            return Err(invalid(format!(
                "version {version} is older than the removal log (which starts after version {}); \
                 copy the whole table instead",
                st.log_floor
            )));
        }
        let removed: Vec<u64> = st
            .removed
            .iter()
            .filter(|(v, _)| *v > version)
            .map(|&(_, id)| id)
            .collect();
        drop(st);
        let d = self.cfg.dim;
        let mut delta = Delta {
            removed,
            version: current,
            ..Default::default()
        };
        for r in 0..self.len() as u32 {
            let v = self.meta(r)[meta::VERSION].load(Acquire);
            if v & meta::DEAD == 0 && v > version {
                delta.ids.push(self.meta(r)[meta::ID].load(Relaxed));
                let start = delta.rows.len();
                delta.rows.resize(start + d, 0.0);
                self.load_row(r, &mut delta.rows[start..]);
            }
        }
        Ok(delta)
    }

    /// Copy rows of `ids` into `out` (len(ids) × dim). Unknown ids take
    /// `default` when given, else fail with `UnknownId` before writing.
    pub fn gather(&self, ids: &[u64], out: &mut [f32], default: Option<&[f32]>) -> Result<()> {
        let d = self.cfg.dim;
        let _pin = self.pin();
        let g = self.guard();
        let rows: Vec<Option<u32>> = ids.iter().map(|&id| self.lookup(&g, id)).collect();
        if default.is_none() && rows.iter().any(Option::is_none) {
            return Err(crate::error::unknown_ids(
                ids.iter()
                    .zip(&rows)
                    .filter(|(_, r)| r.is_none())
                    .map(|(&id, _)| id),
            ));
        }
        for (k, r) in rows.iter().enumerate() {
            let o = &mut out[k * d..(k + 1) * d];
            match (r, default) {
                (Some(r), _) => self.load_row(*r, o),
                (None, Some(def)) => o.copy_from_slice(def),
                (None, None) => unreachable!("checked above"),
            }
        }
        Ok(())
    }

    /// Overwrite (or create) the rows of `ids` with `values` (len × dim).
    /// Rows created here are first seen at `timestamp`. Validates capacity
    /// before creating anything.
    pub fn assign(&self, ids: &[u64], values: &[f32], timestamp: i64) -> Result<usize> {
        let d = self.cfg.dim;
        if values.len() != ids.len() * d {
            return Err(invalid(format!(
                "{} ids need {} values ({} x dim {d}), got {}",
                ids.len(),
                ids.len() * d,
                ids.len(),
                values.len()
            )));
        }
        let _pin = self.begin_write();
        let g = self.guard();
        let missing = ids
            .iter()
            .filter(|&&id| self.lookup(&g, id).is_none())
            .count();
        if missing > self.remaining() {
            return Err(Error::Capacity {
                what: "the table".into(),
                needed: missing,
                free: self.remaining(),
                capacity: self.cfg.capacity,
            });
        }
        let mut created = 0;
        for (k, &id) in ids.iter().enumerate() {
            let (r, new) = self.get_or_insert(&g, id, timestamp)?;
            created += usize::from(new);
            self.store_row(r, &values[k * d..(k + 1) * d]);
        }
        Ok(created)
    }

    /// An independent deep copy of the live rows (weights, optimizer state,
    /// metadata, map) with the same configuration and lifecycle; evicted rows
    /// are compacted away.
    pub fn copy(&self) -> Result<Self> {
        let t = match self.lifecycle {
            Some(lc) => EmbeddingTable::with_lifecycle(self.cfg, lc)?,
            None => EmbeddingTable::new(self.cfg)?,
        };
        let (d, w) = (self.cfg.dim, self.state_width);
        let rows = self.live_rows();
        t.bulk_load(
            rows.len(),
            |dst| {
                for (o, &r) in dst.chunks_exact(d).zip(&rows) {
                    copy_atomics(self.row(r), o);
                }
                Ok(())
            },
            |dst| {
                if w > 0 {
                    for (o, &r) in dst.chunks_exact(w).zip(&rows) {
                        copy_atomics(self.row_state(r), o);
                    }
                }
                Ok(())
            },
            |dst| {
                for (o, &r) in dst.chunks_exact(meta::WORDS).zip(&rows) {
                    for (a, b) in o.iter().zip(self.meta(r)) {
                        a.store(b.load(Relaxed), Relaxed);
                    }
                }
                Ok(())
            },
            || Ok(()),
        )?;
        t.version.store(self.version(), Release);
        Ok(t)
    }

    /// True when every row below `len()` is live (no evicted rows).
    pub fn is_compact(&self) -> bool {
        self.dead.load(Acquire) == 0
    }

    /// Fill an empty table with `n` rows written by the three closures, then
    /// index them. Used by `copy` and snapshot loading.
    pub fn bulk_load(
        &self,
        n: usize,
        weights: impl FnOnce(&[AtomicU32]) -> Result<()>,
        state: impl FnOnce(&[AtomicU32]) -> Result<()>,
        metas: impl FnOnce(&[AtomicU64]) -> Result<()>,
        verify: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        if self.claimed.load(Relaxed) != 0 {
            return Err(invalid("bulk_load needs an empty table"));
        }
        if n > self.cfg.capacity {
            return Err(Error::Capacity {
                what: "the table".into(),
                needed: n,
                free: self.cfg.capacity,
                capacity: self.cfg.capacity,
            });
        }
        weights(&self.weights.as_slice()[..n * self.cfg.dim])?;
        state(&self.state.as_slice()[..n * self.state_width])?;
        metas(&self.meta.as_slice()[..n * meta::WORDS])?;
        verify()?;
        let map = IdMap::with_capacity(n);
        // Index the rows from two threads (the map takes concurrent inserts).
        let duplicate = std::sync::atomic::AtomicU64::new(u64::MAX);
        let dup_seen = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            for part in crate::kernels::parallel::chunks(n, 2) {
                let (map, duplicate, dup_seen) = (&map, &duplicate, &dup_seen);
                s.spawn(move || {
                    let g = map.guard();
                    for r in part {
                        let id = self.meta(r as u32)[meta::ID].load(Relaxed);
                        if !matches!(g.insert::<()>(id, || Ok(r as u32)), Inserted::Created(_)) {
                            duplicate.store(id, Relaxed);
                            dup_seen.store(true, Relaxed);
                        }
                    }
                });
            }
        });
        if dup_seen.load(Relaxed) {
            let id = duplicate.load(Relaxed);
            return Err(crate::error::corrupt(format!("id {id} appears twice")));
        }
        self.map_swap(map);
        self.claimed.store(n, Release);
        self.ready.store(n, Release);
        Ok(())
    }

    fn map_swap(&self, map: IdMap) {
        self.map.replace_with(map);
    }

    pub fn weights_region(&self) -> &[AtomicU32] {
        self.weights.as_slice()
    }
    pub fn state_region(&self) -> &[AtomicU32] {
        self.state.as_slice()
    }
    pub fn meta_region(&self) -> &[AtomicU64] {
        self.meta.as_slice()
    }
}

/// Bias and its Adagrad accumulator share one metadata word.
#[inline(always)]
pub fn pack_bias(bias: f32, acc: f32) -> u64 {
    u64::from(bias.to_bits()) | (u64::from(acc.to_bits()) << 32)
}

#[inline(always)]
pub fn unpack_bias(word: u64) -> (f32, f32) {
    (
        f32::from_bits(word as u32),
        f32::from_bits((word >> 32) as u32),
    )
}

/// Relaxed loads of `src` into `dst` (equal lengths), written so the
/// compiler sees one bounds check and a plain unrolled loop.
#[inline(always)]
pub fn load_atomics(src: &[AtomicU32], dst: &mut [f32]) {
    let n = dst.len().min(src.len());
    let (src, dst) = (&src[..n], &mut dst[..n]);
    for k in 0..n {
        dst[k] = f32::from_bits(src[k].load(Relaxed));
    }
}

/// Relaxed stores of `src` into `dst` (equal lengths).
#[inline(always)]
pub fn store_atomics(dst: &[AtomicU32], src: &[f32]) {
    let n = dst.len().min(src.len());
    let (src, dst) = (&src[..n], &dst[..n]);
    for k in 0..n {
        dst[k].store(src[k].to_bits(), Relaxed);
    }
}

pub fn copy_atomics(src: &[AtomicU32], dst: &[AtomicU32]) {
    for (d, s) in dst.iter().zip(src) {
        d.store(s.load(Relaxed), Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(dim: usize) -> EmbeddingTable {
        EmbeddingTable::new(TableConfig {
            capacity: 1000,
            ..TableConfig::new(dim)
        })
        .unwrap()
    }

    #[test]
    fn insert_lookup_and_determinism() {
        let a = table(8);
        let b = table(8);
        let g = a.guard();
        let (r1, new1) = a.get_or_insert(&g, 42, 5).unwrap();
        assert!(new1);
        let (r2, new2) = a.get_or_insert(&g, 42, 3).unwrap();
        assert_eq!((r1, new2), (r2, false));
        assert_eq!(dec_time(a.meta(r1)[meta::FIRST_SEEN].load(Relaxed)), 3);
        let gb = b.guard();
        b.get_or_insert(&gb, 7, 0).unwrap();
        b.get_or_insert(&gb, 42, 0).unwrap();
        let mut x = vec![0.0; 8];
        let mut y = vec![0.0; 8];
        a.gather(&[42], &mut x, None).unwrap();
        b.gather(&[42], &mut y, None).unwrap();
        assert_eq!(x, y);
        assert!(x.iter().all(|v| v.abs() <= 0.1) && x.iter().any(|v| *v != 0.0));
        assert_eq!(a.lookup(&g, 43), None);
        assert_eq!(
            a.gather(&[43], &mut x, None),
            Err(Error::UnknownIds {
                ids: vec![43],
                more: 0
            })
        );
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn capacity_is_enforced_and_leaves_no_entry() {
        let t = EmbeddingTable::new(TableConfig {
            capacity: 2,
            ..TableConfig::new(4)
        })
        .unwrap();
        let g = t.guard();
        t.get_or_insert(&g, 1, 0).unwrap();
        t.get_or_insert(&g, 2, 0).unwrap();
        assert!(matches!(
            t.get_or_insert(&g, 3, 0),
            Err(Error::Capacity { .. })
        ));
        assert!(!t.contains(3));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn concurrent_inserts_are_collisionless() {
        let t = EmbeddingTable::new(TableConfig {
            capacity: 100_000,
            ..TableConfig::new(4)
        })
        .unwrap();
        std::thread::scope(|s| {
            for k in 0..4u64 {
                let t = &t;
                s.spawn(move || {
                    let g = t.guard();
                    for id in 0..20_000u64 {
                        t.get_or_insert(&g, (id * 7 + k) % 30_000, 0).unwrap();
                    }
                });
            }
        });
        assert_eq!(t.len(), 30_000);
        let mut ids = t.ids();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 30_000);
    }

    #[test]
    fn copy_is_deep() {
        let t = table(4);
        t.assign(&[1, 2], &[1.0; 8], 0).unwrap();
        let c = t.copy().unwrap();
        t.assign(&[1], &[9.0; 4], 0).unwrap();
        let mut out = vec![0.0; 4];
        c.gather(&[1], &mut out, None).unwrap();
        assert_eq!(out, vec![1.0; 4]);
        assert_eq!(c.ids(), vec![1, 2]);
    }
}
