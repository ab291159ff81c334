//! The model IR on burn: an interpreter from [`Model`] nodes to burn tensor operations, so that
//! burn's autodiff differentiates through whatever network an operator brings — the classifier
//! being trained, or the public head of a served model that a white-box attack inverts.
//!
//! Every operator of the IR is supported: convolutions with groups, strides and asymmetric
//! padding, dense layers, max/average/global pooling, BatchNorm (a per-channel affine map),
//! residual adds, concatenation, broadcast arithmetic, transposes, padding, zero insertion,
//! LRN, softmax and every activation the importer reads. The forward pass equals the float
//! executor ([`origami_model::exec`]) within float rounding (tested on every ONNX operator
//! fixture); gradients match finite differences.
//!
//! The trainable tensors are the convolution and dense weights and biases ([`Weights`], a burn
//! [`Module`] the optimisers update). Everything else in a node (BatchNorm's affine map, PReLU
//! slopes, constants) is a fixed part of the graph.

use burn::module::{Module, Param};
use burn::tensor::activation;
use burn::tensor::module::{avg_pool2d, conv2d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions, PadMode as BurnPad};
use burn::tensor::{Device, Tensor, TensorData};

use origami_model::{BinOp, Model, Op, PadMode, Unary, ValueId};

use crate::TrainError;

/// The CPU device the attacks and the trainer run on (burn's `flex` backend), with autodiff.
pub fn device() -> Device {
    Device::flex().autodiff()
}

/// A tensor of shape `dims` (row-major `data`) on `device`.
pub fn tensor<const D: usize>(data: Vec<f32>, dims: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(data, dims), device)
}

/// A tensor's values, row-major.
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .try_into_vec::<f32>()
        .expect("float tensors hold f32 values")
}

/// The trainable tensors of a model: for each Conv and Dense node in order, its weight (flat,
/// ONNX layout) and its bias.
#[derive(Module, Debug)]
pub struct Weights {
    pub tensors: Vec<Param<Tensor<1>>>,
}

impl Weights {
    /// The model's current weights on `device`, trainable.
    pub fn from_model(model: &Model, device: &Device) -> Self {
        let mut tensors = Vec::new();
        for n in &model.nodes {
            let (w, b) = match &n.op {
                Op::Conv(c) => (&c.weight, &c.bias),
                Op::Dense(d) => (&d.weight, &d.bias),
                _ => continue,
            };
            for v in [w, b] {
                let t = tensor(v.clone(), [v.len()], device);
                tensors.push(Param::from_tensor(t));
            }
        }
        Self { tensors }
    }

    /// The model's weights as constants (no gradients kept): for attacks that differentiate
    /// with respect to the input only.
    pub fn frozen(model: &Model, device: &Device) -> Self {
        Self::from_model(model, device).no_grad()
    }

    /// Writes these weights into `model` (the one they were taken from, or one of the same
    /// architecture).
    pub fn write_to(&self, model: &mut Model) -> Result<(), TrainError> {
        let mut it = self.tensors.iter();
        for n in &mut model.nodes {
            let (w, b) = match &mut n.op {
                Op::Conv(c) => (&mut c.weight, &mut c.bias),
                Op::Dense(d) => (&mut d.weight, &mut d.bias),
                _ => continue,
            };
            for dst in [w, b] {
                let src = it
                    .next()
                    .map(|p| values(p.val()))
                    .filter(|v| v.len() == dst.len())
                    .ok_or_else(|| {
                        TrainError::Model(format!(
                            "the weights do not fit node {} of {}",
                            n.name, model.name
                        ))
                    })?;
                *dst = src;
            }
        }
        if it.next().is_some() {
            return Err(TrainError::Model(format!(
                "more weight tensors than {} has",
                model.name
            )));
        }
        Ok(())
    }
}

/// One value of the graph: the IR's tensors have the batch first and rank 2 to 5.
#[derive(Clone, Debug)]
enum Value {
    R2(Tensor<2>),
    R3(Tensor<3>),
    R4(Tensor<4>),
    R5(Tensor<5>),
}

/// Applies a rank-generic expression to a value, keeping its rank.
macro_rules! each {
    ($v:expr, $t:ident => $e:expr) => {
        match $v {
            Value::R2($t) => Value::R2($e),
            Value::R3($t) => Value::R3($e),
            Value::R4($t) => Value::R4($e),
            Value::R5($t) => Value::R5($e),
        }
    };
}

