//! Running top-k per query over blocks of scores (the analyses' exact
//! retrieval and nearest-neighbour checks).
//!
//! Design notes.
//! * The caller computes each block of scores (a `queries × columns`
//!   matrix product, BLAS) and hands it over with the block's first column;
//!   one pass per block keeps, per query, the k best (score, column) pairs.
//!   Once a query holds k entries a column enters only above its k-th best,
//!   so after the first blocks nearly every score costs one comparison.
//! * Order: higher score first, then the lower column, so the result is the
//!   top k of that total order when blocks come in increasing column order
//!   (a candidate tied with the k-th best has the higher column: it stays
//!   out). NaN counts as −∞.
//! * `scale` multiplies each column's scores first (cosine from dot
//!   products and inverse norms): the same IEEE product as the caller's.

use crate::error::{invalid, Result};

/// The k best columns of each query seen so far.
#[derive(Clone, Debug)]
pub struct TopK {
    k: usize,
    queries: usize,
    scores: Vec<f64>,
    columns: Vec<i64>,
    len: Vec<usize>,
    /// Slot of the worst kept entry of each full query.
    worst: Vec<usize>,
}

impl TopK {
    pub fn new(queries: usize, k: usize) -> Self {
        TopK {
            k,
            queries,
            scores: vec![f64::NEG_INFINITY; queries * k],
            columns: vec![-1; queries * k],
            len: vec![0; queries],
            worst: vec![0; queries],
        }
    }

    pub fn queries(&self) -> usize {
        self.queries
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// Merge a block of scores (`queries × width`, row-major) whose first
    /// column is `offset`.
    pub fn update(
        &mut self,
        block: &[f64],
        width: usize,
        offset: i64,
        scale: Option<&[f64]>,
    ) -> Result<()> {
        if block.len() != self.queries * width {
            return Err(invalid(format!(
                "scores has {} values, not {} queries × {width} columns",
                block.len(),
                self.queries
            )));
        }
        if let Some(s) = scale.filter(|s| s.len() != width) {
            return Err(invalid(format!(
                "scale has {} values, one per column ({width}) needed",
                s.len()
            )));
        }
        if offset < 0 || offset.checked_add(width as i64).is_none() {
            return Err(invalid(format!("offset must be >= 0, got {offset}")));
        }
        let k = self.k;
        if k == 0 || width == 0 {
            return Ok(());
        }
        for q in 0..self.queries {
            let row = &block[q * width..(q + 1) * width];
            let scores = &mut self.scores[q * k..(q + 1) * k];
            let columns = &mut self.columns[q * k..(q + 1) * k];
            let (mut n, mut worst) = (self.len[q], self.worst[q]);
            let mut bound = if n == k {
                scores[worst]
            } else {
                f64::NEG_INFINITY
            };
            for (j, &raw) in row.iter().enumerate() {
                let v = match scale {
                    Some(s) => raw * s[j],
                    None => raw,
                };
                let v = if v.is_nan() { f64::NEG_INFINITY } else { v };
                if n == k && v <= bound {
                    continue;
                }
                let slot = if n < k {
                    n += 1;
                    n - 1
                } else {
                    worst
                };
                scores[slot] = v;
                columns[slot] = offset + j as i64;
                if n == k {
                    worst = worst_slot(scores, columns);
                    bound = scores[worst];
                }
            }
            self.len[q] = n;
            self.worst[q] = worst;
        }
        Ok(())
    }

    /// Each query's entries, best first: (scores, columns), `queries × kept`
    /// row-major, `kept` = min(k, columns seen).
    pub fn sorted(&self) -> (Vec<f64>, Vec<i64>, usize) {
        let kept = self.len.iter().copied().min().unwrap_or(0);
        let (mut s, mut c) = (
            Vec::with_capacity(self.queries * kept),
            Vec::with_capacity(self.queries * kept),
        );
        for q in 0..self.queries {
            let k = self.k;
            let mut pairs: Vec<(f64, i64)> = self.scores[q * k..q * k + self.len[q]]
                .iter()
                .copied()
                .zip(self.columns[q * k..q * k + self.len[q]].iter().copied())
                .collect();
            pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            for &(score, column) in pairs.iter().take(kept) {
                s.push(score);
                c.push(column);
            }
        }
        (s, c, kept)
    }
}

/// The slot of the entry that sorts last: lowest score, then highest column.
fn worst_slot(scores: &[f64], columns: &[i64]) -> usize {
    let mut w = 0;
    for s in 1..scores.len() {
        if scores[s] < scores[w] || (scores[s] == scores[w] && columns[s] > columns[w]) {
            w = s;
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::rng::hash2;

    /// Obvious reference: sort every column of the whole matrix.
    fn brute(all: &[f64], queries: usize, n: usize, k: usize) -> Vec<i64> {
        let mut out = Vec::new();
        for q in 0..queries {
            let mut c: Vec<(f64, i64)> = (0..n)
                .map(|j| {
                    let v = all[q * n + j];
                    (if v.is_nan() { f64::NEG_INFINITY } else { v }, j as i64)
                })
                .collect();
            c.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            out.extend(c.iter().take(k.min(n)).map(|p| p.1));
        }
        out
    }

    #[test]
    fn blocks_of_any_width_give_the_brute_force_top_k_ties_to_the_lower_column() {
        for seed in 0..30u64 {
            let queries = 1 + (hash2(seed, 1) % 5) as usize;
            let n = (hash2(seed, 2) % 60) as usize;
            let k = (hash2(seed, 3) % 8) as usize;
            // Few distinct values: many ties; some NaN.
            let all: Vec<f64> = (0..(queries * n) as u64)
                .map(|x| match hash2(seed, 100 + x) % 9 {
                    0 => f64::NAN,
                    v => v as f64 - 4.0,
                })
                .collect();
            let mut top = TopK::new(queries, k);
            let mut start = 0;
            while start < n {
                let width = (1 + hash2(seed, 1000 + start as u64) % 7) as usize;
                let width = width.min(n - start);
                let block: Vec<f64> = (0..queries)
                    .flat_map(|q| all[q * n + start..q * n + start + width].to_vec())
                    .collect();
                top.update(&block, width, start as i64, None).unwrap();
                start += width;
            }
            let (_, columns, kept) = top.sorted();
            assert_eq!(kept, if n == 0 { 0 } else { k.min(n) }, "seed {seed}");
            assert_eq!(columns, brute(&all, queries, n, k), "seed {seed}");
        }
    }

    #[test]
    fn scale_multiplies_each_column_first() {
        let mut top = TopK::new(1, 1);
        top.update(&[3.0, 2.0], 2, 0, Some(&[1.0, 2.0])).unwrap();
        let (scores, columns, _) = top.sorted();
        assert_eq!((scores, columns), (vec![4.0], vec![1]));
    }

    #[test]
    fn bad_shapes_are_refused_and_change_nothing() {
        let mut top = TopK::new(2, 1);
        assert!(top.update(&[1.0; 3], 2, 0, None).is_err());
        assert!(top.update(&[1.0; 4], 2, 0, Some(&[1.0])).is_err());
        assert!(top.update(&[1.0; 4], 2, -1, None).is_err());
        assert_eq!(top.sorted().2, 0);
    }
}
