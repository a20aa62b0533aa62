//! Optimizers applied to one embedding row at a time.
//!
//! All hyper-parameters are validated once, when a table is configured, so
//! the per-event path has no checks left to make.

use crate::error::{config, out_of_range, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizerKind {
    /// Plain stochastic gradient descent.
    Sgd,
    /// Adagrad with one accumulator per coordinate.
    Adagrad,
    /// Adagrad with one accumulator per row (mean of squared gradients).
    RowWiseAdagrad,
}

impl OptimizerKind {
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "sgd" => Ok(OptimizerKind::Sgd),
            "adagrad" => Ok(OptimizerKind::Adagrad),
            "rowwiseadagrad" | "rowadagrad" => Ok(OptimizerKind::RowWiseAdagrad),
            _ => Err(config(format!(
                "unknown optimizer {name:?}; choose 'sgd', 'adagrad' or 'rowwise_adagrad'"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Adagrad => "adagrad",
            OptimizerKind::RowWiseAdagrad => "rowwise_adagrad",
        }
    }

    pub fn code(self) -> u8 {
        match self {
            OptimizerKind::Sgd => 0,
            OptimizerKind::Adagrad => 1,
            OptimizerKind::RowWiseAdagrad => 2,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(OptimizerKind::Sgd),
            1 => Some(OptimizerKind::Adagrad),
            2 => Some(OptimizerKind::RowWiseAdagrad),
            _ => None,
        }
    }

    /// Accumulator floats kept per row in the per-coordinate state array.
    pub fn state_width(self, dim: usize) -> usize {
        match self {
            OptimizerKind::Adagrad => dim,
            OptimizerKind::Sgd | OptimizerKind::RowWiseAdagrad => 0,
        }
    }
}

/// Optimizer configuration shared by every row of a table.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Optimizer {
    pub kind: OptimizerKind,
    pub learning_rate: f32,
    /// L2 penalty added to the gradient of every updated row: `grad += l2 * w`.
    pub l2: f32,
    /// Rows are rescaled to this l2-norm after an update that exceeds it; 0 = off.
    pub max_norm: f32,
    /// Adagrad: added to sqrt(accumulator) in the denominator.
    pub eps: f32,
    /// Adagrad: starting value of every accumulator.
    pub initial_accumulator: f32,
}

impl Default for Optimizer {
    fn default() -> Self {
        Optimizer {
            kind: OptimizerKind::Adagrad,
            learning_rate: 0.05,
            l2: 0.0,
            max_norm: 0.0,
            eps: 1e-8,
            initial_accumulator: 0.1,
        }
    }
}

/// Upper bounds of the optimizer settings: with every setting and value in
/// range, one step on a row of finite values stays finite in f32 (the
/// largest product a step forms is far below f32::MAX ~ 3.4e38).
pub const MAX_LEARNING_RATE: f32 = 100.0;
pub const MAX_L2: f32 = 100.0;
pub const MAX_NORM_BOUND: f32 = 1e6;
pub const MAX_EPS: f32 = 1.0;
pub const MAX_INITIAL_ACCUMULATOR: f32 = 1e6;

/// `v` must be finite, above `min` (strictly when `strict`) and <= `max`.
pub fn check_range(name: &str, v: f32, min: f32, strict: bool, max: f32) -> Result<()> {
    let ok = v.is_finite() && (if strict { v > min } else { v >= min }) && v <= max;
    if ok {
        Ok(())
    } else {
        let open = if strict { "(" } else { "[" };
        Err(out_of_range(
            name,
            v,
            format!("a finite number in {open}{min}, {max:e}]"),
        ))
    }
}

impl Optimizer {
    pub fn validate(&self) -> Result<()> {
        check_range(
            "learning_rate",
            self.learning_rate,
            0.0,
            true,
            MAX_LEARNING_RATE,
        )?;
        check_range("l2", self.l2, 0.0, false, MAX_L2)?;
        check_range("max_norm", self.max_norm, 0.0, false, MAX_NORM_BOUND)?;
        check_range("eps", self.eps, 0.0, true, MAX_EPS)?;
        check_range(
            "initial_accumulator",
            self.initial_accumulator,
            0.0,
            false,
            MAX_INITIAL_ACCUMULATOR,
        )?;
        if self.kind != OptimizerKind::Sgd && self.initial_accumulator == 0.0 && self.eps < 1e-12 {
            return Err(config(
                "adagrad with initial_accumulator=0 needs eps >= 1e-12",
            ));
        }
        Ok(())
    }

    /// One step on a row held in `w` (updated in place) given the loss
    /// gradient `grad` (overwritten with the full gradient including L2).
    /// `acc` is the per-coordinate state (Adagrad) and `row_acc` the per-row
    /// state (row-wise Adagrad); unused ones are ignored.
    #[inline(always)]
    pub fn step(&self, w: &mut [f32], grad: &mut [f32], acc: &mut [f32], row_acc: &mut f32) {
        let lr = self.learning_rate;
        if self.l2 > 0.0 {
            for (g, x) in grad.iter_mut().zip(w.iter()) {
                *g += self.l2 * *x;
            }
        }
        match self.kind {
            OptimizerKind::Sgd => {
                for (x, g) in w.iter_mut().zip(grad.iter()) {
                    *x -= lr * *g;
                }
            }
            OptimizerKind::Adagrad => {
                for ((x, g), a) in w.iter_mut().zip(grad.iter()).zip(acc.iter_mut()) {
                    *a += *g * *g;
                    *x -= lr * *g / (a.sqrt() + self.eps);
                }
            }
            OptimizerKind::RowWiseAdagrad => {
                let mean_sq = dot(grad, grad) / grad.len().max(1) as f32;
                *row_acc += mean_sq;
                let scale = lr / (row_acc.sqrt() + self.eps);
                for (x, g) in w.iter_mut().zip(grad.iter()) {
                    *x -= scale * *g;
                }
            }
        }
        if self.max_norm > 0.0 {
            let norm = dot(w, w).sqrt();
            if norm > self.max_norm {
                let s = self.max_norm / norm;
                for x in w.iter_mut() {
                    *x *= s;
                }
            }
        }
    }

    /// One step on a scalar parameter (a bias) with its own accumulator.
    /// Biases are not L2-penalised and not norm-clipped.
    #[inline(always)]
    pub fn step_scalar(&self, b: &mut f32, g: f32, acc: &mut f32) {
        self.step_scalar_as(self.kind, b, g, acc)
    }

    /// `step_scalar` given `kind`, this optimizer's kind (a loop that knows
    /// it at compile time passes a constant: no `match` per step).
    #[inline(always)]
    pub fn step_scalar_as(&self, kind: OptimizerKind, b: &mut f32, g: f32, acc: &mut f32) {
        debug_assert_eq!(kind, self.kind);
        match kind {
            OptimizerKind::Sgd => *b -= self.learning_rate * g,
            OptimizerKind::Adagrad | OptimizerKind::RowWiseAdagrad => {
                *acc += g * g;
                *b -= self.learning_rate * g / (acc.sqrt() + self.eps);
            }
        }
    }
}

/// Dot product with eight independent partial sums, so that it vectorises
/// (a single running sum is a sequential floating-point dependency chain).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_naive() {
        for n in [0usize, 1, 7, 8, 9, 32, 33] {
            let a: Vec<f32> = (0..n).map(|k| k as f32 * 0.5 - 3.0).collect();
            let b: Vec<f32> = (0..n).map(|k| 1.0 - k as f32 * 0.25).collect();
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - naive).abs() <= 1e-4 * naive.abs().max(1.0));
        }
    }

    #[test]
    fn sgd_step_matches_formula() {
        let o = Optimizer {
            kind: OptimizerKind::Sgd,
            learning_rate: 0.1,
            l2: 0.5,
            ..Default::default()
        };
        let mut w = [1.0f32, -2.0];
        let mut g = [0.2f32, 0.4];
        let mut ra = 0.0;
        o.step(&mut w, &mut g, &mut [], &mut ra);
        assert!((w[0] - (1.0 - 0.1 * (0.2 + 0.5))).abs() < 1e-6);
        assert!((w[1] - (-2.0 - 0.1 * (0.4 - 1.0))).abs() < 1e-6);
    }

    #[test]
    fn adagrad_accumulates() {
        let o = Optimizer {
            kind: OptimizerKind::Adagrad,
            learning_rate: 1.0,
            initial_accumulator: 0.0,
            ..Default::default()
        };
        let mut w = [0.0f32];
        let mut acc = [0.0f32];
        let mut ra = 0.0;
        o.step(&mut w, &mut [2.0], &mut acc, &mut ra);
        assert!((acc[0] - 4.0).abs() < 1e-6);
        assert!((w[0] + 1.0).abs() < 1e-5);
    }

    #[test]
    fn rowwise_and_max_norm() {
        let o = Optimizer {
            kind: OptimizerKind::RowWiseAdagrad,
            learning_rate: 1.0,
            max_norm: 0.5,
            ..Default::default()
        };
        let mut w = [3.0f32, 4.0];
        let mut ra = 0.0;
        o.step(&mut w, &mut [0.0, 0.0], &mut [], &mut ra);
        let n = (w[0] * w[0] + w[1] * w[1]).sqrt();
        assert!((n - 0.5).abs() < 1e-6);
    }

    #[test]
    fn validation_rejects_bad_values() {
        for o in [
            Optimizer {
                learning_rate: 0.0,
                ..Default::default()
            },
            Optimizer {
                learning_rate: f32::NAN,
                ..Default::default()
            },
            Optimizer {
                l2: -1.0,
                ..Default::default()
            },
            Optimizer {
                eps: 0.0,
                ..Default::default()
            },
        ] {
            assert!(o.validate().is_err());
        }
        assert!(OptimizerKind::parse("adam").is_err());
        assert_eq!(
            OptimizerKind::parse("RowWise_Adagrad").unwrap(),
            OptimizerKind::RowWiseAdagrad
        );
    }
}
