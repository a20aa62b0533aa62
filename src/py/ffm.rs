//! `embcore.FieldAwareFM` and `embcore.FactorizationMachine`: thin wrappers
//! over the field engine's model (`train::model`), sharing one base class
//! for the methods and `py::model` with `MatrixFactorization`.

use super::args::{self, Params};
use super::errors::guard;
use super::model::{self as shared, EventArrays, ModelSettings, TrainCall, MODEL_PARAMS};
use super::monitor::PyMonitor;
use super::table::{optimizer_dict, PyEmbeddingTable, TABLE_PARAMS};
pub use crate::train::model::Kind;
use crate::train::model::{field_list, FieldConfig, FieldModel, Interaction, Observed};
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use std::sync::Arc;

type IdsAndRows<'py> = (Bound<'py, PyArray1<u64>>, Bound<'py, PyArray2<f32>>);

/// The one model of the engine, base class of ``MatrixFactorization`` (its
/// two-field case), ``FieldAwareFM`` and ``FactorizationMachine``; not
/// constructed directly (build one of those). Its methods are the protocol
/// every model answers: ``fields``, ``table(field)``, ``embedding_of``,
/// ``embedding_span``, ``train_columns``, ``score_columns``, ``interaction``.
#[pyclass(frozen, subclass, name = "FieldModel", module = "embcore")]
pub struct PyFieldModel {
    pub inner: Arc<FieldModel>,
    /// The Python class the model is wrapped as.
    pub kind: Kind,
}

/// Id columns in field order: borrowed 1-D arrays, or copies of the columns
/// of a 2-D (n, n_fields) array.
enum Columns<'py> {
    Borrowed(Vec<args::Ids<'py>>),
    Owned(Vec<Vec<u64>>),
}

impl Columns<'_> {
    fn slices(&self) -> Vec<&[u64]> {
        match self {
            Columns::Borrowed(v) => v.iter().map(|c| c.as_slice()).collect(),
            Columns::Owned(v) => v.iter().map(Vec::as_slice).collect(),
        }
    }
}

fn id_columns<'py>(obj: &Bound<'py, PyAny>, fields: &[String]) -> PyResult<Columns<'py>> {
    let names = field_list(fields);
    if let Ok(d) = obj.cast::<PyDict>() {
        for key in d.keys() {
            let name = key.cast::<PyString>().map_err(|_| {
                crate::py::errors::type_error_msg(format!(
                    "columns keys must be field names (str), got {}; the fields are {names}",
                    key.repr().map(|r| r.to_string()).unwrap_or_default()
                ))
            })?;
            let name = name.to_str()?;
            if !fields.iter().any(|f| f == name) {
                return Err(crate::py::errors::value_error(format!(
                    "columns has an unknown field '{name}'; this model's fields are {names} \
                     (drop the column or create the model with it)"
                )));
            }
        }
        let mut out = Vec::with_capacity(fields.len());
        for f in fields {
            let Some(col) = d.get_item(f)? else {
                return Err(crate::py::errors::value_error(format!(
                    "columns has no '{f}' column; this model needs one id array per field \
                     {names} (use a fixed id such as 0 for a missing value)"
                )));
            };
            out.push(args::ids(&col, &format!("columns['{f}']"))?);
        }
        return Ok(Columns::Borrowed(out));
    }
    let matrix: Option<(Vec<usize>, Vec<u64>)> =
        if let Ok(a) = obj.extract::<PyReadonlyArray2<'py, u64>>() {
            if !a.is_c_contiguous() {
                return Err(crate::py::errors::value_error(
                    "columns is not C-contiguous; pass np.ascontiguousarray(columns)",
                ));
            }
            Some((a.shape().to_vec(), a.as_slice()?.to_vec()))
        } else if let Ok(a) = obj.extract::<PyReadonlyArray2<'py, i64>>() {
            if !a.is_c_contiguous() {
                return Err(crate::py::errors::value_error(
                    "columns is not C-contiguous; pass np.ascontiguousarray(columns)",
                ));
            }
            let s = a.as_slice()?;
            if let Some(k) = s.iter().position(|&x| x < 0) {
                return Err(crate::py::errors::value_error(format!(
                    "columns[{}, {}] = {} is negative; ids are unsigned 64-bit integers",
                    k / fields.len(),
                    k % fields.len(),
                    s[k]
                )));
            }
            Some((a.shape().to_vec(), s.iter().map(|&x| x as u64).collect()))
        } else {
            None
        };
    let Some((shape, data)) = matrix else {
        return Err(crate::py::errors::type_error_msg(format!(
            "columns must be a dict of field name -> 1-D uint64 id array, or a 2-D uint64 array \
             of shape (events, {}) with one column per field in the order {names}; got {}",
            fields.len(),
            obj.get_type().name()?
        )));
    };
    let nf = fields.len();
    if shape[1] != nf {
        return Err(crate::py::errors::value_error(format!(
            "columns has shape ({}, {}) but this model has {nf} fields {names}; \
             pass an array of shape ({}, {nf})",
            shape[0], shape[1], shape[0]
        )));
    }
    Ok(Columns::Owned(
        (0..nf)
            .map(|f| data.iter().skip(f).step_by(nf).copied().collect())
            .collect(),
    ))
}