/// Applies a rank-generic expression to two values of equal rank.
macro_rules! each2 {
    ($a:expr, $b:expr, $x:ident, $y:ident => $e:expr) => {
        match ($a, $b) {
            (Value::R2($x), Value::R2($y)) => Ok(Value::R2($e)),
            (Value::R3($x), Value::R3($y)) => Ok(Value::R3($e)),
            (Value::R4($x), Value::R4($y)) => Ok(Value::R4($e)),
            (Value::R5($x), Value::R5($y)) => Ok(Value::R5($e)),
            _ => Err(TrainError::Model("operands of different ranks".into())),
        }
    };
}

impl Value {
    /// The value reshaped to `dims` (any rank 2 to 5, same number of elements).
    fn reshape(self, dims: &[usize]) -> Result<Value, TrainError> {
        macro_rules! to {
            ($t:expr) => {
                match *dims {
                    [a, b] => Value::R2($t.reshape([a, b])),
                    [a, b, c] => Value::R3($t.reshape([a, b, c])),
                    [a, b, c, d] => Value::R4($t.reshape([a, b, c, d])),
                    [a, b, c, d, e] => Value::R5($t.reshape([a, b, c, d, e])),
                    _ => return Err(rank_error(dims)),
                }
            };
        }
        Ok(match self {
            Value::R2(t) => to!(t),
            Value::R3(t) => to!(t),
            Value::R4(t) => to!(t),
            Value::R5(t) => to!(t),
        })
    }

    fn rank(&self) -> usize {
        match self {
            Value::R2(_) => 2,
            Value::R3(_) => 3,
            Value::R4(_) => 4,
            Value::R5(_) => 5,
        }
    }

    fn r4(self, what: &str) -> Result<Tensor<4>, TrainError> {
        match self {
            Value::R4(t) => Ok(t),
            v => Err(TrainError::Model(format!(
                "{what} expects an NCHW tensor, got rank {}",
                v.rank()
            ))),
        }
    }

    fn r2(self, what: &str) -> Result<Tensor<2>, TrainError> {
        match self {
            Value::R2(t) => Ok(t),
            v => Err(TrainError::Model(format!(
                "{what} expects an [N, F] tensor, got rank {}",
                v.rank()
            ))),
        }
    }

    /// `[N, everything else]`.
    fn flat(self) -> Tensor<2> {
        macro_rules! fl {
            ($t:expr) => {{
                let d = $t.dims();
                let n = d[0];
                let rest = d[1..].iter().product::<usize>();
                $t.reshape([n, rest])
            }};
        }
        match self {
            Value::R2(t) => t,
            Value::R3(t) => fl!(t),
            Value::R4(t) => fl!(t),
            Value::R5(t) => fl!(t),
        }
    }
}

fn rank_error(dims: &[usize]) -> TrainError {
    TrainError::Model(format!(
        "tensors of rank {} ({dims:?}) are not supported (2 to 5)",
        dims.len()
    ))
}

/// A constant of shape `dims` (rank 2 to 5) on `device`.
fn constant(data: Vec<f32>, dims: &[usize], device: &Device) -> Result<Value, TrainError> {
    let flat = tensor(data, [dims.iter().product()], device);
    Value::R2(flat.reshape([1, dims.iter().product::<usize>()])).reshape(dims)
}

/// A per-channel vector shaped `[1, C, 1, …]` to broadcast against a value of rank `rank`.
fn per_channel(v: &[f32], rank: usize, device: &Device) -> Result<Value, TrainError> {
    let mut dims = vec![1; rank];
    dims[1] = v.len();
    constant(v.to_vec(), &dims, device)
}

/// A model prepared for the interpreter: its validated shapes and where each node's weights
/// are in [`Weights`].
pub struct Graph<'m> {
    model: &'m Model,
    /// Every value's shape for batch size 1.
    shapes: Vec<Vec<usize>>,
    /// For each node, the index of its weight tensor in [`Weights::tensors`] (the bias follows).
    slot: Vec<Option<usize>>,
}

