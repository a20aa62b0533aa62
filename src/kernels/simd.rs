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

use crate::kernels::optim::{dot, Optimizer, OptimizerKind};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

/// A width (in `F4` vectors, or floats) known at compile time or run time.
pub trait Width: Copy {
    fn get(self) -> usize;
}

/// A width known at compile time.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fixed<const N: usize>;

impl<const N: usize> Width for Fixed<N> {
    #[inline(always)]
    fn get(self) -> usize {
        N
    }
}

/// A width known at run time.
#[derive(Clone, Copy, Debug)]
pub struct Dyn(pub usize);

impl Width for Dyn {
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
pub fn as_floats(v: &[F4]) -> &[f32] {
    // SAFETY: `F4` is `repr(transparent)` over 16 bytes holding four f32
    // (`__m128` or `[f32; 4]`), aligned at least as f32; the length covers
    // exactly the same bytes and the borrow is carried over.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<f32>(), v.len() * 4) }
}

/// Mutable `as_floats`.
#[inline(always)]
pub fn as_floats_mut(v: &mut [F4]) -> &mut [f32] {
    // SAFETY: as `as_floats`; every f32 bit pattern is a valid lane value,
    // and the unique borrow is carried over.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<f32>(), v.len() * 4) }
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

/// Cells `4k..4k + 4` of `src`.
#[inline(always)]
fn quad(src: &[AtomicU32], k: usize) -> &[AtomicU32; 4] {
    src[4 * k..4 * k + 4].try_into().unwrap()
}

/// Loads `dst.len()` vectors (Relaxed) from the start of `src` (at least
/// `4 × n.get()` cells).
#[inline(always)]
pub fn load_row<W: Width>(n: W, src: &[AtomicU32], dst: &mut [F4]) {
    let n = n.get();
    let (src, dst) = (&src[..4 * n], &mut dst[..n]);
    for (k, d) in dst.iter_mut().enumerate() {
        *d = F4::load(quad(src, k));
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
pub fn store_row<W: Width>(n: W, dst: &[AtomicU32], src: &[F4]) {
    let n = n.get();
    let (src, dst) = (&src[..n], &dst[..4 * n]);
    for (k, s) in src.iter().enumerate() {
        s.store(quad(dst, k));
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
/// `step_row` (kept in registers or on the stack across events).
#[derive(Clone, Copy, Debug)]
pub struct Prepared {
    pub opt: Optimizer,
    lr: F4,
    eps: F4,
    l2: F4,
}

impl Prepared {
    pub fn new(opt: &Optimizer) -> Self {
        Prepared {
            opt: *opt,
            lr: F4::splat(opt.learning_rate),
            eps: F4::splat(opt.eps),
            l2: F4::splat(opt.l2),
        }
    }
}

/// One optimizer step on a row of `n.get()` vectors, fused: `x` is the row
/// as the caller loaded it (not modified), `grad` the loss gradient
/// (overwritten with the full gradient including l2, as `Optimizer::step`
/// does), `out` receives the new row. The new row is stored into `weights`,
/// the new per-coordinate state into `state` (Adagrad) and the per-row
/// accumulator into `row_acc` (row-wise Adagrad; the low 32 bits hold the f32). Same
/// results, bit for bit, as the body of `EmbeddingTable::apply_step` with
/// the optimizer `p` was prepared from.
/// The cells one fused step writes: a row's weights, its per-coordinate
/// optimizer state and its per-row accumulator.
#[derive(Clone, Copy)]
pub struct StepCells<'a> {
    pub weights: &'a [AtomicU32],
    pub state: &'a [AtomicU32],
    pub row_acc: &'a AtomicU64,
}

#[inline(always)]
pub fn step_row<W: Width>(
    p: &Prepared,
    n: W,
    cells: StepCells<'_>,
    x: &[F4],
    grad: &mut [F4],
    out: &mut [F4],
) {
    let StepCells {
        weights,
        state,
        row_acc,
    } = cells;
    let n = n.get();
    let (x, grad, out) = (&x[..n], &mut grad[..n], &mut out[..n]);
    let max_norm = p.opt.max_norm;
    if max_norm > 0.0 {
        step_core::<true>(p, &weights[..4 * n], state, row_acc, x, grad, out);
        // max_norm clips the whole row after the step (as `Optimizer::step`).
        let norm = dot(as_floats(out), as_floats(out)).sqrt();
        if norm > max_norm {
            let s = F4::splat(max_norm / norm);
            for o in out.iter_mut() {
                *o = *o * s;
            }
        }
        store_row(Dyn(n), weights, out);
    } else {
        step_core::<false>(p, &weights[..4 * n], state, row_acc, x, grad, out);
    }
}

/// The step before clipping; stores the new row unless `CLIP` (the caller
/// stores it after clipping). `x`, `grad`, `out` have the row's length.
#[inline(always)]
fn step_core<const CLIP: bool>(
    p: &Prepared,
    weights: &[AtomicU32],
    state: &[AtomicU32],
    row_acc: &AtomicU64,
    x: &[F4],
    grad: &mut [F4],
    out: &mut [F4],
) {
    let n = x.len();
    let (grad, out) = (&mut grad[..n], &mut out[..n]);
    if p.opt.l2 > 0.0 {
        for (g, xk) in grad.iter_mut().zip(x) {
            *g = *g + p.l2 * *xk;
        }
    }
    match p.opt.kind {
        OptimizerKind::Sgd => {
            for k in 0..n {
                out[k] = x[k] - p.lr * grad[k];
                if !CLIP {
                    out[k].store(quad(weights, k));
                }
            }
        }
        OptimizerKind::Adagrad => {
            let sq = &state[..4 * n];
            for k in 0..n {
                let g = grad[k];
                let acc = F4::load(quad(sq, k)) + g * g;
                acc.store(quad(sq, k));
                out[k] = x[k] - p.lr * g / (acc.sqrt() + p.eps);
                if !CLIP {
                    out[k].store(quad(weights, k));
                }
            }
        }
        OptimizerKind::RowWiseAdagrad => {
            let mean_sq = dot_optim(grad, grad) / (4 * n).max(1) as f32;
            let ra = row_acc;
            let row_acc = f32::from_bits(ra.load(Relaxed) as u32) + mean_sq;
            ra.store(u64::from(row_acc.to_bits()), Relaxed);
            let scale = F4::splat(p.opt.learning_rate / (row_acc.sqrt() + p.opt.eps));
            for k in 0..n {
                out[k] = x[k] - scale * grad[k];
                if !CLIP {
                    out[k].store(quad(weights, k));
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

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|f| f.to_bits()).collect()
    }

    /// The fused step on a row of `w` vectors equals `apply_step` bit for
    /// bit: new row, full gradient, stored weights, state and row
    /// accumulator, over several steps, for every optimizer, l2, max_norm.
    fn check_width<W: Width>(w: W) {
        let n = 4 * w.get();
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
                let (a, b) = (
                    EmbeddingTable::new(cfg).unwrap(),
                    EmbeddingTable::new(cfg).unwrap(),
                );
                let (ga, gb) = (a.guard(), b.guard());
                for id in 0..3u64 {
                    a.get_or_insert(&ga, id, 0).unwrap();
                    b.get_or_insert(&gb, id, 0).unwrap();
                }
                for step in 0..4u64 {
                    for r in 0..3u32 {
                        let grad = rand_vec(step * 10 + u64::from(r), n, 2.0);
                        let mut wa = vec![0.0; n];
                        a.load_row(r, &mut wa);
                        let mut g1 = grad.clone();
                        let mut scratch = vec![0.0; a.state_width()];
                        a.apply_step(r, &mut wa, &mut g1, &mut scratch);

                        let mut x = vec![F4::zero(); w.get()];
                        load_row(w, b.row(r), &mut x);
                        let (mut g2, mut out) = (to_f4(&grad), vec![F4::zero(); w.get()]);
                        step_row(
                            &Prepared::new(b.optimizer()),
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
        check_width(Fixed::<1>);
        check_width(Fixed::<2>);
        check_width(Fixed::<4>);
        check_width(Fixed::<6>);
        check_width(Fixed::<8>);
        check_width(Fixed::<12>);
        check_width(Fixed::<16>);
        for q in [1, 2, 3, 5, 6, 7, 9] {
            check_width(Dyn(q));
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
            load_row(Dyn(q), &cells[1..], &mut back);
            assert_eq!(bits(as_floats(&back)), bits(as_floats(&v)));
            for (c, f) in cells[1..].iter().zip(as_floats(&v)) {
                assert_eq!(c.load(Relaxed), f.to_bits());
            }
        }
    }
}
