//! Training: the models (`mf`, `field`), their per-event loops, and model
//! files (`model_file`). Imports `storage`, `kernels`, `io`; never `monitor`
//! (the Monitor implements this layer's observer trait).

pub mod field;
pub mod mf;
pub mod model_file;
