//! Conversion and validation of numpy arguments, before any state changes.

use numpy::{PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;

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
    crate::py::errors::value_error(format!(
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
            return Err(crate::py::errors::value_error(format!(
                "{name}[{k}] = {} is negative; ids are unsigned 64-bit integers",
                s[k]
            )));
        }
        return Ok(Ids::I(a));
    }
    Err(crate::py::errors::type_error_msg(format!(
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
    Err(crate::py::errors::type_error_msg(format!(
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
            Err(_) => Err(crate::py::errors::type_error_msg(format!(
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
        return Err(crate::py::errors::type_error_msg(format!(
            "{name} must be a 2-D numpy array of float32, got {}; pass np.asarray({name}, dtype=np.float32)",
            describe(obj)
        )));
    };
    if shape != [rows, dim] {
        return Err(crate::py::errors::value_error(format!(
            "{name} has shape ({}, {}) but ({rows}, {dim}) is needed (one row of dim {dim} per id)",
            shape[0], shape[1]
        )));
    }
    if let Some(k) = m.as_slice().iter().position(|x| !x.is_finite()) {
        return Err(crate::py::errors::value_error(format!(
            "{name} has a non-finite value in row {}; embeddings must be finite",
            k / dim.max(1)
        )));
    }
    Ok(m)
}

/// Arguments of a constructor taken as `*args, **kwargs` and converted one
/// by one, so that every rejection names the argument, what was given and
/// what is allowed (PyO3's own conversions say only "'str' object cannot be
/// interpreted as an integer"). The signature users see is the class's
/// `text_signature`.
pub struct Params<'py> {
    call: &'static str,
    values: Vec<(&'static str, Bound<'py, PyAny>)>,
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default()
}

fn shown(obj: &Bound<'_, PyAny>) -> String {
    let r = obj.repr().map(|r| r.to_string()).unwrap_or_default();
    let r = if r.chars().count() > 60 {
        format!("{}...", r.chars().take(57).collect::<String>())
    } else {
        r
    };
    format!("{r} ({})", type_name(obj))
}

/// An integer argument: a Python int or any object with `__index__` (numpy
/// integers), not a bool, within [min, max].
pub fn int_value(obj: &Bound<'_, PyAny>, name: &str, min: i64, max: i64) -> PyResult<i64> {
    let range =
        || crate::error::out_of_range(name, shown(obj), format!("an integer in [{min}, {max}]"));
    if obj.is_instance_of::<pyo3::types::PyBool>() || !obj.hasattr("__index__")? {
        return Err(crate::py::errors::type_error_msg(format!(
            "{name} must be an integer, got {}",
            shown(obj)
        )));
    }
    let v: i64 = obj.extract().map_err(|_| range())?;
    if !(min..=max).contains(&v) {
        return Err(range().into());
    }
    Ok(v)
}

/// A float argument (int or float, numpy scalars included) that fits in an f32.
pub fn float_value(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<f32> {
    if obj.is_instance_of::<pyo3::types::PyString>() || obj.is_instance_of::<pyo3::types::PyBool>()
    {
        return Err(crate::py::errors::type_error_msg(format!(
            "{name} must be a number, got {}",
            shown(obj)
        )));
    }
    let v: f64 = obj.extract().map_err(|_| {
        crate::py::errors::type_error_msg(format!("{name} must be a number, got {}", shown(obj)))
    })?;
    if v.is_finite() && v.abs() > f64::from(f32::MAX) {
        return Err(crate::error::out_of_range(
            name,
            v,
            "a finite number that fits in 32 bits (|x| <= 3.4e38)",
        )
        .into());
    }
    Ok(v as f32)
}

impl<'py> Params<'py> {
    /// `names` in order; the first `positional` may be given positionally.
    pub fn parse(
        call: &'static str,
        names: &[&'static str],
        positional: usize,
        args: &Bound<'py, pyo3::types::PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Self> {
        let mut values = Vec::new();
        if args.len() > positional {
            return Err(crate::py::errors::type_error_msg(format!(
                "{call}() takes at most {positional} positional argument{} ({}), got {}; \
                 pass the others by keyword",
                if positional == 1 { "" } else { "s" },
                names[..positional].join(", "),
                args.len()
            )));
        }
        for (k, v) in args.iter().enumerate() {
            values.push((names[k], v));
        }
        if let Some(kw) = kwargs {
            for (key, v) in kw.iter() {
                let key: String = key.extract()?;
                let Some(&name) = names.iter().find(|n| **n == key) else {
                    return Err(crate::py::errors::type_error_msg(format!(
                        "{call}() got an unexpected keyword argument '{key}'; its arguments are {}",
                        names.join(", ")
                    )));
                };
                if values.iter().any(|(n, _)| *n == name) {
                    return Err(crate::py::errors::type_error_msg(format!(
                        "{call}() got two values for argument '{name}'"
                    )));
                }
                values.push((name, v));
            }
        }
        Ok(Params { call, values })
    }

    /// The value given for `name` (None when absent or given as None).
    pub fn get(&self, name: &str) -> Option<&Bound<'py, PyAny>> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .filter(|v| !v.is_none())
    }

    pub fn required(&self, name: &str) -> PyResult<&Bound<'py, PyAny>> {
        self.get(name).ok_or_else(|| {
            crate::py::errors::type_error_msg(format!(
                "{}() missing required argument '{name}'",
                self.call
            ))
        })
    }

    pub fn int(&self, name: &str, default: i64, min: i64, max: i64) -> PyResult<i64> {
        self.get(name)
            .map_or(Ok(default), |v| int_value(v, name, min, max))
    }

    pub fn opt_int(&self, name: &str, min: i64, max: i64) -> PyResult<Option<i64>> {
        self.get(name)
            .map(|v| int_value(v, name, min, max))
            .transpose()
    }

    pub fn seed(&self, name: &str) -> PyResult<u64> {
        match self.get(name) {
            None => Ok(0),
            Some(v) => {
                if v.is_instance_of::<pyo3::types::PyBool>() || !v.hasattr("__index__")? {
                    return Err(crate::py::errors::type_error_msg(format!(
                        "{name} must be an integer, got {}",
                        shown(v)
                    )));
                }
                v.extract::<u64>().map_err(|_| {
                    crate::error::out_of_range(name, shown(v), "an integer in [0, 2**64 - 1]")
                        .into()
                })
            }
        }
    }

    pub fn float(&self, name: &str, default: f32) -> PyResult<f32> {
        self.get(name).map_or(Ok(default), |v| float_value(v, name))
    }

    /// A float argument kept in double precision.
    pub fn float64(&self, name: &str, default: f64) -> PyResult<f64> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => {
                float_value(v, name)?;
                Ok(v.extract::<f64>()?)
            }
        }
    }

    pub fn opt_float(&self, name: &str) -> PyResult<Option<f32>> {
        self.get(name).map(|v| float_value(v, name)).transpose()
    }

    pub fn boolean(&self, name: &str, default: bool) -> PyResult<bool> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.extract::<bool>().map_err(|_| {
                crate::py::errors::type_error_msg(format!(
                    "{name} must be True or False, got {}",
                    shown(v)
                ))
            }),
        }
    }

    pub fn string(&self, name: &str, default: &str) -> PyResult<String> {
        match self.get(name) {
            None => Ok(default.to_string()),
            Some(v) => v.extract::<String>().map_err(|_| {
                crate::py::errors::type_error_msg(format!(
                    "{name} must be a string, got {}",
                    shown(v)
                ))
            }),
        }
    }

    pub fn dict(&self, name: &str) -> PyResult<Option<&Bound<'py, PyDict>>> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.cast::<PyDict>().map(Some).map_err(|_| {
                crate::py::errors::type_error_msg(format!(
                    "{name} must be a dict or None, got {}",
                    shown(v)
                ))
            }),
        }
    }
}

