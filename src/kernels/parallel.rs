//! Splitting a call's work across threads.

/// Split 0..n into `threads` contiguous chunks (at least one, possibly empty).
pub fn chunks(n: usize, threads: usize) -> Vec<std::ops::Range<usize>> {
    let t = threads.max(1).min(n.max(1));
    (0..t).map(|k| (k * n / t)..((k + 1) * n / t)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_range() {
        let c = chunks(10, 3);
        assert_eq!(c, vec![0..3, 3..6, 6..10]);
        assert_eq!(chunks(0, 4), vec![0..0]);
    }
}
