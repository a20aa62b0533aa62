//! Conversion and validation of numpy arguments, before any state changes.

use numpy::{PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

fn describe(obj: &Bound<'_, PyAny>) -> String {
    match obj.getattr("dtype") {
        Ok(dt) => format!(
            "a {}-D array of dtype {}",
            obj.getattr("ndim")
                .map(|n| n.to_string())
                .unwrap_or_default(),
            dt
        ),
        Err(_) => obj
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default(),
    }
}

fn contiguous_hint(name: &str) -> PyErr {
    PyValueError::new_err(format!(
        "{name} is not C-contiguous; pass np.ascontiguousarray({name})"
    ))
}

/// 64-bit ids: a 1-D uint64 array, or int64 with no negative value
/// (reinterpreted without a copy).
pub enum Ids<'py> {
    U(PyReadonlyArray1<'py, u64>),
    I(PyReadonlyArray1<'py, i64>),
}

impl Ids<'_> {
    pub fn as_slice(&self) -> &[u64] {
        match self {
            Ids::U(a) => a.as_slice().expect("checked contiguous"),
            Ids::I(a) => {
                let s = a.as_slice().expect("checked contiguous");
                // SAFETY: i64 and u64 have the same size and alignment; every
                // value was checked to be non-negative, so the bits mean the
                // same number.
                unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<u64>(), s.len()) }
            }
        }
    }
}

pub fn ids<'py>(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<Ids<'py>> {
    if let Ok(a) = obj.extract::<PyReadonlyArray1<'py, u64>>() {
        if !a.is_c_contiguous() {
            return Err(contiguous_hint(name));
        }
        return Ok(Ids::U(a));
    }
    if let Ok(a) = obj.extract::<PyReadonlyArray1<'py, i64>>() {
        if !a.is_c_contiguous() {
            return Err(contiguous_hint(name));
        }
        let s = a.as_slice().expect("contiguous");
        if let Some(k) = s.iter().position(|&x| x < 0) {
            return Err(PyValueError::new_err(format!(
                "{name}[{k}] = {} is negative; ids are unsigned 64-bit integers",
                s[k]
            )));
        }
        return Ok(Ids::I(a));
    }
    Err(PyTypeError::new_err(format!(
        "{name} must be a 1-D numpy array of uint64 (or non-negative int64) ids, got {}; \
         pass np.asarray({name}, dtype=np.uint64)",
        describe(obj)
    )))
}

/// A 1-D float array as f32: float32 borrowed, float64 converted.
pub enum Floats<'py> {
    Borrowed(PyReadonlyArray1<'py, f32>),
    Owned(Vec<f32>),
}

impl Floats<'_> {
    pub fn as_slice(&self) -> &[f32] {
        match self {
            Floats::Borrowed(a) => a.as_slice().expect("checked contiguous"),
            Floats::Owned(v) => v,
        }
    }
}

pub fn floats<'py>(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<Floats<'py>> {
    if let Ok(a) = obj.extract::<PyReadonlyArray1<'py, f32>>() {
        if !a.is_c_contiguous() {
            return Err(contiguous_hint(name));
        }
        return Ok(Floats::Borrowed(a));
    }
    if let Ok(a) = obj.extract::<PyReadonlyArray1<'py, f64>>() {
        if !a.is_c_contiguous() {
            return Err(contiguous_hint(name));
        }
        return Ok(Floats::Owned(
            a.as_slice()
                .expect("contiguous")
                .iter()
                .map(|&x| x as f32)
                .collect(),
        ));
    }
    Err(PyTypeError::new_err(format!(
        "{name} must be a 1-D numpy array of float32 or float64, got {}; \
         pass np.asarray({name}, dtype=np.float32)",
        describe(obj)
    )))
}

pub fn opt_floats<'py>(
    obj: Option<&Bound<'py, PyAny>>,
    name: &str,
) -> PyResult<Option<Floats<'py>>> {
    match obj {
        Some(o) if !o.is_none() => Ok(Some(floats(o, name)?)),
        _ => Ok(None),
    }
}

pub fn opt_times<'py>(
    obj: Option<&Bound<'py, PyAny>>,
    name: &str,
) -> PyResult<Option<PyReadonlyArray1<'py, i64>>> {
    match obj {
        Some(o) if !o.is_none() => match o.extract::<PyReadonlyArray1<'py, i64>>() {
            Ok(a) if a.is_c_contiguous() => Ok(Some(a)),
            Ok(_) => Err(contiguous_hint(name)),
            Err(_) => Err(PyTypeError::new_err(format!(
                "{name} must be a 1-D numpy array of int64 event times (seconds), got {}; \
                 pass np.asarray({name}, dtype=np.int64)",
                describe(o)
            ))),
        },
        _ => Ok(None),
    }
}

/// A 2-D float32 matrix with `dim` columns (float64 converted).
pub enum Matrix<'py> {
    Borrowed(PyReadonlyArray2<'py, f32>),
    Owned(Vec<f32>),
}

impl Matrix<'_> {
    pub fn as_slice(&self) -> &[f32] {
        match self {
            Matrix::Borrowed(a) => a.as_slice().expect("checked contiguous"),
            Matrix::Owned(v) => v,
        }
    }
}

pub fn matrix<'py>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    rows: usize,
    dim: usize,
) -> PyResult<Matrix<'py>> {
    let (shape, m) = if let Ok(a) = obj.extract::<PyReadonlyArray2<'py, f32>>() {
        if !a.is_c_contiguous() {
            return Err(contiguous_hint(name));
        }
        (a.shape().to_vec(), Matrix::Borrowed(a))
    } else if let Ok(a) = obj.extract::<PyReadonlyArray2<'py, f64>>() {
        let shape = a.shape().to_vec();
        let v: Vec<f32> = a.as_array().iter().map(|&x| x as f32).collect();
        (shape, Matrix::Owned(v))
    } else {
        return Err(PyTypeError::new_err(format!(
            "{name} must be a 2-D numpy array of float32, got {}; pass np.asarray({name}, dtype=np.float32)",
            describe(obj)
        )));
    };
    if shape != [rows, dim] {
        return Err(PyValueError::new_err(format!(
            "{name} has shape ({}, {}) but ({rows}, {dim}) is needed (one row of dim {dim} per id)",
            shape[0], shape[1]
        )));
    }
    if let Some(k) = m.as_slice().iter().position(|x| !x.is_finite()) {
        return Err(PyValueError::new_err(format!(
            "{name} has a non-finite value in row {}; embeddings must be finite",
            k / dim.max(1)
        )));
    }
    Ok(m)
}
