//! A small trainable network graph for the learned attacks: 3×3 (or 1×1) convolutions with
//! "same" padding, dense layers, ReLU, leaky ReLU, 2× nearest upsampling, 2×2 average pooling,
//! channel concatenation and reshapes, on one sample at a time with a tape for backpropagation.
//! Enough for a convolutional decoder, a U-Net generator and a PatchGAN discriminator.
//!
//! Values are numbered like the model IR: the graph's inputs are values `0..n_inputs`, node `i`
//! writes value `n_inputs + i`, and the last value is the output. Parameters live in one flat
//! vector so that Adam updates them in one pass. Batches run in parallel (rayon) over fixed
//! per-thread ranges, so a seed, data and thread count give the same result.

use faer::{Accum, MatMut, MatRef, Par};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use rayon::prelude::*;

use origami_model::linalg::{col2im, im2col, ConvGeom};

pub type Value = usize;

/// The shape of a value: channels, height, width (a vector of n features is `[n, 1, 1]`).
pub type Shape = [usize; 3];

/// Slope of the leaky ReLU on negative inputs (pix2pix uses 0.2).
pub const LEAK: f32 = 0.2;

#[derive(Clone, Debug)]
enum Op {
    Conv {
        geom: ConvGeom,
        w: usize,
        b: usize,
    },
    Dense {
        in_f: usize,
        out_f: usize,
        w: usize,
        b: usize,
    },
    Relu,
    LeakyRelu,
    Up2,
    Pool2,
    Concat,
    Reshape,
}

#[derive(Clone, Debug)]
struct Node {
    op: Op,
    inputs: Vec<Value>,
}

/// A network: its graph and its parameters.
#[derive(Clone, Debug)]
pub struct Net {
    n_inputs: usize,
    nodes: Vec<Node>,
    shapes: Vec<Shape>,
    pub params: Vec<f32>,
    rng: ChaCha8Rng,
}

/// Everything the backward pass needs from one forward pass.
pub struct Tape {
    vals: Vec<Vec<f32>>,
    cols: Vec<Vec<f32>>,
}

impl Tape {
    /// The network's output.
    pub fn output(&self) -> &[f32] {
        self.vals.last().expect("a tape has values")
    }
}

fn len(s: &Shape) -> usize {
    s[0] * s[1] * s[2]
}

