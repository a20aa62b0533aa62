//! The one global-bias implementation, shared by every model.

use crate::storage::table::f32_load;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// The global bias and its Adagrad accumulator, shared by every event.
///
/// Hogwild means one step per event on shared parameters, the bias
/// included. Updating one shared cell from every thread on every event would
/// bounce its cache line between cores, so each worker steps a private copy
/// and adds its change to the shared value every `driver::BIAS_SYNC` events
/// (and at the end), then continues from the shared value: every event's
/// step lands on the shared bias, seen by other workers at most
/// `BIAS_SYNC` events late. (Summing whole-call deltas instead, as the first
/// version did, applied each worker's full trajectory on top of the
/// others': with 4 threads the bias came out 4x too far.)
#[derive(Debug)]
pub struct GlobalBias {
    bias: AtomicU32,
    acc: AtomicU32,
}

impl GlobalBias {
    pub fn new(bias: f32, acc: f32) -> Self {
        GlobalBias {
            bias: AtomicU32::new(bias.to_bits()),
            acc: AtomicU32::new(acc.to_bits()),
        }
    }

    /// (bias, accumulator).
    pub fn get(&self) -> (f32, f32) {
        (f32_load(&self.bias), f32_load(&self.acc))
    }

    /// Set both cells (a serving copy catching up with its source).
    pub fn set(&self, bias: f32, acc: f32) {
        self.bias.store(bias.to_bits(), Relaxed);
        self.acc.store(acc.to_bits(), Relaxed);
    }

    /// Set the accumulator (an optimizer reset), keeping the bias.
    pub fn set_acc(&self, acc: f32) {
        self.acc.store(acc.to_bits(), Relaxed);
    }

    /// Add `delta` to both cells atomically (one compare-exchange loop per
    /// cell); returns the new (bias, accumulator).
    pub fn add(&self, delta_bias: f32, delta_acc: f32) -> (f32, f32) {
        let add = |cell: &AtomicU32, d: f32| {
            let mut cur = cell.load(Relaxed);
            loop {
                let new = (f32::from_bits(cur) + d).to_bits();
                match cell.compare_exchange_weak(cur, new, Relaxed, Relaxed) {
                    Ok(_) => return f32::from_bits(new),
                    Err(v) => cur = v,
                }
            }
        };
        (add(&self.bias, delta_bias), add(&self.acc, delta_acc))
    }
}
