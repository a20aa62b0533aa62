//! `embcore.MatrixFactorization`: a thin wrapper over `mf::MatrixFactorization`.

use super::args;
use super::monitor::PyMonitor;
use super::table::{optimizer_dict, table_config, PyEmbeddingTable};
use crate::storage::table::DEFAULT_CAPACITY;
use crate::train::mf::{Batch, Loss, MatrixFactorization, MfConfig, NoObserver};
use numpy::{IntoPyArray, PyArray1, PyArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::Arc;

/// A lifecycle given as a dict of EmbeddingTable's lifecycle keywords.
pub(super) fn lifecycle_arg(
    d: Option<&Bound<'_, PyDict>>,
    name: &str,
) -> PyResult<Option<crate::storage::lifecycle::Lifecycle>> {
    let Some(d) = d else { return Ok(None) };
    const KEYS: [&str; 6] = [
        "ttl",
        "max_rows",
        "max_bytes",
        "keep_floor",
        "eviction",
        "min_count",
    ];
    for k in d.keys() {
        let k: String = k.extract()?;
        if !KEYS.contains(&k.as_str()) {
            return Err(PyValueError::new_err(format!(
                "{name} has an unknown key {k:?}; use {}",
                KEYS.join(", ")
            )));
        }
    }
    let get_i64 = |k: &str| -> PyResult<Option<i64>> {
        match d.get_item(k)? {
            Some(v) if !v.is_none() => Ok(Some(v.extract()?)),
            _ => Ok(None),
        }
    };
    let eviction: String = match d.get_item("eviction")? {
        Some(v) => v.extract()?,
        None => "lru".into(),
    };
    super::table::lifecycle_config(
        get_i64("ttl")?,
        get_i64("max_rows")?,
        get_i64("max_bytes")?,
        get_i64("keep_floor")?.unwrap_or(0),
        &eviction,
        get_i64("min_count")?.unwrap_or(1),
    )
}

#[pyclass(frozen, name = "MatrixFactorization", module = "embcore")]
pub struct PyMatrixFactorization {
    pub inner: Arc<MatrixFactorization>,
}

#[pymethods]
impl PyMatrixFactorization {
    #[new]
    #[pyo3(signature = (dim=32, *, optimizer="adagrad", learning_rate=0.05, l2=0.0, max_norm=None,
        loss="logistic", bias=true, eps=1e-8, initial_accumulator=0.1, init_scale=0.1, seed=0,
        capacity=DEFAULT_CAPACITY as i64, item_lifecycle=None, user_lifecycle=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        dim: i64,
        optimizer: &str,
        learning_rate: f32,
        l2: f32,
        max_norm: Option<f32>,
        loss: &str,
        bias: bool,
        eps: f32,
        initial_accumulator: f32,
        init_scale: f32,
        seed: u64,
        capacity: i64,
        item_lifecycle: Option<&Bound<'_, PyDict>>,
        user_lifecycle: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let table = table_config(
            dim,
            optimizer,
            learning_rate,
            l2,
            max_norm,
            eps,
            initial_accumulator,
            init_scale,
            seed,
            capacity,
        )?;
        let cfg = MfConfig {
            table,
            loss: Loss::parse(loss)?,
            bias,
        };
        Ok(PyMatrixFactorization {
            inner: Arc::new(MatrixFactorization::with_lifecycles(
                cfg,
                lifecycle_arg(user_lifecycle, "user_lifecycle")?,
                lifecycle_arg(item_lifecycle, "item_lifecycle")?,
            )?),
        })
    }

    /// The user table (shared, not a copy).
    #[getter]
    fn users(&self) -> PyEmbeddingTable {
        PyEmbeddingTable::wrap(self.inner.users.clone())
    }

    /// The item table (shared, not a copy).
    #[getter]
    fn items(&self) -> PyEmbeddingTable {
        PyEmbeddingTable::wrap(self.inner.items.clone())
    }

    #[getter]
    fn dim(&self) -> usize {
        self.inner.cfg.table.dim
    }

    #[getter]
    fn loss(&self) -> &'static str {
        self.inner.cfg.loss.name()
    }

    #[getter]
    fn bias(&self) -> bool {
        self.inner.cfg.bias
    }

    #[getter]
    fn global_bias(&self) -> f32 {
        self.inner.global_bias()
    }

    /// Events trained on so far (the default event time of the next event).
    #[getter]
    fn events_seen(&self) -> u64 {
        self.inner.events_seen()
    }

    #[getter]
    fn optimizer<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        optimizer_dict(py, &self.inner.cfg.table)
    }

    fn __repr__(&self) -> String {
        format!(
            "MatrixFactorization(dim={}, optimizer='{}', loss='{}', users={}, items={})",
            self.inner.cfg.table.dim,
            self.inner.cfg.table.optimizer.kind.name(),
            self.inner.cfg.loss.name(),
            self.inner.users.len(),
            self.inner.items.len()
        )
    }

    /// Train on events, one optimizer step per event, in order. All arrays are
    /// validated before any row is touched; the GIL is released while
    /// training. Returns {events, mean_loss, new_users, new_items}. With
    /// `monitor=` (an `embcore.Monitor`), every item-row update also feeds
    /// the monitor's statistics and tracked trajectories, in Rust.
    #[pyo3(signature = (users, items, labels, weights=None, timestamps=None, threads=1,
        count_interactions=true, monitor=None))]
    #[allow(clippy::too_many_arguments)]
    fn train<'py>(
        &self,
        py: Python<'py>,
        users: &Bound<'py, PyAny>,
        items: &Bound<'py, PyAny>,
        labels: &Bound<'py, PyAny>,
        weights: Option<&Bound<'py, PyAny>>,
        timestamps: Option<&Bound<'py, PyAny>>,
        threads: i64,
        count_interactions: bool,
        monitor: Option<&Bound<'py, PyMonitor>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        if threads < 1 {
            return Err(PyValueError::new_err(format!(
                "threads must be >= 1, got {threads}"
            )));
        }
        let u = args::ids(users, "users")?;
        let i = args::ids(items, "items")?;
        let y = args::floats(labels, "labels")?;
        let w = args::opt_floats(weights, "weights")?;
        let t = args::opt_times(timestamps, "timestamps")?;
        let batch = Batch {
            users: u.as_slice(),
            items: i.as_slice(),
            labels: y.as_slice(),
            weights: w.as_ref().map(|w| w.as_slice()),
            timestamps: t
                .as_ref()
                .map(|t| t.as_slice().expect("checked contiguous")),
        };
        let model = &self.inner;
        let monitor_core = monitor.map(|m| m.get().inner.clone());
        if let Some(m) = &monitor_core {
            m.check_dim(model.cfg.table.dim)?;
        }
        let threads = threads as usize;
        let stats = py.detach(|| match &monitor_core {
            Some(m) => model.train(&batch, threads, count_interactions, &**m),
            None => model.train(&batch, threads, count_interactions, &NoObserver),
        })?;
        let d = PyDict::new(py);
        d.set_item("events", stats.events)?;
        d.set_item("mean_loss", stats.mean_loss)?;
        d.set_item("new_users", stats.new_users)?;
        d.set_item("new_items", stats.new_items)?;
        d.set_item("unadmitted_events", stats.unadmitted_events)?;
        Ok(d)
    }

    /// Raw scores (logits for the logistic loss) of (user, item) pairs from the
    /// live tables. Read-only: unknown ids are never inserted; an unknown side
    /// contributes a zero vector and zero bias (cold-start score = global bias
    /// + the known side's bias).
    fn score<'py>(
        &self,
        py: Python<'py>,
        users: &Bound<'py, PyAny>,
        items: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let u = args::ids(users, "users")?;
        let i = args::ids(items, "items")?;
        let (us, is) = (u.as_slice(), i.as_slice());
        let mut out = vec![0.0f32; us.len()];
        let model = &self.inner;
        if us.len() != is.len() {
            return Err(PyValueError::new_err(format!(
                "users has {} elements but items has {}",
                us.len(),
                is.len()
            )));
        }
        py.detach(|| model.score(us, is, &mut out))?;
        Ok(out.into_pyarray(py))
    }

    /// Probabilities sigmoid(score) for the logistic loss; scores otherwise.
    fn predict<'py>(
        &self,
        py: Python<'py>,
        users: &Bound<'py, PyAny>,
        items: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let s = self.score(py, users, items)?;
        if self.inner.cfg.loss == Loss::Logistic {
            let v: Vec<f32> = s
                .readonly()
                .as_slice()?
                .iter()
                .map(|&x| crate::train::mf::sigmoid(x))
                .collect();
            return Ok(v.into_pyarray(py));
        }
        Ok(s)
    }

    /// Write the whole model (both tables with their optimizer state and
    /// metadata, the global bias, the event count) to `path` atomically:
    /// temp file, fsync, rename; a crash leaves the previous file whole.
    /// Returns the bytes written. Lifecycles are not stored.
    fn save(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<u64> {
        let m = &self.inner;
        Ok(py.detach(|| crate::train::model_file::save_mf(m, &path))?)
    }

    /// Read a model written by `save`. `capacity` overrides the saved table
    /// capacity; the lifecycles (not stored in the file) are given again.
    /// Raises SnapshotError for a truncated, corrupted or foreign file.
    #[staticmethod]
    #[pyo3(signature = (path, capacity=None, item_lifecycle=None, user_lifecycle=None))]
    fn load(
        py: Python<'_>,
        path: std::path::PathBuf,
        capacity: Option<usize>,
        item_lifecycle: Option<&Bound<'_, PyDict>>,
        user_lifecycle: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let items = lifecycle_arg(item_lifecycle, "item_lifecycle")?;
        let users = lifecycle_arg(user_lifecycle, "user_lifecycle")?;
        let m = py.detach(|| crate::train::model_file::load_mf(&path, capacity, users, items))?;
        Ok(PyMatrixFactorization { inner: Arc::new(m) })
    }

    /// An independent deep copy of the model (both tables and the global bias).
    fn copy(&self, py: Python<'_>) -> PyResult<Self> {
        let m = &self.inner;
        Ok(PyMatrixFactorization {
            inner: Arc::new(py.detach(|| m.copy())?),
        })
    }
}
