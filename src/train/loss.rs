//! Losses of one event's score against its label.

use crate::error::{config, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// Binary cross-entropy on sigmoid(score); labels in [0, 1].
    Logistic,
    /// 0.5 * (score - label)^2 for rating-like labels.
    Squared,
}

/// Largest |label| the squared loss takes, and the largest event weight:
/// with both in range a gradient stays far from f32 overflow.
pub const MAX_LABEL: f32 = 1e6;
pub const MAX_WEIGHT: f32 = 1e6;

impl Loss {
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "logistic" | "log" | "bce" => Ok(Loss::Logistic),
            "squared" | "mse" | "l2" => Ok(Loss::Squared),
            _ => Err(config(format!(
                "unknown loss {name:?}; choose 'logistic' or 'squared'"
            ))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Loss::Logistic => "logistic",
            Loss::Squared => "squared",
        }
    }

    /// (loss, d loss / d score).
    #[inline(always)]
    pub fn value_and_grad(self, score: f32, label: f32) -> (f32, f32) {
        let (g, z) = self.grad_and_exp(score, label);
        (self.value(score, label, z), g)
    }

    /// d loss / d score, and what `value` needs besides the score and the
    /// label (logistic: z = exp(-|score|); squared: 0), so that a loop can
    /// step on the gradient now and compute the loss values later, several
    /// at a time (`LossSums`).
    #[inline(always)]
    pub fn grad_and_exp(self, score: f32, label: f32) -> (f32, f32) {
        match self {
            Loss::Logistic => {
                // One exp and one log1p: z = exp(-|s|) gives both the sigmoid
                // and softplus(s) = max(s, 0) + ln(1 + z), stably.
                let z = (-score.abs()).exp();
                let p = if score >= 0.0 {
                    1.0 / (1.0 + z)
                } else {
                    z / (1.0 + z)
                };
                (p - label, z)
            }
            Loss::Squared => (score - label, 0.0),
        }
    }

    /// The loss of `score` against `label`, `z` from `grad_and_exp`.
    #[inline(always)]
    pub fn value(self, score: f32, label: f32, z: f32) -> f32 {
        match self {
            Loss::Logistic => {
                let softplus = score.max(0.0) + ln_1p_unit(z);
                softplus - label * score
            }
            Loss::Squared => {
                let r = score - label;
                0.5 * r * r
            }
        }
    }
}

/// Events a `LossSums` holds before it computes their losses.
const LOSS_LANES: usize = 8;

/// The sums of a worker's weighted losses and weights in event order,
/// `loss_sum += f64::from(weight × loss)` and `weight_sum +=
/// f64::from(weight)`, with the loss values computed eight events at a
/// time: the log1p polynomial and its division then run on vectors (the
/// same IEEE operations per lane, so the same bits as one event at a time,
/// and the f64 sums keep the event order). Only the loss value waits; the
/// gradient is computed per event (`Loss::grad_and_exp`).
pub struct LossSums {
    loss: Loss,
    score: [f32; LOSS_LANES],
    label: [f32; LOSS_LANES],
    z: [f32; LOSS_LANES],
    weight: [f32; LOSS_LANES],
    held: usize,
    pub loss_sum: f64,
    pub weight_sum: f64,
}

impl LossSums {
    pub fn new(loss: Loss) -> Self {
        LossSums {
            loss,
            score: [0.0; LOSS_LANES],
            label: [0.0; LOSS_LANES],
            z: [0.0; LOSS_LANES],
            weight: [0.0; LOSS_LANES],
            held: 0,
            loss_sum: 0.0,
            weight_sum: 0.0,
        }
    }

    /// Adds one event (`z` from `grad_and_exp`).
    #[inline(always)]
    pub fn add(&mut self, score: f32, label: f32, z: f32, weight: f32) {
        let k = self.held % LOSS_LANES;
        self.score[k] = score;
        self.label[k] = label;
        self.z[k] = z;
        self.weight[k] = weight;
        self.held = k + 1;
        if self.held == LOSS_LANES {
            self.flush();
        }
    }

