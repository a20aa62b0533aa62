//! Dense slots for ids, in order of first sight: the id → slot index of
//! per-id bookkeeping kept beside the tables (progressive validation's
//! per-item interaction counts and first-event times). A hash map looked up
//! once per id, where a sorted array searched by bisection took a chain of
//! cache misses per id and an O(ids) insert per batch of new ones.

use crate::error::{Error, Result};
use crate::kernels::rng::IdHashBuilder;
use std::collections::hash_map::Entry;
use std::collections::HashMap;

/// Slots are `u32`: at most this many distinct ids.
pub const MAX_SLOTS: usize = u32::MAX as usize;

#[derive(Default)]
pub struct SlotIndex {
    map: HashMap<u64, u32, IdHashBuilder>,
}

impl SlotIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Distinct ids seen so far (the next new id's slot).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Each id's slot into `slots` (same length as `ids`). Ids not seen
    /// before take the next slots in the order of their first sight in
    /// `ids`; the position in `ids` of each new id's first sight is pushed
    /// onto `first_at`, in slot order. Fails, changing nothing, when the new
    /// ids could exceed `MAX_SLOTS`.
    pub fn slots(&mut self, ids: &[u64], slots: &mut [i64], first_at: &mut Vec<i64>) -> Result<()> {
        if slots.len() != ids.len() {
            return Err(Error::Internal {
                call: "SlotIndex::slots".into(),
                message: format!("{} slots for {} ids", slots.len(), ids.len()),
            });
        }
        if self.map.len().saturating_add(ids.len()) > MAX_SLOTS {
            return Err(crate::error::invalid(format!(
                "{} ids already hold slots; {} more could exceed the {MAX_SLOTS} a SlotIndex holds",
                self.map.len(),
                ids.len()
            )));
        }
        self.map.reserve(ids.len().min(1 << 20));
        for (k, (&id, slot)) in ids.iter().zip(slots.iter_mut()).enumerate() {
            let next = self.map.len() as u32;
            *slot = i64::from(match self.map.entry(id) {
                Entry::Occupied(e) => *e.get(),
                Entry::Vacant(e) => {
                    first_at.push(k as i64);
                    *e.insert(next)
                }
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_first_sight_and_repeat() {
        let mut s = SlotIndex::new();
        let (mut out, mut first) = (vec![0; 6], Vec::new());
        s.slots(&[7, 3, 7, 9, 3, 0], &mut out, &mut first).unwrap();
        assert_eq!(out, [0, 1, 0, 2, 1, 3]);
        assert_eq!(first, [0, 1, 3, 5]);
        let (mut out, mut first) = (vec![0; 4], Vec::new());
        s.slots(&[9, 11, 0, 11], &mut out, &mut first).unwrap();
        assert_eq!(out, [2, 4, 3, 4]);
        assert_eq!(first, [1]);
        assert_eq!(s.len(), 5);
        assert!(s.slots(&[1], &mut [0, 0], &mut first).is_err());
        assert_eq!(s.len(), 5);
    }
}
