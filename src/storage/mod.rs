//! Where rows live: address-stable regions (`region`), the lock-free id map
//! (`idmap`), the embedding table (`table`), admission / expiry / eviction
//! (`lifecycle`), table snapshots (`snapshot`) and whole-table scans (`scan`).
//! Imports only `kernels`, `io` and `error`.

pub mod idmap;
pub mod lifecycle;
pub mod region;
pub mod scan;
pub mod snapshot;
pub mod table;
