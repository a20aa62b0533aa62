//! Training: one engine for every model. `model` (the field model, FFM and
//! FM; MF is its two-field case in `mf`), `driver` (the one training call),
//! `kernel` (the per-event loops), `config` (fields and layout), `bias`
//! (the shared global bias), `batch` (validation), `resolve` (ids to
//! rows), `regroup` (a multi-worker call's events by row owner), `loss`,
//! `observer` (the trait the Monitor implements) and `model_file`. Imports `storage`, `kernels`, `io`; never `monitor`.

pub mod batch;
pub mod bias;
pub mod config;
pub mod driver;
pub mod kernel;
pub mod loss;
pub mod mf;
pub mod model;
pub mod model_file;
pub mod observer;
pub mod regroup;
pub mod resolve;
pub mod shard;
