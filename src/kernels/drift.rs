//! Whole-table drift kernels: per-row cosine of matched rows and the d×d
//! cross-product AᵀB (the mergeable sum behind Procrustes and CKA).
//! Both split rows over threads and read each matrix once.

use crate::error::{invalid, Result};
use crate::kernels::parallel::chunks;

/// Element types the kernels read: f32 tables, or f64 matrices from Python.
pub trait Real: Copy + Into<f64> + Sync {}
impl Real for f32 {}
impl Real for f64 {}

fn check<T: Real>(a: &[T], b: &[T], d: usize) -> Result<usize> {
    if d == 0 || a.len() % d != 0 || a.len() != b.len() {
        return Err(invalid(format!(
            "a has {} values and b has {}; both must be (rows, {d}) matrices of the same shape",
            a.len(),
            b.len()
        )));
    }
    Ok(a.len() / d)
}

/// cos(a_i, b_i) for every row (0 when either row has zero norm), clipped to [-1, 1].
pub fn rowwise_cosine<T: Real>(a: &[T], b: &[T], d: usize, threads: usize) -> Result<Vec<f64>> {
    let n = check(a, b, d)?;
    let mut out = vec![0.0f64; n];
    std::thread::scope(|s| {
        let mut rest: &mut [f64] = &mut out;
        for part in chunks(n, threads) {
            let (mine, tail) = rest.split_at_mut(part.len());
            rest = tail;
            s.spawn(move || {
                let rows_a = a[part.start * d..part.end * d].chunks_exact(d);
                let rows_b = b[part.start * d..part.end * d].chunks_exact(d);
                for ((o, x), y) in mine.iter_mut().zip(rows_a).zip(rows_b) {
                    let (mut dot, mut nx, mut ny) = (0.0f64, 0.0f64, 0.0f64);
                    for (&p, &q) in x.iter().zip(y) {
                        let (p, q): (f64, f64) = (p.into(), q.into());
                        dot += p * q;
                        nx += p * p;
                        ny += q * q;
                    }
                    let den = (nx * ny).sqrt();
                    *o = if den > 0.0 {
                        (dot / den).clamp(-1.0, 1.0)
                    } else {
                        0.0
                    };
                }
            });
        }
    });
    Ok(out)
}

/// AᵀB as a row-major (d × d) f64 matrix, accumulated in f64. The scans are
/// memory-bound, so f64 arithmetic costs nothing measurable over f32.
pub fn cross_product<T: Real>(a: &[T], b: &[T], d: usize, threads: usize) -> Result<Vec<f64>> {
    let n = check(a, b, d)?;
    let partials: Vec<Vec<f64>> = std::thread::scope(|s| {
        let handles: Vec<_> = chunks(n, threads)
            .into_iter()
            .map(|part| {
                s.spawn(move || {
                    let mut total = vec![0.0f64; d * d];
                    let a = &a[part.start * d..part.end * d];
                    let b = &b[part.start * d..part.end * d];
                    let mut y64 = vec![0.0f64; d];
                    for (x, y) in a.chunks_exact(d).zip(b.chunks_exact(d)) {
                        for (t, &v) in y64.iter_mut().zip(y) {
                            *t = v.into();
                        }
                        for (j, &xj) in x.iter().enumerate() {
                            let xj: f64 = xj.into();
                            for (acc, &yk) in total[j * d..(j + 1) * d].iter_mut().zip(&y64) {
                                *acc += xj * yk;
                            }
                        }
                    }
                    total
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("cross-product worker panicked"))
            .collect()
    });
    let mut out = vec![0.0f64; d * d];
    for p in partials {
        for (o, v) in out.iter_mut().zip(p) {
            *o += v;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to64(x: &[f32]) -> Vec<f64> {
        x.iter().map(|&v| f64::from(v)).collect()
    }

    #[test]
    fn cosine_and_cross_product_match_naive() {
        let d = 3;
        let a: Vec<f32> = (0..3000).map(|k| ((k * 7 % 11) as f32) - 5.0).collect();
        let b: Vec<f32> = (0..3000).map(|k| ((k * 5 % 13) as f32) - 6.0).collect();
        let c = rowwise_cosine(&a, &b, d, 2).unwrap();
        assert_eq!(rowwise_cosine(&to64(&a), &to64(&b), d, 1).unwrap(), c);
        for (i, ci) in c.iter().enumerate() {
            let x = &a[i * d..(i + 1) * d];
            let y = &b[i * d..(i + 1) * d];
            let dot: f64 = x.iter().zip(y).map(|(p, q)| f64::from(p * q)).sum();
            let nx: f64 = x.iter().map(|p| f64::from(p * p)).sum::<f64>().sqrt();
            let ny: f64 = y.iter().map(|p| f64::from(p * p)).sum::<f64>().sqrt();
            let want = if nx * ny > 0.0 { dot / (nx * ny) } else { 0.0 };
            assert!((ci - want).abs() < 1e-6);
        }
        let m = cross_product(&a, &b, d, 2).unwrap();
        for j in 0..d {
            for k in 0..d {
                let want: f64 = (0..1000)
                    .map(|i| f64::from(a[i * d + j]) * f64::from(b[i * d + k]))
                    .sum();
                assert!((m[j * d + k] - want).abs() < 1e-6 * want.abs().max(1.0));
            }
        }
        assert!(rowwise_cosine(&a, &b[..3], d, 1).is_err());
    }
}
