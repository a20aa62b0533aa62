//! `embcore.EmbeddingTable`: a thin wrapper over `table::EmbeddingTable`.

use super::args;
use super::errors::guard;
use crate::kernels::optim::{Optimizer, OptimizerKind};
use crate::storage::lifecycle::{Lifecycle, Policy};
use crate::storage::table::{dec_time, meta, EmbeddingTable, TableConfig, DEFAULT_CAPACITY};
use numpy::ndarray::{Array2, ArrayView2};
use numpy::{IntoPyArray, PyArray1, PyArray2};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use std::path::PathBuf;
use std::sync::Arc;

type IdsAndWeights<'py> = (Bound<'py, PyArray1<u64>>, Bound<'py, PyArray2<f32>>);

/// An embedding table: ``dim``-wide float32 rows keyed by arbitrary uint64 ids,
/// lock-free (Hogwild) under concurrent training and reading.
///
/// ``EmbeddingTable(dim, *, optimizer='adagrad', learning_rate=0.05, l2=0.0,
/// max_norm=None, eps=1e-08, initial_accumulator=0.1, init_scale=0.1, seed=0,
/// capacity=67108864, ttl=None, max_rows=None, max_bytes=None, keep_floor=0,
/// eviction='lru', min_count=1)``
///
/// - ``dim``: row width; the optimizer settings apply to training steps on the rows;
///   ``init_scale``: new rows start uniform in [-init_scale, init_scale], depending only
///   on (``seed``, id); ``capacity``: rows of address space reserved (committed lazily);
/// - lifecycle: ``ttl`` (evict rows not updated for this long, event-time units),
///   ``max_rows`` / ``max_bytes`` (evict by ``eviction`` 'lru' or 'lfu' above this),
///   ``keep_floor`` (never evict below this many rows), ``min_count`` (admit an id at
///   its n-th sighting).
///
/// >>> import numpy as np, embcore
/// >>> t = embcore.EmbeddingTable(4, seed=1)
/// >>> t.insert(np.array([10, 11], dtype=np.uint64))
/// 2
/// >>> t.get(np.array([10], dtype=np.uint64)).shape
/// (1, 4)
#[pyclass(frozen, name = "EmbeddingTable", module = "embcore")]
pub struct PyEmbeddingTable {
    pub inner: Arc<EmbeddingTable>,
}

/// The table keyword arguments every model and table takes.
pub const TABLE_PARAMS: [&str; 10] = [
    "dim",
    "optimizer",
    "learning_rate",
    "l2",
    "max_norm",
    "eps",
    "initial_accumulator",
    "init_scale",
    "seed",
    "capacity",
];

/// The lifecycle keyword arguments of a table.
pub const LIFECYCLE_PARAMS: [&str; 6] = [
    "ttl",
    "max_rows",
    "max_bytes",
    "keep_floor",
    "eviction",
    "min_count",
];

/// A table configuration from the `TABLE_PARAMS` of a call (`default_dim`
/// when dim is not given), validated.
pub fn table_config(p: &args::Params<'_>, default_dim: i64) -> PyResult<TableConfig> {
    let dim = p.int("dim", default_dim, 1, 65_536)?;
    let capacity = p.int(
        "capacity",
        DEFAULT_CAPACITY as i64,
        1,
        crate::storage::table::MAX_CAPACITY as i64,
    )?;
    let max_norm = p.opt_float("max_norm")?;
    if let Some(m) = max_norm {
        if !(m.is_finite() && m > 0.0) {
            return Err(crate::error::out_of_range(
                "max_norm",
                m,
                "a finite number > 0, or None for no clipping",
            )
            .into());
        }
    }
    let defaults = Optimizer::default();
    let cfg = TableConfig {
        dim: dim as usize,
        capacity: capacity as usize,
        seed: p.seed("seed")?,
        init_scale: p.float("init_scale", 0.1)?,
        optimizer: Optimizer {
            kind: OptimizerKind::parse(&p.string("optimizer", "adagrad")?)?,
            learning_rate: p.float("learning_rate", defaults.learning_rate)?,
            l2: p.float("l2", 0.0)?,
            max_norm: max_norm.unwrap_or(0.0),
            eps: p.float("eps", defaults.eps)?,
            initial_accumulator: p.float("initial_accumulator", defaults.initial_accumulator)?,
        },
    };
    cfg.validate()?;
    Ok(cfg)
}

