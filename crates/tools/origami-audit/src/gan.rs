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

use burn::optim::GradientsParams;
use burn::tensor::{activation, Device, Tensor};
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

use origami_train::graph::{device, values};

use crate::decoder::{adam, ups, vector_grid, width, Scaler, TrainBudget, TrainingPairs};
use crate::nn::{shuffled, Builder, Net, Shape, Value};
use crate::AuditError;

/// Weight of the L1 term against the adversarial one.
pub const L1_WEIGHT: f32 = 100.0;

/// The features brought to the image's resolution: learned for a vector, else a learned
/// 3×3 convolution (when `learned`) and nearest upsampling.
fn condition(n: &mut Builder, x: Value, img: Shape, learned: bool) -> Result<Value, AuditError> {
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
pub fn generator(f: Shape, img: Shape, seed: u64, dev: &Device) -> Result<Net, AuditError> {
    if !(img[1].is_multiple_of(4) && img[2].is_multiple_of(4)) {
        return Err(AuditError::Attack(format!(
            "the U-Net needs image sides divisible by 4, got {}×{}",
            img[1], img[2]
        )));
    }
    let full = img[1];
    let mut n = Builder::new(&[f], seed, dev);
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
    Ok(n.finish())
}

/// The PatchGAN discriminator: (image, features) → a grid of logits (one per patch).
pub fn discriminator(f: Shape, img: Shape, seed: u64, dev: &Device) -> Result<Net, AuditError> {
    let mut n = Builder::new(&[img, f], seed, dev);
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
    Ok(n.finish())
}

/// Mean binary cross-entropy of logits `z` against target 1 (`real`) or 0, in the stable
/// form log(1 + e^−|z|) + max(z, 0) − z·t.
fn bce(z: Tensor<4>, real: bool) -> Tensor<1> {
    let soft = z.clone().abs().neg().exp().log1p() + activation::relu(z.clone());
    if real { soft - z } else { soft }.mean()
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
        let dev = device();
        let mut gen = generator(f, img, cfg.seed, &dev)?;
        gen.set_output_bias(&crate::decoder::channel_means(images, img));
        let mut disc = discriminator(f, img, cfg.seed ^ 0xd15c, &dev)?;
        let (mut opt_g, mut opt_d) = (adam(0.5), adam(0.5));
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x6a7);
        let total = cfg.epochs * pairs.n.div_ceil(cfg.batch);
        let mut steps = 0;
        let lr = cfg.lr as f64;
        for _ in 0..cfg.epochs {
            for idx in shuffled(pairs.n, &mut rng).chunks(cfg.batch) {
                let (x, target) = pairs.batch(&xs, images, idx, &dev);
                // Generator: fool the discriminator (target 1) and stay close in L1.
                let fake = gen.forward(std::slice::from_ref(&x));
                let adv = bce(disc.forward(&[fake.clone(), x.clone()]), true);
                let l1 = (fake.clone() - target.clone()).abs().mean();
                let loss_g = l1.clone().mul_scalar(L1_WEIGHT) + adv.clone();
                let g = GradientsParams::from_grads(loss_g.backward(), &gen);
                gen = opt_g.step(lr, gen, g);
                // Discriminator: generated pairs → 0, real pairs → 1.
                let lf = bce(disc.forward(&[fake.detach(), x.clone()]), false);
                let lr_ = bce(disc.forward(&[target, x]), true);
                let loss_d = (lf + lr_).mul_scalar(0.5);
                let d = values(loss_d.clone().detach())[0];
                let g = GradientsParams::from_grads(loss_d.backward(), &disc);
                disc = opt_d.step(lr, disc, g);
                steps += 1;
                progress(
                    steps,
                    total,
                    GanLosses {
                        l1: values(l1.detach())[0],
                        adv: values(adv.detach())[0],
                        disc: d,
                    },
                );
            }
        }
        Ok(Self { gen, scaler, steps })
    }

    /// Reconstructs images from observed features.
    pub fn invert(&self, observed: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, AuditError> {
        crate::decoder::reconstruct(&self.gen, &self.scaler, observed)
    }
}
