//! The index of `Monitor::observe`'s previous rows: id → `Prev`.
//!
//! Design notes.
//! * `observe` looks up every row's id in a table that, for the ids of a
//!   large model, lives in main memory: with a general hash map each lookup
//!   is a cache miss the loop waits for. This table is open addressing with
//!   linear probing over one flat array of (id, `Prev`) entries, so that the
//!   caller can `prefetch` the entry of an id some rows ahead and find it in
//!   cache when it gets there.
//! * At most half full (it doubles beyond): a lookup reads one or two
//!   adjacent entries. An entry whose `slot` is `NO_SLOT` is empty (a real
//!   slot indexes the previous rows, far below u32::MAX).
//! * Removal shifts the following entries of the probe run back (no
//!   tombstones), so lookups never slow down with removals.

use super::{Prev, NO_SLOT};
use crate::kernels::rng::mix64;

const EMPTY: (u64, Prev) = (
    0,
    Prev {
        slot: NO_SLOT,
        seen: 0,
        first_seen: 0,
        last: 0,
    },
);

#[derive(Clone, Debug, Default)]
pub(super) struct PrevMap {
    entries: Vec<(u64, Prev)>,
    len: usize,
}

impl PrevMap {
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Entries allocated.
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    #[inline(always)]
    fn home(&self, id: u64) -> usize {
        mix64(id) as usize & (self.entries.len().wrapping_sub(1))
    }

    /// Index of `id`'s entry, or of the empty entry where it would go.
    #[inline(always)]
    fn probe(&self, id: u64) -> (usize, bool) {
        let mask = self.entries.len() - 1;
        let mut i = self.home(id);
        loop {
            let e = &self.entries[i];
            if e.1.slot == NO_SLOT {
                return (i, false);
            }
            if e.0 == id {
                return (i, true);
            }
            i = (i + 1) & mask;
        }
    }

