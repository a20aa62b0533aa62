//! The `embcore._core` extension module: thin wrappers only.

mod args;
mod auc;
mod drift;
mod errors;
mod ffm;
mod mf;
mod model;
mod monitor;
mod shard;
mod slots;
mod table;
mod topk;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add(
        "build_profile",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    )?;
    m.add("DEFAULT_CAPACITY", crate::storage::table::DEFAULT_CAPACITY)?;
    m.add("MAX_LABEL", crate::train::loss::MAX_LABEL)?;
    m.add("MAX_WEIGHT", crate::train::loss::MAX_WEIGHT)?;
    m.add("SNAPSHOT_VERSION", crate::storage::snapshot::VERSION)?;
    m.add_class::<table::PyEmbeddingTable>()?;
    m.add_function(wrap_pyfunction!(drift::rowwise_cosine, m)?)?;
    m.add_function(wrap_pyfunction!(drift::cross_product, m)?)?;
    m.add_function(wrap_pyfunction!(auc::grouped_auc_sorted, m)?)?;
    m.add_function(wrap_pyfunction!(auc::grouped_sums, m)?)?;
    m.add_class::<mf::PyMatrixFactorization>()?;
    m.add_class::<monitor::PyMonitor>()?;
    m.add_class::<monitor::PyStepTracker>()?;
    m.add_class::<slots::PySlotIndex>()?;
    m.add_class::<topk::PyTopK>()?;
    m.add_class::<ffm::PyFieldModel>()?;
    m.add_class::<ffm::PyFieldAwareFM>()?;
    m.add_class::<ffm::PyFactorizationMachine>()?;
    shard::register(m)?;
    m.add("EmbcoreError", py.get_type::<errors::EmbcoreError>())?;
    m.add("UnknownIdError", errors::unknown_id_error(py)?)?;
    m.add("CapacityError", py.get_type::<errors::CapacityError>())?;
    m.add("SnapshotError", py.get_type::<errors::SnapshotError>())?;
    m.add("ConfigError", py.get_type::<errors::ConfigError>())?;
    m.add("DatasetError", py.get_type::<errors::DatasetError>())?;
    Ok(())
}