impl<'m> Graph<'m> {
    /// Validates `model` (shapes, arity, sizes) for the interpreter.
    pub fn new(model: &'m Model) -> Result<Self, TrainError> {
        let shapes = model
            .validate()
            .map_err(|e| TrainError::Model(e.to_string()))?;
        let mut slot = Vec::with_capacity(model.nodes.len());
        let mut next = 0;
        for n in &model.nodes {
            if n.op.is_linear() {
                slot.push(Some(next));
                next += 2;
            } else {
                slot.push(None);
            }
            if let Some(s) = shapes.get(n.output.index()) {
                if !(2..=5).contains(&s.len()) {
                    return Err(TrainError::Model(format!(
                        "node {} ({}) computes a tensor of rank {}; the interpreter handles 2 to 5",
                        n.name,
                        n.op.kind(),
                        s.len()
                    )));
                }
            }
        }
        Ok(Self {
            model,
            shapes,
            slot,
        })
    }

    pub fn model(&self) -> &Model {
        self.model
    }

    /// Shape of value `v` for batch size 1.
    pub fn shape(&self, v: ValueId) -> &[usize] {
        &self.shapes[v.index()]
    }

    /// Runs the graph on `x` (`[N, C, H, W]`, the model's input shape) up to value `upto`
    /// (the input itself for value 0), returned as `[N, elements per image]`.
    pub fn run(&self, w: &Weights, x: Tensor<4>, upto: ValueId) -> Result<Tensor<2>, TrainError> {
        let mut out = self.run_many(w, x, &[upto])?;
        Ok(out.pop().expect("one value asked, one returned"))
    }

    /// Like [`Graph::run`], for several values from one pass (each `[N, elements per image]`,
    /// in the order asked).
    pub fn run_many(
        &self,
        w: &Weights,
        x: Tensor<4>,
        outs: &[ValueId],
    ) -> Result<Vec<Tensor<2>>, TrainError> {
        let dims = x.dims();
        if dims[1..] != self.model.input_shape[..] {
            return Err(TrainError::Model(format!(
                "input of shape {:?}, the model takes {:?}",
                &dims[1..],
                self.model.input_shape
            )));
        }
        if let Some(bad) = outs.iter().find(|v| v.index() >= self.shapes.len()) {
            return Err(TrainError::Model(format!(
                "value {bad} does not exist in {}",
                self.model.name
            )));
        }
        let Some(end) = outs.iter().map(|v| v.index()).max() else {
            return Ok(Vec::new());
        };
        if w.tensors.len() != 2 * self.slot.iter().flatten().count() {
            return Err(TrainError::Model(format!(
                "{} weight tensors for a model with {} linear layers",
                w.tensors.len(),
                self.slot.iter().flatten().count()
            )));
        }
        let n = dims[0];
        // The last node (below `end`) reading each value, to free it after.
        let mut last = vec![0usize; end + 1];
        for (i, node) in self.model.nodes[..end].iter().enumerate() {
            for v in &node.inputs {
                last[v.index()] = i;
            }
        }
        let mut vals: Vec<Option<Value>> = vec![None; end + 1];
        vals[0] = Some(Value::R4(x));
        for i in 0..end {
            let node = &self.model.nodes[i];
            let ins: Vec<Value> = node
                .inputs
                .iter()
                .map(|v| vals[v.index()].clone().expect("topological order"))
                .collect();
            let y = self.node(i, w, ins, n).map_err(|e| {
                TrainError::Model(format!("node {} ({}): {e}", node.name, node.op.kind()))
            })?;
            vals[i + 1] = Some(y);
            for v in &node.inputs {
                if last[v.index()] == i && !outs.contains(v) {
                    vals[v.index()] = None;
                }
            }
        }
        Ok(outs
            .iter()
            .map(|v| vals[v.index()].clone().expect("computed").flat())
            .collect())
    }

    /// Shape of value `v` for batch `n`.
    fn dims(&self, v: ValueId, n: usize) -> Vec<usize> {
        let mut s = self.shapes[v.index()].clone();
        s[0] = n;
        s
    }

