//! A multi-worker call's events regrouped so that each worker owns the
//! rows of one field (the observed one: MF's items).
//!
//! Design note. Split into contiguous shares, both workers of a call train
//! the popular items: with items drawn Zipf(1.2) the hottest row takes about
//! a fifth of the events, and every update of it by one core takes its cache
//! lines (weights, optimizer state, metadata) away from the other. Reordered
//! so that the two halves had disjoint items, the same events trained 1.80-
//! 2.09 times faster on 2 threads than on 1 (median 1.87, 5 alternated
//! rounds) against 1.06-1.82 (median 1.58) for contiguous shares.
//!
//! So a call with more than one worker first gives each row of the field an
//! owner: the rows that a sample of the events shows to be heavy (at least
//! `1 / (HEAVY_SHARE × workers)` of the sampled events) go, heaviest first,
//! to the least loaded worker; every other row goes by a hash of its index.
//! Each worker then walks the whole call a chunk at a time, gathers the
//! chunk's events it owns, in event order, into buffers of its own (reused:
//! no fresh pages per chunk; a first version that gathered the whole call
//! at once spent more in page faults than the regrouping saved) and trains
//! them. The workers never wait for each other. Every row of the
//! field is thus updated by one worker only, in event order, as one thread
//! would; the other fields' rows are shared as before (Hogwild). The owners
//! depend on the events only, never on thread timing. One worker: nothing
//! is regrouped, results stay bit-identical.

use crate::train::batch::Events;
use crate::train::kernel::EventTimes;
use crate::train::resolve::MISSING;

/// About this many events, evenly spaced, are sampled to find the heavy rows
/// (a fixed cost per call: a row holding 1 % of the events is seen ~330
/// times, so its share is known to within ~6 %).
const SAMPLE: usize = 1 << 15;
/// A row is heavy when it holds at least 1 / (HEAVY_SHARE × workers) of the
/// sampled events (so at most HEAVY_SHARE × workers heavy rows).
const HEAVY_SHARE: usize = 64;

/// Which worker owns each row of the regrouping field.
pub struct Owners {
    workers: u64,
    /// Heavy rows and their owners, direct-mapped by `spread` (`MISSING` =
    /// empty; a heavy row whose slot is taken by a heavier one is light).
    heavy: Vec<(u32, u32)>,
    shift: u32,
}

#[inline(always)]
fn spread(r: u32) -> u32 {
    r.wrapping_mul(0x9E37_79B1)
}

impl Owners {
    /// Owners for a call whose field rows are `rows`, for `workers` >= 1.
    pub fn of(rows: &[u32], workers: usize) -> Self {
        let workers = workers.max(1);
        let mut sample: Vec<u32> = rows
            .iter()
            .step_by((rows.len() / SAMPLE).max(1))
            .copied()
            .filter(|&r| r != MISSING)
            .collect();
        sample.sort_unstable();
        let threshold = (sample.len() / (HEAVY_SHARE * workers)).max(2);
        let mut runs: Vec<(usize, u32)> = Vec::new();
        let mut k = 0;
        while k < sample.len() {
            let r = sample[k];
            let run = sample[k..].partition_point(|&x| x == r);
            if run >= threshold {
                runs.push((run, r));
            }
            k += run;
        }
        // Heaviest first (ties by row, so the owners are a function of the
        // events), each to the least loaded worker; the light rows are
        // spread evenly by hash, so every worker starts with their share.
        runs.sort_unstable_by(|a, b| b.cmp(a));
        let bits = (8 * runs.len())
            .next_power_of_two()
            .max(64)
            .trailing_zeros();
        let mut heavy = vec![(MISSING, 0u32); 1 << bits];
        let shift = 32 - bits;
        let mut placed = Vec::with_capacity(runs.len());
        for &(count, r) in &runs {
            let slot = &mut heavy[(spread(r) >> shift) as usize];
            if slot.0 == MISSING {
                slot.0 = r;
                placed.push((count, r));
            }
        }
        let heavy_total: usize = placed.iter().map(|&(c, _)| c).sum();
        let light = (sample.len() - heavy_total) / workers;
        let mut load = vec![light; workers];
        for &(count, r) in &placed {
            let w = (0..workers).min_by_key(|&w| (load[w], w)).unwrap_or(0);
            load[w] += count;
            heavy[(spread(r) >> shift) as usize].1 = w as u32;
        }
        Owners {
            workers: workers as u64,
            heavy,
            shift,
        }
    }

    /// The worker that owns row `r` (`MISSING` too has one). No branch.
    #[inline(always)]
    pub fn owner(&self, r: u32) -> usize {
        let h = spread(r);
        let (k, w) = self.heavy[(h >> self.shift) as usize];
        // The high bits of the product: the low ones of a row index times an
        // odd constant follow the index's own low bits.
        let light = ((u64::from(h) * self.workers) >> 32) as u32;
        (if k == r { w } else { light }) as usize
    }
}

