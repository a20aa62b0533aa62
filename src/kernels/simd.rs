//! Fused per-row kernels for the training hot paths (FFM / FM, MF).
//!
//! Design notes.
//! * Rows are handled as vectors of four floats (`F4`), so these kernels
//!   serve rows whose width is a multiple of 4 (every common width: 4, 8,
//!   16, 24, 32, 48, 64); other widths take the generic path
//!   (`EmbeddingTable::apply_step`).
//! * One pass per row: the optimizer state is loaded, the new weights and
//!   state are computed and both are stored, four floats at a time, instead
//!   of the separate load / l2 / step / store / store passes of
//!   `apply_step`. The arithmetic is the same, in the same order, as
//!   `Optimizer::step` (IEEE sqrt and division, no approximations): results
//!   are bit-identical (tested below for every optimizer, with and without
//!   l2 and max_norm, at every width).
//! * Shared weights stay `AtomicU32` cells accessed with Relaxed semantics
//!   (the table's concurrency rule). On x86-64 four neighbouring cells are
//!   read or written with one SSE instruction (`F4::load` / `F4::store`,
//!   inline assembly; see the SAFETY notes there), elsewhere with four
//!   Relaxed atomic operations.
//! * Widths are type parameters (`Width`): `Fixed<N>` for the common widths
//!   lets the compiler unroll the loops and drop bounds checks; `Dyn` runs
//!   the same code for any width.
//! * So is the vector: the kernels are written once over `Isa` (an
//!   instruction set, as a value) and its vector `Isa::V` (`Lanes`): `Sse`
//!   with `F4` everywhere, `Avx` with `F8` (eight lanes) where the CPU has
//!   AVX and a row is a whole number of `F8`s, chosen at run time
//!   (`avx()`; `EMBCORE_SIMD=sse` keeps the baseline). A `Avx` value exists
//!   only once the CPU was found to have AVX, and an `F8` only through an
//!   `Avx`: that is what makes the AVX intrinsics sound to call. The
//!   caller compiles its loop for AVX (`#[target_feature]`) so that they
//!   inline. Eight lanes give the same bits as four: lane-wise operations
//!   are the same IEEE operations, and `dot` keeps `dot_optim`'s order
//!   (its two F4 partial sums are the halves of one F8 sum).

use crate::kernels::optim::{dot, Optimizer, OptimizerKind};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

/// A width (in `F4` vectors, or floats) known at compile time or run time.
pub trait Width: Copy {
    /// Known at compile time (`Fixed`).
    const FIXED: bool;
    fn get(self) -> usize;
}

/// A width known at compile time.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fixed<const N: usize>;

impl<const N: usize> Width for Fixed<N> {
    const FIXED: bool = true;
    #[inline(always)]
    fn get(self) -> usize {
        N
    }
}

/// A width known at run time.
#[derive(Clone, Copy, Debug)]
pub struct Dyn(pub usize);

impl Width for Dyn {
    const FIXED: bool = false;
    #[inline(always)]
    fn get(self) -> usize {
        self.0
    }
}

