//! embcore core: lock-free embedding tables, one training engine, streaming
//! monitoring of embedding evolution, and one file container. Free of PyO3;
//! the Python bindings live in `py` behind the `python` feature.
//!
//! Layers, lowest first; a module only imports modules of its own or a lower
//! layer (checked by `scripts/check_layers.py` in CI):
//!
//! | layer      | what is inside |
//! |------------|----------------|
//! | `error`    | the one error type |
//! | `kernels`  | pure math on slices and cells: SIMD lanes, optimizers, dot products, drift, hashing, work splitting |
//! | `io`       | the framed, versioned, checksummed container and atomic file writes |
//! | `storage`  | regions, the id map, the embedding table, lifecycles, table snapshots, table scans |
//! | `train`    | losses, batch validation, id resolution, the training driver, the models, the observer trait, model files |
//! | `monitor`  | the Monitor (implements `train`'s observer), sketches, summaries |
//! | `py`       | the `embcore._core` Python module (feature `python`), thin wrappers and the one error mapping |

pub mod error;
pub mod io;
pub mod kernels;
pub mod monitor;
pub mod storage;
pub mod train;

#[cfg(feature = "python")]
mod py;

pub use error::{Error, Result};
