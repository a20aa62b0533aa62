//! Exact ROC AUC of groups of events, in one pass over keys sorted once.
//!
//! Design notes.
//! * The caller packs one `u64` per event: the score's order-preserving key
//!   in the bits from `tie_shift` up, the label in bit 0 (1 = positive), and
//!   any number of groupings as bit fields (`Field`), then sorts the keys
//!   (numpy's sort). Events whose bits from `tie_shift` up are equal are
//!   tied; a tie block can mix groups.
//! * One scan serves every grouping: per group the negatives seen so far,
//!   the twice-Mann–Whitney count of the positives, the positives and the
//!   events. A positive counts the negatives of its group before its tie
//!   block, plus half those in the block; counts are kept doubled in
//!   integers, so sums are exact and independent of order (the numpy
//!   version this replaces searched each positive's position: four binary
//!   searches per positive and one sort per grouping).
//! * The `u` returned is that count halved, exact in f64 while it is below
//!   2^53 (up to ~95M events of one group at any positive share).

use crate::error::{invalid, out_of_range, Result};

/// One grouping: group = `(key >> shift) & mask`, in `0..groups`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub shift: u32,
    pub mask: u64,
    pub groups: usize,
}

/// Per group of one grouping: the Mann–Whitney count `u` (positives ranked
/// above a negative, ties one half), the positives and the events.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupCounts {
    pub u: Vec<f64>,
    pub positives: Vec<f64>,
    pub events: Vec<f64>,
}

impl GroupCounts {
    /// AUC per group: `u / (positives × negatives)`, NaN without both.
    pub fn auc(&self) -> Vec<f64> {
        let rows = self.u.iter().zip(&self.positives).zip(&self.events);
        rows.map(|((&u, &p), &n)| {
            let neg = n - p;
            if p > 0.0 && neg > 0.0 {
                u / (p * neg)
            } else {
                f64::NAN
            }
        })
        .collect()
    }
}

#[derive(Clone)]
struct Counters {
    field: Field,
    neg_before: Vec<u64>,
    /// Negatives of the current tie block.
    block_neg: Vec<u64>,
    u2: Vec<u64>,
    positives: Vec<u64>,
    events: Vec<u64>,
}

impl Counters {
    fn new(field: Field) -> Self {
        let z = vec![0u64; field.groups];
        Counters {
            field,
            neg_before: z.clone(),
            block_neg: z.clone(),
            u2: z.clone(),
            positives: z.clone(),
            events: z,
        }
    }

    #[inline(always)]
    fn group(&self, key: u64) -> usize {
        ((key >> self.field.shift) & self.field.mask) as usize
    }
}

/// Check the fields (shifts below 64, at least one group) and that every
/// key's group of every field is below its `groups`.
fn check_fields(keys: &[u64], fields: &[Field]) -> Result<()> {
    for (k, f) in fields.iter().enumerate() {
        if f.shift >= 64 {
            return Err(out_of_range(
                &format!("fields[{k}].shift"),
                f.shift,
                "0 to 63",
            ));
        }
        if f.groups == 0 {
            return Err(out_of_range(
                &format!("fields[{k}].groups"),
                0,
                "at least 1",
            ));
        }
        let top = keys.iter().map(|&key| (key >> f.shift) & f.mask).max();
        if let Some(g) = top.filter(|&g| g >= f.groups as u64) {
            return Err(out_of_range(
                &format!("fields[{k}] group"),
                g,
                format!("below groups = {}", f.groups),
            ));
        }
    }
    Ok(())
}

