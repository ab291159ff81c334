//! Times the exact field layers of VGG-16 blocks 1–2 (224×224, the layers `--split 4` blinds)
//! and fc6 on the CPU accelerator, f64 and int8 field kernels side by side (best of 3 each).
//! `cargo run --release -p origami-accel --example field [threads]`
use std::sync::Arc;
use std::time::Instant;

use origami_accel::{Accelerator, CpuAccelerator, FieldKernel, FieldLayer};
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
    layers.truncate(4); // conv1_1 .. conv2_2
    layers.push((
        "fc6".into(),
        FieldLayer {
            layer: 99,
            shape: LinearShape::Dense {
                in_f: 25_088,
                out_f: 4096,
            },
            weight: (0..25_088 * 4096).map(|j: i32| j % 255 - 127).collect(),
        },
    ));
    let m = Arc::new(m);
    let kernels = [FieldKernel::F64, FieldKernel::Auto];
    let mut accs: Vec<CpuAccelerator> = kernels
        .iter()
        .map(|&k| {
            let mut a = CpuAccelerator::with_field_kernel(k).unwrap();
            let ls: Vec<FieldLayer> = layers.iter().map(|(_, l)| l.clone()).collect();
            a.prepare(m.clone(), &ls).unwrap();
            a
        })
        .collect();
    println!(
        "{threads} thread(s); field kernels: f64 | {}",
        accs[1].field_kernel()
    );
    println!("| layer | f64 ms | f64 GOP/s | int8 ms | int8 GOP/s | int8 speed-up |");
    println!("|---|---|---|---|---|---|");
    let mut total = [0.0; 2];
    for (name, l) in &layers {
        let x: Vec<u32> = (0..l.shape.in_len())
            .map(|j| (j as u32).wrapping_mul(2654435761) % origami_field::P)
            .collect();
        let mut best = [f64::MAX; 2];
        let mut outs = Vec::new();
        for (b, acc) in best.iter_mut().zip(&mut accs) {
            for _ in 0..3 {
                let t = Instant::now();
                let y = acc.field_linear(l.layer, &x).unwrap();
                *b = b.min(t.elapsed().as_secs_f64() * 1e3);
                outs.push(y);
            }
        }
        assert!(outs.windows(2).all(|w| w[0] == w[1]), "kernels disagree");
        // One multiply-add = 2 operations, as GFLOP/s counts them.
        let gop = |ms: f64| 2.0 * (l.shape.out_len() * l.shape.k()) as f64 / ms / 1e6;
        println!(
            "| {name} | {:.2} | {:.1} | {:.2} | {:.1} | {:.2}x |",
            best[0],
            gop(best[0]),
            best[1],
            gop(best[1]),
            best[0] / best[1]
        );
        total[0] += best[0];
        total[1] += best[1];
    }
    println!(
        "| all | {:.1} | | {:.1} | | {:.2}x |",
        total[0],
        total[1],
        total[0] / total[1]
    );
}
