//! Field-aware factorisation machines (FFM) and factorisation machines (FM)
//! over one embedding table per field, trained one event at a time, Hogwild
//! across threads exactly like `mf`.
//!
//! Design notes.
//! * Row layout. Every field has its own table; a feature (one id of field
//!   i) is one row of that table. FM rows are `dim` wide. FFM rows hold the
//!   feature's field-aware blocks side by side, one `dim`-wide block per
//!   *other* field, in field order with the own field skipped: block
//!   `block_index(i, j) = j - (j > i)` is the vector used against field j.
//!   Dropping the own-field block (the paper stores it, unused) saves
//!   1/n_fields of the memory and bandwidth, keeps L2, max-norm and row-wise
//!   Adagrad from acting on a vector no score uses, and makes a two-field
//!   FFM row exactly an MF row. The table's optimizer state covers the whole
//!   row, so one `apply_step` per feature per event updates every block
//!   (blocks whose gradient is zero are left unchanged by SGD and Adagrad;
//!   row-wise Adagrad averages the squared gradient over the whole row).
//!   The linear term is the row bias (`apply_bias_step`).
//! * Gradients are computed from the rows as loaded, for every field, before
//!   any row is written: the step equals the textbook simultaneous update.
//! * Everything is validated, and the capacity of every field's table is
//!   checked, before the first row is created: a failing call changes
//!   nothing. Then ids are resolved per field (`mf::resolve`) and trained.
//! * The global bias is trained on a per-thread copy and merged once at the
//!   end of the call, as in `mf` (with one thread: the sequential result).
//! * Hot path: when `dim` is a multiple of 4, `train_fused` runs the event
//!   loop on vectors of four floats with one fused optimizer pass per row
//!   (`crate::kernels::simd`), the field count and widths compile-time constants
//!   for the common shapes, and the rows' metadata counters updated together
//!   before the row stores; otherwise `train_generic`. Both give the same
//!   results bit for bit (tested in `fused`).

use crate::error::{invalid, Result};
use crate::kernels::parallel::chunks;
use crate::kernels::simd::{self, Dyn, Fixed, Width, F4};
use crate::storage::table::{
    dec_time, f32_load, f32_store, meta, unpack_bias, EmbeddingTable, RowCells, TableConfig,
};
use crate::train::mf::{resolve, Loss, RowUpdate, UpdateObserver, MISSING};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
use std::sync::Arc;

/// How the features of one event interact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interaction {
    /// FFM: Σ_{i<j} ⟨w_{i, field j}, w_{j, field i}⟩.
    FieldAware,
    /// FM: Σ_{i<j} ⟨v_i, v_j⟩.
    Plain,
}

impl Interaction {
    pub fn name(self) -> &'static str {
        match self {
            Interaction::FieldAware => "field_aware",
            Interaction::Plain => "plain",
        }
    }
}

/// Everything that defines a field model apart from its contents.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldConfig {
    pub fields: Vec<String>,
    pub interaction: Interaction,
    /// Width of one latent vector (one FFM block, or the FM vector).
    /// `table.dim` is ignored; the tables get `row_dim()`.
    pub table: TableConfig,
    pub loss: Loss,
    pub bias: bool,
}

impl FieldConfig {
    pub fn dim(&self) -> usize {
        self.table.dim
    }

    /// Width of a table row: `dim` for FM, `dim × (n_fields − 1)` for FFM.
    pub fn row_dim(&self) -> usize {
        match self.interaction {
            Interaction::FieldAware => self.table.dim * (self.fields.len().max(2) - 1),
            Interaction::Plain => self.table.dim,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.fields.len() < 2 {
            return Err(invalid(format!(
                "a factorisation machine needs at least 2 fields, got {} ({}); \
                 pass fields=['user', 'item', ...]",
                self.fields.len(),
                field_list(&self.fields)
            )));
        }
        for (k, f) in self.fields.iter().enumerate() {
            if f.is_empty() {
                return Err(invalid(format!("fields[{k}] is an empty name")));
            }
            if let Some(j) = self.fields[..k].iter().position(|g| g == f) {
                return Err(invalid(format!(
                    "field '{f}' appears twice (fields[{j}] and fields[{k}]); \
                     field names must be distinct"
                )));
            }
        }
        self.table.validate()?;
        TableConfig {
            dim: self.row_dim(),
            ..self.table
        }
        .validate()
    }

    /// Index of field `name`, or an error listing the fields.
    pub fn field_index(&self, name: &str) -> Result<usize> {
        self.fields.iter().position(|f| f == name).ok_or_else(|| {
            invalid(format!(
                "unknown field '{name}'; this model's fields are {}",
                field_list(&self.fields)
            ))
        })
    }
}

/// `['user', 'item']`: field names the way Python prints them, for messages.
pub fn field_list(fields: &[String]) -> String {
    let quoted: Vec<String> = fields.iter().map(|f| format!("'{f}'")).collect();
    format!("[{}]", quoted.join(", "))
}

/// Position, within a row of field `own`, of the block used against field
/// `other` (FFM; `own != other`).
#[inline(always)]
pub fn block_index(own: usize, other: usize) -> usize {
    other - usize::from(other > own)
}

/// Borrowed, not-yet-validated arguments of one `train` call: one id column
/// per field, in field order.
pub struct FieldBatch<'a> {
    pub columns: &'a [&'a [u64]],
    pub labels: &'a [f32],
    pub weights: Option<&'a [f32]>,
    pub timestamps: Option<&'a [i64]>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldStats {
    pub events: usize,
    pub mean_loss: f64,
    /// Rows created per field, in field order.
    pub new_features: Vec<usize>,
}

