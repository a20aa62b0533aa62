//! Where rows live: address-stable regions (`region`), the lock-free id map
//! (`idmap`), the embedding table (`table`), admission / expiry / eviction
//! (`lifecycle`), table snapshots (`snapshot`), whole-table scans (`scan`) and the dense id
//! slots of per-id bookkeeping beside the tables (`slots`).
//! Imports only `kernels`, `io` and `error`.

pub mod idmap;
pub mod lifecycle;
pub mod region;
pub mod scan;
pub mod slots;
pub mod snapshot;
pub mod table;
