//! `embcore.FieldAwareFM` and `embcore.FactorizationMachine`: thin wrappers
//! over `ffm::FieldModel`, sharing one base class for the methods.

use super::args;
use super::monitor::PyMonitor;
use super::table::{optimizer_dict, table_config, PyEmbeddingTable};
use crate::storage::table::DEFAULT_CAPACITY;
use crate::train::field::{field_list, FieldBatch, FieldConfig, FieldModel, Interaction, Observed};
use crate::train::mf::{Loss, NoObserver};
use numpy::ndarray::Array2;
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray2, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use std::sync::Arc;

type IdsAndRows<'py> = (Bound<'py, PyArray1<u64>>, Bound<'py, PyArray2<f32>>);

/// The methods shared by both models. Not constructed directly.
#[pyclass(frozen, subclass, name = "FieldModel", module = "embcore")]
pub struct PyFieldModel {
    pub inner: Arc<FieldModel>,
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
                PyTypeError::new_err(format!(
                    "columns keys must be field names (str), got {}; the fields are {names}",
                    key.repr().map(|r| r.to_string()).unwrap_or_default()
                ))
            })?;
            let name = name.to_str()?;
            if !fields.iter().any(|f| f == name) {
                return Err(PyValueError::new_err(format!(
                    "columns has an unknown field '{name}'; this model's fields are {names} \
                     (drop the column or create the model with it)"
                )));
            }
        }
        let mut out = Vec::with_capacity(fields.len());
        for f in fields {
            let Some(col) = d.get_item(f)? else {
                return Err(PyValueError::new_err(format!(
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
                return Err(PyValueError::new_err(
                    "columns is not C-contiguous; pass np.ascontiguousarray(columns)",
                ));
            }
            Some((a.shape().to_vec(), a.as_slice()?.to_vec()))
        } else if let Ok(a) = obj.extract::<PyReadonlyArray2<'py, i64>>() {
            if !a.is_c_contiguous() {
                return Err(PyValueError::new_err(
                    "columns is not C-contiguous; pass np.ascontiguousarray(columns)",
                ));
            }
            let s = a.as_slice()?;
            if let Some(k) = s.iter().position(|&x| x < 0) {
                return Err(PyValueError::new_err(format!(
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
        return Err(PyTypeError::new_err(format!(
            "columns must be a dict of field name -> 1-D uint64 id array, or a 2-D uint64 array \
             of shape (events, {}) with one column per field in the order {names}; got {}",
            fields.len(),
            obj.get_type().name()?
        )));
    };
    let nf = fields.len();
    if shape[1] != nf {
        return Err(PyValueError::new_err(format!(
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
            let name: String = key
                .extract()
                .map_err(|_| PyTypeError::new_err("lifecycles keys must be field names (str)"))?;
            let Some(k) = fields.iter().position(|f| *f == name) else {
                return Err(PyValueError::new_err(format!(
                    "lifecycles has an unknown field '{name}'; the fields are {}",
                    field_list(fields)
                )));
            };
            if value.is_none() {
                continue;
            }
            let spec = value.cast::<PyDict>().map_err(|_| {
                PyTypeError::new_err(format!(
                    "lifecycles['{name}'] must be a dict of lifecycle settings \
                     (ttl, max_rows, max_bytes, keep_floor, eviction, min_count) or None"
                ))
            })?;
            per_field[k] = super::mf::lifecycle_arg(Some(spec), &format!("lifecycles['{name}']"))?;
        }
    }
    Ok(per_field)
}

#[allow(clippy::too_many_arguments)]
fn build(
    interaction: Interaction,
    fields: Vec<String>,
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
    lifecycles: Option<&Bound<'_, PyDict>>,
) -> PyResult<PyFieldModel> {
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
    let per_field = lifecycles_arg(lifecycles, &fields)?;
    let cfg = FieldConfig {
        fields,
        interaction,
        table,
        loss: Loss::parse(loss)?,
        bias,
    };
    Ok(PyFieldModel {
        inner: Arc::new(FieldModel::with_lifecycles(cfg, per_field)?),
    })
}

/// A Python object of the right subclass around `inner`.
fn wrap(py: Python<'_>, inner: FieldModel) -> PyResult<Py<PyAny>> {
    let interaction = inner.cfg.interaction;
    let base = PyClassInitializer::from(PyFieldModel {
        inner: Arc::new(inner),
    });
    Ok(match interaction {
        Interaction::FieldAware => Bound::new(py, base.add_subclass(PyFieldAwareFM))?.into_any(),
        Interaction::Plain => Bound::new(py, base.add_subclass(PyFactorizationMachine))?.into_any(),
    }
    .unbind())
}

impl PyFieldModel {
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
    fn table(&self, field: &str) -> PyResult<PyEmbeddingTable> {
        Ok(PyEmbeddingTable::wrap(
            self.inner.tables[self.field(field)?].clone(),
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
    #[pyo3(signature = (columns, labels, weights=None, timestamps=None, threads=1,
        count_interactions=true, monitor=None, monitor_field=None, monitor_against=None))]
    #[allow(clippy::too_many_arguments)]
    fn train<'py>(
        &self,
        py: Python<'py>,
        columns: &Bound<'py, PyAny>,
        labels: &Bound<'py, PyAny>,
        weights: Option<&Bound<'py, PyAny>>,
        timestamps: Option<&Bound<'py, PyAny>>,
        threads: i64,
        count_interactions: bool,
        monitor: Option<&Bound<'py, PyMonitor>>,
        monitor_field: Option<&str>,
        monitor_against: Option<&str>,
    ) -> PyResult<Bound<'py, PyDict>> {
        if threads < 1 {
            return Err(PyValueError::new_err(format!(
                "threads must be >= 1, got {threads}"
            )));
        }
        let fields = &self.inner.cfg.fields;
        let cols = id_columns(columns, fields)?;
        let y = args::floats(labels, "labels")?;
        let w = args::opt_floats(weights, "weights")?;
        let t = args::opt_times(timestamps, "timestamps")?;
        let slices = cols.slices();
        let batch = FieldBatch {
            columns: &slices,
            labels: y.as_slice(),
            weights: w.as_ref().map(|w| w.as_slice()),
            timestamps: t
                .as_ref()
                .map(|t| t.as_slice().expect("checked contiguous")),
        };
        let field_name = match (monitor_field, monitor.is_some()) {
            (Some(f), _) => f,
            (None, true) if fields.iter().any(|f| f == "item") => "item",
            (None, true) => {
                return Err(PyValueError::new_err(format!(
                    "monitor= needs monitor_field= (one of {}): the field whose \
                     embeddings the monitor watches",
                    field_list(fields)
                )))
            }
            (None, false) => &fields[fields.len() - 1],
        };
        let observed = self.observed(field_name, monitor_against)?;
        let monitor_core = monitor.map(|m| m.get().inner.clone());
        if let Some(m) = &monitor_core {
            m.check_dim(self.inner.observed_span(observed)?.1)?;
        }
        let model = &self.inner;
        let threads = threads as usize;
        let stats = py.detach(|| match &monitor_core {
            Some(m) => model.train(&batch, threads, count_interactions, &**m, observed),
            None => model.train(&batch, threads, count_interactions, &NoObserver, observed),
        })?;
        let d = PyDict::new(py);
        d.set_item("events", stats.events)?;
        d.set_item("mean_loss", stats.mean_loss)?;
        let new = PyDict::new(py);
        for (f, c) in fields.iter().zip(&stats.new_features) {
            new.set_item(f, c)?;
        }
        d.set_item("new_features", new)?;
        Ok(d)
    }

    /// Raw scores (logits for the logistic loss) of events from the live
    /// tables. Read-only: unknown ids are never inserted and contribute a
    /// zero vector and a zero linear weight.
    fn score<'py>(
        &self,
        py: Python<'py>,
        columns: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let cols = id_columns(columns, &self.inner.cfg.fields)?;
        let slices = cols.slices();
        let mut out = vec![0.0f32; slices[0].len()];
        let model = &self.inner;
        py.detach(|| model.score(&slices, &mut out))?;
        Ok(out.into_pyarray(py))
    }

    /// Probabilities sigmoid(score) for the logistic loss; scores otherwise.
    fn predict<'py>(
        &self,
        py: Python<'py>,
        columns: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let s = self.score(py, columns)?;
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

    /// Write the whole model (every field's table with its optimizer state
    /// and metadata, the global bias, the event count) to `path` atomically:
    /// temp file, fsync, rename; a crash leaves the previous file whole.
    /// Returns the bytes written. Lifecycles are not stored.
    fn save(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<u64> {
        let m = &self.inner;
        Ok(py.detach(|| crate::train::model_file::save_field(m, &path))?)
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
        path: std::path::PathBuf,
        capacity: Option<usize>,
        lifecycles: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let py = cls.py();
        let specs: Vec<(String, crate::storage::lifecycle::Lifecycle)> = match lifecycles {
            None => Vec::new(),
            Some(d) => {
                let names: Vec<String> = d
                    .keys()
                    .iter()
                    .map(|k| k.extract::<String>())
                    .collect::<PyResult<_>>()
                    .map_err(|_| PyTypeError::new_err("lifecycles keys must be field names"))?;
                names
                    .iter()
                    .cloned()
                    .zip(lifecycles_arg(Some(d), &names)?)
                    .filter_map(|(n, lc)| lc.map(|lc| (n, lc)))
                    .collect()
            }
        };
        let lookup = |f: &str| specs.iter().find(|(n, _)| n == f).map(|(_, lc)| *lc);
        let m = py.detach(|| crate::train::model_file::load_field(&path, capacity, &lookup))?;
        for (name, _) in &specs {
            if !m.cfg.fields.contains(name) {
                return Err(PyValueError::new_err(format!(
                    "lifecycles has an unknown field '{name}'; the saved model's fields are {}",
                    field_list(&m.cfg.fields)
                )));
            }
        }
        let want = cls.name()?.to_string();
        let got = match m.cfg.interaction {
            Interaction::FieldAware => "FieldAwareFM",
            Interaction::Plain => "FactorizationMachine",
        };
        if want != "FieldModel" && want != got {
            return Err(PyValueError::new_err(format!(
                "{} holds a {got}, not a {want}; load it with {got}.load",
                path.display()
            )));
        }
        wrap(py, m)
    }

    /// An independent deep copy (every table with its optimizer state and
    /// metadata, the global bias, the event count), of the same class.
    fn copy(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let m = &self.inner;
        let c = py.detach(|| m.copy())?;
        wrap(py, c)
    }

    /// `(start, stop)`: the columns of a row of `field` that
    /// `embedding_of(field, against)` returns (FFM: one block, or the whole
    /// row with against=None; FM: the whole row). For
    /// `Monitor.record_publish(model.table(field), t, columns=...)`.
    #[pyo3(signature = (field, against=None))]
    fn embedding_span(&self, field: &str, against: Option<&str>) -> PyResult<(usize, usize)> {
        let o = self.observed(field, against)?;
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
        field: &str,
        against: Option<&str>,
    ) -> PyResult<IdsAndRows<'py>> {
        let o = self.observed(field, against)?;
        let model = &self.inner;
        let (ids, values, width) = py.detach(|| model.embeddings(o))?;
        let n = ids.len();
        let m = Array2::from_shape_vec((n, width), values)
            .map_err(|e| PyValueError::new_err(format!("embedding_of: {e}")))?;
        Ok((ids.into_pyarray(py), m.into_pyarray(py)))
    }
}

/// Field-aware factorisation machine (Juan et al. 2016): one latent vector
/// per (feature, other field), one table per field.
#[pyclass(frozen, extends = PyFieldModel, name = "FieldAwareFM", module = "embcore")]
pub struct PyFieldAwareFM;

#[pymethods]
impl PyFieldAwareFM {
    #[new]
    #[pyo3(signature = (fields, dim=8, *, optimizer="adagrad", learning_rate=0.05, l2=0.0,
        max_norm=None, loss="logistic", bias=true, eps=1e-8, initial_accumulator=0.1,
        init_scale=0.1, seed=0, capacity=DEFAULT_CAPACITY as i64, lifecycles=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        fields: Vec<String>,
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
        lifecycles: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyClassInitializer<Self>> {
        let base = build(
            Interaction::FieldAware,
            fields,
            dim,
            optimizer,
            learning_rate,
            l2,
            max_norm,
            loss,
            bias,
            eps,
            initial_accumulator,
            init_scale,
            seed,
            capacity,
            lifecycles,
        )?;
        Ok(PyClassInitializer::from(base).add_subclass(PyFieldAwareFM))
    }
}

/// Factorisation machine (Rendle 2010): one latent vector per feature, one
/// table per field.
#[pyclass(frozen, extends = PyFieldModel, name = "FactorizationMachine", module = "embcore")]
pub struct PyFactorizationMachine;

#[pymethods]
impl PyFactorizationMachine {
    #[new]
    #[pyo3(signature = (fields, dim=32, *, optimizer="adagrad", learning_rate=0.05, l2=0.0,
        max_norm=None, loss="logistic", bias=true, eps=1e-8, initial_accumulator=0.1,
        init_scale=0.1, seed=0, capacity=DEFAULT_CAPACITY as i64, lifecycles=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        fields: Vec<String>,
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
        lifecycles: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyClassInitializer<Self>> {
        let base = build(
            Interaction::Plain,
            fields,
            dim,
            optimizer,
            learning_rate,
            l2,
            max_norm,
            loss,
            bias,
            eps,
            initial_accumulator,
            init_scale,
            seed,
            capacity,
            lifecycles,
        )?;
        Ok(PyClassInitializer::from(base).add_subclass(PyFactorizationMachine))
    }
}
