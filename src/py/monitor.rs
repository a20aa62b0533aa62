//! `embcore.Monitor`: a thin wrapper over `monitor::Monitor`.

use super::args;
use super::table::PyEmbeddingTable;
use crate::error::invalid;
use crate::monitor::hook::{StepRows, StepTracker, TrackerConfig};
use crate::monitor::sketch::RELATIVE_ERROR;
use crate::monitor::{GroupingSummary, Monitor, MonitorConfig, StatSummary, GROUPINGS, STATISTICS};
use crate::storage::scan::{self, HealthCheck};
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};
use std::sync::Arc;

/// Streaming monitor of embedding evolution: per-update drift, magnitude and
/// norm statistics grouped by interaction count, popularity and age, plus the
/// trajectories of a tracked cohort of items; mergeable and serialisable.
///
/// ``Monitor(*, sample_rate=0.01, track_ids=None, track_window=None,
/// milestones=None, count_limit=64, per_doubling=8, age_per_doubling=2,
/// max_records=1000000, seed=0)``
///
/// - ``sample_rate``: share of items tracked (chosen by a hash of id and ``seed``);
///   ``track_ids``: items tracked whatever the sample; ``track_window``: (t0, t1),
///   track only items first seen in it;
/// - ``milestones``: interaction counts at which a tracked item's row is recorded
///   (default: powers of two and their midpoints); ``count_limit``: interaction counts
///   above this share the last group; ``per_doubling`` / ``age_per_doubling``: groups
///   per doubling of count / age; ``max_records``: trajectory records kept at most.
///
/// >>> import embcore
/// >>> embcore.Monitor(sample_rate=0.5).summary()["updates"]
/// 0
#[pyclass(frozen, name = "Monitor", module = "embcore")]
pub struct PyMonitor {
    pub inner: Arc<Monitor>,
}

/// Any array-like as a numpy array, without importing its framework: ndarrays as
/// they are, objects with `__dlpack__` through `numpy.from_dlpack` (zero-copy for
/// CPU memory: PyTorch, JAX), others with the array interface (`__array_interface__`,
/// `__array_struct__`, `__array__`) through `numpy.asarray` (zero-copy when their
/// buffer allows). Anything else is returned unchanged for the usual type error.
fn as_ndarray<'py>(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    if obj.is_none() || obj.is_instance_of::<numpy::PyUntypedArray>() {
        return Ok(obj.clone());
    }
    let np = obj.py().import("numpy")?;
    if obj.hasattr("__dlpack__")? {
        if let Ok(a) = np.call_method1("from_dlpack", (obj,)) {
            return Ok(a);
        }
    }
    let interface = [
        "__array_interface__",
        "__array_struct__",
        "__array__",
        "__dlpack__",
    ];
    for attr in interface {
        if obj.hasattr(attr)? {
            return np.call_method1("asarray", (obj,)).map_err(|err| {
                crate::py::errors::type_error_msg(format!(
                    "{name}: cannot read a {} as an array ({err}); pass a CPU array \
                     (e.g. tensor.detach().cpu())",
                    obj.get_type()
                        .name()
                        .map(|n| n.to_string())
                        .unwrap_or_default()
                ))
            });
        }
    }
    Ok(obj.clone())
}

fn non_negative(x: i64, name: &str) -> PyResult<u64> {
    u64::try_from(x).map_err(|_| invalid(format!("{name} must be >= 0, got {x}")).into())
}

/// Borrowed when the array is C-contiguous and of the wanted dtype, else
/// converted (so that `observe` reads its inputs without a copy).
enum Values<'py, T: numpy::Element, D: numpy::ndarray::Dimension> {
    Borrowed(numpy::PyReadonlyArray<'py, T, D>),
    Owned(Vec<T>),
}

impl<T: numpy::Element, D: numpy::ndarray::Dimension> Values<'_, T, D> {
    fn as_slice(&self) -> &[T] {
        match self {
            Values::Borrowed(a) => a.as_slice().expect("checked contiguous"),
            Values::Owned(v) => v,
        }
    }

    /// `a` borrowed when C-contiguous, else copied.
    fn of(a: numpy::PyReadonlyArray<'_, T, D>) -> Values<'_, T, D>
    where
        T: Copy,
    {
        if a.as_slice().is_ok() {
            Values::Borrowed(a)
        } else {
            Values::Owned(a.as_array().iter().copied().collect())
        }
    }
}

