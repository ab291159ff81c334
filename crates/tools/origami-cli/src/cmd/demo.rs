//! `origami demo`: a private inference end to end on a built-in model and a bundled image.

use std::time::Instant;

use anyhow::{bail, Result};
use origami_model::{input, zoo};
use origami_plan::Placement;

use crate::common::*;

#[derive(clap::Args)]
pub struct Args {
    /// Built-in model: fashion (trained), small, resnet-small, vgg16, vgg19 (or vgg16@N).
    #[arg(long, default_value = "fashion")]
    pub model: String,
    /// Which bundled Fashion-MNIST test image (0–9) for 28×28 models.
    #[arg(long, default_value_t = 0)]
    pub image: usize,
}

pub fn main(a: Args, accel: Accel) -> Result<()> {
    let (name, image_index) = (a.model.as_str(), a.image);
    let model = load_model(name)?;
    if image_index >= BUNDLED.len() {
        bail!("--image must be 0–{}", BUNDLED.len() - 1);
    }
    let (img_name, x) = if model.input_shape[1..] == [28, 28] {
        let (n, bytes) = BUNDLED[image_index];
        (
            n.to_string(),
            input::image_to_tensor(&image::load_from_memory(bytes)?, &model),
        )
    } else {
        (
            "seeded random image".to_string(),
            zoo::seeded_input(&model, 1),
        )
    };
    let split = default_split(&model);
    let placement = Placement::Origami { split };
    println!(
        "origami demo: model {} ({} linear layers, {:.3} GMAC), input {img_name}",
        model.name,
        model.linear_nodes().len(),
        model.macs()? as f64 / 1e9
    );
    if name == "fashion" {
        println!("weights: trained on Fashion-MNIST by `origami train` (the image's true class is in its file name)");
    } else {
        println!("weights: seeded, untrained (labels are not meaningful)");
    }
    let t = Instant::now();
    let plan = build_plan(&model, 4)?;
    println!(
        "plan: calibrated and quantized in {:.1} ms (hash {})",
        t.elapsed().as_secs_f64() * 1e3,
        hex(&plan.hash[..8])
    );
    let head_end = plan.head_end(placement)?;
    println!(
        "placement: {} — enclave runs nodes 0..{head_end} ({}), accelerator runs the rest in plain; blinded layers verified (Freivalds)",
        placement.name(),
        plan.model.nodes[..head_end.index()].iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ")
    );
    println!("enclave platform: in-process, NO TEE (simulation for development)");
    println!("{}", audit_verdict(&model, split, None));
    let (out, st, pre, engine) =
        infer_once(accel, &model, plan.clone(), placement, true, x.clone())?;
    print_answer(&model, &out);
    print_times(&st, pre);
    let s = engine.core.stats();
    println!(
        "enclave core memory: {:.2} MiB resident + {:.2} MiB peak per request ({:.2} MiB peak while precomputing)",
        s.static_bytes as f64 / 1048576.0,
        s.peak_request_bytes as f64 / 1048576.0,
        s.peak_precompute_bytes as f64 / 1048576.0
    );
    let want = origami_enclave::reference(&plan, &x, head_end, 1)?;
    println!(
        "check: result is bit-identical to the quantized reference: {}",
        if want == out { "yes" } else { "NO" }
    );
    if want != out {
        bail!("the private result differs from the reference");
    }
    if let Some(labels) = &model.labels {
        if let Some(&(c, _)) = out.top_k(1)[0].first() {
            println!(
                "answer: {}",
                labels.get(c).map(String::as_str).unwrap_or("?")
            );
        }
    }
    Ok(())
}
