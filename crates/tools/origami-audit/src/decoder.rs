//! Learned-decoder inversion (He, Zhang, Lee, ACSAC'19, "inverse network"): the host trains a
//! network that maps the features at the split back to images, on public data of the same
//! distribution (pairs made with the known weights), then applies it to what it observes.
//!
//! The decoder is convolutional: the features are lifted to the image's resolution (a dense
//! layer first when they are a vector; otherwise a 3×3 convolution), then 2× nearest
//! upsampling + 3×3 convolution + ReLU until the image size, two more convolutions and a linear
//! output, trained with Adam on the pixel MSE. Reconstructions are clamped to [0, 1].

use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

use origami_model::{exec, Model, Op, Tensor, ValueId};

use crate::nn::{shuffled, Adam, Net, Shape, Value};
use crate::AuditError;

/// Training settings of a learned attack (decoder or GAN).
#[derive(Clone, Debug)]
pub struct TrainBudget {
    /// Passes over the training pairs.
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    pub seed: u64,
}

impl Default for TrainBudget {
    fn default() -> Self {
        Self {
            epochs: 3,
            batch: 32,
            lr: 2e-3,
            seed: 7,
        }
    }
}

/// The float features after node `end − 1` for a batch of images (`[N, image_len]`),
/// computed with the public weights: the attacker's training pairs.
pub fn features(model: &Model, end: usize, images: &[f32]) -> Result<Vec<f32>, AuditError> {
    let img: usize = model.input_shape.iter().product();
    let n = images.len() / img;
    if end == 0 {
        return Ok(images.to_vec());
    }
    let mut head = model.clone();
    head.nodes.truncate(end);
    head.output = ValueId::new(end);
    let mut out = Vec::new();
    let mut shape = vec![0usize];
    shape.extend(&model.input_shape);
    for start in (0..n).step_by(256) {
        let m = (n - start).min(256);
        shape[0] = m;
        let x = Tensor::new(
            shape.clone(),
            images[start * img..(start + m) * img].to_vec(),
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

/// The shape (channels, height, width) of the value after node `end − 1`; a vector of n
/// features is `[n, 1, 1]`. A flattened feature map keeps its map shape (same values, same
/// order), so the attacks can use its spatial structure.
pub fn feature_shape(model: &Model, end: usize) -> Result<Shape, AuditError> {
    let shapes = model
        .validate()
        .map_err(|e| AuditError::Attack(e.to_string()))?;
    let mut v = end;
    while v > 0
        && matches!(model.nodes[v - 1].op, Op::Flatten)
        && shapes[model.nodes[v - 1].inputs[0].index()].len() == 4
    {
        v = model.nodes[v - 1].inputs[0].index();
    }
    let s = shapes
        .get(v)
        .ok_or_else(|| AuditError::Attack(format!("no value {end} in the model")))?;
    match s.len() {
        4 => Ok([s[1], s[2], s[3]]),
        2 => Ok([s[1], 1, 1]),
        _ => Err(AuditError::Attack(format!(
            "unsupported feature shape {s:?}"
        ))),
    }
}

/// Per-channel scaling of the features to [−1, 1] (1 / max |f| over the training pairs).
#[derive(Clone, Debug)]
pub struct Scaler {
    shape: Shape,
    scale: Vec<f32>,
}

impl Scaler {
    pub fn fit(shape: Shape, feats: &[f32]) -> Self {
        let plane = shape[1] * shape[2];
        let mut scale = vec![0f32; shape[0]];
        for (i, v) in feats.iter().enumerate() {
            let c = (i / plane) % shape[0];
            scale[c] = scale[c].max(v.abs());
        }
        scale
            .iter_mut()
            .for_each(|s| *s = if *s > 0.0 { 1.0 / *s } else { 0.0 });
        Self { shape, scale }
    }

    pub fn apply(&self, f: &[f32]) -> Vec<f32> {
        let plane = self.shape[1] * self.shape[2];
        f.iter()
            .enumerate()
            .map(|(i, v)| v * self.scale[i / plane])
            .collect()
    }
}

/// Channels of the attack networks at a resolution: 16 at full size, 32 at half, 64 below.
pub(crate) fn width(h: usize, full: usize) -> usize {
    if h >= full {
        16
    } else if 2 * h >= full {
        32
    } else {
        64
    }
}

/// How many 2× upsamplings take a feature map of height `h` to `full`, or an error when the
/// sizes do not match that way.
pub(crate) fn ups(f: Shape, img: Shape) -> Result<usize, AuditError> {
    if f[1] == 1 && f[2] == 1 {
        return Ok(0);
    }
    (0..6)
        .find(|k| f[1] << k == img[1] && f[2] << k == img[2])
        .ok_or_else(|| {
            AuditError::Attack(format!(
                "features of {}×{} do not upsample to the {}×{} image by powers of 2",
                f[1], f[2], img[1], img[2]
            ))
        })
}

/// The spatial size a feature vector is first projected to: the image size over 4 when it
/// divides, else the image size.
pub(crate) fn vector_grid(img: Shape) -> usize {
    if img[1].is_multiple_of(4) && img[1] == img[2] {
        img[1] / 4
    } else {
        img[1]
    }
}

/// Brings the features (value `x`) to the image's resolution with learned layers.
fn lift(n: &mut Net, x: Value, img: Shape) -> Result<Value, AuditError> {
    let f = n.shape(x);
    let mut v;
    let mut h;
    if f[1] == 1 && f[2] == 1 {
        if img[1] != img[2] {
            return Err(AuditError::Attack(
                "vector features need a square image".into(),
            ));
        }
        h = vector_grid(img);
        let c = width(h, img[1]);
        v = n.dense(x, c * h * h);
        v = n.relu(v);
        v = n.reshape(v, [c, h, h]);
    } else {
        ups(f, img)?;
        h = f[1];
        v = n.conv(x, width(h, img[1]), 3);
        v = n.relu(v);
    }
    while h < img[1] {
        h *= 2;
        v = n.up2(v);
        v = n.conv(v, width(h, img[1]), 3);
        v = n.relu(v);
    }
    Ok(v)
}

/// The checked shape of a learned attack's training set.
pub(crate) struct TrainingPairs {
    pub n: usize,
    pub image_len: usize,
}

impl TrainingPairs {
    /// Checks `N` feature vectors of shape `f` against `N` images of shape `img` and the
    /// budget; returns the counts, the fitted feature scaler and the scaled features.
    pub fn new(
        feats: &[f32],
        f: Shape,
        images: &[f32],
        img: Shape,
        cfg: &TrainBudget,
        attack: &str,
    ) -> Result<(Self, Scaler, Vec<Vec<f32>>), AuditError> {
        let (fl, il) = (f.iter().product::<usize>(), img.iter().product::<usize>());
        let n = images.len() / il;
        if n == 0 || feats.len() != n * fl || cfg.batch == 0 || cfg.epochs == 0 {
            return Err(AuditError::Attack(format!("{attack}: no training data")));
        }
        let scaler = Scaler::fit(f, feats);
        let xs = feats.chunks(fl).map(|r| scaler.apply(r)).collect();
        Ok((Self { n, image_len: il }, scaler, xs))
    }
}

/// A trained decoder.
pub struct Decoder {
    net: Net,
    scaler: Scaler,
    pub steps: usize,
}

impl Decoder {
    /// The architecture for features of shape `f` and images of shape `img`.
    pub fn build(f: Shape, img: Shape, seed: u64) -> Result<Net, AuditError> {
        let mut n = Net::new(&[f], seed);
        let v = lift(&mut n, 0, img)?;
        let v = n.conv(v, 16, 3);
        let v = n.relu(v);
        n.conv(v, img[0], 3);
        Ok(n)
    }

    /// Trains on (features, images) pairs: `feats` is `N` vectors of shape `f`, `images` is `N`
    /// images of shape `img`. `progress(step, total, mean loss)` after each batch.
    pub fn train(
        feats: &[f32],
        f: Shape,
        images: &[f32],
        img: Shape,
        cfg: &TrainBudget,
        mut progress: impl FnMut(usize, usize, f32),
    ) -> Result<Self, AuditError> {
        let (pairs, scaler, xs) = TrainingPairs::new(feats, f, images, img, cfg, "decoder")?;
        let (n, il) = (pairs.n, pairs.image_len);
        let mut net = Self::build(f, img, cfg.seed)?;
        let mut opt = Adam::new(net.params.len(), cfg.lr, 0.9);
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5eed);
        let total = cfg.epochs * n.div_ceil(cfg.batch);
        for _ in 0..cfg.epochs {
            for idx in shuffled(n, &mut rng).chunks(cfg.batch) {
                let (g, loss) = net.batch_grad(idx, |i, g| {
                    let t = net.forward(&[&xs[i]]);
                    let target = &images[i * il..(i + 1) * il];
                    let mut l = 0f64;
                    let d: Vec<f32> = t
                        .output()
                        .iter()
                        .zip(target)
                        .map(|(y, x)| {
                            l += ((y - x) * (y - x)) as f64;
                            2.0 * (y - x) / il as f32
                        })
                        .collect();
                    net.backward(&t, &d, Some(g), false);
                    l / il as f64
                });
                let mut p = std::mem::take(&mut net.params);
                opt.step(&mut p, &g, 1.0 / idx.len() as f32);
                net.params = p;
                progress(opt.steps, total, (loss / idx.len() as f64) as f32);
            }
        }
        Ok(Self {
            net,
            scaler,
            steps: opt.steps,
        })
    }

    /// Reconstructs one image from observed features.
    pub fn invert(&self, observed: &[f32]) -> Result<Vec<f32>, AuditError> {
        reconstruct(&self.net, &self.scaler, observed)
    }
}

/// Runs a trained inverse network on observed features (scaled as in training); pixels clamped
/// to [0, 1].
pub(crate) fn reconstruct(
    net: &Net,
    scaler: &Scaler,
    observed: &[f32],
) -> Result<Vec<f32>, AuditError> {
    let want = net.input_shapes()[0].iter().product::<usize>();
    if observed.len() != want {
        return Err(AuditError::Attack(format!(
            "the attack expects {want} features, got {}",
            observed.len()
        )));
    }
    let t = net.forward(&[&scaler.apply(observed)]);
    Ok(t.output().iter().map(|v| v.clamp(0.0, 1.0)).collect())
}
