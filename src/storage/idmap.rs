//! A concurrent, collisionless u64 → row map with keys stored inline.
//!
//! Design notes.
//! * Open addressing with linear probing over 16-byte slots (key + row), so a
//!   lookup is one hash and, usually, one cache line — the map sits on the
//!   per-event path of every training call, twice per event.
//! * A slot's `row` word is its state: `EMPTY`, `CLAIMED` (an inserter owns
//!   the slot and is writing the key), `KEYED` (key visible, row being
//!   initialised), `DEAD` (insert abandoned), or a row index. Inserters claim
//!   an empty slot with one CAS; two threads inserting the same id walk the
//!   same probe sequence, so the loser meets the winner's slot and waits for
//!   its row instead of inserting a duplicate.
//! * Bulk creation (`MapGuard::claim_pending`, used by `resolve` for the
//!   new ids of a call) claims a slot in a `PENDING` state instead: lookups
//!   treat it as absent (they never wait for it), and the claimer publishes
//!   the row later (`publish`) once the call has reserved every new row at
//!   once. The claimers batch their `used` updates (`Claimer`), so a new id
//!   costs one CAS on its own slot and no read-modify-write on a shared
//!   counter. Callers serialise bulk creation (the table's creation lock),
//!   so the only inserters that meet a pending slot are the same call's.
//! * Lookups and inserts hold a read guard of an `RwLock` around the slot
//!   array, taken once per batch (per worker thread), never per event. Growth
//!   (when the load passes 70%) takes the write lock: the growing thread
//!   first gives up its own read guard, so growth waits only for other
//!   threads to finish their current batch share. Growth is rare (doubling).

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{RwLock, RwLockReadGuard};

pub const EMPTY: u32 = u32::MAX;
const CLAIMED: u32 = u32::MAX - 1;
const KEYED: u32 = u32::MAX - 2;
const DEAD: u32 = u32::MAX - 3;
/// Row indices must stay below this value.
pub const MAX_ROW: u32 = u32::MAX - 4;
/// Key visible, row not published yet by a bulk claimer (`claim_pending`):
/// absent to lookups. `MAX_ROW` itself is never a row (rows < capacity <=
/// `MAX_ROW`), so it is free to serve as this state.
const PENDING: u32 = MAX_ROW;
/// Most slot claims a `Claimer` keeps before adding them to `used`.
pub const CLAIM_BLOCK: usize = 256;

#[repr(C, align(16))]
struct Slot {
    key: AtomicU64,
    row: AtomicU32,
}

struct Slots {
    slots: Box<[Slot]>,
    mask: usize,
}

impl Slots {
    fn with_len(len: usize) -> Self {
        let len = len.next_power_of_two().max(16);
        let slots = (0..len)
            .map(|_| Slot {
                key: AtomicU64::new(0),
                row: AtomicU32::new(EMPTY),
            })
            .collect();
        Slots {
            slots,
            mask: len - 1,
        }
    }

    #[inline(always)]
    fn start(&self, id: u64) -> usize {
        crate::kernels::rng::mix64(id) as usize & self.mask
    }

    /// Row state of `id`'s slot, or None; waits out in-flight inserts.
    #[inline]
    fn find(&self, id: u64) -> Option<u32> {
        self.find_from(self.start(id), id)
    }

    /// `find` with the probe start `i = start(id)` already computed.
    #[inline(always)]
    fn find_from(&self, i: usize, id: u64) -> Option<u32> {
        find_in(&self.slots, self.mask, i, id)
    }
}

/// `Slots::find_from` on the slot array `slots` (`mask` = its length − 1),
/// taken apart so that a batch of lookups keeps both in registers.
#[inline(always)]
fn find_in(slots: &[Slot], mask: usize, mut i: usize, id: u64) -> Option<u32> {
    loop {
        let s = &slots[i & mask];
        let mut st = s.row.load(Acquire);
        // Fast path, the same answers as the states below: a slot holding
        // a row (every state word below `PENDING`) is `id`'s exactly when
        // its key is (read after the state, as below).
        if st < PENDING {
            if s.key.load(Relaxed) == id {
                return Some(st);
            }
            i = (i + 1) & mask;
            continue;
        }
        while st == CLAIMED {
            std::hint::spin_loop();
            st = s.row.load(Acquire);
        }
        if st == EMPTY {
            return None;
        }
        if st != DEAD && s.key.load(Relaxed) == id {
            loop {
                match st {
                    KEYED => {
                        std::hint::spin_loop();
                        st = s.row.load(Acquire);
                    }
                    DEAD | PENDING => return None,
                    r => return Some(r),
                }
            }
        }
        i = (i + 1) & mask;
    }
}

