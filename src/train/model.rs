//! The one model of the engine: factorisation over one embedding table per
//! field, field-aware (FFM) or plain (FM). Matrix factorisation is its
//! two-field field-aware case (`train::mf`), so every model shares the
//! training driver (`driver`), the per-event kernels (`kernel`), the global
//! bias (`GlobalBias`), the statistics and the scorer.
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
//!   FFM row exactly an MF row: that is why MF is not a second engine.
//! * The linear term is the row bias; the score is
//!   `interactions + ((global + bias_0) + bias_1 + ...)`, summed in that
//!   order in training and in `score` alike.

use crate::error::{invalid, Result};
use crate::storage::idmap::EMPTY;
use crate::storage::table::{
    f32_load, f32_store, meta, pack_bias, unpack_bias, EmbeddingTable, SyncStats, TableConfig,
};
pub use crate::train::bias::GlobalBias;
pub use crate::train::config::{block_index, field_list, FieldConfig, Interaction};
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::Arc;

/// Which vector of which field an observer sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    pub field: usize,
    /// FFM: the block against this field; `None` = the whole row (all blocks).
    pub against: Option<usize>,
}

/// The statistics of one training call, for every model.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainStats {
    pub events: usize,
    pub mean_loss: f64,
    /// Rows created per field, in field order.
    pub new_rows: Vec<usize>,
    /// Events skipped because one of their ids is not admitted yet.
    pub unadmitted_events: usize,
    /// With `TrainOptions::scores`: each event's raw score computed before
    /// its own update, in event order (empty otherwise).
    pub scores: Vec<f32>,
}

/// Which public class a model is: the kind byte of a model file, the class
/// the bindings wrap it as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    MatrixFactorization,
    FieldAware,
    Plain,
}

impl Kind {
    /// The kind of `model`; `mf` for a model built as a MatrixFactorization.
    pub fn of(model: &FieldModel, mf: bool) -> Kind {
        match model.cfg.interaction {
            Interaction::FieldAware if mf => Kind::MatrixFactorization,
            Interaction::FieldAware => Kind::FieldAware,
            Interaction::Plain => Kind::Plain,
        }
    }

    /// The Python class name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::MatrixFactorization => "MatrixFactorization",
            Kind::FieldAware => "FieldAwareFM",
            Kind::Plain => "FactorizationMachine",
        }
    }
}

pub struct FieldModel {
    pub cfg: FieldConfig,
    pub tables: Vec<Arc<EmbeddingTable>>,
    pub(crate) global: GlobalBias,
    pub(crate) events_seen: AtomicU64,
}

