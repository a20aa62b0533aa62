//! A mergeable quantile sketch with a relative-error guarantee.
//!
//! Design notes.
//! * It is a DDSketch-style log-bucket histogram whose bucket index is read
//!   straight from the f32 bit pattern: the exponent and the top
//!   `MANTISSA_BITS` mantissa bits. That costs one shift (no logarithm) on
//!   the per-update path, which is what lets the monitor insert 12 values
//!   per training event within its time budget. A bucket [lo, hi) has
//!   hi / lo <= 1 + 2^-MANTISSA_BITS; answering with the harmonic mean
//!   2·lo·hi / (lo + hi) bounds the relative error of every quantile by
//!   (hi − lo) / (hi + lo) <= 1 / (2^(MANTISSA_BITS+1) + 1) = `RELATIVE_ERROR`.
//! * Values below `MIN_VALUE` (including 0) fall into a zero bucket and are
//!   reported as 0. Callers only insert finite values >= 0.
//! * Counts live in one dense vector covering the keys seen so far; it grows
//!   (rarely, out of line) when a value falls outside. Merging adds counts
//!   bucket by bucket, so a merged sketch equals the sketch of the
//!   concatenated stream exactly.
//! * Generic over the counter: per-thread shards use u32 (half the cache
//!   footprint), the long-lived monitor state u64.

/// Mantissa bits kept in a bucket key: 64 buckets per doubling.
pub const MANTISSA_BITS: u32 = 6;
const SHIFT: u32 = 23 - MANTISSA_BITS;
/// Guaranteed bound on |estimate − true quantile| / true quantile.
pub const RELATIVE_ERROR: f64 = 1.0 / ((2u64 << MANTISSA_BITS) as f64 + 1.0);
/// Smallest value given its own bucket (2^-64); smaller ones count as 0.
const MIN_BITS: u32 = (127 - 64) << 23;
pub const MIN_VALUE: f32 = f32::from_bits(MIN_BITS);
const INF_BITS: u32 = 0x7f80_0000;
/// Extra buckets allocated on each side when the store grows.
const GROW: i32 = 16;

/// Counter type of a sketch's buckets.
pub trait Count: Copy + Default + PartialEq + Into<u64> + std::ops::AddAssign {
    const ONE: Self;
    /// Saturating conversion.
    fn from_u64(x: u64) -> Self;
}

impl Count for u32 {
    const ONE: Self = 1;
    fn from_u64(x: u64) -> Self {
        x.min(u64::from(u32::MAX)) as u32
    }
}