/// Per field, the counts of each group over `sorted` (non-decreasing; see
/// the module notes for the layout).
pub fn grouped_auc_sorted(
    sorted: &[u64],
    tie_shift: u32,
    fields: &[Field],
) -> Result<Vec<GroupCounts>> {
    if !(1..64).contains(&tie_shift) {
        return Err(out_of_range("tie_shift", tie_shift, "1 to 63"));
    }
    check_fields(sorted, fields)?;
    if let Some(k) = sorted.windows(2).position(|w| w[0] > w[1]) {
        return Err(invalid(format!(
            "the keys must be sorted (ascending); keys[{}] > keys[{}]",
            k,
            k + 1
        )));
    }
    let mut all: Vec<Counters> = fields.iter().map(|&f| Counters::new(f)).collect();
    let n = sorted.len();
    let mut i = 0;
    while i < n {
        let tie = sorted[i] >> tie_shift;
        let mut j = i + 1;
        while j < n && sorted[j] >> tie_shift == tie {
            j += 1;
        }
        let block = &sorted[i..j];
        for c in all.iter_mut() {
            if let [key] = block {
                let g = c.group(*key);
                c.events[g] += 1;
                if key & 1 == 1 {
                    c.u2[g] += 2 * c.neg_before[g];
                    c.positives[g] += 1;
                } else {
                    c.neg_before[g] += 1;
                }
                continue;
            }
            for &key in block {
                if key & 1 == 0 {
                    let g = c.group(key);
                    c.block_neg[g] += 1;
                }
            }
            for &key in block {
                let g = c.group(key);
                c.events[g] += 1;
                if key & 1 == 1 {
                    c.u2[g] += 2 * c.neg_before[g] + c.block_neg[g];
                    c.positives[g] += 1;
                }
            }
            for &key in block {
                let g = c.group(key);
                c.neg_before[g] += std::mem::take(&mut c.block_neg[g]);
            }
        }
        i = j;
    }
    let as_f64 = |v: &[u64]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    Ok(all
        .iter()
        .map(|c| GroupCounts {
            u: c.u2.iter().map(|&x| x as f64 * 0.5).collect(),
            positives: as_f64(&c.positives),
            events: as_f64(&c.events),
        })
        .collect())
}

