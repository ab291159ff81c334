//! The model IR: a topologically ordered list of nodes over numbered values.
//!
//! Value 0 is the model input (NCHW float32). Every node produces exactly one value. Weights are
//! stored in the node (they are public to the host: the operator owns the model).

pub use crate::ops::{BinOp, Lrn, PadMode, Unary};
use crate::{ModelError, Tensor};

/// A value (tensor) of a model: the input is value 0, node `i`'s output is value `i + 1`.
/// Distinct from [`NodeId`] (a position in the node list, one less) and from a linear-layer
/// ordinal (`u16`, what `--split` counts and pads are numbered by), so the three cannot be
/// mixed up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ValueId(usize);

impl ValueId {
    pub const fn new(index: usize) -> Self {
        Self(index)
    }
    /// Position in a per-value table (`0..model.num_values()`).
    pub const fn index(self) -> usize {
        self.0
    }
    /// The node that computes this value (`None` for the model input).
    pub const fn node(self) -> Option<NodeId> {
        match self.0 {
            0 => None,
            i => Some(NodeId(i - 1)),
        }
    }
}

impl std::fmt::Display for ValueId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A node of a model, by its position in topological order (also what a tail starts at).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(usize);

impl NodeId {
    pub const fn new(index: usize) -> Self {
        Self(index)
    }
    /// Position in `model.nodes` (or `model.nodes.len()` for "after the last node").
    pub const fn index(self) -> usize {
        self.0
    }
    /// The value this node computes.
    pub const fn output(self) -> ValueId {
        ValueId(self.0 + 1)
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Convolution parameters. Weight layout: `[out_c, in_c / groups, kh, kw]` (ONNX order).
#[derive(Clone, Debug, PartialEq)]
pub struct Conv {
    pub out_c: usize,
    pub in_c: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    /// Padding `[top, left, bottom, right]`.
    pub pads: [usize; 4],
    pub groups: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Conv {
    /// Input channels per group.
    pub fn in_per_group(&self) -> usize {
        self.in_c / self.groups
    }
    /// Output channels per group.
    pub fn out_per_group(&self) -> usize {
        self.out_c / self.groups
    }
    /// Rows of the per-group weight matrix: `in_c / groups · kh · kw`.
    pub fn k(&self) -> usize {
        self.in_per_group() * self.kh * self.kw
    }
    /// Output spatial size for an input of `h × w`, or an error when the kernel does not fit,
    /// a stride is zero or the padded size overflows.
    pub fn out_hw(&self, h: usize, w: usize) -> Result<(usize, usize), ModelError> {
        window_out_hw(h, w, [self.kh, self.kw], self.stride, self.pads, "kernel")
    }
}

/// Output size of a `kernel` window sliding with `stride` over an `h × w` input padded by
/// `pads` (`[top, left, bottom, right]`), with checked arithmetic.
fn window_out_hw(
    h: usize,
    w: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    pads: [usize; 4],
    what: &str,
) -> Result<(usize, usize), ModelError> {
    let padded = |x: usize, a: usize, b: usize| {
        x.checked_add(a)
            .and_then(|v| v.checked_add(b))
            .ok_or_else(|| {
                ModelError::TooLarge(format!(
                    "{what} {}x{}: padded input size overflows ({h}x{w}, pads {pads:?})",
                    kernel[0], kernel[1]
                ))
            })
    };
    let ph = padded(h, pads[0], pads[2])?;
    let pw = padded(w, pads[1], pads[3])?;
    if stride[0] == 0 || stride[1] == 0 {
        return Err(ModelError::Shape(format!(
            "{what} has a zero stride {stride:?}"
        )));
    }
    if ph < kernel[0] || pw < kernel[1] {
        return Err(ModelError::Shape(format!(
            "{what} {}x{} larger than padded input {ph}x{pw}",
            kernel[0], kernel[1]
        )));
    }
    Ok((
        (ph - kernel[0]) / stride[0] + 1,
        (pw - kernel[1]) / stride[1] + 1,
    ))
}

/// Fully connected layer: `y = x · Wᵀ + b`, weight layout `[out_f, in_f]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Dense {
    pub out_f: usize,
    pub in_f: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// Pooling window.
#[derive(Clone, Debug, PartialEq)]
pub struct Pool {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    /// `[top, left, bottom, right]`.
    pub pads: [usize; 4],
    /// AveragePool only: whether padded cells count in the divisor.
    pub count_include_pad: bool,
}

impl Pool {
    /// Output spatial size for an input of `h × w`, or an error when the window does not fit,
    /// a stride is zero or the padded size overflows.
    pub fn out_hw(&self, h: usize, w: usize) -> Result<(usize, usize), ModelError> {
        window_out_hw(h, w, self.kernel, self.stride, self.pads, "pool window")
    }
}

/// An operator.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Conv(Conv),
    Dense(Dense),
    Relu,
    /// Clamp to `[min, max]` (ReLU6 is `Clip(0, 6)`).
    Clip {
        min: f32,
        max: f32,
    },
    MaxPool(Pool),
    AvgPool(Pool),
    GlobalAvgPool,
    /// Inference batch normalization as a per-channel affine map `y = x·scale + shift`.
    /// The plan folds it into the preceding convolution.
    BatchNorm {
        scale: Vec<f32>,
        shift: Vec<f32>,
    },
    /// `[N, ...] → [N, prod(...)]`.
    Flatten,
    /// Reshape keeping the batch dimension: `[N, ...] → [N, dims...]`.
    Reshape(Vec<usize>),
    /// Elementwise sum of two tensors of the same shape (residual connections).
    Add,
    /// Softmax over the last axis.
    Softmax,
    /// Log-softmax over the last axis.
    LogSoftmax,
    /// An elementwise map (sigmoid, tanh, leaky ReLU, ...).
    Unary(Unary),
    /// Leaky ReLU with a learned slope per channel (1 or C values).
    PRelu {
        slope: Vec<f32>,
    },
    /// Arithmetic between two computed values of equal rank, with numpy broadcasting
    /// (squeeze-and-excitation's per-channel `Mul`, a branch divided by another).
    Binary(BinOp),
    /// Arithmetic with a constant: `x op c`, or `c op x` when `c_first`. `c` has the rank of
    /// `x` with batch dimension 1, and broadcasts against it (numpy rules).
    BinaryConst {
        op: BinOp,
        c: Tensor,
        c_first: bool,
    },
    /// Concatenation of two or more values along `axis` (never the batch axis, 0).
    Concat {
        axis: usize,
    },
    /// Axes permuted (`perm[0]` is 0: the batch stays first), e.g. ShuffleNet's channel shuffle.
    Transpose(Vec<usize>),
    /// Local response normalization across channels.
    Lrn(Lrn),
    /// Spatial padding `[top, left, bottom, right]`.
    Pad {
        pads: [usize; 4],
        mode: PadMode,
    },
    /// Zero insertion (`stride − 1` zeros between pixels) then zero padding: with the stride-1
    /// convolution after it, a transposed convolution.
    Dilate {
        stride: [usize; 2],
        pads: [usize; 4],
    },
    /// Maximum over each channel plane: `[N, C, H, W] → [N, C, 1, 1]`.
    GlobalMaxPool,
}

impl Op {
    /// Whether this is a linear layer (Conv or Dense): what `--split K` counts and what the
    /// enclave offloads under a pad.
    pub fn is_linear(&self) -> bool {
        matches!(self, Op::Conv(_) | Op::Dense(_))
    }

    /// Short operator name for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Conv(_) => "Conv",
            Op::Dense(_) => "Gemm",
            Op::Relu => "Relu",
            Op::Clip { .. } => "Clip",
            Op::MaxPool(_) => "MaxPool",
            Op::AvgPool(_) => "AveragePool",
            Op::GlobalAvgPool => "GlobalAveragePool",
            Op::BatchNorm { .. } => "BatchNormalization",
            Op::Flatten => "Flatten",
            Op::Reshape(_) => "Reshape",
            Op::Add => "Add",
            Op::Softmax => "Softmax",
            Op::LogSoftmax => "LogSoftmax",
            Op::Unary(u) => u.kind(),
            Op::PRelu { .. } => "PRelu",
            Op::Binary(b) | Op::BinaryConst { op: b, .. } => b.kind(),
            Op::Concat { .. } => "Concat",
            Op::Transpose(_) => "Transpose",
            Op::Lrn(_) => "LRN",
            Op::Pad { .. } => "Pad",
            Op::Dilate { .. } => "Dilate",
            Op::GlobalMaxPool => "GlobalMaxPool",
        }
    }