type Ints<'py> = Values<'py, i64, numpy::Ix1>;
type Matrix<'py> = Values<'py, f32, numpy::Ix2>;

/// A 1-D int64 (or uint64, clamped to i64) array.
fn opt_ints<'py>(obj: Option<&Bound<'py, PyAny>>, name: &str) -> PyResult<Option<Ints<'py>>> {
    let Some(o) = obj.filter(|o| !o.is_none()) else {
        return Ok(None);
    };
    if let Ok(a) = o.extract::<PyReadonlyArray1<'py, i64>>() {
        return Ok(Some(Values::of(a)));
    }
    if let Ok(a) = o.extract::<PyReadonlyArray1<'py, u64>>() {
        return Ok(Some(Values::Owned(
            a.as_array()
                .iter()
                .map(|&x| x.min(i64::MAX as u64) as i64)
                .collect(),
        )));
    }
    Err(crate::py::errors::type_error_msg(format!(
        "{name} must be a 1-D numpy array of int64; pass np.asarray({name}, dtype=np.int64)"
    )))
}

/// A 2-D float array as row-major f32 plus its shape (no value checks: the
/// core reports non-finite rows): float32 borrowed when C-contiguous, else
/// copied (float64 converted).
fn rows_matrix<'py>(obj: &Bound<'py, PyAny>) -> PyResult<(Matrix<'py>, usize, usize)> {
    named_matrix(obj, "rows")
}

/// `rows_matrix` of the argument `name`.
fn named_matrix<'py>(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<(Matrix<'py>, usize, usize)> {
    if let Ok(a) = obj.extract::<PyReadonlyArray2<'py, f32>>() {
        let (n, d) = (a.shape()[0], a.shape()[1]);
        return Ok((Values::of(a), n, d));
    }
    if let Ok(a) = obj.extract::<PyReadonlyArray2<'py, f64>>() {
        let (n, d) = (a.shape()[0], a.shape()[1]);
        return Ok((
            Values::Owned(a.as_array().iter().map(|&x| x as f32).collect()),
            n,
            d,
        ));
    }
    Err(crate::py::errors::type_error_msg(format!(
        "{name} must be a 2-D numpy array of float32 (one row per id), got {}; \
         pass np.asarray({name}, dtype=np.float32)",
        obj.repr().map(|r| r.to_string()).unwrap_or_default()
    )))
}

fn stat_dict<'py>(
    py: Python<'py>,
    s: &StatSummary,
    lists: bool,
    scalar: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let n: Vec<i64> = s.n.iter().map(|&x| x as i64).collect();
    if scalar {
        d.set_item("n", n.first().copied().unwrap_or(0))?;
    } else if lists {
        d.set_item("n", n)?;
    } else {
        d.set_item("n", n.into_pyarray(py))?;
    }
    for (name, v) in [
        ("mean", &s.mean),
        ("std", &s.std),
        ("min", &s.min),
        ("max", &s.max),
        ("p50", &s.p50),
        ("p90", &s.p90),
        ("p99", &s.p99),
    ] {
        if scalar {
            d.set_item(name, v.first().copied())?;
        } else if lists {
            d.set_item(name, v.clone())?;
        } else {
            d.set_item(name, v.clone().into_pyarray(py))?;
        }
    }
    Ok(d)
}

fn grouping_dict<'py>(
    py: Python<'py>,
    g: &GroupingSummary,
    lists: bool,
    scalar: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let n: Vec<i64> = g.n.iter().map(|&x| x as i64).collect();
    if scalar {
        d.set_item("n", n.first().copied().unwrap_or(0))?;
    } else if lists {
        d.set_item("lower", g.lower.clone())?;
        d.set_item("n", n)?;
    } else {
        d.set_item("lower", g.lower.clone().into_pyarray(py))?;
        d.set_item("n", n.into_pyarray(py))?;
    }
    for (name, s) in STATISTICS.iter().zip(&g.stats) {
        d.set_item(*name, stat_dict(py, s, lists, scalar)?)?;
    }
    Ok(d)
}

fn check_dict<'py>(py: Python<'py>, c: &HealthCheck) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("count", c.count)?;
    d.set_item("ids", c.ids.clone().into_pyarray(py))?;
    Ok(d)
}

