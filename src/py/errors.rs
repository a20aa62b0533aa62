//! The one mapping from core errors to Python exceptions.

use crate::error::Error;
use pyo3::exceptions::{PyKeyError, PyOSError, PyValueError};
use pyo3::PyErr;

pyo3::create_exception!(
    embcore,
    EmbcoreError,
    PyValueError,
    "Base class of embcore's ValueErrors."
);
pyo3::create_exception!(
    embcore,
    UnknownIdError,
    PyKeyError,
    "An id was looked up that the table does not hold."
);
pyo3::create_exception!(
    embcore,
    CapacityError,
    EmbcoreError,
    "A table reached its reserved capacity."
);
pyo3::create_exception!(
    embcore,
    SnapshotError,
    EmbcoreError,
    "A snapshot file is truncated, corrupted or of another version."
);

impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        let msg = e.to_string();
        match e {
            Error::InvalidArgument(_) => EmbcoreError::new_err(msg),
            Error::UnknownId(id) => UnknownIdError::new_err(id),
            Error::CapacityExceeded { .. } => CapacityError::new_err(msg),
            Error::CorruptSnapshot(_) => SnapshotError::new_err(msg),
            Error::Io { .. } => PyOSError::new_err(msg),
        }
    }
}