    fn node(&self, i: usize, w: &Weights, ins: Vec<Value>, n: usize) -> Result<Value, TrainError> {
        let node = &self.model.nodes[i];
        let out = self.dims(node.output, n);
        let mut ins = ins.into_iter();
        let x = ins.next().expect("every operator reads an input");
        let dev = w
            .tensors
            .first()
            .map(|p| p.val().device())
            .unwrap_or_else(device);
        let param = |k: usize| w.tensors[self.slot[i].expect("a linear node") + k].val();
        Ok(match &node.op {
            Op::Conv(c) => {
                let weight = param(0).reshape([c.out_c, c.in_per_group(), c.kh, c.kw]);
                let p = c.pads;
                let opts = ConvOptions::new_with_padding(
                    c.stride,
                    [(p[0], p[2]), (p[1], p[3])],
                    [1, 1],
                    c.groups,
                );
                Value::R4(conv2d(x.r4("Conv")?, weight, Some(param(1)), opts))
            }
            Op::Dense(d) => {
                let weight = param(0).reshape([d.out_f, d.in_f]);
                let b = param(1).reshape([1, d.out_f]);
                Value::R2(x.r2("Gemm")?.matmul(weight.transpose()) + b)
            }
            Op::Relu => each!(x, t => activation::relu(t)),
            Op::Clip { min, max } => each!(x, t => t.clamp(*min, *max)),
            Op::MaxPool(p) => {
                let opts = MaxPoolOptions::new(p.kernel)
                    .with_stride(p.stride)
                    .with_padding_pairs([(p.pads[0], p.pads[2]), (p.pads[1], p.pads[3])]);
                Value::R4(max_pool2d(x.r4("MaxPool")?, opts))
            }
            Op::AvgPool(p) => {
                let opts = AvgPoolOptions::new(p.kernel)
                    .with_stride(p.stride)
                    .with_padding_pairs([(p.pads[0], p.pads[2]), (p.pads[1], p.pads[3])])
                    .with_count_include_pad(p.count_include_pad);
                Value::R4(avg_pool2d(x.r4("AveragePool")?, opts))
            }
            Op::GlobalAvgPool => Value::R4(x.r4("GlobalAveragePool")?.mean_dim(3).mean_dim(2)),
            Op::GlobalMaxPool => Value::R4(x.r4("GlobalMaxPool")?.max_dim(3).max_dim(2)),
            Op::BatchNorm { scale, shift } => {
                let r = x.rank();
                let (s, b) = (per_channel(scale, r, &dev)?, per_channel(shift, r, &dev)?);
                let y = each2!(x, s, a, b => a * b)?;
                each2!(y, b, a, b => a + b)?
            }
            Op::Flatten | Op::Reshape(_) => x.reshape(&out)?,
            Op::Add => {
                let y = ins.next().expect("arity checked");
                each2!(x, y, a, b => a + b)?
            }
            Op::Softmax => each!(x, t => { let d = t.dims().len() - 1; activation::softmax(t, d) }),
            Op::LogSoftmax => {
                each!(x, t => { let d = t.dims().len() - 1; activation::log_softmax(t, d) })
            }
            Op::Unary(u) => unary(*u, x),
            Op::PRelu { slope } => {
                let r = x.rank();
                let s = if slope.len() == 1 {
                    per_channel(
                        &vec![slope[0]; self.shapes[node.inputs[0].index()][1]],
                        r,
                        &dev,
                    )?
                } else {
                    per_channel(slope, r, &dev)?
                };
                let neg = each!(x.clone(), t => t.clamp_max(0.0));
                let neg = each2!(neg, s, a, b => a * b)?;
                let pos = each!(x, t => t.clamp_min(0.0));
                each2!(pos, neg, a, b => a + b)?
            }
            Op::Binary(op) => {
                let y = ins.next().expect("arity checked");
                binary(*op, x, y)?
            }
            Op::BinaryConst { op, c, c_first } => {
                let k = constant(c.data.clone(), &c.shape, &dev)?;
                if *c_first {
                    binary(*op, k, x)?
                } else {
                    binary(*op, x, k)?
                }
            }
            Op::Concat { axis } => {
                let all: Vec<Value> = std::iter::once(x).chain(ins).collect();
                concat(all, *axis)?
            }
            Op::Transpose(perm) => match x {
                Value::R2(t) => Value::R2(t.permute(fixed(perm)?)),
                Value::R3(t) => Value::R3(t.permute(fixed(perm)?)),
                Value::R4(t) => Value::R4(t.permute(fixed(perm)?)),
                Value::R5(t) => Value::R5(t.permute(fixed(perm)?)),
            },
            Op::Lrn(l) => {
                let t = x.r4("LRN")?;
                let [b, c, h, wd] = t.dims();
                let sq = (t.clone() * t.clone()).reshape([b, 1, c, h * wd]);
                let (lo, hi) = ((l.size - 1) / 2, l.size / 2);
                let opts = AvgPoolOptions::new([l.size, 1])
                    .with_stride([1, 1])
                    .with_padding_pairs([(lo, hi), (0, 0)])
                    .with_count_include_pad(true);
                // Mean of the squares over the window = Σ x² / size.
                let mean = avg_pool2d(sq, opts).reshape([b, c, h, wd]);
                let den = (mean * l.alpha).add_scalar(l.bias).powf_scalar(l.beta);
                Value::R4(t / den)
            }
            Op::Pad { pads, mode } => {
                let m = match mode {
                    PadMode::Constant(v) => BurnPad::Constant(*v),
                    PadMode::Reflect => BurnPad::Reflect,
                    PadMode::Edge => BurnPad::Edge,
                };
                let t = x.r4("Pad")?;
                Value::R4(t.pad([(pads[0], pads[2]), (pads[1], pads[3])], m))
            }
            Op::Dilate { stride, pads } => {
                let t = x.r4("Dilate")?;
                let [b, c, h, wd] = t.dims();
                let [sh, sw] = *stride;
                // Each pixel followed by stride − 1 zeros in both directions, then the trailing
                // zeros after the last row and column cut off.
                let t: Tensor<6> = t.reshape([b, c, h, 1, wd, 1]).pad(
                    [(0, 0), (0, sh - 1), (0, 0), (0, sw - 1)],
                    BurnPad::Constant(0.0),
                );
                let t = t.reshape([b, c, h * sh, wd * sw]).slice([
                    0..b,
                    0..c,
                    0..(h - 1) * sh + 1,
                    0..(wd - 1) * sw + 1,
                ]);
                Value::R4(t.pad(
                    [(pads[0], pads[2]), (pads[1], pads[3])],
                    BurnPad::Constant(0.0),
                ))
            }
        })
    }
}

