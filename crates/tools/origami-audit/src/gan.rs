//! Conditional-GAN inversion (pix2pix, Isola et al. 2017), the adversary of the Origami paper:
//! a U-Net generator maps the observed features to an image; a PatchGAN discriminator judges
//! (image, features) pairs patch by patch; the generator minimises λ·L1 + the adversarial loss
//! (non-saturating, λ = 100 as in pix2pix), the discriminator the binary cross-entropy of real
//! against generated pairs. Adam with β₁ = 0.5 for both.
//!
//! Sizes (28×28 image): the features are brought to full resolution (a dense projection for a
//! vector, else a 3×3 convolution at their own size, then nearest upsampling); the U-Net has
//! two pooling levels (16, 32, 64 channels) with skip connections; the discriminator sees the
//! image concatenated with the upsampled features and outputs a 7×7 grid of patch logits.

use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

use crate::decoder::{ups, vector_grid, width, Scaler, TrainBudget, TrainingPairs};
use crate::nn::{par_grads, shuffled, Adam, Net, Shape, Value};
use crate::AuditError;

/// Weight of the L1 term against the adversarial one.
pub const L1_WEIGHT: f32 = 100.0;

/// The features brought to the image's resolution: learned for a vector, else a learned
/// 3×3 convolution (when `learned`) and nearest upsampling.
fn condition(n: &mut Net, x: Value, img: Shape, learned: bool) -> Result<Value, AuditError> {
    let f = n.shape(x);
    let mut v = x;
    let mut h;
    if f[1] == 1 && f[2] == 1 {
        if img[1] != img[2] {
            return Err(AuditError::Attack(
                "vector features need a square image".into(),
            ));
        }
        h = vector_grid(img);
        let c = 16;
        v = n.dense(v, c * h * h);
        v = n.relu(v);
        v = n.reshape(v, [c, h, h]);
    } else {
        ups(f, img)?;
        h = f[1];
        if learned {
            v = n.conv(v, 16, 3);
            v = n.relu(v);
        }
    }
    while h < img[1] {
        h *= 2;
        v = n.up2(v);
    }
    Ok(v)
}

/// The U-Net generator: features of shape `f` → image of shape `img`.
pub fn generator(f: Shape, img: Shape, seed: u64) -> Result<Net, AuditError> {
    if !(img[1].is_multiple_of(4) && img[2].is_multiple_of(4)) {
        return Err(AuditError::Attack(format!(
            "the U-Net needs image sides divisible by 4, got {}×{}",
            img[1], img[2]
        )));
    }
    let full = img[1];
    let mut n = Net::new(&[f], seed);
    let x0 = condition(&mut n, 0, img, true)?;
    let e1 = n.conv(x0, width(full, full), 3);
    let e1 = n.leaky_relu(e1);
    let d = n.pool2(e1);
    let e2 = n.conv(d, width(full / 2, full), 3);
    let e2 = n.leaky_relu(e2);
    let d = n.pool2(e2);
    let b = n.conv(d, width(full / 4, full), 3);
    let b = n.relu(b);
    let u = n.up2(b);
    let u = n.concat(u, e2);
    let u = n.conv(u, width(full / 2, full), 3);
    let u = n.relu(u);
    let u = n.up2(u);
    let u = n.concat(u, e1);
    let u = n.conv(u, width(full, full), 3);
    let u = n.relu(u);
    n.conv(u, img[0], 3);
    Ok(n)
}

