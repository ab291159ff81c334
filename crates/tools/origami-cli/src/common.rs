//! What several commands share: the accelerator choice, the verify flags, loading a model and
//! building its plan, printing an answer, and finding the enclave binary.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use origami_accel::CpuAccelerator;
use origami_enclave::CoreConfig;
use origami_host::local::Engine;
use origami_host::StageTimes;
use origami_model::{exec, zoo, Model, Op, Tensor};
use origami_plan::{Placement, Plan, QuantConfig};

pub use origami_audit::split::{audited_split, default_split, verdict as audit_verdict};
pub use origami_proto::evidence::hex;

/// Bundled Fashion-MNIST test images, the first ten of the test set.
pub const BUNDLED: [(&str, &[u8]); 10] = origami_model::input::SAMPLE_PNGS;

/// The untrusted accelerator chosen with `--accel` (and `--tf32`).
#[derive(Clone, Copy, Debug)]
pub enum Accel {
    Cpu,
    Cuda { tf32_tail: bool },
}

impl Accel {
    /// Reads `--accel` and `--tf32`.
    pub fn parse(name: &str, tf32: bool) -> Result<Self> {
        Ok(match (name, tf32) {
            ("cpu", false) => Self::Cpu,
            ("cpu", true) => bail!("--tf32 needs --accel cuda (the CPU tail is always f32)"),
            ("cuda", tf32_tail) => Self::Cuda { tf32_tail },
            (other, _) => bail!("unknown accelerator {other:?}: cpu | cuda"),
        })
    }

    /// Whether this is a GPU (where batching the tails pays).
    pub fn is_gpu(&self) -> bool {
        matches!(self, Self::Cuda { .. })
    }

    /// A new accelerator of this kind; `cuda` says clearly why it cannot start.
    pub fn make(&self) -> Result<Box<dyn origami_accel::Accelerator>> {
        match *self {
            Self::Cuda { tf32_tail } => Ok(Box::new(
                origami_cuda::CudaAccelerator::with_options(
                    0,
                    origami_cuda::CudaOptions { tf32_tail },
                )
                .context("--accel cuda: no usable NVIDIA GPU (use --accel cpu, the default)")?,
            )),
            Self::Cpu => Ok(Box::new(CpuAccelerator::new())),
        }
    }
}

/// `--verify` / `--no-verify`: the Freivalds checks, on unless turned off.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct VerifyFlags {
    /// Freivalds integrity checks on every blinded layer: on by default (accepted for
    /// compatibility; `--no-verify` turns them off).
    #[arg(long, overrides_with = "no_verify")]
    verify: bool,
    /// Turn the Freivalds checks off (benchmarks only: the evidence says so and clients'
    /// default policy refuses such an enclave).
    #[arg(long)]
    no_verify: bool,
}

impl VerifyFlags {
    /// Whether the checks are on.
    pub fn on(&self) -> bool {
        !self.no_verify
    }
}

pub fn load_model(spec: &str) -> Result<Model> {
    zoo::load(spec).with_context(|| format!("loading {spec}"))
}

/// Calibration inputs (`zoo::calibration`: seeded inputs, plus the bundled images for 28×28
/// models), shared with the enclave binary.
pub fn calibration(model: &Model, n: usize) -> Result<Vec<Tensor>> {
    let v = zoo::calibration(model, n);
    if v.is_empty() {
        bail!("--calib must be at least 1");
    }
    Ok(v)
}

pub fn build_plan(model: &Model, calib: usize) -> Result<Arc<Plan>> {
    let c = calibration(model, calib)?;
    Ok(Arc::new(Plan::build(model, &c, QuantConfig::default())?))
}

