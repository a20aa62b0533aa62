//! The events of one training call, borrowed and validated before anything
//! changes: one id column per field, labels, optional weights and times.

use crate::error::{shape, Error, Result};
use crate::train::loss::{Loss, MAX_LABEL, MAX_WEIGHT};

/// Borrowed, not-yet-validated arguments of one `train` call: one id column
/// per field, in field order.
pub struct Events<'a> {
    pub columns: &'a [&'a [u64]],
    pub labels: &'a [f32],
    pub weights: Option<&'a [f32]>,
    pub timestamps: Option<&'a [i64]>,
}

impl Events<'_> {
    /// Number of events, once every length and value is checked: one column
    /// per name in `column_names` (the argument names a user passed them
    /// as), equal lengths, finite weights in [0, MAX_WEIGHT], finite labels
    /// (in [0, 1] for the logistic loss, |label| <= MAX_LABEL otherwise).
    pub fn validate(&self, column_names: &[String], loss: Loss) -> Result<usize> {
        if self.columns.len() != column_names.len() {
            return Err(shape(
                "columns",
                format!("one id column per field ({})", column_names.join(", ")),
                format!("{} columns", self.columns.len()),
            ));
        }
        let n = self.columns.first().map_or(self.labels.len(), |c| c.len());
        let first = column_names.first().map_or("labels", String::as_str);
        let check_len = |name: &str, len: usize| {
            if len == n {
                Ok(())
            } else {
                Err(shape(
                    name,
                    format!("{n} elements, one per event (as {first})"),
                    format!("{len} elements"),
                ))
            }
        };
        for (name, c) in column_names.iter().zip(self.columns).skip(1) {
            check_len(name, c.len())?;
        }
        check_len("labels", self.labels.len())?;
        let bad = |name: &str, index: usize, value: String, allowed: &str| Error::BadValue {
            name: name.to_string(),
            index,
            value,
            allowed: allowed.to_string(),
        };
        if let Some(w) = self.weights {
            check_len("weights", w.len())?;
            if let Some(k) = first_failing(w, |x| x.is_finite() & (0.0..=MAX_WEIGHT).contains(&x)) {
                return Err(bad(
                    "weights",
                    k,
                    w[k].to_string(),
                    &format!("weights must be finite numbers in [0, {MAX_WEIGHT:e}]"),
                ));
            }
        }
        if let Some(t) = self.timestamps {
            check_len("timestamps", t.len())?;
        }
        let labels = self.labels;
        if let Some(k) = first_failing(labels, f32::is_finite) {
            return Err(bad(
                "labels",
                k,
                labels[k].to_string(),
                "labels must be finite",
            ));
        }
        match loss {
            Loss::Logistic => {
                if let Some(k) = first_failing(labels, |x| (0.0..=1.0).contains(&x)) {
                    return Err(bad(
                        "labels",
                        k,
                        labels[k].to_string(),
                        "the logistic loss needs labels in [0, 1]; use loss='squared' for ratings",
                    ));
                }
            }
            Loss::Squared => {
                if let Some(k) = first_failing(labels, |x| x.abs() <= MAX_LABEL) {
                    return Err(bad(
                        "labels",
                        k,
                        labels[k].to_string(),
                        &format!(
                            "the squared loss takes labels in [-{MAX_LABEL:e}, {MAX_LABEL:e}]"
                        ),
                    ));
                }
            }
        }
        Ok(n)
    }
}

/// Index of the first value that fails `ok`, or None. Blocks of values are
/// checked without a branch per value (the check vectorises, where
/// `position` stops to test each value); only a block that fails is
/// searched.
#[inline(always)]
fn first_failing(values: &[f32], ok: impl Fn(f32) -> bool + Copy) -> Option<usize> {
    const BLOCK: usize = 256;
    for (b, block) in values.chunks(BLOCK).enumerate() {
        if !block.iter().fold(true, |all, &x| all & ok(x)) {
            return block.iter().position(|&x| !ok(x)).map(|k| b * BLOCK + k);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["users".into(), "items".into()]
    }

    #[test]
    fn lengths_and_values_are_checked() {
        let (u, i) = ([1u64, 2], [3u64, 4]);
        let cols: [&[u64]; 2] = [&u, &i[..1]];
        let e = Events {
            columns: &cols,
            labels: &[1.0, 0.0],
            weights: None,
            timestamps: None,
        };
        let err = e.validate(&names(), Loss::Logistic).unwrap_err();
        assert!(err.to_string().contains("items has 1 elements"), "{err}");
        let cols: [&[u64]; 2] = [&u, &i];
        for (labels, loss, what) in [
            ([1.0, 2.0], Loss::Logistic, "labels[1] = 2"),
            ([1.0, f32::NAN], Loss::Squared, "labels[1] = NaN"),
            ([3e38, 0.0], Loss::Squared, "labels[0] = 300000000"),
        ] {
            let e = Events {
                columns: &cols,
                labels: &labels,
                weights: None,
                timestamps: None,
            };
            let err = e.validate(&names(), loss).unwrap_err();
            assert!(err.to_string().contains(what), "{err}");
        }
        let e = Events {
            columns: &cols,
            labels: &[1.0, 0.0],
            weights: Some(&[1.0, 3e38]),
            timestamps: None,
        };
        assert!(e.validate(&names(), Loss::Logistic).is_err());
        let e = Events {
            columns: &cols,
            labels: &[1.0, 0.0],
            weights: Some(&[1.0, 0.5]),
            timestamps: Some(&[0, 1]),
        };
        assert_eq!(e.validate(&names(), Loss::Logistic), Ok(2));
    }

    /// `first_failing` finds what `position` finds, wherever the first
    /// failing value is (first, inside and at the ends of blocks, none).
    #[test]
    fn first_failing_is_position() {
        for n in [0usize, 1, 255, 256, 257, 1000] {
            for bad in [
                None,
                Some(0),
                Some(1),
                Some(255),
                Some(256),
                Some(n.saturating_sub(1)),
            ] {
                let mut v = vec![0.5f32; n];
                if let Some(b) = bad.filter(|&b| b < n) {
                    v[b] = f32::NAN;
                    if b + 3 < n {
                        v[b + 3] = -1.0;
                    }
                }
                let ok = |x: f32| x.is_finite() & (x >= 0.0);
                assert_eq!(
                    first_failing(&v, ok),
                    v.iter().position(|&x| !ok(x)),
                    "n={n} bad={bad:?}"
                );
            }
        }
    }
}