/// `lifecycles={field: {...} or None}` as one optional lifecycle per field.
fn lifecycles_arg(
    lifecycles: Option<&Bound<'_, PyDict>>,
    fields: &[String],
) -> PyResult<Vec<Option<crate::storage::lifecycle::Lifecycle>>> {
    let mut per_field = vec![None; fields.len()];
    if let Some(d) = lifecycles {
        for (key, value) in d.iter() {
            let name: String = key.extract().map_err(|_| {
                crate::py::errors::type_error_msg("lifecycles keys must be field names (str)")
            })?;
            let Some(k) = fields.iter().position(|f| *f == name) else {
                return Err(crate::py::errors::value_error(format!(
                    "lifecycles has an unknown field '{name}'; the fields are {}",
                    field_list(fields)
                )));
            };
            if value.is_none() {
                continue;
            }
            let spec = value.cast::<PyDict>().map_err(|_| {
                crate::py::errors::type_error_msg(format!(
                    "lifecycles['{name}'] must be a dict of lifecycle settings \
                     (ttl, max_rows, max_bytes, keep_floor, eviction, min_count) or None"
                ))
            })?;
            per_field[k] = super::mf::lifecycle_arg(Some(spec), &format!("lifecycles['{name}']"))?;
        }
    }
    Ok(per_field)
}

