//! `embcore.MatrixFactorization`: a thin wrapper over the field engine's
//! two-field model (`train::mf`), sharing everything with the field models
//! through `py::model`.

use super::args::{self, Params};
use super::ffm::{Kind, PyFieldModel};
use super::model::{self as shared, EventArrays, ModelSettings, TrainCall, MODEL_PARAMS};
use super::monitor::PyMonitor;
use super::table::{PyEmbeddingTable, TABLE_PARAMS};
use crate::train::mf::{self, MfConfig};
use numpy::PyArray1;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use std::sync::Arc;

/// A lifecycle given as a dict of EmbeddingTable's lifecycle keywords.
pub(super) fn lifecycle_arg(
    d: Option<&Bound<'_, PyDict>>,
    name: &str,
) -> PyResult<Option<crate::storage::lifecycle::Lifecycle>> {
    let Some(d) = d else { return Ok(None) };
    const KEYS: [&str; 6] = super::table::LIFECYCLE_PARAMS;
    for k in d.keys() {
        let k: String = k.extract()?;
        if !KEYS.contains(&k.as_str()) {
            return Err(crate::py::errors::value_error(format!(
                "{name} has an unknown key {k:?}; use {}",
                KEYS.join(", ")
            )));
        }
    }
    let get_i64 = |k: &str| -> PyResult<Option<i64>> {
        match d.get_item(k)? {
            Some(v) if !v.is_none() => Ok(Some(args::int_value(
                &v,
                &format!("{name}['{k}']"),
                i64::MIN,
                i64::MAX,
            )?)),
            _ => Ok(None),
        }
    };
    let eviction: String = match d.get_item("eviction")? {
        Some(v) => v.extract()?,
        None => "lru".into(),
    };
    super::table::lifecycle_config(super::table::LifecycleArgs {
        ttl: get_i64("ttl")?,
        max_rows: get_i64("max_rows")?,
        max_bytes: get_i64("max_bytes")?,
        keep_floor: get_i64("keep_floor")?.unwrap_or(0),
        eviction,
        min_count: get_i64("min_count")?.unwrap_or(1),
    })
}

/// Logistic (or squared-loss) matrix factorisation trained one event at a
/// time, Hogwild across threads.
///
/// ``MatrixFactorization(dim=32, *, optimizer='adagrad', learning_rate=0.05,
/// l2=0.0, max_norm=None, loss='logistic', bias=True, eps=1e-08,
/// initial_accumulator=0.1, init_scale=0.1, seed=0, capacity=67108864,
/// item_lifecycle=None, user_lifecycle=None)``
///
/// - ``dim``: embedding width; ``optimizer``: 'sgd', 'adagrad' or 'rowwise_adagrad';
///   ``learning_rate`` in (0, 100]; ``l2`` in [0, 100]; ``max_norm``: clip rows to this
///   l2 norm after each step (None: no clipping);
/// - ``loss``: 'logistic' (labels in [0, 1]) or 'squared'; ``bias``: global and per-row
///   biases; ``eps``, ``initial_accumulator``: Adagrad's; ``init_scale``: rows start
///   uniform in [-init_scale, init_scale]; ``seed``: initial rows depend only on
///   (seed, id); ``capacity``: rows reserved per table;
/// - ``item_lifecycle`` / ``user_lifecycle``: dicts of EmbeddingTable's lifecycle
///   keywords (ttl, max_rows, max_bytes, keep_floor, eviction, min_count).
///
/// >>> import numpy as np, embcore
/// >>> mf = embcore.MatrixFactorization(dim=8, seed=1)
/// >>> mf.train(np.array([1, 2], dtype=np.uint64), np.array([7, 7], dtype=np.uint64),
/// ...          np.array([1.0, 0.0], dtype=np.float32))["new_items"]
/// 1
///
/// It is a ``FieldModel`` over fields ('user', 'item') (the two-field case of the
/// field-aware model), so ``fields``, ``table(field)``, ``embedding_of``,
/// ``train_columns`` and ``score_columns`` work as for the field models.
#[pyclass(frozen, extends = PyFieldModel, name = "MatrixFactorization", module = "embcore")]
pub struct PyMatrixFactorization;

fn model<'a>(
    slf: &'a Bound<'_, PyMatrixFactorization>,
) -> &'a Arc<crate::train::model::FieldModel> {
    &slf.as_super().get().inner
}

impl PyMatrixFactorization {
    fn names() -> Vec<String> {
        mf::column_names()
    }

    fn scores(
        slf: &Bound<'_, Self>,
        py: Python<'_>,
        users: &Bound<'_, PyAny>,
        items: &Bound<'_, PyAny>,
        call: &'static str,
    ) -> PyResult<Vec<f32>> {
        let u = args::ids(users, "users")?;
        let i = args::ids(items, "items")?;
        let cols = [u.as_slice(), i.as_slice()];
        shared::score(py, model(slf), &cols, &Self::names(), call)
    }
}