impl PyMonitor {
    fn summary_dict<'py>(&self, py: Python<'py>, lists: bool) -> PyResult<Bound<'py, PyDict>> {
        let m = &self.inner;
        let s = py.detach(|| m.summary());
        let d = PyDict::new(py);
        for (name, g) in GROUPINGS.iter().zip(&s.groupings) {
            d.set_item(*name, grouping_dict(py, g, lists, false)?)?;
        }
        d.set_item("overall", grouping_dict(py, &s.overall, lists, true)?)?;
        d.set_item(
            "path_efficiency",
            stat_dict(py, &s.path_efficiency, lists, true)?,
        )?;
        d.set_item("updates", s.updates)?;
        d.set_item("skipped_updates", s.skipped_updates)?;
        d.set_item("items_seen", s.items_seen)?;
        d.set_item("tracked_items", s.tracked_items)?;
        d.set_item("retired_items", s.retired_items)?;
        d.set_item("dropped_items", s.dropped_items)?;
        d.set_item("untracked_items", s.untracked_items)?;
        d.set_item("records", s.records)?;
        d.set_item("dropped_records", s.dropped_records)?;
        d.set_item("memory_bytes", s.memory_bytes)?;
        d.set_item("quantile_relative_error", RELATIVE_ERROR)?;
        d.set_item("dim", (s.dim > 0).then_some(s.dim))?;
        Ok(d)
    }
}

