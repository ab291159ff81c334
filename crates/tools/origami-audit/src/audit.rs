//! The full audit: for each candidate split, capture what the host receives there (through the
//! engine, on images never used for training), run the four attacks, score them, and choose
//! the recommended split under a policy. `report` writes the results (JSON, PNG grid, chart).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use origami_model::input::{self, Preprocess};
use origami_model::{exec, Model, Tensor};
use origami_plan::Plan;

use crate::capture::capture;
use crate::decoder::{feature_shape, features, Decoder, TrainBudget};
use crate::gan::Gan;
use crate::metrics::{psnr, ssim_image};
use crate::nn::Shape;
use crate::whitebox::{invert_from, WhiteboxConfig};
use crate::AuditError;

/// What a split must satisfy to be recommended. Scores are means over the scored images, of
/// the strongest attack at that split.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Policy {
    /// Highest mean SSIM of the strongest reconstruction.
    pub max_ssim: f64,
    /// Highest accuracy of the model on the strongest reconstructions (1.0: not constrained).
    pub max_accuracy: f64,
    /// Highest identification rate of any attack (1.0: not constrained). Audits recorded
    /// before this field read as 1.0.
    #[serde(default = "unconstrained")]
    pub max_identification: f64,
}

fn unconstrained() -> f64 {
    1.0
}

impl Policy {
    /// Whether the strongest attack `s` at `split` stays within the policy. Split 0 (the raw
    /// input) never does.
    pub fn allows(&self, split: usize, s: &AttackScore) -> bool {
        split > 0 && s.ssim <= self.max_ssim && s.accuracy <= self.max_accuracy
    }

    /// Whether a split passes: its strongest attack (by SSIM) within `allows`, and no attack
    /// identifying more of the inputs than `max_identification`.
    pub fn passes(&self, split: usize, attacks: &[AttackScore], strongest: &AttackScore) -> bool {
        self.allows(split, strongest)
            && attacks
                .iter()
                .all(|a| a.identification.unwrap_or(0.0) <= self.max_identification)
    }
}

/// The earliest split that passes. Deeper is not always safer, so later splits are not
/// assumed to pass: each one's own row says.
pub fn recommend(layers: &[LayerReport]) -> Option<usize> {
    layers.iter().filter(|l| l.passes).map(|l| l.split).min()
}

impl Default for Policy {
    /// See docs/AUDIT.md for the reasoning behind these defaults.
    fn default() -> Self {
        Self {
            max_ssim: 0.5,
            max_accuracy: 1.0,
            max_identification: 1.0,
        }
    }
}

/// Audit settings.
#[derive(Clone, Debug)]
pub struct AuditConfig {
    /// Candidate splits (number of linear layers in the enclave); `None`: all, 0 included as
    /// the sanity row (the host sees the raw input there).
    pub layers: Option<Vec<usize>>,
    /// Images the attacker trains on (public data of the same distribution).
    pub n_train: usize,
    /// Images scored (never used for training).
    pub n_eval: usize,
    pub decoder: TrainBudget,
    pub gan: TrainBudget,
    pub whitebox: WhiteboxConfig,
    pub policy: Policy,
}

impl AuditConfig {
    /// The full budget (docs/AUDIT.md: about 20 minutes on 2 cores for the built-in model).
    pub fn full() -> Self {
        Self {
            layers: None,
            n_train: 10_000,
            n_eval: 100,
            decoder: TrainBudget {
                epochs: 3,
                ..TrainBudget::default()
            },
            gan: TrainBudget {
                epochs: 3,
                ..TrainBudget::default()
            },
            whitebox: WhiteboxConfig::default(),
            policy: Policy::default(),
        }
    }

    /// A small budget for a first look (about a minute).
    pub fn quick() -> Self {
        Self {
            n_train: 1_500,
            n_eval: 20,
            decoder: TrainBudget {
                epochs: 2,
                ..TrainBudget::default()
            },
            gan: TrainBudget {
                epochs: 2,
                ..TrainBudget::default()
            },
            whitebox: WhiteboxConfig {
                steps: 150,
                ..WhiteboxConfig::default()
            },
            ..Self::full()
        }
    }
}