    /// Hint the CPU to fetch the entry where `id`'s probe starts.
    #[inline(always)]
    pub fn prefetch(&self, id: u64) {
        #[cfg(target_arch = "x86_64")]
        if !self.entries.is_empty() {
            let p = self
                .entries
                .as_ptr()
                .wrapping_add(self.home(id))
                .cast::<i8>();
            // SAFETY: prefetch never faults, whatever the address. An entry
            // may straddle two cache lines: fetch both.
            unsafe {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                _mm_prefetch(p, _MM_HINT_T0);
                _mm_prefetch(
                    p.wrapping_add(std::mem::size_of::<(u64, Prev)>() - 1),
                    _MM_HINT_T0,
                );
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = id;
    }

    pub fn get(&self, id: &u64) -> Option<&Prev> {
        if self.len == 0 {
            return None;
        }
        match self.probe(*id) {
            (i, true) => Some(&self.entries[i].1),
            _ => None,
        }
    }

    #[inline(always)]
    pub fn get_mut(&mut self, id: &u64) -> Option<&mut Prev> {
        if self.len == 0 {
            return None;
        }
        match self.probe(*id) {
            (i, true) => Some(&mut self.entries[i].1),
            _ => None,
        }
    }

    /// Insert or replace `id`'s entry.
    pub fn insert(&mut self, id: u64, p: Prev) {
        debug_assert_ne!(p.slot, NO_SLOT);
        if 2 * (self.len + 1) > self.entries.len() {
            self.grow();
        }
        let (i, found) = self.probe(id);
        self.len += usize::from(!found);
        self.entries[i] = (id, p);
    }

    #[cold]
    fn grow(&mut self) {
        let cap = (2 * self.entries.len()).max(16);
        let mut fresh = Vec::with_capacity(cap);
        advise_huge_pages(&fresh);
        fresh.resize(cap, EMPTY);
        let old = std::mem::replace(&mut self.entries, fresh);
        for (id, p) in old.into_iter().filter(|e| e.1.slot != NO_SLOT) {
            let (i, _) = self.probe(id);
            self.entries[i] = (id, p);
        }
    }

    pub fn remove(&mut self, id: &u64) -> Option<Prev> {
        if self.len == 0 {
            return None;
        }
        let (mut hole, found) = self.probe(*id);
        if !found {
            return None;
        }
        let gone = self.entries[hole].1;
        let mask = self.entries.len() - 1;
        let mut j = (hole + 1) & mask;
        // Move back every later entry of the run that may live in the hole
        // (its probe starts at or before the hole, cyclically).
        while self.entries[j].1.slot != NO_SLOT {
            let h = self.home(self.entries[j].0);
            if (j.wrapping_sub(h) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.entries[hole] = self.entries[j];
                hole = j;
            }
            j = (j + 1) & mask;
        }
        self.entries[hole] = EMPTY;
        self.len -= 1;
        Some(gone)
    }

    /// Keep the entries for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&u64, &mut Prev) -> bool) {
        let mut gone = Vec::new();
        for (id, p) in self.entries.iter_mut().filter(|e| e.1.slot != NO_SLOT) {
            if !keep(id, p) {
                gone.push(*id);
            }
        }
        for id in &gone {
            self.remove(id);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&u64, &Prev)> {
        self.entries
            .iter()
            .filter(|e| e.1.slot != NO_SLOT)
            .map(|(id, p)| (id, p))
    }
}

/// Ask for transparent huge pages over the 2 MiB-aligned part of `v`'s
/// allocation (before its pages are touched), where the kernel allows it:
/// lookups at random over tens of megabytes otherwise miss the TLB too.
pub(super) fn advise_huge_pages<T>(v: &Vec<T>) {
    const HUGE: usize = 2 << 20;
    let bytes = v.capacity() * std::mem::size_of::<T>();
    let start = v.as_ptr() as usize;
    let (lo, hi) = (start.next_multiple_of(HUGE), (start + bytes) / HUGE * HUGE);
    #[cfg(target_os = "linux")]
    if hi > lo {
        // SAFETY: advice on a range of our own allocation; it changes how
        // the kernel backs the pages, never their contents.
        unsafe { libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (lo, hi);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn prev(k: u64) -> Prev {
        Prev {
            slot: k as u32,
            seen: k,
            first_seen: -(k as i64),
            last: 2 * k as i64,
        }
    }

    /// Random inserts, removals and retains agree with a std HashMap,
    /// including on ids that collide (few distinct homes in a small table).
    #[test]
    fn behaves_like_a_hash_map() {
        for universe in [8u64, 100, 5000] {
            let (mut m, mut r) = (PrevMap::default(), HashMap::new());
            for step in 0..20_000u64 {
                let h = mix64(step ^ universe.rotate_left(20));
                let id = h % universe;
                match (h >> 40) % 10 {
                    0..=4 => {
                        m.insert(id, prev(step));
                        r.insert(id, prev(step));
                    }
                    5..=7 => assert_eq!(m.remove(&id), r.remove(&id)),
                    8 => {
                        if let Some(p) = m.get_mut(&id) {
                            p.seen += 1;
                        }
                        if let Some(p) = r.get_mut(&id) {
                            p.seen += 1;
                        }
                    }
                    _ if step % 97 == 0 => {
                        m.retain(|&k, _| k % 3 != step % 3);
                        r.retain(|&k, _| k % 3 != step % 3);
                    }
                    _ => {}
                }
                assert_eq!(m.len(), r.len());
                assert_eq!(m.get(&id), r.get(&id));
            }
            let mut all: Vec<(u64, Prev)> = m.iter().map(|(&k, &p)| (k, p)).collect();
            let mut want: Vec<(u64, Prev)> = r.into_iter().collect();
            all.sort_by_key(|e| e.0);
            want.sort_by_key(|e| e.0);
            assert_eq!(all, want);
            assert!(2 * m.len() <= m.capacity().max(1));
        }
    }
}
