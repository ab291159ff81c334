//! Privacy-hardened training: the classifier learns features at a split layer K that carry the
//! class and as little else of the input as it can.
//!
//! What the host sees at split K is the tensor entering linear layer K. The host runs the tail
//! in plain and so learns the predicted class anyway; what must not leak is everything else —
//! which shirt, not just "a shirt". Training adds to the cross-entropy λ × the *within-class
//! share of the variance* of the split features over each batch, feature by feature,
//!
//!   share = mean over features j of  Σᵢ (fᵢⱼ − c_{yᵢ}ⱼ)² / (Σᵢ (fᵢⱼ − f̄ⱼ)² + ε),
//!
//! where c_y is the batch mean of the features of class y, f̄ the batch mean of all of them and
//! ε = 10⁻³ × the mean of the denominators (so features that never vary count as 0). At share 0
//! every feature is a function of the label alone, and the best any attacker can rebuild from
//! them is the class-mean image. Each feature is judged on its own scale, as the audit's
//! attackers rescale each one: the model can neither meet the criterion by shrinking the
//! features nor by inflating a few class-separating ones above the rest. It needs no adversary
//! trained beside the model (training against a jointly trained decoder defeats that one
//! decoder; the audit's attackers are trained afresh). λ (`--harden-weight`) trades accuracy
//! for privacy; docs/AUDIT.md has the measured frontier.

use burn::tensor::Tensor;

use origami_model::{Model, ValueId};

use crate::graph::{device, tensor, values, Graph, Weights};
use crate::{Dataset, TrainError};

/// Hardening of the features at split `split` with weight `weight` (λ).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Harden {
    /// The split layer K: the number of linear layers the enclave runs.
    pub split: usize,
    /// λ, the weight of the within-class share against the cross-entropy.
    pub weight: f32,
}

impl Harden {
    /// The value the host sees at this split of `model`; refuses split 0 (the host would see
    /// the input itself), a split at or past the last linear layer (nothing left to hide
    /// behind), and a weight that is negative or not finite.
    pub fn value(&self, model: &Model) -> Result<ValueId, TrainError> {
        if !(self.weight.is_finite() && self.weight >= 0.0) {
            return Err(TrainError::Model(format!(
                "the hardening weight must be a finite number ≥ 0, got {}",
                self.weight
            )));
        }
        let layers = model.linear_nodes().len();
        if self.split == 0 || self.split >= layers {
            return Err(TrainError::Model(format!(
                "a hardened split must be between 1 and {} (the model has {layers} linear layers), got {}",
                layers.saturating_sub(1),
                self.split
            )));
        }
        let node = model
            .split_node(self.split)
            .map_err(|e| TrainError::Model(e.to_string()))?;
        Ok(ValueId::new(node.index()))
    }
}

/// The within-class share of the variance of `f` (`[B, F]`) for one-hot labels `y` (`[B, C]`),
/// differentiable (see the module documentation). A batch whose features do not vary at all
/// scores 0.
pub fn within_class_share(f: Tensor<2>, y: Tensor<2>) -> Tensor<1> {
    let counts = y.clone().sum_dim(0).clamp_min(1.0); // [1, C]
    let means = y.clone().transpose().matmul(f.clone()) / counts.transpose(); // [C, F]
    let within = (f.clone() - y.matmul(means)).powf_scalar(2.0).sum_dim(0); // [1, F]
    let total = (f.clone() - f.mean_dim(0)).powf_scalar(2.0).sum_dim(0); // [1, F]
    let eps = total
        .clone()
        .mean()
        .detach()
        .mul_scalar(EPS)
        .add_scalar(1e-20)
        .reshape([1, 1]);
    (within / (total + eps)).mean()
}

/// ε relative to the mean per-feature variance.
const EPS: f32 = 1e-3;

/// The within-class share of the features at `split` over a whole data set (labels from `ds`,
/// the whole set as one batch of [`within_class_share`]): the figure `origami train` reports
/// for a hardened model.
pub fn split_share(model: &Model, ds: &Dataset, split: usize) -> Result<f64, TrainError> {
    let v = Harden { split, weight: 0.0 }.value(model)?;
    let graph = Graph::new(model)?;
    let dev = device();
    let w = Weights::frozen(model, &dev);
    let img: usize = model.input_shape.iter().product();
    let dims = [
        model.input_shape[0],
        model.input_shape[1],
        model.input_shape[2],
    ];
    let classes = ds.labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    let mut feats = Vec::new();
    for start in (0..ds.len()).step_by(256) {
        let end = (start + 256).min(ds.len());
        let x = tensor(
            ds.images[start * img..end * img].to_vec(),
            [end - start, dims[0], dims[1], dims[2]],
            &dev,
        );
        feats.push(graph.run(&w, x, v)?.detach());
    }
    if feats.is_empty() {
        return Ok(0.0);
    }
    let mut onehot = vec![0f32; ds.len() * classes];
    for (i, &l) in ds.labels.iter().enumerate() {
        onehot[i * classes + l as usize] = 1.0;
    }
    let y = tensor(onehot, [ds.len(), classes], &dev);
    Ok(values(within_class_share(Tensor::cat(feats, 0), y))[0] as f64)
}
