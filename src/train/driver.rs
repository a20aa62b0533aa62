//! The one training driver: validation, capacity, pins, id resolution, the
//! fan-out of the per-event kernel over workers, reductions and statistics,
//! for every model.
//!
//! Design notes.
//! * Everything is validated, and the capacity of every field's table is
//!   checked, before the first row is created: a failing call changes
//!   nothing (no row, no version, no event count).
//! * Hogwild across threads, with the observed field's rows owned: each
//!   worker trains, in event order, the events whose observed-field row
//!   (MF's item) it owns (`regroup`: heavy rows balanced between workers),
//!   so every such row gets its updates in event order from one worker, as
//!   with one thread; the other fields' rows are shared, and two workers
//!   updating one may lose a coordinate update (the accepted staleness).
//!   The global bias is shared too (see `GlobalBias`): workers publish
//!   their steps every `BIAS_SYNC` events. With one worker the result is
//!   the sequential one.
//! * Workers are capped by the work (`kernels::parallel::workers`): a call
//!   never starts more threads than it has chunks of events worth a thread.
//! * Observers get one shard per worker, filled without locks on the
//!   per-event path and absorbed once at the end of the worker's events.

use crate::error::{out_of_range, Result};
use crate::kernels::parallel::{fan_out, workers};
use crate::storage::table::EmbeddingTable;
use crate::train::batch::Events;
use crate::train::kernel::{run_share, EventTimes, Layout, Share, ShareTotals};
use crate::train::model::{FieldModel, Observed, TrainStats};
use crate::train::observer::UpdateObserver;
use crate::train::regroup::{Owners, Picked};
use crate::train::resolve::{resolve_columns, MISSING};
use std::sync::atomic::Ordering::Relaxed;

/// Events between two publications of a worker's global-bias steps (with
/// more than one worker).
pub const BIAS_SYNC: usize = 256;
/// Events a worker of a multi-worker call walks at a time, picking those it
/// owns (`regroup`): its buffers then stay small and are reused.
const REGROUP_CHUNK: usize = 1 << 16;

/// How one training call runs.
#[derive(Clone, Copy, Debug)]
pub struct TrainOptions {
    /// Worker threads asked for (capped by the work).
    pub threads: usize,
    /// Count each event as an interaction of its rows.
    pub count_interactions: bool,
    /// The vector the observer sees.
    pub observed: Observed,
    /// Return each event's score computed before its own update
    /// (`TrainStats::scores`): progressive validation in the training pass.
    /// Exact per event with one worker. With more, the workers' shares run
    /// side by side, so an event's score is the model's just before its step
    /// in that interleaved order (event `k` of a share has seen about `k`
    /// events of every other share, not the events before it in the call),
    /// minus the Hogwild staleness: another worker's step on a shared row
    /// still in flight, and the global-bias steps of other workers' last
    /// `BIAS_SYNC` events.
    pub scores: bool,
}

