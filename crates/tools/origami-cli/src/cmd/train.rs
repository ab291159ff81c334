//! `origami train`: trains the built-in Fashion-MNIST classifier (seeded) and writes it as ONNX.

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
}

pub fn main(a: Args) -> Result<()> {
    let (data, epochs, batch, seed, quick, out) = (
        a.data.as_path(),
        a.epochs,
        a.batch,
        a.seed,
        a.quick,
        a.out.as_path(),
    );
    use origami_train::{data as fm, TrainConfig};
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
        ..TrainConfig::default()
    };
    let mut model = zoo::small();
    model.name = "fashion-small".into();
    println!(
        "training {} on {} images ({} test), {epochs} epoch(s), batch {batch}, seed {seed}, {} threads",
        model.name,
        train_set.len(),
        test_set.len(),
        rayon::current_num_threads()
    );
    let bar = ProgressBar::new((train_set.len().div_ceil(batch) * epochs) as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed} < {eta}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let t = Instant::now();
    let reports = origami_train::train(&mut model, &train_set, &test_set, &cfg, |p| {
        bar.set_message(format!(
            "epoch {} loss {:.3} acc {:.3}",
            p.epoch + 1,
            p.loss,
            p.accuracy
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
    onnx::save(&model, out)?;
    println!(
        "trained in {:.0} s; wrote {} ({})",
        t.elapsed().as_secs_f64(),
        out.display(),
        hex(&model.hash()[..8])
    );
    Ok(())
}