/// `threads=`: an integer >= 1 (a call starts at most
/// `kernels::parallel::MAX_THREADS`, and no more than its work needs).
pub fn threads(obj: Option<&Bound<'_, PyAny>>) -> PyResult<usize> {
    match obj {
        None => Ok(1),
        Some(o) if o.is_none() => Ok(1),
        Some(o) => Ok(int_value(o, "threads", 1, i64::MAX)? as usize),
    }
}

/// `capacity=` of a load: None, or an integer in [1, MAX_CAPACITY].
pub fn capacity(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<usize>> {
    match obj {
        Some(o) if !o.is_none() => {
            Ok(Some(
                int_value(o, "capacity", 1, crate::storage::table::MAX_CAPACITY as i64)? as usize,
            ))
        }
        _ => Ok(None),
    }
}

/// Named conversions for `#[pyo3(from_py_with = ...)]`: PyO3's own say only
/// "'float' object is not an instance of 'str'", without the argument.
fn text(obj: &Bound<'_, PyAny>, name: &str, what: &str) -> PyResult<String> {
    obj.extract::<String>().map_err(|_| {
        crate::py::errors::type_error_msg(format!("{name} must be {what}, got {}", shown(obj)))
    })
}

pub fn field_arg(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    text(obj, "field", "a field name (str)")
}

pub fn against_arg(obj: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
    if obj.is_none() {
        return Ok(None);
    }
    text(obj, "against", "a field name (str) or None").map(Some)
}

pub fn monitor_field_arg(obj: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
    if obj.is_none() {
        return Ok(None);
    }
    text(obj, "monitor_field", "a field name (str) or None").map(Some)
}

pub fn monitor_against_arg(obj: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
    if obj.is_none() {
        return Ok(None);
    }
    text(obj, "monitor_against", "a field name (str) or None").map(Some)
}

pub fn path_arg(obj: &Bound<'_, PyAny>) -> PyResult<std::path::PathBuf> {
    obj.extract::<std::path::PathBuf>().map_err(|_| {
        crate::py::errors::type_error_msg(format!(
            "path must be a str or os.PathLike, got {}",
            shown(obj)
        ))
    })
}

pub fn bytes_arg(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    obj.extract::<Vec<u8>>()
        .ok()
        .filter(|_| !obj.is_instance_of::<pyo3::types::PyString>())
        .ok_or_else(|| {
            crate::py::errors::type_error_msg(format!(
                "data must be bytes (from Monitor.to_bytes()), got {}",
                shown(obj)
            ))
        })
}

pub fn table_arg<'py>(
    obj: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, crate::py::table::PyEmbeddingTable>> {
    obj.cast::<crate::py::table::PyEmbeddingTable>()
        .cloned()
        .map_err(|_| {
            crate::py::errors::type_error_msg(format!(
                "table must be an embcore.EmbeddingTable (e.g. model.items or \
                 model.table('item')), got {}",
                shown(obj)
            ))
        })
}

pub fn monitor_arg<'py>(
    obj: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, crate::py::monitor::PyMonitor>> {
    obj.cast::<crate::py::monitor::PyMonitor>()
        .cloned()
        .map_err(|_| {
            crate::py::errors::type_error_msg(format!(
                "other must be an embcore.Monitor, got {}",
                shown(obj)
            ))
        })
}

/// `from_py_with` integer conversions that name their argument.
macro_rules! int_args {
    ($($fn_name:ident => $name:literal),* $(,)?) => {$(
        pub fn $fn_name(obj: &Bound<'_, PyAny>) -> PyResult<i64> {
            int_value(obj, $name, i64::MIN, i64::MAX)
        }
    )*};
}
int_args!(now_arg => "now", timestamp_arg => "timestamp", budget_arg => "budget");

/// A table version: an integer >= 0.
pub fn version_arg(obj: &Bound<'_, PyAny>) -> PyResult<u64> {
    Ok(int_value(obj, "version", 0, i64::MAX)? as u64)
}
