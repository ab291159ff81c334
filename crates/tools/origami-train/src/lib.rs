//! Training classifiers on burn: the model's own IR run by the differentiable interpreter
//! ([`graph`]), so any architecture the importer reads trains the same way; softmax
//! cross-entropy, burn's Adam, a learning rate decayed per epoch, and optionally a privacy
//! penalty at a split layer ([`harden`]). Seeded: the same seed and data give the same order
//! of batches.

use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{activation, Tensor as BurnTensor};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use origami_model::{exec, Model, Tensor, ValueId};

use crate::graph::{device, tensor, values, Graph, Weights};

pub mod data;
pub mod graph;
pub mod harden;

pub use data::{Dataset, Split};
pub use harden::Harden;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    #[error("data: {0}")]
    Data(String),
    #[error("model: {0}")]
    Model(String),
}

/// Training settings.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    /// Learning rate multiplier applied after each epoch.
    pub lr_decay: f32,
    pub seed: u64,
    /// Privacy hardening at a split layer ([`harden`]); `None` trains for accuracy alone.
    pub harden: Option<Harden>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 8,
            batch: 64,
            lr: 2e-3,
            lr_decay: 0.7,
            seed: 2026,
            harden: None,
        }
    }
}

/// Progress of one batch.
#[derive(Clone, Debug)]
pub struct Progress {
    pub epoch: usize,
    pub batch: usize,
    pub batches: usize,
    pub loss: f32,
    pub accuracy: f32,
    /// With hardening: the mean within-class share at the split over this epoch's batches.
    pub share: Option<f32>,
}

/// The result of one epoch.
#[derive(Clone, Debug)]
pub struct EpochReport {
    pub epoch: usize,
    pub train_loss: f32,
    pub train_accuracy: f32,
    pub test_accuracy: f32,
    /// With hardening: the mean within-class share at the split over the epoch's batches.
    pub train_share: Option<f32>,
}

/// Top-1 accuracy of `model` on `ds` with the float executor (what inference runs).
pub fn accuracy(model: &Model, ds: &Dataset) -> Result<f32, TrainError> {
    let mut correct = 0usize;
    for start in (0..ds.len()).step_by(256) {
        let end = (start + 256).min(ds.len());
        let x = Tensor::new(
            vec![end - start, 1, 28, 28],
            ds.images[start * 784..end * 784].to_vec(),
        )
        .map_err(|e| TrainError::Model(e.to_string()))?;
        let y = exec::run(model, &x).map_err(|e| TrainError::Model(e.to_string()))?;
        for (b, top) in y.top_k(1).iter().enumerate() {
            if top[0].0 == ds.labels[start + b] as usize {
                correct += 1;
            }
        }
    }
    Ok(correct as f32 / ds.len().max(1) as f32)
}

