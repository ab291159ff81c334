//! Side-by-side benchmark of placements on one model and input, in one process: warm-ups,
//! medians, ratios, enclave-core memory and the offline precompute cost per image.
//!
//! Besides the four placements, `tee-plain` ([`BenchConfig::tee_plain`]): the whole float model
//! run by the fastest float executor (this project's, `origami_model::exec`) on the enclave's
//! threads — what a user runs instead in a confidential VM with no accelerator. It is the honest
//! all-in-TEE baseline; `enclave` (the quantized integer path in the enclave core) is slower.

use std::sync::Arc;
use std::time::Duration;

use origami_accel::{AccelError, Accelerator};
use origami_enclave::CoreConfig;
use origami_model::{Op, Tensor};
use origami_plan::{Placement, Plan};
use serde::Serialize;

use crate::local::Engine;
use crate::{HostError, StageTimes};

/// Benchmark settings.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub placements: Vec<Placement>,
    pub warmup: usize,
    pub iters: usize,
    pub verify: bool,
    /// Threads of the enclave core (1 = one enclave thread).
    pub enclave_threads: usize,
    /// Enclave threads for the offline precompute before the timed runs (the pads are the
    /// same; only `precompute_ms_per_image` depends on it).
    pub precompute_threads: usize,
    /// Images per run: heads one by one through the enclave, then one batched tail call
    /// (`Engine::infer_batch`, as the server batches). 1: `Engine::infer`.
    pub batch: usize,
    /// Also time `tee-plain` (after the placements).
    pub tee_plain: bool,
}

/// `tee-plain`'s result name.
pub const TEE_PLAIN: &str = "tee-plain";

/// The whole float model on `threads` threads of its own (a confidential VM's cores): the
/// same executor and bits as the `plain` placement's tail at the same thread count.
pub fn tee_plain(
    model: &origami_model::Model,
    input: &Tensor,
    threads: usize,
) -> Result<Tensor, HostError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .map_err(|e| HostError::Baseline(format!("thread pool: {e}")))?;
    pool.install(|| origami_model::exec::run(model, input))
        .map_err(|e| HostError::Baseline(e.to_string()))
}

/// One placement's measurements (milliseconds).
#[derive(Clone, Debug, Serialize)]
pub struct PlacementResult {
    pub placement: String,
    /// Images per run; the times below are per run (the whole batch).
    pub batch: usize,
    pub median_ms: f64,
    /// `median_ms / batch`.
    pub per_image_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub iters: usize,
    /// Medians of the stage breakdown.
    pub enclave_ms: f64,
    pub field_ms: f64,
    pub tail_ms: f64,
    pub offloads: usize,
    pub bytes_to_accelerator: usize,
    /// Offline precompute (u = W·r inside the enclave, sealing) per image, on
    /// `precompute_threads` threads.
    pub precompute_ms_per_image: f64,
    pub precompute_threads: usize,
    /// Enclave core: lifetime bytes (head weights, probes) + peak request bytes.
    pub enclave_static_bytes: usize,
    pub enclave_peak_request_bytes: usize,
    /// Enclave core: peak bytes while precomputing one pad.
    pub enclave_peak_precompute_bytes: usize,
    /// Sealed pad bytes kept on the host per image.
    pub sealed_pad_bytes_per_image: usize,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        0.0
    } else if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    }
}

