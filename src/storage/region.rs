//! Fixed-address memory regions for table rows.
//!
//! Design note — why rows never move: a table reserves its whole capacity of
//! virtual address space up front (`mmap` with `MAP_NORESERVE`), so pages are
//! only committed when a row is first written. Growing the table never
//! reallocates, so a numpy view or a raw pointer taken earlier stays valid for
//! the table's lifetime, and training threads never wait for a resize.
//! Zero-filled pages are valid values for every element type used here
//! (atomic integers whose bit pattern 0 is 0 / 0.0f32).

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
    bytes: usize,
    _marker: PhantomData<T>,
}

// SAFETY: the region only hands out shared references to `T: Sync` elements.
unsafe impl<T: ZeroValid> Send for Region<T> {}
// SAFETY: as above; all mutation goes through the atomics themselves.
unsafe impl<T: ZeroValid> Sync for Region<T> {}

impl<T: ZeroValid> Region<T> {
    /// Reserve `len` zeroed elements of address space (committed lazily).
    pub fn reserve(len: usize) -> Result<Self> {
        let size = std::mem::size_of::<T>();
        let bytes = len.checked_mul(size).ok_or_else(|| {
            crate::error::out_of_range(
                "capacity",
                len,
                "small enough that capacity x row size fits in memory",
            )
        })?;
        if bytes == 0 {
            return Ok(Region {
                ptr: NonNull::dangling(),
                len,
                bytes: 0,
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
        if bytes >= 1 << 22 {
            // SAFETY: ptr/bytes describe the mapping created just above.
            unsafe { libc::madvise(ptr, bytes, libc::MADV_HUGEPAGE) };
        }
        Ok(Region {
            ptr: NonNull::new(ptr.cast::<T>()).expect("mmap returned null"),
            len,
            bytes,
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
            // SAFETY: unmapping exactly the mapping created in `reserve`.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.bytes) };
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
    fn empty_region() {
        let r: Region<AtomicU32> = Region::reserve(0).unwrap();
        assert!(r.is_empty());
    }
}