/// The PatchGAN discriminator: (image, features) → a grid of logits (one per patch).
pub fn discriminator(f: Shape, img: Shape, seed: u64) -> Result<Net, AuditError> {
    let mut n = Net::new(&[img, f], seed);
    let c = condition(&mut n, 1, img, false)?;
    let v = n.concat(0, c);
    let v = n.conv(v, 16, 3);
    let v = n.leaky_relu(v);
    let v = n.pool2(v);
    let v = n.conv(v, 32, 3);
    let v = n.leaky_relu(v);
    let v = n.pool2(v);
    let v = n.conv(v, 32, 3);
    let v = n.leaky_relu(v);
    n.conv(v, 1, 3);
    Ok(n)
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// Binary cross-entropy with logits against `target`, as (mean loss, gradient per logit).
fn bce(z: &[f32], target: f32) -> (f64, Vec<f32>) {
    let k = z.len() as f32;
    let mut loss = 0f64;
    let g = z
        .iter()
        .map(|&v| {
            // log(1 + e^−|v|) + max(v, 0) − v·t, stable for large |v|.
            loss += ((-v.abs()).exp().ln_1p() + v.max(0.0) - v * target) as f64;
            (sigmoid(v) - target) / k
        })
        .collect();
    (loss / k as f64, g)
}

/// A trained conditional GAN (only the generator is kept).
pub struct Gan {
    gen: Net,
    scaler: Scaler,
    pub steps: usize,
}

/// Losses after one batch: L1 of the generator, its adversarial loss, the discriminator's.
#[derive(Clone, Copy, Debug, Default)]
pub struct GanLosses {
    pub l1: f32,
    pub adv: f32,
    pub disc: f32,
}

impl Gan {
    /// Trains on (features, images) pairs (see `Decoder::train`).
    pub fn train(
        feats: &[f32],
        f: Shape,
        images: &[f32],
        img: Shape,
        cfg: &TrainBudget,
        mut progress: impl FnMut(usize, usize, GanLosses),
    ) -> Result<Self, AuditError> {
        let (pairs, scaler, xs) = TrainingPairs::new(feats, f, images, img, cfg, "cGAN")?;
        let (n, il) = (pairs.n, pairs.image_len);
        let mut gen = generator(f, img, cfg.seed)?;
        let mut disc = discriminator(f, img, cfg.seed ^ 0xd15c)?;
        let (ng, nd) = (gen.params.len(), disc.params.len());
        let mut opt_g = Adam::new(ng, cfg.lr, 0.5);
        let mut opt_d = Adam::new(nd, cfg.lr, 0.5);
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x6a7);
        let total = cfg.epochs * n.div_ceil(cfg.batch);
        for _ in 0..cfg.epochs {
            for idx in shuffled(n, &mut rng).chunks(cfg.batch) {
                // One pass per sample fills [generator grads | discriminator grads]; the
                // losses are packed into the returned f64 (L1, adversarial, discriminator)
                // by running three sums.
                let sums = std::sync::Mutex::new([0f64; 3]);
                let (g, _) = par_grads(idx, ng + nd, |i, grad| {
                    let (gg, gd) = grad.split_at_mut(ng);
                    let target = &images[i * il..(i + 1) * il];
                    let tg = gen.forward(&[&xs[i]]);
                    let y = tg.output();
                    let fake = disc.forward(&[y, &xs[i]]);
                    // Generator: fool the discriminator (target 1) and stay close in L1.
                    let (adv, dz) = bce(fake.output(), 1.0);
                    let dimg = disc.backward(&fake, &dz, None, true).swap_remove(0);
                    let mut l1 = 0f64;
                    let dy: Vec<f32> = y
                        .iter()
                        .zip(target)
                        .zip(&dimg)
                        .map(|((a, b), da)| {
                            l1 += (a - b).abs() as f64;
                            L1_WEIGHT * (a - b).signum() / il as f32 + da
                        })
                        .collect();
                    gen.backward(&tg, &dy, Some(gg), false);
                    // Discriminator: generated pairs → 0, real pairs → 1.
                    let (lf, dzf) = bce(fake.output(), 0.0);
                    let half: Vec<f32> = dzf.iter().map(|v| 0.5 * v).collect();
                    disc.backward(&fake, &half, Some(&mut *gd), false);
                    let real = disc.forward(&[target, &xs[i]]);
                    let (lr, dzr) = bce(real.output(), 1.0);
                    let half: Vec<f32> = dzr.iter().map(|v| 0.5 * v).collect();
                    disc.backward(&real, &half, Some(gd), false);
                    let mut s = sums.lock().expect("no panics while held");
                    s[0] += l1 / il as f64;
                    s[1] += adv;
                    s[2] += 0.5 * (lf + lr);
                    0.0
                });
                let scale = 1.0 / idx.len() as f32;
                let mut p = std::mem::take(&mut gen.params);
                opt_g.step(&mut p, &g[..ng], scale);
                gen.params = p;
                let mut p = std::mem::take(&mut disc.params);
                opt_d.step(&mut p, &g[ng..], scale);
                disc.params = p;
                let s = sums.into_inner().expect("no panics while held");
                let k = idx.len() as f64;
                progress(
                    opt_g.steps,
                    total,
                    GanLosses {
                        l1: (s[0] / k) as f32,
                        adv: (s[1] / k) as f32,
                        disc: (s[2] / k) as f32,
                    },
                );
            }
        }
        Ok(Self {
            gen,
            scaler,
            steps: opt_g.steps,
        })
    }

    /// Reconstructs one image from observed features.
    pub fn invert(&self, observed: &[f32]) -> Result<Vec<f32>, AuditError> {
        crate::decoder::reconstruct(&self.gen, &self.scaler, observed)
    }
}