/// A field model from a constructor's `*args, **kwargs`: `fields`, then the
/// model settings (`default_dim` when dim is not given) and `lifecycles`.
fn build(
    call: &'static str,
    interaction: Interaction,
    default_dim: i64,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<PyFieldModel> {
    let names: Vec<&'static str> = ["fields"]
        .iter()
        .chain(&TABLE_PARAMS)
        .chain(&MODEL_PARAMS)
        .chain(&["lifecycles"])
        .copied()
        .collect();
    let p = Params::parse(call, &names, 2, args, kwargs)?;
    let given = p.required("fields")?;
    let fields: Vec<String> = if given.is_instance_of::<PyString>() {
        None
    } else {
        given.extract().ok()
    }
    .ok_or_else(|| {
        super::errors::type_error_msg(format!(
            "fields must be a list of field names (str), e.g. ['user', 'item', 'creator'], \
             got {}",
            given.repr().map(|r| r.to_string()).unwrap_or_default()
        ))
    })?;
    let s = ModelSettings::from_params(&p, default_dim)?;
    let per_field = lifecycles_arg(p.dict("lifecycles")?, &fields)?;
    let cfg = FieldConfig {
        fields,
        interaction,
        table: s.table,
        loss: s.loss,
        bias: s.bias,
    };
    let model = FieldModel::with_lifecycles(cfg, per_field)?;
    Ok(PyFieldModel {
        kind: Kind::of(&model, false),
        inner: Arc::new(model),
    })
}

/// A Python object of the class `kind` around `inner`.
pub fn wrap(py: Python<'_>, inner: FieldModel, kind: Kind) -> PyResult<Py<PyAny>> {
    let base = PyClassInitializer::from(PyFieldModel {
        inner: Arc::new(inner),
        kind,
    });
    Ok(match kind {
        Kind::MatrixFactorization => {
            Bound::new(py, base.add_subclass(super::mf::PyMatrixFactorization))?.into_any()
        }
        Kind::FieldAware => Bound::new(py, base.add_subclass(PyFieldAwareFM))?.into_any(),
        Kind::Plain => Bound::new(py, base.add_subclass(PyFactorizationMachine))?.into_any(),
    }
    .unbind())
}

impl PyFieldModel {
    /// The argument names of the id columns, for messages.
    fn column_names(&self) -> Vec<String> {
        self.inner
            .cfg
            .fields
            .iter()
            .map(|f| format!("columns['{f}']"))
            .collect()
    }

    fn scores(
        &self,
        py: Python<'_>,
        columns: &Bound<'_, PyAny>,
        call: &'static str,
    ) -> PyResult<Vec<f32>> {
        let cols = id_columns(columns, &self.inner.cfg.fields)?;
        shared::score(py, &self.inner, &cols.slices(), &self.column_names(), call)
    }

    fn field(&self, name: &str) -> PyResult<usize> {
        Ok(self.inner.cfg.field_index(name)?)
    }

    fn observed(&self, field: &str, against: Option<&str>) -> PyResult<Observed> {
        let o = Observed {
            field: self.field(field)?,
            against: against.map(|a| self.field(a)).transpose()?,
        };
        self.inner.observed_span(o)?;
        Ok(o)
    }
}

#[pymethods]
impl PyFieldModel {
    /// Field names, in column order.
    #[getter]
    fn fields(&self) -> Vec<String> {
        self.inner.cfg.fields.clone()
    }

    /// Width of one latent vector (one FFM block; the FM vector).
    #[getter]
    fn dim(&self) -> usize {
        self.inner.cfg.dim()
    }

    /// Width of a table row: dim × (n_fields − 1) for FFM, dim for FM.
    #[getter]
    fn row_dim(&self) -> usize {
        self.inner.cfg.row_dim()
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

    /// {field: EmbeddingTable}, the live tables (shared, not copies).
    #[getter]
    fn tables<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (f, t) in self.inner.cfg.fields.iter().zip(&self.inner.tables) {
            d.set_item(f, PyEmbeddingTable::wrap(t.clone()))?;
        }
        Ok(d)
    }

    /// The live table of one field (shared, not a copy).
    fn table(
        &self,
        #[pyo3(from_py_with = args::field_arg)] field: String,
    ) -> PyResult<PyEmbeddingTable> {
        Ok(PyEmbeddingTable::wrap(
            self.inner.tables[self.field(&field)?].clone(),
        ))
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let m = &slf.get().inner;
        let sizes: Vec<String> = m
            .cfg
            .fields
            .iter()
            .zip(&m.tables)
            .map(|(f, t)| format!("{f}={}", t.len()))
            .collect();
        let fields: Vec<String> = m.cfg.fields.iter().map(|f| format!("'{f}'")).collect();
        Ok(format!(
            "{}(fields=[{}], dim={}, optimizer='{}', loss='{}', rows: {})",
            slf.get_type().name()?,
            fields.join(", "),
            m.cfg.dim(),
            m.cfg.table.optimizer.kind.name(),
            m.cfg.loss.name(),
            sizes.join(", ")
        ))
    }

    /// Train on events, one optimizer step per event, in order. `columns` is
    /// a dict {field: 1-D uint64 ids} or a 2-D uint64 array (events, n_fields)
    /// in field order. Everything is validated, and every table's capacity
    /// checked, before any row is touched; the GIL is released while
    /// training. Returns {events, mean_loss, new_features: {field: rows
    /// created}}. With `monitor=` (an `embcore.Monitor`), every update of
    /// `monitor_field`'s row feeds the monitor, which sees the block against
    /// `monitor_against` (FFM), or the whole row when it is None.
    #[pyo3(signature = (columns, labels, weights=None, timestamps=None, threads=None,
        count_interactions=true, monitor=None, monitor_field=None, monitor_against=None,
        return_scores=false),
        text_signature = "($self, columns, labels, weights=None, timestamps=None, threads=1, count_interactions=True, monitor=None, monitor_field=None, monitor_against=None, return_scores=False)")]
    #[allow(clippy::too_many_arguments)]
    fn train_columns<'py>(
        &self,
        py: Python<'py>,
        columns: &Bound<'py, PyAny>,
        labels: &Bound<'py, PyAny>,
        weights: Option<&Bound<'py, PyAny>>,
        timestamps: Option<&Bound<'py, PyAny>>,
        threads: Option<&Bound<'py, PyAny>>,
        count_interactions: bool,
        monitor: Option<&Bound<'py, PyMonitor>>,
        #[pyo3(from_py_with = args::monitor_field_arg)] monitor_field: Option<String>,
        #[pyo3(from_py_with = args::monitor_against_arg)] monitor_against: Option<String>,
        return_scores: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let (monitor_field, monitor_against) =
            (monitor_field.as_deref(), monitor_against.as_deref());
        let threads = args::threads(threads)?;
        let fields = &self.inner.cfg.fields;
        let cols = id_columns(columns, fields)?;
        let arrays = EventArrays::convert(labels, weights, timestamps)?;
        let field_name = match (monitor_field, monitor.is_some()) {
            (Some(f), _) => f,
            (None, true) if fields.iter().any(|f| f == "item") => "item",
            (None, true) => {
                return Err(crate::error::invalid(format!(
                    "monitor= needs monitor_field= (one of {}): the field whose \
                     embeddings the monitor watches",
                    field_list(fields)
                ))
                .into())
            }
            (None, false) => &fields[fields.len() - 1],
        };
        let observed = self.observed(field_name, monitor_against)?;
        let slices = cols.slices();
        let names = self.column_names();
        let mut stats = shared::train(
            py,
            &self.inner,
            &TrainCall {
                call: "FieldModel.train",
                columns: &slices,
                names: &names,
                arrays: &arrays,
                threads,
                count_interactions,
                observed,
                monitor,
                return_scores,
            },
        )?;
        let d = shared::stats_dict(py, &mut stats, return_scores)?;
        let new = PyDict::new(py);
        for (f, c) in fields.iter().zip(&stats.new_rows) {
            new.set_item(f, c)?;
        }
        d.set_item("new_features", new)?;
        d.set_item("unadmitted_events", stats.unadmitted_events)?;
        Ok(d)
    }

    /// Raw scores (logits for the logistic loss) of events from the live
    /// tables. Read-only: unknown ids are never inserted and contribute a
    /// zero vector and a zero linear weight.
    fn score_columns<'py>(
        &self,
        py: Python<'py>,
        columns: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let s = self.scores(py, columns, "FieldModel.score")?;
        Ok(shared::scores_array(py, &self.inner, s, false))
    }

    /// Probabilities sigmoid(score) for the logistic loss; scores otherwise.
    fn predict_columns<'py>(
        &self,
        py: Python<'py>,
        columns: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let s = self.scores(py, columns, "FieldModel.predict")?;
        Ok(shared::scores_array(py, &self.inner, s, true))
    }

    /// `train_columns` (the field models' `train`; `MatrixFactorization.train`
    /// takes users and items instead).
    #[pyo3(signature = (*args, **kwargs),
        text_signature = "($self, columns, labels, weights=None, timestamps=None, threads=1, count_interactions=True, monitor=None, monitor_field=None, monitor_against=None, return_scores=False)")]
    fn train<'py>(
        slf: &Bound<'py, Self>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        slf.as_any().call_method("train_columns", args, kwargs)
    }

    /// `score_columns` (the field models' `score`).
    fn score<'py>(
        &self,
        py: Python<'py>,
        columns: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        self.score_columns(py, columns)
    }

    /// `predict_columns` (the field models' `predict`).
    fn predict<'py>(
        &self,
        py: Python<'py>,
        columns: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        self.predict_columns(py, columns)
    }

    /// Reset the optimizer: every Adagrad accumulator (rows, row-wise,
    /// biases, the global bias) back to `initial_accumulator`; weights,
    /// biases, interaction counts and times are kept — a warm start with a
    /// fresh optimizer (SGD keeps no state: nothing changes).
    fn reset_optimizer(&self, py: Python<'_>) {
        let m = &self.inner;
        py.detach(|| m.reset_optimizer());
    }

    /// 'field_aware' (FFM, and MF, its two-field case) or 'plain' (FM).
    #[getter]
    fn interaction(&self) -> &'static str {
        self.inner.cfg.interaction.name()
    }

    /// Write the whole model (every field's table with its optimizer state
    /// and metadata, the global bias, the event count) to `path` atomically:
    /// temp file, fsync, rename; a crash leaves the previous file whole.
    /// Returns the bytes written. Lifecycles are not stored.
    fn save(
        &self,
        py: Python<'_>,
        #[pyo3(from_py_with = args::path_arg)] path: std::path::PathBuf,
    ) -> PyResult<u64> {
        let m = &self.inner;
        let mf = self.kind == Kind::MatrixFactorization;
        guard("FieldModel.save", || {
            Ok(py.detach(|| {
                if mf {
                    crate::train::model_file::save_mf(m, &path)
                } else {
                    crate::train::model_file::save_field(m, &path)
                }
            })?)
        })
    }

    /// Read a model written by `save`, as the class it was saved from
    /// (`FieldAwareFM.load` of an FM file is an error). `capacity`
    /// overrides the saved table capacity; `lifecycles={field: {...}}` gives
    /// tables their lifecycles again. Raises SnapshotError for a truncated,
    /// corrupted or foreign file.
    #[classmethod]
    #[pyo3(signature = (path, capacity=None, lifecycles=None))]
    fn load(
        cls: &Bound<'_, pyo3::types::PyType>,
        #[pyo3(from_py_with = args::path_arg)] path: std::path::PathBuf,
        capacity: Option<&Bound<'_, PyAny>>,
        lifecycles: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let py = cls.py();
        let capacity = args::capacity(capacity)?;
        let specs: Vec<(String, crate::storage::lifecycle::Lifecycle)> = match lifecycles {
            None => Vec::new(),
            Some(d) => {
                let names: Vec<String> = d
                    .keys()
                    .iter()
                    .map(|k| k.extract::<String>())
                    .collect::<PyResult<_>>()
                    .map_err(|_| {
                        crate::py::errors::type_error_msg("lifecycles keys must be field names")
                    })?;
                names
                    .iter()
                    .cloned()
                    .zip(lifecycles_arg(Some(d), &names)?)
                    .filter_map(|(n, lc)| lc.map(|lc| (n, lc)))
                    .collect()
            }
        };
        let lookup = |f: &str| specs.iter().find(|(n, _)| n == f).map(|(_, lc)| *lc);
        let m = guard("FieldModel.load", || {
            Ok(py.detach(|| crate::train::model_file::load_field(&path, capacity, &lookup))?)
        })?;
        for (name, _) in &specs {
            if !m.cfg.fields.contains(name) {
                return Err(crate::py::errors::value_error(format!(
                    "lifecycles has an unknown field '{name}'; the saved model's fields are {}",
                    field_list(&m.cfg.fields)
                )));
            }
        }
        let want = cls.name()?.to_string();
        let kind = Kind::of(&m, false);
        let got = kind.name();
        if want != "FieldModel" && want != got {
            return Err(crate::py::errors::value_error(format!(
                "{} holds a {got}, not a {want}; load it with {got}.load",
                path.display()
            )));
        }
        wrap(py, m, kind)
    }

    /// An independent deep copy (every table with its optimizer state and
    /// metadata, the global bias, the event count), of the same class.
    fn copy(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let m = &self.inner;
        let c = guard("FieldModel.copy", || Ok(py.detach(|| m.copy())?))?;
        wrap(py, c, self.kind)
    }

    /// Bring this model, a ``copy()`` of ``source`` (possibly synced since),
    /// up to date with it: afterwards it equals what ``source.copy()`` would
    /// return now (serving scores, rows, optimizer state, metadata, global
    /// bias), at the cost of the rows ``source`` changed since the last sync
    /// (trained, assigned or created; evicted ids are removed) instead of
    /// the whole model. Returns ``{"rows": copied, "removed": ids removed,
    /// "scanned": source rows inspected}``. Raises ``EmbcoreError`` (nothing
    /// changed) when this model is not a copy of ``source`` or ``source``
    /// evicted more than its removal log holds since: copy again then.
    fn sync_from<'py>(
        &self,
        py: Python<'py>,
        source: PyRef<'py, PyFieldModel>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let (dst, src) = (&self.inner, &source.inner);
        let stats = guard("FieldModel.sync_from", || {
            Ok(py.detach(|| dst.sync_from(src))?)
        })?;
        super::table::sync_dict(py, stats)
    }

    /// `(start, stop)`: the columns of a row of `field` that
    /// `embedding_of(field, against)` returns (FFM: one block, or the whole
    /// row with against=None; FM: the whole row). For
    /// `Monitor.record_publish(model.table(field), t, columns=...)`.
    #[pyo3(signature = (field, against=None))]
    fn embedding_span(
        &self,
        #[pyo3(from_py_with = args::field_arg)] field: String,
        #[pyo3(from_py_with = args::against_arg)] against: Option<String>,
    ) -> PyResult<(usize, usize)> {
        let o = self.observed(&field, against.as_deref())?;
        let (off, len) = self.inner.observed_span(o)?;
        Ok((off, off + len))
    }

    /// (ids, vectors) of every feature of `field`, copied at one moment. FFM:
    /// the block each feature uses against field `against`, or with
    /// against=None all its blocks side by side (the whole row, blocks in
    /// field order, own field skipped). FM: the feature's vector
    /// (against must be None).
    #[pyo3(signature = (field, against=None))]
    fn embedding_of<'py>(
        &self,
        py: Python<'py>,
        #[pyo3(from_py_with = args::field_arg)] field: String,
        #[pyo3(from_py_with = args::against_arg)] against: Option<String>,
    ) -> PyResult<IdsAndRows<'py>> {
        let o = self.observed(&field, against.as_deref())?;
        let model = &self.inner;
        let (ids, values, width) = py.detach(|| model.embeddings(o))?;
        let n = ids.len();
        let m = Array2::from_shape_vec((n, width), values)
            .map_err(|e| crate::py::errors::value_error(format!("embedding_of: {e}")))?;
        Ok((ids.into_pyarray(py), m.into_pyarray(py)))
    }
}

