//! `origami run`: one inference with a chosen placement, in this process.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use origami_model::{input, npy};
use origami_plan::Placement;

use crate::common::*;

#[derive(clap::Args)]
pub struct Args {
    /// A .onnx file or a built-in model (small, resnet-small, vgg16, vgg19, vgg16@N).
    #[arg(long)]
    pub model: String,
    /// enclave | slalom | origami | plain
    #[arg(long, default_value = "origami")]
    pub mode: String,
    /// For origami: the head holds the first K linear layers (Conv/Gemm), or `auto`: the
    /// split the privacy audit recommended for this model (see --audit).
    #[arg(long)]
    pub split: Option<String>,
    /// The audit.json that `--split auto` reads (default: ./audit/audit.json, else the
    /// recorded audit of the built-in model).
    #[arg(long)]
    pub audit: Option<PathBuf>,
    #[command(flatten)]
    pub verify: VerifyFlags,
    /// Input: .png, .jpg or .npy (NCHW float32, used as is).
    #[arg(long)]
    pub input: PathBuf,
    /// Write the output tensor as float32 .npy.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Seeded calibration inputs for the fixed-point scales.
    #[arg(long, default_value_t = 4)]
    pub calib: usize,
}

pub fn main(a: Args, accel: Accel) -> Result<()> {
    let (model, mode, split, audit_path) = (
        a.model.as_str(),
        a.mode.as_str(),
        a.split.as_deref(),
        a.audit.as_deref(),
    );
    let (verify, input_path, output, calib) = (
        a.verify.on(),
        a.input.as_path(),
        a.output.as_deref(),
        a.calib,
    );
    let m = load_model(model)?;
    let split = match split {
        None => None,
        Some("auto") => {
            let (k, from) = audited_split(&m, audit_path)?;
            println!("--split auto: split {k}, recommended by the audit in {from}");
            Some(k)
        }
        Some(s) => Some(
            s.parse()
                .with_context(|| format!("--split takes a number or `auto`, got '{s}'"))?,
        ),
    };
    let placement = Placement::parse(mode, split)?;
    if let Placement::Origami { split } = placement {
        println!("{}", audit_verdict(&m, split, audit_path));
    }
    let x = input::load_input(input_path, &m)?;
    let t = Instant::now();
    let plan = build_plan(&m, calib)?;
    let plan_ms = t.elapsed().as_secs_f64() * 1e3;
    if let Some(note) = head_extension(&plan, placement)? {
        println!("{note}");
    }
    println!(
        "model {} | placement {} | verify {} | plan {:.1} ms",
        m.name,
        placement.name(),
        if verify { "on" } else { "off" },
        plan_ms
    );
    let (out, st, pre, _) = infer_once(accel, &m, plan, placement, verify, x)?;
    print_answer(&m, &out);
    print_times(&st, pre);
    if let Some(p) = output {
        npy::write_npy(p, &out)?;
        println!("wrote output {:?} to {}", out.shape, p.display());
    }
    Ok(())
}
