//! Thin wrapper over `kernels::auc` (the progressive validation's grouped AUC).

use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;

use super::args;
use crate::kernels::auc::{self, Field};

/// Per field ``(shift, mask, groups)``, the Mann–Whitney count ``u``, the positives and the
/// events of each group ``(key >> shift) & mask`` (three float64 arrays of ``groups``
/// values), over ``keys`` (uint64, sorted ascending): the score key in the bits from
/// ``tie_shift`` up (equal bits: a tie, one half), the label in bit 0. AUC is ``u /
/// (positives × (events − positives))``.
///
/// >>> import numpy as np
/// >>> from embcore._core import grouped_auc_sorted
/// >>> keys = np.sort(np.array([0b0_0, 0b1_1, 0b10_0, 0b11_1], dtype=np.uint64))
/// >>> [a.tolist() for a in grouped_auc_sorted(keys, 1, [(0, 0, 1)])[0]]
/// [[3.0], [2.0], [4.0]]
#[pyfunction]
#[allow(clippy::type_complexity)]
pub fn grouped_auc_sorted<'py>(
    py: Python<'py>,
    keys: &Bound<'py, PyAny>,
    tie_shift: u32,
    fields: Vec<(u32, u64, usize)>,
) -> PyResult<
    Vec<(
        Bound<'py, PyArray1<f64>>,
        Bound<'py, PyArray1<f64>>,
        Bound<'py, PyArray1<f64>>,
    )>,
> {
    let keys = args::ids(keys, "keys")?;
    let keys = keys.as_slice();
    let fields = to_fields(fields);
    let counts = super::errors::guard("grouped_auc_sorted", || {
        Ok(py.detach(|| auc::grouped_auc_sorted(keys, tie_shift, &fields))?)
    })?;
    Ok(counts
        .into_iter()
        .map(|c| {
            (
                c.u.into_pyarray(py),
                c.positives.into_pyarray(py),
                c.events.into_pyarray(py),
            )
        })
        .collect())
}

/// Per field ``(shift, mask, groups)``, the float64 sum of ``weights`` (float32, one per key)
/// of each group ``(key >> shift) & mask`` over ``keys`` (uint64, any order), summed in
/// blocks of ``block`` keys as ``np.bincount(groups, weights)`` block by block would (the
/// same bits).
///
/// >>> import numpy as np
/// >>> from embcore._core import grouped_sums
/// >>> keys = np.array([0, 1, 1, 0], dtype=np.uint64)
/// >>> grouped_sums(keys, np.array([1, 2, 3, 4], np.float32), [(0, 1, 2)], 2)[0].tolist()
/// [5.0, 5.0]
#[pyfunction]
pub fn grouped_sums<'py>(
    py: Python<'py>,
    keys: &Bound<'py, PyAny>,
    weights: &Bound<'py, PyAny>,
    fields: Vec<(u32, u64, usize)>,
    block: usize,
) -> PyResult<Vec<Bound<'py, PyArray1<f64>>>> {
    let keys = args::ids(keys, "keys")?;
    let keys = keys.as_slice();
    let weights = args::floats(weights, "weights")?;
    let weights = weights.as_slice();
    let fields = to_fields(fields);
    let sums = super::errors::guard("grouped_sums", || {
        Ok(py.detach(|| auc::grouped_sums(keys, weights, &fields, block))?)
    })?;
    Ok(sums.into_iter().map(|s| s.into_pyarray(py)).collect())
}

fn to_fields(fields: Vec<(u32, u64, usize)>) -> Vec<Field> {
    fields
        .into_iter()
        .map(|(shift, mask, groups)| Field {
            shift,
            mask,
            groups,
        })
        .collect()
}
