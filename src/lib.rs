//! embcore core: lock-free embedding tables, optimizers, model kernels,
//! streaming statistics and snapshots. Free of PyO3; the Python bindings live
//! in `py` behind the `python` feature.

pub mod error;

#[cfg(feature = "python")]
mod py;

pub use error::{Error, Result};