/// Which vector of which field an observer sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    pub field: usize,
    /// FFM: the block against this field; `None` = the whole row (all blocks).
    pub against: Option<usize>,
}

const PREFETCH: usize = 8;

pub struct FieldModel {
    pub cfg: FieldConfig,
    pub tables: Vec<Arc<EmbeddingTable>>,
    global_bias: AtomicU32,
    global_acc: AtomicU32,
    events_seen: AtomicU64,
}

/// Sum of products, eight independent lanes so that it vectorises.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s = ra.iter().zip(rb).map(|(x, y)| x * y).sum::<f32>();
    for v in acc {
        s += v;
    }
    s
}

impl FieldModel {
    pub fn new(cfg: FieldConfig) -> Result<Self> {
        let n = cfg.fields.len();
        Self::with_lifecycles(cfg, vec![None; n])
    }

    /// A model whose field tables have lifecycles (admission, TTL, size
    /// limits): `lifecycles[k]` for field k, `None` = no lifecycle. Events
    /// with a feature not yet admitted are counted on that table
    /// (`unadmitted_events`) and not trained on, as in `mf`.
    pub fn with_lifecycles(
        cfg: FieldConfig,
        lifecycles: Vec<Option<crate::storage::lifecycle::Lifecycle>>,
    ) -> Result<Self> {
        cfg.validate()?;
        if lifecycles.len() != cfg.fields.len() {
            return Err(invalid(format!(
                "got {} lifecycles for {} fields",
                lifecycles.len(),
                cfg.fields.len()
            )));
        }
        let tables = (0..cfg.fields.len())
            .map(|k| {
                let seed = if k == 0 {
                    cfg.table.seed
                } else {
                    crate::kernels::rng::mix64(
                        cfg.table.seed ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    )
                };
                let t = TableConfig {
                    dim: cfg.row_dim(),
                    seed,
                    ..cfg.table
                };
                match lifecycles[k] {
                    Some(lc) => EmbeddingTable::with_lifecycle(t, lc),
                    None => EmbeddingTable::new(t),
                }
                .map(Arc::new)
            })
            .collect::<Result<Vec<_>>>()?;
        let acc0 = cfg.table.optimizer.initial_accumulator;
        Ok(FieldModel {
            cfg,
            tables,
            global_bias: AtomicU32::new(0f32.to_bits()),
            global_acc: AtomicU32::new(acc0.to_bits()),
            events_seen: AtomicU64::new(0),
        })
    }

