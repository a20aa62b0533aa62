//! The one error type of the core. Each variant carries what went wrong as
//! data (names, values, what is allowed, offsets), so the message always has
//! the numbers involved and, where there is one, the remedy; the Python
//! bindings map every variant to one exception class (`py::errors`).

use std::fmt;

pub type Result<T> = std::result::Result<T, Error>;

/// How many unknown ids an `UnknownIds` error lists before "and N more".
pub const MAX_LISTED_IDS: usize = 5;

#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// An argument has the wrong length or shape: `name` should be
    /// `expected` and is `got` (e.g. "10 elements, one per event").
    Shape {
        name: String,
        expected: String,
        got: String,
    },
    /// A setting (hyper-parameter, option, lifecycle, monitor setting) is
    /// outside its allowed range.
    OutOfRange {
        name: String,
        value: String,
        allowed: String,
    },
    /// An element of a data argument is invalid: `name[index] = value`
    /// where `allowed` is needed.
    BadValue {
        name: String,
        index: usize,
        value: String,
        allowed: String,
    },
    /// A configuration that is invalid for a reason the other variants do
    /// not describe (duplicate field names, unknown options).
    Config(String),
    /// A call that is invalid for a reason the other variants do not
    /// describe (an operation the object does not support).
    Invalid(String),
    /// `what` needs `needed` new rows but has room for `free`.
    Capacity {
        what: String,
        needed: usize,
        free: usize,
        capacity: usize,
    },
    /// Ids that were looked up and are not held (the first few of them),
    /// and how many more there were.
    UnknownIds { ids: Vec<u64>, more: usize },
    /// An operating-system I/O failure, with its kind kept.
    Io {
        path: String,
        kind: std::io::ErrorKind,
        message: String,
    },
    /// A file or byte string that is truncated, corrupted or of another
    /// format or version; `offset` is the byte where it was found, if known.
    Corrupt { what: String, offset: Option<u64> },
    /// A failure inside the library (a worker that could not be spawned or
    /// that panicked), naming the call.
    Internal { call: String, message: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Shape {
                name,
                expected,
                got,
            } => write!(f, "{name} has {got}, expected {expected}"),
            Error::OutOfRange {
                name,
                value,
                allowed,
            } => write!(f, "{name} must be {allowed}, got {value}"),
            Error::BadValue {
                name,
                index,
                value,
                allowed,
            } => write!(f, "{name}[{index}] = {value}; {allowed}"),
            Error::Config(msg) | Error::Invalid(msg) => write!(f, "{msg}"),
            Error::Capacity {
                what,
                needed,
                free,
                capacity,
            } => write!(
                f,
                "{what} needs {needed} new rows but has room for {free} more \
                 (capacity {capacity}); create it with a larger capacity="
            ),
            Error::UnknownIds { ids, more } => {
                let list: Vec<String> = ids.iter().map(u64::to_string).collect();
                let (s, them) = if ids.len() + more == 1 {
                    ("", "it is")
                } else {
                    ("s", "they are")
                };
                write!(f, "unknown id{s} {}", list.join(", "))?;
                if *more > 0 {
                    write!(f, " and {more} more")?;
                }
                write!(
                    f,
                    ": {them} not in the table (train or insert first, or pass default=)"
                )
            }
            Error::Io { path, message, .. } => write!(f, "{path}: {message}"),
            Error::Corrupt { what, offset } => {
                write!(f, "corrupt or unreadable: {what}")?;
                if let Some(o) = offset {
                    write!(f, " (at byte {o})")?;
                }
                Ok(())
            }
            Error::Internal { call, message } => write!(
                f,
                "internal error in {call}: {message} (nothing was changed by the failed part; \
                 please report this)"
            ),
        }
    }
}

impl std::error::Error for Error {}

/// Shorthand for an `Invalid` error.
pub fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}

/// Shorthand for a `Config` error.
pub fn config(msg: impl Into<String>) -> Error {
    Error::Config(msg.into())
}

/// Shorthand for an `OutOfRange` error.
pub fn out_of_range(name: &str, value: impl fmt::Display, allowed: impl Into<String>) -> Error {
    Error::OutOfRange {
        name: name.to_string(),
        value: value.to_string(),
        allowed: allowed.into(),
    }
}

/// Shorthand for a `Shape` error.
pub fn shape(name: &str, expected: impl Into<String>, got: impl Into<String>) -> Error {
    Error::Shape {
        name: name.to_string(),
        expected: expected.into(),
        got: got.into(),
    }
}

/// Shorthand for a `Corrupt` error without an offset.
pub fn corrupt(what: impl Into<String>) -> Error {
    Error::Corrupt {
        what: what.into(),
        offset: None,
    }
}

/// An `Io` error for `path`, keeping the kind of `e`.
pub fn io(path: &std::path::Path, e: &std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        kind: e.kind(),
        message: e.to_string(),
    }
}

/// An `UnknownIds` error over the ids that were not found (listing the
/// first `MAX_LISTED_IDS` distinct ones in order of appearance).
pub fn unknown_ids(missing: impl IntoIterator<Item = u64>) -> Error {
    let mut ids: Vec<u64> = Vec::new();
    let mut more = 0;
    for id in missing {
        if ids.contains(&id) {
            continue;
        }
        if ids.len() < MAX_LISTED_IDS {
            ids.push(id);
        } else {
            more += 1;
        }
    }
    Error::UnknownIds { ids, more }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_names_what_went_wrong() {
        let cases: Vec<(Error, &str)> = vec![
            (
                shape("labels", "10 elements (one per event)", "9 elements"),
                "labels has 9 elements, expected 10 elements (one per event)",
            ),
            (
                out_of_range("learning_rate", 1e30, "in (0, 1e4]"),
                "learning_rate must be in (0, 1e4], got 1000000000000000000000000000000",
            ),
            (
                Error::BadValue {
                    name: "labels".into(),
                    index: 3,
                    value: "2".into(),
                    allowed: "the logistic loss needs labels in [0, 1]".into(),
                },
                "labels[3] = 2; the logistic loss needs labels in [0, 1]",
            ),
            (config("field 'a' appears twice"), "field 'a' appears twice"),
            (invalid("no lifecycle"), "no lifecycle"),
            (
                Error::Capacity {
                    what: "the table".into(),
                    needed: 10,
                    free: 0,
                    capacity: 100,
                },
                "the table needs 10 new rows but has room for 0 more (capacity 100)",
            ),
            (unknown_ids([7]), "unknown id 7: it is not in the table"),
            (
                unknown_ids([1, 2, 2, 3, 4, 5, 6, 7]),
                "unknown ids 1, 2, 3, 4, 5 and 2 more: they are",
            ),
            (
                io(
                    std::path::Path::new("/x"),
                    &std::io::Error::from(std::io::ErrorKind::NotFound),
                ),
                "/x: ",
            ),
            (
                Error::Corrupt {
                    what: "t.embc: checksum".into(),
                    offset: Some(64),
                },
                "corrupt or unreadable: t.embc: checksum (at byte 64)",
            ),
            (
                Error::Internal {
                    call: "train".into(),
                    message: "failed to spawn thread".into(),
                },
                "internal error in train: failed to spawn thread",
            ),
        ];
        for (e, want) in cases {
            let got = e.to_string();
            assert!(got.contains(want), "{got:?} does not contain {want:?}");
        }
        let Error::Io { kind, .. } = io(
            std::path::Path::new("/x"),
            &std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        ) else {
            panic!("io() makes an Io error")
        };
        assert_eq!(kind, std::io::ErrorKind::PermissionDenied);
    }
}