impl Slots {
    /// Index of `id`'s pending slot (claimed by `claim_pending`).
    fn find_pending(&self, id: u64) -> Option<usize> {
        let mut i = self.start(id);
        loop {
            let s = &self.slots[i];
            match s.row.load(Acquire) {
                EMPTY => return None,
                PENDING if s.key.load(Relaxed) == id => return Some(i),
                _ => {}
            }
            i = (i + 1) & self.mask;
        }
    }
}

pub struct IdMap {
    inner: RwLock<Slots>,
    /// Bumped by every rebuild of the slot array (slot indices change).
    generation: AtomicU64,
    /// Slots claimed (live or dead); drives growth.
    used: AtomicUsize,
    /// Live keys.
    live: AtomicUsize,
}

/// Outcome of `MapGuard::insert`.
pub enum Inserted<E> {
    /// The id was present (or inserted concurrently by another thread).
    Existing(u32),
    /// This call created the row returned by the closure.
    Created(u32),
    /// The closure failed; nothing was inserted.
    Failed(E),
}

impl Default for IdMap {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl IdMap {
    pub fn with_capacity(n: usize) -> Self {
        IdMap {
            inner: RwLock::new(Slots::with_len(n * 10 / 7 + 1)),
            generation: AtomicU64::new(0),
            used: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
        }
    }

    pub fn len(&self) -> usize {
        self.live.load(Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of slot memory.
    pub fn bytes(&self) -> usize {
        self.read_lock().slots.len() * std::mem::size_of::<Slot>()
    }

    fn read_lock(&self) -> RwLockReadGuard<'_, Slots> {
        // A panic while holding the lock cannot leave slots inconsistent
        // (every write is a single atomic store), so poisoning is ignored.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// A per-thread handle for a batch of lookups and inserts.
    pub fn guard(&self) -> MapGuard<'_> {
        MapGuard {
            map: self,
            slots: RefCell::new(Some(self.read_lock())),
        }
    }

    /// Replace the contents with those of `other` (used when bulk loading).
    pub fn replace_with(&self, other: IdMap) {
        let mut w = self.inner.write().unwrap_or_else(|e| e.into_inner());
        *w = other.inner.into_inner().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Relaxed);
        self.used.store(other.used.load(Relaxed), Relaxed);
        self.live.store(other.live.load(Relaxed), Relaxed);
    }

    fn grow(&self) {
        self.make_room(1);
    }

    /// Make room for `more` new keys without growth: rebuild the slots (as
    /// growth does) to hold them at most 70% full. Must not be called by a
    /// thread holding a `MapGuard` of this map (it waits for every guard).
    pub fn reserve(&self, more: usize) {
        if (self.used.load(Relaxed) + more) * 10 > self.read_lock().slots.len() * 7 {
            self.make_room(more);
        }
    }

