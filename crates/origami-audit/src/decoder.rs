//! Learned-decoder inversion: the host trains a network that maps the features at the split
//! back to images, on public data of the same distribution (pairs made with the known weights),
//! then applies it to what it observes. Here the decoder is a two-layer perceptron with a linear
//! skip path, y = W2·relu(W1·f + b1) + W3·f + b2, trained with Adam on the pixel MSE; its
//! reconstructions are clamped to [0, 1].

use faer::{Accum, MatMut, MatRef, Par};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use origami_model::{exec, Model, Tensor};

use crate::AuditError;

/// Decoder training settings.
#[derive(Clone, Debug)]
pub struct DecoderConfig {
    pub hidden: usize,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    pub seed: u64,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        Self {
            hidden: 1024,
            epochs: 4,
            batch: 64,
            lr: 1e-3,
            seed: 7,
        }
    }
}

/// A trained decoder.
pub struct Decoder {
    in_f: usize,
    hidden: usize,
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
    /// The linear skip path features → pixels (starts at zero).
    w3: Vec<f32>,
    /// Per-feature scale (1 / max |f| on the training data), so inputs are in [−1, 1].
    scale: Vec<f32>,
    pub steps: usize,
}

/// The float features after node `end − 1` for a batch of 28×28 images (`[N, 784]`), computed
/// with the public weights: the attacker's training pairs.
pub fn features(model: &Model, end: usize, images: &[f32]) -> Result<Vec<f32>, AuditError> {
    let n = images.len() / 784;
    if end == 0 {
        return Ok(images.to_vec());
    }
    let mut head = model.clone();
    head.nodes.truncate(end);
    head.output = end;
    let mut out = Vec::new();
    for start in (0..n).step_by(256) {
        let m = (n - start).min(256);
        let x = Tensor::new(
            vec![m, 1, 28, 28],
            images[start * 784..(start + m) * 784].to_vec(),
        )
        .map_err(|e| AuditError::Attack(e.to_string()))?;
        out.extend(
            exec::run(&head, &x)
                .map_err(|e| AuditError::Attack(e.to_string()))?
                .data,
        );
    }
    Ok(out)
}

fn mm(a: MatRef<'_, f32>, b: MatRef<'_, f32>, c: MatMut<'_, f32>, acc: Accum) {
    faer::linalg::matmul::matmul(c, acc, a, b, 1.0, Par::rayon(0));
}