/// The events of one chunk of a call that one worker owns (by the rows of
/// one field), gathered in event order into buffers reused chunk after
/// chunk: position `p` holds event `order[p]` of the call. Only what the
/// training loop reads is gathered: the resolved rows, the labels and
/// weights, the observed field's ids and given timestamps (counted ones
/// are read through `order`).
#[derive(Default)]
pub struct Picked {
    pub order: Vec<u32>,
    pub observed_ids: Vec<u64>,
    pub labels: Vec<f32>,
    pub weights: Option<Vec<f32>>,
    given_times: Vec<i64>,
    pub rows: Vec<Vec<u32>>,
}

impl Picked {
    /// Replace the contents with the events of `range` (of `events`, whose
    /// resolved rows are `rows`, one vector per field, and times `times`)
    /// whose row of field `field` worker `me` owns; `observed` is the field
    /// whose ids the observer sees. `events` holds fewer than 2^32 events.
    pub fn pick(
        &mut self,
        events: &Events<'_>,
        rows: &[Vec<u32>],
        times: EventTimes<'_>,
        (field, observed, owners, me): (usize, usize, &Owners, usize),
        range: std::ops::Range<usize>,
    ) {
        // Branch-free: every event is written, the length advances over
        // the worker's own.
        let key = &rows[field][range.clone()];
        self.order.resize(key.len(), 0);
        let mut len = 0;
        for (e, &r) in key.iter().enumerate() {
            self.order[len] = (range.start + e) as u32;
            len += usize::from(owners.owner(r) == me);
        }
        self.order.truncate(len);
        let order = &self.order;
        fn gather<T: Copy>(out: &mut Vec<T>, src: &[T], order: &[u32]) {
            out.clear();
            out.extend(order.iter().map(|&e| src[e as usize]));
        }
        gather(&mut self.observed_ids, events.columns[observed], order);
        self.rows.resize_with(rows.len(), Vec::new);
        for (out, r) in self.rows.iter_mut().zip(rows) {
            gather(out, r, order);
        }
        gather(&mut self.labels, events.labels, order);
        match events.weights {
            Some(w) => gather(self.weights.get_or_insert_with(Vec::new), w, order),
            None => self.weights = None,
        }
        self.given_times.clear();
        if !matches!(times, EventTimes::Counted { .. }) {
            let at = order.iter().map(|&e| times.at(e as usize));
            self.given_times.extend(at);
        }
    }

