//! The per-event kernels: one worker's share of a training call, one
//! optimizer step per event, for every model (MF is the two-field FFM).
//!
//! Design notes.
//! * Gradients are computed from the rows as loaded, for every field, before
//!   any row is written: the step equals the textbook simultaneous update.
//! * One family, specialised by width and vector: when `dim` is a multiple
//!   of 4, `fused` runs the loop on vectors (`kernels::simd::Isa`: `F4`, four
//!   floats, on SSE; `F8`, eight, on AVX where the CPU has it and `dim` is a
//!   multiple of 8, chosen at run time in `run_share`) with one fused
//!   optimizer pass per row, the field count, block and row widths
//!   compile-time constants for the common shapes (`Fixed`), any other shape
//!   the same code with run-time widths (`Dyn`); otherwise `generic` on
//!   plain floats. All give the same results bit for bit (tested below on
//!   every instruction set): the same operations in the same order.
//! * The optimizer, too, for the common cases: plain SGD and plain Adagrad
//!   (no l2, no max_norm) on the benchmarked shapes run instances with the
//!   optimizer fixed at compile time (`simd::StepPlan`), with no per-row
//!   `match` or option test; every other optimizer runs the `General`
//!   instance of its shape. Chosen once per call in `shapes`, tested
//!   against the generic loop like every other instance.
//! * Rows are addressed per event without bounds checks (`RowRegions::cells`):
//!   every resolved row of a share is checked once, before its loop, to be a
//!   row of its table or MISSING.
//! * One dot product: `kernels::optim::dot` (two 4-lane partial sums added
//!   lane-wise, then pairwise), which `simd::dot_optim` reproduces on
//!   vectors. The first version summed FFM / FM blocks in another order;
//!   their results changed in the last bits when the engines were merged.
//! * The metadata of all an event's rows is updated before its row stores:
//!   the counters' locked read-modify-writes each wait for the store buffer
//!   to drain, so grouping them makes that one wait per event.

use crate::kernels::optim::{dot, Optimizer};
use crate::kernels::simd::{
    self, Dyn, Fixed, General, InVectors, Isa, Lanes, PlainAdagrad, PlainSgd, Prepared, Sse,
    StepPlan, Width,
};
use crate::storage::table::{dec_time, meta, unpack_bias, EmbeddingTable, RowCells};
use crate::train::batch::Events;
use crate::train::bias::GlobalBias;
use crate::train::config::{block_index, FieldConfig, Interaction};
use crate::train::loss::Loss;
use crate::train::observer::{RowUpdate, UpdateObserver};
use crate::train::resolve::MISSING;
use std::marker::PhantomData;
use std::sync::atomic::Ordering::Relaxed;

/// Tests only: make the training loops take their generic (non-fused)
/// path, to compare both. The two paths give bit-identical results, so
/// flipping this while other tests train cannot change their outcome.
#[cfg(test)]
pub(crate) static FORCE_GENERIC: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