impl AuditConfig {
    /// This budget for images of shape `img`: the attacker's training images scaled down by
    /// the image's area against 28×28 (the learned attacks' cost grows with it), at least
    /// [`MIN_TRAIN_IMAGES`]; 28×28 inputs keep the budget as it is.
    pub fn scaled_to(mut self, img: Shape) -> Self {
        let area = img[1] * img[2];
        if area > 28 * 28 {
            self.n_train = (self.n_train * 28 * 28 / area).max(MIN_TRAIN_IMAGES);
        }
        self
    }
}

/// Fewest attacker training images [`AuditConfig::scaled_to`] leaves.
pub const MIN_TRAIN_IMAGES: usize = 200;

/// Images for the audit: the attacker's training set and the scored set, flattened, as pixels
/// in [0, 1] (what reconstructions are scored against), with labels (for a folder without
/// labels: the model's prediction on the original). The model sees them after `pre`.
pub struct AuditData {
    pub source: String,
    pub shape: Shape,
    /// The model's preprocessing (pixels → model input).
    pub pre: Preprocess,
    pub train: Vec<f32>,
    pub train_labels: Vec<usize>,
    pub eval: Vec<f32>,
    pub eval_labels: Vec<usize>,
}

impl AuditData {
    pub fn n_train(&self) -> usize {
        self.train.len() / self.shape.iter().product::<usize>()
    }
    pub fn n_eval(&self) -> usize {
        self.eval.len() / self.shape.iter().product::<usize>()
    }
    pub fn eval_image(&self, i: usize) -> &[f32] {
        let l = self.shape.iter().product::<usize>();
        &self.eval[i * l..(i + 1) * l]
    }

    /// Images (pixels, one or more one after the other) as the model takes them.
    pub fn to_model(&self, pixels: &[f32]) -> Vec<f32> {
        to_model(&self.pre, self.shape, pixels)
    }

    /// Fashion-MNIST from its IDX files: training images for the attacker, test images scored.
    pub fn fashion_mnist(dir: &Path, n_train: usize, n_eval: usize) -> Result<Self, AuditError> {
        use origami_train::data::{load, Split};
        let err = |e: origami_train::TrainError| AuditError::Data(e.to_string());
        let train = load(dir, Split::Train).map_err(err)?.truncate(n_train);
        let test = load(dir, Split::Test).map_err(err)?.truncate(n_eval);
        Ok(Self {
            source: format!("fashion-mnist ({})", dir.display()),
            shape: [1, 28, 28],
            pre: Preprocess {
                mean: vec![0.0],
                std: vec![1.0],
            },
            train_labels: train.labels.iter().map(|&l| l as usize).collect(),
            train: train.images,
            eval_labels: test.labels.iter().map(|&l| l as usize).collect(),
            eval: test.images,
        })
    }