    fn make_room(&self, more: usize) {
        let mut w = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if (self.used.load(Relaxed) + more) * 10 <= w.slots.len() * 7 {
            return; // another thread grew it meanwhile
        }
        // Tombstones are dropped by the rebuild: size for the keys kept only
        // (rebuild in place when at most 40% of the slots hold them). Pending
        // slots (`claim_pending`) are kept too but not yet counted in `live`.
        let kept = w
            .slots
            .iter()
            .filter(|s| !matches!(s.row.load(Relaxed), EMPTY | DEAD))
            .count();
        let needed = kept + more;
        let mut len = if needed * 10 <= w.slots.len() * 4 {
            w.slots.len()
        } else {
            w.slots.len() * 2
        };
        while needed * 10 > len * 7 {
            len *= 2;
        }
        let next = Slots::with_len(len);
        let mut used = 0;
        for s in w.slots.iter() {
            let r = s.row.load(Relaxed);
            if r == EMPTY || r == DEAD {
                continue;
            }
            let key = s.key.load(Relaxed);
            let mut i = next.start(key);
            while next.slots[i].row.load(Relaxed) != EMPTY {
                i = (i + 1) & next.mask;
            }
            next.slots[i].key.store(key, Relaxed);
            next.slots[i].row.store(r, Relaxed);
            used += 1;
        }
        *w = next;
        self.generation.fetch_add(1, Relaxed);
        self.used.store(used, Relaxed);
    }

    /// Count `n` keys published by bulk claimers (`MapGuard::publish`).
    pub fn add_live(&self, n: usize) {
        self.live.fetch_add(n, Relaxed);
    }
}

/// What `MapGuard::claim_pending` found for an id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This claimer owns the new id's slot (index, map generation); publish
    /// its row with `MapGuard::publish`.
    Owned(usize, u64),
    /// Another claim of the same call owns it (its row is published later).
    Pending,
    /// The id already has this row.
    Existing(u32),
}

/// One worker's batch of `claim_pending` calls: it adds its slot claims to
/// the map's `used` count in blocks (at most `CLAIM_BLOCK`, fewer when the
/// map is near its growth threshold, so that `claimers` concurrent
/// batches together never overfill it).
pub struct Claimer {
    claimers: usize,
    unflushed: usize,
    flush_at: usize,
    claimed: usize,
}

/// Slot claims a batch may keep unflushed when `headroom` slots remain
/// below the growth threshold and `claimers` batches run at once: together
/// they hold at most a quarter of the headroom.
pub fn claim_block(headroom: usize, claimers: usize) -> usize {
    (headroom / (4 * claimers.max(1))).clamp(1, CLAIM_BLOCK)
}

/// The number of distinct keys among `keys` (exact: sorts them).
pub fn distinct_len(keys: impl Iterator<Item = u64>) -> usize {
    let mut keys: Vec<u64> = keys.collect();
    keys.sort_unstable();
    keys.dedup();
    keys.len()
}

/// A number of distinct keys among `n` keys that is, with overwhelming
/// probability, at most the true number (linear counting on a bitmap of
/// `2n` bits rounded up to a power of two, minus five standard errors):
/// `reserve` with it never makes the map larger than growth would.
pub fn distinct_lower_bound(keys: impl Iterator<Item = u64>, n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    let m = (2 * n).next_power_of_two().clamp(64, 1 << 32);
    let mut bits = vec![0u64; m / 64];
    for k in keys {
        // The high half of the hash: the slot index uses the low bits.
        let b = crate::kernels::rng::mix64(k).rotate_right(32) as usize & (m - 1);
        bits[b / 64] |= 1 << (b % 64);
    }
    let zeros = bits.iter().map(|w| w.count_zeros() as usize).sum::<usize>();
    if zeros == 0 {
        return 0;
    }
    let mf = m as f64;
    let est = -mf * (zeros as f64 / mf).ln();
    let t = est / mf;
    let sigma = (mf * (t.exp() - t - 1.0)).max(0.0).sqrt();
    ((est - 5.0 * sigma - 1.0).max(0.0) as usize).min(n)
}

/// Ids hashed and prefetched ahead of their lookup by `MapGuard::get_batch`
/// (enough to cover a memory latency at a few nanoseconds per lookup).
const BATCH_AHEAD: usize = 16;

#[inline(always)]
fn prefetch_slot(s: &Slots, i: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let p = s.slots.as_ptr().wrapping_add(i).cast::<i8>();
        // SAFETY: prefetch never faults, whatever the address.
        unsafe { std::arch::x86_64::_mm_prefetch(p, std::arch::x86_64::_MM_HINT_T0) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (s, i);
}

pub struct MapGuard<'a> {
    map: &'a IdMap,
    slots: RefCell<Option<RwLockReadGuard<'a, Slots>>>,
}

