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
//! * Row reuse is epoch-based. Every call that resolves ids to rows holds a
//!   `Pin`, which records the eviction epoch it started in (one slot of a
//!   small array, claimed by CAS: no lock, nothing per event). Rows removed
//!   by one `evict` call are tagged with the epoch that call then opens and
//!   wait in limbo; they become reusable once every live pin started at or
//!   after that epoch: a pin that started later resolved its ids after the
//!   removal and cannot hold them. A busy table (pins always held) thus keeps
//!   reusing rows; only the pins older than an eviction delay its rows.
//!   Registration re-reads the epoch after publishing its slot (SeqCst), so
//!   a reclaimer either sees the slot or the pin sees the new epoch.
//! * Whole-table reads go through a `TableReader`: one pinned pass lists the
//!   live rows and their ids, then drops rows that died (or changed id) since
//!   listing — an id moved from one row to another during the listing would
//!   otherwise appear twice — and every column is read from that one list,
//!   so ids, rows and metadata always agree.

use crate::error::{invalid, out_of_range, Error, Result};
use crate::kernels::optim::{Optimizer, OptimizerKind};
use crate::kernels::rng::{hash2, mix64, unit_f32};
use crate::storage::idmap::{distinct_len, IdMap, Inserted, MapGuard, EMPTY};
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
    /// The words a copy of a row carries over (all but the id, which keys
    /// it, and the version, which the copy sets last).
    pub const CARRIED: std::ops::Range<usize> = INTERACTIONS..VERSION;
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
    /// Start epoch + 1 of each live pin (0: slot free); see the design notes.
    pin_slots: Box<[AtomicU64]>,
    /// Pins that found every slot taken; while any is live nothing is reclaimed.
    overflow_pins: AtomicUsize,
    pin_hint: AtomicUsize,
    /// Eviction epoch: bumped by every `evict` call that removes rows.
    epoch: AtomicU64,
    /// Rows in limbo (mirrors `EvictState::limbo.len()` for lock-free checks).
    limbo_len: AtomicUsize,
    /// Set when the first `evict` call starts (see `is_compact`).
    evicted_ever: std::sync::atomic::AtomicBool,
    version: AtomicU64,
    /// Writing calls in flight (`begin_write` pins held), for `sync_from`.
    writers: AtomicUsize,
    /// Process-unique identity, so a copy knows which table it was made from.
    uid: u64,
    /// `(uid, version)` of the table this one is a copy of, as of its copy
    /// or last `sync_from` (see `sync_from`).
    synced: Mutex<Option<(u64, u64)>>,
    unadmitted: AtomicU64,
    evict_state: Mutex<EvictState>,
    /// Held from a call's capacity check to the end of its row creation
    /// (`creation`), so two concurrent calls that each fit but not together
    /// cannot both pass the check: one fails before creating anything.
    /// Taken once per call, never per event.
    creating: Mutex<()>,
}

#[derive(Default)]
struct EvictState {
    hand: usize,
    /// Evicted rows and the epoch they were removed in, oldest first, waiting
    /// until no pin that could still hold them is live.
    limbo: VecDeque<(u32, u64)>,
    /// (version, id) of recent removals, for `changed_since`.
    removed: VecDeque<(u64, u64)>,
    /// Oldest version whose removals are all still in `removed`.
    log_floor: u64,
}

/// Source of `EmbeddingTable::uid`.
static NEXT_UID: AtomicU64 = AtomicU64::new(1);

/// Pin slots per table; more concurrent pins fall back to `overflow_pins`.
const PIN_SLOTS: usize = 64;
const OVERFLOW: usize = usize::MAX;

/// Held by a call that reads or writes rows for its duration: rows evicted
/// after it started are not reused until it is dropped.
pub struct Pin<'a> {
    table: &'a EmbeddingTable,
    slot: usize,
    /// Taken by `begin_write`: counted in `writers` while held.
    writer: bool,
}

impl Pin<'_> {
    /// Make this read pin a writing call's (`begin_write`), once the call
    /// knows it will go ahead: a pin taken with `pin` to look ids up, then
    /// upgraded after the checks, leaves a rejected call without a version
    /// bump. Idempotent.
    pub fn write(&mut self) {
        if self.writer {
            return;
        }
        let t = self.table;
        // Counted before the version bump (see `sync_from`).
        t.writers.fetch_add(1, SeqCst);
        self.writer = true;
        t.version.fetch_add(1, SeqCst);
    }
}

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        let t = self.table;
        if self.writer {
            // SeqCst (a release): a `sync_from` that reads zero writers sees
            // every store this call made.
            t.writers.fetch_sub(1, SeqCst);
        }
        if self.slot == OVERFLOW {
            t.overflow_pins.fetch_sub(1, SeqCst);
        } else {
            t.pin_slots[self.slot].store(0, SeqCst);
        }
        t.try_reclaim();
    }
}

/// A pinned, consistent list of a table's live rows and their ids; every
/// column read through it is of exactly these rows (see the design notes).
pub struct TableReader<'a> {
    table: &'a EmbeddingTable,
    _pin: Pin<'a>,
    rows: Vec<u32>,
    ids: Vec<u64>,
}

impl<'a> TableReader<'a> {
    fn new(table: &'a EmbeddingTable) -> Self {
        let pin = table.pin();
        let n = table.len() as u32;
        let (mut rows, mut ids) = (Vec::new(), Vec::new());
        for r in 0..n {
            let m = table.meta(r);
            // Acquire: pairs with `init_row`'s Release, so a reused row's id
            // and values are those of its new id.
            if m[meta::VERSION].load(Acquire) & meta::DEAD == 0 {
                rows.push(r);
                ids.push(m[meta::ID].load(Relaxed));
            }
        }
        if table.lifecycle.is_some() {
            // Rows evicted during the listing: drop them. Rows listed now
            // cannot be reused while the pin is held.
            let mut k = 0;
            for j in 0..rows.len() {
                let m = table.meta(rows[j]);
                let live = m[meta::VERSION].load(Acquire) & meta::DEAD == 0;
                if live && m[meta::ID].load(Relaxed) == ids[j] {
                    rows[k] = rows[j];
                    ids[k] = ids[j];
                    k += 1;
                }
            }
            rows.truncate(k);
            ids.truncate(k);
        }
        TableReader {
            table,
            _pin: pin,
            rows,
            ids,
        }
    }