#[pymethods]
impl PyMatrixFactorization {
    #[new]
    #[pyo3(signature = (*args, **kwargs),
        text_signature = "(dim=32, *, optimizer='adagrad', learning_rate=0.05, l2=0.0, max_norm=None, loss='logistic', bias=True, eps=1e-08, initial_accumulator=0.1, init_scale=0.1, seed=0, capacity=67108864, item_lifecycle=None, user_lifecycle=None)")]
    fn new(
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyClassInitializer<Self>> {
        let names: Vec<&'static str> = TABLE_PARAMS
            .iter()
            .chain(&MODEL_PARAMS)
            .chain(&["item_lifecycle", "user_lifecycle"])
            .copied()
            .collect();
        let p = Params::parse("MatrixFactorization", &names, 1, args, kwargs)?;
        let s = ModelSettings::from_params(&p, 32)?;
        let users = lifecycle_arg(p.dict("user_lifecycle")?, "user_lifecycle")?;
        let items = lifecycle_arg(p.dict("item_lifecycle")?, "item_lifecycle")?;
        let cfg = MfConfig {
            table: s.table,
            loss: s.loss,
            bias: s.bias,
        };
        let base = PyFieldModel {
            inner: Arc::new(mf::new(cfg, users, items)?),
            kind: Kind::MatrixFactorization,
        };
        Ok(PyClassInitializer::from(base).add_subclass(PyMatrixFactorization))
    }

    /// The user table (shared, not a copy).
    #[getter]
    fn users(slf: &Bound<'_, Self>) -> PyEmbeddingTable {
        PyEmbeddingTable::wrap(model(slf).tables[0].clone())
    }

    /// The item table (shared, not a copy).
    #[getter]
    fn items(slf: &Bound<'_, Self>) -> PyEmbeddingTable {
        PyEmbeddingTable::wrap(model(slf).tables[1].clone())
    }

    fn __repr__(slf: &Bound<'_, Self>) -> String {
        let m = model(slf);
        format!(
            "MatrixFactorization(dim={}, optimizer='{}', loss='{}', users={}, items={})",
            m.cfg.dim(),
            m.cfg.table.optimizer.kind.name(),
            m.cfg.loss.name(),
            m.tables[0].len(),
            m.tables[1].len()
        )
    }

    /// Train on events, one optimizer step per event, in order. All arrays are
    /// validated, and both tables' capacity checked, before any row is
    /// touched (a rejected call changes nothing); the GIL is released while
    /// training. Returns {events, mean_loss, new_users, new_items,
    /// unadmitted_events}. With `monitor=` (an `embcore.Monitor`), every
    /// item-row update also feeds the monitor's statistics and tracked
    /// trajectories, in Rust.
    #[pyo3(signature = (users, items, labels, weights=None, timestamps=None, threads=None,
        count_interactions=true, monitor=None, return_scores=false),
        text_signature = "($self, users, items, labels, weights=None, timestamps=None, threads=1, count_interactions=True, monitor=None, return_scores=False)")]
    #[allow(clippy::too_many_arguments)]
    fn train<'py>(
        slf: &Bound<'py, Self>,
        py: Python<'py>,
        users: &Bound<'py, PyAny>,
        items: &Bound<'py, PyAny>,
        labels: &Bound<'py, PyAny>,
        weights: Option<&Bound<'py, PyAny>>,
        timestamps: Option<&Bound<'py, PyAny>>,
        threads: Option<&Bound<'py, PyAny>>,
        count_interactions: bool,
        monitor: Option<&Bound<'py, PyMonitor>>,
        return_scores: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let threads = args::threads(threads)?;
        let u = args::ids(users, "users")?;
        let i = args::ids(items, "items")?;
        let arrays = EventArrays::convert(labels, weights, timestamps)?;
        let cols = [u.as_slice(), i.as_slice()];
        let names = Self::names();
        let mut stats = shared::train(
            py,
            model(slf),
            &TrainCall {
                call: "MatrixFactorization.train",
                columns: &cols,
                names: &names,
                arrays: &arrays,
                threads,
                count_interactions,
                observed: mf::OBSERVED,
                monitor,
                return_scores,
            },
        )?;
        let d = shared::stats_dict(py, &mut stats, return_scores)?;
        d.set_item("new_users", stats.new_rows[0])?;
        d.set_item("new_items", stats.new_rows[1])?;
        d.set_item("unadmitted_events", stats.unadmitted_events)?;
        Ok(d)
    }

    /// Raw scores (logits for the logistic loss) of (user, item) pairs from the
    /// live tables. Read-only: unknown ids are never inserted; an unknown side
    /// contributes a zero vector and zero bias (cold-start score = global bias
    /// + the known side's bias).
    fn score<'py>(
        slf: &Bound<'py, Self>,
        py: Python<'py>,
        users: &Bound<'py, PyAny>,
        items: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let s = Self::scores(slf, py, users, items, "MatrixFactorization.score")?;
        Ok(shared::scores_array(py, model(slf), s, false))
    }

    /// Probabilities sigmoid(score) for the logistic loss; scores otherwise.
    fn predict<'py>(
        slf: &Bound<'py, Self>,
        py: Python<'py>,
        users: &Bound<'py, PyAny>,
        items: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let s = Self::scores(slf, py, users, items, "MatrixFactorization.predict")?;
        Ok(shared::scores_array(py, model(slf), s, true))
    }

    /// Read a model written by `save`. `capacity` overrides the saved table
    /// capacity; the lifecycles (not stored in the file) are given again.
    /// Raises SnapshotError for a truncated, corrupted or foreign file.
    #[staticmethod]
    #[pyo3(signature = (path, capacity=None, item_lifecycle=None, user_lifecycle=None))]
    fn load(
        py: Python<'_>,
        #[pyo3(from_py_with = args::path_arg)] path: std::path::PathBuf,
        capacity: Option<&Bound<'_, PyAny>>,
        item_lifecycle: Option<&Bound<'_, PyDict>>,
        user_lifecycle: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let capacity = args::capacity(capacity)?;
        let items = lifecycle_arg(item_lifecycle, "item_lifecycle")?;
        let users = lifecycle_arg(user_lifecycle, "user_lifecycle")?;
        let m = super::errors::guard("MatrixFactorization.load", || {
            Ok(py.detach(|| crate::train::model_file::load_mf(&path, capacity, users, items))?)
        })?;
        super::ffm::wrap(py, m, Kind::MatrixFactorization)
    }
}
