//! The one error type of the core. Every message carries the numbers involved
//! and, where there is one, the remedy.

use std::fmt;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// A caller-supplied argument is invalid (shape, value, hyper-parameter).
    InvalidArgument(String),
    /// An id was looked up that the table does not hold.
    UnknownId(u64),
    /// The table reached its reserved capacity.
    CapacityExceeded { capacity: usize },
    /// A snapshot file is truncated, corrupted or of another version.
    CorruptSnapshot(String),
    /// An operating-system I/O failure, with the path involved.
    Io { path: String, message: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidArgument(msg) => write!(f, "{msg}"),
            Error::UnknownId(id) => write!(f, "id {id} is not in the table"),
            Error::CapacityExceeded { capacity } => write!(
                f,
                "the table is full ({capacity} rows reserved); create it with a larger capacity="
            ),
            Error::CorruptSnapshot(msg) => write!(f, "corrupt or unreadable snapshot: {msg}"),
            Error::Io { path, message } => write!(f, "{path}: {message}"),
        }
    }
}

impl std::error::Error for Error {}

/// Shorthand for an `InvalidArgument` error.
pub fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidArgument(msg.into())
}