impl Count for u64 {
    const ONE: Self = 1;
    fn from_u64(x: u64) -> Self {
        x
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sketch<C> {
    zero: u64,
    offset: i32,
    counts: Vec<C>,
}

/// The bucket key of a value in the indexable range, else `None`.
#[inline(always)]
pub fn key(v: f32) -> Option<i32> {
    let b = v.to_bits();
    // One unsigned compare rejects 0, tiny, negative, infinite and NaN values.
    if b.wrapping_sub(MIN_BITS) < INF_BITS - MIN_BITS {
        Some((b >> SHIFT) as i32)
    } else {
        None
    }
}

/// `key` without the `Option`: the key, or -1 when `key` is `None` (keys
/// are never negative), so that a whole array of keys is computed without
/// branches.
#[inline(always)]
pub fn key_or_negative(v: f32) -> i32 {
    let b = v.to_bits();
    if b.wrapping_sub(MIN_BITS) < INF_BITS - MIN_BITS {
        (b >> SHIFT) as i32
    } else {
        -1
    }
}

/// The value reported for a bucket: the harmonic mean of its bounds.
pub fn bucket_value(key: i32) -> f64 {
    let lo = f64::from(f32::from_bits((key as u32) << SHIFT));
    let hi = f64::from(f32::from_bits(((key as u32).wrapping_add(1)) << SHIFT));
    2.0 * lo * hi / (lo + hi)
}

impl<C: Count> Sketch<C> {
    pub fn new() -> Self {
        Sketch {
            zero: 0,
            offset: 0,
            counts: Vec::new(),
        }
    }

    #[inline(always)]
    pub fn add(&mut self, v: f32) {
        match key(v) {
            Some(k) => self.add_key(k, C::ONE),
            None => self.zero += 1,
        }
    }

    #[inline(always)]
    pub fn add_key(&mut self, k: i32, c: C) {
        let i = k.wrapping_sub(self.offset) as u32 as usize;
        if i < self.counts.len() {
            self.counts[i] += c;
        } else {
            self.grow(k);
            let i = (k - self.offset) as usize;
            self.counts[i] += c;
        }
    }

    #[inline(always)]
    pub fn add_zero(&mut self, c: u64) {
        self.zero += c;
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self, k: i32) {
        let (lo, hi) = if self.counts.is_empty() {
            (k.saturating_sub(GROW), k.saturating_add(GROW))
        } else {
            let hi = self.offset.saturating_add(self.counts.len() as i32);
            (
                self.offset.min(k.saturating_sub(GROW)),
                hi.max(k.saturating_add(GROW)),
            )
        };
        let mut counts = vec![C::default(); (hi - lo) as usize];
        let at = (self.offset - lo).max(0) as usize;
        if !self.counts.is_empty() {
            counts[at..at + self.counts.len()].copy_from_slice(&self.counts);
        }
        self.counts = counts;
        self.offset = lo;
    }

    /// Values inserted.
    pub fn total(&self) -> u64 {
        self.zero + self.counts.iter().map(|&c| c.into()).sum::<u64>()
    }

    /// Add every count of `other` (of any counter type) into `self`.
    pub fn merge_from<D: Count>(&mut self, other: &Sketch<D>) {
        self.zero += other.zero;
        for (i, &c) in other.counts.iter().enumerate() {
            let c: u64 = c.into();
            if c != 0 {
                self.add_key(other.offset + i as i32, C::from_u64(c));
            }
        }
    }

    /// Zero every count, keeping the allocation.
    pub fn clear(&mut self) {
        self.zero = 0;
        self.counts.fill(C::default());
    }

    /// The q-quantile (q in [0, 1]) of the inserted values: the estimate of
    /// the value of rank floor(q·(n − 1)) in sorted order, within
    /// `RELATIVE_ERROR` of it. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.total();
        if n == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * (n - 1) as f64).floor() as u64;
        if rank < self.zero {
            return Some(0.0);
        }
        let mut cum = self.zero;
        let mut last = None;
        for (i, &c) in self.counts.iter().enumerate() {
            let c: u64 = c.into();
            if c == 0 {
                continue;
            }
            cum += c;
            last = Some(i);
            if cum > rank {
                return Some(bucket_value(self.offset + i as i32));
            }
        }
        last.map(|i| bucket_value(self.offset + i as i32))
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.counts.capacity() * std::mem::size_of::<C>()
    }

    /// (zero count, key of counts[0], counts) for serialisation.
    pub fn parts(&self) -> (u64, i32, &[C]) {
        (self.zero, self.offset, &self.counts)
    }

    pub fn from_parts(zero: u64, offset: i32, counts: Vec<C>) -> Self {
        Sketch {
            zero,
            offset,
            counts,
        }
    }
}

/// A per-thread sketch with one byte per bucket (a 64-byte cache line holds
/// a whole doubling), so the hot buckets of many sketches stay in cache.
/// A byte that wraps carries 256 into a lazily allocated side array. Zero
/// values are not counted here: the owner knows how many values it added,
/// and `drain_into` is told.
#[derive(Clone, Debug, Default)]
pub struct CompactSketch {
    offset: i32,
    counts: Vec<u8>,
    carries: Vec<u32>,
}