    /// A folder of images of the model's input size (PNG or JPEG, sorted by name; grey images
    /// are replicated for RGB models): the last `n_eval` (at most a fifth) are scored, the
    /// others train the attacks. At least [`MIN_FOLDER_IMAGES`] are needed.
    pub fn folder(
        dir: &Path,
        model: &Model,
        n_train: usize,
        n_eval: usize,
    ) -> Result<Self, AuditError> {
        let shape = model_shape(model)?;
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| AuditError::Data(format!("{}: {e}", dir.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().and_then(|x| x.to_str()).is_some_and(|x| {
                    matches!(x.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg")
                })
            })
            .collect();
        paths.sort();
        if paths.len() < MIN_FOLDER_IMAGES {
            return Err(AuditError::Data(format!(
                "{} has {} usable images (PNG or JPEG); the audit needs at least {MIN_FOLDER_IMAGES}",
                dir.display(),
                paths.len()
            )));
        }
        let pre = Preprocess::for_model(model);
        let n_ev = n_eval.min(paths.len() / 5).max(1);
        let n_tr = (paths.len() - n_ev).min(n_train);
        let mut images = Vec::new();
        for p in paths[..n_tr].iter().chain(&paths[paths.len() - n_ev..]) {
            let img =
                image::open(p).map_err(|e| AuditError::Data(format!("{}: {e}", p.display())))?;
            if (img.height() as usize, img.width() as usize) != (shape[1], shape[2]) {
                return Err(AuditError::Data(format!(
                    "{} is {}×{}, the model takes {}×{} images",
                    p.display(),
                    img.width(),
                    img.height(),
                    shape[2],
                    shape[1]
                )));
            }
            images.extend(input::image_to_tensor(&img, model).data);
        }
        // Back to pixels: the attacks rebuild and are scored in [0, 1].
        let plane = shape[1] * shape[2];
        for (i, v) in images.iter_mut().enumerate() {
            let ch = (i / plane) % shape[0];
            *v = *v * pre.std[ch] + pre.mean[ch];
        }
        let l = shape.iter().product::<usize>();
        let eval = images.split_off(n_tr * l);
        let labels = |x: &[f32]| predict(model, shape, &to_model(&pre, shape, x));
        Ok(Self {
            source: format!("folder {}", dir.display()),
            shape,
            pre: pre.clone(),
            train_labels: labels(&images)?,
            train: images,
            eval_labels: labels(&eval)?,
            eval,
        })
    }
}

/// Fewest images a folder must hold: a fifth (at least one) is scored, the rest train.
pub const MIN_FOLDER_IMAGES: usize = 10;

/// The image sizes the audit takes: 1 or 3 channels, sides from 28 to 224 pixels.
pub const IMAGE_SIDES: std::ops::RangeInclusive<usize> = 28..=224;

fn model_shape(model: &Model) -> Result<Shape, AuditError> {
    match model.input_shape[..] {
        [c @ (1 | 3), h, w] if IMAGE_SIDES.contains(&h) && IMAGE_SIDES.contains(&w) => {
            Ok([c, h, w])
        }
        _ => Err(AuditError::Data(format!(
            "the audit takes image models with 1 or 3 channels and sides of 28 to 224 pixels; \
             {} takes {:?}",
            model.name, model.input_shape
        ))),
    }
}

/// Pixels → model input with `pre` (per channel (x − mean) / std).
fn to_model(pre: &Preprocess, shape: Shape, pixels: &[f32]) -> Vec<f32> {
    let plane = shape[1] * shape[2];
    pixels
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let ch = (i / plane) % shape[0];
            (v - pre.mean[ch]) / pre.std[ch]
        })
        .collect()
}

/// Top-1 class of `model` for each image in `images`.
fn predict(model: &Model, shape: Shape, images: &[f32]) -> Result<Vec<usize>, AuditError> {
    let l = shape.iter().product::<usize>();
    let mut out = Vec::new();
    for chunk in images.chunks(256 * l) {
        let x = Tensor::new(
            vec![chunk.len() / l, shape[0], shape[1], shape[2]],
            chunk.to_vec(),
        )
        .map_err(|e| AuditError::Engine(e.to_string()))?;
        let y = exec::run(model, &x).map_err(|e| AuditError::Engine(e.to_string()))?;
        out.extend(y.top_k(1).iter().map(|t| t[0].0));
    }
    Ok(out)
}

/// Scores of one attack at one split.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttackScore {
    pub attack: String,
    /// Mean SSIM of the reconstructions against the originals.
    pub ssim: f64,
    /// Mean PSNR (dB; a perfect reconstruction counts as 100 dB).
    pub psnr: f64,
    /// Fraction of reconstructions the model classifies as the original's label.
    pub accuracy: f64,
    /// Identification rate: the fraction of reconstructions whose nearest image (Euclidean)
    /// among the scored images and a pool of others is the true input (chance: 1 / candidates).
    /// None in audits recorded before it was measured.
    #[serde(default)]
    pub identification: Option<f64>,
    /// Optimisation steps: training batches for learned attacks, per-image steps for white-box.
    pub steps: usize,
    /// Wall time: training and reconstructing all scored images.
    pub seconds: f64,
}

/// One candidate split.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayerReport {
    /// Linear layers in the enclave.
    pub split: usize,
    /// The last node the enclave runs (`input` at split 0).
    pub last_node: String,
    /// What the host receives (channels, height, width).
    pub feature_shape: Shape,
    pub attacks: Vec<AttackScore>,
    /// The attack with the highest SSIM.
    pub strongest: String,
    pub passes: bool,
}