impl FieldModel {
    /// Train on a batch of events, one optimizer step per event, in order
    /// within each worker's share (more than one worker: Hogwild).
    /// `column_names` name the id columns in messages.
    pub fn train<O: UpdateObserver>(
        &self,
        events: &Events<'_>,
        column_names: &[String],
        options: TrainOptions,
        observer: &O,
    ) -> Result<TrainStats> {
        let n = events.validate(column_names, self.cfg.loss)?;
        if options.threads == 0 {
            return Err(out_of_range("threads", 0, "an integer >= 1"));
        }
        let span = self.observed_span(options.observed)?;
        let tables: Vec<&EmbeddingTable> = self.tables.iter().map(|t| &**t).collect();
        // The right to create rows in every table, held from the capacity
        // check to the end of the resolution: a concurrent call cannot take
        // the room this one checked (fields in order: no deadlock).
        let creating: Vec<_> = tables.iter().map(|t| t.creation()).collect();
        // Pin every table for the call (evicted rows are not reused under
        // us); once the ids are looked up and every table's room checked,
        // the pins tag the rows the call changes with a new version.
        let mut pins: Vec<_> = tables.iter().map(|t| t.pin()).collect();
        let base = self.events_seen.load(Relaxed) as i64;
        let times = match events.timestamps {
            Some(t) => EventTimes::Given(t),
            None => EventTimes::Counted { base },
        };
        let time_of = |e: usize| times.at(e);
        let resolved = resolve_columns(
            &tables,
            events.columns,
            &self.cfg.fields,
            &mut pins,
            &time_of,
            options.threads,
        )?;
        let mut rows = Vec::with_capacity(tables.len());
        let mut new_rows = Vec::with_capacity(tables.len());
        for (t, (r, created)) in tables.iter().zip(resolved) {
            if t.admission().is_some() {
                t.count_unadmitted(r.iter().filter(|&&x| x == MISSING).count() as u64);
            }
            rows.push(r);
            new_rows.push(created);
        }
        drop(creating);
        self.events_seen.fetch_add(n as u64, Relaxed);
        if n == 0 {
            return Ok(TrainStats {
                new_rows,
                ..Default::default()
            });
        }
        let workers = workers(n, options.threads);
        // The whole call's share; a worker's chunks replace its events.
        let whole = Share {
            layout: Layout::of(&self.cfg),
            loss: self.cfg.loss,
            bias: self.cfg.bias,
            tables: &tables,
            events,
            observed_ids: events.columns[options.observed.field],
            range: 0..n,
            rows: &rows,
            times,
            count_interactions: options.count_interactions,
            global: &self.global,
            bias_sync: (workers > 1).then_some(BIAS_SYNC),
            observed_field: options.observed.field,
            observed_span: span,
            observer,
            scores: options.scores,
        };
        // One worker trains the call's events in order. More: each trains
        // the events of the observed field's rows it owns (`regroup`), so no
        // row of that field is written by two cores.
        let results: Vec<(ShareTotals, Vec<u32>)> = if workers == 1 {
            let mut shard = observer.new_shard();
            let totals = run_share(&whole, &mut shard);
            observer.absorb(shard);
            vec![(totals, Vec::new())]
        } else {
            let field = options.observed.field;
            let owners = Owners::of(&rows[field], workers);
            fan_out("train", (0..workers).collect(), |me| {
                let mut shard = observer.new_shard();
                let mut mine = ShareTotals::default();
                let mut order = Vec::new();
                let mut picked = Picked::default();
                for start in (0..n).step_by(REGROUP_CHUNK) {
                    let chunk = start..(start + REGROUP_CHUNK).min(n);
                    picked.pick(events, &rows, times, (field, field, &owners, me), chunk);
                    let chunk_events = Events {
                        columns: &[],
                        labels: &picked.labels,
                        weights: picked.weights.as_deref(),
                        timestamps: None,
                    };
                    let s = Share {
                        events: &chunk_events,
                        observed_ids: &picked.observed_ids,
                        range: 0..picked.len(),
                        rows: &picked.rows,
                        times: picked.times(times),
                        ..whole
                    };
                    mine.add(run_share(&s, &mut shard));
                    if options.scores {
                        order.extend_from_slice(&picked.order);
                    }
                }
                observer.absorb(shard);
                (mine, order)
            })?
        };
        let (mut loss_sum, mut weight_sum, mut skipped) = (0.0, 0.0, 0);
        let mut scores = Vec::new();
        if options.scores && workers > 1 {
            scores = vec![0.0; n];
        }
        for (r, order) in results {
            loss_sum += r.loss_sum;
            weight_sum += r.weight_sum;
            skipped += r.skipped;
            if workers == 1 {
                scores = r.scores;
            } else {
                // Each worker's scores, back in event order.
                for (&e, &v) in order.iter().zip(&r.scores) {
                    scores[e as usize] = v;
                }
            }
        }
        Ok(TrainStats {
            events: n,
            mean_loss: if weight_sum > 0.0 {
                loss_sum / weight_sum
            } else {
                0.0
            },
            new_rows,
            unadmitted_events: skipped,
            scores,
        })
    }
}