#[cfg(test)]
thread_local! {
    /// Tests only: how many shares this thread ran on an instance with the
    /// optimizer fixed at compile time (`StepPlan` other than `General`).
    pub(crate) static PLANNED_RUNS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

const PREFETCH: usize = 8;
/// Vectors per event buffer kept on the stack (`fused`).
const STACK_VECTORS: usize = 16;
/// Fields whose per-field constants `fused` keeps on the stack (more: on
/// the heap). Small: the debug build inlines every instance of `fused` into
/// `shapes` with its own stack slots.
const LOCAL_FIELDS: usize = 8;

/// `make(t)` for each of `tables`, in `local` when they fit, else in `heap`
/// (filled here): the per-field constants of a share, on the stack for the
/// common field counts.
#[inline(always)]
fn per_field<'a, 't, T: Copy>(
    local: &'a mut [T; LOCAL_FIELDS],
    heap: &'a mut Vec<T>,
    tables: &[&'t EmbeddingTable],
    make: impl Fn(&'t EmbeddingTable) -> T,
) -> &'a [T] {
    let n = tables.len();
    let out: &mut [T] = if n <= LOCAL_FIELDS {
        &mut local[..n]
    } else {
        heap.resize(n, local[0]);
        heap
    };
    for (o, t) in out.iter_mut().zip(tables) {
        *o = make(t);
    }
    out
}
pub use crate::train::config::MAX_FIELDS;

/// How the rows of one event are laid out side by side, and the
/// interaction of a model over them.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub interaction: Interaction,
    pub n_fields: usize,
    /// Width of one latent vector (an FFM block, the FM vector).
    pub dim: usize,
    /// Width of a row.
    pub row_dim: usize,
}

impl Layout {
    pub fn of(cfg: &FieldConfig) -> Self {
        Layout {
            interaction: cfg.interaction,
            n_fields: cfg.fields.len(),
            dim: cfg.dim(),
            row_dim: cfg.row_dim(),
        }
    }

    /// Interaction part of the score of the rows loaded side by side in `x`
    /// (`n_fields × row_dim`). FM leaves Σ v_i in `sum` for `gradients`.
    #[inline(always)]
    pub fn interactions(&self, x: &[f32], sum: &mut [f32]) -> f32 {
        let (nf, d, w) = (self.n_fields, self.dim, self.row_dim);
        match self.interaction {
            Interaction::FieldAware => {
                let mut s = 0.0f32;
                for i in 0..nf {
                    for j in (i + 1)..nf {
                        let a = i * w + block_index(i, j) * d;
                        let b = j * w + block_index(j, i) * d;
                        s += dot(&x[a..a + d], &x[b..b + d]);
                    }
                }
                s
            }
            Interaction::Plain => {
                // Σ_{i<j} ⟨v_i, v_j⟩ = ½(‖Σ v_i‖² − Σ ‖v_i‖²): O(n_fields · dim).
                sum.copy_from_slice(&x[..d]);
                let mut sq = dot(&x[..d], &x[..d]);
                for v in x[d..nf * d].chunks_exact(d) {
                    for (a, b) in sum.iter_mut().zip(v) {
                        *a += b;
                    }
                    sq += dot(v, v);
                }
                0.5 * (dot(sum, sum) - sq)
            }
        }
    }

    /// `grad` (same layout as `x`) = g × ∂(interactions)/∂x.
    #[inline(always)]
    pub fn gradients(&self, x: &[f32], sum: &[f32], g: f32, grad: &mut [f32]) {
        let (nf, d, w) = (self.n_fields, self.dim, self.row_dim);
        match self.interaction {
            Interaction::FieldAware => {
                // ∂/∂w_{i, field j} = w_{j, field i}.
                for i in 0..nf {
                    for j in (i + 1)..nf {
                        let a = i * w + block_index(i, j) * d;
                        let b = j * w + block_index(j, i) * d;
                        let (ga, gb) = grad.split_at_mut(b);
                        let (ga, gb) = (&mut ga[a..a + d], &mut gb[..d]);
                        let (xa, xb) = (&x[a..a + d], &x[b..b + d]);
                        for k in 0..d {
                            ga[k] = g * xb[k];
                            gb[k] = g * xa[k];
                        }
                    }
                }
            }
            Interaction::Plain => {
                // ∂/∂v_i = Σ v − v_i.
                for (feature_grad, feature) in
                    grad[..nf * d].chunks_exact_mut(d).zip(x.chunks_exact(d))
                {
                    for ((gk, sk), vk) in feature_grad.iter_mut().zip(sum).zip(feature) {
                        *gk = g * (sk - vk);
                    }
                }
            }
        }
    }
}

/// A layout for the vector loops: the instruction set, the interaction, the
/// field count and the block width in vectors of `isa`.
#[derive(Clone, Copy)]
struct VectorShape<I, N, B> {
    isa: I,
    interaction: Interaction,
    n_fields: N,
    block_width: B,
}

/// `Layout::interactions` on rows held as vectors of `shape.isa`: the same
/// operations in the same order, so the same result bit for bit.
#[inline(always)]
fn interactions_v<I: Isa, N: Width, B: Width>(
    shape: VectorShape<I, N, B>,
    x: &[I::V],
    sum: &mut [I::V],
) -> f32 {
    let VectorShape {
        isa,
        interaction,
        n_fields,
        block_width,
    } = shape;
    let nf = n_fields.get();
    let q = block_width.get();
    match interaction {
        Interaction::FieldAware => {
            let w = q * (nf - 1);
            // A compile-time length when the widths are: no bounds checks.
            let x = &x[..nf * w];
            let mut s = 0.0f32;
            for i in 0..nf {
                for j in (i + 1)..nf {
                    let a = i * w + block_index(i, j) * q;
                    let b = j * w + block_index(j, i) * q;
                    s += isa.dot(&x[a..][..q], &x[b..][..q]);
                }
            }
            s
        }
        Interaction::Plain => {
            let x = &x[..nf * q];
            let sum = &mut sum[..q];
            sum.copy_from_slice(&x[..q]);
            let mut sq = isa.dot(&x[..q], &x[..q]);
            for v in x[q..nf * q].chunks_exact(q) {
                let v = &v[..q];
                for (a, b) in sum.iter_mut().zip(v) {
                    *a = *a + *b;
                }
                sq += isa.dot(v, v);
            }
            0.5 * (isa.dot(sum, sum) - sq)
        }
    }
}

/// `Layout::gradients` on rows held as vectors (see `interactions_v`).
#[inline(always)]
fn gradients_v<I: Isa, N: Width, B: Width>(
    shape: VectorShape<I, N, B>,
    x: &[I::V],
    sum: &[I::V],
    g: f32,
    grad: &mut [I::V],
) {
    let VectorShape {
        isa,
        interaction,
        n_fields,
        block_width,
    } = shape;
    let nf = n_fields.get();
    let q = block_width.get();
    let gs = isa.splat(g);
    match interaction {
        Interaction::FieldAware => {
            let w = q * (nf - 1);
            let (x, grad) = (&x[..nf * w], &mut grad[..nf * w]);
            for i in 0..nf {
                for j in (i + 1)..nf {
                    let a = i * w + block_index(i, j) * q;
                    let b = j * w + block_index(j, i) * q;
                    for k in 0..q {
                        grad[a + k] = gs * x[b + k];
                        grad[b + k] = gs * x[a + k];
                    }
                }
            }
        }
        Interaction::Plain => {
            let (x, sum) = (&x[..nf * q], &sum[..q]);
            for (feature_grad, feature) in grad[..nf * q].chunks_exact_mut(q).zip(x.chunks_exact(q))
            {
                for ((gk, sk), vk) in feature_grad[..q].iter_mut().zip(sum).zip(&feature[..q]) {
                    *gk = gs * (*sk - *vk);
                }
            }
        }
    }
}

/// Everything one worker's share of a training call needs.
pub struct Share<'a, O: UpdateObserver> {
    pub layout: Layout,
    pub loss: Loss,
    pub bias: bool,
    pub tables: &'a [&'a EmbeddingTable],
    /// Labels and weights (its id columns are not read: the rows are
    /// resolved, and the observer's ids are `observed_ids`).
    pub events: &'a Events<'a>,
    /// The ids of the observed field, per event.
    pub observed_ids: &'a [u64],
    pub range: std::ops::Range<usize>,
    /// Resolved rows, one vector per field.
    pub rows: &'a [Vec<u32>],
    pub times: EventTimes<'a>,
    pub count_interactions: bool,
    pub global: &'a GlobalBias,
    /// Publish the global bias every this many events (None: only at the end).
    pub bias_sync: Option<usize>,
    /// The observed field and the span of its rows the observer sees.
    pub observed_field: usize,
    pub observed_span: (usize, usize),
    pub observer: &'a O,
    /// Keep each event's score computed before its own update (progressive
    /// validation), in `ShareTotals::scores`.
    pub scores: bool,
}