impl LayerReport {
    pub fn strongest(&self) -> &AttackScore {
        self.attacks
            .iter()
            .find(|a| a.attack == self.strongest)
            .expect("the strongest attack is in the list")
    }
}

/// The split-0 sanity bar: there the host sees the raw input, and an attack that rebuilds it
/// with a lower mean SSIM is broken (undertrained for this model and data) — its scores at
/// deeper splits bound nothing.
pub const SANITY_SSIM: f64 = 0.9;

impl AuditReport {
    /// The attacks below [`SANITY_SSIM`] at split 0, with their SSIM (none when split 0 was
    /// not audited).
    pub fn broken_attacks(&self) -> Vec<(&str, f64)> {
        self.layers
            .iter()
            .filter(|l| l.split == 0)
            .flat_map(|l| &l.attacks)
            .filter(|a| a.ssim.is_nan() || a.ssim < SANITY_SSIM)
            .map(|a| (a.attack.as_str(), a.ssim))
            .collect()
    }
}

/// Reference points for the scores: what an attacker gets without inverting anything.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Baselines {
    /// SSIM of an all-black image.
    pub blank_ssim: f64,
    /// SSIM of the mean training image of the true class (an attacker who knows only the label,
    /// which the host learns anyway in the origami placement).
    pub class_mean_ssim: f64,
}

/// The audit's results (`audit.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditReport {
    pub model: String,
    /// Hex SHA-256 of the model (what `--split auto` checks).
    pub model_hash: String,
    pub data: String,
    pub train_images: usize,
    pub eval_images: usize,
    pub policy: Policy,
    pub baselines: Baselines,
    pub layers: Vec<LayerReport>,
    /// The earliest split (≥ 1) whose strongest attack stays within the policy.
    pub recommended_split: Option<usize>,
    pub seconds: f64,
}

/// Reconstructions kept for the grid: per split, the strongest attack's images.
pub struct Gallery {
    /// The images' shape (channels, height, width).
    pub shape: Shape,
    pub originals: Vec<Vec<f32>>,
    pub rows: Vec<(usize, String, Vec<Vec<f32>>)>,
}

/// Progress of the audit: a stage name, done and total units.
pub trait Progress: Sync {
    fn stage(&self, name: &str, total: usize);
    fn advance(&self, done: usize, message: &str);
}

/// No output.
pub struct Silent;

impl Progress for Silent {
    fn stage(&self, _: &str, _: usize) {}
    fn advance(&self, _: usize, _: &str) {}
}

/// Hex as the evidence and policies write hashes (one encoder for the project).
pub use origami_proto::evidence::hex;

/// Images kept per split for the grid.
pub const GALLERY: usize = 8;

