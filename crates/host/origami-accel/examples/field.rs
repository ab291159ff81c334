//! Times the exact field layers of VGG-16 blocks 1–2 (224×224) on the CPU accelerator.
//! `cargo run --release -p origami-accel --example field [threads]`
use std::sync::Arc;
use std::time::Instant;

use origami_accel::{Accelerator, CpuAccelerator, FieldLayer};
use origami_model::linalg::{ConvGeom, LinearShape};
use origami_model::{zoo, Op};

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .ok();
    let m = zoo::vgg16(224);
    let shapes = m.validate().unwrap();
    let mut layers = Vec::new();
    for (i, n) in m.nodes.iter().enumerate().take(14) {
        if let Op::Conv(c) = &n.op {
            let s = &shapes[n.inputs[0].index()];
            let g = ConvGeom::new(c, s[2], s[3]).unwrap();
            let weight = (0..g.out_c * g.k())
                .map(|j| (j % 255) as i32 - 127)
                .collect();
            layers.push((
                n.name.clone(),
                FieldLayer {
                    layer: i as u16,
                    shape: LinearShape::Conv(g),
                    weight,
                },
            ));
        }
    }
    let mut acc = CpuAccelerator::new();
    acc.prepare(
        Arc::new(m),
        &layers.iter().map(|(_, l)| l.clone()).collect::<Vec<_>>(),
    )
    .unwrap();
    let mut total = 0.0;
    for (name, l) in &layers {
        let x: Vec<u32> = (0..l.shape.in_len())
            .map(|j| (j as u32).wrapping_mul(2654435761) % origami_field::P)
            .collect();
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            acc.field_linear(l.layer, &x).unwrap();
            best = best.min(t.elapsed().as_secs_f64() * 1e3);
        }
        let macs = (l.shape.out_len() * l.shape.k()) as f64;
        println!(
            "{name:<8} {best:>8.2} ms {:>6.1} GFLOP/s (f64, exact)",
            2.0 * macs / best / 1e6
        );
        total += best;
    }
    println!("blocks 1-2 field layers: {total:.1} ms");
}