    /// The picked events' times, for a call whose times are `call`.
    pub fn times(&self, call: EventTimes<'_>) -> EventTimes<'_> {
        match call {
            EventTimes::Counted { base } => EventTimes::Listed {
                base,
                order: &self.order,
            },
            _ => EventTimes::Given(&self.given_times),
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::rng::hash2;

    fn zipf_rows(n: usize, seed: u64) -> Vec<u32> {
        (0..n as u64)
            .map(|k| {
                let u = (hash2(seed, k) >> 11) as f64 / (1u64 << 53) as f64;
                ((u.max(1e-12).powf(-5.0) as u64).saturating_sub(1) % 100_000) as u32
            })
            .collect()
    }

    /// Zipf rows: the hottest row (about a fifth of the events) has one
    /// owner, and the workers' loads are within a few percent of each other.
    #[test]
    fn heavy_rows_are_placed_so_that_the_loads_balance() {
        for workers in [2usize, 3, 4] {
            let rows = zipf_rows(400_000, workers as u64);
            let o = Owners::of(&rows, workers);
            let mut load = vec![0usize; workers];
            for &r in &rows {
                load[o.owner(r)] += 1;
            }
            let (lo, hi) = (load.iter().min().unwrap(), load.iter().max().unwrap());
            assert!(
                *hi as f64 / *lo as f64 <= 1.1,
                "{workers} workers: {load:?}"
            );
            // A hash alone would leave the hottest row's worker with more.
            let hot = rows.iter().filter(|&&r| r == 0).count();
            assert!(hot * 8 > rows.len(), "the test's rows are skewed ({hot})");
        }
    }

    /// Picked chunk by chunk, the workers' events cover every event once,
    /// each worker's hold exactly the rows it owns, in event order, with
    /// their own ids, rows, labels, weights and times.
    #[test]
    fn picking_is_a_stable_partition_by_owner() {
        let n = 50_000;
        let items = zipf_rows(n, 9);
        let users: Vec<u32> = (0..n as u64)
            .map(|k| (hash2(3, k) % 7_000) as u32)
            .collect();
        let ids: Vec<Vec<u64>> = [&users, &items]
            .iter()
            .map(|r| r.iter().map(|&x| u64::from(x) * 31 + 5).collect())
            .collect();
        let cols: Vec<&[u64]> = ids.iter().map(Vec::as_slice).collect();
        let labels: Vec<f32> = (0..n).map(|k| (k % 5) as f32 / 4.0).collect();
        let weights: Vec<f32> = (0..n).map(|k| 1.0 + (k % 3) as f32).collect();
        let events = Events {
            columns: &cols,
            labels: &labels,
            weights: Some(&weights),
            timestamps: None,
        };
        let rows = vec![users.clone(), items.clone()];
        let given: Vec<i64> = (0..n as i64).map(|e| 1_000 + e).collect();
        let owners = Owners::of(&items, 2);
        let mut p = Picked::default();
        for times in [
            EventTimes::Counted { base: 1_000 },
            EventTimes::Given(&given),
        ] {
            let mut seen = vec![false; n];
            for me in 0..2 {
                let mut last = None;
                for start in (0..n).step_by(7_000) {
                    let range = start..(start + 7_000).min(n);
                    p.pick(&events, &rows, times, (1, 0, &owners, me), range);
                    let picked_times = p.times(times);
                    for k in 0..p.len() {
                        let e = p.order[k] as usize;
                        assert!(!seen[e] && (start..start + 7_000).contains(&e));
                        seen[e] = true;
                        assert!(last < Some(e), "event order kept");
                        last = Some(e);
                        assert_eq!(owners.owner(items[e]), me);
                        assert_eq!((p.rows[0][k], p.rows[1][k]), (users[e], items[e]));
                        assert_eq!(p.observed_ids[k], ids[0][e]);
                        let w = p.weights.as_ref().unwrap()[k];
                        let t = picked_times.at(k);
                        assert_eq!(
                            (p.labels[k], w, t),
                            (labels[e], weights[e], 1_000 + e as i64)
                        );
                    }
                }
            }
            assert!(seen.iter().all(|&s| s));
        }
    }

    /// With no row shared but the observed field's (every event a user of
    /// its own, no biases), two workers give every item row and every score
    /// the one-thread call's bits, over several chunks: each item's updates
    /// run in one worker, in event order. (Contiguous shares split a hot
    /// item's updates between the workers, in another order.)
    #[test]
    fn two_workers_update_each_item_as_one_thread_does() {
        use crate::kernels::optim::{Optimizer, OptimizerKind};
        use crate::storage::table::TableConfig;
        use crate::train::driver::TrainOptions;
        use crate::train::loss::Loss;
        use crate::train::mf::{self, MfConfig};
        use crate::train::observer::NoObserver;
        use std::sync::atomic::Ordering::Relaxed;
        let n = 150_000;
        let items: Vec<u64> = zipf_rows(n, 4)
            .iter()
            .map(|&r| u64::from(r) * 3 + 1)
            .collect();
        let users: Vec<u64> = (0..n as u64).map(|k| k * 7 + 2).collect();
        let labels: Vec<f32> = (0..n as u64)
            .map(|k| (hash2(8, k) % 3 == 0) as u8 as f32)
            .collect();
        let cols: [&[u64]; 2] = [&users, &items];
        let events = Events {
            columns: &cols,
            labels: &labels,
            weights: None,
            timestamps: None,
        };
        let names = mf::column_names();
        for kind in [OptimizerKind::Sgd, OptimizerKind::Adagrad] {
            let run = |threads: usize| {
                let mut table = TableConfig::new(8);
                table.optimizer = Optimizer {
                    kind,
                    ..Default::default()
                };
                let cfg = MfConfig {
                    table,
                    loss: Loss::Logistic,
                    bias: false,
                };
                let m = mf::new(cfg, None, None).unwrap();
                let opts = TrainOptions {
                    threads,
                    count_interactions: true,
                    observed: mf::OBSERVED,
                    scores: true,
                };
                let stats = m.train(&events, &names, opts, &NoObserver).unwrap();
                let t = &m.tables[1];
                let g = t.guard();
                let mut rows: Vec<(u64, Vec<u32>)> = Vec::new();
                for &id in &items {
                    let r = g.get(id).unwrap();
                    let bits = t
                        .row(r)
                        .iter()
                        .chain(t.row_state(r))
                        .map(|a| a.load(Relaxed));
                    rows.push((id, bits.collect()));
                }
                let scores: Vec<u32> = stats.scores.iter().map(|s| s.to_bits()).collect();
                (scores, rows)
            };
            let (one, two) = (run(1), run(2));
            assert_eq!(one.0.len(), n);
            assert!(one.0 == two.0, "{kind:?}: scores differ");
            assert!(one.1 == two.1, "{kind:?}: item rows differ");
        }
    }
}
