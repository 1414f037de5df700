//! The thread pool: persistent workers built for per-token latency on small models.
//!
//! A forward pass of a 135M-parameter model runs a few hundred small parallel operations per
//! token, each taking tens of microseconds, so starting threads per operation (or waking them
//! through the OS every time) would cost as much as the work. Workers here stay alive, spin on
//! an atomic generation counter for a short while after each job (so the next operation of the
//! same token finds them awake), and only then park on a condition variable. The calling thread
//! always takes part 0 of the work itself. No allocation per operation.
//!
//! Interface: [`for_each_range`] splits `0..n` into one contiguous range per thread;
//! [`for_each_index`] hands out single indices to whichever thread is free. Calls
//! made from inside a worker, or while another thread owns the pool, run serially on the
//! caller (never deadlock).

use std::cell::Cell;
use std::ops::Range;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

static THREADS: AtomicUsize = AtomicUsize::new(0);

/// Number of threads kernels use (defaults to the number of available cores).
pub fn num_threads() -> usize {
    match THREADS.load(Ordering::Relaxed) {
        0 => available_cores(),
        n => n,
    }
}

fn available_cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Set the number of threads (0 = all available cores). Takes effect for later operations;
/// the pool itself is sized once, at first use, for `max(this, cores)` threads.
pub fn set_num_threads(n: usize) {
    THREADS.store(n, Ordering::Relaxed);
}

thread_local! {
    static IN_WORKER: Cell<bool> = const { Cell::new(false) };
}

/// A job: a type-erased `&dyn Fn(part)`.
type JobFn<'a> = dyn Fn(usize) + Sync + 'a;

/// The claim word: generation (bits 40..64), number of parts (bits 20..40) and the next
/// unclaimed part (bits 0..20), updated together so a claim can never mix two jobs.
struct Claim;

impl Claim {
    const PART_BITS: u32 = 20;
    const MASK: u64 = (1 << Self::PART_BITS) - 1;

    fn pack(gen: u64, parts: u64, next: u64) -> u64 {
        (gen << (2 * Self::PART_BITS)) | (parts << Self::PART_BITS) | next
    }

    fn gen(w: u64) -> u64 {
        w >> (2 * Self::PART_BITS)
    }

    fn parts(w: u64) -> u64 {
        (w >> Self::PART_BITS) & Self::MASK
    }

    fn next(w: u64) -> u64 {
        w & Self::MASK
    }
}

struct Shared {
    /// The claim word (see [`Claim`]).
    state: AtomicU64,
    /// Points at the current job's closure (a `*const &JobFn`), valid while a job runs.
    job: AtomicPtr<&'static JobFn<'static>>,
    /// Parts of the current job finished.
    finished: AtomicUsize,
    /// Parking for idle workers: the number of parked workers.
    sleep: Mutex<usize>,
    wake: Condvar,
}

impl Shared {
    /// Claim the next part of generation `gen`, if any is left.
    fn claim(&self, gen: u64) -> Option<usize> {
        let mut w = self.state.load(Ordering::Acquire);
        loop {
            if Claim::gen(w) != gen || Claim::next(w) >= Claim::parts(w) {
                return None;
            }
            match self.state.compare_exchange_weak(w, w + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(Claim::next(w) as usize),
                Err(cur) => w = cur,
            }
        }
    }
}

struct Pool {
    shared: Arc<Shared>,
    /// Held by the thread that runs a job; others run serially.
    owner: Mutex<u64>,
}

/// Spin iterations before a worker parks (a few hundred microseconds).
const SPIN: u32 = 1 << 14;

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let workers = num_threads().max(available_cores()).saturating_sub(1);
        let shared = Arc::new(Shared {
            state: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            finished: AtomicUsize::new(0),
            sleep: Mutex::new(0),
            wake: Condvar::new(),
        });
        for w in 0..workers {
            let s = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("edgellm-worker-{w}"))
                .spawn(move || worker(s))
                .expect("spawning a worker thread");
        }
        Pool { shared, owner: Mutex::new(0) }
    })
}