/// The time of each event of a call: given per event, or counted from the
/// model's event count before the call (an enum rather than a closure: the
/// per-event loop reads it without an indirect call).
#[derive(Clone, Copy, Debug)]
pub enum EventTimes<'a> {
    Given(&'a [i64]),
    Counted {
        base: i64,
    },
    /// Counted, for events picked from a call: position `p` is the call's
    /// event `order[p]` (`regroup::Picked`).
    Listed {
        base: i64,
        order: &'a [u32],
    },
}

impl EventTimes<'_> {
    /// The time of event `e`.
    #[inline(always)]
    pub fn at(&self, e: usize) -> i64 {
        match *self {
            EventTimes::Given(t) => t[e],
            EventTimes::Counted { base } => base + e as i64,
            EventTimes::Listed { base, order } => base + i64::from(order[e]),
        }
    }
}

/// What a worker's share returns.
#[derive(Clone, Debug, Default)]
pub struct ShareTotals {
    pub loss_sum: f64,
    pub weight_sum: f64,
    pub skipped: usize,
    /// With `Share::scores`: one score per event of the share, in order.
    pub scores: Vec<f32>,
}

impl ShareTotals {
    /// Add `t`'s sums to these and append its scores.
    pub fn add(&mut self, t: ShareTotals) {
        self.loss_sum += t.loss_sum;
        self.weight_sum += t.weight_sum;
        self.skipped += t.skipped;
        self.scores.extend_from_slice(&t.scores);
    }
}

/// The score of an event skipped for a feature not admitted yet, as
/// `FieldModel::score` gives it: a missing row is a zero vector with a zero
/// bias (the same operations in the same order as the loops, so the same
/// bits).
#[cold]
fn unadmitted_score<O: UpdateObserver>(s: &Share<'_, O>, e: usize, global_bias: f32) -> f32 {
    let l = s.layout;
    let w = l.row_dim;
    let mut x = vec![0.0f32; l.n_fields * w];
    let mut sum = vec![0.0f32; l.dim];
    let mut linear = global_bias;
    for (f, (t, r)) in s.tables.iter().zip(s.rows).enumerate() {
        let r = r[e];
        if r != MISSING {
            t.load_row(r, &mut x[f * w..(f + 1) * w]);
            if s.bias {
                linear += t.bias(r);
            }
        }
    }
    let score = l.interactions(&x, &mut sum);
    if s.bias {
        score + linear
    } else {
        score
    }
}

/// The worker's copy of the global bias and where it was last published.
struct LocalBias<'a> {
    shared: &'a GlobalBias,
    bias: f32,
    acc: f32,
    published: (f32, f32),
}

impl<'a> LocalBias<'a> {
    fn new(shared: &'a GlobalBias) -> Self {
        let (bias, acc) = shared.get();
        LocalBias {
            shared,
            bias,
            acc,
            published: (bias, acc),
        }
    }

    /// Adds this worker's steps since the last publish to the shared value
    /// and continues from the shared value.
    fn publish(&mut self) {
        let (b, a) = self
            .shared
            .add(self.bias - self.published.0, self.acc - self.published.1);
        (self.bias, self.acc) = (b, a);
        self.published = (b, a);
    }
}

/// Runs one worker's share: the fused loop when `dim` is a multiple of 4,
/// on AVX vectors of eight floats when the CPU has them and `dim` is a
/// multiple of 8, else on SSE vectors of four, with the widths compile-time
/// constants for the common shapes; the generic loop otherwise.
#[inline(never)]
pub fn run_share<O: UpdateObserver>(share: &Share<'_, O>, shard: &mut O::Shard) -> ShareTotals {
    let d = share.layout.dim;
    #[cfg(test)]
    let d = if FORCE_GENERIC.load(Relaxed) { 1 } else { d };
    if d % 4 != 0 {
        return generic(share, shard);
    }
    #[cfg(target_arch = "x86_64")]
    if d % 8 == 0 {
        if let Some(avx) = simd::avx() {
            // SAFETY: `avx` exists, so the CPU has AVX, the one feature
            // `shapes_avx` is compiled for.
            return unsafe { shapes_avx(share, shard, avx) };
        }
    }
    shapes(share, shard, Sse)
}

/// `shapes` compiled for AVX (the vector intrinsics of `F8` inline here).
/// SAFETY (callers): the CPU has AVX (an `Avx` exists).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[inline(never)]
unsafe fn shapes_avx<O: UpdateObserver>(
    share: &Share<'_, O>,
    shard: &mut O::Shard,
    isa: simd::Avx,
) -> ShareTotals {
    shapes(share, shard, isa)
}

