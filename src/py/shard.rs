//! Thin wrappers over `train::shard`: the entry points `embcore.distributed`
//! builds sharded training on. A row block crosses the boundary as a dict of
//! flat arrays: ``ids`` (uint64), ``weights`` and ``state`` (float32, row
//! after row) and ``meta`` (uint64, 8 words a row).

use super::args;
use super::errors::guard;
use super::ffm::{wrap, PyFieldModel};
use crate::train::model::FieldModel;
use crate::train::shard::{self, RowBlock};
use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::PyDict;

fn block_dict<'py>(py: Python<'py>, b: RowBlock) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("ids", b.ids.into_pyarray(py))?;
    d.set_item("weights", b.weights.into_pyarray(py))?;
    d.set_item("state", b.state.into_pyarray(py))?;
    d.set_item("meta", b.meta.into_pyarray(py))?;
    Ok(d)
}

fn block_arg(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<RowBlock> {
    let d = obj.cast::<PyDict>().map_err(|_| {
        crate::py::errors::type_error_msg(format!(
            "{name} must be a dict with 'ids', 'weights', 'state' and 'meta' arrays \
             (as export_rows returns)"
        ))
    })?;
    let item = |key: &str| -> PyResult<Bound<'_, PyAny>> {
        d.get_item(key)?
            .ok_or_else(|| crate::py::errors::value_error(format!("{name} has no '{key}' array")))
    };
    let f32s = |key: &str| -> PyResult<Vec<f32>> {
        let a: PyReadonlyArray1<'_, f32> = item(key)?.extract().map_err(|_| {
            crate::py::errors::type_error_msg(format!(
                "{name}['{key}'] must be a 1-D float32 array"
            ))
        })?;
        Ok(a.as_array().to_vec())
    };
    let meta: PyReadonlyArray1<'_, u64> = item("meta")?.extract().map_err(|_| {
        crate::py::errors::type_error_msg(format!("{name}['meta'] must be a 1-D uint64 array"))
    })?;
    Ok(RowBlock {
        ids: args::ids(&item("ids")?, &format!("{name}['ids']"))?
            .as_slice()
            .to_vec(),
        weights: f32s("weights")?,
        state: f32s("state")?,
        meta: meta.as_array().to_vec(),
    })
}

fn field_of(model: &FieldModel, field: &str) -> PyResult<usize> {
    Ok(model.cfg.field_index(field)?)
}

/// The shard of each id among `num_shards`: the top bits of the core's
/// 64-bit id hash (murmur3's finaliser of the id) scaled to
/// ``[0, num_shards)``. Stable across versions, processes and machines.
#[pyfunction]
pub fn shard_of<'py>(
    py: Python<'py>,
    ids: &Bound<'py, PyAny>,
    num_shards: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray1<u32>>> {
    let n = args::int_value(num_shards, "num_shards", 1, i64::from(u32::MAX))? as u32;
    let ids = args::ids(ids, "ids")?;
    let s = ids.as_slice();
    let out: Vec<u32> = py.detach(|| s.iter().map(|&id| shard::shard_of(id, n)).collect());
    Ok(out.into_pyarray(py))
}

/// The full rows of `ids` in `field`'s table, in the order of `ids`, as a
/// row-block dict; with `create`, absent ids get their row first (first
/// seen at `first_seen[k]`). Returns (block, rows created).
#[pyfunction]
#[pyo3(signature = (model, field, ids, first_seen=None, create=false))]
pub fn export_rows<'py>(
    py: Python<'py>,
    model: &Bound<'py, PyFieldModel>,
    field: &str,
    ids: &Bound<'py, PyAny>,
    first_seen: Option<&Bound<'py, PyAny>>,
    create: bool,
) -> PyResult<(Bound<'py, PyDict>, usize)> {
    let m = &model.get().inner;
    let f = field_of(m, field)?;
    let ids = args::ids(ids, "ids")?;
    let times = args::opt_times(first_seen, "first_seen")?;
    let (ids, times) = (
        ids.as_slice(),
        times.as_ref().map(|t| t.as_slice()).transpose()?,
    );
    let (block, created) = guard("export_rows", || {
        Ok(py.detach(|| shard::export_rows(&m.tables[f], ids, times, create))?)
    })?;
    Ok((block_dict(py, block)?, created))
}

/// A model of `model`'s class whose fields named in `rows` are working
/// copies of those row blocks and whose other fields are `model`'s own
/// tables (shared), with global bias state `global_state` = (bias,
/// accumulator) and `events_seen`.
#[pyfunction]
pub fn working_model<'py>(
    py: Python<'py>,
    model: &Bound<'py, PyFieldModel>,
    rows: &Bound<'py, PyDict>,
    global_state: (f32, f32),
    events_seen: u64,
) -> PyResult<Py<PyAny>> {
    let m = &model.get().inner;
    let mut blocks: Vec<Option<RowBlock>> = vec![None; m.n_fields()];
    for (k, v) in rows.iter() {
        let name: String = k.extract()?;
        let f = field_of(m, &name)?;
        blocks[f] = Some(block_arg(&v, &format!("rows['{name}']"))?);
    }
    let w = guard("working_model", || {
        Ok(py.detach(|| shard::working_model(m, &blocks, global_state, events_seen))?)
    })?;
    wrap(py, w, model.get().kind)
}

/// Merge a trainer's rows of `field`, as pulled (`before`) and as trained
/// (`after`), into `model`'s owned rows. Returns the rows merged.
#[pyfunction]
pub fn apply_rows(
    py: Python<'_>,
    model: &Bound<'_, PyFieldModel>,
    field: &str,
    before: &Bound<'_, PyAny>,
    after: &Bound<'_, PyAny>,
) -> PyResult<usize> {
    let m = &model.get().inner;
    let f = field_of(m, field)?;
    let (b, a) = (block_arg(before, "before")?, block_arg(after, "after")?);
    guard("apply_rows", || {
        Ok(py.detach(|| shard::apply_rows(&m.tables[f], &b, &a))?)
    })
}

/// Write a row block into `field`'s table (create or overwrite full rows).
/// Returns the rows created.
#[pyfunction]
pub fn import_rows(
    py: Python<'_>,
    model: &Bound<'_, PyFieldModel>,
    field: &str,
    rows: &Bound<'_, PyAny>,
) -> PyResult<usize> {
    let m = &model.get().inner;
    let f = field_of(m, field)?;
    let b = block_arg(rows, "rows")?;
    guard("import_rows", || {
        Ok(py.detach(|| shard::import_rows(&m.tables[f], &b))?)
    })
}

/// (global bias, its accumulator, events seen) of `model`.
#[pyfunction]
pub fn model_state(model: &Bound<'_, PyFieldModel>) -> (f32, f32, u64) {
    let m = &model.get().inner;
    let (b, a) = m.global_state();
    (b, a, m.events_seen())
}

/// Registers the functions on the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(shard_of, m)?)?;
    m.add_function(wrap_pyfunction!(export_rows, m)?)?;
    m.add_function(wrap_pyfunction!(working_model, m)?)?;
    m.add_function(wrap_pyfunction!(apply_rows, m)?)?;
    m.add_function(wrap_pyfunction!(import_rows, m)?)?;
    m.add_function(wrap_pyfunction!(model_state, m)?)?;
    Ok(())
}