/// Trains `model` in place with Adam; reports each epoch (test accuracy on `test`).
pub fn train(
    model: &mut Model,
    train_set: &Dataset,
    test_set: &Dataset,
    cfg: &TrainConfig,
    mut progress: impl FnMut(&Progress),
) -> Result<Vec<EpochReport>, TrainError> {
    if train_set.is_empty() || cfg.batch == 0 || cfg.epochs == 0 {
        return Err(TrainError::Data(
            "nothing to train on (empty data, batch or epochs)".into(),
        ));
    }
    if model.input_shape != [1, 28, 28] {
        return Err(TrainError::Model(format!(
            "the training data is 1×28×28, the model takes {:?}",
            model.input_shape
        )));
    }
    let arch = model.clone();
    let graph = Graph::new(&arch)?;
    let classes = *graph
        .shape(arch.output)
        .last()
        .expect("validated shapes have a batch dimension");
    if let Some(&bad) = train_set.labels.iter().find(|&&l| l as usize >= classes) {
        return Err(TrainError::Data(format!(
            "label {bad} for a model with {classes} outputs"
        )));
    }
    // With hardening: the value the host sees at the split and λ.
    let harden = cfg
        .harden
        .map(|h| h.value(&arch).map(|v| (v, h.weight)))
        .transpose()?;
    let outs: Vec<ValueId> = std::iter::once(arch.output)
        .chain(harden.map(|(v, _)| v))
        .collect();
    let dev = device();
    let mut weights = Weights::from_model(&arch, &dev);
    let mut opt = AdamConfig::new().with_epsilon(1e-8).init();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = (0..train_set.len()).collect();
    let mut lr = cfg.lr as f64;
    let mut reports = Vec::new();
    let batches = train_set.len().div_ceil(cfg.batch);
    for epoch in 0..cfg.epochs {
        for i in (1..order.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        let (mut tot_loss, mut tot_correct, mut seen) = (0f64, 0usize, 0usize);
        let mut tot_share = 0f64;
        for (bi, chunk) in order.chunks(cfg.batch).enumerate() {
            let b = chunk.len();
            let mut xs = Vec::with_capacity(b * 784);
            let mut onehot = vec![0f32; b * classes];
            for (k, &idx) in chunk.iter().enumerate() {
                xs.extend_from_slice(train_set.image(idx));
                onehot[k * classes + train_set.labels[idx] as usize] = 1.0;
            }
            let x = tensor(xs, [b, 1, 28, 28], &dev);
            let y: BurnTensor<2> = tensor(onehot, [b, classes], &dev);
            let mut vals = graph.run_many(&weights, x, &outs)?.into_iter();
            let logits = vals.next().expect("the output is asked first");
            let logp = activation::log_softmax(logits.clone(), 1);
            let mut loss = (logp * y.clone()).sum().neg().div_scalar(b as f32);
            if let (Some(f), Some((_, weight))) = (vals.next(), harden) {
                let share = harden::within_class_share(f, y);
                tot_share += values(share.clone().detach())[0] as f64;
                loss = loss + share.mul_scalar(weight);
            }
            let l = values(loss.clone().detach())[0];
            let grads = GradientsParams::from_grads(loss.backward(), &weights);
            weights = opt.step(lr, weights, grads);
            let top = values(logits.detach().argmax(1).float());
            tot_correct += chunk
                .iter()
                .zip(&top)
                .filter(|(&idx, &t)| t as usize == train_set.labels[idx] as usize)
                .count();
            tot_loss += l as f64 * b as f64;
            seen += b;
            progress(&Progress {
                epoch,
                batch: bi + 1,
                batches,
                loss: (tot_loss / seen as f64) as f32,
                accuracy: tot_correct as f32 / seen as f32,
                share: harden.map(|_| (tot_share / (bi + 1) as f64) as f32),
            });
        }
        weights.write_to(model)?;
        let test_accuracy = if test_set.is_empty() {
            f32::NAN
        } else {
            accuracy(model, test_set)?
        };
        reports.push(EpochReport {
            epoch,
            train_loss: (tot_loss / seen as f64) as f32,
            train_accuracy: tot_correct as f32 / seen as f32,
            test_accuracy,
            train_share: harden.map(|_| (tot_share / batches as f64) as f32),
        });
        lr *= cfg.lr_decay as f64;
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;
    use origami_model::{Conv, Dense, Node, Op, Pool, ValueId};

    fn tiny() -> Model {
        let mut r = ChaCha8Rng::seed_from_u64(5);
        let mut u = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| (r.next_u32() % 2001) as f32 / 1000.0 - 1.0)
                .collect()
        };
        let conv = Conv {
            out_c: 3,
            in_c: 1,
            kh: 3,
            kw: 3,
            stride: [1, 1],
            pads: [1; 4],
            groups: 1,
            weight: u(27),
            bias: u(3),
        };
        let conv2 = Conv {
            out_c: 2,
            in_c: 3,
            kh: 3,
            kw: 3,
            stride: [2, 2],
            pads: [1; 4],
            groups: 1,
            weight: u(54),
            bias: u(2),
        };
        let pool = Pool {
            kernel: [2, 2],
            stride: [2, 2],
            pads: [0; 4],
            count_include_pad: false,
        };
        let ops = vec![
            Op::Conv(conv),
            Op::Relu,
            Op::MaxPool(pool),
            Op::Conv(conv2),
            Op::Flatten,
            Op::Dense(Dense {
                out_f: 10,
                in_f: 2 * 7 * 7,
                weight: u(980),
                bias: u(10),
            }),
        ];
        Model {
            name: "tiny".into(),
            input_shape: vec![1, 28, 28],
            nodes: ops
                .into_iter()
                .enumerate()
                .map(|(i, op)| Node {
                    name: format!("n{i}"),
                    op,
                    inputs: vec![ValueId::new(i)],
                    output: ValueId::new(i + 1),
                })
                .collect(),
            output: ValueId::new(6),
            labels: None,
        }
    }

    /// A few Adam steps on a fixed tiny batch lower its loss.
    #[test]
    fn training_lowers_the_loss() {
        let mut model = tiny();
        let n = 32;
        let images: Vec<f32> = (0..n * 784)
            .map(|i| ((i * 7919) % 255) as f32 / 255.0)
            .collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        let ds = Dataset { images, labels };
        let cfg = TrainConfig {
            epochs: 8,
            batch: 32,
            lr: 1e-2,
            lr_decay: 1.0,
            seed: 1,
            harden: None,
        };
        let rep = train(
            &mut model,
            &ds,
            &Dataset {
                images: vec![],
                labels: vec![],
            },
            &cfg,
            |_| {},
        )
        .unwrap();
        assert!(
            rep.last().unwrap().train_loss < rep[0].train_loss * 0.8,
            "{rep:?}"
        );
    }
}