impl Net {
    /// An empty graph with the given input shapes; `seed` drives the weight initialisation.
    pub fn new(inputs: &[Shape], seed: u64) -> Self {
        Self {
            n_inputs: inputs.len(),
            nodes: Vec::new(),
            shapes: inputs.to_vec(),
            params: Vec::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    pub fn shape(&self, v: Value) -> Shape {
        self.shapes[v]
    }

    pub fn output_shape(&self) -> Shape {
        *self.shapes.last().expect("inputs exist")
    }

    pub fn input_shapes(&self) -> &[Shape] {
        &self.shapes[..self.n_inputs]
    }

    fn push(&mut self, op: Op, inputs: Vec<Value>, shape: Shape) -> Value {
        self.nodes.push(Node { op, inputs });
        self.shapes.push(shape);
        self.shapes.len() - 1
    }

    /// He-uniform weights (fan-in `fan`), zero biases; returns the offsets.
    fn alloc(&mut self, n_w: usize, n_b: usize, fan: usize) -> (usize, usize) {
        let a = (6.0 / fan as f32).sqrt();
        let w = self.params.len();
        for _ in 0..n_w {
            let u = (self.rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32;
            self.params.push((2.0 * u - 1.0) * a);
        }
        let b = self.params.len();
        self.params.resize(b + n_b, 0.0);
        (w, b)
    }

    /// A `k × k` convolution (k odd), stride 1, "same" padding.
    pub fn conv(&mut self, x: Value, out_c: usize, k: usize) -> Value {
        assert!(k % 2 == 1, "odd kernels only");
        let [c, h, w] = self.shapes[x];
        let p = k / 2;
        let geom = ConvGeom {
            in_c: c,
            h,
            w,
            out_c,
            kh: k,
            kw: k,
            stride: [1, 1],
            pads: [p; 4],
            groups: 1,
            oh: h,
            ow: w,
        };
        let (wo, bo) = self.alloc(out_c * c * k * k, out_c, c * k * k);
        self.push(Op::Conv { geom, w: wo, b: bo }, vec![x], [out_c, h, w])
    }

    /// A dense layer on the flattened value.
    pub fn dense(&mut self, x: Value, out_f: usize) -> Value {
        let in_f = len(&self.shapes[x]);
        let (w, b) = self.alloc(out_f * in_f, out_f, in_f);
        self.push(Op::Dense { in_f, out_f, w, b }, vec![x], [out_f, 1, 1])
    }

    pub fn relu(&mut self, x: Value) -> Value {
        let s = self.shapes[x];
        self.push(Op::Relu, vec![x], s)
    }

    pub fn leaky_relu(&mut self, x: Value) -> Value {
        let s = self.shapes[x];
        self.push(Op::LeakyRelu, vec![x], s)
    }

    /// Nearest-neighbour upsampling by 2 in both directions.
    pub fn up2(&mut self, x: Value) -> Value {
        let [c, h, w] = self.shapes[x];
        self.push(Op::Up2, vec![x], [c, 2 * h, 2 * w])
    }

    /// 2×2 average pooling, stride 2 (height and width must be even).
    pub fn pool2(&mut self, x: Value) -> Value {
        let [c, h, w] = self.shapes[x];
        assert!(
            h % 2 == 0 && w % 2 == 0,
            "pool2 needs even sizes, got {h}×{w}"
        );
        self.push(Op::Pool2, vec![x], [c, h / 2, w / 2])
    }

    /// Channel concatenation of two values of the same height and width.
    pub fn concat(&mut self, a: Value, b: Value) -> Value {
        let (sa, sb) = (self.shapes[a], self.shapes[b]);
        assert_eq!(sa[1..], sb[1..], "concat needs equal sizes");
        self.push(Op::Concat, vec![a, b], [sa[0] + sb[0], sa[1], sa[2]])
    }

    pub fn reshape(&mut self, x: Value, to: Shape) -> Value {
        assert_eq!(len(&self.shapes[x]), len(&to), "reshape keeps the size");
        self.push(Op::Reshape, vec![x], to)
    }

    /// Runs the graph on one sample (`inputs[i]` has the length of input `i`).
    pub fn forward(&self, inputs: &[&[f32]]) -> Tape {
        assert_eq!(inputs.len(), self.n_inputs, "input count");
        let mut vals: Vec<Vec<f32>> = inputs.iter().map(|x| x.to_vec()).collect();
        for (v, s) in vals.iter().zip(&self.shapes) {
            assert_eq!(v.len(), len(s), "input size");
        }
        let mut cols = Vec::with_capacity(self.nodes.len());
        for (i, node) in self.nodes.iter().enumerate() {
            let x = &vals[node.inputs[0]];
            let out = self.n_inputs + i;
            let mut col = Vec::new();
            let y = match &node.op {
                Op::Conv { geom: g, w, b } => {
                    let p = g.oh * g.ow;
                    col = vec![0f32; g.k() * p];
                    im2col(g, x, 0, p, &mut col);
                    let mut y = vec![0f32; g.out_c * p];
                    for (oc, ch) in y.chunks_mut(p).enumerate() {
                        ch.fill(self.params[b + oc]);
                    }
                    faer::linalg::matmul::matmul(
                        MatMut::from_row_major_slice_mut(&mut y, g.out_c, p),
                        Accum::Add,
                        MatRef::from_row_major_slice(
                            &self.params[*w..w + g.out_c * g.k()],
                            g.out_c,
                            g.k(),
                        ),
                        MatRef::from_row_major_slice(&col, g.k(), p),
                        1.0,
                        Par::Seq,
                    );
                    y
                }
                Op::Dense { in_f, out_f, w, b } => {
                    let mut y = self.params[*b..b + out_f].to_vec();
                    faer::linalg::matmul::matmul(
                        MatMut::from_column_major_slice_mut(&mut y, *out_f, 1),
                        Accum::Add,
                        MatRef::from_row_major_slice(
                            &self.params[*w..w + out_f * in_f],
                            *out_f,
                            *in_f,
                        ),
                        MatRef::from_column_major_slice(x, *in_f, 1),
                        1.0,
                        Par::Seq,
                    );
                    y
                }
                Op::Relu => x.iter().map(|v| v.max(0.0)).collect(),
                Op::LeakyRelu => x
                    .iter()
                    .map(|&v| if v > 0.0 { v } else { LEAK * v })
                    .collect(),
                Op::Up2 => {
                    let [c, h, w] = self.shapes[node.inputs[0]];
                    let mut y = vec![0f32; c * 4 * h * w];
                    for ch in 0..c {
                        for r in 0..2 * h {
                            for q in 0..2 * w {
                                y[(ch * 2 * h + r) * 2 * w + q] = x[(ch * h + r / 2) * w + q / 2];
                            }
                        }
                    }
                    y
                }
                Op::Pool2 => {
                    let [c, h, w] = self.shapes[node.inputs[0]];
                    let (oh, ow) = (h / 2, w / 2);
                    let mut y = vec![0f32; c * oh * ow];
                    for ch in 0..c {
                        for r in 0..oh {
                            for q in 0..ow {
                                let at = |dy: usize, dx: usize| {
                                    x[(ch * h + 2 * r + dy) * w + 2 * q + dx]
                                };
                                y[(ch * oh + r) * ow + q] =
                                    0.25 * (at(0, 0) + at(0, 1) + at(1, 0) + at(1, 1));
                            }
                        }
                    }
                    y
                }
                Op::Concat => {
                    let mut y = x.clone();
                    y.extend_from_slice(&vals[node.inputs[1]]);
                    y
                }
                Op::Reshape => x.clone(),
            };
            debug_assert_eq!(y.len(), len(&self.shapes[out]));
            vals.push(y);
            cols.push(col);
        }
        Tape { vals, cols }
    }

    /// Backpropagates `dout` (the loss gradient at the output). Adds the parameter gradients
    /// to `grad` when given; returns the gradients at the inputs when `want_inputs` (else
    /// empty vectors).
    pub fn backward(
        &self,
        tape: &Tape,
        dout: &[f32],
        mut grad: Option<&mut [f32]>,
        want_inputs: bool,
    ) -> Vec<Vec<f32>> {
        let ni = self.n_inputs;
        let mut dv: Vec<Vec<f32>> = vec![Vec::new(); self.shapes.len()];
        *dv.last_mut().expect("values") = dout.to_vec();
        let add = |dv: &mut Vec<Vec<f32>>, v: Value, g: &[f32]| {
            if dv[v].is_empty() {
                dv[v] = g.to_vec();
            } else {
                dv[v].iter_mut().zip(g).for_each(|(a, b)| *a += b);
            }
        };
        for (i, node) in self.nodes.iter().enumerate().rev() {
            let dy = std::mem::take(&mut dv[ni + i]);
            if dy.is_empty() {
                continue;
            }
            let xi = node.inputs[0];
            let need = xi >= ni || want_inputs;
            let x = &tape.vals[xi];
            match &node.op {
                Op::Conv { geom: g, w, b } => {
                    let p = g.oh * g.ow;
                    let k = g.k();
                    let col = &tape.cols[i];
                    if let Some(grad) = grad.as_deref_mut() {
                        let (gw, gb) = grad.split_at_mut(*b);
                        faer::linalg::matmul::matmul(
                            MatMut::from_row_major_slice_mut(
                                &mut gw[*w..w + g.out_c * k],
                                g.out_c,
                                k,
                            ),
                            Accum::Add,
                            MatRef::from_row_major_slice(&dy, g.out_c, p),
                            MatRef::from_row_major_slice(col, k, p).transpose(),
                            1.0,
                            Par::Seq,
                        );
                        for (oc, ch) in dy.chunks(p).enumerate() {
                            gb[oc] += ch.iter().sum::<f32>();
                        }
                    }
                    if need {
                        let mut dcol = vec![0f32; k * p];
                        faer::linalg::matmul::matmul(
                            MatMut::from_row_major_slice_mut(&mut dcol, k, p),
                            Accum::Replace,
                            MatRef::from_row_major_slice(
                                &self.params[*w..w + g.out_c * k],
                                g.out_c,
                                k,
                            )
                            .transpose(),
                            MatRef::from_row_major_slice(&dy, g.out_c, p),
                            1.0,
                            Par::Seq,
                        );
                        add(&mut dv, xi, &col2im(g, &dcol));
                    }
                }
                Op::Dense { in_f, out_f, w, b } => {
                    let (in_f, out_f) = (*in_f, *out_f);
                    if let Some(grad) = grad.as_deref_mut() {
                        let (gw, gb) = grad.split_at_mut(*b);
                        // dW += dy · xᵀ (rank one), db += dy.
                        faer::linalg::matmul::matmul(
                            MatMut::from_row_major_slice_mut(
                                &mut gw[*w..w + out_f * in_f],
                                out_f,
                                in_f,
                            ),
                            Accum::Add,
                            MatRef::from_column_major_slice(&dy, out_f, 1),
                            MatRef::from_row_major_slice(x, 1, in_f),
                            1.0,
                            Par::Seq,
                        );
                        gb[..out_f].iter_mut().zip(&dy).for_each(|(a, g)| *a += g);
                    }
                    if need {
                        // dx = Wᵀ · dy.
                        let mut dx = vec![0f32; in_f];
                        faer::linalg::matmul::matmul(
                            MatMut::from_column_major_slice_mut(&mut dx, in_f, 1),
                            Accum::Replace,
                            MatRef::from_row_major_slice(
                                &self.params[*w..w + out_f * in_f],
                                out_f,
                                in_f,
                            )
                            .transpose(),
                            MatRef::from_column_major_slice(&dy, out_f, 1),
                            1.0,
                            Par::Seq,
                        );
                        add(&mut dv, xi, &dx);
                    }
                }
                Op::Relu | Op::LeakyRelu if need => {
                    let leak = if matches!(node.op, Op::Relu) {
                        0.0
                    } else {
                        LEAK
                    };
                    let dx: Vec<f32> = dy
                        .iter()
                        .zip(x)
                        .map(|(g, v)| if *v > 0.0 { *g } else { leak * g })
                        .collect();
                    add(&mut dv, xi, &dx);
                }
                Op::Up2 if need => {
                    let [c, h, w] = self.shapes[xi];
                    let mut dx = vec![0f32; c * h * w];
                    for ch in 0..c {
                        for r in 0..2 * h {
                            for q in 0..2 * w {
                                dx[(ch * h + r / 2) * w + q / 2] +=
                                    dy[(ch * 2 * h + r) * 2 * w + q];
                            }
                        }
                    }
                    add(&mut dv, xi, &dx);
                }
                Op::Pool2 if need => {
                    let [c, h, w] = self.shapes[xi];
                    let (oh, ow) = (h / 2, w / 2);
                    let mut dx = vec![0f32; c * h * w];
                    for ch in 0..c {
                        for r in 0..h {
                            for q in 0..w {
                                dx[(ch * h + r) * w + q] =
                                    0.25 * dy[(ch * oh + r / 2) * ow + q / 2];
                            }
                        }
                    }
                    add(&mut dv, xi, &dx);
                }
                Op::Concat => {
                    let na = len(&self.shapes[xi]);
                    if need {
                        add(&mut dv, xi, &dy[..na]);
                    }
                    let xb = node.inputs[1];
                    if xb >= ni || want_inputs {
                        add(&mut dv, xb, &dy[na..]);
                    }
                }
                Op::Reshape if need => add(&mut dv, xi, &dy),
                _ => {}
            }
        }
        dv.truncate(ni);
        if !want_inputs {
            dv.iter_mut().for_each(Vec::clear);
        }
        dv
    }

    /// Runs `per_sample(i, grad)` for every `i` in `items` in parallel, each adding its
    /// parameter gradient to `grad` and returning its loss; returns the summed gradient and loss.
    pub fn batch_grad<F>(&self, items: &[usize], per_sample: F) -> (Vec<f32>, f64)
    where
        F: Fn(usize, &mut [f32]) -> f64 + Sync,
    {
        par_grads(items, self.params.len(), per_sample)
    }
}

/// Runs `per_sample(i, grad)` for every `i` in `items` in parallel over fixed per-thread
/// ranges (so the sum order does not depend on scheduling), each adding to a gradient of
/// `n_grad` values and returning a loss; returns the summed gradient and loss.
pub fn par_grads<F>(items: &[usize], n_grad: usize, per_sample: F) -> (Vec<f32>, f64)
where
    F: Fn(usize, &mut [f32]) -> f64 + Sync,
{
    let parts = rayon::current_num_threads().max(1);
    let per = items.len().div_ceil(parts).max(1);
    let partial: Vec<(Vec<f32>, f64)> = items
        .par_chunks(per)
        .map(|chunk| {
            let mut g = vec![0f32; n_grad];
            let l = chunk.iter().map(|&i| per_sample(i, &mut g)).sum::<f64>();
            (g, l)
        })
        .collect();
    let mut grad = vec![0f32; n_grad];
    let mut loss = 0.0;
    for (g, l) in partial {
        grad.iter_mut().zip(&g).for_each(|(a, b)| *a += b);
        loss += l;
    }
    (grad, loss)
}

/// Adam (Kingma & Ba) over one flat parameter vector.
#[derive(Clone, Debug)]
pub struct Adam {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    m1: Vec<f32>,
    m2: Vec<f32>,
    pub steps: usize,
}

impl Adam {
    pub fn new(n: usize, lr: f32, beta1: f32) -> Self {
        Self {
            lr,
            beta1,
            beta2: 0.999,
            m1: vec![0.0; n],
            m2: vec![0.0; n],
            steps: 0,
        }
    }

    /// One update with gradient `grad · scale`.
    pub fn step(&mut self, params: &mut [f32], grad: &[f32], scale: f32) {
        self.steps += 1;
        let t = self.steps as i32;
        let (b1, b2) = (self.beta1, self.beta2);
        let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        for k in 0..params.len() {
            let g = grad[k] * scale;
            self.m1[k] = b1 * self.m1[k] + (1.0 - b1) * g;
            self.m2[k] = b2 * self.m2[k] + (1.0 - b2) * g * g;
            params[k] -= self.lr * (self.m1[k] / c1) / ((self.m2[k] / c2).sqrt() + 1e-8);
        }
    }
}

/// A seeded shuffle (Fisher–Yates) of `0..n`.
pub fn shuffled(n: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A graph with every operator, two inputs, and a scalar loss Σ out · r.
    fn graph() -> Net {
        let mut n = Net::new(&[[2, 4, 4], [6, 1, 1]], 3);
        let a = n.conv(0, 3, 3);
        let a = n.leaky_relu(a);
        let p = n.pool2(a);
        let d = n.dense(1, 12);
        let d = n.relu(d);
        let d = n.reshape(d, [3, 2, 2]);
        let c = n.concat(p, d);
        let u = n.up2(c);
        let o = n.conv(u, 2, 1);
        assert_eq!(n.shape(o), [2, 4, 4]);
        n
    }

    fn loss(n: &Net, x0: &[f32], x1: &[f32], r: &[f32]) -> f32 {
        let t = n.forward(&[x0, x1]);
        t.output().iter().zip(r).map(|(a, b)| a * b).sum()
    }

    /// Parameter and input gradients against central finite differences.
    #[test]
    fn gradients_match_finite_differences() {
        let mut n = graph();
        let x0: Vec<f32> = (0..32)
            .map(|i| ((i * 37) % 17) as f32 / 8.0 - 1.0)
            .collect();
        let x1: Vec<f32> = (0..6).map(|i| i as f32 / 3.0 - 0.7).collect();
        let r: Vec<f32> = (0..32).map(|i| ((i * 11) % 7) as f32 / 3.0 - 1.0).collect();
        let tape = n.forward(&[&x0, &x1]);
        let mut grad = vec![0f32; n.params.len()];
        let dx = n.backward(&tape, &r, Some(&mut grad), true);
        // Small steps: with 1e-2 some pre-activations cross the ReLU kinks.
        let h = 1e-3f32;
        let close =
            |num: f32, ana: f32| (num - ana).abs() <= 1e-2 + 2e-2 * num.abs().max(ana.abs());
        for (k, &ana) in grad.iter().enumerate() {
            let p0 = n.params[k];
            n.params[k] = p0 + h;
            let lp = loss(&n, &x0, &x1, &r);
            n.params[k] = p0 - h;
            let lm = loss(&n, &x0, &x1, &r);
            n.params[k] = p0;
            let num = (lp - lm) / (2.0 * h);
            assert!(close(num, ana), "param {k}: {num} vs {ana}");
        }
        for (which, x) in [(0usize, &x0), (1, &x1)] {
            for k in 0..x.len() {
                let mut xp = x.clone();
                xp[k] += h;
                let mut xm = x.clone();
                xm[k] -= h;
                let (lp, lm) = if which == 0 {
                    (loss(&n, &xp, &x1, &r), loss(&n, &xm, &x1, &r))
                } else {
                    (loss(&n, &x0, &xp, &r), loss(&n, &x0, &xm, &r))
                };
                let num = (lp - lm) / (2.0 * h);
                assert!(
                    close(num, dx[which][k]),
                    "input {which}[{k}]: {num} vs {}",
                    dx[which][k]
                );
            }
        }
        // Without `want_inputs` the input gradients are not returned.
        assert!(n.backward(&tape, &r, None, false).iter().all(Vec::is_empty));
    }

    /// Adam fits a 1×1 convolution to the identity map.
    #[test]
    fn adam_fits_identity() {
        let mut n = Net::new(&[[1, 4, 4]], 1);
        n.conv(0, 1, 1);
        let mut opt = Adam::new(n.params.len(), 0.05, 0.9);
        let xs: Vec<Vec<f32>> = (0..8)
            .map(|s| {
                (0..16)
                    .map(|i| ((i * 7 + s * 3) % 11) as f32 / 11.0)
                    .collect()
            })
            .collect();
        let mse = |n: &Net| -> f64 {
            n.batch_grad(&(0..8).collect::<Vec<_>>(), |i, _| {
                let t = n.forward(&[&xs[i]]);
                t.output()
                    .iter()
                    .zip(&xs[i])
                    .map(|(a, b)| ((a - b) * (a - b)) as f64)
                    .sum()
            })
            .1
        };
        let before = mse(&n);
        for _ in 0..300 {
            let (g, _) = n.batch_grad(&(0..8).collect::<Vec<_>>(), |i, g| {
                let t = n.forward(&[&xs[i]]);
                let d: Vec<f32> = t
                    .output()
                    .iter()
                    .zip(&xs[i])
                    .map(|(a, b)| 2.0 * (a - b))
                    .collect();
                n.backward(&t, &d, Some(g), false);
                0.0
            });
            let mut p = std::mem::take(&mut n.params);
            opt.step(&mut p, &g, 1.0 / 8.0);
            n.params = p;
        }
        let after = mse(&n);
        assert!(after < before * 1e-3, "{before} → {after}");
    }
}