/// Runs the audit of `plan` (its model must be a sequential single-channel image classifier
/// the trainer can differentiate) on `data`.
pub fn run(
    plan: &Arc<Plan>,
    data: &AuditData,
    cfg: &AuditConfig,
    progress: &dyn Progress,
) -> Result<(AuditReport, Gallery), AuditError> {
    let t0 = Instant::now();
    let model = &plan.model;
    let img = model_shape(model)?;
    if img != data.shape {
        return Err(AuditError::Data(format!(
            "the data has {:?} images, the model takes {:?}",
            data.shape, img
        )));
    }
    let (n_tr, n_ev) = (data.n_train(), data.n_eval());
    if n_tr == 0 || n_ev == 0 {
        return Err(AuditError::Data("no images to train on or to score".into()));
    }
    let n_lin = plan.linears.len();
    let layers = match &cfg.layers {
        Some(l) => l.clone(),
        None => (0..n_lin).collect(),
    };
    if let Some(bad) = layers.iter().find(|&&k| k >= n_lin) {
        return Err(AuditError::Data(format!(
            "split {bad} is not a candidate: the model has {n_lin} linear layers (splits 0–{})",
            n_lin - 1
        )));
    }
    let originals: Vec<Vec<f32>> = (0..n_ev).map(|i| data.eval_image(i).to_vec()).collect();
    let baselines = baselines(data, &originals);
    let mut out_layers = Vec::new();
    let mut gallery = Gallery {
        shape: img,
        originals: originals.iter().take(GALLERY).cloned().collect(),
        rows: Vec::new(),
    };
    for &split in &layers {
        let head_end = plan
            .head_end(crate::capture::placement(split))
            .map_err(|e| AuditError::Engine(e.to_string()))?
            .index();
        let f = feature_shape(model, head_end)?;
        let last_node = if head_end == 0 {
            "input".to_string()
        } else {
            model.nodes[head_end - 1].name.clone()
        };
        // What the host receives, image by image, through the engine.
        progress.stage(&format!("split {split}: capture"), n_ev);
        let mut observed = Vec::with_capacity(n_ev);
        for (i, x) in originals.iter().enumerate() {
            let t = Tensor::new(vec![1, img[0], img[1], img[2]], data.to_model(x))
                .map_err(|e| AuditError::Engine(e.to_string()))?;
            let vals = capture(plan, split, &t)?;
            if vals.len() != 1 {
                return Err(AuditError::Engine(format!(
                    "split {split} hands {} values to the tail; the audit handles chains",
                    vals.len()
                )));
            }
            observed.push(vals.into_iter().next().expect("one value").1.data);
            progress.advance(i + 1, "");
        }
        // The attacker's training pairs, from public data and public weights.
        let feats = features(model, head_end, &data.to_model(&data.train))?;
        let mut attacks = Vec::new();
        let mut recons: Vec<Vec<Vec<f32>>> = Vec::new();

        let t = Instant::now();
        let total = cfg.decoder.epochs * n_tr.div_ceil(cfg.decoder.batch.max(1));
        progress.stage(&format!("split {split}: decoder"), total);
        let dec = Decoder::train(&feats, f, &data.train, img, &cfg.decoder, |s, _, l| {
            progress.advance(s, &format!("mse {l:.4}"))
        })?;
        let r = dec.invert(&observed)?;
        attacks.push(score("decoder", &r, &originals, data, model, dec.steps, t)?);
        recons.push(r);

        let t = Instant::now();
        let total = cfg.gan.epochs * n_tr.div_ceil(cfg.gan.batch.max(1));
        progress.stage(&format!("split {split}: cGAN"), total);
        let gan = Gan::train(&feats, f, &data.train, img, &cfg.gan, |s, _, l| {
            progress.advance(
                s,
                &format!("L1 {:.3} adv {:.2} D {:.2}", l.l1, l.adv, l.disc),
            )
        })?;
        drop(feats);
        let r = gan.invert(&observed)?;
        attacks.push(score("cgan", &r, &originals, data, model, gan.steps, t)?);
        recons.push(r);

        // White-box from flat grey, then combined: the same optimisation started at the
        // decoder's reconstruction (its training time is counted with the decoder's row).
        let grey = vec![vec![0.5f32; img.iter().product()]; n_ev];
        for (name, stage, starts) in [
            ("white-box", "white-box", grey),
            ("combined", "decoder + white-box", recons[0].clone()),
        ] {
            let t = Instant::now();
            progress.stage(&format!("split {split}: {stage}"), cfg.whitebox.steps);
            let r = invert_from(model, head_end, &observed, &starts, &cfg.whitebox, |s| {
                progress.advance(s, "")
            })?;
            let sc = score(name, &r, &originals, data, model, cfg.whitebox.steps, t)?;
            attacks.push(sc);
            recons.push(r);
        }

        let best = (0..attacks.len())
            .max_by(|&a, &b| attacks[a].ssim.total_cmp(&attacks[b].ssim))
            .expect("four attacks");
        let s = &attacks[best];
        let passes = cfg.policy.passes(split, &attacks, s);
        gallery.rows.push((
            split,
            s.attack.clone(),
            recons.swap_remove(best).into_iter().take(GALLERY).collect(),
        ));
        out_layers.push(LayerReport {
            split,
            last_node,
            feature_shape: f,
            strongest: s.attack.clone(),
            attacks,
            passes,
        });
    }
    let recommended_split = recommend(&out_layers);
    Ok((
        AuditReport {
            model: model.name.clone(),
            model_hash: hex(&model.hash()),
            data: data.source.clone(),
            train_images: n_tr,
            eval_images: n_ev,
            policy: cfg.policy.clone(),
            baselines,
            layers: out_layers,
            recommended_split,
            seconds: t0.elapsed().as_secs_f64(),
        },
        gallery,
    ))
}

