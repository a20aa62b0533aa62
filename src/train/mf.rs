//! Logistic (or squared-loss) matrix factorisation trained one event at a
//! time over two embedding tables, Hogwild across threads.
//!
//! Design notes.
//! * A call first *resolves* every event's user and item to a row (lookups,
//!   then creation of unseen ids), and only then trains. Validation and the
//!   capacity check therefore happen before any row is touched, and the
//!   training loop can prefetch the rows of events a few steps ahead.
//!   Because a row's initial value depends only on (seed, id), creating all
//!   new rows up front gives the same result as creating each on first sight.
//! * The global bias is shared by every event; updating it in place from two
//!   threads would bounce one cache line between cores on every event. Each
//!   worker instead trains a private copy and adds its delta back once at the
//!   end of the call (with one thread this is exactly the sequential result).
//! * Observers (the Monitor) get per-thread shards, filled without locks on
//!   the per-event path and absorbed once per call.

use crate::error::{invalid, Error, Result};
use crate::kernels::parallel::chunks;
use crate::storage::table::{f32_load, f32_store, EmbeddingTable, TableConfig};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// Binary cross-entropy on sigmoid(score); labels in [0, 1].
    Logistic,
    /// 0.5 * (score - label)^2 for rating-like labels.
    Squared,
}

impl Loss {
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "logistic" | "log" | "bce" => Ok(Loss::Logistic),
            "squared" | "mse" | "l2" => Ok(Loss::Squared),
            _ => Err(invalid(format!(
                "unknown loss {name:?}; choose 'logistic' or 'squared'"
            ))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Loss::Logistic => "logistic",
            Loss::Squared => "squared",
        }
    }

    /// (loss, d loss / d score).
    #[inline(always)]
    pub fn value_and_grad(self, score: f32, label: f32) -> (f32, f32) {
        match self {
            Loss::Logistic => {
                // One exp and one log1p: z = exp(-|s|) gives both the sigmoid
                // and softplus(s) = max(s, 0) + ln(1 + z), stably.
                let z = (-score.abs()).exp();
                let p = if score >= 0.0 {
                    1.0 / (1.0 + z)
                } else {
                    z / (1.0 + z)
                };
                let softplus = score.max(0.0) + ln_1p_unit(z);
                (softplus - label * score, p - label)
            }
            Loss::Squared => {
                let r = score - label;
                (0.5 * r * r, r)
            }
        }
    }
}

/// ln(1 + z) for z in [0, 1] via 2·atanh(z / (2 + z)) (series to t^11):
/// absolute error below 1e-6, several times cheaper than libm's log1pf. Used
/// for the reported loss only, never for a gradient.
#[inline(always)]
pub fn ln_1p_unit(z: f32) -> f32 {
    let t = z / (2.0 + z);
    let t2 = t * t;
    2.0 * t
        * (1.0 + t2 * (1.0 / 3.0 + t2 * (0.2 + t2 * (1.0 / 7.0 + t2 * (1.0 / 9.0 + t2 / 11.0)))))
}

#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// One row update seen by an observer.
pub struct RowUpdate<'a> {
    pub id: u64,
    pub row: u32,
    /// Interaction count of the row after this event.
    pub interactions: u64,
    pub first_seen: i64,
    pub timestamp: i64,
    pub before: &'a [f32],
    pub after: &'a [f32],
}