impl MapGuard<'_> {
    #[inline]
    pub fn get(&self, id: u64) -> Option<u32> {
        self.slots.borrow().as_ref().expect("guard held").find(id)
    }

    /// The rows of `ids` into `rows` (same length; `EMPTY` for an id with
    /// no row), in one pass: the slot array is borrowed once, each id is
    /// hashed once and its first slot prefetched `BATCH_AHEAD` ids ahead.
    /// Returns the number of ids without a row. Same answers as `get` on
    /// each id.
    pub fn get_batch(&self, ids: &[u64], rows: &mut [u32]) -> usize {
        // SAFETY: `MaybeUninit<u32>` has the layout of `u32`, and
        // `get_batch_uninit` writes only initialised values, so `rows` stays
        // initialised.
        let rows = unsafe { &mut *(std::ptr::from_mut(rows) as *mut [MaybeUninit<u32>]) };
        self.get_batch_uninit(ids, rows)
    }

    /// `get_batch` into memory not initialised yet: writes every row of
    /// `rows[..n]`, `n = min(ids.len(), rows.len())` (so a caller can skip
    /// filling a fresh vector first).
    pub fn get_batch_uninit(&self, ids: &[u64], rows: &mut [MaybeUninit<u32>]) -> usize {
        let b = self.slots.borrow();
        let s = b.as_ref().expect("guard held");
        // The slot array and mask as locals (kept in registers, not reloaded
        // through the guard per id).
        // Sliced to `mask + 1` slots (its length: the table is a power of
        // two), so the compiler sees every masked index in bounds.
        let (slots, mask) = (&s.slots[..=s.mask], s.mask);
        let n = ids.len().min(rows.len());
        let (ids, rows) = (&ids[..n], &mut rows[..n]);
        // Probe starts of the next BATCH_AHEAD ids, hashed (and prefetched)
        // once, ahead of their lookups.
        let mut ring = [0usize; BATCH_AHEAD];
        for (slot, &id) in ring.iter_mut().zip(ids) {
            *slot = s.start(id);
            prefetch_slot(s, *slot);
        }
        let mut missing = 0;
        for k in 0..n {
            let i = ring[k % BATCH_AHEAD];
            if let Some(&ahead) = ids.get(k + BATCH_AHEAD) {
                let j = crate::kernels::rng::mix64(ahead) as usize & mask;
                debug_assert_eq!(j, s.start(ahead));
                ring[k % BATCH_AHEAD] = j;
                prefetch_slot(s, j);
            }
            let r = find_in(slots, mask, i, ids[k]).unwrap_or(EMPTY);
            missing += usize::from(r == EMPTY);
            rows[k].write(r);
        }
        missing
    }

    /// Hint the CPU to fetch the first slot of `id`'s probe sequence.
    #[inline(always)]
    pub fn prefetch(&self, id: u64) {
        #[cfg(target_arch = "x86_64")]
        {
            let b = self.slots.borrow();
            let s = b.as_ref().expect("guard held");
            let p = s.slots.as_ptr().wrapping_add(s.start(id)).cast::<i8>();
            // SAFETY: prefetch never faults.
            unsafe { std::arch::x86_64::_mm_prefetch(p, std::arch::x86_64::_MM_HINT_T0) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = id;
    }

    /// A batch of `claim_pending` calls by one of `claimers` concurrent
    /// workers.
    pub fn claimer(&self, claimers: usize) -> Claimer {
        Claimer {
            claimers,
            unflushed: 0,
            flush_at: 1,
            claimed: 0,
        }
    }

    /// Claim a pending slot for `id` when it has none (see `Claim`). Only
    /// claimers of one call may run at once (the table's creation lock);
    /// lookups meanwhile see a pending id as absent.
    pub fn claim_pending(&self, c: &mut Claimer, id: u64) -> Claim {
        loop {
            {
                let b = self.slots.borrow();
                let s = b.as_ref().expect("guard held");
                let used = self.map.used.load(Relaxed);
                if (used + c.unflushed + 1) * 10 <= s.slots.len() * 7 {
                    if let Some(found) = Self::claim_in(s, id) {
                        if let Claim::Owned(..) = found {
                            c.unflushed += 1;
                            c.claimed += 1;
                            if c.unflushed >= c.flush_at {
                                self.flush(c, s.slots.len());
                            }
                            let gen = self.map.generation.load(Relaxed);
                            return match found {
                                Claim::Owned(i, _) => Claim::Owned(i, gen),
                                other => other,
                            };
                        }
                        return found;
                    }
                    continue; // lost a race for a dead slot: retry
                }
            }
            // Too full: count our claims, give up the read guard, grow.
            let len = self
                .slots
                .borrow()
                .as_ref()
                .expect("guard held")
                .slots
                .len();
            self.flush(c, len);
            self.slots.borrow_mut().take();
            self.map.grow();
            *self.slots.borrow_mut() = Some(self.map.read_lock());
        }
    }

    /// Add a batch's unflushed claims to `used`; size its next block.
    fn flush(&self, c: &mut Claimer, slots: usize) {
        let used = if c.unflushed > 0 {
            self.map.used.fetch_add(c.unflushed, Relaxed) + c.unflushed
        } else {
            self.map.used.load(Relaxed)
        };
        c.unflushed = 0;
        c.flush_at = claim_block((slots * 7 / 10).saturating_sub(used), c.claimers);
    }

    /// End a batch: its claims are all counted in `used`. Returns the
    /// number of slots it claimed.
    pub fn finish(&self, mut c: Claimer) -> usize {
        let len = self
            .slots
            .borrow()
            .as_ref()
            .expect("guard held")
            .slots
            .len();
        self.flush(&mut c, len);
        c.claimed
    }

    /// `claim_pending` in `s`: None to retry.
    fn claim_in(s: &Slots, id: u64) -> Option<Claim> {
        let mut i = s.start(id);
        loop {
            let slot = &s.slots[i];
            let mut st = slot.row.load(Acquire);
            if st == EMPTY {
                match slot.row.compare_exchange(EMPTY, CLAIMED, Acquire, Acquire) {
                    Ok(_) => {
                        slot.key.store(id, Relaxed);
                        slot.row.store(PENDING, Release);
                        return Some(Claim::Owned(i, 0));
                    }
                    Err(now) => st = now,
                }
            }
            while st == CLAIMED {
                std::hint::spin_loop();
                st = slot.row.load(Acquire);
            }
            if st != DEAD && slot.key.load(Relaxed) == id {
                loop {
                    match st {
                        KEYED => {
                            std::hint::spin_loop();
                            st = slot.row.load(Acquire);
                        }
                        DEAD => return None,
                        PENDING => return Some(Claim::Pending),
                        r => return Some(Claim::Existing(r)),
                    }
                }
            }
            i = (i + 1) & s.mask;
        }
    }

    /// Publish `row` for the pending slot `claim` (from `claim_pending` of
    /// `id`), or abandon the claim (slot dead) when `row` is None.
    pub fn publish(&self, claim: (usize, u64), id: u64, row: Option<u32>) {
        let b = self.slots.borrow();
        let s = b.as_ref().expect("guard held");
        let (mut i, gen) = claim;
        if gen != self.map.generation.load(Relaxed) {
            // The map grew since the claim: find the slot again.
            i = s.find_pending(id).expect("a pending claim survives growth");
        }
        debug_assert_eq!(s.slots[i].key.load(Relaxed), id);
        debug_assert_eq!(s.slots[i].row.load(Relaxed), PENDING);
        match row {
            Some(r) => {
                debug_assert!(r < MAX_ROW);
                s.slots[i].row.store(r, Release);
            }
            None => s.slots[i].row.store(DEAD, Release),
        }
    }

    /// Hint the CPU to fetch the slot of the claim `claim` of `id` (its
    /// first probe slot when the map grew since the claim).
    #[inline(always)]
    pub fn prefetch_claim(&self, claim: (usize, u64), id: u64) {
        let b = self.slots.borrow();
        let s = b.as_ref().expect("guard held");
        let i = if claim.1 == self.map.generation.load(Relaxed) {
            claim.0
        } else {
            s.start(id)
        };
        prefetch_slot(s, i);
    }

    /// Return `id`'s row, or insert it with the row made by `make` (called
    /// at most once, only by the thread that owns the new slot).
    pub fn insert<E>(&self, id: u64, make: impl FnOnce() -> Result<u32, E>) -> Inserted<E> {
        loop {
            let needed = self.map.used.load(Relaxed) + 1;
            {
                let b = self.slots.borrow();
                let s = b.as_ref().expect("guard held");
                if needed * 10 <= s.slots.len() * 7 {
                    match Self::insert_in(self.map, s, id) {
                        Ok(Some(r)) => return Inserted::Existing(r),
                        Ok(None) => continue, // lost a race for a dead slot: retry
                        Err(slot) => {
                            let row = &s.slots[slot].row;
                            return match make() {
                                Ok(r) => {
                                    debug_assert!(r <= MAX_ROW);
                                    self.map.live.fetch_add(1, Relaxed);
                                    row.store(r, Release);
                                    Inserted::Created(r)
                                }
                                Err(e) => {
                                    row.store(DEAD, Release);
                                    Inserted::Failed(e)
                                }
                            };
                        }
                    }
                }
            }
            // Too full: give up our read guard, grow, take it back.
            self.slots.borrow_mut().take();
            self.map.grow();
            *self.slots.borrow_mut() = Some(self.map.read_lock());
        }
    }

    /// Remove `id` if it maps to `row`; true when removed. The slot becomes a
    /// tombstone (skipped by lookups, dropped at the next growth).
    pub fn remove(&self, id: u64, row: u32) -> bool {
        let b = self.slots.borrow();
        let s = b.as_ref().expect("guard held");
        let mut i = s.start(id);
        loop {
            let slot = &s.slots[i];
            let st = slot.row.load(Acquire);
            if st == EMPTY {
                return false;
            }
            if st == row && slot.key.load(Relaxed) == id {
                let done = slot
                    .row
                    .compare_exchange(row, DEAD, AcqRel, Relaxed)
                    .is_ok();
                if done {
                    self.map.live.fetch_sub(1, Relaxed);
                }
                return done;
            }
            i = (i + 1) & s.mask;
        }
    }

    /// Ok(Some(row)) if present, Err(slot) if this thread claimed `slot` for
    /// `id` (key written, state KEYED), Ok(None) to retry.
    fn insert_in(map: &IdMap, s: &Slots, id: u64) -> Result<Option<u32>, usize> {
        let mut i = s.start(id);
        loop {
            let slot = &s.slots[i];
            let mut st = slot.row.load(Acquire);
            if st == EMPTY {
                match slot.row.compare_exchange(EMPTY, CLAIMED, Acquire, Acquire) {
                    Ok(_) => {
                        map.used.fetch_add(1, Relaxed);
                        slot.key.store(id, Relaxed);
                        slot.row.store(KEYED, Release);
                        return Err(i);
                    }
                    Err(now) => st = now,
                }
            }
            while st == CLAIMED {
                std::hint::spin_loop();
                st = slot.row.load(Acquire);
            }
            if st != DEAD && slot.key.load(Relaxed) == id {
                loop {
                    match st {
                        // Being initialised, or a bulk claim in flight (see
                        // `claim_pending`): wait for its row.
                        KEYED | PENDING => {
                            std::hint::spin_loop();
                            st = slot.row.load(Acquire);
                        }
                        DEAD => return Ok(None),
                        r => return Ok(Some(r)),
                    }
                }
            }
            i = (i + 1) & s.mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_get_and_grow() {
        let m = IdMap::default();
        let g = m.guard();
        for id in 0..10_000u64 {
            let k = id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            assert!(matches!(
                g.insert::<()>(k, || Ok(id as u32)),
                Inserted::Created(_)
            ));
        }
        for id in 0..10_000u64 {
            let k = id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            assert_eq!(g.get(k), Some(id as u32));
            assert!(matches!(g.insert::<()>(k, || Ok(0)), Inserted::Existing(r) if r == id as u32));
        }
        assert_eq!(g.get(12345), None);
        assert_eq!(m.len(), 10_000);
        // Remove half, then churn: tombstones are reclaimed, lookups stay right.
        for id in 0..5_000u64 {
            let k = id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            assert!(g.remove(k, id as u32));
            assert!(!g.remove(k, id as u32));
            assert_eq!(g.get(k), None);
        }
        for id in 20_000..60_000u64 {
            g.insert::<()>(id, || Ok(id as u32));
            g.remove(id, id as u32);
        }
        assert_eq!(m.len(), 5_000);
        for id in 5_000..10_000u64 {
            let k = id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            assert_eq!(g.get(k), Some(id as u32));
        }
        assert!(
            m.bytes() <= 16 * 32_768,
            "tombstones were not reclaimed: {}",
            m.bytes()
        );
    }

    /// `get_batch` answers as `get` on each id (present, absent, removed,
    /// repeated), for batches shorter and longer than the lookahead.
    #[test]
    fn batch_lookup_matches_single_lookups() {
        let m = IdMap::default();
        let g = m.guard();
        for id in 0..3_000u64 {
            g.insert::<()>(id * 7, || Ok(id as u32));
        }
        for id in 0..300u64 {
            g.remove(id * 7 * 3, (id * 3) as u32);
        }
        for n in [0usize, 1, 5, 16, 17, 40, 5_000] {
            let ids: Vec<u64> = (0..n as u64)
                // Multiples of 7 below 3,000 × 7 are present (but every third
                // of the first 900 removed), the rest absent.
                .map(|k| crate::kernels::rng::hash2(n as u64, k) % 4_000 * 7)
                .collect();
            let mut rows = vec![0u32; n];
            let missing = g.get_batch(&ids, &mut rows);
            let want: Vec<u32> = ids.iter().map(|&id| g.get(id).unwrap_or(EMPTY)).collect();
            assert_eq!(rows, want, "n={n}");
            assert_eq!(missing, want.iter().filter(|&&r| r == EMPTY).count());
            if n >= 40 {
                assert!(missing > 0 && missing < n / 2, "n={n}: {missing} missing");
            }
        }
    }

    #[test]
    fn failed_insert_leaves_no_entry() {
        let m = IdMap::default();
        let g = m.guard();
        assert!(matches!(
            g.insert(7, || Err("full")),
            Inserted::Failed("full")
        ));
        assert_eq!(g.get(7), None);
        assert!(matches!(g.insert::<()>(7, || Ok(3)), Inserted::Created(3)));
        assert_eq!(g.get(7), Some(3));
    }

    #[test]
    fn concurrent_inserts_with_growth_are_collisionless() {
        let m = IdMap::default();
        let next = AtomicU32::new(0);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (m, next) = (&m, &next);
                s.spawn(move || {
                    let g = m.guard();
                    for k in 0..50_000u64 {
                        let id = (k * 3 + t) % 100_000;
                        g.insert::<()>(id, || Ok(next.fetch_add(1, Relaxed)));
                    }
                });
            }
        });
        assert_eq!(m.len(), 100_000);
        assert_eq!(next.load(Relaxed), 100_000);
        let g = m.guard();
        let mut rows: Vec<u32> = (0..100_000u64).map(|id| g.get(id).unwrap()).collect();
        rows.sort_unstable();
        rows.dedup();
        assert_eq!(rows.len(), 100_000);
    }

    /// Bulk claims from several threads on a map that starts tiny and grows
    /// under them: each new id is owned by exactly one claim (the others see
    /// it pending or published), lookups see pending ids as absent, `used`
    /// is exact once the batches finish, and publishing through slots that
    /// moved in a growth finds them again.
    #[test]
    fn bulk_claims_are_exclusive_and_survive_growth() {
        for claimers in [1usize, 2, 4] {
            let m = IdMap::default();
            let owned: Vec<Vec<(u64, (usize, u64))>> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..claimers as u64)
                    .map(|t| {
                        let m = &m;
                        s.spawn(move || {
                            let g = m.guard();
                            let mut c = g.claimer(claimers);
                            let mut mine = Vec::new();
                            for k in 0..30_000u64 {
                                // Overlapping ranges: most ids are claimed
                                // by two threads at once.
                                let id = (k + t * 10_000) % 40_000;
                                match g.claim_pending(&mut c, id) {
                                    Claim::Owned(i, gen) => mine.push((id, (i, gen))),
                                    Claim::Pending => {}
                                    Claim::Existing(r) => panic!("nothing published yet: {r}"),
                                }
                                assert_eq!(g.get(id), None, "a pending id is absent");
                            }
                            let n = mine.len();
                            assert_eq!(g.finish(c), n);
                            mine
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let mut all: Vec<u64> = owned.iter().flatten().map(|&(id, _)| id).collect();
            all.sort_unstable();
            let n = all.len();
            all.dedup();
            assert_eq!(all.len(), n, "an id owned twice ({claimers} claimers)");
            let want = if claimers == 1 {
                30_000
            } else {
                (10_000 * (claimers - 1) + 30_000).min(40_000)
            };
            assert_eq!(n, want);
            assert_eq!(m.used.load(Relaxed), n, "used not exact");
            assert!(m.used.load(Relaxed) * 10 <= m.read_lock().slots.len() * 7);
            let g = m.guard();
            for (k, &(id, claim)) in owned.iter().flatten().enumerate() {
                g.publish(claim, id, Some(k as u32));
            }
            m.add_live(n);
            for (k, &(id, _)) in owned.iter().flatten().enumerate() {
                assert_eq!(g.get(id), Some(k as u32));
            }
            assert_eq!(m.len(), n);
        }
    }

    /// The block a batch may keep unflushed: at least one, at most
    /// `CLAIM_BLOCK`, and all concurrent batches together at most a quarter
    /// of the headroom (so they never overfill the map) unless it is tiny.
    #[test]
    fn claim_blocks_never_overfill_the_map() {
        for headroom in (0..5_000usize).chain([1 << 20, usize::MAX / 8]) {
            for claimers in 1..=8usize {
                let b = claim_block(headroom, claimers);
                assert!((1..=CLAIM_BLOCK).contains(&b), "{headroom} {claimers}: {b}");
                assert!(
                    claimers * b <= (headroom / 4).max(claimers),
                    "{headroom} {claimers}: {b}"
                );
                if headroom >= 4 * claimers * CLAIM_BLOCK {
                    assert_eq!(b, CLAIM_BLOCK);
                }
            }
        }
    }

    #[test]
    fn distinct_lower_bound_is_a_close_lower_bound() {
        let mut seed = 1u64;
        for n in [0usize, 1, 2, 10, 100, 4_096, 50_000, 300_000] {
            for dup in [1u64, 2, 7, 1_000] {
                seed += 1;
                let keys: Vec<u64> = (0..n as u64)
                    .map(|k| crate::kernels::rng::hash2(seed, k / dup))
                    .collect();
                let mut d = keys.clone();
                d.sort_unstable();
                d.dedup();
                let est = distinct_lower_bound(keys.iter().copied(), n);
                assert!(est <= d.len(), "n={n} dup={dup}: {est} > {}", d.len());
                // Five standard errors: 4% at 4,096 keys, under 1% at 300,000.
                let close = if d.len() >= 50_000 { 0.98 } else { 0.94 };
                if d.len() >= 4_096 {
                    assert!(
                        est as f64 >= close * d.len() as f64,
                        "n={n} dup={dup}: {est} << {}",
                        d.len()
                    );
                }
            }
        }
    }

    #[test]
    fn reserve_sizes_for_the_new_keys_once() {
        let m = IdMap::default();
        m.reserve(100_000);
        let len = m.read_lock().slots.len();
        assert!(
            100_000 * 10 <= len * 7 && 100_000 * 10 > len / 2 * 7,
            "{len}"
        );
        let g = m.guard();
        for id in 0..100_000u64 {
            g.insert::<()>(id, || Ok(id as u32));
        }
        assert_eq!(m.read_lock().slots.len(), len, "grew after reserve");
        assert_eq!(m.generation.load(Relaxed), 1);
    }
}
