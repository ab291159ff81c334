//! Winograd F(2×2, 3×3) against im2col + GEMM on VGG-16's 3×3 convolution shapes (f32, one
//! thread unless given): `cargo run --release -p origami-model --example winograd [threads]`.
use std::time::Instant;

use origami_model::ir::Conv;
use origami_model::linalg::{conv2d, ConvGeom};
use origami_model::winograd;

fn best(f: &mut dyn FnMut()) -> f64 {
    (0..5)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::MAX, f64::min)
}

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .expect("thread pool");
    println!("shape (in → out @ hw)       im2col+GEMM ms   winograd ms   ratio");
    for (ci, co, hw) in [
        (64, 64, 224),
        (64, 128, 112),
        (128, 128, 112),
        (128, 256, 56),
        (256, 256, 56),
        (256, 512, 28),
        (512, 512, 28),
        (512, 512, 14),
    ] {
        let conv = Conv {
            out_c: co,
            in_c: ci,
            kh: 3,
            kw: 3,
            stride: [1, 1],
            pads: [1; 4],
            groups: 1,
            weight: vec![],
            bias: vec![],
        };
        let g = ConvGeom::new(&conv, hw, hw).expect("geometry");
        let x: Vec<f32> = (0..g.in_len()).map(|i| (i % 13) as f32 * 0.1).collect();
        let w: Vec<f32> = (0..co * ci * 9).map(|i| (i % 7) as f32 * 0.01).collect();
        let mut out = vec![0f32; g.out_len()];
        let direct = best(&mut || conv2d(&g, &x, &w, &mut out, threads));
        if !winograd::applies(&g) {
            println!("{ci:>4} → {co:>4} @ {hw:>3}            {direct:>8.2}      (too few tiles: im2col + GEMM)");
            continue;
        }
        let bias = vec![0f32; co];
        // The filter transform is part of every call of the executor: timed with it.
        let wino = best(&mut || {
            let f = winograd::Filters::new(&g, &w, threads);
            winograd::conv3x3(&g, &f, &x, (&bias, false), &mut out, threads)
        });
        println!(
            "{ci:>4} → {co:>4} @ {hw:>3}            {direct:>8.2}      {wino:>8.2}     {:.2}x",
            direct / wino
        );
    }
}