/// Per field, the sum of `weights` of each group, over `keys` in their
/// order (not sorted), in blocks of `block` keys: each block's sums start at
/// zero and are added to the totals at its end — the float64 operations of
/// `np.bincount(groups, weights)` block by block, so the same bits.
pub fn grouped_sums(
    keys: &[u64],
    weights: &[f32],
    fields: &[Field],
    block: usize,
) -> Result<Vec<Vec<f64>>> {
    if weights.len() != keys.len() {
        return Err(invalid(format!(
            "weights has {} values and keys {}: one weight per key",
            weights.len(),
            keys.len()
        )));
    }
    if block == 0 {
        return Err(out_of_range("block", 0, "at least 1"));
    }
    check_fields(keys, fields)?;
    let mut totals: Vec<Vec<f64>> = fields.iter().map(|f| vec![0.0; f.groups]).collect();
    let mut partial = totals.clone();
    for (ks, ws) in keys.chunks(block).zip(weights.chunks(block)) {
        for ((f, p), t) in fields.iter().zip(partial.iter_mut()).zip(totals.iter_mut()) {
            p.fill(0.0);
            for (&k, &w) in ks.iter().zip(ws) {
                p[((k >> f.shift) & f.mask) as usize] += f64::from(w);
            }
            for (a, &b) in t.iter_mut().zip(p.iter()) {
                *a += b;
            }
        }
    }
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::rng::hash2;

    /// Obvious reference: every (positive, negative) pair of a group.
    fn pairwise(keys: &[u64], tie_shift: u32, f: Field) -> GroupCounts {
        let mut out = GroupCounts {
            u: vec![0.0; f.groups],
            positives: vec![0.0; f.groups],
            events: vec![0.0; f.groups],
        };
        let group = |k: u64| ((k >> f.shift) & f.mask) as usize;
        for &a in keys {
            out.events[group(a)] += 1.0;
            if a & 1 == 0 {
                continue;
            }
            out.positives[group(a)] += 1.0;
            for &b in keys.iter().filter(|&&b| b & 1 == 0 && group(b) == group(a)) {
                let (sa, sb) = (a >> tie_shift, b >> tie_shift);
                out.u[group(a)] += if sa > sb {
                    1.0
                } else if sa == sb {
                    0.5
                } else {
                    0.0
                };
            }
        }
        out
    }

    #[test]
    fn one_scan_equals_pairwise_counts_for_every_field() {
        // Layout: score key (few values: many ties) << 8 | group a (3 bits) << 4
        // | group b (2 bits) << 1 | label.
        for seed in 0..20u64 {
            let n = 1 + (hash2(seed, 999) % 300) as usize;
            let mut keys: Vec<u64> = (0..n as u64)
                .map(|k| {
                    let h = hash2(seed, k);
                    ((h % 13) << 8)
                        | (((h >> 8) % 6) << 4)
                        | (((h >> 16) % 4) << 1)
                        | ((h >> 30) & 1)
                })
                .collect();
            keys.sort_unstable();
            let fields = [
                Field {
                    shift: 0,
                    mask: 0,
                    groups: 1,
                },
                Field {
                    shift: 4,
                    mask: 0b111,
                    groups: 8,
                },
                Field {
                    shift: 1,
                    mask: 0b11,
                    groups: 4,
                },
            ];
            let got = grouped_auc_sorted(&keys, 8, &fields).unwrap();
            for (g, &f) in got.iter().zip(&fields) {
                assert_eq!(*g, pairwise(&keys, 8, f), "seed {seed}, field {f:?}");
            }
        }
    }

    #[test]
    fn auc_of_a_perfect_and_a_reversed_ranking() {
        let key = |score: u64, positive: u64| (score << 1) | positive;
        let field = [Field {
            shift: 0,
            mask: 0,
            groups: 1,
        }];
        let keys = [key(0, 0), key(1, 0), key(2, 1), key(3, 1)];
        assert_eq!(
            grouped_auc_sorted(&keys, 1, &field).unwrap()[0].auc(),
            vec![1.0]
        );
        let keys = [key(0, 1), key(1, 1), key(2, 0), key(3, 0)];
        assert_eq!(
            grouped_auc_sorted(&keys, 1, &field).unwrap()[0].auc(),
            vec![0.0]
        );
        // All tied: one half.
        let keys = [key(1, 0), key(1, 0), key(1, 1)];
        assert_eq!(
            grouped_auc_sorted(&keys, 1, &field).unwrap()[0].auc(),
            vec![0.5]
        );
        // One class only: undefined.
        assert!(grouped_auc_sorted(&[key(1, 1)], 1, &field).unwrap()[0].auc()[0].is_nan());
    }

    #[test]
    fn unsorted_keys_and_bad_fields_are_refused() {
        let field = [Field {
            shift: 0,
            mask: 0,
            groups: 1,
        }];
        let err = grouped_auc_sorted(&[4, 2], 1, &field)
            .unwrap_err()
            .to_string();
        assert!(err.contains("keys[0] > keys[1]"), "{err}");
        let narrow = [Field {
            shift: 1,
            mask: 0b11,
            groups: 3,
        }];
        let err = grouped_auc_sorted(&[3 << 1], 1, &narrow)
            .unwrap_err()
            .to_string();
        assert!(err.contains("fields[0] group"), "{err}");
        assert!(grouped_auc_sorted(&[0], 0, &field).is_err());
        assert!(grouped_auc_sorted(&[0], 64, &field).is_err());
        let shift = [Field {
            shift: 64,
            mask: 0,
            groups: 1,
        }];
        assert!(grouped_auc_sorted(&[0], 1, &shift).is_err());
        let none = [Field {
            shift: 0,
            mask: 0,
            groups: 0,
        }];
        assert!(grouped_auc_sorted(&[0], 1, &none).is_err());
        let empty = grouped_auc_sorted(&[], 1, &field).unwrap();
        assert_eq!(empty[0].events, vec![0.0]);
    }

    #[test]
    fn grouped_sums_are_block_sums_added_in_order() {
        let keys: Vec<u64> = (0..50u64).map(|k| (hash2(7, k) % 4) << 1).collect();
        // 2^53 then ones: adding a one to 2^53 rounds it away, adding two does not,
        // so sums in blocks differ from a running sum.
        let weights: Vec<f32> = (0..50u64)
            .map(|k| if k % 20 == 0 { 2f32.powi(53) } else { 1.0 })
            .collect();
        let field = [Field {
            shift: 1,
            mask: 0b11,
            groups: 4,
        }];
        for block in [1, 3, 50, 64] {
            let got = grouped_sums(&keys, &weights, &field, block).unwrap();
            let mut want = vec![0.0f64; 4];
            for (ks, ws) in keys.chunks(block).zip(weights.chunks(block)) {
                let mut p = [0.0f64; 4];
                for (&k, &w) in ks.iter().zip(ws) {
                    p[(k >> 1) as usize] += f64::from(w);
                }
                for g in 0..4 {
                    want[g] += p[g];
                }
            }
            assert_eq!(got[0], want, "block {block}");
        }
        assert!(grouped_sums(&keys, &weights[1..], &field, 3).is_err());
        assert!(grouped_sums(&keys, &weights, &field, 0).is_err());
    }
}
