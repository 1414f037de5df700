//! Work splitting across CPU threads.
//!
//! A deliberately small interface — "run `f(i)` for every task index" — so the implementation
//! can become a persistent spin-then-park pool without touching callers.

use std::sync::atomic::{AtomicUsize, Ordering};

static THREADS: AtomicUsize = AtomicUsize::new(0);

/// Number of worker threads used by kernels (defaults to the number of available cores).
pub fn num_threads() -> usize {
    match THREADS.load(Ordering::Relaxed) {
        0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        n => n,
    }
}

/// Set the number of worker threads (0 = all available cores).
pub fn set_num_threads(n: usize) {
    THREADS.store(n, Ordering::Relaxed);
}

/// Split `0..n` into at most `num_threads()` contiguous ranges of multiples of `grain`
/// and run `f(range)` on each, in parallel; returns when all are done.
pub fn for_each_range<F>(n: usize, grain: usize, f: F)
where
    F: Fn(std::ops::Range<usize>) + Sync,
{
    let grain = grain.max(1);
    let threads = num_threads().min(n.div_ceil(grain)).max(1);
    if threads == 1 {
        f(0..n);
        return;
    }
    let per = n.div_ceil(threads).div_ceil(grain) * grain;
    std::thread::scope(|s| {
        let f = &f;
        let mut start = per;
        while start < n {
            let end = (start + per).min(n);
            s.spawn(move || f(start..end));
            start = end;
        }
        f(0..per.min(n));
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn covers_every_index_once() {
        for n in [0, 1, 7, 64, 1000] {
            let seen = Mutex::new(vec![0u32; n]);
            for_each_range(n, 4, |r| {
                let mut s = seen.lock().unwrap();
                for i in r {
                    s[i] += 1;
                }
            });
            assert!(seen.into_inner().unwrap().iter().all(|&c| c == 1));
        }
    }
}
