//! Whole-table scans.

use crate::table::{f32_load, EmbeddingTable};

/// l2-norm of every row, in row order.
pub fn row_norms(t: &EmbeddingTable) -> Vec<f32> {
    let n = t.len();
    let d = t.dim();
    t.weights_region()[..n * d]
        .chunks_exact(d)
        .map(|row| row.iter().map(|a| f32_load(a).powi(2)).sum::<f32>().sqrt())
        .collect()
}