#[pymethods]
impl PyMonitor {
    #[new]
    #[pyo3(signature = (*args, **kwargs),
        text_signature = "(*, sample_rate=0.01, track_ids=None, track_window=None, milestones=None, count_limit=64, per_doubling=8, age_per_doubling=2, max_records=1000000, max_tracked=200000, retire_after=None, seed=0)")]
    fn new(args: &Bound<'_, PyTuple>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let p = super::args::Params::parse(
            "Monitor",
            &[
                "sample_rate",
                "track_ids",
                "track_window",
                "milestones",
                "count_limit",
                "per_doubling",
                "age_per_doubling",
                "max_records",
                "max_tracked",
                "retire_after",
                "seed",
            ],
            0,
            args,
            kwargs,
        )?;
        let ids = |name: &str| -> PyResult<Option<Vec<u64>>> {
            p.get(name)
                .map(|v| {
                    v.extract::<Vec<u64>>().map_err(|_| {
                        crate::error::out_of_range(
                            name,
                            v.repr().map(|r| r.to_string()).unwrap_or_default(),
                            "a sequence of non-negative integers",
                        )
                        .into()
                    })
                })
                .transpose()
        };
        let track_window = p
            .get("track_window")
            .map(|v| {
                v.extract::<(i64, i64)>().map_err(|_| {
                    PyErr::from(crate::error::out_of_range(
                        "track_window",
                        v.repr().map(|r| r.to_string()).unwrap_or_default(),
                        "a pair (t0, t1) of integer event times, or None",
                    ))
                })
            })
            .transpose()?;
        let max = |name: &str, default: i64, hi: i64| p.int(name, default, 0, hi);
        let cfg = MonitorConfig {
            sample_rate: p.float64("sample_rate", 0.01)?,
            track_ids: ids("track_ids")?.unwrap_or_default(),
            track_window,
            milestones: ids("milestones")?.unwrap_or_else(crate::monitor::default_milestones),
            count_limit: max("count_limit", 64, i64::MAX)? as u64,
            per_doubling: max("per_doubling", 8, i64::from(u32::MAX))? as u32,
            age_per_doubling: max("age_per_doubling", 2, i64::from(u32::MAX))? as u32,
            max_records: max("max_records", 1_000_000, i64::MAX)? as usize,
            max_tracked: p.int(
                "max_tracked",
                crate::monitor::DEFAULT_MAX_TRACKED as i64,
                1,
                i64::MAX,
            )? as usize,
            retire_after: match p.get("retire_after") {
                Some(v) if !v.is_none() => {
                    Some(super::args::int_value(v, "retire_after", 1, i64::MAX)?)
                }
                _ => None,
            },
            seed: p.seed("seed")?,
        };
        Ok(PyMonitor {
            inner: Arc::new(Monitor::new(cfg)?),
        })
    }

    /// The configuration as a dict (the constructor's keyword arguments).
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = self.inner.config();
        let d = PyDict::new(py);
        d.set_item("sample_rate", c.sample_rate)?;
        d.set_item("track_ids", c.track_ids.clone())?;
        d.set_item("track_window", c.track_window)?;
        d.set_item("milestones", c.milestones.clone())?;
        d.set_item("count_limit", c.count_limit)?;
        d.set_item("per_doubling", c.per_doubling)?;
        d.set_item("age_per_doubling", c.age_per_doubling)?;
        d.set_item("max_records", c.max_records)?;
        d.set_item("max_tracked", c.max_tracked)?;
        d.set_item("retire_after", c.retire_after)?;
        d.set_item("seed", c.seed)?;
        Ok(d)
    }

    /// Width of the rows seen so far (None before the first).
    #[getter]
    fn dim(&self) -> Option<usize> {
        let d = self.inner.dim();
        (d > 0).then_some(d)
    }

    /// Bytes held by the monitor's state.
    #[getter]
    fn memory_bytes(&self) -> usize {
        self.inner.memory_bytes()
    }

    /// Bound on the relative error of every reported quantile.
    #[classattr]
    fn quantile_relative_error() -> f64 {
        RELATIVE_ERROR
    }

    fn __repr__(&self) -> String {
        let s = self.inner.summary();
        format!(
            "Monitor(updates={}, tracked_items={}, records={}, sample_rate={})",
            s.updates,
            s.tracked_items,
            s.records,
            self.inner.config().sample_rate
        )
    }

    /// Feed updated rows from any trainer: `ids` (uint64, n), `rows`
    /// (float32, n × dim). Each row is compared with the previous row the
    /// monitor saw for its id. `counts` (int64) default to the times the
    /// monitor has seen the id, `timestamps` (int64) to a running clock.
    /// Everything is validated before anything is recorded. Each argument
    /// may be a numpy array or any object with `__dlpack__` or the array
    /// interface (PyTorch or JAX CPU tensors), read without a copy where its
    /// memory allows; no framework is imported.
    #[pyo3(signature = (ids, rows, counts=None, timestamps=None))]
    fn observe(
        &self,
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
        rows: &Bound<'_, PyAny>,
        counts: Option<&Bound<'_, PyAny>>,
        timestamps: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let (ids, rows) = (as_ndarray(ids, "ids")?, as_ndarray(rows, "rows")?);
        let counts = counts.map(|c| as_ndarray(c, "counts")).transpose()?;
        let timestamps = timestamps
            .map(|t| as_ndarray(t, "timestamps"))
            .transpose()?;
        let ids = args::ids(&ids, "ids")?;
        let (rows, n, d) = rows_matrix(&rows)?;
        let counts = opt_ints(counts.as_ref(), "counts")?;
        let timestamps = opt_ints(timestamps.as_ref(), "timestamps")?;
        let ids = ids.as_slice();
        if ids.len() != n {
            return Err(invalid(format!(
                "ids has {} elements but rows has {n} rows",
                ids.len()
            ))
            .into());
        }
        let (m, rows) = (&self.inner, rows.as_slice());
        let counts = counts.as_ref().map(Values::as_slice);
        let timestamps = timestamps.as_ref().map(Values::as_slice);
        py.detach(|| m.observe(ids, rows, d, counts, timestamps))?;
        Ok(())
    }

    /// Feed updates given as pairs of rows, as a trainer that holds both
    /// sees them: `before` and `after` (float32, n × dim) are each id's row
    /// before and after its update, `counts` (int64, n) its interactions so
    /// far, `first_seen` (int64) when the item was first seen (default: the
    /// update's time, age 0), `timestamps` (int64) the update times (default:
    /// a running clock). The same statistics and trajectories as the
    /// training path; no previous rows are kept or looked up (nor changed:
    /// `observe`'s previous rows are left as they were), so it costs less
    /// than `observe` when the caller has the rows before. Validated before
    /// anything is recorded; arguments as in `observe`.
    #[pyo3(signature = (ids, before, after, counts, first_seen=None, timestamps=None))]
    #[allow(clippy::too_many_arguments)]
    fn observe_pairs(
        &self,
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
        before: &Bound<'_, PyAny>,
        after: &Bound<'_, PyAny>,
        counts: &Bound<'_, PyAny>,
        first_seen: Option<&Bound<'_, PyAny>>,
        timestamps: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let ids = as_ndarray(ids, "ids")?;
        let (before, after) = (as_ndarray(before, "before")?, as_ndarray(after, "after")?);
        let counts = as_ndarray(counts, "counts")?;
        let first_seen = first_seen
            .map(|t| as_ndarray(t, "first_seen"))
            .transpose()?;
        let timestamps = timestamps
            .map(|t| as_ndarray(t, "timestamps"))
            .transpose()?;
        let ids = args::ids(&ids, "ids")?;
        let (before, n, d) = named_matrix(&before, "before")?;
        let (after, n_after, d_after) = named_matrix(&after, "after")?;
        if (n_after, d_after) != (n, d) {
            return Err(invalid(format!(
                "before has shape ({n}, {d}) but after has shape ({n_after}, {d_after}); \
                 pass one row before and one after per id"
            ))
            .into());
        }
        let counts = opt_ints(Some(&counts), "counts")?.expect("given");
        let first_seen = opt_ints(first_seen.as_ref(), "first_seen")?;
        let timestamps = opt_ints(timestamps.as_ref(), "timestamps")?;
        let ids = ids.as_slice();
        if ids.len() != n {
            return Err(invalid(format!(
                "ids has {} elements but before has {n} rows",
                ids.len()
            ))
            .into());
        }
        let (m, before, after, counts) = (
            &self.inner,
            before.as_slice(),
            after.as_slice(),
            counts.as_slice(),
        );
        let first_seen = first_seen.as_ref().map(Values::as_slice);
        let timestamps = timestamps.as_ref().map(Values::as_slice);
        py.detach(|| m.observe_pairs(ids, before, after, d, counts, first_seen, timestamps))?;
        Ok(())
    }

    /// Record every tracked item present in `table` (its row and current
    /// interaction count) at `timestamp`. `columns=(start, stop)` records
    /// only those columns of each row (e.g. one block of an FFM row: see
    /// `FieldModel.embedding_span`). Returns the records kept.
    #[pyo3(signature = (table, timestamp=0, columns=None))]
    fn record_publish(
        &self,
        py: Python<'_>,
        #[pyo3(from_py_with = super::args::table_arg)] table: Bound<'_, PyEmbeddingTable>,
        timestamp: i64,
        columns: Option<(usize, usize)>,
    ) -> PyResult<usize> {
        let (m, t) = (&self.inner, &table.get().inner);
        let (start, stop) = columns.unwrap_or((0, t.dim()));
        if stop <= start {
            return Err(invalid(format!(
                "columns=({start}, {stop}) is empty; pass (start, stop) with start < stop"
            ))
            .into());
        }
        Ok(py.detach(|| m.record_publish_span(t, timestamp, start, stop - start))?)
    }

    /// Record given rows of tracked items at `timestamp` — typically the
    /// final rows an eviction returned: ``monitor.record_rows(out["ids"],
    /// out["rows"], out["interactions"], out["first_seen"], now)``. Returns
    /// the records kept. With `final=True` (the default: rows that left the
    /// model) every id is retired: a tracked item's trajectory is complete
    /// (kept while there is room, the first to go when there is not) and an
    /// observed id's previous row is forgotten. Pass `final=False` for rows
    /// still in the model.
    #[pyo3(signature = (ids, rows, counts, first_seen, timestamp=None, r#final=true),
        text_signature = "($self, ids, rows, counts, first_seen, timestamp=0, final=True)")]
    #[allow(clippy::too_many_arguments)]
    fn record_rows(
        &self,
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
        rows: &Bound<'_, PyAny>,
        counts: &Bound<'_, PyAny>,
        first_seen: &Bound<'_, PyAny>,
        timestamp: Option<&Bound<'_, PyAny>>,
        r#final: bool,
    ) -> PyResult<usize> {
        let (ids, rows) = (as_ndarray(ids, "ids")?, as_ndarray(rows, "rows")?);
        let (counts, first_seen) = (
            as_ndarray(counts, "counts")?,
            as_ndarray(first_seen, "first_seen")?,
        );
        let (counts, first_seen) = (&counts, &first_seen);
        let ids = super::args::ids(&ids, "ids")?;
        let s = ids.as_slice();
        let (v, n, _) = rows_matrix(&rows)?;
        let v = v.as_slice();
        let required = |o: &Bound<'_, PyAny>, name: &str| -> PyResult<Vec<i64>> {
            Ok(opt_ints(Some(o), name)?
                .ok_or_else(|| {
                    crate::py::errors::type_error_msg(format!(
                        "{name} must be a 1-D numpy array of int64 (one per id), got None"
                    ))
                })?
                .as_slice()
                .to_vec())
        };
        let counts = required(counts, "counts")?;
        let first_seen = required(first_seen, "first_seen")?;
        for (name, len) in [
            ("rows", n),
            ("counts", counts.len()),
            ("first_seen", first_seen.len()),
        ] {
            if len != s.len() {
                return Err(crate::error::shape(
                    name,
                    format!("{} (one per id)", s.len()),
                    format!("{len}"),
                )
                .into());
            }
        }
        if let Some(k) = counts.iter().position(|&c| c < 0) {
            return Err(crate::error::Error::BadValue {
                name: "counts".into(),
                index: k,
                value: counts[k].to_string(),
                allowed: "interaction counts are >= 0".into(),
            }
            .into());
        }
        let counts: Vec<u64> = counts.iter().map(|&c| c as u64).collect();
        let timestamp = match timestamp {
            Some(t) if !t.is_none() => super::args::int_value(t, "timestamp", i64::MIN, i64::MAX)?,
            _ => 0,
        };
        let mon = &self.inner;
        Ok(py.detach(|| mon.record_rows(s, v, &counts, &first_seen, timestamp, r#final))?)
    }

    /// Recorded rows of tracked items: {"ids": uint64[n], "counts": int64[n],
    /// "timestamps": int64[n], "rows": float32[n, dim]}, sorted by (id, count,
    /// record order).
    fn trajectories<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let m = &self.inner;
        let t = py.detach(|| m.trajectories());
        let n = t.ids.len();
        let rows = Array2::from_shape_vec((n, t.dim), t.rows)
            .map_err(|e| crate::py::errors::value_error(e.to_string()))?;
        let d = PyDict::new(py);
        d.set_item("ids", t.ids.into_pyarray(py))?;
        d.set_item("counts", t.counts.into_pyarray(py))?;
        d.set_item("timestamps", t.timestamps.into_pyarray(py))?;
        d.set_item("rows", rows.into_pyarray(py))?;
        Ok(d)
    }

    /// Path efficiency ‖e(T) − e(0)‖ / Σ‖Δe‖ of tracked items that moved:
    /// {"ids", "efficiency", "path_length", "displacement", "updates"}.
    fn path_efficiency<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let m = &self.inner;
        let p = py.detach(|| m.path_efficiency());
        let d = PyDict::new(py);
        d.set_item("ids", p.ids.into_pyarray(py))?;
        d.set_item("efficiency", p.efficiency.into_pyarray(py))?;
        d.set_item("path_length", p.path_length.into_pyarray(py))?;
        d.set_item("displacement", p.displacement.into_pyarray(py))?;
        let u: Vec<i64> = p.updates.iter().map(|&x| x as i64).collect();
        d.set_item("updates", u.into_pyarray(py))?;
        Ok(d)
    }

    /// Per-update statistics per grouping, plus counters (see the docs).
    fn summary<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.summary_dict(py, false)
    }

    /// {"format_version", "config", "summary"} with plain lists, for JSON.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("format_version", crate::monitor::FORMAT_VERSION)?;
        d.set_item("config", self.config(py)?)?;
        d.set_item("summary", self.summary_dict(py, true)?)?;
        Ok(d)
    }

    /// Add `other`'s statistics and records into this monitor. Both must be
    /// configured identically.
    fn merge(
        &self,
        py: Python<'_>,
        #[pyo3(from_py_with = super::args::monitor_arg)] other: Bound<'_, PyMonitor>,
    ) -> PyResult<()> {
        let (a, b) = (&self.inner, &other.get().inner);
        Ok(py.detach(|| a.merge(b))?)
    }

    /// The whole monitor as versioned, checksummed bytes.
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let m = &self.inner;
        let b = py.detach(|| m.to_bytes());
        PyBytes::new(py, &b)
    }

    /// Rebuild a monitor from `to_bytes()`; corrupt bytes raise SnapshotError.
    #[staticmethod]
    fn from_bytes(
        py: Python<'_>,
        #[pyo3(from_py_with = super::args::bytes_arg)] data: Vec<u8>,
    ) -> PyResult<Self> {
        let data = data.as_slice();
        Ok(PyMonitor {
            inner: Arc::new(py.detach(|| Monitor::from_bytes(data))?),
        })
    }

    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, (Bound<'py, PyBytes>,))> {
        let ctor = slf.get_type().getattr("from_bytes")?;
        Ok((ctor, (slf.get().to_bytes(slf.py()),)))
    }

    /// Scan `table` for the health alerts: NaN/Inf rows, norms above
    /// `max_norm`, rows never updated, rows not updated for more than `ttl`
    /// seconds before `now` (default: the table's latest update). Returns
    /// counts and up to `max_ids` offending ids per check.
    #[staticmethod]
    #[pyo3(signature = (table, max_norm=None, ttl=None, now=None, max_ids=100))]
    fn health<'py>(
        py: Python<'py>,
        #[pyo3(from_py_with = super::args::table_arg)] table: Bound<'py, PyEmbeddingTable>,
        max_norm: Option<f32>,
        ttl: Option<i64>,
        now: Option<i64>,
        max_ids: i64,
    ) -> PyResult<Bound<'py, PyDict>> {
        let max_ids = non_negative(max_ids, "max_ids")? as usize;
        let t = &table.get().inner;
        let h = py.detach(|| scan::health(t, max_norm, ttl, now, max_ids))?;
        let d = PyDict::new(py);
        d.set_item("rows", h.rows)?;
        d.set_item("now", h.now)?;
        d.set_item("largest_norm", h.largest_norm)?;
        d.set_item("non_finite", check_dict(py, &h.non_finite)?)?;
        d.set_item(
            "over_norm",
            h.over_norm
                .as_ref()
                .map(|c| check_dict(py, c))
                .transpose()?,
        )?;
        d.set_item("never_updated", check_dict(py, &h.never_updated)?)?;
        d.set_item(
            "stale",
            h.stale.as_ref().map(|c| check_dict(py, c)).transpose()?,
        )?;
        Ok(d)
    }
}