/// Field-aware factorisation machine (Juan et al. 2016): one latent vector
/// per (feature, other field), one table per field.
///
/// ``FieldAwareFM(fields, dim=8, *, optimizer='adagrad', learning_rate=0.05, l2=0.0,
/// max_norm=None, loss='logistic', bias=True, eps=1e-08, initial_accumulator=0.1,
/// init_scale=0.1, seed=0, capacity=67108864, lifecycles=None)``
///
/// - ``fields``: field names in column order, e.g. ['user', 'item', 'creator'];
/// - ``dim``: width of one block (a row holds one block per other field);
/// - the other settings as for ``MatrixFactorization``; ``lifecycles``:
///   {field: dict of EmbeddingTable lifecycle keywords, or None}.
///
/// >>> import numpy as np, embcore
/// >>> m = embcore.FieldAwareFM(["user", "item", "tag"], dim=4)
/// >>> ids = np.array([1, 2], dtype=np.uint64)
/// >>> m.train({"user": ids, "item": ids, "tag": ids}, np.array([1.0, 0.0]))["events"]
/// 2
#[pyclass(frozen, extends = PyFieldModel, name = "FieldAwareFM", module = "embcore")]
pub struct PyFieldAwareFM;

#[pymethods]
impl PyFieldAwareFM {
    #[new]
    #[pyo3(signature = (*args, **kwargs),
        text_signature = "(fields, dim=8, *, optimizer='adagrad', learning_rate=0.05, l2=0.0, max_norm=None, loss='logistic', bias=True, eps=1e-08, initial_accumulator=0.1, init_scale=0.1, seed=0, capacity=67108864, lifecycles=None)")]
    fn new(
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyClassInitializer<Self>> {
        let base = build("FieldAwareFM", Interaction::FieldAware, 8, args, kwargs)?;
        Ok(PyClassInitializer::from(base).add_subclass(PyFieldAwareFM))
    }
}