/// The fused loop on vectors of `isa` for the layout's shape (`dim` a
/// multiple of 4 × `QUADS`): compile-time widths for the common shapes,
/// run-time ones otherwise. Widths are passed in `F4`s (four floats).
#[inline(always)]
fn shapes<I: Isa, O: UpdateObserver>(
    share: &Share<'_, O>,
    shard: &mut O::Shard,
    isa: I,
) -> ShareTotals {
    let l = share.layout;
    let (nf, q) = (l.n_fields, l.dim / 4);
    debug_assert_eq!(l.dim % (4 * I::V::QUADS), 0);
    // Blocks of one `F4` exist only on `Sse` (an `F8` is two).
    let one = I::V::QUADS == 1;
    use Interaction::{FieldAware as Ffm, Plain as Fm};
    let s = share;
    let i = isa;
    // Instances with the optimizer fixed at compile time (`StepPlan`) for
    // the default optimizer (Adagrad) and SGD, without l2 and max_norm, on
    // the shapes the benchmarks run (MF d = 32 and 64, FFM and FM with four
    // fields); every other case is the `General` instance of its shape.
    let all_fit = |fits: fn(&Optimizer) -> bool| s.tables.iter().all(|t| fits(t.optimizer()));
    // Not for an observer (the Monitor): with the plan its instance ran fewer
    // instructions but ~14% slower in wall time (`embcore bench`'s monitor
    // protocol alternated with the previous build: 4.3-4.6 against 5.1-5.3 M
    // events/s; with `General`, 5.96 against 5.83-6.06), so it keeps the
    // run-time optimizer.
    let plan = !O::OBSERVES;
    let (sgd, adagrad) = (
        plan && all_fit(PlainSgd::fits),
        plan && all_fit(PlainAdagrad::fits),
    );
    let (ps, pa) = (PlainSgd, PlainAdagrad);
    match (l.interaction, nf, q) {
        (Ffm, 2, 8) if sgd => fused(s, shard, i, ps, Fixed::<2>, Fixed::<8>, Fixed::<8>),
        (Ffm, 2, 8) if adagrad => fused(s, shard, i, pa, Fixed::<2>, Fixed::<8>, Fixed::<8>),
        (Ffm, 2, 16) if sgd => fused(s, shard, i, ps, Fixed::<2>, Fixed::<16>, Fixed::<16>),
        (Ffm, 2, 16) if adagrad => fused(s, shard, i, pa, Fixed::<2>, Fixed::<16>, Fixed::<16>),
        (Ffm, 4, 2) if adagrad => fused(s, shard, i, pa, Fixed::<4>, Fixed::<2>, Fixed::<6>),
        (Fm, 4, 8) if adagrad => fused(s, shard, i, pa, Fixed::<4>, Fixed::<8>, Fixed::<8>),
        // Matrix factorisation: two fields, one block per row.
        (Ffm, 2, 2) => fused(s, shard, i, General, Fixed::<2>, Fixed::<2>, Fixed::<2>),
        (Ffm, 2, 4) => fused(s, shard, i, General, Fixed::<2>, Fixed::<4>, Fixed::<4>),
        (Ffm, 2, 8) => fused(s, shard, i, General, Fixed::<2>, Fixed::<8>, Fixed::<8>),
        (Ffm, 2, 16) => fused(s, shard, i, General, Fixed::<2>, Fixed::<16>, Fixed::<16>),
        (Ffm, 2, q) => fused(s, shard, i, General, Fixed::<2>, Dyn(q), Dyn(q)),
        (Ffm, 3, 2) => fused(s, shard, i, General, Fixed::<3>, Fixed::<2>, Fixed::<4>),
        (Ffm, 4, 2) => fused(s, shard, i, General, Fixed::<4>, Fixed::<2>, Fixed::<6>),
        (Ffm, 5, 2) => fused(s, shard, i, General, Fixed::<5>, Fixed::<2>, Fixed::<8>),
        (Ffm, 4, 1) if one => fused(s, shard, i, General, Fixed::<4>, Fixed::<1>, Fixed::<3>),
        (Ffm, 4, 4) => fused(s, shard, i, General, Fixed::<4>, Fixed::<4>, Fixed::<12>),
        (Ffm, _, 1) if one => fused(s, shard, i, General, Dyn(nf), Fixed::<1>, Dyn(nf - 1)),
        (Ffm, _, 2) => fused(s, shard, i, General, Dyn(nf), Fixed::<2>, Dyn(2 * (nf - 1))),
        (Ffm, _, 4) => fused(s, shard, i, General, Dyn(nf), Fixed::<4>, Dyn(4 * (nf - 1))),
        (Ffm, _, 8) => fused(s, shard, i, General, Dyn(nf), Fixed::<8>, Dyn(8 * (nf - 1))),
        (Ffm, _, q) => fused(s, shard, i, General, Dyn(nf), Dyn(q), Dyn(q * (nf - 1))),
        (Fm, 4, 8) => fused(s, shard, i, General, Fixed::<4>, Fixed::<8>, Fixed::<8>),
        (Fm, _, 2) => fused(s, shard, i, General, Dyn(nf), Fixed::<2>, Fixed::<2>),
        (Fm, _, 4) => fused(s, shard, i, General, Dyn(nf), Fixed::<4>, Fixed::<4>),
        (Fm, _, 8) => fused(s, shard, i, General, Dyn(nf), Fixed::<8>, Fixed::<8>),
        (Fm, _, 16) => fused(s, shard, i, General, Dyn(nf), Fixed::<16>, Fixed::<16>),
        (Fm, _, q) => fused(s, shard, i, General, Dyn(nf), Dyn(q), Dyn(q)),
    }
}