    /// Sums the events held (call once more after the last `add`).
    #[inline(always)]
    pub fn flush(&mut self) {
        let mut values = [0.0f32; LOSS_LANES];
        match self.loss {
            Loss::Logistic => {
                for (k, v) in values.iter_mut().enumerate() {
                    *v = self.weight[k]
                        * Loss::Logistic.value(self.score[k], self.label[k], self.z[k]);
                }
            }
            Loss::Squared => {
                for (k, v) in values.iter_mut().enumerate() {
                    *v = self.weight[k]
                        * Loss::Squared.value(self.score[k], self.label[k], self.z[k]);
                }
            }
        }
        for (v, w) in values.iter().zip(&self.weight).take(self.held) {
            self.loss_sum += f64::from(*v);
            self.weight_sum += f64::from(*w);
        }
        self.held = 0;
    }
}

/// ln(1 + z) for z in [0, 1] via 2·atanh(z / (2 + z)) (series to t^11):
/// absolute error below 1e-6, several times cheaper than libm's log1pf. Used
/// for the reported loss only, never for a gradient.
#[inline(always)]
pub fn ln_1p_unit(z: f32) -> f32 {
    let t = z / (2.0 + z);
    let t2 = t * t;
    2.0 * t
        * (1.0 + t2 * (1.0 / 3.0 + t2 * (0.2 + t2 * (1.0 / 7.0 + t2 * (1.0 / 9.0 + t2 / 11.0)))))
}

#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses() {
        let (l, g) = Loss::Logistic.value_and_grad(0.0, 1.0);
        assert!((l - std::f32::consts::LN_2).abs() < 1e-6 && (g + 0.5).abs() < 1e-6);
        let (l, g) = Loss::Logistic.value_and_grad(-100.0, 1.0);
        assert!(l.is_finite() && (l - 100.0).abs() < 1e-3 && (g + 1.0).abs() < 1e-6);
        assert_eq!(Loss::Squared.value_and_grad(3.0, 1.0), (2.0, 2.0));
    }

    /// The loss and gradient as first written (one function), the reference
    /// for the split `grad_and_exp` / `value` / `LossSums`.
    fn reference(loss: Loss, score: f32, label: f32) -> (f32, f32) {
        match loss {
            Loss::Logistic => {
                let z = (-score.abs()).exp();
                let p = if score >= 0.0 {
                    1.0 / (1.0 + z)
                } else {
                    z / (1.0 + z)
                };
                let softplus = score.max(0.0) + ln_1p_unit(z);
                (softplus - label * score, p - label)
            }
            Loss::Squared => {
                let r = score - label;
                (0.5 * r * r, r)
            }
        }
    }

    /// `LossSums` gives the bits of summing the reference losses one event
    /// at a time, for any count (whole batches of eight and a tail), and
    /// `value_and_grad` / `grad_and_exp` its values and gradients.
    #[test]
    fn loss_sums_match_one_event_at_a_time() {
        for loss in [Loss::Logistic, Loss::Squared] {
            for n in [0usize, 1, 7, 8, 9, 23, 64] {
                let mut sums = LossSums::new(loss);
                let (mut want_loss, mut want_weight) = (0.0f64, 0.0f64);
                for k in 0..n as u64 {
                    let r = crate::kernels::rng::hash2(n as u64, k);
                    let score = 20.0 * (crate::kernels::rng::unit_f32(r) - 0.5);
                    let label = (k % 3 == 0) as u8 as f32;
                    let weight = 0.25 + (k % 5) as f32 * 0.5;
                    let (l, g) = reference(loss, score, label);
                    let (l1, g1) = loss.value_and_grad(score, label);
                    assert_eq!((l.to_bits(), g.to_bits()), (l1.to_bits(), g1.to_bits()));
                    want_loss += f64::from(weight * l);
                    want_weight += f64::from(weight);
                    let (g2, z) = loss.grad_and_exp(score, label);
                    assert_eq!(g.to_bits(), g2.to_bits());
                    sums.add(score, label, z, weight);
                }
                sums.flush();
                assert_eq!(
                    sums.loss_sum.to_bits(),
                    want_loss.to_bits(),
                    "{loss:?} n={n}"
                );
                assert_eq!(
                    sums.weight_sum.to_bits(),
                    want_weight.to_bits(),
                    "{loss:?} n={n}"
                );
            }
        }
    }

    #[test]
    fn fast_log1p_is_accurate() {
        for k in 0..=1000 {
            let z = k as f32 / 1000.0;
            assert!((ln_1p_unit(z) - z.ln_1p()).abs() < 1e-6, "z={z}");
        }
    }
}