    pub fn table(&self) -> &'a EmbeddingTable {
        self.table
    }

    /// Row indices, in row order.
    pub fn rows(&self) -> &[u32] {
        &self.rows
    }

    /// Ids of `rows()`, in the same order.
    pub fn ids(&self) -> &[u64] {
        &self.ids
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// One metadata word of each row.
    pub fn meta_column(&self, word: usize) -> Vec<u64> {
        let t = self.table;
        self.rows
            .iter()
            .map(|&r| t.meta(r)[word].load(Relaxed))
            .collect()
    }

    /// Weights of the rows, row-major.
    pub fn weights(&self) -> Vec<f32> {
        let (t, d) = (self.table, self.table.dim());
        let mut out = vec![0.0f32; self.rows.len() * d];
        for (o, &r) in out.chunks_exact_mut(d).zip(&self.rows) {
            t.load_row(r, o);
        }
        out
    }

    /// Optimizer state of the rows, row-major (`state_width` per row).
    pub fn state(&self) -> Vec<f32> {
        let (t, w) = (self.table, self.table.state_width());
        let mut out = vec![0.0f32; self.rows.len() * w];
        for (o, &r) in out.chunks_exact_mut(w.max(1)).zip(&self.rows) {
            load_atomics(t.row_state(r), o);
        }
        out
    }
}

/// The rows of one bulk creation (`EmbeddingTable::reserve_rows`): new id
/// number `k` of the creation (`0 <= k < total`, in the creation's order)
/// gets `row(k)`. Workers that created `c_0, c_1, ...` new ids take the
/// numbers `base_k = c_0 + ... + c_(k-1)` onwards (`bases`), so the rows
/// are those a one-thread creation of the same ids in that order gets.
#[derive(Debug)]
pub struct NewRows {
    reused: Vec<u32>,
    first_fresh: u32,
    total: usize,
}

impl NewRows {
    #[inline(always)]
    pub fn row(&self, k: usize) -> u32 {
        debug_assert!(k < self.total);
        match self.reused.get(k) {
            Some(&r) => r,
            None => self.first_fresh + (k - self.reused.len()) as u32,
        }
    }

    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The reused rows, creation numbers `0..reused().len()`.
    pub fn reused(&self) -> &[u32] {
        &self.reused
    }

    /// The creation number of fresh row `r`, or None when `r` is not one.
    pub fn fresh_number(&self, r: u32) -> Option<usize> {
        let fresh = (self.total - self.reused.len()) as u32;
        (r >= self.first_fresh && r - self.first_fresh < fresh)
            .then(|| self.reused.len() + (r - self.first_fresh) as usize)
    }
}

/// First creation number of each worker that created `counts[k]` new ids
/// (see `NewRows`).
pub fn bases(counts: &[usize]) -> Vec<usize> {
    counts
        .iter()
        .scan(0, |acc, &c| {
            let b = *acc;
            *acc += c;
            Some(b)
        })
        .collect()
}

/// The changes of a table after a version (see `changed_since`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Delta {
    pub ids: Vec<u64>,
    pub rows: Vec<f32>,
    pub removed: Vec<u64>,
    pub version: u64,
}

/// What one `sync_from` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Rows copied (changed or new since the last sync).
    pub rows: usize,
    /// Ids removed (evicted from the source since the last sync).
    pub removed: usize,
    /// Source rows inspected.
    pub scanned: usize,
}

impl std::ops::AddAssign for SyncStats {
    fn add_assign(&mut self, o: SyncStats) {
        self.rows += o.rows;
        self.removed += o.removed;
        self.scanned += o.scanned;
    }
}

/// The cells of one row (see `EmbeddingTable::row_cells`).
#[derive(Clone, Copy)]
pub struct RowCells<'a> {
    pub weights: &'a [AtomicU32],
    pub state: &'a [AtomicU32],
    pub meta: &'a [AtomicU64; meta::WORDS],
}

/// A table's weight, state and metadata regions, borrowed once by a loop
/// that addresses rows per event (`EmbeddingTable::regions`): held in
/// locals, the region addresses are not reloaded through the table after
/// every store of a row, and rows proven in range once (`rows_in_range`)
/// are addressed without bounds checks (`cells`).
#[derive(Clone, Copy)]
pub struct RowRegions<'a> {
    weights: &'a [AtomicU32],
    state: &'a [AtomicU32],
    meta: &'a [AtomicU64],
    capacity: usize,
    dim: usize,
}

impl<'a> RowRegions<'a> {
    /// Floats per row (the table's `dim`).
    pub fn row_width(&self) -> usize {
        self.dim
    }

    /// Whether every entry of `rows` other than `skip` is a row of the
    /// regions (below the capacity): the precondition of `cells`, checked
    /// once for many rows in one branch-free (vectorised) pass.
    pub fn rows_in_range(&self, rows: &[u32], skip: u32) -> bool {
        // The capacity is at most MAX_CAPACITY < u32::MAX (validated).
        let cap = self.capacity as u32;
        rows.iter()
            .fold(true, |ok, &r| ok & ((r < cap) | (r == skip)))
    }

