//! The learned attacks' networks on burn: a small graph of burn-nn layers — k×k convolutions
//! with "same" padding, dense layers, ReLU, leaky ReLU, 2× nearest upsampling, 2×2 average
//! pooling, channel concatenation and reshapes — enough for a convolutional decoder, a U-Net
//! generator and a PatchGAN discriminator. burn differentiates it; burn's Adam trains it.
//!
//! Values are numbered like the model IR: the graph's inputs are values `0..n_inputs`, node `i`
//! writes value `n_inputs + i`, and the last value is the output. Every value is a batch of
//! `[N, C, H, W]` tensors (a vector of n features is `[N, n, 1, 1]`). Weights are He-uniform
//! from a seeded ChaCha stream, so a seed gives the same initial network everywhere.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::module::avg_pool2d;
use burn::tensor::ops::AvgPoolOptions;
use burn::tensor::{activation, Device, Tensor};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use origami_train::graph::tensor;

pub type Value = usize;

/// The shape of a value: channels, height, width (a vector of n features is `[n, 1, 1]`).
pub type Shape = [usize; 3];

/// Slope of the leaky ReLU on negative inputs (pix2pix uses 0.2).
pub const LEAK: f64 = 0.2;

#[derive(Clone, Debug)]
enum Op {
    /// Index into `Net::convs`.
    Conv(usize),
    /// Index into `Net::denses`.
    Dense(usize),
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

/// A network: its layers (the trainable part) and its graph.
#[derive(Module, Debug)]
pub struct Net {
    convs: Vec<Conv2d>,
    denses: Vec<Linear>,
    #[module(skip)]
    nodes: Vec<Node>,
    #[module(skip)]
    shapes: Vec<Shape>,
    #[module(skip)]
    n_inputs: usize,
}

/// Builds a [`Net`]: shapes are checked as layers are added.
pub struct Builder {
    net: Net,
    rng: ChaCha8Rng,
    device: Device,
}

fn len(s: &Shape) -> usize {
    s[0] * s[1] * s[2]
}

impl Builder {
    /// An empty graph with the given input shapes; `seed` drives the weight initialisation.
    pub fn new(inputs: &[Shape], seed: u64, device: &Device) -> Self {
        Self {
            net: Net {
                convs: Vec::new(),
                denses: Vec::new(),
                nodes: Vec::new(),
                shapes: inputs.to_vec(),
                n_inputs: inputs.len(),
            },
            rng: ChaCha8Rng::seed_from_u64(seed),
            device: device.clone(),
        }
    }

    pub fn shape(&self, v: Value) -> Shape {
        self.net.shapes[v]
    }

    pub fn finish(self) -> Net {
        self.net
    }

    fn push(&mut self, op: Op, inputs: Vec<Value>, shape: Shape) -> Value {
        self.net.nodes.push(Node { op, inputs });
        self.net.shapes.push(shape);
        self.net.shapes.len() - 1
    }