impl CompactSketch {
    /// `add_key` of a key from `key_or_negative`, ignoring a negative one
    /// (a value the owner counts as a zero). Keys are at least
    /// `MIN_BITS >> SHIFT` and the offset at most a key, so a negative key
    /// misses the counts' range as a key outside it does: the sign is
    /// tested only then, not on the common path.
    #[inline(always)]
    pub fn add_key_or_negative(&mut self, k: i32) {
        let i = k.wrapping_sub(self.offset) as u32 as usize;
        if let Some(c) = self.counts.get_mut(i) {
            *c = c.wrapping_add(1);
            if *c == 0 {
                self.carry(i);
            }
        } else if k >= 0 {
            self.grow(k);
        }
    }

    #[inline(always)]
    pub fn add_key(&mut self, k: i32) {
        let i = k.wrapping_sub(self.offset) as u32 as usize;
        if let Some(c) = self.counts.get_mut(i) {
            *c = c.wrapping_add(1);
            if *c == 0 {
                self.carry(i);
            }
        } else {
            self.grow(k);
        }
    }

    #[cold]
    #[inline(never)]
    fn carry(&mut self, i: usize) {
        if self.carries.len() != self.counts.len() {
            self.carries = vec![0; self.counts.len()];
        }
        self.carries[i] += 1;
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self, k: i32) {
        let (lo, hi) = if self.counts.is_empty() {
            (k.saturating_sub(GROW), k.saturating_add(GROW))
        } else {
            let hi = self.offset.saturating_add(self.counts.len() as i32);
            (
                self.offset.min(k.saturating_sub(GROW)),
                hi.max(k.saturating_add(GROW)),
            )
        };
        let len = (hi - lo) as usize;
        let at = (self.offset - lo).max(0) as usize;
        let mut counts = vec![0u8; len];
        if !self.counts.is_empty() {
            counts[at..at + self.counts.len()].copy_from_slice(&self.counts);
        }
        if !self.carries.is_empty() {
            let mut carries = vec![0u32; len];
            carries[at..at + self.carries.len()].copy_from_slice(&self.carries);
            self.carries = carries;
        }
        self.counts = counts;
        self.offset = lo;
        let i = (k - lo) as usize;
        self.counts[i] = 1;
    }

