//! White-box attack at every split of the built-in Fashion-MNIST model, on the ten bundled test
//! images: mean SSIM and PSNR of the reconstructions, and the model's accuracy on them.
//! `cargo run --release -p origami-audit --example whitebox_layers [steps]`
use std::path::Path;
use std::sync::Arc;

use origami_audit::capture::capture;
use origami_audit::metrics::{psnr, ssim};
use origami_audit::whitebox::{invert, WhiteboxConfig};
use origami_enclave::{Placement, Plan, QuantConfig};
use origami_model::{exec, input, zoo, Tensor};

fn main() {
    let steps: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
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
    println!("split  node        ssim    psnr dB  accuracy on reconstructions");
    for split in 1..plan.linears.len() {
        let head_end = Placement::Origami { split }.head_end(&plan).unwrap();
        let (mut s, mut p, mut ok) = (0.0, 0.0, 0);
        for (class, x) in &imgs {
            let f = capture(&plan, split, x).unwrap();
            let r = invert(&plan.model, head_end, &f[0].1.data, &cfg).unwrap();
            s += ssim(&r, &x.data, 28, 28);
            p += psnr(&r, &x.data);
            let y = exec::run(&plan.model, &Tensor::new(vec![1, 1, 28, 28], r).unwrap()).unwrap();
            ok += (y.top_k(1)[0][0].0 == *class) as usize;
        }
        let n = imgs.len() as f64;
        println!(
            "{split:>5}  {:<10} {:>6.3} {:>9.1}  {}/{}",
            plan.model.nodes[head_end - 1].name,
            s / n,
            p / n,
            ok,
            imgs.len()
        );
    }
}
