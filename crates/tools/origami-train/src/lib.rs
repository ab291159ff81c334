//! Training the built-in classifier in Rust: backpropagation through the sequential subset of
//! the IR (Conv with groups 1, Dense, Relu, MaxPool, Flatten/Reshape), softmax cross-entropy,
//! Adam. Images are processed in parallel (rayon), one forward/backward per image with faer
//! GEMMs, gradients summed per batch. Seeded: the same seed, data and thread count give the
//! same weights.

use faer::{Accum, MatMut, MatRef, Par};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use rayon::prelude::*;

use origami_model::linalg::ConvGeom;
use origami_model::{exec, Model, Op, Tensor, ValueId};

pub mod data;
pub mod graph;

pub use data::{Dataset, Split};

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
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 8,
            batch: 64,
            lr: 2e-3,
            lr_decay: 0.7,
            seed: 2026,
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
}

/// The result of one epoch.
#[derive(Clone, Debug)]
pub struct EpochReport {
    pub epoch: usize,
    pub train_loss: f32,
    pub train_accuracy: f32,
    pub test_accuracy: f32,
}

/// Where each trainable tensor lives in the flat parameter vector.
struct Slot {
    node: usize,
    w: (usize, usize),
    b: (usize, usize),
}

struct Layout {
    slots: Vec<Slot>,
    total: usize,
    shapes: Vec<Vec<usize>>,
}

fn layout(model: &Model) -> Result<Layout, TrainError> {
    let shapes = model
        .validate()
        .map_err(|e| TrainError::Model(e.to_string()))?;
    if model.input_shape != [1, 28, 28] {
        return Err(TrainError::Model(format!(
            "training expects 1×28×28 input, the model takes {:?}",
            model.input_shape
        )));
    }
    let mut slots = Vec::new();
    let mut off = 0;
    for (i, n) in model.nodes.iter().enumerate() {
        if n.inputs != [ValueId::new(i)] {
            return Err(TrainError::Model(format!(
                "node {} is not sequential: training supports chains only",
                n.name
            )));
        }
        let (wl, bl) = match &n.op {
            Op::Conv(c) if c.groups == 1 => (c.weight.len(), c.bias.len()),
            Op::Dense(d) => (d.weight.len(), d.bias.len()),
            Op::Relu | Op::MaxPool(_) | Op::Flatten | Op::Reshape(_) => continue,
            other => {
                return Err(TrainError::Model(format!(
                    "training does not support {} (node {})",
                    other.kind(),
                    n.name
                )))
            }
        };
        slots.push(Slot {
            node: i,
            w: (off, wl),
            b: (off + wl, bl),
        });
        off += wl + bl;
    }
    if model.output != ValueId::new(model.nodes.len()) {
        return Err(TrainError::Model(
            "the model output must be the last node".into(),
        ));
    }
    Ok(Layout {
        slots,
        total: off,
        shapes,
    })
}

fn gather(model: &Model, lay: &Layout) -> Vec<f32> {
    let mut p = vec![0f32; lay.total];
    for s in &lay.slots {
        let (w, b) = match &model.nodes[s.node].op {
            Op::Conv(c) => (&c.weight, &c.bias),
            Op::Dense(d) => (&d.weight, &d.bias),
            _ => continue,
        };
        p[s.w.0..s.w.0 + s.w.1].copy_from_slice(w);
        p[s.b.0..s.b.0 + s.b.1].copy_from_slice(b);
    }
    p
}

fn scatter(model: &mut Model, lay: &Layout, p: &[f32]) {
    for s in &lay.slots {
        let (w, b) = match &mut model.nodes[s.node].op {
            Op::Conv(c) => (&mut c.weight, &mut c.bias),
            Op::Dense(d) => (&mut d.weight, &mut d.bias),
            _ => continue,
        };
        w.copy_from_slice(&p[s.w.0..s.w.0 + s.w.1]);
        b.copy_from_slice(&p[s.b.0..s.b.0 + s.b.1]);
    }
}

/// The whole K × P patch matrix of one image (groups 1): the backward pass keeps it.
fn im2col(g: &ConvGeom, x: &[f32]) -> Vec<f32> {
    let p = g.oh * g.ow;
    let mut cols = vec![0f32; g.k() * p];
    origami_model::linalg::im2col(g, x, 0, p, &mut cols);
    cols
}

enum Cache {
    Conv { geom: ConvGeom, cols: Vec<f32> },
    Pool { argmax: Vec<u32> },
    None,
}

