//! Fixed-address memory regions for table rows.
//!
//! Design note — why rows never move: a table reserves its whole capacity of
//! virtual address space up front (`mmap` with `MAP_NORESERVE`), so pages are
//! only committed when a row is first written. Growing the table never
//! reallocates, so a numpy view or a raw pointer taken earlier stays valid for
//! the table's lifetime, and training threads never wait for a resize.
//! Zero-filled pages are valid values for every element type used here
//! (atomic integers whose bit pattern 0 is 0 / 0.0f32).
//!
//! Design note — staggered starts: `mmap` returns large mappings at
//! addresses aligned to 2 MB or more, and a table's regions have
//! power-of-two sizes, so row `r`'s weights, optimizer state and metadata
//! would sit at addresses sharing their low 12+ bits. A training step loads
//! and stores the three at the same offsets: they then compete for the same
//! cache sets, and a load from one is held back behind stores to another
//! whose addresses match in the bits the CPU compares first (4K aliasing).
//! Measured on the mf-1m workload (Zen 4 VM), Adagrad ran 2.1x faster once
//! the state region started 17 cache lines past its mapping (docs/performance.md).
//! `reserve_staggered` starts a region a chosen odd number of cache lines
//! into its mapping; the table gives each of its regions a different one.

use crate::error::Result;
use std::marker::PhantomData;
use std::ptr::NonNull;

/// Element types that may live in a region: plain-old-data atomics for which
/// the all-zero bit pattern is a valid value.
///
/// # Safety
/// Implementors must be valid when zero-initialised and have no drop glue.
pub unsafe trait ZeroValid: Sync + Send {}
// SAFETY: atomics of integers are valid at bit pattern 0 and have no drop glue.
unsafe impl ZeroValid for std::sync::atomic::AtomicU32 {}
// SAFETY: as above.
unsafe impl ZeroValid for std::sync::atomic::AtomicU64 {}
// SAFETY: as above.
unsafe impl ZeroValid for std::sync::atomic::AtomicI64 {}

pub struct Region<T: ZeroValid> {
    ptr: NonNull<T>,
    len: usize,
    /// Bytes mapped, from `base` (`ptr` is `base` plus the stagger).
    bytes: usize,
    base: *mut libc::c_void,
    _marker: PhantomData<T>,
}

// SAFETY: the region only hands out shared references to `T: Sync` elements.
unsafe impl<T: ZeroValid> Send for Region<T> {}
// SAFETY: as above; all mutation goes through the atomics themselves.
unsafe impl<T: ZeroValid> Sync for Region<T> {}

/// Mappings from this size on are advised to use transparent huge pages.
const HUGE_FROM: usize = 1 << 22;

impl<T: ZeroValid> Region<T> {
    /// Reserve `len` zeroed elements of address space (committed lazily).
    pub fn reserve(len: usize) -> Result<Self> {
        Self::reserve_staggered(len, 0)
    }

    /// `reserve`, the first element `lines` cache lines (64 bytes each) past
    /// the start of the mapping (see the design note on staggered starts).
    pub fn reserve_staggered(len: usize, lines: usize) -> Result<Self> {
        let size = std::mem::size_of::<T>();
        debug_assert!(64 % size == 0, "elements tile a cache line");
        let pad = lines * 64;
        let bytes = len
            .checked_mul(size)
            .and_then(|b| b.checked_add(pad))
            // Large mappings in whole huge pages (2 MB), so that the kernel
            // keeps placing them on huge-page boundaries.
            .and_then(|b| {
                if b >= HUGE_FROM {
                    b.checked_next_multiple_of(1 << 21)
                } else {
                    Some(b)
                }
            })
            .ok_or_else(|| {
                crate::error::out_of_range(
                    "capacity",
                    len,
                    "small enough that capacity x row size fits in memory",
                )
            })?;
        if len == 0 {
            return Ok(Region {
                ptr: NonNull::dangling(),
                len,
                bytes: 0,
                base: std::ptr::null_mut(),
                _marker: PhantomData,
            });
        }
        // SAFETY: anonymous private mapping, no file descriptor; the result is
        // checked against MAP_FAILED before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(crate::error::invalid(format!(
                "could not reserve {bytes} bytes of address space for {len} elements; \
                 create the table with a smaller capacity="
            )));
        }
        // Large tables are accessed at random: transparent huge pages cut TLB
        // misses. Advisory only, so its result is ignored.
        if bytes >= HUGE_FROM {
            // SAFETY: ptr/bytes describe the mapping created just above.
            unsafe { libc::madvise(ptr, bytes, libc::MADV_HUGEPAGE) };
        }
        // The stagger stays inside the mapping (`bytes` includes it) and keeps
        // elements aligned (a multiple of 64 bytes).
        let first = ptr.cast::<u8>().wrapping_add(pad).cast::<T>();
        Ok(Region {
            ptr: NonNull::new(first).expect("mmap returned null"),
            len,
            bytes,
            base: ptr,
            _marker: PhantomData,
        })
    }

    #[inline(always)]
    pub fn as_slice(&self) -> &[T] {
        // SAFETY: the mapping holds `len` zero-initialised `T`s (valid per
        // `ZeroValid`) and lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    #[inline(always)]
    pub fn as_ptr(&self) -> *const T {
        self.ptr.as_ptr()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<T: ZeroValid> Drop for Region<T> {
    fn drop(&mut self) {
        if self.bytes > 0 {
            // SAFETY: unmapping exactly the mapping created in
            // `reserve_staggered` (from its start `base`, all `bytes` of it).
            unsafe { libc::munmap(self.base, self.bytes) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn zeroed_and_writable() {
        let r: Region<AtomicU32> = Region::reserve(1 << 20).unwrap();
        assert_eq!(r.as_slice()[12345].load(Ordering::Relaxed), 0);
        r.as_slice()[12345].store(7, Ordering::Relaxed);
        assert_eq!(r.as_slice()[12345].load(Ordering::Relaxed), 7);
    }

    #[test]
    fn staggered_start() {
        let plain: Region<AtomicU32> = Region::reserve(1 << 20).unwrap();
        let r: Region<AtomicU32> = Region::reserve_staggered(1 << 20, 17).unwrap();
        // The mapping is at least page-aligned; the first element is 17 lines in.
        assert_eq!(plain.as_ptr() as usize % 4096, 0);
        assert_eq!(r.as_ptr() as usize % 4096, 17 * 64);
        let s = r.as_slice();
        assert_eq!(s.len(), 1 << 20);
        s[(1 << 20) - 1].store(9, Ordering::Relaxed);
        assert_eq!(s[(1 << 20) - 1].load(Ordering::Relaxed), 9);
        assert_eq!(s[0].load(Ordering::Relaxed), 0);
    }

    #[test]
    fn empty_region() {
        let r: Region<AtomicU32> = Region::reserve(0).unwrap();
        assert!(r.is_empty());
    }
}
