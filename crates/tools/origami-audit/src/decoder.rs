//! Learned-decoder inversion (He, Zhang, Lee, ACSAC'19, "inverse network"): the host trains a
//! network that maps the features at the split back to images, on public data of the same
//! distribution (pairs made with the known weights), then applies it to what it observes.
//!
//! The decoder is convolutional: the features are lifted to the image's resolution (a dense
//! layer first when they are a vector; otherwise a 3×3 convolution), then 2× nearest
//! upsampling + 3×3 convolution + ReLU until the image size, two more convolutions and a linear
//! output, trained with Adam on the pixel MSE. Reconstructions are clamped to [0, 1].

use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor as BurnTensor};
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

use origami_model::{exec, Model, Op, Tensor, ValueId};
use origami_train::graph::{device, tensor, values};

use crate::nn::{shuffled, Builder, Net, Shape, Value};
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

/// Per-channel scaling of the features to [0, 1]: (f − min) / (max − min) over the training
/// pairs. Post-ReLU features (min 0) are divided by their maximum; normalised images (an RGB
/// model's input at split 0) are brought back to a non-negative range before the first ReLU.
#[derive(Clone, Debug)]
pub struct Scaler {
    shape: Shape,
    shift: Vec<f32>,
    scale: Vec<f32>,
}

impl Scaler {
    pub fn fit(shape: Shape, feats: &[f32]) -> Self {
        let plane = shape[1] * shape[2];
        let mut lo = vec![f32::INFINITY; shape[0]];
        let mut hi = vec![f32::NEG_INFINITY; shape[0]];
        for (i, v) in feats.iter().enumerate() {
            let c = (i / plane) % shape[0];
            lo[c] = lo[c].min(*v);
            hi[c] = hi[c].max(*v);
        }
        let shift: Vec<f32> = lo
            .iter()
            .map(|&l| if l.is_finite() { l.min(0.0) } else { 0.0 })
            .collect();
        let scale = hi
            .iter()
            .zip(&shift)
            .map(|(&h, &l)| {
                if h.is_finite() && h - l > 0.0 {
                    1.0 / (h - l)
                } else {
                    0.0
                }
            })
            .collect();
        Self {
            shape,
            shift,
            scale,
        }
    }

