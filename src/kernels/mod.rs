//! Pure math on slices and atomic cells, below every other layer: SIMD
//! lanes and fused optimizer steps (`simd`), optimizers (`optim`), row-wise
//! drift (`drift`), hashing and seeded randoms (`rng`), work splitting
//! across threads (`parallel`), grouped ROC AUC over sorted keys (`auc`),
//! running top-k over blocks of scores (`topk`).

pub mod auc;
pub mod drift;
pub mod optim;
pub mod parallel;
pub mod rng;
pub mod simd;
pub mod topk;