    /// `n` He-uniform values for fan-in `fan`.
    fn uniform(&mut self, n: usize, fan: usize) -> Vec<f32> {
        let a = (6.0 / fan as f32).sqrt();
        (0..n)
            .map(|_| {
                let u = (self.rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32;
                (2.0 * u - 1.0) * a
            })
            .collect()
    }

    fn zeros(&self, n: usize) -> Param<Tensor<1>> {
        Param::from_tensor(tensor(vec![0.0; n], [n], &self.device))
    }

    /// A `k × k` convolution (k odd), stride 1, "same" padding.
    pub fn conv(&mut self, x: Value, out_c: usize, k: usize) -> Value {
        assert!(k % 2 == 1, "odd kernels only");
        let [c, h, w] = self.net.shapes[x];
        let mut conv = Conv2dConfig::new([c, out_c], [k, k])
            .with_padding(PaddingConfig2d::Explicit(k / 2, k / 2, k / 2, k / 2))
            .init(&self.device);
        let wt = self.uniform(out_c * c * k * k, c * k * k);
        conv.weight = Param::from_tensor(tensor(wt, [out_c, c, k, k], &self.device));
        conv.bias = Some(self.zeros(out_c));
        self.net.convs.push(conv);
        let i = self.net.convs.len() - 1;
        self.push(Op::Conv(i), vec![x], [out_c, h, w])
    }

    /// A dense layer on the flattened value.
    pub fn dense(&mut self, x: Value, out_f: usize) -> Value {
        let in_f = len(&self.net.shapes[x]);
        let mut lin = LinearConfig::new(in_f, out_f).init(&self.device);
        // burn's Linear keeps its weight as [in, out].
        let wt = self.uniform(in_f * out_f, in_f);
        lin.weight = Param::from_tensor(tensor(wt, [in_f, out_f], &self.device));
        lin.bias = Some(self.zeros(out_f));
        self.net.denses.push(lin);
        let i = self.net.denses.len() - 1;
        self.push(Op::Dense(i), vec![x], [out_f, 1, 1])
    }

    pub fn relu(&mut self, x: Value) -> Value {
        let s = self.net.shapes[x];
        self.push(Op::Relu, vec![x], s)
    }

    pub fn leaky_relu(&mut self, x: Value) -> Value {
        let s = self.net.shapes[x];
        self.push(Op::LeakyRelu, vec![x], s)
    }

    /// Nearest-neighbour upsampling by 2 in both directions.
    pub fn up2(&mut self, x: Value) -> Value {
        let [c, h, w] = self.net.shapes[x];
        self.push(Op::Up2, vec![x], [c, 2 * h, 2 * w])
    }

    /// 2×2 average pooling, stride 2 (height and width must be even).
    pub fn pool2(&mut self, x: Value) -> Value {
        let [c, h, w] = self.net.shapes[x];
        assert!(
            h % 2 == 0 && w % 2 == 0,
            "pool2 needs even sizes, got {h}×{w}"
        );
        self.push(Op::Pool2, vec![x], [c, h / 2, w / 2])
    }

    /// Channel concatenation of two values of the same height and width.
    pub fn concat(&mut self, a: Value, b: Value) -> Value {
        let (sa, sb) = (self.net.shapes[a], self.net.shapes[b]);
        assert_eq!(sa[1..], sb[1..], "concat needs equal sizes");
        self.push(Op::Concat, vec![a, b], [sa[0] + sb[0], sa[1], sa[2]])
    }

    pub fn reshape(&mut self, x: Value, to: Shape) -> Value {
        assert_eq!(len(&self.net.shapes[x]), len(&to), "reshape keeps the size");
        self.push(Op::Reshape, vec![x], to)
    }
}

impl Net {
    /// Sets the bias of the output layer (a convolution) to `bias`, one value per output
    /// channel: the learned attacks start from the mean training image's colour instead of
    /// black, which the biases would otherwise have to learn step by step.
    pub fn set_output_bias(&mut self, bias: &[f32]) {
        if let Some(Op::Conv(k)) = self.nodes.last().map(|n| &n.op) {
            let conv = &mut self.convs[*k];
            if conv.weight.val().dims()[0] == bias.len() {
                let dev = conv.weight.val().device();
                conv.bias = Some(Param::from_tensor(tensor(
                    bias.to_vec(),
                    [bias.len()],
                    &dev,
                )));
            }
        }
    }

    pub fn output_shape(&self) -> Shape {
        *self.shapes.last().expect("inputs exist")
    }

    pub fn input_shapes(&self) -> &[Shape] {
        &self.shapes[..self.n_inputs]
    }