/// Runs nodes `..end` on one image, keeping every activation and what backward needs.
fn forward(model: &Model, lay: &Layout, x: &[f32], end: usize) -> (Vec<Vec<f32>>, Vec<Cache>) {
    let n = end;
    let mut acts: Vec<Vec<f32>> = Vec::with_capacity(n + 1);
    let mut caches: Vec<Cache> = Vec::with_capacity(n);
    acts.push(x.to_vec());
    for (i, node) in model.nodes.iter().enumerate().take(n) {
        let xin = &acts[i];
        let (y, cache) = match &node.op {
            Op::Conv(c) => {
                let s = &lay.shapes[i];
                let g = ConvGeom::new(c, s[2], s[3]).expect("validated");
                let cols = im2col(&g, xin);
                let p = g.oh * g.ow;
                let mut y = vec![0f32; g.out_c * p];
                origami_model::linalg::gemm(g.out_c, g.k(), p, &c.weight, &cols, &mut y, 1);
                for (oc, ch) in y.chunks_mut(p).enumerate() {
                    ch.iter_mut().for_each(|v| *v += c.bias[oc]);
                }
                (y, Cache::Conv { geom: g, cols })
            }
            Op::Dense(d) => {
                let mut y = d.bias.clone();
                for (o, yo) in y.iter_mut().enumerate() {
                    *yo += d.weight[o * d.in_f..(o + 1) * d.in_f]
                        .iter()
                        .zip(xin)
                        .map(|(w, v)| w * v)
                        .sum::<f32>();
                }
                (y, Cache::None)
            }
            Op::Relu => (xin.iter().map(|v| v.max(0.0)).collect(), Cache::None),
            Op::MaxPool(pl) => {
                let s = &lay.shapes[i];
                let (c, h, w) = (s[1], s[2], s[3]);
                let (oh, ow) = pl.out_hw(h, w).expect("validated");
                let mut y = vec![f32::NEG_INFINITY; c * oh * ow];
                let mut argmax = vec![0u32; c * oh * ow];
                for ch in 0..c {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let o = (ch * oh + oy) * ow + ox;
                            for ky in 0..pl.kernel[0] {
                                for kx in 0..pl.kernel[1] {
                                    let iy =
                                        (oy * pl.stride[0] + ky) as isize - pl.pads[0] as isize;
                                    let ix =
                                        (ox * pl.stride[1] + kx) as isize - pl.pads[1] as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                        continue;
                                    }
                                    let idx = (ch * h + iy as usize) * w + ix as usize;
                                    if xin[idx] > y[o] {
                                        y[o] = xin[idx];
                                        argmax[o] = idx as u32;
                                    }
                                }
                            }
                        }
                    }
                }
                (y, Cache::Pool { argmax })
            }
            _ => (xin.clone(), Cache::None), // Flatten / Reshape
        };
        acts.push(y);
        caches.push(cache);
    }
    (acts, caches)
}

/// Backpropagates `dy` (the gradient at the output of node `end − 1`) to the input. Adds
/// parameter gradients to `grad` when given; returns the gradient at the input when `want_dx`.
#[allow(clippy::too_many_arguments)]
fn backward(
    model: &Model,
    lay: &Layout,
    acts: &[Vec<f32>],
    caches: &[Cache],
    end: usize,
    mut dy: Vec<f32>,
    mut grad: Option<&mut [f32]>,
    want_dx: bool,
) -> Vec<f32> {
    let n = model.nodes.len();
    let mut slot_of = vec![None; n];
    for (si, s) in lay.slots.iter().enumerate() {
        slot_of[s.node] = Some(si);
    }
    for i in (0..end).rev() {
        let xin = &acts[i];
        let need_dx = i > 0 || want_dx;
        dy = match (&model.nodes[i].op, &caches[i]) {
            (Op::Conv(c), Cache::Conv { geom: g, cols }) => {
                let s = &lay.slots[slot_of[i].expect("conv has a slot")];
                let p = g.oh * g.ow;
                let k = g.k();
                if let Some(grad) = grad.as_deref_mut() {
                    let (gw, gb) = grad.split_at_mut(s.b.0);
                    let dw =
                        MatMut::from_row_major_slice_mut(&mut gw[s.w.0..s.w.0 + s.w.1], g.out_c, k);
                    let dym = MatRef::from_row_major_slice(&dy, g.out_c, p);
                    let colst = MatRef::from_row_major_slice(cols, k, p).transpose();
                    faer::linalg::matmul::matmul(dw, Accum::Add, dym, colst, 1.0, Par::Seq);
                    for (oc, ch) in dy.chunks(p).enumerate() {
                        gb[oc] += ch.iter().sum::<f32>();
                    }
                }
                if need_dx {
                    let mut dcols = vec![0f32; k * p];
                    let wt = MatRef::from_row_major_slice(&c.weight, g.out_c, k).transpose();
                    let dym = MatRef::from_row_major_slice(&dy, g.out_c, p);
                    faer::linalg::matmul::matmul(
                        MatMut::from_row_major_slice_mut(&mut dcols, k, p),
                        Accum::Replace,
                        wt,
                        dym,
                        1.0,
                        Par::Seq,
                    );
                    origami_model::linalg::col2im(g, &dcols)
                } else {
                    Vec::new()
                }
            }
            (Op::Dense(d), _) => {
                let s = &lay.slots[slot_of[i].expect("dense has a slot")];
                if let Some(grad) = grad.as_deref_mut() {
                    for (o, &g) in dy.iter().enumerate() {
                        let row = &mut grad[s.w.0 + o * d.in_f..s.w.0 + (o + 1) * d.in_f];
                        row.iter_mut().zip(xin).for_each(|(r, v)| *r += g * v);
                        grad[s.b.0 + o] += g;
                    }
                }
                if need_dx {
                    let mut dx = vec![0f32; d.in_f];
                    for (o, &g) in dy.iter().enumerate() {
                        dx.iter_mut()
                            .zip(&d.weight[o * d.in_f..(o + 1) * d.in_f])
                            .for_each(|(x, w)| *x += g * w);
                    }
                    dx
                } else {
                    Vec::new()
                }
            }
            (Op::Relu, _) => dy
                .iter()
                .zip(&acts[i + 1])
                .map(|(g, y)| if *y > 0.0 { *g } else { 0.0 })
                .collect(),
            (Op::MaxPool(_), Cache::Pool { argmax }) => {
                let mut dx = vec![0f32; xin.len()];
                for (g, &a) in dy.iter().zip(argmax) {
                    dx[a as usize] += g;
                }
                dx
            }
            _ => dy, // Flatten / Reshape
        };
    }
    dy
}

