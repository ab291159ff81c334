//! GEMM throughput of faer on conv-like shapes (row-major m×k times k×n), f32 and f64.
use std::time::Instant;

use origami_model::linalg::gemm;

fn time<T: origami_model::linalg::Scalar>(
    m: usize,
    k: usize,
    n: usize,
    threads: usize,
    one: T,
) -> f64 {
    let a = vec![one; m * k];
    let b = vec![one; k * n];
    let mut c = vec![one; m * n];
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        gemm(m, k, n, &a, &b, &mut c, threads);
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (m * k * n) as f64 / best / 1e9
}

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .ok();
    for &(m, k, n) in &[
        (64, 576, 256),
        (64, 576, 4096),
        (64, 576, 50176),
        (128, 1152, 256),
        (128, 1152, 12544),
        (256, 2304, 256),
        (512, 4608, 196),
        (64, 27, 256),
    ] {
        println!(
            "{m}x{k}x{n}: f32 {:.1} GFLOP/s, f64 {:.1} GFLOP/s",
            time(m, k, n, threads, 1f32),
            time(m, k, n, threads, 1f64)
        );
    }
}
