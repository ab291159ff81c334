//! White-box inversion (He, Zhang, Lee, ACSAC'19): the host knows the weights, so it searches
//! for an input whose features match the observed ones, by gradient descent (Adam) on
//! mean((f(x) − observed)²) + λ·TV²(x), with x kept in [0, 1].
//!
//! `f` is the model's own head up to the split, differentiated by burn through the IR
//! interpreter (`origami_train::graph`), so any head the importer reads can be attacked:
//! strided and grouped convolutions, pooling, residual adds, concatenations. All images are
//! optimised as one batch; the loss is a sum of per-image terms and Adam is elementwise, so
//! each image's trajectory is the one it would have alone.
//!
//! The search is in pixel space ([0, 1]); the model's own preprocessing
//! ([`Preprocess::for_model`], ImageNet normalisation for RGB models) is applied before the head.
//!
//! The combined attack ([`invert_from`] started at a learned decoder's output) is the
//! published refinement: the decoder gives a prior-shaped guess, the optimisation then makes
//! it consistent with the observed features.

use burn::optim::{AdamConfig, Optimizer};
use burn::tensor::Tensor;

use origami_model::input::Preprocess;
use origami_model::{Model, ValueId};
use origami_train::graph::{device, tensor, values, Graph, Weights};

use crate::AuditError;

/// Attack settings.
#[derive(Clone, Debug)]
pub struct WhiteboxConfig {
    pub steps: usize,
    pub lr: f32,
    /// Weight of the smoothness prior (sum of squared neighbour differences, per pixel).
    pub tv: f32,
}

impl Default for WhiteboxConfig {
    fn default() -> Self {
        Self {
            steps: 300,
            lr: 0.05,
            tv: 0.01,
        }
    }
}

fn err(e: impl std::fmt::Display) -> AuditError {
    AuditError::Attack(e.to_string())
}

/// Rebuilds images (pixels in [0, 1], the model's input shape) from the features after node
/// `end − 1` of `model`, starting from flat grey. At split 0 the features are the model's
/// input, i.e. the image after its preprocessing.
pub fn invert(
    model: &Model,
    end: usize,
    observed: &[Vec<f32>],
    cfg: &WhiteboxConfig,
    progress: impl FnMut(usize),
) -> Result<Vec<Vec<f32>>, AuditError> {
    let len: usize = model.input_shape.iter().product();
    let grey = vec![vec![0.5; len]; observed.len()];
    invert_from(model, end, observed, &grey, cfg, progress)
}

/// [`invert`] starting from `init` (one image per observation, clamped to [0, 1]), e.g. a
/// decoder's output. `progress(step)` after each step.
pub fn invert_from(
    model: &Model,
    end: usize,
    observed: &[Vec<f32>],
    init: &[Vec<f32>],
    cfg: &WhiteboxConfig,
    mut progress: impl FnMut(usize),
) -> Result<Vec<Vec<f32>>, AuditError> {
    let [c, h, w] = match model.input_shape[..] {
        [c, h, w] => [c, h, w],
        _ => return Err(err("the white-box attack needs a [C, H, W] input")),
    };
    let n = observed.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    if init.len() != n || init.iter().any(|x| x.len() != c * h * w) {
        return Err(AuditError::Attack(format!(
            "white-box starts: {} images, expected {n} of {} values",
            init.len(),
            c * h * w
        )));
    }
    let graph = Graph::new(model).map_err(err)?;
    let dev = device();
    let weights = Weights::frozen(model, &dev);
    let at = ValueId::new(end);
    let f: usize = graph.shape(at).iter().product();
    if observed.iter().any(|o| o.len() != f) {
        return Err(AuditError::Attack(format!(
            "observed features must have {f} values (split after node {end})"
        )));
    }
    let obs: Tensor<2> = tensor(observed.concat(), [n, f], &dev);
    let start: Vec<f32> = init.concat().iter().map(|v| v.clamp(0.0, 1.0)).collect();
    let mut x: Tensor<4> = tensor(start, [n, c, h, w], &dev);
    // Pixels → model input: (x − mean) / std per channel.
    let pre = Preprocess::for_model(model);
    let identity = pre.mean.iter().all(|&m| m == 0.0) && pre.std.iter().all(|&s| s == 1.0);
    let mean: Tensor<4> = tensor(pre.mean.clone(), [1, c, 1, 1], &dev);
    let std: Tensor<4> = tensor(pre.std.clone(), [1, c, 1, 1], &dev);
    let adam = AdamConfig::new().with_epsilon(1e-8).build();
    let mut state = None;
    let tv = cfg.tv / (c * h * w) as f32;
    for step in 1..=cfg.steps {
        let xg = x.clone().require_grad();
        let input = if identity {
            xg.clone()
        } else {
            (xg.clone() - mean.clone()) / std.clone()
        };
        let feats = graph.run(&weights, input, at).map_err(err)?;
        let d = feats - obs.clone();
        // Σ over images of (mean squared feature error + tv/pixels · Σ neighbour differences²).
        let mut loss = (d.clone() * d).sum().div_scalar(f as f32);
        if w > 1 {
            let dx = xg.clone().slice([0..n, 0..c, 0..h, 1..w])
                - xg.clone().slice([0..n, 0..c, 0..h, 0..w - 1]);
            loss = loss + (dx.clone() * dx).sum().mul_scalar(tv);
        }
        if h > 1 {
            let dy = xg.clone().slice([0..n, 0..c, 1..h, 0..w])
                - xg.clone().slice([0..n, 0..c, 0..h - 1, 0..w]);
            loss = loss + (dy.clone() * dy).sum().mul_scalar(tv);
        }
        let grads = loss.backward();
        let g = xg
            .grad(&grads)
            .ok_or_else(|| err("no gradient reached the input"))?;
        let (next, s) = adam.step(cfg.lr as f64, x, g, state);
        state = s;
        x = next.clamp(0.0, 1.0);
        progress(step);
    }
    let out = values(x);
    Ok(out.chunks(c * h * w).map(<[f32]>::to_vec).collect())
}