    /// Runs the graph on a batch (`inputs[i]` is `[N, …]` of input `i`'s shape).
    pub fn forward(&self, inputs: &[Tensor<4>]) -> Tensor<4> {
        assert_eq!(inputs.len(), self.n_inputs, "input count");
        let n = inputs[0].dims()[0];
        let mut vals: Vec<Tensor<4>> = inputs.to_vec();
        for (i, node) in self.nodes.iter().enumerate() {
            let x = vals[node.inputs[0]].clone();
            let [c, h, w] = self.shapes[self.n_inputs + i];
            let y = match &node.op {
                Op::Conv(k) => self.convs[*k].forward(x),
                Op::Dense(k) => {
                    let f = x.dims()[1..].iter().product::<usize>();
                    self.denses[*k]
                        .forward(x.reshape([n, f]))
                        .reshape([n, c, 1, 1])
                }
                Op::Relu => activation::relu(x),
                Op::LeakyRelu => activation::leaky_relu(x, LEAK),
                Op::Up2 => {
                    let [_, xc, xh, xw] = x.dims();
                    let t: Tensor<6> = x.reshape([n, xc, xh, 1, xw, 1]);
                    t.expand([n, xc, xh, 2, xw, 2]).reshape([n, c, h, w])
                }
                Op::Pool2 => avg_pool2d(x, AvgPoolOptions::new([2, 2]).with_stride([2, 2])),
                Op::Concat => Tensor::cat(vec![x, vals[node.inputs[1]].clone()], 1),
                Op::Reshape => x.reshape([n, c, h, w]),
            };
            vals.push(y);
        }
        vals.pop().expect("values")
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
    use burn::optim::{AdamConfig, GradientsParams};
    use origami_train::graph::{device, values};

    /// A graph with every operator and two inputs.
    fn every_operator(seed: u64, dev: &Device) -> Net {
        let mut b = Builder::new(&[[2, 4, 4], [6, 1, 1]], seed, dev);
        let a = b.conv(0, 3, 3);
        let a = b.leaky_relu(a);
        let p = b.pool2(a);
        let d = b.dense(1, 12);
        let d = b.relu(d);
        let d = b.reshape(d, [3, 2, 2]);
        let c = b.concat(p, d);
        let u = b.up2(c);
        let o = b.conv(u, 2, 1);
        assert_eq!(b.shape(o), [2, 4, 4]);
        b.finish()
    }

    /// Adam trains a graph with every operator to imitate another of the same architecture
    /// (other seed) on fixed inputs: the loss falls a hundredfold.
    #[test]
    fn every_operator_trains() {
        let dev = device();
        let mut net = every_operator(3, &dev);
        let teacher = every_operator(4, &dev);
        let x0 = tensor(
            (0..64)
                .map(|i| ((i * 37) % 17) as f32 / 8.0 - 1.0)
                .collect(),
            [2, 2, 4, 4],
            &dev,
        );
        let x1 = tensor(
            (0..12).map(|i| i as f32 / 6.0 - 0.7).collect(),
            [2, 6, 1, 1],
            &dev,
        );
        let target = teacher.forward(&[x0.clone(), x1.clone()]).detach();
        let mse = |net: &Net| {
            let d = net.forward(&[x0.clone(), x1.clone()]) - target.clone();
            (d.clone() * d).mean()
        };
        let before = values(mse(&net))[0];
        let mut opt = AdamConfig::new().init();
        for _ in 0..600 {
            let g = GradientsParams::from_grads(mse(&net).backward(), &net);
            net = opt.step(0.01, net, g);
        }
        let after = values(mse(&net))[0];
        assert!(after < before / 100.0, "{before} → {after}");
    }

    /// Nearest upsampling repeats each pixel in a 2×2 block; average pooling undoes it.
    #[test]
    fn up2_and_pool2() {
        let dev = device();
        let mut b = Builder::new(&[[1, 2, 2]], 1, &dev);
        let u = b.up2(0);
        b.pool2(u);
        let up = {
            let mut b2 = Builder::new(&[[1, 2, 2]], 1, &dev);
            b2.up2(0);
            b2.finish()
        };
        let x = tensor(vec![1.0, 2.0, 3.0, 4.0], [1, 1, 2, 2], &dev);
        assert_eq!(
            values(up.forward(std::slice::from_ref(&x))),
            [1., 1., 2., 2., 1., 1., 2., 2., 3., 3., 4., 4., 3., 3., 4., 4.]
        );
        assert_eq!(values(b.finish().forward(&[x])), [1.0, 2.0, 3.0, 4.0]);
    }
}