/// The per-step bookkeeping of ``embcore.integrations.torch.watch`` for one
/// embedding, in Rust: each row's lookups so far and first sighting, and the
/// step in progress (its touched rows before the update). Made by the hook;
/// one ``before_step`` before each optimizer step and one ``after_step``
/// after it, which hands the rows to ``Monitor.observe_pairs``.
///
/// ``StepTracker(rows, dim, *, ids=None, in_sample=None, padding_idx=None)``
///
/// - ``rows``, ``dim``: the embedding's shape; ``ids``: uint64, one id per row
///   (None: the row index is the id); ``in_sample``: bool, the rows observed
///   (None: all); ``padding_idx``: a row never counted nor observed.
///
/// >>> import numpy as np, embcore
/// >>> from embcore._core import StepTracker
/// >>> weight = np.zeros((4, 2), dtype=np.float32)
/// >>> tracker = StepTracker(4, 2)
/// >>> tracker.before_step(weight, 0, looked_up=np.array([2, 1, 2]))
/// 2
/// >>> weight += 1.0  # the optimizer step
/// >>> tracker.after_step(weight, embcore.Monitor(sample_rate=1.0), 1)
/// 2
/// >>> tracker.counts.tolist()
/// [0, 1, 2, 0]
#[pyclass(frozen, name = "StepTracker", module = "embcore")]
pub struct PyStepTracker {
    inner: std::sync::Mutex<StepTracker>,
}