    /// How many inputs the operator reads: `(min, max)`.
    pub fn arity(&self) -> (usize, usize) {
        match self {
            Op::Add | Op::Binary(_) => (2, 2),
            Op::Concat { .. } => (2, usize::MAX),
            _ => (1, 1),
        }
    }
}

/// One node: `output = op(inputs)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub output: ValueId,
}

/// A network.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub name: String,
    /// Input shape without the batch dimension: `[C, H, W]`.
    pub input_shape: Vec<usize>,
    /// Nodes in topological order. Value 0 is the input; node outputs are numbered 1.. in order.
    pub nodes: Vec<Node>,
    /// The value returned by the model.
    pub output: ValueId,
    /// Optional class names for the output logits.
    pub labels: Option<Vec<String>>,
}

/// The model input value.
pub const INPUT: ValueId = ValueId(0);

/// Largest number of elements of one value (tensor) a model may compute for batch size 1: 2^31,
/// the same bound as for one constant in an ONNX file (8 GiB as f32). Checked by shape
/// inference ([`Model::validate`], ONNX import) before anything of that size is allocated.
pub const MAX_VALUE_ELEMENTS: usize = 1 << 31;

/// Largest number of elements of all values of a model together (input included) for batch
/// size 1: 2^32 (16 GiB as f32), far above any real network (VGG-16 at 224×224 computes about
/// 2^24). Bounds what running every node with all values kept (calibration) can allocate.
pub const MAX_TOTAL_ELEMENTS: usize = 1 << 32;

