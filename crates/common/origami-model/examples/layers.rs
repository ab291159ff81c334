//! Per-layer timing of the float executor on VGG-16 (224×224): where the time goes.
//! `cargo run --release -p origami-model --example layers [threads]`
use std::time::Instant;

use origami_model::{exec, zoo, Tensor};

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .ok();
    let m = zoo::vgg16(224);
    let x = zoo::seeded_input(&m, 1);
    let mut vals: Vec<Option<Tensor>> = vec![None; m.num_values()];
    vals[0] = Some(x.clone());
    let mut total = 0.0;
    for (i, n) in m.nodes.iter().enumerate() {
        let ins: Vec<&Tensor> = n
            .inputs
            .iter()
            .map(|&v| vals[v.index()].as_ref().unwrap())
            .collect();
        let mut best = f64::MAX;
        let mut out = None;
        for _ in 0..3 {
            let t = Instant::now();
            out = Some(exec::eval_node(n, &ins, threads).unwrap());
            best = best.min(t.elapsed().as_secs_f64() * 1e3);
        }
        total += best;
        let macs = match &n.op {
            origami_model::Op::Conv(c) => {
                let o = out.as_ref().unwrap();
                (o.shape[2] * o.shape[3] * c.out_c * c.k()) as f64
            }
            origami_model::Op::Dense(d) => (d.in_f * d.out_f) as f64,
            _ => 0.0,
        };
        println!(
            "{:<10} {:>8.2} ms {:>7.1} GFLOP/s",
            n.name,
            best,
            if macs > 0.0 {
                2.0 * macs / best / 1e6
            } else {
                0.0
            }
        );
        vals[i + 1] = out;
    }
    println!("sum of best per-layer times: {total:.1} ms");
    let t = Instant::now();
    exec::run(&m, &x).unwrap();
    println!("end to end: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
}