/// Receives item-row updates from the training loop.
pub trait UpdateObserver: Sync {
    type Shard: Send;
    fn new_shard(&self) -> Self::Shard;
    fn observe(&self, shard: &mut Self::Shard, update: &RowUpdate<'_>);
    fn absorb(&self, shard: Self::Shard);
}

/// The observer that observes nothing (compiled away).
pub struct NoObserver;

impl UpdateObserver for NoObserver {
    type Shard = ();
    fn new_shard(&self) {}
    #[inline(always)]
    fn observe(&self, _: &mut (), _: &RowUpdate<'_>) {}
    fn absorb(&self, _: ()) {}
}

#[derive(Clone, Copy, Debug)]
pub struct MfConfig {
    pub table: TableConfig,
    pub loss: Loss,
    pub bias: bool,
}

pub struct MatrixFactorization {
    pub cfg: MfConfig,
    pub users: std::sync::Arc<EmbeddingTable>,
    pub items: std::sync::Arc<EmbeddingTable>,
    global_bias: AtomicU32,
    global_acc: AtomicU32,
    events_seen: AtomicU64,
}

/// Borrowed, not-yet-validated arguments of one `train` call.
pub struct Batch<'a> {
    pub users: &'a [u64],
    pub items: &'a [u64],
    pub labels: &'a [f32],
    pub weights: Option<&'a [f32]>,
    pub timestamps: Option<&'a [i64]>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TrainStats {
    pub events: usize,
    pub mean_loss: f64,
    pub new_users: usize,
    pub new_items: usize,
    /// Events skipped because their user or item is not admitted yet.
    pub unadmitted_events: usize,
}

/// Row of an event whose id has no row: not admitted yet (see `lifecycle`).
pub const MISSING: u32 = u32::MAX;
const PREFETCH: usize = 8;
const LOOKAHEAD: usize = 16;

impl Batch<'_> {
    pub fn validate(&self, loss: Loss) -> Result<()> {
        let n = self.users.len();
        let check_len = |name: &str, len: usize| {
            if len != n {
                Err(invalid(format!(
                    "users has {n} elements but {name} has {len}"
                )))
            } else {
                Ok(())
            }
        };
        check_len("items", self.items.len())?;
        validate_targets(&check_len, self.labels, self.weights, self.timestamps, loss)
    }
}

/// The checks every model's batch shares: lengths of labels / weights /
/// timestamps (via `check_len`), finite non-negative weights, finite labels,
/// and labels in [0, 1] for the logistic loss.
pub fn validate_targets(
    check_len: &dyn Fn(&str, usize) -> Result<()>,
    labels: &[f32],
    weights: Option<&[f32]>,
    timestamps: Option<&[i64]>,
    loss: Loss,
) -> Result<()> {
    check_len("labels", labels.len())?;
    if let Some(w) = weights {
        check_len("weights", w.len())?;
        if let Some(k) = w.iter().position(|x| !(x.is_finite() && *x >= 0.0)) {
            return Err(invalid(format!(
                "weights[{k}] = {} is not a finite number >= 0",
                w[k]
            )));
        }
    }
    if let Some(t) = timestamps {
        check_len("timestamps", t.len())?;
    }
    if let Some(k) = labels.iter().position(|x| !x.is_finite()) {
        return Err(invalid(format!(
            "labels[{k}] = {} is not finite",
            labels[k]
        )));
    }
    if loss == Loss::Logistic {
        if let Some(k) = labels.iter().position(|x| !(0.0..=1.0).contains(x)) {
            return Err(invalid(format!(
                "labels[{k}] = {} is outside [0, 1], which the logistic loss needs; \
                 use loss='squared' for ratings",
                labels[k]
            )));
        }
    }
    Ok(())
}