impl Model {
    /// The fusion pass: for each node, whether it is a linear layer (Conv or Gemm) that absorbs
    /// the ReLU right after it, i.e. that ReLU is the node's only reader, reads nothing else,
    /// and the node's output is not the model's. Every executor (the float executor, the CUDA
    /// tail, the quantized plan) reads these marks, so all fuse the same nodes; a fused pair
    /// computes max(x + b, 0) in one pass, the same bits as two.
    pub fn relu_fusions(&self) -> Vec<bool> {
        let mut readers = vec![0usize; self.num_values()];
        for n in &self.nodes {
            for &v in &n.inputs {
                if let Some(r) = readers.get_mut(v.index()) {
                    *r += 1;
                }
            }
        }
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                n.op.is_linear()
                    && readers.get(n.output.index()) == Some(&1)
                    && n.output != self.output
                    && self
                        .nodes
                        .get(i + 1)
                        .is_some_and(|r| matches!(r.op, Op::Relu) && r.inputs == [n.output])
            })
            .collect()
    }

    /// Number of values (input + one per node).
    pub fn num_values(&self) -> usize {
        self.nodes.len() + 1
    }

    /// The linear nodes, in order (position `k` is linear layer `k`).
    pub fn linear_nodes(&self) -> Vec<NodeId> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].op.is_linear())
            .map(NodeId)
            .collect()
    }

    /// The node at `id`.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0]
    }

    /// The position after the last node (a split with an empty tail).
    pub fn end(&self) -> NodeId {
        NodeId(self.nodes.len())
    }

    /// Index of the first node of the tail for `--split k`: the head holds the first k linear
    /// layers and the non-linear layers after each, up to the next linear layer. Where a branch
    /// (a residual, a concatenation, a squeeze-and-excitation gate) would straddle that point,
    /// the head extends to the next linear layer where all branches have joined, so the host
    /// is handed one tensor: never a branch's earlier, less processed features beside it.
    /// [`Model::head_layers`] says how many linear layers the head then really holds.
    pub fn split_node(&self, k: usize) -> Result<NodeId, ModelError> {
        let lin = self.linear_nodes();
        if k > lin.len() {
            return Err(ModelError::Invalid(format!(
                "split {k} is past the last linear layer (the model has {})",
                lin.len()
            )));
        }
        Ok(lin[k..]
            .iter()
            .copied()
            .find(|&n| crate::exec::live_across(self, n).len() == 1)
            .unwrap_or(self.end()))
    }

    /// The number of linear layers before node `end` (for a split, those the enclave runs).
    pub fn head_layers(&self, end: NodeId) -> usize {
        self.nodes[..end.index().min(self.nodes.len())]
            .iter()
            .filter(|n| n.op.is_linear())
            .count()
    }

    /// Checks structural invariants and computes every value's shape for batch size 1.
    pub fn validate(&self) -> Result<Vec<Vec<usize>>, ModelError> {
        if self.input_shape.len() != 3 || self.input_shape.contains(&0) {
            return Err(ModelError::Invalid(format!(
                "input shape must be [C, H, W] with non-zero sizes, got {:?}",
                self.input_shape
            )));
        }
        let mut shapes: Vec<Vec<usize>> = Vec::with_capacity(self.num_values());
        let mut s = vec![1];
        s.extend_from_slice(&self.input_shape);
        let mut budget = crate::shape::Budget::default();
        budget
            .admit(&s)
            .map_err(|e| e.at(&format!("input {:?}", self.input_shape)))?;
        shapes.push(s);
        for (i, n) in self.nodes.iter().enumerate() {
            if n.output != NodeId(i).output() {
                return Err(ModelError::Invalid(format!(
                    "node {} ({}) must produce value {}",
                    n.name,
                    n.op.kind(),
                    i + 1
                )));
            }
            for &inp in &n.inputs {
                if inp.index() > i {
                    return Err(ModelError::Invalid(format!(
                        "node {} reads value {inp} before it is computed",
                        n.name
                    )));
                }
            }
            let (lo, hi) = n.op.arity();
            if !(lo..=hi).contains(&n.inputs.len()) {
                let want = if lo == hi {
                    lo.to_string()
                } else {
                    format!("at least {lo}")
                };
                return Err(ModelError::Invalid(format!(
                    "node {} ({}) takes {want} inputs, has {}",
                    n.name,
                    n.op.kind(),
                    n.inputs.len()
                )));
            }
            let at = || format!("node {} ({})", n.name, n.op.kind());
            let shape = crate::shape::infer(n, &shapes).map_err(|e| e.at(&at()))?;
            budget.admit(&shape).map_err(|e| e.at(&at()))?;
            shapes.push(shape);
        }
        if self.output == INPUT || self.output.index() > self.nodes.len() {
            return Err(ModelError::Invalid(format!(
                "output value {} does not exist",
                self.output
            )));
        }
        Ok(shapes)
    }

    /// Total multiply-accumulates of the linear layers for batch size 1.
    pub fn macs(&self) -> Result<u64, ModelError> {
        let shapes = self.validate()?;
        let mut total = 0u64;
        for (i, n) in self.nodes.iter().enumerate() {
            match &n.op {
                // Validated: every value and weight fits in usize; the u64 sums saturate.
                Op::Conv(c) => {
                    let o = &shapes[i + 1];
                    let macs = ((o[1] * o[2] * o[3]) as u64).saturating_mul(c.k() as u64);
                    total = total.saturating_add(macs);
                }
                Op::Dense(d) => total = total.saturating_add((d.out_f * d.in_f) as u64),
                _ => {}
            }
        }
        Ok(total)
    }
}