    /// Scales one feature vector, or several one after the other.
    pub fn apply(&self, f: &[f32]) -> Vec<f32> {
        let plane = self.shape[1] * self.shape[2];
        f.iter()
            .enumerate()
            .map(|(i, v)| {
                let c = (i / plane) % self.shape[0];
                (v - self.shift[c]) * self.scale[c]
            })
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
/// divides, halved further while above 16 and even (so the projection stays small for large
/// images: 224 → 14), else the image size.
pub(crate) fn vector_grid(img: Shape) -> usize {
    if !(img[1].is_multiple_of(4) && img[1] == img[2]) {
        return img[1];
    }
    let mut g = img[1] / 4;
    while g > 16 && g.is_multiple_of(2) {
        g /= 2;
    }
    g
}

/// Brings the features (value `x`) to the image's resolution with learned layers.
fn lift(n: &mut Builder, x: Value, img: Shape) -> Result<Value, AuditError> {
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
    pub feature_shape: Shape,
    pub image_shape: Shape,
}

impl TrainingPairs {
    /// Checks `N` feature vectors of shape `f` against `N` images of shape `img` and the
    /// budget; returns the counts, the fitted feature scaler and the scaled features (flat).
    pub fn new(
        feats: &[f32],
        f: Shape,
        images: &[f32],
        img: Shape,
        cfg: &TrainBudget,
        attack: &str,
    ) -> Result<(Self, Scaler, Vec<f32>), AuditError> {
        let (fl, il) = (f.iter().product::<usize>(), img.iter().product::<usize>());
        let n = images.len() / il.max(1);
        if n == 0 || feats.len() != n * fl || cfg.batch == 0 || cfg.epochs == 0 {
            return Err(AuditError::Attack(format!("{attack}: no training data")));
        }
        let scaler = Scaler::fit(f, feats);
        let xs = scaler.apply(feats);
        Ok((
            Self {
                n,
                feature_shape: f,
                image_shape: img,
            },
            scaler,
            xs,
        ))
    }

    /// Batch `idx` of the scaled features and of the images, as tensors.
    pub fn batch(
        &self,
        xs: &[f32],
        images: &[f32],
        idx: &[usize],
        dev: &Device,
    ) -> (BurnTensor<4>, BurnTensor<4>) {
        (
            rows(xs, self.feature_shape, idx, dev),
            rows(images, self.image_shape, idx, dev),
        )
    }
}

/// Rows `idx` of `data` (rows of shape `s`) as an `[len(idx), s…]` tensor.
pub(crate) fn rows(data: &[f32], s: Shape, idx: &[usize], dev: &Device) -> BurnTensor<4> {
    let l = s.iter().product::<usize>();
    let mut out = Vec::with_capacity(idx.len() * l);
    for &i in idx {
        out.extend_from_slice(&data[i * l..(i + 1) * l]);
    }
    tensor(out, [idx.len(), s[0], s[1], s[2]], dev)
}

/// The mean pixel of each channel over `images` (`[N, C, H, W]` flat).
pub(crate) fn channel_means(images: &[f32], img: Shape) -> Vec<f32> {
    let plane = img[1] * img[2];
    let mut sums = vec![0f64; img[0]];
    for (i, v) in images.iter().enumerate() {
        sums[(i / plane) % img[0]] += *v as f64;
    }
    let per = (images.len() / img[0]).max(1) as f64;
    sums.iter().map(|s| (s / per) as f32).collect()
}

/// Adam as the learned attacks use it (β₂ 0.999, ε 1e-8).
pub(crate) fn adam(beta1: f32) -> burn::optim::ModuleOptimizer {
    AdamConfig::new()
        .with_beta_1(beta1)
        .with_epsilon(1e-8)
        .init()
}

/// A trained decoder.
pub struct Decoder {
    net: Net,
    scaler: Scaler,
    pub steps: usize,
}

impl Decoder {
    /// The architecture for features of shape `f` and images of shape `img`.
    pub fn build(f: Shape, img: Shape, seed: u64, dev: &Device) -> Result<Net, AuditError> {
        let mut n = Builder::new(&[f], seed, dev);
        let v = lift(&mut n, 0, img)?;
        let v = n.conv(v, 16, 3);
        let v = n.relu(v);
        n.conv(v, img[0], 3);
        Ok(n.finish())
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
        let dev = device();
        let mut net = Self::build(f, img, cfg.seed, &dev)?;
        net.set_output_bias(&channel_means(images, img));
        let mut opt = adam(0.9);
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5eed);
        let total = cfg.epochs * pairs.n.div_ceil(cfg.batch);
        let mut steps = 0;
        for _ in 0..cfg.epochs {
            for idx in shuffled(pairs.n, &mut rng).chunks(cfg.batch) {
                let (x, target) = pairs.batch(&xs, images, idx, &dev);
                let d = net.forward(&[x]) - target;
                let loss = (d.clone() * d).mean();
                let l = values(loss.clone().detach())[0];
                let g = GradientsParams::from_grads(loss.backward(), &net);
                net = opt.step(cfg.lr as f64, net, g);
                steps += 1;
                progress(steps, total, l);
            }
        }
        Ok(Self { net, scaler, steps })
    }

    /// Reconstructs images from observed features.
    pub fn invert(&self, observed: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, AuditError> {
        reconstruct(&self.net, &self.scaler, observed)
    }
}

/// Runs a trained inverse network on observed features (scaled as in training), in batches;
/// pixels clamped to [0, 1].
pub(crate) fn reconstruct(
    net: &Net,
    scaler: &Scaler,
    observed: &[Vec<f32>],
) -> Result<Vec<Vec<f32>>, AuditError> {
    let f = net.input_shapes()[0];
    let want = f.iter().product::<usize>();
    if let Some(o) = observed.iter().find(|o| o.len() != want) {
        return Err(AuditError::Attack(format!(
            "the attack expects {want} features, got {}",
            o.len()
        )));
    }
    let il = net.output_shape().iter().product::<usize>();
    let dev = device();
    let mut out = Vec::with_capacity(observed.len());
    for chunk in observed.chunks(128) {
        let scaled: Vec<f32> = chunk.iter().flat_map(|o| scaler.apply(o)).collect();
        let x = tensor(scaled, [chunk.len(), f[0], f[1], f[2]], &dev);
        let y = values(net.forward(&[x]).clamp(0.0, 1.0));
        out.extend(y.chunks(il).map(<[f32]>::to_vec));
    }
    Ok(out)
}