    /// Add every count into `dst`, with `total − counted` values as zeros
    /// (`total`: values the owner added, zeros included); then clear.
    pub fn drain_into(&mut self, dst: &mut Sketch<u64>, total: u64) {
        let mut counted = 0u64;
        if self.carries.is_empty() {
            // No counter carried: the buckets eight at a time, skipping the
            // all-zero words (most of a shard's buckets between two drains).
            let offset = self.offset;
            let mut take = |i: usize, c: &mut u8| {
                if *c != 0 {
                    let v = u64::from(*c);
                    dst.add_key(offset + i as i32, v);
                    counted += v;
                    *c = 0;
                }
            };
            let at = self.counts.len() - self.counts.len() % 8;
            let (head, tail) = self.counts.split_at_mut(at);
            for (w, word) in head.chunks_exact_mut(8).enumerate() {
                if u64::from_ne_bytes((&*word).try_into().expect("8 bytes")) != 0 {
                    for (j, c) in word.iter_mut().enumerate() {
                        take(8 * w + j, c);
                    }
                }
            }
            for (j, c) in tail.iter_mut().enumerate() {
                take(at + j, c);
            }
            dst.add_zero(total.saturating_sub(counted));
            return;
        }
        for (i, c) in self.counts.iter_mut().enumerate() {
            let high = self.carries.get(i).map_or(0, |&h| u64::from(h) << 8);
            let v = high + u64::from(*c);
            if v != 0 {
                dst.add_key(self.offset + i as i32, v);
                counted += v;
                *c = 0;
            }
        }
        self.carries.fill(0);
        dst.add_zero(total.saturating_sub(counted));
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.counts.capacity() + 4 * self.carries.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact_lower(sorted: &[f32], q: f64) -> f64 {
        f64::from(sorted[(q * (sorted.len() - 1) as f64).floor() as usize])
    }

    #[test]
    fn quantiles_within_the_bound() {
        let mut s = Sketch::<u64>::new();
        let mut x: Vec<f32> = (0..20_000u64)
            .map(|k| {
                let u = crate::kernels::rng::unit_f32(crate::kernels::rng::mix64(k)) as f64;
                (1e-6 * (1e9f64).powf(u)) as f32
            })
            .collect();
        x.extend([0.0f32; 100]);
        for &v in &x {
            s.add(v);
        }
        x.sort_by(f32::total_cmp);
        assert_eq!(s.total(), x.len() as u64);
        for q in [0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0] {
            let e = exact_lower(&x, q);
            let a = s.quantile(q).unwrap();
            if e == 0.0 {
                assert_eq!(a, 0.0);
            } else {
                assert!(
                    (a - e).abs() <= RELATIVE_ERROR * e * (1.0 + 1e-9),
                    "q={q} {a} {e}"
                );
            }
        }
    }

    #[test]
    fn merge_equals_concatenation() {
        let vals: Vec<f32> = (1..5000).map(|k| (k as f32).sqrt() * 0.37).collect();
        let mut whole = Sketch::<u64>::new();
        let mut a = Sketch::<u32>::new();
        let mut b = Sketch::<u32>::new();
        for (k, &v) in vals.iter().enumerate() {
            whole.add(v);
            if k % 3 == 0 {
                a.add(v)
            } else {
                b.add(v)
            }
        }
        let mut m = Sketch::<u64>::new();
        m.merge_from(&a);
        m.merge_from(&b);
        for q in [0.0, 0.3, 0.5, 0.77, 1.0] {
            assert_eq!(m.quantile(q), whole.quantile(q));
        }
        assert_eq!(m.total(), whole.total());
    }

    #[test]
    fn compact_sketch_carries() {
        let mut c = CompactSketch::default();
        let mut exact = Sketch::<u64>::new();
        for k in 0..100_000u64 {
            let v = 1.0 + (k % 1000) as f32 * 1e-3 * if k % 7 == 0 { 100.0 } else { 1.0 };
            c.add_key(key(v).unwrap());
            exact.add(v);
        }
        let mut d = Sketch::<u64>::new();
        c.drain_into(&mut d, 100_010);
        exact.add_zero(10);
        assert_eq!(d.total(), exact.total());
        for q in [0.0, 0.001, 0.2, 0.5, 0.9, 1.0] {
            assert_eq!(d.quantile(q), exact.quantile(q));
        }
        let mut e = Sketch::<u64>::new();
        c.drain_into(&mut e, 0);
        assert_eq!(e.total(), 0);
    }

    #[test]
    fn draining_sparse_buckets_word_by_word_counts_every_bucket() {
        // Keys spread over a wide range, at most a few per bucket: no
        // carries, so the word-skipping path drains, into a sketch that
        // already holds counts.
        for (n, spread) in [(1u64, 1u64), (5, 3), (300, 977), (3000, 40_000)] {
            let mut c = CompactSketch::default();
            let (mut exact, mut d) = (Sketch::<u64>::new(), Sketch::<u64>::new());
            d.add(7.0);
            exact.add(7.0);
            for k in 0..n {
                let v = 1e-3 * (1.0 + (k * 7919 % spread) as f32);
                c.add_key(key(v).unwrap());
                exact.add(v);
            }
            assert!(c.carries.is_empty());
            c.drain_into(&mut d, n + 2);
            exact.add_zero(2);
            assert_eq!(d.total(), exact.total(), "{n} {spread}");
            for q in (0..=400).map(|k| f64::from(k) / 400.0) {
                assert_eq!(d.quantile(q), exact.quantile(q), "{n} {spread} {q}");
            }
            assert!(c.counts.iter().all(|&x| x == 0));
        }
    }

    #[test]
    fn rejects_what_it_cannot_index() {
        for v in [0.0, -1.0, f32::NAN, f32::INFINITY, 1e-30] {
            assert_eq!(key(v), None);
        }
        assert!(key(MIN_VALUE).is_some() && key(f32::MAX).is_some());
        let s = Sketch::<u32>::new();
        assert_eq!(s.quantile(0.5), None);
    }
}