impl PyStepTracker {
    fn with<T>(&self, f: impl FnOnce(&mut StepTracker) -> crate::Result<T>) -> crate::Result<T> {
        match self.inner.lock() {
            Ok(mut t) => f(&mut t),
            // A panic mid-step may have left the counts half-updated: stop.
            Err(_) => Err(crate::error::Error::Internal {
                call: "StepTracker".into(),
                message: "an earlier call failed inside the library; watch() the embedding \
                          again"
                    .into(),
            }),
        }
    }

    /// `weight` as the tracker's row-major table: 2-D float32, C-contiguous,
    /// of the tracked shape.
    fn weight<'py>(&self, obj: &Bound<'py, PyAny>) -> PyResult<PyReadonlyArray2<'py, f32>> {
        let w = obj.extract::<PyReadonlyArray2<'py, f32>>().map_err(|_| {
            crate::py::errors::type_error_msg(format!(
                "weight must be a 2-D numpy array of float32 (the embedding's weight, e.g. \
                 weight.detach().numpy()), got {}",
                obj.repr().map(|r| r.to_string()).unwrap_or_default()
            ))
        })?;
        let (n, d) = self.with(|t| Ok((t.config().rows, t.config().dim)))?;
        if w.shape() != [n, d] {
            return Err(crate::error::shape(
                "weight",
                format!("shape ({n}, {d}) (the watched embedding's)"),
                format!("shape {:?}", w.shape()),
            )
            .into());
        }
        if !w.is_c_contiguous() {
            return Err(crate::py::errors::value_error(
                "weight is not C-contiguous; pass a contiguous weight (weight.contiguous())",
            ));
        }
        Ok(w)
    }
}