/// Runs every placement in `cfg` on `input`; `progress(placement, done, total)` after each run.
pub fn run(
    plan: Arc<Plan>,
    input: &Tensor,
    cfg: &BenchConfig,
    accel: &dyn Fn() -> Result<Box<dyn Accelerator>, AccelError>,
    mut progress: impl FnMut(&str, usize, usize),
) -> Result<Vec<PlacementResult>, HostError> {
    let mut results = Vec::new();
    for &placement in &cfg.placements {
        let name = placement.name();
        let core_cfg = CoreConfig {
            placement,
            verify: cfg.verify,
            threads: cfg.enclave_threads,
        };
        let mut engine = Engine::new(plan.clone(), core_cfg, accel()?)?;
        let total = cfg.warmup + cfg.iters;
        let batch = cfg.batch.max(1);
        let images = total * batch;
        let pre = engine.precompute_with_threads(images, cfg.precompute_threads)?;
        let sealed_per_image = engine.pads.sealed().bytes() / images.max(1);
        let inputs = vec![input.clone(); batch];
        let mut samples: Vec<StageTimes> = Vec::new();
        for i in 0..total {
            let st = if batch == 1 {
                engine.infer(input.clone())?.1
            } else {
                engine.infer_batch(&inputs)?.1
            };
            if i >= cfg.warmup {
                samples.push(st);
            }
            progress(&name, i + 1, total);
        }
        let mut tot: Vec<f64> = samples.iter().map(|s| ms(s.total)).collect();
        let mut enc: Vec<f64> = samples.iter().map(|s| ms(s.enclave)).collect();
        let mut fld: Vec<f64> = samples.iter().map(|s| ms(s.field)).collect();
        let mut tail: Vec<f64> = samples.iter().map(|s| ms(s.tail)).collect();
        let stats = engine.core.stats().clone();
        let median_ms = median(&mut tot);
        results.push(PlacementResult {
            placement: name,
            batch,
            median_ms,
            per_image_ms: median_ms / batch as f64,
            min_ms: tot.first().copied().unwrap_or(0.0),
            max_ms: tot.last().copied().unwrap_or(0.0),
            iters: samples.len(),
            enclave_ms: median(&mut enc),
            field_ms: median(&mut fld),
            tail_ms: median(&mut tail),
            offloads: samples.first().map_or(0, |s| s.offloads),
            bytes_to_accelerator: samples.first().map_or(0, |s| s.bytes_out),
            precompute_ms_per_image: ms(pre) / images.max(1) as f64,
            precompute_threads: cfg.precompute_threads.max(1),
            enclave_static_bytes: stats.static_bytes,
            enclave_peak_request_bytes: stats.peak_request_bytes,
            enclave_peak_precompute_bytes: stats.peak_precompute_bytes,
            sealed_pad_bytes_per_image: sealed_per_image,
        });
    }
    if cfg.tee_plain {
        let total = cfg.warmup + cfg.iters;
        let batch = cfg.batch.max(1);
        let x = if batch == 1 {
            input.clone()
        } else {
            let v = vec![input; batch];
            Tensor::stack(&v).map_err(|e| HostError::Baseline(format!("batch: {e}")))?
        };
        let mut tot = Vec::new();
        for i in 0..total {
            let t = std::time::Instant::now();
            tee_plain(&plan.model, &x, cfg.enclave_threads)?;
            if i >= cfg.warmup {
                tot.push(ms(t.elapsed()));
            }
            progress(TEE_PLAIN, i + 1, total);
        }
        let median_ms = median(&mut tot);
        let weights: usize = plan
            .model
            .nodes
            .iter()
            .map(|n| match &n.op {
                Op::Conv(c) => c.weight.len() + c.bias.len(),
                Op::Dense(d) => d.weight.len() + d.bias.len(),
                _ => 0,
            })
            .sum();
        results.push(PlacementResult {
            placement: TEE_PLAIN.into(),
            batch,
            median_ms,
            per_image_ms: median_ms / batch as f64,
            min_ms: tot.first().copied().unwrap_or(0.0),
            max_ms: tot.last().copied().unwrap_or(0.0),
            iters: tot.len(),
            enclave_ms: median_ms,
            field_ms: 0.0,
            tail_ms: 0.0,
            offloads: 0,
            bytes_to_accelerator: 0,
            precompute_ms_per_image: 0.0,
            precompute_threads: 0,
            // The linear layers' float weights; activations are not tracked for this baseline.
            enclave_static_bytes: weights * 4,
            enclave_peak_request_bytes: 0,
            enclave_peak_precompute_bytes: 0,
            sealed_pad_bytes_per_image: 0,
        });
    }
    Ok(results)
}