    /// An independent deep copy: every table (compacted, with its optimizer
    /// state and metadata), the global bias and the event count.
    pub fn copy(&self) -> Result<Self> {
        let tables = self
            .tables
            .iter()
            .map(|t| t.copy().map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        Ok(FieldModel {
            cfg: self.cfg.clone(),
            tables,
            global_bias: AtomicU32::new(self.global_bias.load(Relaxed)),
            global_acc: AtomicU32::new(self.global_acc.load(Relaxed)),
            events_seen: AtomicU64::new(self.events_seen()),
        })
    }

    pub fn n_fields(&self) -> usize {
        self.cfg.fields.len()
    }

    pub fn global_bias(&self) -> f32 {
        f32_load(&self.global_bias)
    }

    pub fn events_seen(&self) -> u64 {
        self.events_seen.load(Relaxed)
    }

    /// Offset and width, within a row of `o.field`, of the observed vector.
    pub fn observed_span(&self, o: Observed) -> Result<(usize, usize)> {
        let nf = self.n_fields();
        if o.field >= nf {
            return Err(invalid(format!("field index {} out of range", o.field)));
        }
        let d = self.cfg.dim();
        match (self.cfg.interaction, o.against) {
            (_, None) => Ok((0, self.cfg.row_dim())),
            (Interaction::Plain, Some(_)) => Err(invalid(
                "a factorisation machine has one vector per feature; pass against=None",
            )),
            (Interaction::FieldAware, Some(j)) if j >= nf => {
                Err(invalid(format!("field index {j} out of range")))
            }
            (Interaction::FieldAware, Some(j)) if j == o.field => Err(invalid(format!(
                "field '{}' keeps no block against itself; pass against= one of the other \
                 fields, or None for all blocks",
                self.cfg.fields[j]
            ))),
            (Interaction::FieldAware, Some(j)) => Ok((block_index(o.field, j) * d, d)),
        }
    }

    /// Ids of the rows of `o.field` in row order, and the observed vector of
    /// each row (row-major, `width` floats per row): (ids, values, width).
    pub fn embeddings(&self, o: Observed) -> Result<(Vec<u64>, Vec<f32>, usize)> {
        let (off, len) = self.observed_span(o)?;
        let t = &self.tables[o.field];
        // Live rows only (a table with a lifecycle has evicted rows), ids and
        // values from the same row list, rows pinned against reuse meanwhile.
        let _pin = t.pin();
        let rows = t.live_rows();
        let mut ids = Vec::with_capacity(rows.len());
        let mut values = Vec::with_capacity(rows.len() * len);
        for &r in &rows {
            ids.push(t.meta(r)[meta::ID].load(Relaxed));
            values.extend(t.row(r)[off..off + len].iter().map(f32_load));
        }
        Ok((ids, values, len))
    }

    fn validate(&self, b: &FieldBatch<'_>) -> Result<usize> {
        let names = &self.cfg.fields;
        if b.columns.len() != names.len() {
            return Err(invalid(format!(
                "got {} id columns but the model has {} fields {}; pass one column per field",
                b.columns.len(),
                names.len(),
                field_list(names)
            )));
        }
        let n = b.columns[0].len();
        let check_len = |name: &str, len: usize| {
            if len != n {
                Err(invalid(format!(
                    "columns['{}'] has {n} elements but {name} has {len}; \
                     every column and labels/weights/timestamps need one entry per event",
                    names[0]
                )))
            } else {
                Ok(())
            }
        };
        for (f, c) in names.iter().zip(b.columns).skip(1) {
            check_len(&format!("columns['{f}']"), c.len())?;
        }
        crate::train::mf::validate_targets(
            &check_len,
            b.labels,
            b.weights,
            b.timestamps,
            self.cfg.loss,
        )?;
        Ok(n)
    }

    /// Fails, naming the field, when some table cannot hold the new ids of
    /// this call. Cheap unless a column is longer than the room left.
    fn check_capacity(&self, b: &FieldBatch<'_>) -> Result<()> {
        for ((t, col), name) in self.tables.iter().zip(b.columns).zip(&self.cfg.fields) {
            if col.len() <= t.remaining() {
                continue;
            }
            let g = t.guard();
            let mut missing: Vec<u64> = col
                .iter()
                .copied()
                .filter(|&id| t.lookup(&g, id).is_none())
                .collect();
            missing.sort_unstable();
            missing.dedup();
            if missing.len() > t.remaining() {
                return Err(invalid(format!(
                    "field '{name}' needs {} new rows but its table has room for {} more \
                     (capacity {}); create the model with a larger capacity=",
                    missing.len(),
                    t.remaining(),
                    t.capacity()
                )));
            }
        }
        Ok(())
    }

    /// Train on a batch of events, one optimizer step per event, in order
    /// within each thread's share (`threads > 1`: Hogwild). `observed`
    /// chooses the vector the observer sees.
    pub fn train<O: UpdateObserver>(
        &self,
        batch: &FieldBatch<'_>,
        threads: usize,
        count_interactions: bool,
        observer: &O,
        observed: Observed,
    ) -> Result<FieldStats> {
        let n = self.validate(batch)?;
        if threads == 0 {
            return Err(invalid("threads must be >= 1"));
        }
        let span = self.observed_span(observed)?;
        self.check_capacity(batch)?;
        // Pin every table for the call (evicted rows are not reused under us)
        // and tag the rows it changes with a new version.
        let _pins: Vec<_> = self.tables.iter().map(|t| t.begin_write()).collect();
        let base = self.events_seen.load(Relaxed) as i64;
        let time_of = |e: usize| match batch.timestamps {
            Some(t) => t[e],
            None => base + e as i64,
        };
        let mut rows = Vec::with_capacity(self.n_fields());
        let mut new_features = Vec::with_capacity(self.n_fields());
        for (t, col) in self.tables.iter().zip(batch.columns) {
            let (r, created) = resolve(t, col, &time_of, threads, true)?;
            if t.admission().is_some() {
                t.count_unadmitted(r.iter().filter(|&&x| x == MISSING).count() as u64);
            }
            rows.push(r);
            new_features.push(created);
        }
        self.events_seen.fetch_add(n as u64, Relaxed);
        if n == 0 {
            return Ok(FieldStats {
                new_features,
                ..Default::default()
            });
        }
        let (gb0, ga0) = (f32_load(&self.global_bias), f32_load(&self.global_acc));
        let results: Vec<(f64, f64, f32, f32)> = std::thread::scope(|s| {
            let handles: Vec<_> = chunks(n, threads)
                .into_iter()
                .map(|p| {
                    let (rows, time_of) = (&rows, &time_of);
                    s.spawn(move || {
                        let mut shard = observer.new_shard();
                        let r = self.train_range(
                            batch,
                            p,
                            rows,
                            time_of,
                            count_interactions,
                            (gb0, ga0),
                            (observed.field, span, observer, &mut shard),
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
        let (mut loss_sum, mut w_sum) = (0.0, 0.0);
        let (mut db, mut da) = (0.0f32, 0.0f32);
        for (l, w, gb, ga) in results {
            loss_sum += l;
            w_sum += w;
            db += gb - gb0;
            da += ga - ga0;
        }
        if self.cfg.bias {
            f32_store(&self.global_bias, gb0 + db);
            f32_store(&self.global_acc, ga0 + da);
        }
        Ok(FieldStats {
            events: n,
            mean_loss: if w_sum > 0.0 { loss_sum / w_sum } else { 0.0 },
            new_features,
        })
    }

    /// Interaction part of the score of the rows loaded side by side in `x`
    /// (`n_fields × row_dim`). FM leaves Σ v_i in `sum` for `gradients`.
    #[inline(always)]
    fn interactions(&self, x: &[f32], sum: &mut [f32]) -> f32 {
        let nf = self.n_fields();
        let d = self.cfg.dim();
        let w = self.cfg.row_dim();
        match self.cfg.interaction {
            Interaction::FieldAware => {
                let mut s = 0.0f32;
                for i in 0..nf {
                    for j in (i + 1)..nf {
                        let a = i * w + block_index(i, j) * d;
                        let b = j * w + block_index(j, i) * d;
                        s += dot(&x[a..a + d], &x[b..b + d]);
                    }
                }
                s
            }
            Interaction::Plain => {
                // Σ_{i<j} ⟨v_i, v_j⟩ = ½(‖Σ v_i‖² − Σ ‖v_i‖²): O(n_fields · dim).
                sum.copy_from_slice(&x[..d]);
                let mut sq = dot(&x[..d], &x[..d]);
                for v in x[d..nf * d].chunks_exact(d) {
                    for (a, b) in sum.iter_mut().zip(v) {
                        *a += b;
                    }
                    sq += dot(v, v);
                }
                0.5 * (dot(sum, sum) - sq)
            }
        }
    }

    /// `grad` (same layout as `x`) = g × ∂(interactions)/∂x.
    #[inline(always)]
    fn gradients(&self, x: &[f32], sum: &[f32], g: f32, grad: &mut [f32]) {
        let nf = self.n_fields();
        let d = self.cfg.dim();
        let w = self.cfg.row_dim();
        match self.cfg.interaction {
            Interaction::FieldAware => {
                // ∂/∂w_{i, field j} = w_{j, field i}.
                for i in 0..nf {
                    for j in (i + 1)..nf {
                        let a = i * w + block_index(i, j) * d;
                        let b = j * w + block_index(j, i) * d;
                        let (ga, gb) = grad.split_at_mut(b);
                        let (ga, gb) = (&mut ga[a..a + d], &mut gb[..d]);
                        let (xa, xb) = (&x[a..a + d], &x[b..b + d]);
                        for k in 0..d {
                            ga[k] = g * xb[k];
                            gb[k] = g * xa[k];
                        }
                    }
                }
            }
            Interaction::Plain => {
                // ∂/∂v_i = Σ v − v_i.
                for (gi, vi) in grad[..nf * d].chunks_exact_mut(d).zip(x.chunks_exact(d)) {
                    for ((gk, sk), vk) in gi.iter_mut().zip(sum).zip(vi) {
                        *gk = g * (sk - vk);
                    }
                }
            }
        }
    }

    /// `interactions` on rows held as vectors (`blk` = vectors per block,
    /// `dim / 4`): the same operations in the same order, so the same
    /// result bit for bit (see `simd::dot_ffm`).
    #[inline(always)]
    fn interactions_f4<N: Width, B: Width>(&self, nf: N, blk: B, x: &[F4], sum: &mut [F4]) -> f32 {
        let nf = nf.get();
        let q = blk.get();
        match self.cfg.interaction {
            Interaction::FieldAware => {
                let w = q * (nf - 1);
                // A compile-time length when the widths are: no bounds checks.
                let x = &x[..nf * w];
                let mut s = 0.0f32;
                for i in 0..nf {
                    for j in (i + 1)..nf {
                        let a = i * w + block_index(i, j) * q;
                        let b = j * w + block_index(j, i) * q;
                        s += simd::dot_ffm(&x[a..][..q], &x[b..][..q]);
                    }
                }
                s
            }
            Interaction::Plain => {
                let x = &x[..nf * q];
                let sum = &mut sum[..q];
                sum.copy_from_slice(&x[..q]);
                let mut sq = simd::dot_ffm(&x[..q], &x[..q]);
                for v in x[q..nf * q].chunks_exact(q) {
                    let v = &v[..q];
                    for (a, b) in sum.iter_mut().zip(v) {
                        *a = *a + *b;
                    }
                    sq += simd::dot_ffm(v, v);
                }
                0.5 * (simd::dot_ffm(sum, sum) - sq)
            }
        }
    }

    /// `gradients` on rows held as vectors (see `interactions_f4`).
    #[inline(always)]
    fn gradients_f4<N: Width, B: Width>(
        &self,
        nf: N,
        blk: B,
        x: &[F4],
        sum: &[F4],
        g: f32,
        grad: &mut [F4],
    ) {
        let nf = nf.get();
        let q = blk.get();
        let gs = F4::splat(g);
        match self.cfg.interaction {
            Interaction::FieldAware => {
                let w = q * (nf - 1);
                let (x, grad) = (&x[..nf * w], &mut grad[..nf * w]);
                for i in 0..nf {
                    for j in (i + 1)..nf {
                        let a = i * w + block_index(i, j) * q;
                        let b = j * w + block_index(j, i) * q;
                        for k in 0..q {
                            grad[a + k] = gs * x[b + k];
                            grad[b + k] = gs * x[a + k];
                        }
                    }
                }
            }
            Interaction::Plain => {
                let (x, sum) = (&x[..nf * q], &sum[..q]);
                for (gi, vi) in grad[..nf * q].chunks_exact_mut(q).zip(x.chunks_exact(q)) {
                    for ((gk, sk), vk) in gi[..q].iter_mut().zip(sum).zip(&vi[..q]) {
                        *gk = gs * (*sk - *vk);
                    }
                }
            }
        }
    }

    /// Train on events `range` of the batch (one thread's share): the fused
    /// loop (`train_fused`) when `dim` is a multiple of 4, with the block
    /// and row widths as compile-time constants for the common shapes; the
    /// generic loop otherwise.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn train_range<O: UpdateObserver>(
        &self,
        batch: &FieldBatch<'_>,
        range: std::ops::Range<usize>,
        rows: &[Vec<u32>],
        time_of: &(dyn Fn(usize) -> i64 + Sync),
        count_interactions: bool,
        global: (f32, f32),
        obs: (usize, (usize, usize), &O, &mut O::Shard),
    ) -> (f64, f64, f32, f32) {
        let nf = self.n_fields();
        let d = self.cfg.dim();
        #[cfg(test)]
        let d = if simd::FORCE_GENERIC.load(Relaxed) {
            1
        } else {
            d
        };
        if d % 4 != 0 {
            return self.train_generic(
                batch,
                range,
                rows,
                time_of,
                count_interactions,
                global,
                obs,
            );
        }
        let q = d / 4;
        let args = (batch, range, rows, time_of, count_interactions, global, obs);
        use Interaction::{FieldAware as Ffm, Plain as Fm};
        match (self.cfg.interaction, nf, q) {
            (Ffm, 3, 2) => self.train_fused(Fixed::<3>, Fixed::<2>, Fixed::<4>, args),
            (Ffm, 4, 2) => self.train_fused(Fixed::<4>, Fixed::<2>, Fixed::<6>, args),
            (Ffm, 5, 2) => self.train_fused(Fixed::<5>, Fixed::<2>, Fixed::<8>, args),
            (Ffm, 4, 1) => self.train_fused(Fixed::<4>, Fixed::<1>, Fixed::<3>, args),
            (Ffm, 4, 4) => self.train_fused(Fixed::<4>, Fixed::<4>, Fixed::<12>, args),
            (Ffm, _, 1) => self.train_fused(Dyn(nf), Fixed::<1>, Dyn(nf - 1), args),
            (Ffm, _, 2) => self.train_fused(Dyn(nf), Fixed::<2>, Dyn(2 * (nf - 1)), args),
            (Ffm, _, 4) => self.train_fused(Dyn(nf), Fixed::<4>, Dyn(4 * (nf - 1)), args),
            (Ffm, _, 8) => self.train_fused(Dyn(nf), Fixed::<8>, Dyn(8 * (nf - 1)), args),
            (Ffm, _, q) => self.train_fused(Dyn(nf), Dyn(q), Dyn(q * (nf - 1)), args),
            (Fm, 4, 8) => self.train_fused(Fixed::<4>, Fixed::<8>, Fixed::<8>, args),
            (Fm, _, 2) => self.train_fused(Dyn(nf), Fixed::<2>, Fixed::<2>, args),
            (Fm, _, 4) => self.train_fused(Dyn(nf), Fixed::<4>, Fixed::<4>, args),
            (Fm, _, 8) => self.train_fused(Dyn(nf), Fixed::<8>, Fixed::<8>, args),
            (Fm, _, 16) => self.train_fused(Dyn(nf), Fixed::<16>, Fixed::<16>, args),
            (Fm, _, q) => self.train_fused(Dyn(nf), Dyn(q), Dyn(q), args),
        }
    }

    /// The fused per-event loop: load the rows (as vectors of four floats),
    /// score, gradients from the rows as loaded, the metadata of every row,
    /// then per row one fused optimizer step (`step_fused`) and the bias
    /// step. `blk` is the block width and `roww` the row width, in vectors.
    /// Same results as `train_generic`, bit for bit.
    #[inline(always)]
    #[allow(clippy::type_complexity)]
    fn train_fused<N: Width, B: Width, R: Width, O: UpdateObserver>(
        &self,
        n_fields: N,
        blk: B,
        roww: R,
        (
            batch,
            range,
            rows,
            time_of,
            count_interactions,
            global,
            (obs_field, (obs_off, obs_len), observer, shard),
        ): (
            &FieldBatch<'_>,
            std::ops::Range<usize>,
            &[Vec<u32>],
            &(dyn Fn(usize) -> i64 + Sync),
            bool,
            (f32, f32),
            (usize, (usize, usize), &O, &mut O::Shard),
        ),
    ) -> (f64, f64, f32, f32) {
        let nf = n_fields.get();
        let w = roww.get();
        debug_assert_eq!(
            (nf, 4 * blk.get(), 4 * w),
            (self.n_fields(), self.cfg.dim(), self.cfg.row_dim())
        );
        let tables: Vec<&EmbeddingTable> = self.tables.iter().map(|t| &**t).collect();
        let (tables, rows) = (&tables[..nf], &rows[..nf]);
        let (mut rs, mut counts) = (vec![0u32; nf], vec![0u64; nf]);
        let (mut x, mut grad) = (vec![F4::zero(); nf * w], vec![F4::zero(); nf * w]);
        let (mut out, mut sum) = (vec![F4::zero(); w], vec![F4::zero(); blk.get()]);
        // Compile-time lengths when the widths are (fewer bounds checks).
        let (rs, counts) = (&mut rs[..nf], &mut counts[..nf]);
        let (x, grad) = (&mut x[..nf * w], &mut grad[..nf * w]);
        let (out, sum) = (&mut out[..w], &mut sum[..blk.get()]);
        let mut cells: Vec<RowCells<'_>> = Vec::with_capacity(nf);
        let opt = *tables[0].optimizer();
        let prepared: Vec<simd::Prepared> = tables
            .iter()
            .map(|t| simd::Prepared::new(t.optimizer()))
            .collect();
        let prepared = &prepared[..nf];
        let bias = self.cfg.bias;
        let (mut gb, mut ga) = global;
        let (mut loss_sum, mut w_sum) = (0.0f64, 0.0f64);
        let end = range.end;
        for e in range {
            if e + PREFETCH < end {
                for (t, r) in tables.iter().zip(rows) {
                    t.prefetch(r[e + PREFETCH]);
                }
            }
            let mut missing = false;
            for (slot, r) in rs.iter_mut().zip(rows) {
                *slot = r[e];
                missing |= *slot == MISSING;
            }
            if missing {
                // A feature not admitted yet (lifecycle `min_count`): counted
                // on its table, the event is not trained on.
                continue;
            }
            cells.clear();
            for ((t, &r), xf) in tables.iter().zip(rs.iter()).zip(x.chunks_exact_mut(w)) {
                let c = t.row_cells(r);
                simd::load_row(roww, c.weights, xf);
                cells.push(c);
            }
            let mut score = self.interactions_f4(n_fields, blk, x, sum);
            if bias {
                let mut linear = gb;
                for c in &cells {
                    linear += unpack_bias(c.meta[meta::BIAS].load(Relaxed)).0;
                }
                score += linear;
            }
            let wt = batch.weights.map_or(1.0, |w| w[e]);
            let (loss, g) = self.cfg.loss.value_and_grad(score, batch.labels[e]);
            loss_sum += f64::from(wt * loss);
            w_sum += f64::from(wt);
            let g = g * wt;
            self.gradients_f4(n_fields, blk, x, sum, g, grad);
            let t_e = time_of(e);
            // The metadata of all rows first: the counters' locked
            // read-modify-writes each wait for the store buffer to drain, so
            // grouping them before this event's row stores makes that one
            // wait per event instead of one per row.
            for ((n, t), c) in counts.iter_mut().zip(tables).zip(&cells) {
                *n = t.touch_meta(c.meta, t_e, count_interactions);
            }
            for (f, ((((t, p), c), xf), gf)) in tables
                .iter()
                .zip(prepared)
                .zip(&cells)
                .zip(x.chunks_exact(w))
                .zip(grad.chunks_exact_mut(w))
                .enumerate()
            {
                t.step_fused(p, roww, *c, xf, gf, out);
                if bias {
                    t.bias_step_meta(c.meta, g);
                }
                if f == obs_field {
                    observer.observe(
                        shard,
                        &RowUpdate {
                            id: batch.columns[f][e],
                            row: rs[f],
                            interactions: counts[f],
                            first_seen: dec_time(c.meta[meta::FIRST_SEEN].load(Relaxed)),
                            timestamp: t_e,
                            before: &simd::as_floats(xf)[obs_off..obs_off + obs_len],
                            after: &simd::as_floats(out)[obs_off..obs_off + obs_len],
                        },
                    );
                }
            }
            if bias {
                opt.step_scalar(&mut gb, g, &mut ga);
            }
        }
        (loss_sum, w_sum, gb, ga)
    }

    /// The generic per-event loop (any `dim`; the fused path needs a
    /// multiple of 4): `apply_step` per row.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn train_generic<O: UpdateObserver>(
        &self,
        batch: &FieldBatch<'_>,
        range: std::ops::Range<usize>,
        rows: &[Vec<u32>],
        time_of: &(dyn Fn(usize) -> i64 + Sync),
        count_interactions: bool,
        global: (f32, f32),
        (obs_field, (obs_off, obs_len), observer, shard): (
            usize,
            (usize, usize),
            &O,
            &mut O::Shard,
        ),
    ) -> (f64, f64, f32, f32) {
        let nf = self.n_fields();
        let w = self.cfg.row_dim();
        let tables: Vec<&EmbeddingTable> = self.tables.iter().map(|t| &**t).collect();
        let state_width = tables[0].state_width();
        let mut x = vec![0.0f32; nf * w];
        let mut grad = vec![0.0f32; nf * w];
        let mut sum = vec![0.0f32; self.cfg.dim()];
        let mut before = vec![0.0f32; obs_len];
        let mut scratch = vec![0.0f32; state_width];
        let opt = *tables[0].optimizer();
        let bias = self.cfg.bias;
        let (mut gb, mut ga) = global;
        let (mut loss_sum, mut w_sum) = (0.0f64, 0.0f64);
        let end = range.end;
        for e in range {
            if e + PREFETCH < end {
                for (t, r) in tables.iter().zip(rows) {
                    t.prefetch(r[e + PREFETCH]);
                }
            }
            if rows.iter().any(|r| r[e] == MISSING) {
                // A feature not admitted yet (lifecycle `min_count`): counted
                // on its table, the event is not trained on.
                continue;
            }
            for ((t, r), xf) in tables.iter().zip(rows).zip(x.chunks_exact_mut(w)) {
                t.load_row(r[e], xf);
            }
            let mut score = self.interactions(&x, &mut sum);
            if bias {
                let mut linear = gb;
                for (t, r) in tables.iter().zip(rows) {
                    linear += t.bias(r[e]);
                }
                score += linear;
            }
            let wt = batch.weights.map_or(1.0, |w| w[e]);
            let (loss, g) = self.cfg.loss.value_and_grad(score, batch.labels[e]);
            loss_sum += f64::from(wt * loss);
            w_sum += f64::from(wt);
            let g = g * wt;
            self.gradients(&x, &sum, g, &mut grad);
            let t_e = time_of(e);
            for (f, ((t, r), (xf, gf))) in tables
                .iter()
                .zip(rows)
                .zip(x.chunks_exact_mut(w).zip(grad.chunks_exact_mut(w)))
                .enumerate()
            {
                let r = r[e];
                let observed = f == obs_field;
                if observed {
                    before.copy_from_slice(&xf[obs_off..obs_off + obs_len]);
                }
                t.apply_step(r, xf, gf, &mut scratch);
                if bias {
                    t.apply_bias_step(r, g);
                }
                let count = t.touch(r, t_e, count_interactions);
                if observed {
                    observer.observe(
                        shard,
                        &RowUpdate {
                            id: batch.columns[f][e],
                            row: r,
                            interactions: count,
                            first_seen: dec_time(t.meta(r)[meta::FIRST_SEEN].load(Relaxed)),
                            timestamp: t_e,
                            before: &before,
                            after: &xf[obs_off..obs_off + obs_len],
                        },
                    );
                }
            }
            if bias {
                opt.step_scalar(&mut gb, g, &mut ga);
            }
        }
        (loss_sum, w_sum, gb, ga)
    }

    /// Raw scores of events from the current tables, read-only. Unknown ids
    /// are never inserted: they contribute zero vectors and a zero linear
    /// weight.
    pub fn score(&self, columns: &[&[u64]], out: &mut [f32]) -> Result<()> {
        let nf = self.n_fields();
        if columns.len() != nf {
            return Err(invalid(format!(
                "got {} id columns but the model has {nf} fields {}",
                columns.len(),
                field_list(&self.cfg.fields)
            )));
        }
        let n = out.len();
        for (f, c) in self.cfg.fields.iter().zip(columns) {
            if c.len() != n {
                return Err(invalid(format!(
                    "columns['{f}'] has {} elements but columns['{}'] has {n}",
                    c.len(),
                    self.cfg.fields[0]
                )));
            }
        }
        let w = self.cfg.row_dim();
        let guards: Vec<_> = self.tables.iter().map(|t| t.guard()).collect();
        let mut x = vec![0.0f32; nf * w];
        let mut sum = vec![0.0f32; self.cfg.dim()];
        let gb = if self.cfg.bias {
            self.global_bias()
        } else {
            0.0
        };
        for (e, o) in out.iter_mut().enumerate() {
            let mut linear = gb;
            for (f, (t, g)) in self.tables.iter().zip(&guards).enumerate() {
                let xf = &mut x[f * w..(f + 1) * w];
                match t.lookup(g, columns[f][e]) {
                    Some(r) => {
                        t.load_row(r, xf);
                        if self.cfg.bias {
                            linear += t.bias(r);
                        }
                    }
                    None => xf.fill(0.0),
                }
            }
            *o = self.interactions(&x, &mut sum) + linear;
        }
        Ok(())
    }
}

/// Construction from saved parts and the global state (for `model_io`).
impl FieldModel {
    /// A model around existing tables (one per field, in field order, each
    /// `cfg.row_dim()` wide), with its global bias, accumulator and event
    /// count.
    pub fn from_parts(
        cfg: FieldConfig,
        tables: Vec<Arc<EmbeddingTable>>,
        (global_bias, global_acc): (f32, f32),
        events_seen: u64,
    ) -> Self {
        FieldModel {
            cfg,
            tables,
            global_bias: AtomicU32::new(global_bias.to_bits()),
            global_acc: AtomicU32::new(global_acc.to_bits()),
            events_seen: AtomicU64::new(events_seen),
        }
    }

    /// (global bias, its Adagrad accumulator).
    pub fn global_state(&self) -> (f32, f32) {
        (f32_load(&self.global_bias), f32_load(&self.global_acc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::optim::{Optimizer, OptimizerKind};
    use crate::train::mf::NoObserver;

    fn model(interaction: Interaction, fields: &[&str], dim: usize) -> FieldModel {
        let mut t = TableConfig::new(dim);
        t.capacity = 1000;
        t.optimizer = Optimizer {
            kind: OptimizerKind::Adagrad,
            learning_rate: 0.1,
            ..Default::default()
        };
        FieldModel::new(FieldConfig {
            fields: fields.iter().map(|s| s.to_string()).collect(),
            interaction,
            table: t,
            loss: Loss::Logistic,
            bias: true,
        })
        .unwrap()
    }

    #[test]
    fn block_layout_skips_own_field() {
        assert_eq!([0, 2, 3].map(|j| block_index(1, j)), [0, 1, 2]);
        let m = model(Interaction::FieldAware, &["a", "b", "c"], 4);
        assert_eq!(m.tables[0].dim(), 8);
        let span = m.observed_span(Observed {
            field: 1,
            against: Some(2),
        });
        assert_eq!(span, Ok((4, 4)));
        assert!(m
            .observed_span(Observed {
                field: 1,
                against: Some(1)
            })
            .is_err());
    }

    #[test]
    fn fm_identity_matches_pairwise_sum() {
        let m = model(Interaction::Plain, &["a", "b", "c"], 3);
        let x: Vec<f32> = (0..9).map(|k| (k as f32 * 0.37).sin()).collect();
        let (mut sum, mut grad) = (vec![0.0; 3], vec![0.0; 9]);
        let s = m.interactions(&x, &mut sum);
        let v = |i: usize| &x[i * 3..i * 3 + 3];
        let pair = dot(v(0), v(1)) + dot(v(0), v(2)) + dot(v(1), v(2));
        assert!((s - pair).abs() < 1e-5);
        m.gradients(&x, &sum, 2.0, &mut grad);
        for (k, g) in grad[..3].iter().enumerate() {
            assert!((g - 2.0 * (v(1)[k] + v(2)[k])).abs() < 1e-5);
        }
    }

    #[test]
    fn validation_and_capacity_change_nothing() {
        let fields = ["a", "b"];
        assert!(FieldModel::new(FieldConfig {
            fields: vec!["a".into(), "a".into()],
            ..model(Interaction::Plain, &fields, 2).cfg
        })
        .is_err());
        let mut cfg = model(Interaction::FieldAware, &fields, 2).cfg;
        cfg.table.capacity = 2;
        let m = FieldModel::new(cfg).unwrap();
        let (a, b): (Vec<u64>, Vec<u64>) = ((0..2).collect(), (0..3).collect());
        let cols: [&[u64]; 2] = [&a, &b[..2]];
        let batch = FieldBatch {
            columns: &cols,
            labels: &[1.0, 0.0],
            weights: None,
            timestamps: None,
        };
        let obs = Observed {
            field: 1,
            against: None,
        };
        m.train(&batch, 1, true, &NoObserver, obs).unwrap();
        let (a3, b3): (Vec<u64>, Vec<u64>) = ((10..13).collect(), (0..3).collect());
        let cols: [&[u64]; 2] = [&a3[..1], &b3];
        let ragged = FieldBatch {
            columns: &cols,
            labels: &[1.0],
            weights: None,
            timestamps: None,
        };
        assert!(m.train(&ragged, 1, true, &NoObserver, obs).is_err());
        let cols: [&[u64]; 2] = [&a3[..1], &b3[2..]];
        let full = FieldBatch {
            columns: &cols,
            labels: &[1.0],
            weights: None,
            timestamps: None,
        };
        assert!(m.train(&full, 1, true, &NoObserver, obs).is_err());
        assert_eq!((m.tables[0].len(), m.tables[1].len()), (2, 2));
        assert_eq!(m.events_seen(), 2);
    }

    #[test]
    fn learns_a_field_interaction() {
        let m = model(Interaction::FieldAware, &["a", "b", "c"], 4);
        let a: Vec<u64> = (0..3000).map(|k| k % 7).collect();
        let b: Vec<u64> = (0..3000).map(|k| (k / 7) % 5).collect();
        let c: Vec<u64> = (0..3000).map(|k| (k / 35) % 3).collect();
        let y: Vec<f32> = (0..3000).map(|k| ((a[k] + c[k]) % 2) as f32).collect();
        let cols: [&[u64]; 3] = [&a, &b, &c];
        let batch = FieldBatch {
            columns: &cols,
            labels: &y,
            weights: None,
            timestamps: None,
        };
        let obs = Observed {
            field: 1,
            against: Some(0),
        };
        let mut last = f64::INFINITY;
        for _ in 0..20 {
            last = m
                .train(&batch, 1, true, &NoObserver, obs)
                .unwrap()
                .mean_loss;
        }
        assert!(last < 0.3, "loss {last}");
    }
}
