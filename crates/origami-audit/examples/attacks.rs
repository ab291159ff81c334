//! The white-box attack and the learned decoder at every split of the built-in Fashion-MNIST
//! model, scored on the ten bundled test images (never used for training): mean SSIM and PSNR
//! of the reconstructions, and the model's accuracy on them. The decoder trains on the first
//! `n_train` Fashion-MNIST training images (Debian's dataset-fashion-mnist).
//! `cargo run --release -p origami-audit --example attacks [steps] [n_train] [epochs]`
use std::path::Path;
use std::sync::Arc;

use origami_audit::capture::capture;
use origami_audit::decoder::{features, Decoder, DecoderConfig};
use origami_audit::metrics::{psnr, ssim};
use origami_audit::whitebox::{invert, WhiteboxConfig};
use origami_enclave::{Placement, Plan, QuantConfig};
use origami_model::{exec, input, zoo, Tensor};

fn main() {
    let arg = |i: usize, d: usize| -> usize {
        std::env::args()
            .nth(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let (steps, n_train, epochs) = (arg(1, 300), arg(2, 20_000), arg(3, 4));
    let fm = std::path::Path::new(origami_train::data::DEFAULT_DIR);
    let train = origami_train::data::load(fm, origami_train::data::Split::Train)
        .unwrap()
        .truncate(n_train);
    let model = zoo::fashion();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../origami-cli/assets");
    let mut imgs: Vec<(usize, Tensor)> = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "png") {
            let name = p.file_stem().unwrap().to_string_lossy().to_string();
            let label = name.split_once('_').unwrap().1.to_string();
            let class = [
                "tshirt",
                "trouser",
                "pullover",
                "dress",
                "coat",
                "sandal",
                "shirt",
                "sneaker",
                "bag",
                "ankle_boot",
            ]
            .iter()
            .position(|l| *l == label)
            .unwrap();
            imgs.push((
                class,
                input::image_to_tensor(&image::open(&p).unwrap(), &model),
            ));
        }
    }
    let calib: Vec<Tensor> = imgs.iter().map(|(_, t)| t.clone()).collect();
    let plan = Arc::new(Plan::build(&model, &calib, QuantConfig::default()).unwrap());
    let cfg = WhiteboxConfig {
        steps,
        ..WhiteboxConfig::default()
    };
    println!("split  node        attack     ssim    psnr dB  accuracy  train s");
    for split in 1..plan.linears.len() {
        let head_end = Placement::Origami { split }.head_end(&plan).unwrap();
        let t = std::time::Instant::now();
        let feats = features(&plan.model, head_end, &train.images).unwrap();
        let dcfg = DecoderConfig {
            epochs,
            ..DecoderConfig::default()
        };
        let dec = Decoder::train(&feats, &train.images, &dcfg, |_, _, _| {}).unwrap();
        let train_s = t.elapsed().as_secs_f64();
        for attack in ["white-box", "decoder"] {
            let (mut s, mut p, mut ok) = (0.0, 0.0, 0);
            for (class, x) in &imgs {
                let f = capture(&plan, split, x).unwrap();
                let r = if attack == "decoder" {
                    dec.invert(&f[0].1.data).unwrap()
                } else {
                    invert(&plan.model, head_end, &f[0].1.data, &cfg).unwrap()
                };
                s += ssim(&r, &x.data, 28, 28);
                p += psnr(&r, &x.data);
                let y =
                    exec::run(&plan.model, &Tensor::new(vec![1, 1, 28, 28], r).unwrap()).unwrap();
                ok += (y.top_k(1)[0][0].0 == *class) as usize;
            }
            let n = imgs.len() as f64;
            let secs = if attack == "decoder" { train_s } else { 0.0 };
            let node = &plan.model.nodes[head_end - 1].name;
            println!(
                "{split:>5}  {node:<10}  {attack:<9} {:>6.3} {:>9.1}  {ok:>2}/{}  {secs:>7.1}",
                s / n,
                p / n,
                imgs.len()
            );
        }
    }
}