impl Decoder {
    /// Trains on (features, images) pairs: `feats` is `[N, in_f]`, `images` is `[N, 784]`.
    pub fn train(
        feats: &[f32],
        images: &[f32],
        cfg: &DecoderConfig,
        mut progress: impl FnMut(usize, usize, f32),
    ) -> Result<Self, AuditError> {
        let n = images.len() / 784;
        if n == 0 || !feats.len().is_multiple_of(n) || cfg.batch == 0 {
            return Err(AuditError::Attack("decoder: no training data".into()));
        }
        let in_f = feats.len() / n;
        let h = cfg.hidden;
        let mut scale = vec![0f32; in_f];
        for row in feats.chunks(in_f) {
            for (s, v) in scale.iter_mut().zip(row) {
                *s = s.max(v.abs());
            }
        }
        scale
            .iter_mut()
            .for_each(|s| *s = if *s > 0.0 { 1.0 / *s } else { 0.0 });
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let mut uni = |k: usize, fan: usize| -> Vec<f32> {
            let a = (6.0 / fan as f32).sqrt();
            (0..k)
                .map(|_| ((rng.next_u32() >> 8) as f32 / (1 << 24) as f32 * 2.0 - 1.0) * a)
                .collect()
        };
        let mut d = Decoder {
            in_f,
            hidden: h,
            w1: uni(h * in_f, in_f),
            b1: vec![0.0; h],
            w2: uni(784 * h, h),
            b2: vec![0.0; 784],
            w3: vec![0.0; 784 * in_f],
            scale,
            steps: 0,
        };
        let sizes = [d.w1.len(), d.b1.len(), d.w2.len(), d.b2.len(), d.w3.len()];
        let mut m1: Vec<Vec<f32>> = sizes.iter().map(|&s| vec![0.0; s]).collect();
        let mut m2: Vec<Vec<f32>> = sizes.iter().map(|&s| vec![0.0; s]).collect();
        let mut order: Vec<usize> = (0..n).collect();
        let mut shuffle = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5eed);
        let batches = n.div_ceil(cfg.batch);
        for epoch in 0..cfg.epochs {
            for i in (1..n).rev() {
                order.swap(i, (shuffle.next_u64() % (i as u64 + 1)) as usize);
            }
            let mut epoch_loss = 0f64;
            for idx in order.chunks(cfg.batch) {
                let b = idx.len();
                let mut x = vec![0f32; b * in_f];
                let mut t = vec![0f32; b * 784];
                for (r, &i) in idx.iter().enumerate() {
                    for (k, v) in feats[i * in_f..(i + 1) * in_f].iter().enumerate() {
                        x[r * in_f + k] = v * d.scale[k];
                    }
                    t[r * 784..(r + 1) * 784].copy_from_slice(&images[i * 784..(i + 1) * 784]);
                }
                let (hid, y) = d.forward(&x, b);
                // dz = d(mean squared error)/dz (linear output).
                let mut dz = vec![0f32; b * 784];
                let mut loss = 0f64;
                for k in 0..b * 784 {
                    let e = y[k] - t[k];
                    loss += (e * e) as f64;
                    dz[k] = 2.0 * e / (b * 784) as f32;
                }
                epoch_loss += loss / 784.0;
                let mut g = [
                    vec![0f32; sizes[0]],
                    vec![0f32; sizes[1]],
                    vec![0f32; sizes[2]],
                    vec![0f32; sizes[3]],
                    vec![0f32; sizes[4]],
                ];
                // dW3 = dZᵀ·X (the skip path).
                mm(
                    MatRef::from_row_major_slice(&dz, b, 784).transpose(),
                    MatRef::from_row_major_slice(&x, b, in_f),
                    MatMut::from_row_major_slice_mut(&mut g[4], 784, in_f),
                    Accum::Replace,
                );
                // dW2 = dZᵀ·H, db2 = Σ dZ, dH = dZ·W2 (masked by the ReLU), dW1 = dHᵀ·X.
                mm(
                    MatRef::from_row_major_slice(&dz, b, 784).transpose(),
                    MatRef::from_row_major_slice(&hid, b, h),
                    MatMut::from_row_major_slice_mut(&mut g[2], 784, h),
                    Accum::Replace,
                );
                for row in dz.chunks(784) {
                    g[3].iter_mut().zip(row).for_each(|(a, v)| *a += v);
                }
                let mut dh = vec![0f32; b * h];
                mm(
                    MatRef::from_row_major_slice(&dz, b, 784),
                    MatRef::from_row_major_slice(&d.w2, 784, h),
                    MatMut::from_row_major_slice_mut(&mut dh, b, h),
                    Accum::Replace,
                );
                dh.iter_mut().zip(&hid).for_each(|(g, v)| {
                    if *v <= 0.0 {
                        *g = 0.0
                    }
                });
                mm(
                    MatRef::from_row_major_slice(&dh, b, h).transpose(),
                    MatRef::from_row_major_slice(&x, b, in_f),
                    MatMut::from_row_major_slice_mut(&mut g[0], h, in_f),
                    Accum::Replace,
                );
                for row in dh.chunks(h) {
                    g[1].iter_mut().zip(row).for_each(|(a, v)| *a += v);
                }
                d.steps += 1;
                let (b1, b2) = (0.9f32, 0.999f32);
                let (c1, c2) = (1.0 - b1.powi(d.steps as i32), 1.0 - b2.powi(d.steps as i32));
                for (pi, p) in [&mut d.w1, &mut d.b1, &mut d.w2, &mut d.b2, &mut d.w3]
                    .into_iter()
                    .enumerate()
                {
                    for k in 0..p.len() {
                        let gk = g[pi][k];
                        m1[pi][k] = b1 * m1[pi][k] + (1.0 - b1) * gk;
                        m2[pi][k] = b2 * m2[pi][k] + (1.0 - b2) * gk * gk;
                        p[k] -= cfg.lr * (m1[pi][k] / c1) / ((m2[pi][k] / c2).sqrt() + 1e-8);
                    }
                }
            }
            progress(epoch + 1, batches, (epoch_loss / n as f64) as f32);
        }
        Ok(d)
    }

    fn forward(&self, x: &[f32], b: usize) -> (Vec<f32>, Vec<f32>) {
        let h = self.hidden;
        let mut hid = vec![0f32; b * h];
        mm(
            MatRef::from_row_major_slice(x, b, self.in_f),
            MatRef::from_row_major_slice(&self.w1, h, self.in_f).transpose(),
            MatMut::from_row_major_slice_mut(&mut hid, b, h),
            Accum::Replace,
        );
        for row in hid.chunks_mut(h) {
            row.iter_mut()
                .zip(&self.b1)
                .for_each(|(v, bb)| *v = (*v + bb).max(0.0));
        }
        let mut y = vec![0f32; b * 784];
        mm(
            MatRef::from_row_major_slice(&hid, b, h),
            MatRef::from_row_major_slice(&self.w2, 784, h).transpose(),
            MatMut::from_row_major_slice_mut(&mut y, b, 784),
            Accum::Replace,
        );
        mm(
            MatRef::from_row_major_slice(x, b, self.in_f),
            MatRef::from_row_major_slice(&self.w3, 784, self.in_f).transpose(),
            MatMut::from_row_major_slice_mut(&mut y, b, 784),
            Accum::Add,
        );
        for row in y.chunks_mut(784) {
            row.iter_mut().zip(&self.b2).for_each(|(v, bb)| *v += bb);
        }
        (hid, y)
    }

    /// Reconstructs one image from observed features.
    pub fn invert(&self, observed: &[f32]) -> Result<Vec<f32>, AuditError> {
        if observed.len() != self.in_f {
            return Err(AuditError::Attack(format!(
                "decoder expects {} features, got {}",
                self.in_f,
                observed.len()
            )));
        }
        let x: Vec<f32> = observed
            .iter()
            .zip(&self.scale)
            .map(|(v, s)| v * s)
            .collect();
        Ok(self
            .forward(&x, 1)
            .1
            .into_iter()
            .map(|v| v.clamp(0.0, 1.0))
            .collect())
    }
}