/// Factorisation machine (Rendle 2010): one latent vector per feature, one
/// table per field.
///
/// ``FactorizationMachine(fields, dim=32, *, optimizer='adagrad', learning_rate=0.05,
/// l2=0.0, max_norm=None, loss='logistic', bias=True, eps=1e-08,
/// initial_accumulator=0.1, init_scale=0.1, seed=0, capacity=67108864,
/// lifecycles=None)``: the arguments of ``FieldAwareFM``; ``dim`` is the width of a
/// feature's vector.
#[pyclass(frozen, extends = PyFieldModel, name = "FactorizationMachine", module = "embcore")]
pub struct PyFactorizationMachine;

#[pymethods]
impl PyFactorizationMachine {
    #[new]
    #[pyo3(signature = (*args, **kwargs),
        text_signature = "(fields, dim=32, *, optimizer='adagrad', learning_rate=0.05, l2=0.0, max_norm=None, loss='logistic', bias=True, eps=1e-08, initial_accumulator=0.1, init_scale=0.1, seed=0, capacity=67108864, lifecycles=None)")]
    fn new(
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyClassInitializer<Self>> {
        let base = build("FactorizationMachine", Interaction::Plain, 32, args, kwargs)?;
        Ok(PyClassInitializer::from(base).add_subclass(PyFactorizationMachine))
    }
}