/// Where the enclave's part of `placement` really ends, when a branch made it longer than
/// `--split` asked: the head extends to the linear layer where all branches have joined, so the
/// host is handed one tensor. `None` when the head ends where asked.
pub fn head_extension(plan: &Plan, placement: Placement) -> Result<Option<String>> {
    let Placement::Origami { split } = placement else {
        return Ok(None);
    };
    let end = plan.head_end(placement)?;
    let layers = plan.model.head_layers(end);
    if layers == split {
        return Ok(None);
    }
    let last = end
        .index()
        .checked_sub(1)
        .map_or("the input", |i| plan.model.nodes[i].name.as_str());
    Ok(Some(format!(
        "--split {split} falls inside a branch: the head extends to {layers} linear layers \
         (through node '{last}'), where the branches join, so the host is handed one tensor"
    )))
}

pub fn print_answer(model: &Model, out: &Tensor) {
    let probs = if model
        .output
        .node()
        .and_then(|n| model.nodes.get(n.index()))
        .is_some_and(|n| matches!(n.op, Op::Softmax))
    {
        out.clone()
    } else {
        let mut p = out.clone();
        let last = *p.shape.last().unwrap_or(&1);
        for row in p.data.chunks_mut(last.max(1)) {
            exec::softmax_in_place(row);
        }
        p
    };
    println!("top-5:");
    for (i, (c, prob)) in probs.top_k(5)[0].iter().enumerate() {
        let label = model
            .labels
            .as_ref()
            .and_then(|l| l.get(*c))
            .map(String::as_str)
            .unwrap_or("");
        println!("  {}. class {c:>4} {label:<14} p = {prob:.4}", i + 1);
    }
}

pub fn print_times(st: &StageTimes, precompute_ms: f64) {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    println!("time (ms): total {:.2} | enclave {:.2} | blinded layers on accelerator {:.2} ({} offloads, {:.1} MiB out) | plain tail {:.2}", ms(st.total), ms(st.enclave), ms(st.field), st.offloads, st.bytes_out as f64 / (1 << 20) as f64, ms(st.tail));
    println!(
        "offline precompute (u = W·r in the enclave, sealed): {precompute_ms:.2} ms per image"
    );
}

pub fn infer_once(
    accel: Accel,
    model: &Model,
    plan: Arc<Plan>,
    placement: Placement,
    verify: bool,
    x: Tensor,
) -> Result<(Tensor, StageTimes, f64, Engine)> {
    let cfg = CoreConfig {
        placement,
        verify,
        threads: 1,
    };
    let mut engine = Engine::new(plan, cfg, accel.make()?)?;
    let pre = engine.precompute(1)?;
    let (out, st) = engine
        .infer(x)
        .with_context(|| format!("private inference on {}", model.name))?;
    Ok((out, st, pre.as_secs_f64() * 1e3, engine))
}

/// The model, placement (origami's split defaults as in `demo`) and plan an enclave serves.
pub fn served(
    model: &str,
    mode: &str,
    split: Option<usize>,
    calib: usize,
) -> Result<(Model, Placement, Arc<Plan>)> {
    let m = load_model(model)?;
    let placement = served_placement(&m, mode, split)?;
    let plan = build_plan(&m, calib)?;
    Ok((m, placement, plan))
}

/// The placement `serve`/`enclave` run: `origami` without `--split` takes the model's default.
pub fn served_placement(m: &Model, mode: &str, split: Option<usize>) -> Result<Placement> {
    let split = match (mode, split) {
        ("origami", None) => Some(default_split(m)),
        _ => split,
    };
    Ok(Placement::parse(mode, split)?)
}

/// The enclave binary (`origami-enclave`), installed next to this one.
pub fn enclave_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the origami binary")?;
    let bin = exe.with_file_name("origami-enclave");
    if !bin.is_file() {
        bail!(
            "the enclave binary {} is missing: build it next to origami (cargo build --release -p origami-cli -p origami-enclave-bin)",
            bin.display()
        );
    }
    Ok(bin)
}

/// The link token of `--enclave-token-file`, if given.
pub fn link_token(path: Option<PathBuf>) -> Result<Option<Arc<origami_proto::link::LinkToken>>> {
    Ok(match path {
        Some(p) => Some(Arc::new(origami_proto::link::LinkToken::read(&p)?)),
        None => None,
    })
}