/// Resolve ids to rows for a table, creating unseen ids. Returns rows and
/// the number created. Checks the capacity before creating anything.
pub fn resolve(
    table: &EmbeddingTable,
    ids: &[u64],
    time_of: &(dyn Fn(usize) -> i64 + Sync),
    threads: usize,
    create: bool,
) -> Result<(Vec<u32>, usize)> {
    let n = ids.len();
    let mut rows = vec![MISSING; n];
    let parts = chunks(n, threads);
    // Pass 1: lookups only.
    let missing: Vec<Vec<usize>> = std::thread::scope(|s| {
        let mut rest: &mut [u32] = &mut rows;
        let mut handles = Vec::new();
        for p in &parts {
            let (mine, tail) = rest.split_at_mut(p.len());
            rest = tail;
            let p = p.clone();
            handles.push(s.spawn(move || {
                let g = table.guard();
                let mut miss = Vec::new();
                let end = p.end;
                for (k, e) in p.enumerate() {
                    if e + LOOKAHEAD < end {
                        g.prefetch(ids[e + LOOKAHEAD]);
                    }
                    match table.lookup(&g, ids[e]) {
                        Some(r) => mine[k] = r,
                        None => miss.push(e),
                    }
                }
                miss
            }));
        }
        handles
            .into_iter()
            .map(|h| h.join().expect("lookup worker panicked"))
            .collect()
    });
    let n_missing: usize = missing.iter().map(Vec::len).sum();
    if n_missing == 0 {
        return Ok((rows, 0));
    }
    if !create {
        let e = missing.iter().flatten().next().copied().unwrap_or(0);
        return Err(Error::UnknownId(ids[e]));
    }
    if n_missing > table.remaining() {
        let mut distinct: Vec<u64> = missing.iter().flatten().map(|&e| ids[e]).collect();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() > table.remaining() {
            return Err(invalid(format!(
                "this call needs {} new rows but the table has room for {} more \
                 (capacity {}); create it with a larger capacity=",
                distinct.len(),
                table.remaining(),
                table.capacity()
            )));
        }
    }
    // Pass 2: create the missing rows (concurrently; duplicates resolve in the map).
    let created: Vec<Result<Vec<(usize, u32, bool)>>> = std::thread::scope(|s| {
        let handles: Vec<_> = missing
            .iter()
            .map(|list| {
                s.spawn(move || {
                    let g = table.guard();
                    let mut out = Vec::with_capacity(list.len());
                    let admission = table.admission();
                    for &e in list {
                        if let Some((filter, min_count)) = admission {
                            // Count this sighting; the row is created at the
                            // sighting that reaches min_count.
                            if table.lookup(&g, ids[e]).is_none() && filter.add(ids[e]) < min_count
                            {
                                out.push((e, MISSING, false));
                                continue;
                            }
                        }
                        let (r, new) = table.get_or_insert(&g, ids[e], time_of(e))?;
                        out.push((e, r, new));
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("insert worker panicked"))
            .collect()
    });
    let mut n_new = 0;
    for part in created {
        for (e, r, new) in part? {
            rows[e] = r;
            n_new += usize::from(new);
        }
    }
    Ok((rows, n_new))
}

impl MatrixFactorization {
    pub fn new(cfg: MfConfig) -> Result<Self> {
        cfg.table.validate()?;
        let users = EmbeddingTable::new(TableConfig {
            seed: cfg.table.seed,
            ..cfg.table
        })?;
        let items = EmbeddingTable::new(TableConfig {
            seed: crate::kernels::rng::mix64(cfg.table.seed ^ 0x6974_656d),
            ..cfg.table
        })?;
        Ok(Self::from_tables(
            cfg,
            users,
            items,
            0.0,
            cfg.table.optimizer.initial_accumulator,
        ))
    }

    /// A model whose tables have the given lifecycles (None: keep every row).
    pub fn with_lifecycles(
        cfg: MfConfig,
        users: Option<crate::storage::lifecycle::Lifecycle>,
        items: Option<crate::storage::lifecycle::Lifecycle>,
    ) -> Result<Self> {
        cfg.table.validate()?;
        let make = |seed: u64, lc: Option<crate::storage::lifecycle::Lifecycle>| {
            let t = TableConfig { seed, ..cfg.table };
            match lc {
                Some(lc) => EmbeddingTable::with_lifecycle(t, lc),
                None => EmbeddingTable::new(t),
            }
        };
        let u = make(cfg.table.seed, users)?;
        let i = make(
            crate::kernels::rng::mix64(cfg.table.seed ^ 0x6974_656d),
            items,
        )?;
        Ok(Self::from_tables(
            cfg,
            u,
            i,
            0.0,
            cfg.table.optimizer.initial_accumulator,
        ))
    }

    pub fn from_tables(
        cfg: MfConfig,
        users: EmbeddingTable,
        items: EmbeddingTable,
        global_bias: f32,
        global_acc: f32,
    ) -> Self {
        MatrixFactorization {
            cfg,
            users: std::sync::Arc::new(users),
            items: std::sync::Arc::new(items),
            global_bias: AtomicU32::new(global_bias.to_bits()),
            global_acc: AtomicU32::new(global_acc.to_bits()),
            events_seen: AtomicU64::new(0),
        }
    }

    pub fn global_bias(&self) -> f32 {
        f32_load(&self.global_bias)
    }

    pub fn global_state(&self) -> (f32, f32) {
        (f32_load(&self.global_bias), f32_load(&self.global_acc))
    }

    pub fn events_seen(&self) -> u64 {
        self.events_seen.load(Relaxed)
    }

    /// An independent deep copy of the model.
    pub fn copy(&self) -> Result<Self> {
        let (b, a) = self.global_state();
        let m = Self::from_tables(self.cfg, self.users.copy()?, self.items.copy()?, b, a);
        m.events_seen.store(self.events_seen(), Relaxed);
        Ok(m)
    }

    /// Train on a batch of events, one optimizer step per event, in order
    /// within each thread's share (`threads > 1`: Hogwild).
    pub fn train<O: UpdateObserver>(
        &self,
        batch: &Batch<'_>,
        threads: usize,
        count_interactions: bool,
        observer: &O,
    ) -> Result<TrainStats> {
        batch.validate(self.cfg.loss)?;
        if threads == 0 {
            return Err(invalid("threads must be >= 1"));
        }
        let n = batch.users.len();
        let _pins = (self.users.begin_write(), self.items.begin_write());
        let base = self.events_seen.load(Relaxed) as i64;
        let time_of = |e: usize| match batch.timestamps {
            Some(t) => t[e],
            None => base + e as i64,
        };
        let (urows, new_users) = resolve(&self.users, batch.users, &time_of, threads, true)?;
        let (irows, new_items) = resolve(&self.items, batch.items, &time_of, threads, true)?;
        for (table, rows) in [(&self.users, &urows), (&self.items, &irows)] {
            if table.admission().is_some() {
                table.count_unadmitted(rows.iter().filter(|&&r| r == MISSING).count() as u64);
            }
        }
        self.events_seen.fetch_add(n as u64, Relaxed);
        if n == 0 {
            return Ok(TrainStats {
                new_users,
                new_items,
                ..Default::default()
            });
        }
        let parts = chunks(n, threads);
        let (gb0, ga0) = self.global_state();
        let results: Vec<(f64, f64, f32, f32, usize)> = std::thread::scope(|s| {
            let handles: Vec<_> = parts
                .iter()
                .map(|p| {
                    let p = p.clone();
                    let (urows, irows, time_of) = (&urows, &irows, &time_of);
                    s.spawn(move || {
                        let mut shard = observer.new_shard();
                        let r = self.train_range(
                            batch,
                            p,
                            urows,
                            irows,
                            time_of,
                            count_interactions,
                            (gb0, ga0),
                            observer,
                            &mut shard,
                        );
                        observer.absorb(shard);
                        r
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("training worker panicked"))
                .collect()
        });
        let mut loss_sum = 0.0;
        let mut w_sum = 0.0;
        let (mut db, mut da) = (0.0f32, 0.0f32);
        let mut unadmitted = 0;
        for (l, w, gb, ga, skipped) in results {
            loss_sum += l;
            w_sum += w;
            unadmitted += skipped;
            db += gb - gb0;
            da += ga - ga0;
        }
        if self.cfg.bias {
            f32_store(&self.global_bias, gb0 + db);
            f32_store(&self.global_acc, ga0 + da);
        }
        Ok(TrainStats {
            events: n,
            mean_loss: if w_sum > 0.0 { loss_sum / w_sum } else { 0.0 },
            new_users,
            new_items,
            unadmitted_events: unadmitted,
        })
    }

    /// One thread's share of the events: the fused loop (`train_fused`) when
    /// `dim` is a multiple of 4 (the row width a compile-time constant for
    /// the common widths), the generic loop otherwise.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn train_range<O: UpdateObserver>(
        &self,
        batch: &Batch<'_>,
        range: std::ops::Range<usize>,
        urows: &[u32],
        irows: &[u32],
        time_of: &(dyn Fn(usize) -> i64 + Sync),
        count_interactions: bool,
        global: (f32, f32),
        observer: &O,
        shard: &mut O::Shard,
    ) -> (f64, f64, f32, f32, usize) {
        use crate::kernels::simd::{Dyn, Fixed};
        let d = self.users.dim();
        #[cfg(test)]
        let d = if crate::kernels::simd::FORCE_GENERIC.load(Relaxed) {
            1
        } else {
            d
        };
        let args = (
            batch,
            range,
            urows,
            irows,
            time_of,
            count_interactions,
            global,
            observer,
            shard,
        );
        match (d % 4, d / 4) {
            (0, 2) => self.train_fused(Fixed::<2>, args),
            (0, 4) => self.train_fused(Fixed::<4>, args),
            (0, 8) => self.train_fused(Fixed::<8>, args),
            (0, 16) => self.train_fused(Fixed::<16>, args),
            (0, q) => self.train_fused(Dyn(q), args),
            _ => {
                let (batch, range, urows, irows, time_of, count, global, observer, shard) = args;
                self.train_range_generic(
                    batch, range, urows, irows, time_of, count, global, observer, shard,
                )
            }
        }
    }

    /// The fused per-event loop: rows loaded as vectors of four floats, the
    /// metadata of both rows first (their locked counter updates then wait
    /// once for the store buffer), one fused optimizer step per row
    /// (`EmbeddingTable::step_fused`). `n` is the row width in vectors. Same
    /// results as `train_range_generic`, bit for bit.
    #[inline(always)]
    #[allow(clippy::type_complexity)]
    fn train_fused<W: crate::kernels::simd::Width, O: UpdateObserver>(
        &self,
        n: W,
        (batch, range, urows, irows, time_of, count_interactions, global, observer, shard): (
            &Batch<'_>,
            std::ops::Range<usize>,
            &[u32],
            &[u32],
            &(dyn Fn(usize) -> i64 + Sync),
            bool,
            (f32, f32),
            &O,
            &mut O::Shard,
        ),
    ) -> (f64, f64, f32, f32, usize) {
        use crate::kernels::simd::{self, Prepared, F4};
        use crate::storage::table::{meta, unpack_bias};
        let (users, items) = (&*self.users, &*self.items);
        let q = n.get();
        debug_assert_eq!(4 * q, users.dim());
        let mut buf = vec![F4::zero(); 6 * q];
        let (uv, rest) = buf.split_at_mut(q);
        let (iv, rest) = rest.split_at_mut(q);
        let (gu, rest) = rest.split_at_mut(q);
        let (gi, rest) = rest.split_at_mut(q);
        let (ou, oi) = rest.split_at_mut(q);
        let (pu, pi) = (
            Prepared::new(users.optimizer()),
            Prepared::new(items.optimizer()),
        );
        let (mut gb, mut ga) = global;
        let (mut loss_sum, mut w_sum) = (0.0f64, 0.0f64);
        let opt = users.optimizer();
        let end = range.end;
        let mut skipped = 0;
        for e in range {
            if e + PREFETCH < end {
                users.prefetch(urows[e + PREFETCH]);
                items.prefetch(irows[e + PREFETCH]);
            }
            let (u, i) = (urows[e], irows[e]);
            if u == MISSING || i == MISSING {
                skipped += 1;
                continue;
            }
            let (uc, ic) = (users.row_cells(u), items.row_cells(i));
            simd::load_row(n, uc.weights, uv);
            simd::load_row(n, ic.weights, iv);
            let mut score = simd::dot_optim(uv, iv);
            if self.cfg.bias {
                let bias = |c: &crate::storage::table::RowCells<'_>| {
                    unpack_bias(c.meta[meta::BIAS].load(Relaxed)).0
                };
                score += gb + bias(&uc) + bias(&ic);
            }
            let w = batch.weights.map_or(1.0, |w| w[e]);
            let (loss, g) = self.cfg.loss.value_and_grad(score, batch.labels[e]);
            loss_sum += f64::from(w * loss);
            w_sum += f64::from(w);
            let g = g * w;
            let gs = F4::splat(g);
            for k in 0..q {
                gu[k] = gs * iv[k];
                gi[k] = gs * uv[k];
            }
            let t = time_of(e);
            users.touch_meta(uc.meta, t, count_interactions);
            let count = items.touch_meta(ic.meta, t, count_interactions);
            users.step_fused(&pu, n, uc, uv, gu, ou);
            items.step_fused(&pi, n, ic, iv, gi, oi);
            if self.cfg.bias {
                users.bias_step_meta(uc.meta, g);
                items.bias_step_meta(ic.meta, g);
                opt.step_scalar(&mut gb, g, &mut ga);
            }
            observer.observe(
                shard,
                &RowUpdate {
                    id: batch.items[e],
                    row: i,
                    interactions: count,
                    first_seen: crate::storage::table::dec_time(
                        ic.meta[meta::FIRST_SEEN].load(Relaxed),
                    ),
                    timestamp: t,
                    before: simd::as_floats(iv),
                    after: simd::as_floats(oi),
                },
            );
        }
        (loss_sum, w_sum, gb, ga, skipped)
    }

    /// The generic per-event loop (any `dim`; the fused loop needs a
    /// multiple of 4): `apply_step` per row.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn train_range_generic<O: UpdateObserver>(
        &self,
        batch: &Batch<'_>,
        range: std::ops::Range<usize>,
        urows: &[u32],
        irows: &[u32],
        time_of: &(dyn Fn(usize) -> i64 + Sync),
        count_interactions: bool,
        global: (f32, f32),
        observer: &O,
        shard: &mut O::Shard,
    ) -> (f64, f64, f32, f32, usize) {
        let (users, items) = (&*self.users, &*self.items);
        let d = users.dim();
        let mut buf = vec![0.0f32; 6 * d];
        let (uv, rest) = buf.split_at_mut(d);
        let (iv, rest) = rest.split_at_mut(d);
        let (gu, rest) = rest.split_at_mut(d);
        let (gi, rest) = rest.split_at_mut(d);
        let (before, scratch) = rest.split_at_mut(d);
        let (mut gb, mut ga) = global;
        let (mut loss_sum, mut w_sum) = (0.0f64, 0.0f64);
        let opt = users.optimizer();
        let end = range.end;
        let mut skipped = 0;
        for e in range {
            if e + PREFETCH < end {
                users.prefetch(urows[e + PREFETCH]);
                items.prefetch(irows[e + PREFETCH]);
            }
            let (u, i) = (urows[e], irows[e]);
            if u == MISSING || i == MISSING {
                skipped += 1;
                continue;
            }
            users.load_row(u, uv);
            items.load_row(i, iv);
            let mut score = crate::kernels::optim::dot(uv, iv);
            if self.cfg.bias {
                score += gb + users.bias(u) + items.bias(i);
            }
            let w = batch.weights.map_or(1.0, |w| w[e]);
            let (loss, g) = self.cfg.loss.value_and_grad(score, batch.labels[e]);
            loss_sum += f64::from(w * loss);
            w_sum += f64::from(w);
            let g = g * w;
            for k in 0..d {
                gu[k] = g * iv[k];
                gi[k] = g * uv[k];
            }
            before.copy_from_slice(iv);
            users.apply_step(u, uv, gu, scratch);
            items.apply_step(i, iv, gi, scratch);
            if self.cfg.bias {
                users.apply_bias_step(u, g);
                items.apply_bias_step(i, g);
                opt.step_scalar(&mut gb, g, &mut ga);
            }
            let t = time_of(e);
            users.touch(u, t, count_interactions);
            let count = items.touch(i, t, count_interactions);
            let m = items.meta(i);
            observer.observe(
                shard,
                &RowUpdate {
                    id: batch.items[e],
                    row: i,
                    interactions: count,
                    first_seen: crate::storage::table::dec_time(
                        m[crate::storage::table::meta::FIRST_SEEN].load(Relaxed),
                    ),
                    timestamp: t,
                    before,
                    after: iv,
                },
            );
        }
        (loss_sum, w_sum, gb, ga, skipped)
    }

    /// Scores of (user, item) pairs from the current tables, read-only.
    /// Unknown ids are never inserted: an unknown side contributes a zero
    /// vector and a zero bias, so a pair with an unknown id scores the global
    /// bias plus the known side's bias.
    pub fn score(&self, users: &[u64], items: &[u64], out: &mut [f32]) -> Result<()> {
        if users.len() != items.len() || out.len() != users.len() {
            return Err(invalid(format!(
                "users has {} elements but items has {}",
                users.len(),
                items.len()
            )));
        }
        let (ut, it) = (&*self.users, &*self.items);
        let _pins = (ut.pin(), it.pin());
        let (gu, gi) = (ut.guard(), it.guard());
        let d = ut.dim();
        let mut uv = vec![0.0f32; d];
        let mut iv = vec![0.0f32; d];
        let gb = if self.cfg.bias {
            self.global_bias()
        } else {
            0.0
        };
        for (k, o) in out.iter_mut().enumerate() {
            let (ur, ir) = (ut.lookup(&gu, users[k]), it.lookup(&gi, items[k]));
            let mut s = gb;
            if let (Some(u), Some(i)) = (ur, ir) {
                ut.load_row(u, &mut uv);
                it.load_row(i, &mut iv);
                s += crate::kernels::optim::dot(&uv, &iv);
            }
            if self.cfg.bias {
                s += ur.map_or(0.0, |u| ut.bias(u)) + ir.map_or(0.0, |i| it.bias(i));
            }
            *o = s;
        }
        Ok(())
    }
}

impl MatrixFactorization {
    /// Set the event count (the default event time of the next event), e.g.
    /// when a saved model is loaded.
    pub fn set_events_seen(&self, n: u64) {
        self.events_seen.store(n, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::optim::{Optimizer, OptimizerKind};

    fn model(kind: OptimizerKind) -> MatrixFactorization {
        let mut t = TableConfig::new(4);
        t.capacity = 1000;
        t.optimizer = Optimizer {
            kind,
            learning_rate: 0.1,
            ..Default::default()
        };
        MatrixFactorization::new(MfConfig {
            table: t,
            loss: Loss::Logistic,
            bias: true,
        })
        .unwrap()
    }

    fn batch<'a>(u: &'a [u64], i: &'a [u64], y: &'a [f32]) -> Batch<'a> {
        Batch {
            users: u,
            items: i,
            labels: y,
            weights: None,
            timestamps: None,
        }
    }

    #[test]
    fn learns_a_separable_pattern() {
        let m = model(OptimizerKind::Adagrad);
        let users: Vec<u64> = (0..2000).map(|k| k % 10).collect();
        let items: Vec<u64> = (0..2000).map(|k| (k / 10) % 10).collect();
        let labels: Vec<f32> = users
            .iter()
            .zip(&items)
            .map(|(u, i)| ((u + i) % 2) as f32)
            .collect();
        let mut last = f64::INFINITY;
        for _ in 0..20 {
            last = m
                .train(&batch(&users, &items, &labels), 1, true, &NoObserver)
                .unwrap()
                .mean_loss;
        }
        assert!(last < 0.3, "loss {last}");
    }

    #[test]
    fn validation_changes_nothing() {
        let m = model(OptimizerKind::Sgd);
        let err = m.train(&batch(&[1, 2], &[3], &[1.0, 0.0]), 1, true, &NoObserver);
        assert!(err.is_err());
        let err = m.train(&batch(&[1], &[3], &[2.0]), 1, true, &NoObserver);
        assert!(err.is_err());
        assert_eq!(m.users.len() + m.items.len(), 0);
        assert_eq!(m.events_seen(), 0);
    }

    #[test]
    fn losses() {
        let (l, g) = Loss::Logistic.value_and_grad(0.0, 1.0);
        assert!((l - std::f32::consts::LN_2).abs() < 1e-6 && (g + 0.5).abs() < 1e-6);
        let (l, g) = Loss::Logistic.value_and_grad(-100.0, 1.0);
        assert!(l.is_finite() && (l - 100.0).abs() < 1e-3 && (g + 1.0).abs() < 1e-6);
        assert_eq!(Loss::Squared.value_and_grad(3.0, 1.0), (2.0, 2.0));
    }

    #[test]
    fn fast_log1p_is_accurate() {
        for k in 0..=1000 {
            let z = k as f32 / 1000.0;
            assert!((ln_1p_unit(z) - z.ln_1p()).abs() < 1e-6, "z={z}");
        }
    }
}
