//! `SlotIndex`: dense slots for ids in order of first sight (see
//! `storage::slots`), for bookkeeping kept in numpy arrays beside the tables.

use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;

use super::args;
use crate::storage::slots;

/// Dense slots for ids, in order of first sight: ``SlotIndex().slots(ids)`` returns each id's
/// slot (int64) and, for the ids not seen before, the position in ``ids`` of their first sight
/// (int64, in slot order: the new slots are ``len`` before the call onwards).
///
/// >>> import numpy as np
/// >>> from embcore._core import SlotIndex
/// >>> index = SlotIndex()
/// >>> slots, first = index.slots(np.array([7, 3, 7], dtype=np.uint64))
/// >>> slots.tolist(), first.tolist(), len(index)
/// ([0, 1, 0], [0, 1], 2)
#[pyclass(name = "SlotIndex", module = "embcore")]
pub struct PySlotIndex {
    inner: slots::SlotIndex,
}

#[pymethods]
impl PySlotIndex {
    #[new]
    fn new() -> Self {
        PySlotIndex {
            inner: slots::SlotIndex::new(),
        }
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// Each id's slot, and the first-sight positions of the new ids (see the class).
    #[allow(clippy::type_complexity)]
    fn slots<'py>(
        &mut self,
        py: Python<'py>,
        ids: &Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<i64>>)> {
        let ids = args::ids(ids, "ids")?;
        let ids = ids.as_slice();
        let mut out = vec![0i64; ids.len()];
        let mut first = Vec::new();
        let inner = &mut self.inner;
        super::errors::guard("SlotIndex.slots", || {
            Ok(py.detach(|| inner.slots(ids, &mut out, &mut first))?)
        })?;
        Ok((out.into_pyarray(py), first.into_pyarray(py)))
    }
}
