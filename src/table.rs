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

use crate::error::{invalid, Error, Result};
use crate::idmap::{IdMap, Inserted, MapGuard};
use crate::optim::{Optimizer, OptimizerKind};
use crate::region::Region;
use crate::rng::{hash2, unit_f32};
pub use crate::rng::{IdHashBuilder, IdHasher};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::*};

/// Largest capacity a table can be created with (row indices are u32).
pub const MAX_CAPACITY: usize = crate::idmap::MAX_ROW as usize;
/// Default capacity: 2^26 rows of reserved (not committed) address space.
pub const DEFAULT_CAPACITY: usize = 1 << 26;

/// Words of the per-row metadata record (8 × u64 = one cache line).
pub mod meta {
    pub const ID: usize = 0;
    pub const INTERACTIONS: usize = 1;
    pub const UPDATES: usize = 2;
    pub const FIRST_SEEN: usize = 3;
    pub const LAST_UPDATE: usize = 4;
    pub const BIAS: usize = 5;
    pub const BIAS_ACC: usize = 6;
    pub const ROW_ACC: usize = 7;
    pub const WORDS: usize = 8;
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
            return Err(invalid(format!(
                "dim must be between 1 and 65536, got {}",
                self.dim
            )));
        }
        if self.capacity == 0 || self.capacity > MAX_CAPACITY {
            return Err(invalid(format!(
                "capacity must be between 1 and {MAX_CAPACITY} rows, got {}",
                self.capacity
            )));
        }
        if !(self.init_scale.is_finite() && self.init_scale >= 0.0) {
            return Err(invalid(format!(
                "init_scale must be a finite number >= 0, got {}",
                self.init_scale
            )));
        }
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
        })
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
        self.claimed.load(Relaxed) * self.row_bytes() + self.map.bytes()
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
            let r = self.claim_row()?;
            self.init_row(r, id, timestamp);
            self.ready.fetch_add(1, Release);
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

    fn claim_row(&self) -> Result<u32> {
        let mut cur = self.claimed.load(Relaxed);
        loop {
            if cur >= self.cfg.capacity {
                return Err(Error::CapacityExceeded {
                    capacity: self.cfg.capacity,
                });
            }
            match self
                .claimed
                .compare_exchange_weak(cur, cur + 1, AcqRel, Relaxed)
            {
                Ok(_) => return Ok(cur as u32),
                Err(v) => cur = v,
            }
        }
    }

    /// The deterministic initial value of coordinate `k` of `id`'s row.
    #[inline]
    pub fn initial_value(&self, id: u64, k: usize) -> f32 {
        let u = unit_f32(hash2(self.cfg.seed ^ id.rotate_left(17), k as u64 ^ id));
        (2.0 * u - 1.0) * self.cfg.init_scale
    }

    fn init_row(&self, r: u32, id: u64, timestamp: i64) {
        for (k, w) in self.row(r).iter().enumerate() {
            f32_store(w, self.initial_value(id, k));
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
        m[meta::BIAS].store(u64::from(0f32.to_bits()), Relaxed);
        m[meta::BIAS_ACC].store(u64::from(init_acc.to_bits()), Relaxed);
        m[meta::ROW_ACC].store(u64::from(init_acc.to_bits()), Relaxed);
    }

    #[inline(always)]
    pub fn load_row(&self, r: u32, out: &mut [f32]) {
        for (o, a) in out.iter_mut().zip(self.row(r)) {
            *o = f32_load(a);
        }
    }

    #[inline(always)]
    pub fn store_row(&self, r: u32, v: &[f32]) {
        for (a, x) in self.row(r).iter().zip(v) {
            f32_store(a, *x);
        }
    }

    #[inline(always)]
    pub fn bias(&self, r: u32) -> f32 {
        f32::from_bits(self.meta(r)[meta::BIAS].load(Relaxed) as u32)
    }

    /// Apply one optimizer step to row `r` whose current value the caller
    /// loaded into `w`; `grad` is the loss gradient. `w` holds the new value
    /// afterwards. `scratch` must hold at least `state_width` floats.
    #[inline(always)]
    pub fn apply_step(&self, r: u32, w: &mut [f32], grad: &mut [f32], scratch: &mut [f32]) {
        let opt = &self.cfg.optimizer;
        let st = self.row_state(r);
        let acc = &mut scratch[..st.len()];
        for (a, s) in acc.iter_mut().zip(st) {
            *a = f32_load(s);
        }
        let m = self.meta(r);
        let mut row_acc = f32::from_bits(m[meta::ROW_ACC].load(Relaxed) as u32);
        opt.step(w, grad, acc, &mut row_acc);
        self.store_row(r, w);
        for (a, s) in acc.iter().zip(st) {
            f32_store(s, *a);
        }
        if opt.kind == OptimizerKind::RowWiseAdagrad {
            m[meta::ROW_ACC].store(u64::from(row_acc.to_bits()), Relaxed);
        }
    }

    #[inline(always)]
    pub fn apply_bias_step(&self, r: u32, g: f32) {
        let m = self.meta(r);
        let mut b = f32::from_bits(m[meta::BIAS].load(Relaxed) as u32);
        let mut acc = f32::from_bits(m[meta::BIAS_ACC].load(Relaxed) as u32);
        self.cfg.optimizer.step_scalar(&mut b, g, &mut acc);
        m[meta::BIAS].store(u64::from(b.to_bits()), Relaxed);
        m[meta::BIAS_ACC].store(u64::from(acc.to_bits()), Relaxed);
    }

    /// Record that row `r` consumed an event at `timestamp`; returns the
    /// interaction count after it.
    #[inline(always)]
    pub fn touch(&self, r: u32, timestamp: i64, count_interaction: bool) -> u64 {
        let m = self.meta(r);
        m[meta::UPDATES].fetch_add(1, Relaxed);
        m[meta::LAST_UPDATE].fetch_max(enc_time(timestamp), Relaxed);
        if count_interaction {
            m[meta::INTERACTIONS].fetch_add(1, Relaxed) + 1
        } else {
            m[meta::INTERACTIONS].load(Relaxed)
        }
    }

    /// Ids of rows 0..len, in row order (matches `weights_view`).
    pub fn ids(&self) -> Vec<u64> {
        let n = self.len();
        (0..n as u32)
            .map(|r| self.meta(r)[meta::ID].load(Relaxed))
            .collect()
    }

    pub fn meta_column(&self, word: usize) -> Vec<u64> {
        let n = self.len();
        (0..n as u32)
            .map(|r| self.meta(r)[word].load(Relaxed))
            .collect()
    }

    /// Copy rows of `ids` into `out` (len(ids) × dim). Unknown ids take
    /// `default` when given, else fail with `UnknownId` before writing.
    pub fn gather(&self, ids: &[u64], out: &mut [f32], default: Option<&[f32]>) -> Result<()> {
        let d = self.cfg.dim;
        let g = self.guard();
        let rows: Vec<Option<u32>> = ids.iter().map(|&id| self.lookup(&g, id)).collect();
        if default.is_none() {
            if let Some(k) = rows.iter().position(Option::is_none) {
                return Err(Error::UnknownId(ids[k]));
            }
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
        let g = self.guard();
        let missing = ids
            .iter()
            .filter(|&&id| self.lookup(&g, id).is_none())
            .count();
        if missing > self.remaining() {
            return Err(Error::CapacityExceeded {
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

    /// An independent deep copy (weights, optimizer state, metadata, map).
    pub fn copy(&self) -> Result<Self> {
        let t = EmbeddingTable::new(self.cfg)?;
        let n = self.len();
        t.bulk_load(
            n,
            |dst| copy_atomics(&self.weights.as_slice()[..n * self.cfg.dim], dst),
            |dst| copy_atomics(&self.state.as_slice()[..n * self.state_width], dst),
            |dst| {
                for (d, s) in dst.iter().zip(&self.meta.as_slice()[..n * meta::WORDS]) {
                    d.store(s.load(Relaxed), Relaxed);
                }
            },
        )?;
        Ok(t)
    }

    /// Fill an empty table with `n` rows written by the three closures, then
    /// index them. Used by `copy` and snapshot loading.
    pub fn bulk_load(
        &self,
        n: usize,
        weights: impl FnOnce(&[AtomicU32]),
        state: impl FnOnce(&[AtomicU32]),
        metas: impl FnOnce(&[AtomicU64]),
    ) -> Result<()> {
        if self.claimed.load(Relaxed) != 0 {
            return Err(invalid("bulk_load needs an empty table"));
        }
        if n > self.cfg.capacity {
            return Err(Error::CapacityExceeded {
                capacity: self.cfg.capacity,
            });
        }
        weights(&self.weights.as_slice()[..n * self.cfg.dim]);
        state(&self.state.as_slice()[..n * self.state_width]);
        metas(&self.meta.as_slice()[..n * meta::WORDS]);
        let map = IdMap::with_capacity(n);
        {
            let g = map.guard();
            for r in 0..n as u32 {
                let id = self.meta(r)[meta::ID].load(Relaxed);
                if !matches!(g.insert::<()>(id, || Ok(r)), Inserted::Created(_)) {
                    return Err(Error::CorruptSnapshot(format!("id {id} appears twice")));
                }
            }
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
        assert_eq!(a.gather(&[43], &mut x, None), Err(Error::UnknownId(43)));
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
            Err(Error::CapacityExceeded { .. })
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