/// A lifecycle from the `LIFECYCLE_PARAMS` of a call (None when all are off).
pub fn lifecycle_params(p: &args::Params<'_>) -> PyResult<Option<Lifecycle>> {
    lifecycle_config(LifecycleArgs {
        ttl: p.opt_int("ttl", 1, i64::MAX)?,
        max_rows: p.opt_int("max_rows", 0, i64::MAX)?,
        max_bytes: p.opt_int("max_bytes", 0, i64::MAX)?,
        keep_floor: p.int("keep_floor", 0, 0, i64::MAX)?,
        eviction: p.string("eviction", "lru")?,
        min_count: p.int("min_count", 1, 1, 255)?,
    })
}

pub fn optimizer_dict<'py>(py: Python<'py>, cfg: &TableConfig) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let o = &cfg.optimizer;
    d.set_item("name", o.kind.name())?;
    d.set_item("learning_rate", o.learning_rate)?;
    d.set_item("l2", o.l2)?;
    d.set_item(
        "max_norm",
        if o.max_norm > 0.0 {
            Some(o.max_norm)
        } else {
            None
        },
    )?;
    d.set_item("eps", o.eps)?;
    d.set_item("initial_accumulator", o.initial_accumulator)?;
    Ok(d)
}

impl PyEmbeddingTable {
    pub fn wrap(inner: Arc<EmbeddingTable>) -> Self {
        PyEmbeddingTable { inner }
    }
}

/// The lifecycle settings of a table, as given.
pub struct LifecycleArgs {
    pub ttl: Option<i64>,
    pub max_rows: Option<i64>,
    pub max_bytes: Option<i64>,
    pub keep_floor: i64,
    pub eviction: String,
    pub min_count: i64,
}

/// The lifecycle settings, validated (None when all are off).
pub fn lifecycle_config(a: LifecycleArgs) -> PyResult<Option<Lifecycle>> {
    let nonneg = |name: &str, v: i64| -> PyResult<usize> {
        usize::try_from(v)
            .map_err(|_| crate::error::out_of_range(name, v, "an integer >= 0").into())
    };
    if !(1..=255).contains(&a.min_count) {
        return Err(
            crate::error::out_of_range("min_count", a.min_count, "an integer in [1, 255]").into(),
        );
    }
    let lc = Lifecycle {
        ttl: a.ttl,
        max_rows: a.max_rows.map(|m| nonneg("max_rows", m)).transpose()?,
        max_bytes: a.max_bytes.map(|m| nonneg("max_bytes", m)).transpose()?,
        keep_floor: nonneg("keep_floor", a.keep_floor)?,
        policy: Policy::parse(&a.eviction)?,
        min_count: a.min_count as u32,
        ..Default::default()
    };
    let off = !lc.evicts() && lc.min_count == 1;
    if off && lc.keep_floor > 0 {
        return Err(crate::error::config(
            "keep_floor only applies with ttl=, max_rows= or max_bytes=",
        )
        .into());
    }
    Ok(if off { None } else { Some(lc) })
}

pub fn new_table(
    cfg: crate::storage::table::TableConfig,
    lc: Option<Lifecycle>,
) -> PyResult<EmbeddingTable> {
    Ok(match lc {
        Some(lc) => EmbeddingTable::with_lifecycle(cfg, lc)?,
        None => EmbeddingTable::new(cfg)?,
    })
}

pub fn lifecycle_dict<'py>(
    py: Python<'py>,
    t: &EmbeddingTable,
) -> PyResult<Option<Bound<'py, PyDict>>> {
    let Some(lc) = t.lifecycle() else {
        return Ok(None);
    };
    let d = PyDict::new(py);
    d.set_item("ttl", lc.ttl)?;
    d.set_item("max_rows", lc.max_rows)?;
    d.set_item("max_bytes", lc.max_bytes)?;
    d.set_item("keep_floor", lc.keep_floor)?;
    d.set_item("eviction", lc.policy.name())?;
    d.set_item("min_count", lc.min_count)?;
    Ok(Some(d))
}