#[pymethods]
impl PyStepTracker {
    #[new]
    #[pyo3(signature = (rows, dim, *, ids=None, in_sample=None, padding_idx=None))]
    fn new(
        rows: usize,
        dim: usize,
        ids: Option<&Bound<'_, PyAny>>,
        in_sample: Option<PyReadonlyArray1<'_, bool>>,
        padding_idx: Option<usize>,
    ) -> PyResult<Self> {
        let ids = match ids.filter(|o| !o.is_none()) {
            Some(o) => Some(args::ids(o, "ids")?.as_slice().to_vec()),
            None => None,
        };
        let in_sample = in_sample.map(|a| a.as_array().to_vec());
        let config = TrackerConfig {
            rows,
            dim,
            ids,
            in_sample,
            padding: padding_idx,
        };
        Ok(PyStepTracker {
            inner: std::sync::Mutex::new(StepTracker::new(config)?),
        })
    }

    /// Before a step at time `now`, with `weight` (rows × dim float32, as
    /// before the update): `looked_up` (int64) the row indices looked up
    /// since the last step, `gradient` (int64, distinct, sorted) the
    /// gradient's rows, which are then the touched rows. Drops any step in
    /// progress; returns the rows the step touched. Checked first: an error
    /// changes nothing.
    #[pyo3(signature = (weight, now, looked_up=None, gradient=None))]
    fn before_step(
        &self,
        py: Python<'_>,
        weight: &Bound<'_, PyAny>,
        now: i64,
        looked_up: Option<&Bound<'_, PyAny>>,
        gradient: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let w = self.weight(weight)?;
        let looked_up = opt_ints(looked_up, "looked_up")?;
        let gradient = opt_ints(gradient, "gradient")?;
        let step = StepRows {
            looked_up: looked_up.as_ref().map(Values::as_slice),
            gradient: gradient.as_ref().map(Values::as_slice),
        };
        let w = w.as_slice().expect("checked contiguous");
        super::errors::guard("StepTracker.before_step", || {
            Ok(py.detach(|| self.with(|t| t.before_step(w, step, now)))?)
        })
    }