/// The fused per-event loop: load the rows (as vectors of four floats),
/// score, gradients from the rows as loaded, the metadata of every row,
/// then per row one fused optimizer step (`simd::step_row`) and the bias step.
/// `block_width` is the block width and `row_width` the row width, in vectors.
/// (Inlined into `shapes` in release builds, where `isa`'s instructions are
/// enabled; not in debug builds, where every inlined instance kept stack
/// slots of its own and `shapes_avx` needed more than a test thread's 2 MB.)
#[cfg_attr(not(debug_assertions), inline(always))]
fn fused<P: StepPlan, I: Isa, N: Width, B: Width, R: Width, O: UpdateObserver>(
    s: &Share<'_, O>,
    shard: &mut O::Shard,
    isa: I,
    plan: P,
    n_fields: N,
    block_quads: B,
    row_quads: R,
) -> ShareTotals {
    // The table addresses rows in `F4`s (`row_quads`), the loop in vectors.
    let block_width = InVectors(block_quads, PhantomData::<I::V>);
    let row_width = InVectors(row_quads, PhantomData::<I::V>);
    let shape = VectorShape {
        isa,
        interaction: s.layout.interaction,
        n_fields,
        block_width,
    };
    let nf = n_fields.get();
    let w = row_width.get();
    #[cfg(test)]
    if P::KIND.is_some() {
        PLANNED_RUNS.with(|c| c.set(c.get() + 1));
    }
    debug_assert_eq!(
        (nf, 4 * block_quads.get(), 4 * row_quads.get()),
        (s.layout.n_fields, s.layout.dim, s.layout.row_dim)
    );
    // Slices ending at the share's end: the compiler then sees every `[e]` and
    // `[e + PREFETCH]` below is in bounds (and one indirection less per field).
    let end = s.range.end;
    let mut row_slices: [&[u32]; MAX_FIELDS] = [&[]; MAX_FIELDS];
    for (slot, r) in row_slices.iter_mut().zip(s.rows) {
        *slot = &r[..end];
    }
    let observed_ids = &s.observed_ids[..end];
    let (tables, rows) = (&s.tables[..nf], &row_slices[..nf]);
    let start = s.range.start;
    // The rows are addressed without bounds checks below: resolution gave
    // rows of the tables or MISSING, and the tables' rows are as wide as the
    // layout's, checked here once for the share.
    let (mut regions_local, mut regions_heap) = ([tables[0].regions(); LOCAL_FIELDS], Vec::new());
    let regions = per_field(&mut regions_local, &mut regions_heap, tables, |t| {
        t.regions()
    });
    assert!(
        regions.iter().zip(rows).all(|(g, r)| {
            g.row_width() == 4 * row_quads.get() && g.rows_in_range(&r[start..], MISSING)
        }),
        "resolved rows outside their table"
    );
    // Per-coordinate state (Adagrad): fixed by the plan, else as the table says.
    let mut with_state = [false; MAX_FIELDS];
    for (w, t) in with_state.iter_mut().zip(tables) {
        *w = P::KIND.map_or(t.state_width() > 0, |k| k.state_width(1) > 0);
    }
    let with_state = &with_state[..nf];
    let (obs_field, (obs_off, obs_len)) = (s.observed_field, s.observed_span);
    // Per-field state of the event on the stack (at most MAX_FIELDS): with a
    // compile-time field count the compiler keeps it in registers.
    let (mut row_of, mut counts) = ([0u32; MAX_FIELDS], [0u64; MAX_FIELDS]);
    // The event's rows, gradients, new row and FM sum: on the stack when the
    // widths are compile-time constants and small (the compiler then keeps
    // them in registers across the row stores, which it must assume write
    // any memory whose address escaped, such as the heap), else on the heap.
    let q = block_width.get();
    let on_stack = N::FIXED && R::FIXED && nf * w <= STACK_VECTORS;
    let mut stack = [[isa.zero(); STACK_VECTORS]; 4];
    let mut heap;
    let [x, grad, out, sum] = if on_stack {
        let [x, grad, out, sum] = &mut stack;
        [
            &mut x[..nf * w],
            &mut grad[..nf * w],
            &mut out[..w],
            &mut sum[..q],
        ]
    } else {
        heap = vec![isa.zero(); 2 * nf * w + w + q];
        let (x, rest) = heap.split_at_mut(nf * w);
        let (grad, rest) = rest.split_at_mut(nf * w);
        let (out, sum) = rest.split_at_mut(w);
        [x, grad, out, sum]
    };
    // Compile-time lengths when the widths are (fewer bounds checks).
    let (row_of, counts) = (&mut row_of[..nf], &mut counts[..nf]);
    let (x, grad) = (&mut x[..nf * w], &mut grad[..nf * w]);
    let (out, sum) = (&mut out[..w], &mut sum[..q]);
    // The cells of the event's rows, written in place (a row 0 always exists
    // in the reserved regions, so it is a valid placeholder).
    let mut cells_store: [RowCells<'_>; MAX_FIELDS] = [tables[0].row_cells(0); MAX_FIELDS];
    let cells = &mut cells_store[..nf];
    let opt = *tables[0].optimizer();
    // On the stack, not the heap (for up to LOCAL_FIELDS fields): the
    // compiler then knows the row stores do not change them and keeps them
    // in registers. (Made once per share; the closure inlines here, where
    // `isa`'s instructions are enabled.)
    let (mut prepared_local, mut prepared_heap) =
        ([Prepared::with(isa, &opt); LOCAL_FIELDS], Vec::new());
    let prepared = per_field(&mut prepared_local, &mut prepared_heap, tables, |t| {
        Prepared::with(isa, t.optimizer())
    });
    // The optimizer kind of every table (they are checked to be the same
    // kind where the plan fixes it).
    let kind_of = |t: &EmbeddingTable| P::KIND.unwrap_or(t.optimizer().kind);
    let (bias, labels) = (s.bias, &s.events.labels[..end]);
    let weights = s.events.weights.map(|w| &w[..end]);
    let mut global = LocalBias::new(s.global);
    let mut totals = ShareTotals::default();
    if s.scores {
        totals.scores.reserve_exact(end - start);
    }
    // Blocks of `bias_sync` events (one block with a single worker): the
    // global bias is published between blocks, no check per event.
    let block = s.bias_sync.unwrap_or(end - start).max(1);
    for block_start in (start..end).step_by(block) {
        for e in block_start..(block_start + block).min(end) {
            if e + PREFETCH < end {
                for ((g, r), &st) in regions.iter().zip(rows).zip(with_state) {
                    g.prefetch(r[e + PREFETCH], row_quads, st);
                }
            }
            let mut missing = false;
            for (slot, r) in row_of.iter_mut().zip(rows) {
                *slot = r[e];
                missing |= *slot == MISSING;
            }
            if missing {
                // A feature not admitted yet (lifecycle `min_count`): counted
                // on its table, the event is not trained on.
                totals.skipped += 1;
                if s.scores {
                    totals.scores.push(unadmitted_score(s, e, global.bias));
                }
                continue;
            }
            for ((((g, &r), loaded_row), cell), &st) in regions
                .iter()
                .zip(row_of.iter())
                .zip(x.chunks_exact_mut(w))
                .zip(cells.iter_mut())
                .zip(with_state)
            {
                // SAFETY: `r` is not MISSING (checked above), so below the
                // table's capacity, and the table's rows are `row_quads` F4s
                // wide (both asserted before the loop); `st` implies
                // per-coordinate state (Adagrad), which is as wide as the row.
                *cell = unsafe { g.cells(r, row_quads, st) };
                simd::load_row(isa, row_width, cell.weights, loaded_row);
            }
            let mut score = interactions_v(shape, x, sum);
            if bias {
                let mut linear = global.bias;
                for c in cells.iter() {
                    linear += unpack_bias(c.meta[meta::BIAS].load(Relaxed)).0;
                }
                score += linear;
            }
            if s.scores {
                totals.scores.push(score);
            }
            let wt = weights.map_or(1.0, |w| w[e]);
            let (loss, g) = s.loss.value_and_grad(score, labels[e]);
            totals.loss_sum += f64::from(wt * loss);
            totals.weight_sum += f64::from(wt);
            let g = g * wt;
            gradients_v(shape, x, sum, g, grad);
            let t_e = s.times.at(e);
            for ((n, t), c) in counts.iter_mut().zip(tables).zip(cells.iter()) {
                *n = t.touch_meta(c.meta, t_e, s.count_interactions);
            }
            for (f, ((((t, p), c), loaded_row), row_grad)) in tables
                .iter()
                .zip(prepared)
                .zip(cells.iter())
                .zip(x.chunks_exact(w))
                .zip(grad.chunks_exact_mut(w))
                .enumerate()
            {
                let step_cells = simd::StepCells {
                    weights: c.weights,
                    state: c.state,
                    row_acc: &c.meta[meta::ROW_ACC],
                };
                simd::step_row_planned(plan, p, row_width, step_cells, loaded_row, row_grad, out);
                if bias {
                    t.bias_step_meta_as(kind_of(t), c.meta, g);
                }
                if O::OBSERVES && f == obs_field {
                    s.observer.observe(
                        shard,
                        &RowUpdate {
                            id: observed_ids[e],
                            row: row_of[f],
                            interactions: counts[f],
                            first_seen: dec_time(c.meta[meta::FIRST_SEEN].load(Relaxed)),
                            timestamp: t_e,
                            before: &simd::as_floats(loaded_row)[obs_off..obs_off + obs_len],
                            after: &simd::as_floats(out)[obs_off..obs_off + obs_len],
                        },
                    );
                }
            }
            if bias {
                opt.step_scalar_as(kind_of(tables[0]), &mut global.bias, g, &mut global.acc);
            }
        }
        if bias && s.bias_sync.is_some() {
            global.publish();
        }
    }
    if bias {
        global.publish();
    }
    totals
}

/// The generic per-event loop (any `dim`; the fused path needs a multiple
/// of 4): `apply_step` per row.
#[inline(never)]
fn generic<O: UpdateObserver>(s: &Share<'_, O>, shard: &mut O::Shard) -> ShareTotals {
    let l = s.layout;
    let (nf, w) = (l.n_fields, l.row_dim);
    let tables = s.tables;
    let (obs_field, (obs_off, obs_len)) = (s.observed_field, s.observed_span);
    let mut x = vec![0.0f32; nf * w];
    let mut grad = vec![0.0f32; nf * w];
    let mut sum = vec![0.0f32; l.dim];
    let mut before = vec![0.0f32; obs_len];
    let mut scratch = vec![0.0f32; tables[0].state_width()];
    let opt = *tables[0].optimizer();
    let mut global = LocalBias::new(s.global);
    let mut totals = ShareTotals::default();
    let (start, end) = (s.range.start, s.range.end);
    if s.scores {
        totals.scores.reserve_exact(end - start);
    }
    // Blocks of `bias_sync` events (one block with a single worker): the
    // global bias is published between blocks, no check per event.
    let block = s.bias_sync.unwrap_or(end - start).max(1);
    for block_start in (start..end).step_by(block) {
        for e in block_start..(block_start + block).min(end) {
            if e + PREFETCH < end {
                for (t, r) in tables.iter().zip(s.rows) {
                    t.prefetch(r[e + PREFETCH]);
                }
            }
            if s.rows.iter().any(|r| r[e] == MISSING) {
                totals.skipped += 1;
                if s.scores {
                    totals.scores.push(unadmitted_score(s, e, global.bias));
                }
                continue;
            }
            for ((t, r), loaded_row) in tables.iter().zip(s.rows).zip(x.chunks_exact_mut(w)) {
                t.load_row(r[e], loaded_row);
            }
            let mut score = l.interactions(&x, &mut sum);
            if s.bias {
                let mut linear = global.bias;
                for (t, r) in tables.iter().zip(s.rows) {
                    linear += t.bias(r[e]);
                }
                score += linear;
            }
            if s.scores {
                totals.scores.push(score);
            }
            let wt = s.events.weights.map_or(1.0, |w| w[e]);
            let (loss, g) = s.loss.value_and_grad(score, s.events.labels[e]);
            totals.loss_sum += f64::from(wt * loss);
            totals.weight_sum += f64::from(wt);
            let g = g * wt;
            l.gradients(&x, &sum, g, &mut grad);
            let t_e = s.times.at(e);
            for (f, ((t, r), (loaded_row, row_grad))) in tables
                .iter()
                .zip(s.rows)
                .zip(x.chunks_exact_mut(w).zip(grad.chunks_exact_mut(w)))
                .enumerate()
            {
                let r = r[e];
                let observed = f == obs_field;
                if observed {
                    before.copy_from_slice(&loaded_row[obs_off..obs_off + obs_len]);
                }
                t.apply_step(r, loaded_row, row_grad, &mut scratch);
                if s.bias {
                    t.apply_bias_step(r, g);
                }
                let count = t.touch(r, t_e, s.count_interactions);
                if observed {
                    s.observer.observe(
                        shard,
                        &RowUpdate {
                            id: s.observed_ids[e],
                            row: r,
                            interactions: count,
                            first_seen: dec_time(t.meta(r)[meta::FIRST_SEEN].load(Relaxed)),
                            timestamp: t_e,
                            before: &before,
                            after: &loaded_row[obs_off..obs_off + obs_len],
                        },
                    );
                }
            }
            if s.bias {
                opt.step_scalar(&mut global.bias, g, &mut global.acc);
            }
        }
        if s.bias && s.bias_sync.is_some() {
            global.publish();
        }
    }
    if s.bias {
        global.publish();
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::optim::{Optimizer, OptimizerKind};
    use crate::storage::table::TableConfig;
    use crate::train::batch::Events;
    use crate::train::driver::TrainOptions;
    use crate::train::model::{FieldModel, Observed};
    use crate::train::observer::NoObserver;

    /// Every row (weights, state, metadata words) of two tables, as bits.
    fn table_bits(t: &EmbeddingTable) -> Vec<u64> {
        let mut out = Vec::new();
        for r in 0..t.len() as u32 {
            out.extend(t.row(r).iter().map(|a| u64::from(a.load(Relaxed))));
            out.extend(t.row_state(r).iter().map(|a| u64::from(a.load(Relaxed))));
            out.extend(t.meta(r).iter().map(|a| a.load(Relaxed)));
        }
        out
    }

    fn optimizers() -> Vec<Optimizer> {
        let mut v = Vec::new();
        for kind in [
            OptimizerKind::Sgd,
            OptimizerKind::Adagrad,
            OptimizerKind::RowWiseAdagrad,
        ] {
            for (l2, max_norm) in [(0.0, 0.0), (0.01, 0.0), (0.0, 0.3)] {
                v.push(Optimizer {
                    kind,
                    learning_rate: 0.2,
                    l2,
                    max_norm,
                    ..Default::default()
                });
            }
        }
        v
    }

    fn model(interaction: Interaction, nf: usize, dim: usize, opt: Optimizer) -> FieldModel {
        let mut t = TableConfig::new(dim);
        t.capacity = 64;
        t.optimizer = opt;
        FieldModel::new(FieldConfig {
            fields: (0..nf).map(|f| format!("f{f}")).collect(),
            interaction,
            table: t,
            loss: Loss::Logistic,
            bias: true,
        })
        .unwrap()
    }

    fn train(m: &FieldModel, cols: &[Vec<u64>], labels: &[f32], weights: &[f32], threads: usize) {
        train_scored(m, cols, labels, weights, threads, false);
    }

    fn train_scored(
        m: &FieldModel,
        cols: &[Vec<u64>],
        labels: &[f32],
        weights: &[f32],
        threads: usize,
        scores: bool,
    ) -> Vec<f32> {
        let columns: Vec<&[u64]> = cols.iter().map(|c| c.as_slice()).collect();
        let events = Events {
            columns: &columns,
            labels,
            weights: Some(weights),
            timestamps: None,
        };
        let opts = TrainOptions {
            threads,
            count_interactions: true,
            scores,
            observed: Observed {
                field: 1,
                against: None,
            },
        };
        m.train(&events, &m.cfg.fields, opts, &NoObserver)
            .unwrap()
            .scores
    }

    /// `scores` returns each event's score before its own update: one call
    /// equals scoring then training the events one at a time (up to the
    /// last bits of the global bias, which a one-event call publishes every
    /// event), on the fused and the generic loops; asking for scores does not
    /// change what is trained, bit for bit.
    #[test]
    fn scores_are_each_events_score_before_its_update() {
        let n = 400usize;
        let cols: Vec<Vec<u64>> = (0..3u64)
            .map(|f| {
                (0..n as u64)
                    .map(|k| crate::kernels::rng::hash2(f + 11, k) % (4 + 5 * f))
                    .collect()
            })
            .collect();
        let labels: Vec<f32> = (0..n).map(|k| (k % 3 == 0) as u8 as f32).collect();
        let weights: Vec<f32> = (0..n).map(|k| 0.5 + (k % 4) as f32 * 0.25).collect();
        let opt = optimizers()[3];
        for interaction in [Interaction::FieldAware, Interaction::Plain] {
            for (nf, dim) in [(2, 8), (3, 4), (2, 6), (3, 3)] {
                let what = format!("{interaction:?} nf={nf} dim={dim}");
                let (a, b, c) = (
                    model(interaction, nf, dim, opt),
                    model(interaction, nf, dim, opt),
                    model(interaction, nf, dim, opt),
                );
                for m in [&a, &b, &c] {
                    train(m, &cols[..nf], &labels, &weights, 1); // every id known
                }
                let got = train_scored(&a, &cols[..nf], &labels, &weights, 1, true);
                assert!(train_scored(&c, &cols[..nf], &labels, &weights, 1, false).is_empty());
                assert_eq!(table_bits(&a.tables[0]), table_bits(&c.tables[0]), "{what}");
                assert_eq!(a.global_bias().to_bits(), c.global_bias().to_bits());
                assert_eq!(got.len(), n, "{what}");
                for e in 0..n {
                    let one: Vec<Vec<u64>> = cols[..nf].iter().map(|c| vec![c[e]]).collect();
                    let slices: Vec<&[u64]> = one.iter().map(|c| c.as_slice()).collect();
                    let mut want = [0.0f32];
                    b.score(&slices, &b.cfg.fields, &mut want).unwrap();
                    let scored = train_scored(&b, &one, &labels[e..=e], &weights[e..=e], 1, true);
                    assert_eq!(scored[0].to_bits(), want[0].to_bits(), "{what} e={e}");
                    assert!((got[e] - want[0]).abs() < 1e-5, "{what} e={e}");
                }
            }
        }
    }

    /// The fused loops equal the generic loop bit for bit (every table's
    /// weights, state and metadata, and the global bias), for FFM (MF's
    /// two-field shapes included) and FM, every optimizer, fixed and run-time
    /// widths, on every instruction set the CPU has (SSE, and AVX for the
    /// widths that are multiples of 8).
    #[test]
    fn fused_loops_match_the_generic_loop() {
        #[cfg(target_arch = "x86_64")]
        let has_avx = simd::avx_detected().is_some();
        #[cfg(not(target_arch = "x86_64"))]
        let has_avx = false;
        if !has_avx {
            eprintln!("no AVX on this CPU: only the SSE loops are tested");
        }
        for sse in [true, false] {
            simd::FORCE_SSE.store(sse, Relaxed);
            fused_loops_match_the_generic_loop_on(simd::level());
            simd::FORCE_SSE.store(false, Relaxed);
            if !has_avx {
                break;
            }
        }
    }

    fn fused_loops_match_the_generic_loop_on(level: &str) {
        let n = 600usize;
        let cols: Vec<Vec<u64>> = (0..5u64)
            .map(|f| {
                (0..n as u64)
                    .map(|k| crate::kernels::rng::hash2(f, k) % (5 + 7 * f))
                    .collect()
            })
            .collect();
        let labels: Vec<f32> = (0..n).map(|k| (k % 3 == 0) as u8 as f32).collect();
        let weights: Vec<f32> = (0..n).map(|k| 0.5 + (k % 4) as f32 * 0.25).collect();
        let shapes = [
            (4, 8),
            (3, 4),
            (4, 12),
            (5, 8),
            (2, 16),
            (2, 8),
            (2, 32),
            (2, 64),
            (2, 12),
            (2, 24),
            (3, 16),
            (4, 16),
            (3, 24),
            (4, 32),
        ];
        for interaction in [Interaction::FieldAware, Interaction::Plain] {
            for (nf, dim) in shapes {
                for opt in optimizers() {
                    let fused = model(interaction, nf, dim, opt);
                    let planned_before = PLANNED_RUNS.with(std::cell::Cell::get);
                    train(&fused, &cols[..nf], &labels, &weights, 1);
                    let planned = PLANNED_RUNS.with(std::cell::Cell::get) > planned_before;
                    FORCE_GENERIC.store(true, Relaxed);
                    let generic = model(interaction, nf, dim, opt);
                    train(&generic, &cols[..nf], &labels, &weights, 1);
                    FORCE_GENERIC.store(false, Relaxed);
                    let what = format!("{level} {interaction:?} nf={nf} dim={dim} {opt:?}");
                    // The instances with the optimizer fixed at compile time
                    // run exactly where `shapes` says (and are checked here).
                    use OptimizerKind::{Adagrad, Sgd};
                    let specialised = opt.l2 == 0.0
                        && opt.max_norm == 0.0
                        && matches!(
                            (interaction, nf, dim, opt.kind),
                            (Interaction::FieldAware, 2, 32 | 64, Sgd | Adagrad)
                                | (Interaction::FieldAware, 4, 8, Adagrad)
                                | (Interaction::Plain, 4, 32, Adagrad)
                        );
                    assert_eq!(planned, specialised, "{what}");
                    assert_eq!(
                        fused.global_bias().to_bits(),
                        generic.global_bias().to_bits(),
                        "{what}"
                    );
                    for (ta, tb) in fused.tables.iter().zip(&generic.tables) {
                        assert_eq!(table_bits(ta), table_bits(tb), "{what}");
                    }
                }
            }
        }
    }
}
