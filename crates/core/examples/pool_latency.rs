//! Round-trip latency of an empty parallel operation on the thread pool.
use std::time::Instant;
fn main() {
    for threads in [1, 2] {
        edgellm_core::parallel::set_num_threads(threads);
        let n = 20000;
        let t = Instant::now();
        for _ in 0..n {
            edgellm_core::parallel::for_each_range(64, 1, |r| {
                std::hint::black_box(r);
            });
        }
        println!("{threads} threads: {:.2} µs per operation", t.elapsed().as_secs_f64() * 1e6 / n as f64);
    }
}