    /// After the step, at time `now`: its touched rows as they are now in
    /// `weight` and as they were, their counts and first sightings, handed
    /// to `monitor.observe_pairs` in one call. Returns the rows observed (0
    /// when no step is in progress).
    fn after_step(
        &self,
        py: Python<'_>,
        weight: &Bound<'_, PyAny>,
        #[pyo3(from_py_with = monitor_arg)] monitor: Bound<'_, PyMonitor>,
        now: i64,
    ) -> PyResult<usize> {
        let w = self.weight(weight)?;
        let w = w.as_slice().expect("checked contiguous");
        let m = &monitor.get().inner;
        super::errors::guard("StepTracker.after_step", || {
            Ok(py.detach(|| self.with(|t| t.after_step(w, now, m)))?)
        })
    }

    /// Drop the step in progress (its ``after_step`` will not come).
    fn discard(&self) -> PyResult<()> {
        Ok(self.with(|t| {
            t.discard();
            Ok(())
        })?)
    }

    /// Each row's lookups in training batches so far (a copy).
    #[getter]
    fn counts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, numpy::PyArray1<i64>>> {
        Ok(self.with(|t| Ok(t.counts()))?.into_pyarray(py))
    }

    /// Whether each row was touched by a step yet (a copy).
    #[getter]
    fn seen<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, numpy::PyArray1<bool>>> {
        Ok(self.with(|t| Ok(t.seen()))?.into_pyarray(py))
    }

    /// The time of each seen row's first step, 0 for the others (a copy).
    #[getter]
    fn first_seen<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, numpy::PyArray1<i64>>> {
        Ok(self.with(|t| Ok(t.first_seen()))?.into_pyarray(py))
    }

    /// Rows of the step in progress, or None.
    #[getter]
    fn pending(&self) -> PyResult<Option<usize>> {
        Ok(self.with(|t| Ok(t.pending()))?)
    }

    /// Seconds spent in the monitor's ``observe_pairs``, summed over steps.
    #[getter]
    fn observe_seconds(&self) -> PyResult<f64> {
        Ok(self.with(|t| Ok(t.observe_seconds()))?)
    }
}

fn monitor_arg<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyMonitor>> {
    obj.cast::<PyMonitor>().cloned().map_err(|_| {
        crate::py::errors::type_error_msg(format!(
            "monitor must be an embcore.Monitor, got {}",
            obj.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })
}