#[pymethods]
impl PyEmbeddingTable {
    #[new]
    #[pyo3(signature = (*args, **kwargs),
        text_signature = "(dim, *, optimizer='adagrad', learning_rate=0.05, l2=0.0, max_norm=None, eps=1e-08, initial_accumulator=0.1, init_scale=0.1, seed=0, capacity=67108864, ttl=None, max_rows=None, max_bytes=None, keep_floor=0, eviction='lru', min_count=1)")]
    fn new(args: &Bound<'_, PyTuple>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let names: Vec<&'static str> = TABLE_PARAMS
            .iter()
            .chain(&LIFECYCLE_PARAMS)
            .copied()
            .collect();
        let p = args::Params::parse("EmbeddingTable", &names, 1, args, kwargs)?;
        p.required("dim")?;
        let lc = lifecycle_params(&p)?;
        let cfg = table_config(&p, 0)?;
        Ok(Self::wrap(Arc::new(new_table(cfg, lc)?)))
    }

    /// The lifecycle configuration as a dict, or None when off.
    #[getter]
    fn lifecycle<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        lifecycle_dict(py, &self.inner)
    }

    /// Version of the table: bumped by every training call; see `changed_since`.
    #[getter]
    fn version(&self) -> u64 {
        self.inner.version()
    }

    /// Events skipped so far because their id had not reached `min_count`.
    #[getter]
    fn unadmitted_events(&self) -> u64 {
        self.inner.unadmitted_events()
    }

    /// Evict incrementally (inspects at most `budget` rows): rows not updated
    /// for more than `ttl` at event time `now`, then, above `max_rows` /
    /// `max_bytes`, the least recently (LRU) or least frequently (LFU) used
    /// inspected rows — never below `keep_floor` live rows. Returns the
    /// evicted rows' final state: {ids, rows, interactions, first_seen,
    /// last_update, ages, scanned}.
    #[pyo3(signature = (now, budget=100_000))]
    fn evict<'py>(
        &self,
        py: Python<'py>,
        #[pyo3(from_py_with = args::now_arg)] now: i64,
        #[pyo3(from_py_with = args::budget_arg)] budget: i64,
    ) -> PyResult<Bound<'py, PyDict>> {
        if budget < 1 {
            return Err(crate::py::errors::value_error(format!(
                "budget must be >= 1, got {budget}"
            )));
        }
        let t = &self.inner;
        let ev = py.detach(|| t.evict(now, budget as usize))?;
        let d = PyDict::new(py);
        let n = ev.ids.len();
        let ages: Vec<i64> = ev
            .first_seen
            .iter()
            .map(|f| now.saturating_sub(*f))
            .collect();
        d.set_item("ids", ev.ids.into_pyarray(py))?;
        let rows = Array2::from_shape_vec((n, t.dim()), ev.rows).expect("n x dim");
        d.set_item("rows", rows.into_pyarray(py))?;
        d.set_item("interactions", ev.interactions.into_pyarray(py))?;
        d.set_item("first_seen", ev.first_seen.into_pyarray(py))?;
        d.set_item("last_update", ev.last_update.into_pyarray(py))?;
        d.set_item("ages", ages.into_pyarray(py))?;
        d.set_item("scanned", ev.scanned)?;
        Ok(d)
    }

    /// Rows changed after `version` and ids removed after it, for syncing a
    /// serving copy: {ids, rows, removed, version}; pass the returned version
    /// next time. Raises when evictions since then outgrew the removal log.
    fn changed_since<'py>(
        &self,
        py: Python<'py>,
        #[pyo3(from_py_with = args::version_arg)] version: u64,
    ) -> PyResult<Bound<'py, PyDict>> {
        let t = &self.inner;
        let delta = py.detach(|| t.changed_since(version))?;
        let d = PyDict::new(py);
        let n = delta.ids.len();
        d.set_item("ids", delta.ids.into_pyarray(py))?;
        let rows = Array2::from_shape_vec((n, t.dim()), delta.rows).expect("n x dim");
        d.set_item("rows", rows.into_pyarray(py))?;
        d.set_item("removed", delta.removed.into_pyarray(py))?;
        d.set_item("version", delta.version)?;
        Ok(d)
    }

    /// Width of each row.
    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    /// Rows reserved for this table (address space, committed lazily).
    #[getter]
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }

    #[getter]
    fn seed(&self) -> u64 {
        self.inner.config().seed
    }

    #[getter]
    fn init_scale(&self) -> f32 {
        self.inner.config().init_scale
    }

    /// The optimizer configuration as a dict.
    #[getter]
    fn optimizer<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        optimizer_dict(py, self.inner.config())
    }

    /// Bytes held by rows in use: weights, optimizer state and metadata.
    #[getter]
    fn nbytes(&self) -> usize {
        self.inner.bytes_used()
    }

    /// Live rows.
    fn __len__(&self) -> usize {
        self.inner.live_len()
    }

    fn __contains__(&self, id: u64) -> bool {
        self.inner.contains(id)
    }

    fn __repr__(&self) -> String {
        format!(
            "EmbeddingTable(rows={}, dim={}, optimizer='{}')",
            self.inner.live_len(),
            self.inner.dim(),
            self.inner.optimizer().kind.name()
        )
    }

    /// Ids of all rows, in row order (the order of `weights()`).
    fn ids<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<u64>> {
        let t = &self.inner;
        py.detach(|| t.ids()).into_pyarray(py)
    }

    /// Read-only weights, one row per id in `ids()` order. Zero-copy for
    /// tables without a lifecycle: the view stays valid (rows never move) and
    /// shows later updates. Tables with a lifecycle return a copy of the live
    /// rows, so an evicted-then-reused row can never change under a view.
    fn weights<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        Ok(Self::ids_and_weights(slf, false)?.1)
    }

    /// (ids, weights) of the same rows, read in one pinned pass.
    fn view<'py>(slf: &Bound<'py, Self>) -> PyResult<IdsAndWeights<'py>> {
        Self::ids_and_weights(slf, true)
    }

    /// Per-row metadata as numpy arrays (copies): ids, interactions, updates,
    /// first_seen, last_update, bias — columns of the same rows, read in one
    /// pinned pass.
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let t = &self.inner;
        let words = [
            meta::INTERACTIONS,
            meta::UPDATES,
            meta::FIRST_SEEN,
            meta::LAST_UPDATE,
            meta::BIAS,
        ];
        let (ids, mut cols) = py.detach(|| {
            let r = t.reader();
            let cols: Vec<Vec<u64>> = words.iter().map(|&w| r.meta_column(w)).collect();
            (r.ids().to_vec(), cols)
        });
        let bias: Vec<f32> = cols
            .pop()
            .expect("bias column")
            .into_iter()
            .map(|b| crate::storage::table::unpack_bias(b).0)
            .collect();
        let times = |c: Vec<u64>| c.into_iter().map(dec_time).collect::<Vec<i64>>();
        let last_update = times(cols.pop().expect("last_update column"));
        let first_seen = times(cols.pop().expect("first_seen column"));
        let updates = cols.pop().expect("updates column");
        let interactions = cols.pop().expect("interactions column");
        let d = PyDict::new(py);
        d.set_item("ids", ids.into_pyarray(py))?;
        d.set_item("interactions", interactions.into_pyarray(py))?;
        d.set_item("updates", updates.into_pyarray(py))?;
        d.set_item("first_seen", first_seen.into_pyarray(py))?;
        d.set_item("last_update", last_update.into_pyarray(py))?;
        d.set_item("bias", bias.into_pyarray(py))?;
        Ok(d)
    }

    /// Optimizer state per row: (rows, dim) accumulators for Adagrad, (rows, 1)
    /// for row-wise Adagrad, (rows, 0) for SGD.
    fn optimizer_state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let t = &self.inner;
        let (n, width, v) = py.detach(|| {
            let r = t.reader();
            match t.optimizer().kind {
                OptimizerKind::RowWiseAdagrad => (
                    r.len(),
                    1,
                    r.meta_column(meta::ROW_ACC)
                        .into_iter()
                        .map(|b| f32::from_bits(b as u32))
                        .collect(),
                ),
                _ => (r.len(), t.state_width(), r.state()),
            }
        });
        let arr = Array2::from_shape_vec((n, width), v)
            .map_err(|e| crate::py::errors::value_error(e.to_string()))?;
        Ok(arr.into_pyarray(py))
    }

    /// Rows of `ids` as a new (len(ids), dim) float32 array. Unknown ids raise
    /// KeyError naming the id, unless `default` (a scalar or a row) is given.
    /// Never inserts.
    #[pyo3(signature = (ids, default=None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        ids: &Bound<'py, PyAny>,
        default: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let ids = args::ids(ids, "ids")?;
        let d = self.inner.dim();
        let def: Option<Vec<f32>> = match default {
            None => None,
            Some(o) if o.is_none() => None,
            Some(o) => Some(if let Ok(x) = o.extract::<f32>() {
                vec![x; d]
            } else {
                let v = args::floats(o, "default")?.as_slice().to_vec();
                if v.len() != d {
                    return Err(crate::py::errors::value_error(format!(
                        "default has {} values but rows have dim {d}",
                        v.len()
                    )));
                }
                v
            }),
        };
        let s = ids.as_slice();
        let mut out = vec![0.0f32; s.len() * d];
        let t = &self.inner;
        py.detach(|| t.gather(s, &mut out, def.as_deref()))?;
        let arr = Array2::from_shape_vec((s.len(), d), out).expect("shape matches");
        Ok(arr.into_pyarray(py))
    }

    /// Overwrite the rows of `ids` with `rows` (len(ids) × dim), creating
    /// missing ids (first seen at `timestamp`). Returns the number created.
    #[pyo3(signature = (ids, rows, timestamp=0))]
    fn set(
        &self,
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
        rows: &Bound<'_, PyAny>,
        #[pyo3(from_py_with = args::timestamp_arg)] timestamp: i64,
    ) -> PyResult<usize> {
        let ids = args::ids(ids, "ids")?;
        let s = ids.as_slice();
        let m = args::matrix(rows, "rows", s.len(), self.inner.dim())?;
        let v = m.as_slice();
        let t = &self.inner;
        Ok(py.detach(|| t.assign(s, v, timestamp))?)
    }

    /// Make sure every id has a row, creating missing ones (deterministic
    /// initial values, first seen at `timestamp`); existing rows are left as
    /// they are. Checks capacity before creating anything. Returns the number
    /// of rows created.
    #[pyo3(signature = (ids, timestamp=0, threads=None),
        text_signature = "($self, ids, timestamp=0, threads=1)")]
    fn insert(
        &self,
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
        #[pyo3(from_py_with = args::timestamp_arg)] timestamp: i64,
        threads: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let threads = args::threads(threads)?;
        let ids = args::ids(ids, "ids")?;
        let s = ids.as_slice();
        let t = &self.inner;
        let (_, created) = guard("EmbeddingTable.insert", || {
            Ok(py.detach(|| {
                // Checked before `begin_write`: a rejected insert changes
                // nothing, not even the version.
                let _creating = t.creation();
                t.check_room(s)?;
                let _pin = t.begin_write();
                crate::train::resolve::resolve(t, s, &|_| timestamp, threads, true)
            })?)
        })?;
        Ok(created)
    }

    /// l2-norm of every row, in `ids()` order.
    fn norms<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f32>> {
        let t = &self.inner;
        let v = py.detach(|| crate::storage::scan::row_norms(t));
        v.into_pyarray(py)
    }

    /// An independent deep copy (weights, optimizer state, metadata).
    fn copy(&self, py: Python<'_>) -> PyResult<Self> {
        let t = &self.inner;
        Ok(Self::wrap(Arc::new(py.detach(|| t.copy())?)))
    }

    /// Bring this table, a ``copy()`` of ``source`` (possibly synced since),
    /// up to date with it, copying only the rows ``source`` changed since
    /// (evicted ids are removed): afterwards it equals ``source.copy()``.
    /// Returns ``{"rows", "removed", "scanned"}``; see ``FieldModel.sync_from``.
    fn sync_from<'py>(
        &self,
        py: Python<'py>,
        source: PyRef<'py, PyEmbeddingTable>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let (dst, src) = (&self.inner, &source.inner);
        let stats = guard("EmbeddingTable.sync_from", || {
            Ok(py.detach(|| dst.sync_from(src))?)
        })?;
        sync_dict(py, stats)
    }

    /// Write the table (weights, optimizer state, metadata) to `path`
    /// atomically: temp file, fsync, rename. Returns the bytes written.
    fn save(
        &self,
        py: Python<'_>,
        #[pyo3(from_py_with = args::path_arg)] path: PathBuf,
    ) -> PyResult<u64> {
        let t = &self.inner;
        Ok(py.detach(|| crate::storage::snapshot::save(t, &path, &[]))?)
    }

    /// Read a table written by `save`. Raises SnapshotError for a truncated,
    /// corrupted or foreign file.
    #[staticmethod]
    #[pyo3(signature = (path, capacity=None))]
    fn load(
        py: Python<'_>,
        #[pyo3(from_py_with = args::path_arg)] path: PathBuf,
        capacity: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let capacity = args::capacity(capacity)?;
        let (t, _) = py.detach(|| crate::storage::snapshot::load(&path, capacity))?;
        Ok(Self::wrap(Arc::new(t)))
    }
}