    /// The cells of row `r` (`EmbeddingTable::row_cells`) without bounds
    /// checks, the row width given as `n` vectors of four floats;
    /// `with_state`: the table has per-coordinate optimizer state (else
    /// `state` is empty).
    ///
    /// # Safety
    /// `r` is below the capacity (`rows_in_range`), `4 × n = dim`, and
    /// `with_state` implies a state as wide as the row (Adagrad).
    #[inline(always)]
    pub unsafe fn cells<W: crate::kernels::simd::Width>(
        &self,
        r: u32,
        n: W,
        with_state: bool,
    ) -> RowCells<'a> {
        let d = 4 * n.get();
        let r = r as usize;
        debug_assert!(r < self.capacity && d == self.dim);
        debug_assert!(!with_state || self.state.len() == self.weights.len());
        // SAFETY: the regions hold `capacity` rows of `dim` weights, of
        // `dim` state cells when there is state, and of `meta::WORDS`
        // metadata words, and live for 'a; `r < capacity`, `d = dim` (this
        // function's contract): each slice lies inside its region.
        unsafe {
            let state: &[AtomicU32] = if with_state {
                std::slice::from_raw_parts(self.state.as_ptr().add(r * d), d)
            } else {
                &[]
            };
            RowCells {
                weights: std::slice::from_raw_parts(self.weights.as_ptr().add(r * d), d),
                state,
                meta: &*self
                    .meta
                    .as_ptr()
                    .add(r * meta::WORDS)
                    .cast::<[AtomicU64; meta::WORDS]>(),
            }
        }
    }

    /// Hint the CPU to fetch row `r`'s weights, metadata and (`with_state`)
    /// optimizer state, the row width given as `n` vectors of four floats (a
    /// compile-time width unrolls the line loops).
    #[inline(always)]
    pub fn prefetch<W: crate::kernels::simd::Width>(&self, r: u32, n: W, with_state: bool) {
        self.prefetch_floats(r, 4 * n.get(), with_state)
    }

    /// `prefetch` with the row width `d` in floats (`d = dim`; a constant
    /// from `prefetch` unrolls the line loops).
    #[inline(always)]
    fn prefetch_floats(&self, r: u32, d: usize, with_state: bool) {
        debug_assert_eq!(d, self.dim);
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let lines = (d * 4).div_ceil(64);
            let at = |base: *const AtomicU32| base.wrapping_add(r as usize * d).cast::<i8>();
            let (w, st) = (at(self.weights.as_ptr()), at(self.state.as_ptr()));
            let m = self
                .meta
                .as_ptr()
                .wrapping_add(r as usize * meta::WORDS)
                .cast::<i8>();
            // SAFETY: prefetch never faults, whatever the address.
            unsafe {
                for line in 0..lines {
                    _mm_prefetch(w.wrapping_add(64 * line), _MM_HINT_T0);
                }
                _mm_prefetch(m, _MM_HINT_T0);
                if with_state {
                    for line in 0..lines {
                        _mm_prefetch(st.wrapping_add(64 * line), _MM_HINT_T0);
                    }
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (r, d, with_state);
    }
}

/// Expired rows whose id-map slots `evict` prefetches ahead of removing them.
const EVICT_AHEAD: usize = 16;

/// Cache lines by which the state and metadata regions start past their
/// mappings (odd, and apart from each other and from the weights' 0 in the
/// low 12 address bits): see the design note of `region`.
const STATE_STAGGER_LINES: usize = 17;
const META_STAGGER_LINES: usize = 39;

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
        // Staggered starts (see `region`): a row's state and metadata do not
        // share their low address bits with its weights.
        let state = Region::reserve_staggered(cfg.capacity * state_width, STATE_STAGGER_LINES)?;
        let meta = Region::reserve_staggered(cfg.capacity * meta::WORDS, META_STAGGER_LINES)?;
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
            pin_slots: (0..PIN_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            overflow_pins: AtomicUsize::new(0),
            pin_hint: AtomicUsize::new(0),
            epoch: AtomicU64::new(0),
            limbo_len: AtomicUsize::new(0),
            evicted_ever: std::sync::atomic::AtomicBool::new(false),
            version: AtomicU64::new(0),
            writers: AtomicUsize::new(0),
            uid: NEXT_UID.fetch_add(1, Relaxed),
            synced: Mutex::new(None),
            unadmitted: AtomicU64::new(0),
            evict_state: Mutex::new(EvictState::default()),
            creating: Mutex::new(()),
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
        let mut pin = self.pin();
        pin.write();
        pin
    }

    /// Pin the table for a read: rows evicted from now on are not reused
    /// while held. Lock-free: claims a slot by CAS (per call, not per event).
    pub fn pin(&self) -> Pin<'_> {
        let n = self.pin_slots.len();
        let start = self.pin_hint.fetch_add(1, Relaxed);
        for k in 0..n {
            let slot = (start + k) % n;
            let s = &self.pin_slots[slot];
            let mut e = self.epoch.load(SeqCst);
            if s.compare_exchange(0, e + 1, SeqCst, Relaxed).is_ok() {
                // An eviction that opened a new epoch before a reclaimer
                // could see this slot: record the newer epoch (conservative
                // either way: a smaller recorded epoch only delays reuse).
                loop {
                    let now = self.epoch.load(SeqCst);
                    if now == e {
                        return Pin {
                            table: self,
                            slot,
                            writer: false,
                        };
                    }
                    e = now;
                    s.store(e + 1, SeqCst);
                }
            }
        }
        self.overflow_pins.fetch_add(1, SeqCst);
        // Synchronise with the latest epoch bump (and the removals before it).
        self.epoch.load(SeqCst);
        Pin {
            table: self,
            slot: OVERFLOW,
            writer: false,
        }
    }

    /// A pinned reader of the live rows (see `TableReader`).
    pub fn reader(&self) -> TableReader<'_> {
        TableReader::new(self)
    }

    /// Oldest start epoch among live pins (u64::MAX when none; 0 while an
    /// overflow pin is live).
    fn oldest_pin(&self) -> u64 {
        if self.overflow_pins.load(SeqCst) > 0 {
            return 0;
        }
        self.pin_slots
            .iter()
            .map(|s| s.load(SeqCst))
            .filter(|&v| v != 0)
            .map(|v| v - 1)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Move limbo rows that no live pin can hold to the free list.
    fn reclaim(&self, st: &mut EvictState) {
        if st.limbo.is_empty() {
            return;
        }
        let oldest = self.oldest_pin();
        while let Some(&(r, epoch)) = st.limbo.front() {
            if epoch > oldest {
                break;
            }
            st.limbo.pop_front();
            self.free.push(r);
        }
        self.limbo_len.store(st.limbo.len(), Release);
    }

    /// `reclaim` when rows wait in limbo and nobody else is evicting.
    fn try_reclaim(&self) {
        if self.limbo_len.load(Acquire) == 0 {
            return;
        }
        if let Ok(mut st) = self.evict_state.try_lock() {
            self.reclaim(&mut st);
        }
    }

    /// Rows currently live (not evicted).
    pub fn live_len(&self) -> usize {
        // `dead` first: dead <= claimed at every instant, so a later `len()`
        // cannot be below it.
        let dead = self.dead.load(Acquire);
        self.len().saturating_sub(dead)
    }

    /// Whether row `r` holds a live id (evicted rows keep their last values
    /// until reused).
    #[inline(always)]
    pub fn is_live(&self, r: u32) -> bool {
        self.meta(r)[meta::VERSION].load(Relaxed) & meta::DEAD == 0
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

    /// Rows a new id can still get: never-used rows plus evicted rows that
    /// are reusable now (rows still held by a pin are not counted).
    pub fn remaining(&self) -> usize {
        self.try_reclaim();
        self.cfg.capacity - self.claimed.load(Relaxed).min(self.cfg.capacity) + self.free.len()
    }

    /// The right to create rows: hold it from `check_room` to the end of the
    /// creation (a capacity check is then a reservation). Calls on several
    /// tables take them in field order.
    pub fn creation(&self) -> std::sync::MutexGuard<'_, ()> {
        self.creating.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fails with `Capacity` when the new ids among `ids` do not fit.
    /// Cheap unless `ids` is longer than the room left (then one batched
    /// lookup of `ids`). Concurrent callers that create rows hold `creation`
    /// across the check and the creation.
    pub fn check_room(&self, ids: &[u64]) -> Result<()> {
        self.check_room_for(ids.len(), || {
            let mut rows = vec![0u32; ids.len()];
            self.guard().get_batch(ids, &mut rows);
            let missing = ids.iter().zip(&rows).filter(|&(_, &r)| r == EMPTY);
            distinct_len(missing.map(|(&id, _)| id))
        })
    }

    /// Fails with `Capacity` when `distinct()` new ids do not fit, where
    /// `entries` >= `distinct()` bounds them from above (the check is then
    /// free while `entries` fit). The caller holds no map guard: a full
    /// table waits for the eviction lock to reclaim.
    pub fn check_room_for(&self, entries: usize, distinct: impl FnOnce() -> usize) -> Result<()> {
        if entries <= self.remaining() {
            return Ok(());
        }
        // Before declaring the table full, reclaim with the lock taken
        // (`remaining` only tries it, and an evict or changed_since holding
        // it would leave reusable rows uncounted).
        if self.limbo_len.load(Acquire) > 0 {
            let mut st = self.evict_state.lock().unwrap_or_else(|e| e.into_inner());
            self.reclaim(&mut st);
        }
        let needed = distinct();
        let free = self.remaining();
        if needed > free {
            return Err(Error::Capacity {
                what: "the table".into(),
                needed,
                free,
                capacity: self.cfg.capacity,
            });
        }
        Ok(())
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
        self.prefetch_lines(r, true);
    }

    /// `prefetch` without the optimizer state, for readers (scoring).
    #[inline(always)]
    pub fn prefetch_for_read(&self, r: u32) {
        self.prefetch_lines(r, false);
    }

    #[inline(always)]
    fn prefetch_lines(&self, r: u32, with_state: bool) {
        // Per-coordinate state, where there is any, is as wide as the row.
        let with_state = with_state && self.state_width > 0;
        self.regions().prefetch_floats(r, self.cfg.dim, with_state);
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
        if self.limbo_len.load(Acquire) > 0 && self.claimed.load(Relaxed) >= self.cfg.capacity {
            self.try_reclaim();
            if let Some(r) = self.free.pop() {
                self.dead.fetch_sub(1, AcqRel);
                return Ok((r, false));
            }
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

    /// Rows for `total` new ids of one bulk creation (see `NewRows`), taken
    /// at once: reusable evicted rows first (in the order `claim_row` would
    /// pop them), then fresh rows — one reservation of the fresh rows, not
    /// one per id. Fails with `Capacity`, taking nothing, when they do not
    /// fit. The caller holds `creation` and no map guard (a full table
    /// waits for the eviction lock to reclaim), and ends the creation with
    /// `commit_rows`.
    pub fn reserve_rows(&self, total: usize) -> Result<NewRows> {
        let room = |t: &Self| t.cfg.capacity - t.claimed.load(Relaxed).min(t.cfg.capacity);
        if total > self.free.len() + room(self) && self.limbo_len.load(Acquire) > 0 {
            let mut st = self.evict_state.lock().unwrap_or_else(|e| e.into_inner());
            self.reclaim(&mut st);
        }
        let free = self.free.len();
        if total > free + room(self) {
            return Err(Error::Capacity {
                what: "the table".into(),
                needed: total,
                free: free + room(self),
                capacity: self.cfg.capacity,
            });
        }
        // Only creators pop (one at a time, under `creation`); reclaims only
        // push: the rows counted above are there.
        let mut reused = Vec::with_capacity(total.min(free));
        while reused.len() < total {
            match self.free.pop() {
                Some(r) => reused.push(r),
                None => break,
            }
        }
        let fresh = total - reused.len();
        let mut first = self.claimed.load(Relaxed);
        loop {
            if first + fresh > self.cfg.capacity {
                // Only a creator not holding `creation` can get here: give
                // the reused rows back and fail.
                for &r in &reused {
                    self.free.push(r);
                }
                return Err(Error::Capacity {
                    what: "the table".into(),
                    needed: total,
                    free: self.remaining(),
                    capacity: self.cfg.capacity,
                });
            }
            match self
                .claimed
                .compare_exchange_weak(first, first + fresh, AcqRel, Relaxed)
            {
                Ok(_) => break,
                Err(v) => first = v,
            }
        }
        if !reused.is_empty() {
            self.dead.fetch_sub(reused.len(), AcqRel);
        }
        Ok(NewRows {
            reused,
            first_fresh: first as u32,
            total,
        })
    }

    /// Initialise row `r` of a bulk creation (from `reserve_rows`) for `id`,
    /// first seen at `timestamp`.
    #[inline]
    pub fn init_new_row(&self, r: u32, id: u64, timestamp: i64) {
        self.init_row(r, id, timestamp);
    }

    /// End a bulk creation: its fresh rows, all initialised, count in
    /// `len()` (which waits for them until then).
    pub fn commit_rows(&self, rows: &NewRows) {
        let fresh = rows.total - rows.reused.len();
        if fresh > 0 {
            self.ready.fetch_add(fresh, Release);
        }
    }

    /// Keep row `r`'s first_seen the earliest of it and `timestamp` (a
    /// later sight of an id in the call that created it).
    #[inline]
    pub fn keep_first_seen(&self, r: u32, timestamp: i64) {
        let (m, t) = (&self.meta(r)[meta::FIRST_SEEN], enc_time(timestamp));
        // A plain load first: later sights are usually later (no RMW then).
        if m.load(Relaxed) > t {
            m.fetch_min(t, Relaxed);
        }
    }

    /// Make room in the id map for `more` new ids (no growth while they are
    /// inserted). The caller holds no map guard.
    pub fn reserve_ids(&self, more: usize) {
        self.map.reserve(more);
    }

    /// Set the last update of row `r`, created in this call, to its first
    /// sighting at `timestamp` (see `resolve::create_rows`).
    pub fn set_first_update(&self, r: u32, timestamp: i64) {
        self.meta(r)[meta::LAST_UPDATE].store(enc_time(timestamp), Relaxed);
    }

    /// Add `n` ids published by a bulk creation to the map's key count.
    pub fn count_published(&self, n: usize) {
        self.map.add_live(n);
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
        self.bias_step_meta_as(self.cfg.optimizer.kind, m, g)
    }

    /// `bias_step_meta` given the table's optimizer kind (a loop that knows
    /// it at compile time passes a constant: no `match` per step).
    #[inline(always)]
    pub fn bias_step_meta_as(&self, kind: OptimizerKind, m: &[AtomicU64; meta::WORDS], g: f32) {
        debug_assert_eq!(kind, self.cfg.optimizer.kind);
        let (mut b, mut acc) = unpack_bias(m[meta::BIAS].load(Relaxed));
        self.cfg.optimizer.step_scalar_as(kind, &mut b, g, &mut acc);
        m[meta::BIAS].store(pack_bias(b, acc), Relaxed);
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

    /// The table's row regions, for a loop that addresses rows per event
    /// (`RowRegions`).
    #[inline(always)]
    pub fn regions(&self) -> RowRegions<'_> {
        RowRegions {
            weights: self.weights.as_slice(),
            state: self.state.as_slice(),
            meta: self.meta.as_slice(),
            capacity: self.cfg.capacity,
            dim: self.cfg.dim,
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
        self.tag_changed(m);
        if count_interaction {
            m[meta::INTERACTIONS].fetch_add(1, Relaxed) + 1
        } else {
            m[meta::INTERACTIONS].load(Relaxed)
        }
    }

    /// Mark row `r` changed (for `changed_since` and `sync_from`), by a
    /// writer holding `begin_write` that changed it by other means than
    /// `touch` (e.g. an optimizer reset).
    pub fn mark_changed(&self, r: u32) {
        self.tag_changed(self.meta(r));
    }

    /// Tag row metadata `m` with the current version (the row changed).
    #[inline(always)]
    fn tag_changed(&self, m: &[AtomicU64]) {
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
    }

    /// Ids of live rows, in row order (one pinned pass, see `reader`).
    pub fn ids(&self) -> Vec<u64> {
        self.reader().ids().to_vec()
    }

    /// One metadata word of every live row, in row order.
    pub fn meta_column(&self, word: usize) -> Vec<u64> {
        self.reader().meta_column(word)
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
        self.evicted_ever.store(true, SeqCst);
        self.reclaim(&mut st);
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
        let g = self.guard();
        let (mut removed_rows, mut removed_ids) = (Vec::new(), Vec::new());
        let mut remove = |r: u32, live: &mut usize, out: &mut Evicted| {
            let m = self.meta(r);
            let id = m[meta::ID].load(Relaxed);
            // Dead before the id leaves the map: whoever re-creates the id
            // (through the map) sees this row dead (see `TableReader`).
            let before = m[meta::VERSION].fetch_or(meta::DEAD, AcqRel);
            if !g.remove(id, r) {
                m[meta::VERSION].store(before, Release);
                return;
            }
            out.ids.push(id);
            let start = out.rows.len();
            out.rows.resize(start + self.cfg.dim, 0.0);
            self.load_row(r, &mut out.rows[start..]);
            out.interactions.push(m[meta::INTERACTIONS].load(Relaxed));
            out.first_seen
                .push(dec_time(m[meta::FIRST_SEEN].load(Relaxed)));
            out.last_update
                .push(dec_time(m[meta::LAST_UPDATE].load(Relaxed)));
            removed_rows.push(r);
            removed_ids.push(id);
            self.dead.fetch_add(1, AcqRel);
            *live -= 1;
        };
        let ranked = lc.max_rows.is_some() || lc.max_bytes.is_some();
        let score_of = |m: &[AtomicU64]| match lc.policy {
            Policy::Lru => m[meta::LAST_UPDATE].load(Relaxed),
            Policy::Lfu => m[meta::INTERACTIONS].load(Relaxed),
        };
        // Pass 1: the inspected rows past their TTL, in clock order (and the
        // ranking candidates among the others).
        let mut expired: Vec<u32> = Vec::new();
        for k in 0..scan {
            let r = ((st.hand + k) % n) as u32;
            if !self.is_live(r) {
                continue;
            }
            let m = self.meta(r);
            let last = dec_time(m[meta::LAST_UPDATE].load(Relaxed));
            if lc.ttl.is_some_and(|ttl| now.saturating_sub(last) > ttl) {
                expired.push(r);
            } else if ranked {
                candidates.push((score_of(m), r));
            }
        }
        // Pass 2: remove them in that order, each id's map slot prefetched
        // `EVICT_AHEAD` rows ahead (a removal is otherwise a cache miss on a
        // random slot). The same decisions as one pass: only these removals
        // change `live` during the scan, and a row the floor keeps becomes a
        // ranking candidate (the candidates are sorted, so their order does
        // not matter).
        for &r in expired.iter().take(EVICT_AHEAD) {
            g.prefetch(self.meta(r)[meta::ID].load(Relaxed));
        }
        for (k, &r) in expired.iter().enumerate() {
            if let Some(&ahead) = expired.get(k + EVICT_AHEAD) {
                g.prefetch(self.meta(ahead)[meta::ID].load(Relaxed));
            }
            if live > lc.keep_floor {
                remove(r, &mut live, &mut out);
            } else if ranked {
                candidates.push((score_of(self.meta(r)), r));
            }
        }
        let excess = over(live);
        if excess > 0 && !candidates.is_empty() {
            candidates.sort_unstable();
            for &(_, r) in candidates.iter().take(excess) {
                if live <= lc.keep_floor {
                    break;
                }
                remove(r, &mut live, &mut out);
            }
        }
        drop(g);
        if !removed_rows.is_empty() {
            // Open a new epoch: pins registered from now on cannot hold these rows.
            let epoch = self.epoch.fetch_add(1, SeqCst) + 1;
            st.limbo
                .extend(removed_rows.into_iter().map(|r| (r, epoch)));
            // A removal is a change: log it under a new version, so that
            // `changed_since(v)` after a sync at v reports it.
            let version = self.version.fetch_add(1, AcqRel) + 1;
            st.removed
                .extend(removed_ids.into_iter().map(|id| (version, id)));
        }
        st.hand = (st.hand + scan) % n;
        out.scanned = scan;
        while st.removed.len() > lc.removal_log {
            if let Some((v, _)) = st.removed.pop_front() {
                st.log_floor = st.log_floor.max(v);
            }
        }
        self.reclaim(&mut st);
        Ok(out)
    }

    /// Live rows changed after `version` (ids and rows), ids removed after it,
    /// and the version to pass next time. Fails when the removal log no
    /// longer reaches back to `version` (do a full sync instead).
    pub fn changed_since(&self, version: u64) -> Result<Delta> {
        // Bump the version and return the one before: a writer in flight (its
        // `begin_write` came earlier) tags the rows it changes from now on
        // above `current`, so the next call sees them. (Returning the
        // unbumped version lost every row such a writer changed after this
        // scan.) What remains is the instant between a writer's load of the
        // version and its store of the tag.
        let current = self.version.fetch_add(1, AcqRel);
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
        let reader = self.reader();
        for (&r, &id) in reader.rows().iter().zip(reader.ids()) {
            let v = self.meta(r)[meta::VERSION].load(Acquire);
            if v & meta::DEAD == 0 && v > version {
                delta.ids.push(id);
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
        // One batched, prefetched pass over the map (the pin keeps every
        // row found in place), then the rows, prefetched a few ahead.
        let mut rows = vec![EMPTY; ids.len()];
        let missing = self.guard().get_batch(ids, &mut rows);
        if default.is_none() && missing > 0 {
            return Err(crate::error::unknown_ids(
                ids.iter()
                    .zip(&rows)
                    .filter(|&(_, &r)| r == EMPTY)
                    .map(|(&id, _)| id),
            ));
        }
        const AHEAD: usize = 8;
        for (k, (&r, o)) in rows.iter().zip(out.chunks_exact_mut(d)).enumerate() {
            if let Some(&next) = rows.get(k + AHEAD) {
                if next != EMPTY {
                    self.prefetch_for_read(next);
                }
            }
            match (r, default) {
                (EMPTY, Some(def)) => o.copy_from_slice(def),
                (EMPTY, None) => unreachable!("checked above"),
                (r, _) => self.load_row(r, o),
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
        // Checked before `begin_write`: a rejected call changes nothing, not
        // even the version.
        let _creating = self.creation();
        self.check_room(ids)?;
        let _pin = self.begin_write();
        let g = self.guard();
        let mut created = 0;
        for (k, &id) in ids.iter().enumerate() {
            let (r, new) = self.get_or_insert(&g, id, timestamp)?;
            created += usize::from(new);
            self.store_row(r, &values[k * d..(k + 1) * d]);
            // Overwritten rows changed: tag them like training's `touch`.
            self.tag_changed(self.meta(r));
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
        // The version the copy is complete up to, for a later `sync_from`
        // (0 = none: a writer was in flight, so the next sync reads every row).
        let mark = self.quiet_version().unwrap_or(0);
        *t.synced.lock().unwrap_or_else(|e| e.into_inner()) = Some((self.uid, mark));
        // One pinned pass: the listed rows are not reused during the copy,
        // and no id can appear twice (see `TableReader`).
        let reader = self.reader();
        let rows = reader.rows();
        t.bulk_load(
            rows.len(),
            |dst| {
                for (o, &r) in dst.chunks_exact(d).zip(rows) {
                    copy_atomics(self.row(r), o);
                }
                Ok(())
            },
            |dst| {
                if w > 0 {
                    for (o, &r) in dst.chunks_exact(w).zip(rows) {
                        copy_atomics(self.row_state(r), o);
                    }
                }
                Ok(())
            },
            |dst| {
                for ((o, &r), &id) in dst.chunks_exact(meta::WORDS).zip(rows).zip(reader.ids()) {
                    for (a, b) in o.iter().zip(self.meta(r)) {
                        a.store(b.load(Relaxed), Relaxed);
                    }
                    // A row evicted after listing keeps its id and values
                    // under the pin; the copy holds it as it was, live.
                    debug_assert_eq!(o[meta::ID].load(Relaxed), id);
                    o[meta::VERSION].fetch_and(!meta::DEAD, Relaxed);
                }
                Ok(())
            },
            || Ok(()),
        )?;
        t.version.store(self.version(), Release);
        Ok(t)
    }

    /// The current version when no writing call is in flight, else `None`.
    /// Every row a write changes after this call is tagged above the
    /// returned version.
    fn quiet_version(&self) -> Option<u64> {
        // Version first, then writers (both SeqCst): a writer not counted
        // yet bumps the version after this load, so it tags above it; a
        // writer that ended before the load has all its stores visible.
        let v = self.version.load(SeqCst);
        (self.writers.load(SeqCst) == 0).then_some(v)
    }

    /// Fails unless this table can be synced from `src` (see `sync_from`).
    pub fn check_sync_source(&self, src: &EmbeddingTable) -> Result<()> {
        self.sync_base(src).map(|_| ())
    }

    /// The version of `src` this copy is complete up to.
    fn sync_base(&self, src: &EmbeddingTable) -> Result<u64> {
        if self.cfg != src.cfg || self.lifecycle != src.lifecycle {
            return Err(invalid(
                "sync_from needs a table with the source's configuration and lifecycle; \
                 make one with source.copy()",
            ));
        }
        let mark = *self.synced.lock().unwrap_or_else(|e| e.into_inner());
        let since = match mark {
            Some((uid, v)) if uid == src.uid => v,
            _ => {
                return Err(invalid(
                    "this table is not a copy of the source table; make one with \
                     source.copy(), then sync_from(source) keeps it up to date",
                ))
            }
        };
        let st = src.evict_state.lock().unwrap_or_else(|e| e.into_inner());
        if since < st.log_floor {
            return Err(invalid(format!(
                "the source evicted more rows since the last sync than its removal log \
                 keeps ({}); copy() it again",
                src.lifecycle.map_or(0, |lc| lc.removal_log)
            )));
        }
        Ok(since)
    }

    /// Make this table, a `copy()` of `src` (possibly synced since), equal
    /// to what `src.copy()` would return now, copying only the rows `src`
    /// changed since then (weights, optimizer state, metadata) and removing
    /// the ids `src` evicted.
    ///
    /// Design notes. Rows are found by their version tag, the removals in
    /// `src`'s removal log; the version the next sync starts from is the
    /// one read while no writer was in flight (`quiet_version`). A sync that
    /// overlaps a writing call of `src` copies what it sees (rows may be
    /// mid-update) and keeps its starting version, so the next sync copies
    /// those rows again: once `src` is quiet, one sync makes the copy exact.
    /// This table must not be written by anything else meanwhile.
    pub fn sync_from(&self, src: &EmbeddingTable) -> Result<SyncStats> {
        if std::ptr::eq(self, src) {
            return Err(invalid("a table cannot be synced from itself"));
        }
        let since = self.sync_base(src)?;
        let next = src.quiet_version().unwrap_or(since);
        let removed: Vec<u64> = {
            let st = src.evict_state.lock().unwrap_or_else(|e| e.into_inner());
            st.removed
                .iter()
                .filter(|(v, _)| *v > since)
                .map(|&(_, id)| id)
                .collect()
        };
        let mut stats = SyncStats {
            removed: self.remove_ids(&removed),
            ..SyncStats::default()
        };
        let _creating = self.creation();
        let _write = self.begin_write();
        let _src_pin = src.pin();
        let g = self.guard();
        let n = src.len();
        // Three passes: the changed rows and their ids (a sequential scan of
        // the metadata), their rows here in one batched, prefetched lookup,
        // then the copies with both rows prefetched a few ahead (the rows
        // are spread over the table: one cache miss each otherwise).
        let mut changed: Vec<(u32, u64)> = Vec::new();
        for r in 0..n as u32 {
            let m = src.meta(r);
            let v = m[meta::VERSION].load(Acquire);
            if v & meta::DEAD != 0 || v <= since {
                continue;
            }
            changed.push((r, m[meta::ID].load(Relaxed)));
        }
        let ids: Vec<u64> = changed.iter().map(|&(_, id)| id).collect();
        let mut dst_rows = vec![crate::storage::idmap::EMPTY; ids.len()];
        g.get_batch(&ids, &mut dst_rows);
        const AHEAD: usize = 8;
        for (k, &(r, id)) in changed.iter().enumerate() {
            if let Some(&(ra, _)) = changed.get(k + AHEAD) {
                src.prefetch(ra);
                let da = dst_rows[k + AHEAD];
                if da != crate::storage::idmap::EMPTY {
                    self.prefetch(da);
                }
            }
            let m = src.meta(r);
            let v = m[meta::VERSION].load(Acquire);
            if v & meta::DEAD != 0 {
                continue; // evicted since the scan: its removal is logged for the next sync
            }
            let dst = match dst_rows[k] {
                crate::storage::idmap::EMPTY => self.get_or_insert(&g, id, 0)?.0,
                dst => dst,
            };
            copy_atomics(src.row(r), self.row(dst));
            copy_atomics(src.row_state(r), self.row_state(dst));
            let o = self.meta(dst);
            for k in meta::CARRIED {
                o[k].store(m[k].load(Relaxed), Relaxed);
            }
            o[meta::VERSION].store(v, Release);
            stats.rows += 1;
        }
        stats.scanned = n;
        *self.synced.lock().unwrap_or_else(|e| e.into_inner()) = Some((src.uid, next));
        Ok(stats)
    }

    /// Remove the rows of `ids` (those present) as `evict` removes rows:
    /// dead, out of the map, reusable once no older pin holds them, logged
    /// for `changed_since`. Returns the rows removed.
    fn remove_ids(&self, ids: &[u64]) -> usize {
        if ids.is_empty() {
            return 0;
        }
        let mut st = self.evict_state.lock().unwrap_or_else(|e| e.into_inner());
        self.evicted_ever.store(true, SeqCst);
        let g = self.guard();
        let (mut rows, mut gone) = (Vec::new(), Vec::new());
        for &id in ids {
            let Some(r) = g.get(id) else { continue };
            let m = self.meta(r);
            let before = m[meta::VERSION].fetch_or(meta::DEAD, AcqRel);
            if !g.remove(id, r) {
                m[meta::VERSION].store(before, Release);
                continue;
            }
            self.dead.fetch_add(1, AcqRel);
            rows.push(r);
            gone.push(id);
        }
        drop(g);
        if !rows.is_empty() {
            let epoch = self.epoch.fetch_add(1, SeqCst) + 1;
            st.limbo.extend(rows.iter().map(|&r| (r, epoch)));
            let version = self.version.fetch_add(1, AcqRel) + 1;
            st.removed.extend(gone.into_iter().map(|id| (version, id)));
            let keep = self.lifecycle.map_or(0, |lc| lc.removal_log);
            while st.removed.len() > keep {
                if let Some((v, _)) = st.removed.pop_front() {
                    st.log_floor = st.log_floor.max(v);
                }
            }
        }
        self.reclaim(&mut st);
        rows.len()
    }

    /// True when every row below `len()` is live and stays so during a read
    /// without a pin: no evicted rows, and no `evict` call ever ran (rows of
    /// a table that evicts may die and be reused under a raw region read, so
    /// writers of such a table go through `copy`, which reads consistently).
    pub fn is_compact(&self) -> bool {
        self.dead.load(Acquire) == 0 && !self.evicted_ever.load(SeqCst)
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
    // Four cells per Relaxed vector load and store (`simd::F4`), the tail
    // cell by cell: the same values as one Relaxed load and store per cell.
    use crate::kernels::simd::F4;
    let n = src.len().min(dst.len());
    let q = n / 4 * 4;
    for (d, s) in dst[..q].chunks_exact(4).zip(src[..q].chunks_exact(4)) {
        F4::load(s.try_into().unwrap()).store(d.try_into().unwrap());
    }
    for (d, s) in dst[q..n].iter().zip(&src[q..n]) {
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

    fn evicting_table(capacity: usize, max_rows: usize) -> EmbeddingTable {
        EmbeddingTable::with_lifecycle(
            TableConfig {
                capacity,
                ..TableConfig::new(2)
            },
            Lifecycle {
                max_rows: Some(max_rows),
                ..Default::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn rows_freed_before_the_oldest_pin_are_reused_and_later_ones_wait() {
        let t = evicting_table(4, 2);
        t.assign(&[1, 2, 3, 4], &[0.0; 8], 0).unwrap();
        let old = t.pin();
        let first = t.evict(0, 10).unwrap();
        assert_eq!(first.ids.len(), 2);
        // `old` started before the eviction: it may still hold those rows.
        assert_eq!(t.remaining(), 0);
        let young = t.pin();
        drop(old);
        // Only `young` is live, and it started after the eviction.
        assert_eq!(t.remaining(), 2);
        assert_eq!(t.assign(&[5, 6], &[0.0; 4], 1).unwrap(), 2);
        assert_eq!(t.len(), 4, "the freed rows were reused, not new ones");
        let second = t.evict(0, 10).unwrap();
        assert_eq!(second.ids.len(), 2);
        // Rows freed after `young` started are not handed out while it lives.
        assert_eq!(t.remaining(), 0);
        assert!(matches!(
            t.assign(&[7], &[0.0; 2], 2),
            Err(Error::Capacity { needed: 1, .. })
        ));
        drop(young);
        assert_eq!(t.remaining(), 2);
        assert_eq!(t.assign(&[7], &[0.0; 2], 2).unwrap(), 1);
    }

    #[test]
    fn a_table_that_is_never_idle_keeps_reusing_rows() {
        let t = evicting_table(64, 32);
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    while !stop.load(Relaxed) {
                        let _pin = t.pin();
                        std::hint::spin_loop();
                    }
                });
            }
            let mut next = 0u64;
            for _ in 0..500 {
                let ids: Vec<u64> = (next..next + 32).collect();
                next += 32;
                let start = std::time::Instant::now();
                // Pins started before the last eviction end quickly; the
                // ones that follow never block its rows.
                while t.remaining() < 32 {
                    assert!(start.elapsed().as_secs() < 5, "rows never reused");
                    std::thread::yield_now();
                }
                t.assign(&ids, &vec![0.0; 64], 0).unwrap();
                t.evict(0, 64).unwrap();
            }
            stop.store(true, Relaxed);
        });
        assert_eq!(t.len(), 64);
    }

    #[test]
    fn readers_pair_ids_with_their_own_rows_under_churn() {
        // Every row holds its id as values: a reader must never show an id
        // twice or with another id's row.
        let t = evicting_table(256, 64);
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut next = 0u64;
                while !stop.load(Relaxed) {
                    let ids: Vec<u64> = (next..next + 16).collect();
                    let values: Vec<f32> = ids.iter().flat_map(|&i| [i as f32; 2]).collect();
                    next += 16;
                    if t.assign(&ids, &values, next as i64).is_ok() {
                        t.evict(next as i64, 64).unwrap();
                    }
                }
            });
            // A failed assertion below must still stop the writer.
            struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
            impl Drop for StopOnDrop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Relaxed);
                }
            }
            let _stop = StopOnDrop(&stop);
            for _ in 0..2000 {
                let r = t.reader();
                let w = r.weights();
                let mut seen = std::collections::HashSet::new();
                for (k, &id) in r.ids().iter().enumerate() {
                    assert!(seen.insert(id), "id {id} appears twice");
                    // Its own value, or its initial one (`assign` creates
                    // the row, then stores the value).
                    let v = w[2 * k];
                    assert!(
                        v == id as f32 || v.abs() <= 0.1,
                        "id {id} paired with another row ({v})"
                    );
                }
                let c = t.copy().unwrap();
                assert_eq!(c.live_len(), c.ids().len());
            }
        });
    }

    #[test]
    fn assign_tags_overwritten_rows_and_a_rejected_assign_changes_nothing() {
        let t = evicting_table(2, 2);
        t.assign(&[1, 2], &[0.0; 4], 0).unwrap();
        let v = t.version();
        t.assign(&[2], &[1.0; 2], 0).unwrap();
        assert_eq!(t.changed_since(v).unwrap().ids, vec![2]);
        let v = t.version();
        assert!(matches!(
            t.assign(&[1, 3], &[5.0; 4], 0),
            Err(Error::Capacity { needed: 1, .. })
        ));
        assert_eq!(t.version(), v);
        let mut out = vec![0.0; 2];
        t.gather(&[1], &mut out, None).unwrap();
        assert_eq!(out, vec![0.0; 2]);
    }

    #[test]
    fn changed_since_during_a_write_loses_nothing() {
        let t = table(2);
        let g = t.guard();
        let (r, _) = t.get_or_insert(&g, 1, 0).unwrap();
        let first = t.changed_since(0).unwrap();
        // A writer that began before the next sync and touches the row after
        // it: the touch must be in the sync after that.
        let writer = t.begin_write();
        let during = t.changed_since(first.version).unwrap();
        t.touch(r, 5, true);
        drop(writer);
        let after = t.changed_since(during.version).unwrap();
        assert_eq!(after.ids, vec![1], "the in-flight write was lost");
    }

    /// One row as a table holds it: id, weights, state, metadata words bar
    /// the version.
    type RowContents = (u64, Vec<f32>, Vec<f32>, Vec<u64>);

    /// Everything a table holds, by id.
    fn contents(t: &EmbeddingTable) -> Vec<RowContents> {
        let r = t.reader();
        let mut out: Vec<_> = r
            .rows()
            .iter()
            .zip(r.ids())
            .map(|(&row, &id)| {
                let mut w = vec![0.0; t.dim()];
                t.load_row(row, &mut w);
                let mut s = vec![0.0; t.state_width()];
                load_atomics(t.row_state(row), &mut s);
                let m = t.meta(row)[..meta::VERSION]
                    .iter()
                    .map(|a| a.load(Relaxed))
                    .collect();
                (id, w, s, m)
            })
            .collect();
        out.sort_by_key(|c| c.0);
        out
    }

    fn ttl_table(removal_log: usize) -> EmbeddingTable {
        EmbeddingTable::with_lifecycle(
            TableConfig {
                capacity: 64,
                ..TableConfig::new(2)
            },
            Lifecycle {
                ttl: Some(10),
                removal_log,
                ..Lifecycle::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn sync_from_equals_a_copy_after_writes_and_evictions() {
        let t = ttl_table(1 << 10);
        let copy = t.copy().unwrap();
        let mut stamp = 0;
        for round in 0..6u64 {
            // New ids every round, some old ones rewritten, the stale ones evicted.
            let ids: Vec<u64> = (round * 5..round * 5 + 8).collect();
            let values: Vec<f32> = ids.iter().flat_map(|&i| [i as f32, round as f32]).collect();
            stamp += 6;
            t.assign(&ids, &values, stamp).unwrap();
            let g = t.guard();
            let (r, _) = t.get_or_insert(&g, ids[0], stamp).unwrap();
            drop(g);
            {
                let _w = t.begin_write();
                t.touch(r, stamp, true);
            }
            t.evict(stamp, 64).unwrap();
            let stats = copy.sync_from(&t).unwrap();
            assert_eq!(
                contents(&copy),
                contents(&t.copy().unwrap()),
                "round {round}"
            );
            assert!(stats.rows <= 9, "copied {} rows", stats.rows);
        }
        assert!(copy.live_len() < copy.len(), "evictions reached the copy");
        // Nothing changed: nothing copied.
        assert_eq!(copy.sync_from(&t).unwrap().rows, 0);
    }

    #[test]
    fn sync_from_refuses_an_outgrown_removal_log_and_a_stranger() {
        let t = ttl_table(4);
        let copy = t.copy().unwrap();
        let ids: Vec<u64> = (0..20).collect();
        t.assign(&ids, &[1.0; 40], 0).unwrap();
        copy.sync_from(&t).unwrap();
        t.evict(100, 64).unwrap();
        let before = contents(&copy);
        let err = copy.sync_from(&t).unwrap_err();
        assert!(err.to_string().contains("removal log"), "{err}");
        assert_eq!(contents(&copy), before);
        let stranger = ttl_table(4);
        assert!(stranger.sync_from(&t).is_err());
        assert!(t.sync_from(&t).is_err());
    }

    #[test]
    fn sync_from_during_a_write_copies_the_write_next_time() {
        let t = table(2);
        let g = t.guard();
        let (r, _) = t.get_or_insert(&g, 1, 0).unwrap();
        drop(g);
        let copy = t.copy().unwrap();
        // A writer that began before a sync and changes the row after it (the
        // sync saw the old value): the next sync must copy it.
        let writer = t.begin_write();
        copy.sync_from(&t).unwrap();
        t.store_row(r, &[5.0, 6.0]);
        t.touch(r, 5, true);
        drop(writer);
        assert_eq!(copy.sync_from(&t).unwrap().rows, 1);
        assert_eq!(contents(&copy), contents(&t));
    }

    #[test]
    fn sync_from_while_writers_and_evictions_run_converges() {
        let t = std::sync::Arc::new(ttl_table(1 << 16));
        let copy = t.copy().unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let writers: Vec<_> = (0..2u64)
                .map(|k| {
                    let t = &t;
                    s.spawn(move || {
                        for step in 0..3000u64 {
                            let ids = [step % 50 + 50 * k, (step * 7) % 40];
                            let v = (step * 2 + k) as f32;
                            // Capacity is small: a full table refuses, that is fine.
                            let _ = t.assign(&ids, &[v, v, v, v], (step / 10) as i64);
                        }
                    })
                })
                .collect();
            let (t2, stop2) = (&t, &stop);
            s.spawn(move || {
                let mut now = 0;
                while !stop2.load(Relaxed) {
                    now += 1;
                    t2.evict(now / 20, 16).unwrap();
                }
            });
            let (t3, stop3, copy3) = (&t, &stop, &copy);
            s.spawn(move || {
                while !stop3.load(Relaxed) {
                    copy3.sync_from(t3).unwrap();
                }
            });
            for w in writers {
                w.join().unwrap();
            }
            stop.store(true, Relaxed);
        });
        copy.sync_from(&t).unwrap();
        assert_eq!(contents(&copy), contents(&t.copy().unwrap()));
    }
}
