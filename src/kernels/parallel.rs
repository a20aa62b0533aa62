//! Splitting a call's work across threads: how many workers a call gets
//! (capped by the work, never one OS thread per requested thread whatever
//! the batch) and the one scoped fan-out every parallel call uses, which
//! turns a failed spawn or a worker panic into an error instead of a panic.

use crate::error::{Error, Result};

/// Fewest items a worker thread is given: below this a thread costs more to
/// start than it saves.
pub const MIN_ITEMS_PER_THREAD: usize = 4096;

/// Most threads one call starts, whatever it asks for.
pub const MAX_THREADS: usize = 1024;

/// Workers for `n` items when `threads` are asked for: at most `threads`,
/// at most `MAX_THREADS`, and at most one per `MIN_ITEMS_PER_THREAD` items
/// (at least one).
pub fn workers(n: usize, threads: usize) -> usize {
    threads
        .min(MAX_THREADS)
        .min(n / MIN_ITEMS_PER_THREAD)
        .max(1)
}

/// Split 0..n into `threads` contiguous chunks (at least one, possibly empty).
pub fn chunks(n: usize, threads: usize) -> Vec<std::ops::Range<usize>> {
    let t = threads.max(1).min(n.max(1));
    (0..t).map(|k| (k * n / t)..((k + 1) * n / t)).collect()
}

/// Runs `work` on each of `parts` (one scoped thread per part beyond the
/// first, which runs on the calling thread) and returns the results in
/// order. A thread that cannot be spawned or that panics makes the call an
/// `Error::Internal` naming `call` (after every started worker finished).
pub fn fan_out<P, T, F>(call: &str, parts: Vec<P>, work: F) -> Result<Vec<T>>
where
    P: Send,
    T: Send,
    F: Fn(P) -> T + Sync,
{
    let internal = |message: String| Error::Internal {
        call: call.to_string(),
        message,
    };
    let mut parts = parts.into_iter();
    let Some(first) = parts.next() else {
        return Ok(Vec::new());
    };
    let work = &work;
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        let mut spawn_error = None;
        for p in parts {
            match std::thread::Builder::new().spawn_scoped(s, move || work(p)) {
                Ok(h) => handles.push(h),
                Err(e) => {
                    spawn_error = Some(format!("failed to start a worker thread: {e}"));
                    break;
                }
            }
        }
        let head = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(first)));
        let mut out = Vec::with_capacity(handles.len() + 1);
        let mut panicked = head.is_err();
        if let Ok(v) = head {
            out.push(v);
        }
        for h in handles {
            match h.join() {
                Ok(v) => out.push(v),
                Err(_) => panicked = true,
            }
        }
        if let Some(e) = spawn_error {
            return Err(internal(e));
        }
        if panicked {
            return Err(internal("a worker thread panicked".to_string()));
        }
        Ok(out)
    })
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

    #[test]
    fn workers_are_capped_by_the_work() {
        assert_eq!(workers(10, 200_000), 1);
        assert_eq!(workers(200_000, 200_000), 200_000 / MIN_ITEMS_PER_THREAD);
        assert_eq!(workers(1 << 40, 1 << 30), MAX_THREADS);
        assert_eq!(workers(0, 0), 1);
    }

    #[test]
    fn fan_out_keeps_order_and_reports_panics() {
        let r = fan_out("test", vec![1, 2, 3], |x| x * 10).unwrap();
        assert_eq!(r, vec![10, 20, 30]);
        let err = fan_out("the call", vec![1, 2], |x| {
            assert!(x != 2, "boom");
            x
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("internal error in the call"),
            "{err}"
        );
    }
}