impl Model {
    /// Folds every BatchNormalization that directly follows a convolution (whose output nothing
    /// else reads) into that convolution's weights and bias; renumbers the values. Other
    /// BatchNormalization nodes are kept. The float result changes only by rounding.
    pub fn fold_batchnorm(&self) -> Model {
        let mut readers = vec![0usize; self.num_values()];
        for n in &self.nodes {
            for &v in &n.inputs {
                readers[v.index()] += 1;
            }
        }
        let mut map: Vec<ValueId> = vec![INPUT; self.num_values()];
        let mut nodes: Vec<Node> = Vec::with_capacity(self.nodes.len());
        for n in &self.nodes {
            if let Op::BatchNorm { scale, shift } = &n.op {
                let src = n.inputs[0];
                let mapped = map[src.index()];
                let prev_node = mapped.node().map(NodeId::index);
                let foldable = readers[src.index()] == 1
                    && src != self.output
                    && prev_node.is_some_and(|p| {
                        let prev = &nodes[p];
                        matches!(prev.op, Op::Conv(_)) && prev.output == mapped
                    });
                if let (true, Some(p)) = (foldable, prev_node) {
                    let prev = &mut nodes[p];
                    if let Op::Conv(c) = &mut prev.op {
                        let k = c.k();
                        for oc in 0..c.out_c {
                            let s = scale[oc];
                            c.weight[oc * k..(oc + 1) * k]
                                .iter_mut()
                                .for_each(|w| *w *= s);
                            c.bias[oc] = c.bias[oc] * s + shift[oc];
                        }
                        prev.name = format!("{}+{}", prev.name, n.name);
                    }
                    map[n.output.index()] = mapped;
                    continue;
                }
            }
            let output = NodeId(nodes.len()).output();
            nodes.push(Node {
                name: n.name.clone(),
                op: n.op.clone(),
                inputs: n.inputs.iter().map(|&v| map[v.index()]).collect(),
                output,
            });
            map[n.output.index()] = output;
        }
        Model {
            name: self.name.clone(),
            input_shape: self.input_shape.clone(),
            output: map[self.output.index()],
            nodes,
            labels: self.labels.clone(),
        }
    }
}