/// Hint the CPU to fetch the bytes of `v[at..at + len]` (no-op elsewhere
/// than x86-64, or past the end).
#[inline(always)]
pub fn prefetch_slice<T>(v: &[T], at: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if at >= v.len() {
            return;
        }
        let p = v.as_ptr().wrapping_add(at).cast::<i8>();
        let bytes = std::mem::size_of::<T>() * len.min(v.len() - at);
        for line in 0..bytes.div_ceil(64) {
            // SAFETY: prefetch never faults, whatever the address.
            unsafe {
                std::arch::x86_64::_mm_prefetch(
                    p.wrapping_add(64 * line),
                    std::arch::x86_64::_MM_HINT_T0,
                )
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (v, at, len);
}

/// Four f32 lanes.
#[derive(Clone, Copy, Debug)]
#[repr(transparent)]
pub struct F4(imp::Raw);

macro_rules! f4_op {
    ($tr:ident, $m:ident, $v:ident) => {
        impl std::ops::$tr for F4 {
            type Output = F4;
            /// Lane-wise, IEEE single precision (as the scalar operator).
            #[inline(always)]
            fn $m(self, o: F4) -> F4 {
                self.$v(o)
            }
        }
    };
}
f4_op!(Add, add, vadd);
f4_op!(Sub, sub, vsub);
f4_op!(Mul, mul, vmul);
f4_op!(Div, div, vdiv);

/// A vector of f32 lanes the fused kernels compute on (`F4`, `F8`): lane-wise
/// IEEE single-precision arithmetic, as the scalar operators.
pub trait Lanes:
    Copy
    + std::fmt::Debug
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
{
    /// Groups of four floats per vector (1 for `F4`, 2 for `F8`).
    const QUADS: usize;
    /// Lane-wise IEEE square root.
    fn sqrt(self) -> Self;
    /// Relaxed stores of the lanes into `dst[..4 × QUADS]`, in one instruction.
    fn store(self, dst: &[AtomicU32]);
}

/// An instruction set the fused kernels run on, as a value: holding one
/// proves the CPU can run its vector type `V` (the only way to make a `V`).
pub trait Isa: Copy {
    type V: Lanes;
    fn zero(self) -> Self::V;
    fn splat(self, v: f32) -> Self::V;
    /// Relaxed loads of `src[..4 × QUADS]`, in one instruction.
    fn load(self, src: &[AtomicU32]) -> Self::V;
    /// `optim::dot` of two rows of vectors: the same operations in the same
    /// order, so the same result bit for bit (for `F8`, rows of a whole
    /// number of `F8`s, i.e. an even number of `F4`s, are the same floats).
    fn dot(self, a: &[Self::V], b: &[Self::V]) -> f32;
}

/// SSE and SSE2, part of the x86-64 baseline (elsewhere: plain floats).
#[derive(Clone, Copy, Debug, Default)]
pub struct Sse;

impl Lanes for F4 {
    const QUADS: usize = 1;
    #[inline(always)]
    fn sqrt(self) -> F4 {
        F4::sqrt(self)
    }
    #[inline(always)]
    fn store(self, dst: &[AtomicU32]) {
        F4::store(self, dst[..4].try_into().unwrap());
    }
}

impl Isa for Sse {
    type V = F4;
    #[inline(always)]
    fn zero(self) -> F4 {
        F4::zero()
    }
    #[inline(always)]
    fn splat(self, v: f32) -> F4 {
        F4::splat(v)
    }
    #[inline(always)]
    fn load(self, src: &[AtomicU32]) -> F4 {
        F4::load(src[..4].try_into().unwrap())
    }
    #[inline(always)]
    fn dot(self, a: &[F4], b: &[F4]) -> f32 {
        dot_optim(a, b)
    }
}

/// A width given in one unit (floats in fours: `F4`s), counted in vectors
/// of `V` (a compile-time constant when `W` is).
#[derive(Clone, Copy, Debug)]
pub struct InVectors<V, W>(pub W, pub std::marker::PhantomData<V>);

impl<V: Lanes, W: Width> Width for InVectors<V, W> {
    const FIXED: bool = W::FIXED;
    #[inline(always)]
    fn get(self) -> usize {
        debug_assert_eq!(self.0.get() % V::QUADS, 0);
        self.0.get() / V::QUADS
    }
}

/// Tests only: make `avx()` answer None, to run the kernels on `Sse` (both
/// give the same bits, so flipping this while other tests train cannot
/// change their outcome).
#[cfg(test)]
pub(crate) static FORCE_SSE: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// The name of the widest instruction set the fused kernels use here
/// (`"avx"` or `"sse"`).
pub fn level() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if avx().is_some() {
        return "avx";
    }
    "sse"
}

#[cfg(target_arch = "x86_64")]
pub use avx::{avx, avx_detected, Avx, F8};

/// Eight lanes on AVX (x86-64, detected at run time).
#[cfg(target_arch = "x86_64")]
mod avx {
    use super::{Isa, Lanes, F4};
    use std::arch::asm;
    use std::arch::x86_64::*;
    use std::sync::atomic::AtomicU32;

    /// The AVX instruction set; only `avx()` makes one, on a CPU that has it.
    #[derive(Clone, Copy, Debug)]
    pub struct Avx(());

    /// `Some` when the CPU has AVX and `EMBCORE_SIMD` is not `sse` (read
    /// once per process).
    #[inline]
    pub fn avx() -> Option<Avx> {
        #[cfg(test)]
        if super::FORCE_SSE.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        static WANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let wanted = *WANTED.get_or_init(|| {
            !std::env::var("EMBCORE_SIMD").is_ok_and(|v| v.eq_ignore_ascii_case("sse"))
        });
        if wanted {
            avx_detected()
        } else {
            None
        }
    }

    /// `Some` when the CPU has AVX, whatever `EMBCORE_SIMD` says.
    #[inline]
    pub fn avx_detected() -> Option<Avx> {
        is_x86_feature_detected!("avx").then_some(Avx(()))
    }

    /// Eight f32 lanes (`__m256`).
    #[derive(Clone, Copy, Debug)]
    #[repr(transparent)]
    pub struct F8(__m256);

    /// Calls an AVX intrinsic. SAFETY: the caller holds an `Avx` or an `F8`
    /// (made only through an `Avx`), so the CPU has AVX; these intrinsics
    /// take no pointers.
    macro_rules! avx {
        ($e:expr) => {{
            // SAFETY: see the macro's documentation.
            let v = unsafe { $e };
            v
        }};
    }

    macro_rules! f8_op {
        ($tr:ident, $m:ident, $i:ident) => {
            impl std::ops::$tr for F8 {
                type Output = F8;
                /// Lane-wise, IEEE single precision (as the scalar operator).
                #[inline(always)]
                fn $m(self, o: F8) -> F8 {
                    F8(avx!($i(self.0, o.0)))
                }
            }
        };
    }
    f8_op!(Add, add, _mm256_add_ps);
    f8_op!(Sub, sub, _mm256_sub_ps);
    f8_op!(Mul, mul, _mm256_mul_ps);
    f8_op!(Div, div, _mm256_div_ps);

    /// Eight Relaxed loads of `src[0..8]`, in one instruction.
    #[inline]
    #[target_feature(enable = "avx")]
    unsafe fn load8(src: &[AtomicU32; 8]) -> __m256 {
        let v: __m256;
        // SAFETY: `src` points to 32 readable bytes (eight `AtomicU32`,
        // 4-byte aligned); `vmovups` needs no alignment, and the CPU has AVX
        // (this function's contract). Concurrency: as `F4::load`, the block
        // is opaque to the compiler and every naturally aligned 4-byte
        // element of the access is read in a single access (a wider access
        // may be split, never inside an aligned dword), so it behaves
        // exactly as eight Relaxed `AtomicU32` loads in some order. It reads
        // nothing else and writes no memory.
        unsafe {
            asm!(
                "vmovups {v}, ymmword ptr [{p}]",
                p = in(reg) src.as_ptr(),
                v = lateout(ymm_reg) v,
                options(nostack, preserves_flags, readonly),
            );
        }
        v
    }

    /// Eight Relaxed stores into `dst[0..8]`, in one instruction.
    #[inline]
    #[target_feature(enable = "avx")]
    unsafe fn store8(v: __m256, dst: &[AtomicU32; 8]) {
        // SAFETY: `dst` points to 32 writable bytes (eight `AtomicU32`,
        // interior mutability); the CPU has AVX (this function's contract).
        // As for `load8`, each aligned 4-byte element is written in a single
        // access: eight Relaxed `AtomicU32` stores in some order, touching
        // no other memory.
        unsafe {
            asm!(
                "vmovups ymmword ptr [{p}], {v}",
                p = in(reg) dst.as_ptr(),
                v = in(ymm_reg) v,
                options(nostack, preserves_flags),
            );
        }
    }

    impl Lanes for F8 {
        const QUADS: usize = 2;
        #[inline(always)]
        fn sqrt(self) -> F8 {
            F8(avx!(_mm256_sqrt_ps(self.0)))
        }
        #[inline(always)]
        fn store(self, dst: &[AtomicU32]) {
            // SAFETY: an `F8` exists, so the CPU has AVX.
            unsafe { store8(self.0, dst[..8].try_into().unwrap()) }
        }
    }

    impl Isa for Avx {
        type V = F8;
        #[inline(always)]
        fn zero(self) -> F8 {
            F8(avx!(_mm256_setzero_ps()))
        }
        #[inline(always)]
        fn splat(self, v: f32) -> F8 {
            F8(avx!(_mm256_set1_ps(v)))
        }
        #[inline(always)]
        fn load(self, src: &[AtomicU32]) -> F8 {
            // SAFETY: `self` proves the CPU has AVX.
            F8(unsafe { load8(src[..8].try_into().unwrap()) })
        }
        /// One eight-lane sum of the products, which is `dot_optim`'s two
        /// four-lane sums (even and odd `F4`s) side by side, then the same
        /// `lo + hi` and pairwise sum.
        #[inline(always)]
        fn dot(self, a: &[F8], b: &[F8]) -> f32 {
            let n = a.len().min(b.len());
            let (a, b) = (&a[..n], &b[..n]);
            let mut acc = self.zero();
            for (x, y) in a.iter().zip(b) {
                acc = acc + *x * *y;
            }
            let lo = F4::from_raw(avx!(_mm256_castps256_ps128(acc.0)));
            let hi = F4::from_raw(avx!(_mm256_extractf128_ps::<1>(acc.0)));
            let t = (lo + hi).to_array();
            (t[0] + t[1]) + (t[2] + t[3])
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::F4;
    use std::arch::asm;
    use std::arch::x86_64::*;
    use std::sync::atomic::AtomicU32;
    pub type Raw = __m128;

    /// Calls an SSE intrinsic. SAFETY: SSE and SSE2 are part of the x86-64
    /// baseline, so they are always available; these intrinsics take no
    /// pointers. (The `unsafe` is only needed by toolchains older than the
    /// one that made them safe to call.)
    macro_rules! sse {
        ($e:expr) => {{
            #[allow(unused_unsafe)]
            // SAFETY: see the macro's documentation.
            let v = unsafe { $e };
            v
        }};
    }

    impl F4 {
        #[inline(always)]
        pub(super) fn from_raw(v: __m128) -> F4 {
            F4(v)
        }
        #[inline(always)]
        pub fn zero() -> F4 {
            F4(sse!(_mm_setzero_ps()))
        }
        #[inline(always)]
        pub fn splat(v: f32) -> F4 {
            F4(sse!(_mm_set1_ps(v)))
        }
        #[inline(always)]
        pub fn from_array(a: [f32; 4]) -> F4 {
            F4(sse!(_mm_setr_ps(a[0], a[1], a[2], a[3])))
        }
        #[inline(always)]
        pub fn to_array(self) -> [f32; 4] {
            // SAFETY: `__m128` and `[f32; 4]` have the same size and every
            // bit pattern is valid for both.
            unsafe { std::mem::transmute::<__m128, [f32; 4]>(self.0) }
        }
        #[inline(always)]
        pub(super) fn vadd(self, o: F4) -> F4 {
            F4(sse!(_mm_add_ps(self.0, o.0)))
        }
        #[inline(always)]
        pub(super) fn vsub(self, o: F4) -> F4 {
            F4(sse!(_mm_sub_ps(self.0, o.0)))
        }
        #[inline(always)]
        pub(super) fn vmul(self, o: F4) -> F4 {
            F4(sse!(_mm_mul_ps(self.0, o.0)))
        }
        #[inline(always)]
        pub(super) fn vdiv(self, o: F4) -> F4 {
            F4(sse!(_mm_div_ps(self.0, o.0)))
        }
        #[inline(always)]
        pub fn sqrt(self) -> F4 {
            F4(sse!(_mm_sqrt_ps(self.0)))
        }

        /// Four Relaxed loads of `src[0..4]`, in one instruction.
        #[inline(always)]
        pub fn load(src: &[AtomicU32; 4]) -> F4 {
            let v: __m128;
            // SAFETY: `src` points to 16 readable bytes (four `AtomicU32`,
            // 4-byte aligned); `movups` needs no alignment. Concurrency: the
            // block is opaque to the compiler, and on x86-64 every naturally
            // aligned 4-byte element of an SSE access is read in a single
            // access (the CPU may split a 16-byte access, Intel SDM vol. 3A
            // §9.1.1, but never inside an aligned dword), so the block
            // behaves exactly as four Relaxed `AtomicU32` loads in some
            // order: the same semantics as `load(Relaxed)` on each cell,
            // with no non-atomic access to memory that other threads access
            // atomically. It reads nothing else and writes no memory.
            unsafe {
                asm!(
                    "movups {v}, xmmword ptr [{p}]",
                    p = in(reg) src.as_ptr(),
                    v = lateout(xmm_reg) v,
                    options(nostack, preserves_flags, readonly),
                );
            }
            F4(v)
        }

        /// Four Relaxed stores into `dst[0..4]`, in one instruction.
        #[inline(always)]
        pub fn store(self, dst: &[AtomicU32; 4]) {
            // SAFETY: `dst` points to 16 writable bytes (four `AtomicU32`,
            // interior mutability: writing through a shared reference is how
            // atomics are written). As for `load`, each aligned 4-byte
            // element is written in a single access, so the block behaves
            // exactly as four Relaxed `AtomicU32` stores in some order; it
            // touches no other memory.
            unsafe {
                asm!(
                    "movups xmmword ptr [{p}], {v}",
                    p = in(reg) dst.as_ptr(),
                    v = in(xmm_reg) self.0,
                    options(nostack, preserves_flags),
                );
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    use super::F4;
    use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
    pub type Raw = [f32; 4];

    impl F4 {
        #[inline(always)]
        pub fn zero() -> F4 {
            F4([0.0; 4])
        }
        #[inline(always)]
        pub fn splat(v: f32) -> F4 {
            F4([v; 4])
        }
        #[inline(always)]
        pub fn from_array(a: [f32; 4]) -> F4 {
            F4(a)
        }
        #[inline(always)]
        pub fn to_array(self) -> [f32; 4] {
            self.0
        }
        #[inline(always)]
        pub(super) fn vadd(self, o: F4) -> F4 {
            F4(std::array::from_fn(|k| self.0[k] + o.0[k]))
        }
        #[inline(always)]
        pub(super) fn vsub(self, o: F4) -> F4 {
            F4(std::array::from_fn(|k| self.0[k] - o.0[k]))
        }
        #[inline(always)]
        pub(super) fn vmul(self, o: F4) -> F4 {
            F4(std::array::from_fn(|k| self.0[k] * o.0[k]))
        }
        #[inline(always)]
        pub(super) fn vdiv(self, o: F4) -> F4 {
            F4(std::array::from_fn(|k| self.0[k] / o.0[k]))
        }
        #[inline(always)]
        pub fn sqrt(self) -> F4 {
            F4(self.0.map(f32::sqrt))
        }
        #[inline(always)]
        pub fn load(src: &[AtomicU32; 4]) -> F4 {
            F4(std::array::from_fn(|k| {
                f32::from_bits(src[k].load(Relaxed))
            }))
        }
        #[inline(always)]
        pub fn store(self, dst: &[AtomicU32; 4]) {
            for k in 0..4 {
                dst[k].store(self.0[k].to_bits(), Relaxed);
            }
        }
    }
}

/// The floats of a slice of vectors, in order.
#[inline(always)]
pub fn as_floats<V: Lanes>(v: &[V]) -> &[f32] {
    // SAFETY: `F4` and `F8` are `repr(transparent)` over 16 / 32 bytes
    // holding 4 × QUADS f32 (`__m128`, `__m256` or `[f32; 4]`), aligned at
    // least as f32; the length covers exactly the same bytes and the borrow
    // is carried over.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<f32>(), v.len() * 4 * V::QUADS) }
}

/// Mutable `as_floats`.
#[inline(always)]
pub fn as_floats_mut<V: Lanes>(v: &mut [V]) -> &mut [f32] {
    // SAFETY: as `as_floats`; every f32 bit pattern is a valid lane value,
    // and the unique borrow is carried over.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<f32>(), v.len() * 4 * V::QUADS) }
}

/// ‖b − a‖², ‖a‖², ‖b‖² of two rows (the monitor's per-update moments),
/// four lanes at a time; a tail shorter than four is added lane by lane.
#[inline(always)]
pub fn moments(a: &[f32], b: &[f32]) -> (f32, f32, f32) {
    let n = a.len().min(b.len());
    let q = n / 4 * 4;
    let (mut sdd, mut sna, mut snb) = moments_quads(&a[..q], &b[..q]);
    for (x, y) in a[q..n].iter().zip(&b[q..n]) {
        let d = y - x;
        sdd += d * d;
        sna += x * x;
        snb += y * y;
    }
    (sdd, sna, snb)
}

/// `moments` of rows whose length is a multiple of four: the lane sums,
/// then `(l0 + l2) + (l1 + l3)`. Inlined into a caller that passes slices
/// of a compile-time length, the loop unrolls (the monitor's fixed widths).
#[inline(always)]
pub fn moments_quads(a: &[f32], b: &[f32]) -> (f32, f32, f32) {
    let (mut dd, mut na, mut nb) = (F4::zero(), F4::zero(), F4::zero());
    for (x, y) in a.chunks_exact(4).zip(b.chunks_exact(4)) {
        let x = F4::from_array([x[0], x[1], x[2], x[3]]);
        let y = F4::from_array([y[0], y[1], y[2], y[3]]);
        let d = y - x;
        dd = dd + d * d;
        na = na + x * x;
        nb = nb + y * y;
    }
    let sum = |v: F4| {
        let l = v.to_array();
        (l[0] + l[2]) + (l[1] + l[3])
    };
    (sum(dd), sum(na), sum(nb))
}

/// The cells of vector `k` of a row of `V`s.
#[inline(always)]
fn cells_of<V: Lanes>(src: &[AtomicU32], k: usize) -> &[AtomicU32] {
    let l = 4 * V::QUADS;
    &src[l * k..l * k + l]
}

/// Loads `n.get()` vectors (Relaxed) from the start of `src` (at least
/// `4 × QUADS × n.get()` cells).
#[inline(always)]
pub fn load_row<I: Isa, W: Width>(isa: I, n: W, src: &[AtomicU32], dst: &mut [I::V]) {
    let n = n.get();
    let (src, dst) = (&src[..4 * I::V::QUADS * n], &mut dst[..n]);
    for (k, d) in dst.iter_mut().enumerate() {
        *d = isa.load(cells_of::<I::V>(src, k));
    }
}

/// The little-endian bytes of `src` (Relaxed loads) into `dst`
/// (`4 × src.len()` bytes), four cells per `F4::load`.
pub fn load_quads(src: &[AtomicU32], dst: &mut [u8]) {
    let dst = &mut dst[..4 * src.len()];
    let (quads, tail) = src.split_at(src.len() / 4 * 4);
    let (dst_quads, dst_tail) = dst.split_at_mut(quads.len() * 4);
    for (q, d) in quads.chunks_exact(4).zip(dst_quads.chunks_exact_mut(16)) {
        let v = F4::load(q.try_into().unwrap()).to_array();
        for (k, f) in v.iter().enumerate() {
            d[4 * k..4 * k + 4].copy_from_slice(&f.to_bits().to_le_bytes());
        }
    }
    for (a, d) in tail.iter().zip(dst_tail.chunks_exact_mut(4)) {
        d.copy_from_slice(&a.load(Relaxed).to_le_bytes());
    }
}

/// Stores `n.get()` vectors (Relaxed) at the start of `dst`.
#[inline(always)]
pub fn store_row<V: Lanes, W: Width>(n: W, dst: &[AtomicU32], src: &[V]) {
    let n = n.get();
    let (src, dst) = (&src[..n], &dst[..4 * V::QUADS * n]);
    for (k, s) in src.iter().enumerate() {
        s.store(cells_of::<V>(dst, k));
    }
}

/// `optim::dot` on vectors (same operations, same order, same result).
#[inline(always)]
pub fn dot_optim(a: &[F4], b: &[F4]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let (mut lo, mut hi) = (F4::zero(), F4::zero());
    let pairs = n / 2;
    for c in 0..pairs {
        lo = lo + a[2 * c] * b[2 * c];
        hi = hi + a[2 * c + 1] * b[2 * c + 1];
    }
    let t = (lo + hi).to_array();
    let mut s = (t[0] + t[1]) + (t[2] + t[3]);
    if n % 2 == 1 {
        let p = (a[n - 1] * b[n - 1]).to_array();
        s += p[0];
        s += p[1];
        s += p[2];
        s += p[3];
    }
    s
}

/// An optimizer's constants prepared once per training call for
/// `step_row` (kept in registers or on the stack across events), with the
/// instruction set they are prepared for.
#[derive(Clone, Copy, Debug)]
pub struct Prepared<I: Isa = Sse> {
    pub opt: Optimizer,
    isa: I,
    lr: I::V,
    eps: I::V,
    l2: I::V,
}

impl Prepared<Sse> {
    pub fn new(opt: &Optimizer) -> Self {
        Prepared::with(Sse, opt)
    }
}

impl<I: Isa> Prepared<I> {
    #[inline(always)]
    pub fn with(isa: I, opt: &Optimizer) -> Self {
        Prepared {
            opt: *opt,
            isa,
            lr: isa.splat(opt.learning_rate),
            eps: isa.splat(opt.eps),
            l2: isa.splat(opt.l2),
        }
    }
}

/// The cells one fused step writes: a row's weights, its per-coordinate
/// optimizer state and its per-row accumulator.
#[derive(Clone, Copy)]
pub struct StepCells<'a> {
    pub weights: &'a [AtomicU32],
    pub state: &'a [AtomicU32],
    pub row_acc: &'a AtomicU64,
}

/// What an instance of the fused step knows at compile time about the
/// optimizer it runs: its kind (else read per row), and whether l2 and
/// max_norm are both 0 (else tested per row). The training loop picks an
/// instance once per call (`StepPlan::fits`), so the hot path has no
/// per-row `match` or option tests; `General` serves every optimizer.
pub trait StepPlan: Copy {
    /// The optimizer kind, or `None`: `Optimizer::kind`, read per row.
    const KIND: Option<OptimizerKind>;
    /// l2 = 0 and max_norm = 0 (`false`: tested per row).
    const PLAIN: bool;

    /// Whether this plan computes `opt`'s steps (`General` fits every one).
    fn fits(opt: &Optimizer) -> bool {
        Self::KIND.is_none_or(|k| k == opt.kind)
            && (!Self::PLAIN || (opt.l2 == 0.0 && opt.max_norm == 0.0))
    }
}

/// Any optimizer: kind, l2 and max_norm read at run time.
#[derive(Clone, Copy, Debug, Default)]
pub struct General;

impl StepPlan for General {
    const KIND: Option<OptimizerKind> = None;
    const PLAIN: bool = false;
}

/// SGD without l2 and max_norm.
#[derive(Clone, Copy, Debug, Default)]
pub struct PlainSgd;

impl StepPlan for PlainSgd {
    const KIND: Option<OptimizerKind> = Some(OptimizerKind::Sgd);
    const PLAIN: bool = true;
}

/// Per-coordinate Adagrad without l2 and max_norm (the default optimizer).
#[derive(Clone, Copy, Debug, Default)]
pub struct PlainAdagrad;

impl StepPlan for PlainAdagrad {
    const KIND: Option<OptimizerKind> = Some(OptimizerKind::Adagrad);
    const PLAIN: bool = true;
}

/// One optimizer step on a row of `n.get()` vectors, fused: `x` is the row
/// as the caller loaded it (not modified), `grad` the loss gradient
/// (overwritten with the full gradient including l2, as `Optimizer::step`
/// does), `out` receives the new row. The new row is stored into `weights`,
/// the new per-coordinate state into `state` (Adagrad) and the per-row
/// accumulator into `row_acc` (row-wise Adagrad; the low 32 bits hold the
/// f32). Same results, bit for bit, as the body of
/// `EmbeddingTable::apply_step` with the optimizer `p` was prepared from.
#[inline(always)]
pub fn step_row<I: Isa, W: Width>(
    p: &Prepared<I>,
    n: W,
    cells: StepCells<'_>,
    x: &[I::V],
    grad: &mut [I::V],
    out: &mut [I::V],
) {
    step_row_planned(General, p, n, cells, x, grad, out)
}

/// `step_row` for an optimizer `plan` fits (`StepPlan::fits`, which the
/// caller checked): the same operations, with what the plan fixes decided
/// at compile time.
#[inline(always)]
pub fn step_row_planned<P: StepPlan, I: Isa, W: Width>(
    _plan: P,
    p: &Prepared<I>,
    n: W,
    cells: StepCells<'_>,
    x: &[I::V],
    grad: &mut [I::V],
    out: &mut [I::V],
) {
    debug_assert!(P::fits(&p.opt));
    let StepCells {
        weights,
        state,
        row_acc,
    } = cells;
    let n = n.get();
    let l = 4 * I::V::QUADS;
    let (x, grad, out) = (&x[..n], &mut grad[..n], &mut out[..n]);
    let max_norm = p.opt.max_norm;
    if !P::PLAIN && max_norm > 0.0 {
        step_core::<P, I, true>(p, &weights[..l * n], state, row_acc, x, grad, out);
        // max_norm clips the whole row after the step (as `Optimizer::step`).
        let norm = dot(as_floats(out), as_floats(out)).sqrt();
        if norm > max_norm {
            let s = p.isa.splat(max_norm / norm);
            for o in out.iter_mut() {
                *o = *o * s;
            }
        }
        store_row(Dyn(n), weights, out);
    } else {
        step_core::<P, I, false>(p, &weights[..l * n], state, row_acc, x, grad, out);
    }
}

/// The step before clipping; stores the new row unless `CLIP` (the caller
/// stores it after clipping). `x`, `grad`, `out` have the row's length.
#[inline(always)]
fn step_core<P: StepPlan, I: Isa, const CLIP: bool>(
    p: &Prepared<I>,
    weights: &[AtomicU32],
    state: &[AtomicU32],
    row_acc: &AtomicU64,
    x: &[I::V],
    grad: &mut [I::V],
    out: &mut [I::V],
) {
    let n = x.len();
    let l = 4 * I::V::QUADS;
    let (grad, out) = (&mut grad[..n], &mut out[..n]);
    let cell = |src, k| cells_of::<I::V>(src, k);
    if !P::PLAIN && p.opt.l2 > 0.0 {
        for (g, xk) in grad.iter_mut().zip(x) {
            *g = *g + p.l2 * *xk;
        }
    }
    match P::KIND.unwrap_or(p.opt.kind) {
        OptimizerKind::Sgd => {
            for k in 0..n {
                out[k] = x[k] - p.lr * grad[k];
                if !CLIP {
                    out[k].store(cell(weights, k));
                }
            }
        }
        OptimizerKind::Adagrad => {
            let sq = &state[..l * n];
            for k in 0..n {
                let g = grad[k];
                let acc = p.isa.load(cell(sq, k)) + g * g;
                acc.store(cell(sq, k));
                out[k] = x[k] - p.lr * g / (acc.sqrt() + p.eps);
                if !CLIP {
                    out[k].store(cell(weights, k));
                }
            }
        }
        OptimizerKind::RowWiseAdagrad => {
            let mean_sq = p.isa.dot(grad, grad) / (l * n).max(1) as f32;
            let ra = row_acc;
            let row_acc = f32::from_bits(ra.load(Relaxed) as u32) + mean_sq;
            ra.store(u64::from(row_acc.to_bits()), Relaxed);
            let scale = p
                .isa
                .splat(p.opt.learning_rate / (row_acc.sqrt() + p.opt.eps));
            for k in 0..n {
                out[k] = x[k] - scale * grad[k];
                if !CLIP {
                    out[k].store(cell(weights, k));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::table::{meta, EmbeddingTable, TableConfig};

    fn rand_vec(seed: u64, n: usize, scale: f32) -> Vec<f32> {
        (0..n as u64)
            .map(|k| {
                (2.0 * crate::kernels::rng::unit_f32(crate::kernels::rng::hash2(seed, k)) - 1.0)
                    * scale
            })
            .collect()
    }

    fn to_f4(v: &[f32]) -> Vec<F4> {
        v.chunks_exact(4)
            .map(|c| F4::from_array(c.try_into().unwrap()))
            .collect()
    }

    /// `v` as vectors of `isa` (through Relaxed cells: the only way in).
    fn to_vectors<I: Isa>(isa: I, v: &[f32]) -> Vec<I::V> {
        let cells: Vec<AtomicU32> = v.iter().map(|f| AtomicU32::new(f.to_bits())).collect();
        let n = v.len() / (4 * I::V::QUADS);
        let mut out = vec![isa.zero(); n];
        load_row(isa, Dyn(n), &cells, &mut out);
        out
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|f| f.to_bits()).collect()
    }

    /// The fused step on a row of `w` vectors equals `apply_step` bit for
    /// bit: new row, full gradient, stored weights, state and row
    /// accumulator, over several steps, for every optimizer, l2, max_norm.
    fn check_width<I: Isa, W: Width>(isa: I, w: W) {
        let n = 4 * I::V::QUADS * w.get();
        for kind in [
            OptimizerKind::Sgd,
            OptimizerKind::Adagrad,
            OptimizerKind::RowWiseAdagrad,
        ] {
            for (l2, max_norm) in [(0.0, 0.0), (0.3, 0.0), (0.0, 0.2), (0.1, 0.05)] {
                let opt = Optimizer {
                    kind,
                    learning_rate: 0.3,
                    l2,
                    max_norm,
                    ..Default::default()
                };
                let cfg = TableConfig {
                    capacity: 8,
                    optimizer: opt,
                    ..TableConfig::new(n)
                };
                let (a, b, c) = (
                    EmbeddingTable::new(cfg).unwrap(),
                    EmbeddingTable::new(cfg).unwrap(),
                    EmbeddingTable::new(cfg).unwrap(),
                );
                let (ga, gb, gc) = (a.guard(), b.guard(), c.guard());
                for id in 0..3u64 {
                    a.get_or_insert(&ga, id, 0).unwrap();
                    b.get_or_insert(&gb, id, 0).unwrap();
                    c.get_or_insert(&gc, id, 0).unwrap();
                }
                // `c` steps on the instance with the optimizer fixed at
                // compile time, where one fits (else as `b`).
                let (sgd, adagrad) = (PlainSgd::fits(&opt), PlainAdagrad::fits(&opt));
                for step in 0..4u64 {
                    for r in 0..3u32 {
                        let grad = rand_vec(step * 10 + u64::from(r), n, 2.0);
                        let mut wa = vec![0.0; n];
                        a.load_row(r, &mut wa);
                        let mut g1 = grad.clone();
                        let mut scratch = vec![0.0; a.state_width()];
                        a.apply_step(r, &mut wa, &mut g1, &mut scratch);

                        let mut x = vec![isa.zero(); w.get()];
                        load_row(isa, w, b.row(r), &mut x);
                        let (mut g2, mut out) = (to_vectors(isa, &grad), vec![isa.zero(); w.get()]);
                        step_row(
                            &Prepared::with(isa, b.optimizer()),
                            w,
                            StepCells {
                                weights: b.row(r),
                                state: b.row_state(r),
                                row_acc: &b.meta(r)[meta::ROW_ACC],
                            },
                            &x,
                            &mut g2,
                            &mut out,
                        );
                        let what = format!("{kind:?} n={n} l2={l2} max_norm={max_norm}");
                        let mut xc = vec![isa.zero(); w.get()];
                        load_row(isa, w, c.row(r), &mut xc);
                        let (mut g3, mut out3) =
                            (to_vectors(isa, &grad), vec![isa.zero(); w.get()]);
                        let pc = Prepared::with(isa, c.optimizer());
                        let cells = StepCells {
                            weights: c.row(r),
                            state: c.row_state(r),
                            row_acc: &c.meta(r)[meta::ROW_ACC],
                        };
                        if sgd {
                            step_row_planned(PlainSgd, &pc, w, cells, &xc, &mut g3, &mut out3);
                        } else if adagrad {
                            step_row_planned(PlainAdagrad, &pc, w, cells, &xc, &mut g3, &mut out3);
                        } else {
                            step_row(&pc, w, cells, &xc, &mut g3, &mut out3);
                        }
                        assert_eq!(bits(as_floats(&out3)), bits(&wa), "planned {what}");
                        assert_eq!(bits(as_floats(&g3)), bits(&g1), "planned {what}");
                        assert_eq!(bits(as_floats(&out)), bits(&wa), "{what}");
                        assert_eq!(bits(as_floats(&g2)), bits(&g1), "{what}");
                        let (mut ra, mut rb) = (vec![0.0; n], vec![0.0; n]);
                        a.load_row(r, &mut ra);
                        b.load_row(r, &mut rb);
                        assert_eq!(bits(&ra), bits(&rb), "{what}");
                        let state = |t: &EmbeddingTable| -> Vec<u32> {
                            t.row_state(r).iter().map(|s| s.load(Relaxed)).collect()
                        };
                        assert_eq!(state(&a), state(&b), "{what}");
                        assert_eq!(state(&a), state(&c), "planned {what}");
                        let mut rc = vec![0.0; n];
                        c.load_row(r, &mut rc);
                        assert_eq!(bits(&ra), bits(&rc), "planned {what}");
                        assert_eq!(
                            a.meta(r)[meta::ROW_ACC].load(Relaxed),
                            b.meta(r)[meta::ROW_ACC].load(Relaxed),
                            "{what}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn fused_step_matches_apply_step_at_every_width() {
        check_width(Sse, Fixed::<1>);
        check_width(Sse, Fixed::<2>);
        check_width(Sse, Fixed::<4>);
        check_width(Sse, Fixed::<6>);
        check_width(Sse, Fixed::<8>);
        check_width(Sse, Fixed::<12>);
        check_width(Sse, Fixed::<16>);
        for q in [1, 2, 3, 5, 6, 7, 9] {
            check_width(Sse, Dyn(q));
        }
    }

    /// The AVX step (widths in `F8`s) equals `apply_step` bit for bit, on a
    /// CPU that has AVX (the test says so when it has not).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx_step_matches_apply_step_at_every_width() {
        let Some(isa) = avx_detected() else {
            eprintln!("no AVX on this CPU: the AVX step is not tested");
            return;
        };
        check_width(isa, Fixed::<1>);
        check_width(isa, Fixed::<2>);
        check_width(isa, Fixed::<3>);
        check_width(isa, Fixed::<4>);
        check_width(isa, Fixed::<8>);
        for q in [1, 2, 3, 5, 6, 7] {
            check_width(isa, Dyn(q));
        }
    }

    /// The AVX dot equals `optim::dot` (and so `dot_optim`) bit for bit on
    /// rows of a whole number of `F8`s, including the signs of zeros.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx_dots_match_scalar_dots() {
        let Some(isa) = avx_detected() else {
            eprintln!("no AVX on this CPU: the AVX dot is not tested");
            return;
        };
        for q in 0..=9usize {
            for seed in 0..20u64 {
                let (mut a, mut b) = (
                    rand_vec(q as u64 + seed * 31, 8 * q, 1.0),
                    rand_vec(99 + seed, 8 * q, 1e3),
                );
                if seed == 0 {
                    // Only -0.0 products: a lane sum that starts from +0.0
                    // is +0.0 (from the first product it would be -0.0).
                    a.iter_mut().for_each(|v| *v = v.abs());
                    b.iter_mut().for_each(|v| *v = -0.0);
                }
                let (va, vb) = (to_vectors(isa, &a), to_vectors(isa, &b));
                assert_eq!(
                    isa.dot(&va, &vb).to_bits(),
                    dot(&a, &b).to_bits(),
                    "q={q} seed={seed}"
                );
            }
        }
    }

    #[test]
    fn moments_match_f64() {
        for n in [0usize, 1, 3, 4, 7, 8, 24, 32, 33, 128] {
            let a = rand_vec(n as u64 + 5, n, 1.0);
            let b = rand_vec(n as u64 + 77, n, 1.0);
            let (dd, na, nb) = moments(&a, &b);
            let f = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
            let (a, b) = (f(&a), f(&b));
            let edd: f64 = a.iter().zip(&b).map(|(x, y)| (y - x) * (y - x)).sum();
            let ena: f64 = a.iter().map(|x| x * x).sum();
            let enb: f64 = b.iter().map(|x| x * x).sum();
            for (got, want) in [(dd, edd), (na, ena), (nb, enb)] {
                assert!(
                    (f64::from(got) - want).abs() <= 1e-5 * (1.0 + want),
                    "n={n}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn vector_dots_match_scalar_dots() {
        for q in 1..=9usize {
            let (a, b) = (rand_vec(q as u64, 4 * q, 1.0), rand_vec(99, 4 * q, 1.0));
            let (va, vb) = (to_f4(&a), to_f4(&b));
            assert_eq!(
                dot_optim(&va, &vb).to_bits(),
                dot(&a, &b).to_bits(),
                "q={q}"
            );
        }
    }

    #[test]
    fn quads_copy_every_cell_as_bytes() {
        for n in [0usize, 1, 3, 4, 5, 8, 13, 64] {
            let cells: Vec<AtomicU32> = (0..n as u32)
                .map(|k| AtomicU32::new(k.wrapping_mul(0x9e37_79b9)))
                .collect();
            let mut got = vec![0xAAu8; 4 * n];
            load_quads(&cells, &mut got);
            let want: Vec<u8> = cells
                .iter()
                .flat_map(|c| c.load(Relaxed).to_le_bytes())
                .collect();
            assert_eq!(got, want, "n={n}");
        }
    }

    #[test]
    fn vector_load_and_store_roundtrip() {
        for q in [1usize, 2, 3, 6, 10] {
            let cells: Vec<AtomicU32> = (0..4 * q + 1).map(|_| AtomicU32::new(7)).collect();
            let v = to_f4(&rand_vec(q as u64, 4 * q, 1.0));
            store_row(Dyn(q), &cells[1..], &v);
            assert_eq!(cells[0].load(Relaxed), 7, "store stays in its cells");
            let mut back = vec![F4::zero(); q];
            load_row(Sse, Dyn(q), &cells[1..], &mut back);
            assert_eq!(bits(as_floats(&back)), bits(as_floats(&v)));
            for (c, f) in cells[1..].iter().zip(as_floats(&v)) {
                assert_eq!(c.load(Relaxed), f.to_bits());
            }
        }
    }

    /// AVX loads and stores copy exactly their eight cells per vector.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx_load_and_store_roundtrip() {
        let Some(isa) = avx_detected() else {
            eprintln!("no AVX on this CPU: AVX loads and stores are not tested");
            return;
        };
        for q in [1usize, 2, 3, 5] {
            let cells: Vec<AtomicU32> = (0..8 * q + 2).map(|_| AtomicU32::new(7)).collect();
            let src = rand_vec(q as u64, 8 * q, 1.0);
            let v = to_vectors(isa, &src);
            assert_eq!(bits(as_floats(&v)), bits(&src));
            store_row(Dyn(q), &cells[1..], &v);
            assert_eq!(cells[0].load(Relaxed), 7, "store stays in its cells");
            assert_eq!(
                cells[8 * q + 1].load(Relaxed),
                7,
                "store stays in its cells"
            );
            for (c, f) in cells[1..].iter().zip(&src) {
                assert_eq!(c.load(Relaxed), f.to_bits());
            }
        }
    }
}
