//! Thin wrapper over `kernels::topk` (the analyses' running top-k).

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;

use crate::kernels::topk;

/// The ``k`` best columns of each of ``n_queries`` rows of scores given block by block
/// (higher score first, then the lower column; NaN counts as -inf).
///
/// >>> import numpy as np
/// >>> from embcore._core import TopK
/// >>> top = TopK(1, 2)
/// >>> top.update(np.array([[0.5, 2.0, 1.0]]), 0)
/// >>> top.update(np.array([[3.0]]), 3)
/// >>> top.index.tolist(), top.scores.tolist()
/// ([[3, 1]], [[3.0, 2.0]])
#[pyclass(name = "TopK", module = "embcore")]
pub struct PyTopK {
    inner: topk::TopK,
}

#[pymethods]
impl PyTopK {
    #[new]
    fn new(n_queries: usize, k: usize) -> Self {
        PyTopK {
            inner: topk::TopK::new(n_queries, k),
        }
    }

    /// Merge ``scores`` (float64, ``n_queries × columns``, C-contiguous) whose first column
    /// is ``offset``; ``scale`` (float64, one per column) multiplies each column first.
    #[pyo3(signature = (scores, offset, scale=None))]
    fn update(
        &mut self,
        py: Python<'_>,
        scores: PyReadonlyArray2<'_, f64>,
        offset: i64,
        scale: Option<PyReadonlyArray1<'_, f64>>,
    ) -> PyResult<()> {
        let hint = |n: &str| {
            crate::py::errors::value_error(format!(
                "{n} is not C-contiguous; pass np.ascontiguousarray({n})"
            ))
        };
        let (rows, width) = (scores.shape()[0], scores.shape()[1]);
        if rows != self.inner.queries() {
            return Err(crate::py::errors::value_error(format!(
                "scores has {rows} rows, one per query ({}) needed",
                self.inner.queries()
            )));
        }
        let block = scores.as_slice().map_err(|_| hint("scores"))?;
        let scale = match &scale {
            Some(s) => Some(s.as_slice().map_err(|_| hint("scale"))?),
            None => None,
        };
        let inner = &mut self.inner;
        super::errors::guard("TopK.update", || {
            Ok(py.detach(|| inner.update(block, width, offset, scale))?)
        })
    }

    /// Each query's kept columns, best first (int64, ``n_queries × min(k, columns seen)``).
    #[getter]
    fn index<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<i64>>> {
        let (_, columns, kept) = self.inner.sorted();
        let a = Array2::from_shape_vec((self.inner.queries(), kept), columns)
            .map_err(|e| crate::py::errors::value_error(e.to_string()))?;
        Ok(a.into_pyarray(py))
    }

    /// The scores of :attr:`index` (float64, same shape).
    #[getter]
    fn scores<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let (scores, _, kept) = self.inner.sorted();
        let a = Array2::from_shape_vec((self.inner.queries(), kept), scores)
            .map_err(|e| crate::py::errors::value_error(e.to_string()))?;
        Ok(a.into_pyarray(py))
    }
}
