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
                let softplus = score.max(0.0) + ln_1p_unit(z);
                (softplus - label * score, p - label)
            }
            Loss::Squared => {
                let r = score - label;
                (0.5 * r * r, r)
            }
        }
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

    #[test]
    fn fast_log1p_is_accurate() {
        for k in 0..=1000 {
            let z = k as f32 / 1000.0;
            assert!((ln_1p_unit(z) - z.ln_1p()).abs() < 1e-6, "z={z}");
        }
    }
}