fn fixed<const D: usize>(perm: &[usize]) -> Result<[usize; D], TrainError> {
    perm.try_into()
        .map_err(|_| TrainError::Model(format!("permutation {perm:?} for rank {D}")))
}

fn unary(u: Unary, x: Value) -> Value {
    match u {
        Unary::Sigmoid => each!(x, t => activation::sigmoid(t)),
        Unary::Tanh => each!(x, t => activation::tanh(t)),
        Unary::LeakyRelu(a) => {
            each!(x, t => t.clone().clamp_min(0.0) + t.clamp_max(0.0).mul_scalar(a))
        }
        Unary::Elu(a) => {
            each!(x, t => t.clone().clamp_min(0.0) + t.clamp_max(0.0).exp().sub_scalar(1.0).mul_scalar(a))
        }
        Unary::HardSigmoid { alpha, beta } => {
            each!(x, t => t.mul_scalar(alpha).add_scalar(beta).clamp(0.0, 1.0))
        }
        Unary::HardSwish => {
            each!(x, t => t.clone() * t.div_scalar(6.0).add_scalar(0.5).clamp(0.0, 1.0))
        }
    }
}

fn binary(op: BinOp, a: Value, b: Value) -> Result<Value, TrainError> {
    match op {
        BinOp::Add => each2!(a, b, x, y => x + y),
        BinOp::Sub => each2!(a, b, x, y => x - y),
        BinOp::Mul => each2!(a, b, x, y => x * y),
        BinOp::Div => each2!(a, b, x, y => x / y),
    }
}

fn concat(all: Vec<Value>, axis: usize) -> Result<Value, TrainError> {
    macro_rules! cat {
        ($var:ident) => {{
            let ts = all
                .into_iter()
                .map(|v| match v {
                    Value::$var(t) => Ok(t),
                    _ => Err(TrainError::Model("Concat of different ranks".into())),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Value::$var(Tensor::cat(ts, axis))
        }};
    }
    Ok(match all.first().map(Value::rank) {
        Some(2) => cat!(R2),
        Some(3) => cat!(R3),
        Some(4) => cat!(R4),
        Some(5) => cat!(R5),
        _ => return Err(TrainError::Model("Concat of nothing".into())),
    })
}
