//! embcore core: lock-free embedding tables, optimizers, model kernels,
//! streaming statistics and snapshots. Free of PyO3; the Python bindings live
//! in `py` behind the `python` feature.

pub mod drift;
pub mod error;
pub mod ffm;
pub mod fused;
pub mod idmap;
pub mod kernels;
pub mod lifecycle;
pub mod mf;
pub mod model_io;
pub mod monitor;
pub mod optim;
pub mod region;
pub mod rng;
pub mod sketch;
pub mod snapshot;
pub mod table;

#[cfg(feature = "python")]
mod py;

pub use error::{Error, Result};
