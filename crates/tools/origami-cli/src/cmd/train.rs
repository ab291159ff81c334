//! `origami train`: trains the built-in Fashion-MNIST classifier (seeded) and writes it as ONNX;
//! with `--harden-split K`, privacy-hardened at split K (docs/AUDIT.md).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use origami_model::{onnx, zoo};

use crate::common::*;

#[derive(clap::Args)]
pub struct Args {
    /// Folder with the Fashion-MNIST IDX files (Debian: dataset-fashion-mnist).
    #[arg(long, default_value = origami_train::data::DEFAULT_DIR)]
    pub data: PathBuf,
    #[arg(long, default_value_t = 8)]
    pub epochs: usize,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// A small budget: 1 epoch on 6 000 training images, tested on 1 000.
    #[arg(long)]
    pub quick: bool,
    #[arg(long, default_value = "fashion-small.onnx")]
    pub out: PathBuf,
    /// Privacy hardening: train so that the features the host sees at this split (the input
    /// of linear layer K) carry the class and as little else of the image as possible. Audit
    /// the result with `origami audit --model OUT`.
    #[arg(long, value_name = "K")]
    pub harden_split: Option<usize>,
    /// λ, the weight of the hardening penalty (the within-class share of the split features'
    /// variance) against the cross-entropy: higher is more private and less accurate.
    #[arg(long, value_name = "λ", default_value_t = DEFAULT_HARDEN_WEIGHT, requires = "harden_split")]
    pub harden_weight: f32,
}

/// The default λ of `--harden-weight`: the measured value at which split 4 of the built-in
/// architecture passes the default audit policy (docs/AUDIT.md has the frontier).
pub const DEFAULT_HARDEN_WEIGHT: f32 = 10.0;

pub fn main(a: Args) -> Result<()> {
    use origami_train::{data as fm, Harden, TrainConfig};
    let harden = a.harden_split.map(|split| Harden {
        split,
        weight: a.harden_weight,
    });
    let mut model = zoo::small();
    model.name = "fashion-small".into();
    if let Some(h) = harden {
        // Refuse a bad split before loading and training.
        h.value(&model)?;
        model.name = format!("fashion-small-hardened-{}", h.split);
    }
    let (data, epochs, batch, seed, quick, out) = (
        a.data.as_path(),
        a.epochs,
        a.batch,
        a.seed,
        a.quick,
        a.out.as_path(),
    );
    let mut train_set = fm::load(data, fm::Split::Train)?;
    let mut test_set = fm::load(data, fm::Split::Test)?;
    let epochs = if quick { 1 } else { epochs };
    if quick {
        train_set = train_set.truncate(6000);
        test_set = test_set.truncate(1000);
    }
    let cfg = TrainConfig {
        epochs,
        batch,
        seed,
        harden,
        ..TrainConfig::default()
    };
    println!(
        "training {} on {} images ({} test), {epochs} epoch(s), batch {batch}, seed {seed}, {} threads{}",
        model.name,
        train_set.len(),
        test_set.len(),
        rayon::current_num_threads(),
        harden
            .map(|h| format!(", hardened at split {} with λ = {}", h.split, h.weight))
            .unwrap_or_default()
    );
    let bar = ProgressBar::new((train_set.len().div_ceil(batch) * epochs) as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed} < {eta}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let t = Instant::now();
    let reports = origami_train::train(&mut model, &train_set, &test_set, &cfg, |p| {
        bar.set_message(format!(
            "epoch {} loss {:.3} acc {:.3}{}",
            p.epoch + 1,
            p.loss,
            p.accuracy,
            p.share
                .map(|s| format!(" share {s:.3}"))
                .unwrap_or_default()
        ));
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    for r in &reports {
        println!(
            "epoch {}: train loss {:.4}, train accuracy {:.4}, test accuracy {:.4}",
            r.epoch + 1,
            r.train_loss,
            r.train_accuracy,
            r.test_accuracy
        );
    }
    if let Some(h) = harden {
        let share = origami_train::harden::split_share(&model, &test_set, h.split)?;
        println!(
            "split {}: within-class share of the features' variance on the test images {share:.4} \
             (0: the host learns the class and nothing else; audit with `origami audit --model {}`)",
            h.split,
            out.display()
        );
    }
    onnx::save(&model, out)?;
    println!(
        "trained in {:.0} s; wrote {} ({})",
        t.elapsed().as_secs_f64(),
        out.display(),
        hex(&model.hash()[..8])
    );
    Ok(())
}