/// Forward and backward for one image: adds the gradient of its loss to `grad`; returns
/// (loss, correct).
fn forward_backward(
    model: &Model,
    lay: &Layout,
    x: &[f32],
    label: usize,
    grad: &mut [f32],
) -> (f32, bool) {
    let n = model.nodes.len();
    let (acts, caches) = forward(model, lay, x, n);
    // Softmax cross-entropy on the logits.
    let logits = &acts[n];
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|v| (v - m).exp()).sum();
    let loss = m + sum.ln() - logits[label];
    let argmax = logits
        .iter()
        .enumerate()
        .fold(0, |b, (i, v)| if *v > logits[b] { i } else { b });
    let mut dy: Vec<f32> = logits.iter().map(|v| (v - m).exp() / sum).collect();
    dy[label] -= 1.0;
    backward(model, lay, &acts, &caches, n, dy, Some(grad), false);
    (loss, argmax == label)
}

/// The white-box attacker's gradient: for the features after node `end − 1` of a sequential
/// model (`end = 0`: the image itself), the loss mean((f(x) − target)²) and its gradient with respect to the input image.
pub fn feature_gradient(
    model: &Model,
    end: usize,
    x: &[f32],
    target: &[f32],
) -> Result<(f32, Vec<f32>), TrainError> {
    let lay = layout(model)?;
    if end > model.nodes.len() || x.len() != 784 {
        return Err(TrainError::Model(format!(
            "feature_gradient: bad split {end} or input size {}",
            x.len()
        )));
    }
    let (acts, caches) = forward(model, &lay, x, end);
    let f = &acts[end];
    if f.len() != target.len() {
        return Err(TrainError::Model(format!(
            "target has {} values, features {}",
            target.len(),
            f.len()
        )));
    }
    let k = 1.0 / f.len() as f32;
    let loss = f
        .iter()
        .zip(target)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f32>()
        * k;
    let dy = f
        .iter()
        .zip(target)
        .map(|(a, b)| 2.0 * (a - b) * k)
        .collect();
    Ok((
        loss,
        backward(model, &lay, &acts, &caches, end, dy, None, true),
    ))
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
    let lay = layout(model)?;
    let mut params = gather(model, &lay);
    let (mut m1, mut m2) = (vec![0f32; lay.total], vec![0f32; lay.total]);
    let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
    let mut step = 0i32;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = (0..train_set.len()).collect();
    let mut lr = cfg.lr;
    let mut reports = Vec::new();
    let batches = train_set.len().div_ceil(cfg.batch);
    for epoch in 0..cfg.epochs {
        for i in (1..order.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        let (mut tot_loss, mut tot_correct, mut seen) = (0f64, 0usize, 0usize);
        for (bi, chunk) in order.chunks(cfg.batch).enumerate() {
            let m: &Model = model;
            // Fixed split into per-thread ranges so the sum order does not depend on scheduling.
            let parts = rayon::current_num_threads().max(1);
            let per = chunk.len().div_ceil(parts);
            let results: Vec<(Vec<f32>, f64, usize)> = chunk
                .par_chunks(per.max(1))
                .map(|part| {
                    let mut g = vec![0f32; lay.total];
                    let (mut l, mut c) = (0f64, 0usize);
                    for &idx in part {
                        let (loss, ok) = forward_backward(
                            m,
                            &lay,
                            train_set.image(idx),
                            train_set.labels[idx] as usize,
                            &mut g,
                        );
                        l += loss as f64;
                        c += ok as usize;
                    }
                    (g, l, c)
                })
                .collect();
            let mut grad = vec![0f32; lay.total];
            for (g, l, c) in &results {
                grad.iter_mut().zip(g).for_each(|(a, b)| *a += b);
                tot_loss += l;
                tot_correct += c;
            }
            seen += chunk.len();
            step += 1;
            let scale = 1.0 / chunk.len() as f32;
            let (c1, c2) = (1.0 - b1.powi(step), 1.0 - b2.powi(step));
            for k in 0..lay.total {
                let g = grad[k] * scale;
                m1[k] = b1 * m1[k] + (1.0 - b1) * g;
                m2[k] = b2 * m2[k] + (1.0 - b2) * g * g;
                params[k] -= lr * (m1[k] / c1) / ((m2[k] / c2).sqrt() + eps);
            }
            scatter(model, &lay, &params);
            progress(&Progress {
                epoch,
                batch: bi + 1,
                batches,
                loss: (tot_loss / seen as f64) as f32,
                accuracy: tot_correct as f32 / seen as f32,
            });
        }
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
        });
        lr *= cfg.lr_decay;
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;
    use origami_model::{Conv, Dense, Node, Pool};

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

    /// Analytic gradients against central finite differences.
    #[test]
    fn gradients_match_finite_differences() {
        let mut model = tiny();
        let lay = layout(&model).unwrap();
        let x: Vec<f32> = (0..784).map(|i| ((i * 37) % 100) as f32 / 100.0).collect();
        let label = 3;
        let mut grad = vec![0f32; lay.total];
        forward_backward(&model, &lay, &x, label, &mut grad);
        let params = gather(&model, &lay);
        let mut checked = 0;
        for k in (0..lay.total).step_by(37) {
            let h = 1e-2f32;
            let mut p = params.clone();
            p[k] += h;
            scatter(&mut model, &lay, &p);
            let (lp, _) = forward_backward(&model, &lay, &x, label, &mut vec![0f32; lay.total]);
            p[k] -= 2.0 * h;
            scatter(&mut model, &lay, &p);
            let (lm, _) = forward_backward(&model, &lay, &x, label, &mut vec![0f32; lay.total]);
            scatter(&mut model, &lay, &params);
            let num = (lp - lm) / (2.0 * h);
            let err = (num - grad[k]).abs();
            assert!(
                err <= 2e-2 * (1.0 + num.abs().max(grad[k].abs())),
                "param {k}: numeric {num} analytic {}",
                grad[k]
            );
            checked += 1;
        }
        assert!(checked > 20);
    }

    /// The input gradient of the feature-matching loss against finite differences.
    #[test]
    fn feature_gradient_matches_finite_differences() {
        let model = tiny();
        let x: Vec<f32> = (0..784).map(|i| ((i * 53) % 97) as f32 / 97.0).collect();
        let end = 4; // after the second convolution
        let lay = layout(&model).unwrap();
        let (acts, _) = forward(&model, &lay, &x, end);
        let target: Vec<f32> = acts[end].iter().map(|v| v * 0.5 + 0.1).collect();
        let (_, dx) = feature_gradient(&model, end, &x, &target).unwrap();
        for k in (0..784).step_by(41) {
            let h = 1e-2f32;
            let mut xp = x.clone();
            xp[k] += h;
            let (lp, _) = feature_gradient(&model, end, &xp, &target).unwrap();
            xp[k] -= 2.0 * h;
            let (lm, _) = feature_gradient(&model, end, &xp, &target).unwrap();
            let num = (lp - lm) / (2.0 * h);
            assert!(
                (num - dx[k]).abs() <= 1e-3 + 5e-2 * num.abs().max(dx[k].abs()),
                "pixel {k}: numeric {num} analytic {}",
                dx[k]
            );
        }
        assert!(feature_gradient(&model, 99, &x, &target).is_err());
        // Split 0: the features are the image itself.
        let (l0, g0) = feature_gradient(&model, 0, &x, &x).unwrap();
        assert_eq!((l0, g0.iter().all(|&v| v == 0.0)), (0.0, true));
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
