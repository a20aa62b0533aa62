//! Whole-table scans.

use crate::storage::table::{f32_load, EmbeddingTable};

/// l2-norm of every live row, in row order (the order of `ids()`).
pub fn row_norms(t: &EmbeddingTable) -> Vec<f32> {
    let reader = t.reader();
    reader
        .rows()
        .iter()
        .map(|&r| {
            t.row(r)
                .iter()
                .map(|a| f32_load(a).powi(2))
                .sum::<f32>()
                .sqrt()
        })
        .collect()
}

/// Rows failing one health check: how many, and the first ids found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HealthCheck {
    pub count: usize,
    pub ids: Vec<u64>,
}

impl HealthCheck {
    #[inline]
    fn flag(&mut self, id: u64, max_ids: usize) {
        self.count += 1;
        if self.ids.len() < max_ids {
            self.ids.push(id);
        }
    }
}

/// The health alerts of METRICS ("Health alerts") for one table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Health {
    pub rows: usize,
    /// Rows holding a NaN or an infinity.
    pub non_finite: HealthCheck,
    /// Finite rows whose norm exceeds `max_norm` (None: not checked).
    pub over_norm: Option<HealthCheck>,
    /// Rows never updated by training (updates == 0).
    pub never_updated: HealthCheck,
    /// Rows whose last update is older than `ttl` at `now` (None: not checked).
    pub stale: Option<HealthCheck>,
    /// Largest norm among finite rows (0 for an empty table).
    pub largest_norm: f32,
    /// The time staleness was measured at.
    pub now: i64,
}

/// Scan the live rows of `t` once for the health alerts. `now` defaults to
/// the latest `last_update` in the table; ids are reported in row order, at
/// most `max_ids` per check.
pub fn health(
    t: &EmbeddingTable,
    max_norm: Option<f32>,
    ttl: Option<i64>,
    now: Option<i64>,
    max_ids: usize,
) -> crate::Result<Health> {
    use crate::storage::table::{dec_time, meta};
    use std::sync::atomic::Ordering::Relaxed;
    if let Some(m) = max_norm {
        if !(m.is_finite() && m > 0.0) {
            return Err(crate::error::invalid(format!(
                "max_norm must be a finite number > 0, got {m}"
            )));
        }
    }
    if let Some(ttl) = ttl {
        if ttl < 0 {
            return Err(crate::error::invalid(format!(
                "ttl must be >= 0 seconds, got {ttl}"
            )));
        }
    }
    let reader = t.reader();
    let rows = reader.rows();
    let now = now.unwrap_or_else(|| {
        rows.iter()
            .map(|&r| dec_time(t.meta(r)[meta::LAST_UPDATE].load(Relaxed)))
            .max()
            .unwrap_or(0)
    });
    let mut h = Health {
        rows: rows.len(),
        over_norm: max_norm.map(|_| HealthCheck::default()),
        stale: ttl.map(|_| HealthCheck::default()),
        now,
        ..Default::default()
    };
    let limit_sq = max_norm.map(|m| f64::from(m) * f64::from(m));
    for &r in rows {
        let (row, m) = (t.row(r), t.meta(r));
        let id = m[meta::ID].load(Relaxed);
        let sq: f64 = row.iter().map(|a| f64::from(f32_load(a)).powi(2)).sum();
        if !sq.is_finite() || row.iter().any(|a| !f32_load(a).is_finite()) {
            h.non_finite.flag(id, max_ids);
        } else {
            h.largest_norm = h.largest_norm.max(sq.sqrt() as f32);
            if let (Some(c), Some(l)) = (h.over_norm.as_mut(), limit_sq) {
                if sq > l {
                    c.flag(id, max_ids);
                }
            }
        }
        if m[meta::UPDATES].load(Relaxed) == 0 {
            h.never_updated.flag(id, max_ids);
        }
        if let (Some(c), Some(ttl)) = (h.stale.as_mut(), ttl) {
            let last = dec_time(m[meta::LAST_UPDATE].load(Relaxed));
            if now.saturating_sub(last) > ttl {
                c.flag(id, max_ids);
            }
        }
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::table::TableConfig;

    #[test]
    fn health_flags_each_problem() {
        let t = EmbeddingTable::new(TableConfig {
            capacity: 10,
            ..TableConfig::new(2)
        })
        .unwrap();
        t.assign(&[1, 2, 3], &[f32::NAN, 0.0, 30.0, 40.0, 0.1, 0.1], 5)
            .unwrap();
        let h = health(&t, Some(10.0), Some(3), Some(9), 1).unwrap();
        assert_eq!(
            h.non_finite,
            HealthCheck {
                count: 1,
                ids: vec![1]
            }
        );
        assert_eq!(
            h.over_norm,
            Some(HealthCheck {
                count: 1,
                ids: vec![2]
            })
        );
        assert_eq!(h.never_updated.count, 3);
        assert_eq!(h.never_updated.ids, vec![1]);
        assert_eq!(h.stale.as_ref().map(|s| s.count), Some(3));
        assert_eq!(h.largest_norm, 50.0);
        let h = health(&t, None, None, None, 10).unwrap();
        assert_eq!((h.over_norm, h.stale, h.now), (None, None, 5));
        assert!(health(&t, Some(-1.0), None, None, 1).is_err());
    }
}