/// The seed of field `k`'s table for a model seeded `seed`.
pub fn field_seed(seed: u64, k: usize) -> u64 {
    if k == 0 {
        seed
    } else {
        crate::kernels::rng::mix64(seed ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }
}

impl FieldModel {
    pub fn new(cfg: FieldConfig) -> Result<Self> {
        let n = cfg.fields.len();
        Self::with_lifecycles(cfg, vec![None; n])
    }

    /// A model whose field tables have lifecycles (admission, TTL, size
    /// limits): `lifecycles[k]` for field k, `None` = no lifecycle. Events
    /// with a feature not yet admitted are counted on that table and in the
    /// call's `unadmitted_events`, and not trained on.
    pub fn with_lifecycles(
        cfg: FieldConfig,
        lifecycles: Vec<Option<crate::storage::lifecycle::Lifecycle>>,
    ) -> Result<Self> {
        let seeds = (0..cfg.fields.len())
            .map(|k| field_seed(cfg.table.seed, k))
            .collect();
        Self::with_seeds(cfg, lifecycles, seeds)
    }

    /// `with_lifecycles` with the seed of every field's table given.
    pub fn with_seeds(
        cfg: FieldConfig,
        lifecycles: Vec<Option<crate::storage::lifecycle::Lifecycle>>,
        seeds: Vec<u64>,
    ) -> Result<Self> {
        cfg.validate()?;
        if lifecycles.len() != cfg.fields.len() || seeds.len() != cfg.fields.len() {
            return Err(invalid(format!(
                "got {} lifecycles and {} seeds for {} fields",
                lifecycles.len(),
                seeds.len(),
                cfg.fields.len()
            )));
        }
        let tables = lifecycles
            .into_iter()
            .zip(seeds)
            .map(|(lc, seed)| {
                let t = TableConfig {
                    dim: cfg.row_dim(),
                    seed,
                    ..cfg.table
                };
                match lc {
                    Some(lc) => EmbeddingTable::with_lifecycle(t, lc),
                    None => EmbeddingTable::new(t),
                }
                .map(Arc::new)
            })
            .collect::<Result<Vec<_>>>()?;
        let acc0 = cfg.table.optimizer.initial_accumulator;
        Ok(Self::from_parts(cfg, tables, (0.0, acc0), 0))
    }

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
            global: GlobalBias::new(global_bias, global_acc),
            events_seen: AtomicU64::new(events_seen),
        }
    }

    /// An independent deep copy: every table (compacted, with its optimizer
    /// state and metadata), the global bias and the event count.
    pub fn copy(&self) -> Result<Self> {
        let tables = self
            .tables
            .iter()
            .map(|t| t.copy().map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::from_parts(
            self.cfg.clone(),
            tables,
            self.global_state(),
            self.events_seen(),
        ))
    }

    /// Make this model, a `copy()` of `src` (possibly synced since), equal
    /// to what `src.copy()` would return now, copying only what changed:
    /// per table the rows trained, assigned or created since the last sync
    /// (weights, optimizer state, metadata), the ids `src` evicted removed;
    /// then the global bias and the event count. Fails before changing
    /// anything when this model is not a copy of `src` or a table's removal
    /// log no longer reaches back to the last sync (copy again then). See
    /// `EmbeddingTable::sync_from` for syncs that overlap training.
    pub fn sync_from(&self, src: &FieldModel) -> Result<SyncStats> {
        if std::ptr::eq(self, src) {
            return Err(invalid("a model cannot be synced from itself"));
        }
        if self.cfg != src.cfg || self.tables.len() != src.tables.len() {
            return Err(invalid(
                "sync_from needs a copy of the source model (same fields and settings); \
                 make one with source.copy()",
            ));
        }
        for (d, s) in self.tables.iter().zip(&src.tables) {
            d.check_sync_source(s)?;
        }
        let mut stats = SyncStats::default();
        for (d, s) in self.tables.iter().zip(&src.tables) {
            stats += d.sync_from(s)?;
        }
        let (bias, acc) = src.global_state();
        self.global.set(bias, acc);
        self.set_events_seen(src.events_seen());
        Ok(stats)
    }

    /// Reset the optimizer: every Adagrad accumulator (of the rows' weights,
    /// row-wise, of the biases and of the global bias) back to its initial
    /// value; weights, biases, counts and times are kept (a warm start with
    /// a fresh optimizer). SGD keeps no state: a no-op. Rows are reached
    /// through a pinned reader, so a concurrent eviction cannot hand one over.
    pub fn reset_optimizer(&self) {
        let acc0 = self.cfg.table.optimizer.initial_accumulator;
        for t in &self.tables {
            // A write: every row changes, so a serving copy syncs it.
            let _write = t.begin_write();
            let reader = t.reader();
            for &r in reader.rows() {
                t.mark_changed(r);
                for cell in t.row_state(r) {
                    f32_store(cell, acc0);
                }
                let m = t.meta(r);
                let (bias, _) = unpack_bias(m[meta::BIAS].load(Relaxed));
                m[meta::BIAS].store(pack_bias(bias, acc0), Relaxed);
                m[meta::ROW_ACC].store(u64::from(acc0.to_bits()), Relaxed);
            }
        }
        self.global.set_acc(acc0);
    }

    pub fn n_fields(&self) -> usize {
        self.cfg.fields.len()
    }

    pub fn global_bias(&self) -> f32 {
        self.global.get().0
    }

    /// (global bias, its Adagrad accumulator).
    pub fn global_state(&self) -> (f32, f32) {
        self.global.get()
    }

    pub fn events_seen(&self) -> u64 {
        self.events_seen.load(Relaxed)
    }

    /// Set the event count (the default event time of the next event), e.g.
    /// when a saved model is loaded.
    pub fn set_events_seen(&self, n: u64) {
        self.events_seen.store(n, Relaxed);
    }

    /// Offset and width, within a row of `o.field`, of the observed vector.
    pub fn observed_span(&self, o: Observed) -> Result<(usize, usize)> {
        let nf = self.n_fields();
        let out_of_range = |k: usize| {
            crate::error::out_of_range("field index", k, format!("below the field count {nf}"))
        };
        if o.field >= nf {
            return Err(out_of_range(o.field));
        }
        let d = self.cfg.dim();
        match (self.cfg.interaction, o.against) {
            (_, None) => Ok((0, self.cfg.row_dim())),
            (Interaction::Plain, Some(_)) => Err(invalid(
                "a factorisation machine has one vector per feature; pass against=None",
            )),
            (Interaction::FieldAware, Some(j)) if j >= nf => Err(out_of_range(j)),
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
        // One consistent pass under a pin (`TableReader`): live rows only,
        // each id with its own row even while rows are evicted and reused.
        let reader = t.reader();
        let mut values = Vec::with_capacity(reader.len() * len);
        for &r in reader.rows() {
            values.extend(t.row(r)[off..off + len].iter().map(f32_load));
        }
        Ok((reader.ids().to_vec(), values, len))
    }

    /// Raw scores of events from the current tables, read-only, with every
    /// table pinned (a row evicted meanwhile is not reused under the
    /// scorer). Unknown ids are never inserted: they contribute zero vectors
    /// and a zero linear weight. `names` are the column argument names, for
    /// messages.
    pub fn score(&self, columns: &[&[u64]], names: &[String], out: &mut [f32]) -> Result<()> {
        let nf = self.n_fields();
        let n = out.len();
        if columns.len() != nf {
            return Err(crate::error::shape(
                "columns",
                format!("one id column per field {}", field_list(&self.cfg.fields)),
                format!("{} columns", columns.len()),
            ));
        }
        for (name, c) in names.iter().zip(columns) {
            if c.len() != n {
                return Err(crate::error::shape(
                    name,
                    format!("{n} elements (as {})", names[0]),
                    format!("{} elements", c.len()),
                ));
            }
        }
        let w = self.cfg.row_dim();
        let _pins: Vec<_> = self.tables.iter().map(|t| t.pin()).collect();
        let guards: Vec<_> = self.tables.iter().map(|t| t.guard()).collect();
        let mut x = vec![0.0f32; nf * w];
        let mut sum = vec![0.0f32; self.cfg.dim()];
        let gb = if self.cfg.bias {
            self.global_bias()
        } else {
            0.0
        };
        let shape = crate::train::kernel::Layout::of(&self.cfg);
        // Every field's ids resolved in one batched, prefetched pass, then the
        // rows prefetched a few events ahead of their loads (rows of random
        // ids are cache misses). The pins keep every resolved row in place.
        let rows: Vec<Vec<u32>> = guards
            .iter()
            .zip(columns)
            .map(|(g, c)| {
                let mut r = vec![EMPTY; n];
                g.get_batch(c, &mut r);
                r
            })
            .collect();
        const AHEAD: usize = 8;
        for (e, o) in out.iter_mut().enumerate() {
            if e + AHEAD < n {
                for (t, r) in self.tables.iter().zip(&rows) {
                    if r[e + AHEAD] != EMPTY {
                        t.prefetch_for_read(r[e + AHEAD]);
                    }
                }
            }
            let mut linear = gb;
            for (f, (t, r)) in self.tables.iter().zip(&rows).enumerate() {
                let xf = &mut x[f * w..(f + 1) * w];
                match r[e] {
                    EMPTY => xf.fill(0.0),
                    r => {
                        t.load_row(r, xf);
                        if self.cfg.bias {
                            linear += t.bias(r);
                        }
                    }
                }
            }
            *o = shape.interactions(&x, &mut sum) + linear;
        }
        Ok(())
    }
}