fn worker(s: Arc<Shared>) {
    IN_WORKER.with(|f| f.set(true));
    let mut seen = 0u64;
    loop {
        // Spin, then park, until a new generation is published.
        let mut spins = 0u32;
        let gen = loop {
            let g = Claim::gen(s.state.load(Ordering::Acquire));
            if g != seen {
                break g;
            }
            if spins < SPIN {
                spins += 1;
                std::hint::spin_loop();
            } else {
                let mut sleeping = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
                if Claim::gen(s.state.load(Ordering::Acquire)) == seen {
                    *sleeping += 1;
                    let (g, _) = s
                        .wake
                        .wait_timeout(sleeping, Duration::from_millis(50))
                        .unwrap_or_else(|e| e.into_inner());
                    sleeping = g;
                    *sleeping -= 1;
                }
                spins = 0;
            }
        };
        seen = gen;
        while let Some(part) = s.claim(gen) {
            let job = s.job.load(Ordering::Acquire);
            // SAFETY: a part of generation `gen` was claimed, so `run` is still waiting for it
            // to finish and the closure it published for this generation is alive.
            let f: &JobFn<'static> = unsafe { *job };
            f(part);
            s.finished.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Run `f(part)` for `part in 0..parts` across the pool; returns when all are done. Parts are
/// claimed dynamically, so a worker the OS has not scheduled yet delays nothing: the caller
/// takes its parts.
fn run<'a>(parts: usize, f: &'a JobFn<'a>) {
    if parts <= 1 || IN_WORKER.with(|w| w.get()) || parts as u64 > Claim::MASK {
        (0..parts).for_each(f);
        return;
    }
    let p = pool();
    let Ok(mut gen) = p.owner.try_lock() else {
        (0..parts).for_each(f);
        return;
    };
    let s = &p.shared;
    // SAFETY: the lifetime is erased only for the duration of this call: we wait below until
    // every claimed part has finished; later claims of this generation fail, so no worker
    // touches `f` after we return.
    let erased: &'static JobFn<'static> =
        unsafe { std::mem::transmute::<&'a JobFn<'a>, &'static JobFn<'static>>(f) };
    let holder: &'static JobFn<'static> = erased;
    s.job.store(&holder as *const &'static JobFn<'static> as *mut &'static JobFn<'static>, Ordering::Release);
    s.finished.store(0, Ordering::Release);
    *gen = (*gen + 1) & ((1 << 24) - 1);
    if *gen == 0 {
        *gen = 1;
    }
    let g = *gen;
    s.state.store(Claim::pack(g, parts as u64, 0), Ordering::Release);
    if *s.sleep.lock().unwrap_or_else(|e| e.into_inner()) > 0 {
        s.wake.notify_all();
    }
    while let Some(part) = s.claim(g) {
        f(part);
        s.finished.fetch_add(1, Ordering::AcqRel);
    }
    while s.finished.load(Ordering::Acquire) < parts {
        std::hint::spin_loop();
    }
}

/// Split `0..n` into at most `num_threads()` contiguous ranges whose lengths are multiples of
/// `grain` (but the last), and run `f(range)` on each in parallel; returns when all are done.
pub fn for_each_range<F>(n: usize, grain: usize, f: F)
where
    F: Fn(Range<usize>) + Sync,
{
    let grain = grain.max(1);
    let threads = num_threads().min(n.div_ceil(grain)).max(1);
    if threads == 1 {
        if n > 0 {
            f(0..n);
        }
        return;
    }
    let per = n.div_ceil(threads).div_ceil(grain) * grain;
    let parts = n.div_ceil(per);
    run(parts, &|part| {
        let start = part * per;
        f(start..(start + per).min(n));
    });
}

/// Run `f(i)` for every `i in 0..n` across the pool, each index a part that the next free
/// thread claims; returns when all are done. For work of uneven cost (causal attention: later
/// query blocks see more keys), where [`for_each_range`]'s equal contiguous split would leave
/// one thread waiting: order the indices most expensive first and the claims balance the load.
/// A claim is one atomic operation, so an index should stand for at least a few microseconds.
pub fn for_each_index<F>(n: usize, f: F)
where
    F: Fn(usize) + Sync,
{
    if num_threads() == 1 || n <= 1 {
        (0..n).for_each(f);
        return;
    }
    run(n, &f);
}

/// Work below this many elements runs on the calling thread in [`for_each_rows_mut`]: a
/// parallel region costs a few microseconds of hand-off.
const ROWS_MUT_MIN: usize = 1 << 15;

/// Runs `f(first_row, rows)` over `data` seen as rows of `row_len` values, split into one
/// contiguous run of whole rows per thread; each call gets its own `&mut` sub-slice (and the
/// index of its first row). Small data (under 32 Ki values) runs as one call on the caller.
///
/// # Panics
/// If `row_len` is 0 or does not divide `data.len()`.
pub fn for_each_rows_mut<T, F>(data: &mut [T], row_len: usize, f: F)
where
    T: Copy + Send,
    F: Fn(usize, &mut [T]) + Sync,
{
    assert!(
        row_len > 0 && data.len().is_multiple_of(row_len),
        "for_each_rows_mut: {} values are not rows of {row_len}",
        data.len()
    );
    let rows = data.len() / row_len;
    if data.len() < ROWS_MUT_MIN || rows < 2 || num_threads() == 1 {
        f(0, data);
        return;
    }
    let w = DisjointWriter::new(data);
    for_each_range(rows, 1, |r| {
        // SAFETY: the ranges of `for_each_range` are disjoint, so are these sub-slices.
        let part = unsafe { w.slice_mut(r.start * row_len, r.len() * row_len) };
        f(r.start, part);
    });
}

/// A slice that several pool threads write to at disjoint indices (e.g. the output of a
/// matrix product split by rows, where each thread's rows are strided through the output).
pub struct DisjointWriter<'a, T> {
    ptr: *mut T,
    len: usize,
    _life: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: writers only hand out element writes; callers promise disjoint indices per thread.
unsafe impl<T: Send> Sync for DisjointWriter<'_, T> {}
unsafe impl<T: Send> Send for DisjointWriter<'_, T> {}

impl<'a, T: Copy> DisjointWriter<'a, T> {
    /// Wrap a slice for the duration of a parallel operation.
    pub fn new(s: &'a mut [T]) -> Self {
        DisjointWriter { ptr: s.as_mut_ptr(), len: s.len(), _life: std::marker::PhantomData }
    }

    /// The first element's address and the length (for kernels that write disjoint elements
    /// through a raw pointer; the exclusivity promise is theirs to keep).
    pub fn raw_parts(&self) -> (*mut T, usize) {
        (self.ptr, self.len)
    }

    /// Write `v` at index `i`.
    ///
    /// # Safety
    /// No other thread may read or write index `i` during the parallel operation.
    #[inline]
    pub unsafe fn write(&self, i: usize, v: T) {
        assert!(i < self.len, "index {i} out of bounds ({})", self.len);
        // SAFETY: in bounds (checked); exclusivity of index `i` is the caller's promise.
        unsafe { self.ptr.add(i).write(v) }
    }

    /// The elements `start..start + len` as a mutable slice.
    ///
    /// # Safety
    /// No other thread may read or write those indices while the slice lives (in particular,
    /// slices handed to different threads must not overlap).
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice_mut(&self, start: usize, len: usize) -> &'a mut [T] {
        assert!(
            start.checked_add(len).is_some_and(|e| e <= self.len),
            "range {start}..+{len} out of bounds ({})",
            self.len
        );
        // SAFETY: in bounds (checked); exclusivity is the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }

    /// Write `src` at indices `start..start + src.len()`.
    ///
    /// # Safety
    /// No other thread may read or write those indices during the parallel operation.
    #[inline]
    pub unsafe fn write_slice(&self, start: usize, src: &[T]) {
        assert!(
            start.checked_add(src.len()).is_some_and(|e| e <= self.len),
            "range {start}..+{} out of bounds ({})",
            src.len(),
            self.len
        );
        // SAFETY: in bounds (checked); exclusivity of the range is the caller's promise, and
        // `src` cannot alias it (it is a shared borrow while the range is exclusively ours).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.add(start), src.len()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn covers_every_index_once() {
        for n in [0, 1, 7, 64, 1000, 4097] {
            for grain in [1, 4, 64] {
                let seen: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
                for_each_range(n, grain, |r| {
                    for i in r {
                        seen[i].fetch_add(1, Ordering::Relaxed);
                    }
                });
                assert!(seen.iter().all(|c| c.load(Ordering::Relaxed) == 1), "n {n} grain {grain}");
            }
        }
    }

    #[test]
    fn for_each_index_covers_every_index_once() {
        for n in [0, 1, 2, 3, 191, 5000] {
            let seen: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
            for_each_index(n, |i| {
                seen[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(seen.iter().all(|c| c.load(Ordering::Relaxed) == 1), "n {n}");
        }
    }

    #[test]
    fn rows_mut_covers_every_row_once_with_its_index() {
        for rows in [1, 2, 3, 100, 5000] {
            let mut data = vec![0u32; rows * 7];
            for_each_rows_mut(&mut data, 7, |first, part| {
                for (i, row) in part.chunks_exact_mut(7).enumerate() {
                    row.iter_mut().for_each(|v| *v += (first + i) as u32 + 1);
                }
            });
            for (i, row) in data.chunks_exact(7).enumerate() {
                assert!(row.iter().all(|&v| v == i as u32 + 1), "rows {rows}: row {i}");
            }
        }
    }

    #[test]
    fn many_small_jobs_and_nested_calls() {
        let total = AtomicUsize::new(0);
        for _ in 0..2000 {
            for_each_range(8, 1, |r| {
                // A nested call runs serially on the worker.
                for_each_range(r.len(), 1, |q| {
                    total.fetch_add(q.len(), Ordering::Relaxed);
                });
            });
        }
        assert_eq!(total.load(Ordering::Relaxed), 16000);
    }

    #[test]
    fn concurrent_callers_do_not_interfere() {
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..200 {
                        let sum = AtomicUsize::new(0);
                        for_each_range(100, 3, |r| {
                            sum.fetch_add(r.sum::<usize>(), Ordering::Relaxed);
                        });
                        assert_eq!(sum.load(Ordering::Relaxed), 4950);
                    }
                });
            }
        });
    }
}
