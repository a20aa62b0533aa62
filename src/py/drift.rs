//! Thin wrappers over the drift kernels (float32 or float64 matrices).

use numpy::ndarray::Array2;
use numpy::{Element, IntoPyArray, PyArray1, PyArray2, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;

use crate::kernels::drift::Real;

enum Pair<'py> {
    F32(PyReadonlyArray2<'py, f32>, PyReadonlyArray2<'py, f32>),
    F64(PyReadonlyArray2<'py, f64>, PyReadonlyArray2<'py, f64>),
}

fn extract<'py>(a: &Bound<'py, PyAny>, b: &Bound<'py, PyAny>) -> PyResult<Pair<'py>> {
    if let (Ok(x), Ok(y)) = (a.extract(), b.extract()) {
        return Ok(Pair::F32(x, y));
    }
    if let (Ok(x), Ok(y)) = (a.extract(), b.extract()) {
        return Ok(Pair::F64(x, y));
    }
    Err(crate::py::errors::type_error_msg(
        "a and b must be 2-D numpy arrays of the same float dtype (float32 or float64)",
    ))
}

fn slices<'a, T: Element + Real>(
    a: &'a PyReadonlyArray2<'_, T>,
    b: &'a PyReadonlyArray2<'_, T>,
) -> PyResult<(&'a [T], &'a [T], usize)> {
    if a.shape() != b.shape() {
        return Err(crate::py::errors::value_error(format!(
            "a has shape {:?} but b has shape {:?}",
            a.shape(),
            b.shape()
        )));
    }
    let hint = |n: &str| {
        crate::py::errors::value_error(format!(
            "{n} is not C-contiguous; pass np.ascontiguousarray({n})"
        ))
    };
    Ok((
        a.as_slice().map_err(|_| hint("a"))?,
        b.as_slice().map_err(|_| hint("b"))?,
        a.shape()[1],
    ))
}

fn cosine<T: Element + Real>(
    py: Python<'_>,
    a: &PyReadonlyArray2<'_, T>,
    b: &PyReadonlyArray2<'_, T>,
    threads: usize,
) -> PyResult<Vec<f64>> {
    let (x, y, d) = slices(a, b)?;
    if d == 0 {
        return Ok(vec![0.0; a.shape()[0]]);
    }
    Ok(py.detach(|| crate::kernels::drift::rowwise_cosine(x, y, d, threads))?)
}

fn cross<T: Element + Real>(
    py: Python<'_>,
    a: &PyReadonlyArray2<'_, T>,
    b: &PyReadonlyArray2<'_, T>,
    threads: usize,
) -> PyResult<(Vec<f64>, usize)> {
    let (x, y, d) = slices(a, b)?;
    if d == 0 {
        return Ok((Vec::new(), 0));
    }
    Ok((
        py.detach(|| crate::kernels::drift::cross_product(x, y, d, threads))?,
        d,
    ))
}

/// Cosine similarity of each row of `a` with the same row of `b` (float64,
/// accumulated in float64; 0 for zero-norm rows). Same shape and float dtype.
#[pyfunction]
#[pyo3(signature = (a, b, threads=2))]
pub fn rowwise_cosine<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    b: &Bound<'py, PyAny>,
    threads: usize,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let t = threads.max(1);
    let out = match extract(a, b)? {
        Pair::F32(x, y) => cosine(py, &x, &y, t)?,
        Pair::F64(x, y) => cosine(py, &x, &y, t)?,
    };
    Ok(out.into_pyarray(py))
}

/// AᵀB as a float64 (d, d) matrix for (n, d) inputs of the same float dtype.
#[pyfunction]
#[pyo3(signature = (a, b, threads=2))]
pub fn cross_product<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    b: &Bound<'py, PyAny>,
    threads: usize,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let t = threads.max(1);
    let (out, d) = match extract(a, b)? {
        Pair::F32(x, y) => cross(py, &x, &y, t)?,
        Pair::F64(x, y) => cross(py, &x, &y, t)?,
    };
    Ok(Array2::from_shape_vec((d, d), out)
        .expect("d x d")
        .into_pyarray(py))
}
