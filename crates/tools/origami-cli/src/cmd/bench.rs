//! `origami bench`: the four placements and the `tee-plain` baseline side by side on one model
//! and input; `--chart` draws where each request's time goes (`bench_chart.rs`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use origami_host::bench::{self, BenchConfig, PlacementResult};
use origami_model::{input, zoo};
use origami_plan::Placement;

use crate::common::*;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = "vgg16")]
    pub model: String,
    /// Input file (default: a seeded random input).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Split for the origami placement (default: after block 2 for VGG, else half the linear layers).
    #[arg(long)]
    pub split: Option<usize>,
    #[arg(long, default_value_t = 5)]
    pub iters: usize,
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    #[command(flatten)]
    pub verify: VerifyFlags,
    /// Threads of the enclave core.
    #[arg(long, default_value_t = 1)]
    pub enclave_threads: usize,
    /// Enclave threads for the offline pad precompute before the timed runs (default: the
    /// --enclave-threads); more makes large --batch runs start sooner, timings unchanged.
    #[arg(long)]
    pub precompute_threads: Option<usize>,
    /// Only these placements (comma-separated: enclave,slalom,origami,plain,tee-plain).
    /// tee-plain: the whole float model on the enclave's threads, as in a confidential VM with
    /// no accelerator (the honest all-in-TEE baseline).
    #[arg(long, default_value = "enclave,slalom,origami,plain,tee-plain")]
    pub placements: String,
    /// Images per run: heads one by one through the enclave, then one batched tail call
    /// (as the server batches); times are per run and per image.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Write results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw a PNG: per placement a stacked bar of enclave, blinded-layer and tail time, with
    /// the ratios.
    #[arg(long)]
    pub chart: Option<PathBuf>,
    #[arg(long, default_value_t = 4)]
    pub calib: usize,
}

pub fn main(a: Args, accel: Accel) -> Result<()> {
    let (model, input_path, split, iters, warmup) = (
        a.model.as_str(),
        a.input.as_deref(),
        a.split,
        a.iters,
        a.warmup,
    );
    let (verify, enclave_threads, batch, json, calib) = (
        a.verify.on(),
        a.enclave_threads,
        a.batch,
        a.json.as_deref(),
        a.calib,
    );
    let precompute_threads = a.precompute_threads.unwrap_or(enclave_threads);
    let placements = a.placements.as_str();
    if iters == 0 || enclave_threads == 0 || precompute_threads == 0 || batch == 0 {
        bail!("--iters, --enclave-threads, --precompute-threads and --batch must be at least 1");
    }
    if batch > 1024 {
        bail!("--batch {batch}: at most 1024 images per run");
    }
    let m = load_model(model)?;
    let x = match input_path {
        Some(p) => input::load_input(p, &m)?,
        None => zoo::seeded_input(&m, 42),
    };
    let split = split.unwrap_or_else(|| default_split(&m));
    let mut list = Vec::new();
    let mut tee_plain = false;
    for p in placements.split(',').map(str::trim) {
        match p {
            "origami" => list.push(Placement::Origami { split }),
            bench::TEE_PLAIN => tee_plain = true,
            other => list.push(Placement::parse(other, None).with_context(|| {
                format!("--placements: '{other}' (enclave, slalom, origami, plain, tee-plain)")
            })?),
        }
    }
    let accel_name = accel.make()?.name();
    let accel_threads = rayon::current_num_threads();
    println!("bench: model {} ({:.2} GMAC), accelerator {accel_name}, accelerator {accel_threads} thread(s), enclave {enclave_threads} thread(s) (precompute {precompute_threads}), verify {verify}, batch {batch}, {warmup} warm-up + {iters} runs", m.name, m.macs()? as f64 / 1e9);
    let t = Instant::now();
    let plan = build_plan(&m, calib)?;
    println!("plan built in {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
    let cfg = BenchConfig {
        placements: list,
        warmup,
        iters,
        verify,
        enclave_threads,
        precompute_threads,
        batch,
        tee_plain,
    };
    let runs = cfg.placements.len() + usize::from(tee_plain);
    let bar = ProgressBar::new((runs * (warmup + iters)) as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let make = || {
        accel
            .make()
            .map_err(|e| origami_accel::AccelError::Unavailable(format!("{e:#}")))
    };
    let results = bench::run(plan, &x, &cfg, &make, |name, _, _| {
        bar.set_message(name.to_string());
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    println!(
        "{:<20} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12} {:>14}",
        "placement",
        "median ms",
        "per image",
        "enclave",
        "blinded",
        "tail",
        "precompute",
        "enclave MiB*"
    );
    for r in &results {
        println!(
            "{:<20} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>12.2} {:>14.2}",
            r.placement,
            r.median_ms,
            r.per_image_ms,
            r.enclave_ms,
            r.field_ms,
            r.tail_ms,
            r.precompute_ms_per_image,
            (r.enclave_static_bytes
                + r.enclave_peak_request_bytes
                    .max(r.enclave_peak_precompute_bytes)) as f64
                / 1048576.0
        );
    }
    println!("* enclave core peak: resident weights and probes + the larger of per-request and precompute buffers");
    let find = |p: &str| results.iter().find(|r| r.placement.starts_with(p));
    let mut ratios = serde_json::Map::new();
    // Every placement against both all-in-TEE baselines: the quantized enclave core and
    // tee-plain (the float model on the enclave's threads).
    for base in ["enclave", bench::TEE_PLAIN] {
        if let Some(e) = results.iter().find(|r| r.placement == base) {
            for r in &results {
                if r.placement != e.placement {
                    ratios.insert(
                        format!("{base}/{}", r.placement),
                        (e.median_ms / r.median_ms).into(),
                    );
                }
            }
        }
    }
    if let (Some(o), Some(p)) = (find("origami"), find("plain")) {
        ratios.insert("origami/plain".into(), (o.median_ms / p.median_ms).into());
    }
    if let (Some(s), Some(o)) = (find("slalom"), find("origami")) {
        ratios.insert("slalom/origami".into(), (s.median_ms / o.median_ms).into());
    }
    for (k, v) in &ratios {
        println!("ratio {k}: {:.2}x", v.as_f64().unwrap_or(0.0));
    }
    if let Some(path) = json {
        let doc = serde_json::json!({
            "model": m.name,
            "gmac": m.macs()? as f64 / 1e9,
            "input": input_path.map(|p| p.display().to_string()).unwrap_or_else(|| "seeded".into()),
            "accelerator": accel_name,
            "accelerator_threads": accel_threads,
            "enclave_threads": enclave_threads,
            "precompute_threads": precompute_threads,
            "batch": batch,
            "verify": verify,
            "warmup": warmup,
            "iters": iters,
            "results": results.iter().collect::<Vec<&PlacementResult>>(),
            "ratios": ratios,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = a.chart.as_deref() {
        let title = format!(
            "{}: accelerator {accel_threads} thread(s), enclave {enclave_threads} thread(s), batch {batch}",
            m.name
        );
        super::bench_chart::write(&title, &results, &ratios, path)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