impl PyEmbeddingTable {
    /// Ids (when `with_ids`) and read-only weights of the same rows. Zero-copy
    /// weights for tables without a lifecycle (rows 0..n never die or move);
    /// otherwise both come from one pinned `TableReader` pass.
    fn ids_and_weights<'py>(
        slf: &Bound<'py, Self>,
        with_ids: bool,
    ) -> PyResult<IdsAndWeights<'py>> {
        let py = slf.py();
        let t = &slf.get().inner;
        if t.lifecycle().is_some() {
            let (ids, v) = py.detach(|| {
                let r = t.reader();
                let ids = if with_ids {
                    r.ids().to_vec()
                } else {
                    Vec::new()
                };
                (ids, r.weights())
            });
            let n = v.len() / t.dim();
            let arr = Array2::from_shape_vec((n, t.dim()), v)
                .expect("n x dim")
                .into_pyarray(py);
            arr.call_method1("setflags", (false,))?;
            return Ok((ids.into_pyarray(py), arr));
        }
        // Without a lifecycle the reader's rows are 0..n and never die.
        let (n, ids) = py.detach(|| {
            let r = t.reader();
            (
                r.len(),
                if with_ids {
                    r.ids().to_vec()
                } else {
                    Vec::new()
                },
            )
        });
        // SAFETY: rows 0..n are initialised f32 bit patterns in a mapping that
        // lives as long as the table, which the array's base object (`slf`,
        // holding the Arc) keeps alive. Concurrent Relaxed atomic stores by
        // training threads are plain stores on supported targets; numpy sees
        // each f32 either before or after an update.
        let view = unsafe { ArrayView2::from_shape_ptr((n, t.dim()), t.weights_ptr()) };
        // SAFETY: as above; `borrow_from_array` records `slf` as the base.
        let arr = unsafe { PyArray2::borrow_from_array(&view, slf.clone().into_any()) };
        arr.call_method1("setflags", (false,))?;
        Ok((ids.into_pyarray(py), arr))
    }
}

/// `{"rows", "removed", "scanned"}` of a sync.
pub fn sync_dict(
    py: Python<'_>,
    s: crate::storage::table::SyncStats,
) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("rows", s.rows)?;
    d.set_item("removed", s.removed)?;
    d.set_item("scanned", s.scanned)?;
    Ok(d)
}