fn score(
    attack: &str,
    recons: &[Vec<f32>],
    originals: &[Vec<f32>],
    data: &AuditData,
    model: &Model,
    steps: usize,
    t: Instant,
) -> Result<AttackScore, AuditError> {
    let n = recons.len() as f64;
    let ssim_mean = recons
        .iter()
        .zip(originals)
        .map(|(r, x)| ssim_image(r, x, data.shape))
        .sum::<f64>()
        / n;
    let psnr_mean = recons
        .iter()
        .zip(originals)
        .map(|(r, x)| psnr(r, x).min(100.0))
        .sum::<f64>()
        / n;
    let identification = identification(recons, originals, &data.train, IDENTIFICATION_POOL);
    let flat: Vec<f32> = recons.iter().flatten().copied().collect();
    let pred = predict(model, data.shape, &data.to_model(&flat))?;
    let ok = pred
        .iter()
        .zip(&data.eval_labels)
        .filter(|(a, b)| a == b)
        .count();
    Ok(AttackScore {
        attack: attack.into(),
        ssim: ssim_mean,
        psnr: psnr_mean,
        accuracy: ok as f64 / n,
        identification: Some(identification),
        steps,
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// Training images added to the scored ones as candidates for identification.
pub const IDENTIFICATION_POOL: usize = 1000;

/// The fraction of `recons[i]` whose nearest candidate (squared Euclidean distance) is
/// `originals[i]`; the candidates are the originals and the first `pool` images of `others`
/// (same length each). Ties count against the attack.
pub fn identification(
    recons: &[Vec<f32>],
    originals: &[Vec<f32>],
    others: &[f32],
    pool: usize,
) -> f64 {
    let Some(l) = originals.first().map(Vec::len).filter(|&l| l > 0) else {
        return 0.0;
    };
    let dist = |a: &[f32], b: &[f32]| -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
            .sum()
    };
    let pool: Vec<&[f32]> = others.chunks_exact(l).take(pool).collect();
    let hits = recons
        .par_iter()
        .enumerate()
        .filter(|(i, r)| {
            let own = dist(r, &originals[*i]);
            let beaten = |c: &[f32]| dist(r, c) <= own;
            !originals
                .iter()
                .enumerate()
                .any(|(j, c)| j != *i && beaten(c))
                && !pool.iter().any(|c| beaten(c))
        })
        .count();
    hits as f64 / recons.len().max(1) as f64
}

fn baselines(data: &AuditData, originals: &[Vec<f32>]) -> Baselines {
    let s = data.shape;
    let l = s.iter().product::<usize>();
    let classes = data.train_labels.iter().max().map_or(0, |m| m + 1);
    let mut means = vec![vec![0f32; l]; classes];
    let mut counts = vec![0usize; classes];
    for (x, &c) in data.train.chunks(l).zip(&data.train_labels) {
        means[c].iter_mut().zip(x).for_each(|(m, v)| *m += v);
        counts[c] += 1;
    }
    for (m, &c) in means.iter_mut().zip(&counts) {
        m.iter_mut().for_each(|v| *v /= c.max(1) as f32);
    }
    let n = originals.len() as f64;
    let blank = vec![0f32; l];
    let blank_ssim = originals
        .iter()
        .map(|x| ssim_image(&blank, x, s))
        .sum::<f64>()
        / n;
    let class_mean_ssim = originals
        .iter()
        .zip(&data.eval_labels)
        .map(|(x, &c)| match means.get(c) {
            Some(m) => ssim_image(m, x, s),
            None => ssim_image(&blank, x, s),
        })
        .sum::<f64>()
        / n;
    Baselines {
        blank_ssim,
        class_mean_ssim,
    }
}

#[cfg(test)]
mod tests;
