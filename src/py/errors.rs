//! The one mapping from core errors to Python exceptions, and the only place
//! that constructs a Python exception (CI greps for `new_err` elsewhere).
//!
//! Hierarchy (re-exported by `embcore.errors`):
//! `EmbcoreError(ValueError)` with `ConfigError`, `DatasetError`,
//! `CapacityError`, `SnapshotError`, and `UnknownIdError(EmbcoreError,
//! KeyError)`. I/O errors keep their kind: a missing file is
//! `FileNotFoundError`, a denied one `PermissionError`.

use crate::error::Error;
use pyo3::exceptions::{
    PyFileExistsError, PyFileNotFoundError, PyIsADirectoryError, PyKeyError, PyNotADirectoryError,
    PyOSError, PyPermissionError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};
use pyo3::PyErr;

pyo3::create_exception!(
    embcore,
    EmbcoreError,
    PyValueError,
    "Base class of embcore's errors: an invalid argument, setting or input (a ValueError)."
);
pyo3::create_exception!(
    embcore,
    ConfigError,
    EmbcoreError,
    "An invalid setting: a model, table, monitor, lifecycle, study or replay option."
);
pyo3::create_exception!(
    embcore,
    DatasetError,
    EmbcoreError,
    "A log or dataset that cannot be read as asked (format, columns, malformed rows)."
);
pyo3::create_exception!(
    embcore,
    CapacityError,
    EmbcoreError,
    "A table has no room for the rows a call needs."
);
pyo3::create_exception!(
    embcore,
    SnapshotError,
    EmbcoreError,
    "A file or byte string that is truncated, corrupted or of another format or version."
);

static UNKNOWN_ID_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// `UnknownIdError`: both an `EmbcoreError` and a `KeyError` (created with
/// `type()` because it has two bases).
pub fn unknown_id_error(py: Python<'_>) -> PyResult<Bound<'_, PyType>> {
    let t = UNKNOWN_ID_ERROR.get_or_try_init(py, || -> PyResult<Py<PyType>> {
        let bases = PyTuple::new(
            py,
            [py.get_type::<EmbcoreError>(), py.get_type::<PyKeyError>()],
        )?;
        let dict = PyDict::new(py);
        dict.set_item("__module__", "embcore")?;
        dict.set_item(
            "__doc__",
            "Ids were looked up that the table does not hold (an EmbcoreError and a KeyError).",
        )?;
        let made = py
            .get_type::<PyType>()
            .call1(("UnknownIdError", bases, dict))?;
        Ok(made.cast_into::<PyType>()?.unbind())
    })?;
    Ok(t.bind(py).clone())
}

impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        let msg = e.to_string();
        match e {
            Error::Shape { .. }
            | Error::BadValue { .. }
            | Error::Invalid(_)
            | Error::Internal { .. } => EmbcoreError::new_err(msg),
            Error::OutOfRange { .. } | Error::Config(_) => ConfigError::new_err(msg),
            Error::Capacity { .. } => CapacityError::new_err(msg),
            Error::Corrupt { .. } => SnapshotError::new_err(msg),
            Error::UnknownIds { .. } => Python::attach(|py| match unknown_id_error(py) {
                Ok(t) => PyErr::from_type(t, msg),
                Err(err) => err,
            }),
            Error::Io { kind, .. } => {
                use std::io::ErrorKind as K;
                match kind {
                    K::NotFound => PyFileNotFoundError::new_err(msg),
                    K::PermissionDenied => PyPermissionError::new_err(msg),
                    K::AlreadyExists => PyFileExistsError::new_err(msg),
                    K::IsADirectory => PyIsADirectoryError::new_err(msg),
                    K::NotADirectory => PyNotADirectoryError::new_err(msg),
                    _ => PyOSError::new_err(msg),
                }
            }
        }
    }
}

/// Runs `f`, turning a Rust panic into an `EmbcoreError` naming `call`
/// (the boundary that keeps panics from reaching Python as
/// `PanicException`, a `BaseException`).
pub fn guard<T>(call: &str, f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_string());
            Err(Error::Internal {
                call: call.to_string(),
                message,
            }
            .into())
        }
    }
}

/// An `EmbcoreError` from a message (argument checks in the bindings that
/// have no typed core variant).
pub fn value_error(msg: impl Into<String>) -> PyErr {
    Error::Invalid(msg.into()).into()
}

/// A `TypeError` from a complete message.
pub fn type_error_msg(msg: impl Into<String>) -> PyErr {
    PyTypeError::new_err(msg.into())
}
