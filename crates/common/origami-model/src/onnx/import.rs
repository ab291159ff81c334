//! ONNX `ModelProto` → [`Model`].
//!
//! The graph is walked once, in file order (ONNX requires topological order). Each ONNX value
//! name maps either to a computed IR value or to a constant (initializer or `Constant` node);
//! constants are decoded lazily, when an operator needs them as weights, shapes or axes, so an
//! unused initializer of an exotic type does not stop the import. Shapes are inferred node by
//! node because a few conversions (Reshape, ReduceMean, Softmax, Flatten axes) depend on the rank
//! or the dimensions of their input.

use std::collections::HashMap;
use std::path::Path;

use super::decode::*;
use super::layers::{lrn, unary};
use super::proto::{ModelProto, NodeProto, TensorProto, ValueInfoProto};
use super::LABELS_KEY;
use crate::ir::{Dense, Model, Node, NodeId, Op, ValueId, INPUT};
use crate::shape::Budget;
use crate::ModelError;

/// Oldest default-domain opset accepted. The operators we import changed meaning only in ways
/// handled below (Clip bounds as attributes before 11, ReduceMean axes as an attribute before
/// 18, Softmax's 2-D coercion before 13, BatchNormalization's `spatial` before 9, Reshape's
/// shape as an attribute before 5, the arithmetic operators' `broadcast`/`axis` attributes
/// before 7); an operator whose older meaning is not handled is refused by [`LEGACY_OPS`].
pub(super) const MIN_OPSET: i64 = 1;
/// Operators imported from files older than opset 7: those whose meaning did not change, or
/// whose older attributes the importer reads. Any other operator in such a file is refused,
/// naming it and the opset.
const LEGACY_OPS: &[&str] = &[
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Clip",
    "Concat",
    "Constant",
    "Conv",
    "Div",
    "Dropout",
    "Elu",
    "Flatten",
    "Gather",
    "Gemm",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "HardSigmoid",
    "Identity",
    "LeakyRelu",
    "LogSoftmax",
    "LRN",
    "MatMul",
    "MaxPool",
    "Mul",
    "Pad",
    "PRelu",
    "Relu",
    "Reshape",
    "Shape",
    "Sigmoid",
    "Softmax",
    "Squeeze",
    "Sub",
    "Sum",
    "Tanh",
    "Transpose",
    "Unsqueeze",
];
/// Newest default-domain opset accepted: versions 21 and 22 only widened type constraints of
/// the operators we import.
pub(super) const MAX_OPSET: i64 = 22;
pub(super) fn import(mp: &ModelProto, base_dir: Option<&Path>) -> Result<Model, ModelError> {
    let graph = mp
        .graph
        .as_ref()
        .ok_or_else(|| malformed("the file contains no graph"))?;
    let opset = default_opset(mp, &graph.name)?;
    let mut im = Importer::new(opset, base_dir);

    for t in &graph.initializer {
        if t.name.is_empty() {
            return Err(malformed("an initializer has no name"));
        }
        let c = im.consts.len();
        im.consts.push(Const::Proto(t));
        im.define(&t.name, Val::Const(c))?;
    }

    // Graph inputs that are also initializers are constants with a default, not model inputs.
    let inputs: Vec<&ValueInfoProto> = graph
        .input
        .iter()
        .filter(|v| !im.names.contains_key(v.name.as_str()))
        .collect();
    let [input] = inputs[..] else {
        return Err(ModelError::Invalid(format!(
            "the model must have exactly one (non-constant) input, it has {}",
            inputs.len()
        )));
    };
    let (input_shape, batch) = input_shape(input)?;
    im.batch = batch;
    im.define(&input.name, Val::Computed(INPUT))?;
    let shape: Vec<usize> = std::iter::once(1).chain(input_shape.clone()).collect();
    im.budget
        .admit(&shape)
        .map_err(|e| e.at(&format!("input '{}'", input.name)))?;
    im.shapes.push(shape);
    im.value_names.push(&input.name);

    im.count_uses(&graph.node, graph.output.iter().map(|o| o.name.as_str()));
    for np in &graph.node {
        im.node(np)?;
    }

    let [output] = &graph.output[..] else {
        return Err(ModelError::Invalid(format!(
            "the model must have exactly one output, it has {}",
            graph.output.len()
        )));
    };
    let output = match im.names.get(output.name.as_str()) {
        None => {
            return Err(malformed(format!(
                "graph output '{}' is not produced by any node",
                output.name
            )))
        }
        Some(Val::Const(_)) => {
            return Err(ModelError::Invalid(format!(
                "graph output '{}' is a constant",
                output.name
            )))
        }
        Some(Val::Computed(INPUT)) => {
            return Err(ModelError::Invalid(format!(
                "graph output '{}' is the input itself: the model computes nothing",
                output.name
            )))
        }
        Some(&Val::Computed(v)) => v,
    };

    let labels = mp
        .metadata_props
        .iter()
        .find(|e| e.key == LABELS_KEY)
        .map(|e| {
            if e.value.is_empty() {
                Vec::new()
            } else {
                e.value.split('\n').map(str::to_string).collect()
            }
        });

    let model = Model {
        name: graph.name.clone(),
        input_shape,
        nodes: im.nodes,
        output,
        labels,
    };
    model.validate()?;
    Ok(model)
}

/// What an ONNX value name stands for.
#[derive(Clone, Copy, Debug)]
pub(super) enum Val {
    /// An IR value (the input or a node output).
    Computed(ValueId),
    /// Index into `Importer::consts`.
    Const(usize),
}

/// A constant, decoded on demand.
pub(super) enum Const<'a> {
    Proto(&'a TensorProto),
    Floats(Vec<usize>, Vec<f32>),
    Ints(Vec<usize>, Vec<i64>),
}

pub(super) struct Importer<'a> {
    pub(super) opset: i64,
    base_dir: Option<&'a Path>,
    /// The input's declared batch size (1 when symbolic): what `Shape` folds to in dimension 0,
    /// and what a Reshape target may name as its first dimension.
    pub(super) batch: usize,
    pub(super) names: HashMap<&'a str, Val>,
    pub(super) consts: Vec<Const<'a>>,
    pub(super) nodes: Vec<Node>,
    /// Shape of every IR value with batch size 1.
    pub(super) shapes: Vec<Vec<usize>>,
    /// The ONNX name of each IR value ("" for values we introduce).
    value_names: Vec<&'a str>,
    /// Pass-through aliases (Identity, Dropout): output name → the name it stands for.
    root: HashMap<&'a str, &'a str>,
    /// How many node inputs and graph outputs read each (root) name.
    uses: HashMap<&'a str, usize>,
    /// Elements of the values so far: inferred sizes are capped as each node is converted,
    /// before any later step allocates them.
    budget: Budget,
}

impl<'a> Importer<'a> {
    fn new(opset: i64, base_dir: Option<&'a Path>) -> Self {
        Self {
            opset,
            base_dir,
            batch: 1,
            names: HashMap::new(),
            consts: Vec::new(),
            nodes: Vec::new(),
            shapes: Vec::new(),
            value_names: Vec::new(),
            root: HashMap::new(),
            uses: HashMap::new(),
            budget: Budget::default(),
        }
    }

    pub(super) fn define(&mut self, name: &'a str, v: Val) -> Result<(), ModelError> {
        if name.is_empty() {
            return Err(malformed("a value has an empty name"));
        }
        if self.names.insert(name, v).is_some() {
            return Err(malformed(format!("value '{name}' is defined twice")));
        }
        Ok(())
    }

    fn root_of(&self, name: &'a str) -> &'a str {
        self.root.get(name).copied().unwrap_or(name)
    }

    /// Counts readers of every value, seeing through pass-through nodes, so that a bias `Add`
    /// can tell whether the Gemm/MatMul before it feeds anything else.
    fn count_uses(&mut self, nodes: &'a [NodeProto], outputs: impl Iterator<Item = &'a str>) {
        for n in nodes {
            let pass = is_default_domain(n) && matches!(n.op_type.as_str(), "Identity" | "Dropout");
            for (k, i) in n.input.iter().enumerate() {
                if i.is_empty() || (pass && k == 0) {
                    continue;
                }
                *self.uses.entry(self.root_of(i)).or_default() += 1;
            }
            if pass {
                if let (Some(o), Some(i)) = (n.output.first(), n.input.first()) {
                    let r = self.root_of(i);
                    self.root.insert(o, r);
                }
            }
        }
        for o in outputs {
            *self.uses.entry(self.root_of(o)).or_default() += 1;
        }
    }

    pub(super) fn uses_of(&self, name: &'a str) -> usize {
        self.uses.get(self.root_of(name)).copied().unwrap_or(0)
    }

    pub(super) fn lookup(&self, ctx: &Ctx, name: &str) -> Result<Val, ModelError> {
        if name.is_empty() {
            return Err(ctx.malformed("a required input is missing"));
        }
        self.names.get(name).copied().ok_or_else(|| {
            ctx.malformed(format!(
                "reads unknown value '{name}' (values must be defined before use)"
            ))
        })
    }

    /// A computed (non-constant) input.
    pub(super) fn computed(&self, ctx: &Ctx, name: &str) -> Result<ValueId, ModelError> {
        match self.lookup(ctx, name)? {
            Val::Computed(v) => Ok(v),
            Val::Const(_) => Err(ctx.unsupported(format!(
                "input '{name}' is a constant; computing on constants only is not supported"
            ))),
        }
    }

    pub(super) fn constant(&self, ctx: &Ctx, name: &str) -> Result<(Vec<usize>, Data), ModelError> {
        let c = match self.lookup(ctx, name)? {
            Val::Const(c) => c,
            Val::Computed(_) => {
                return Err(ctx.unsupported(format!(
                    "input '{name}' must be a constant (initializer or Constant node)"
                )))
            }
        };
        match &self.consts[c] {
            Const::Proto(t) => decode_tensor(t, self.base_dir),
            Const::Floats(d, v) => Ok((d.clone(), Data::F32(v.clone()))),
            Const::Ints(d, v) => Ok((d.clone(), Data::I64(v.clone()))),
        }
    }

    /// A constant float tensor (DOUBLE is converted).
    pub(super) fn const_f32(
        &self,
        ctx: &Ctx,
        name: &str,
    ) -> Result<(Vec<usize>, Vec<f32>), ModelError> {
        match self.constant(ctx, name)? {
            (d, Data::F32(v)) => Ok((d, v)),
            (_, Data::I64(_)) => Err(ctx.malformed(format!(
                "constant '{name}' must be a float tensor, it holds int64"
            ))),
        }
    }

    /// A constant int64 tensor (shapes, axes).
    pub(super) fn const_i64(
        &self,
        ctx: &Ctx,
        name: &str,
    ) -> Result<(Vec<usize>, Vec<i64>), ModelError> {
        match self.constant(ctx, name)? {
            (d, Data::I64(v)) => Ok((d, v)),
            (_, Data::F32(_)) => Err(ctx.malformed(format!(
                "constant '{name}' must be an int64 tensor, it holds floats"
            ))),
        }
    }

    /// A constant float scalar (a tensor of one element), or `default` when the input is absent.
    pub(super) fn scalar_or(&self, ctx: &Ctx, name: &str, default: f32) -> Result<f32, ModelError> {
        if name.is_empty() {
            return Ok(default);
        }
        match self.const_f32(ctx, name)?.1[..] {
            [x] => Ok(x),
            ref v => Err(ctx.malformed(format!(
                "constant '{name}' must be a scalar, it has {} values",
                v.len()
            ))),
        }
    }

    /// Appends an IR node and infers its shape; returns its value.
    pub(super) fn push(
        &mut self,
        ctx: &Ctx,
        name: String,
        op: Op,
        inputs: Vec<ValueId>,
        onnx_name: &'a str,
    ) -> Result<ValueId, ModelError> {
        let output = NodeId::new(self.nodes.len()).output();
        let node = Node {
            name,
            op,
            inputs,
            output,
        };
        let at = || format!("node '{}' ({})", ctx.node, ctx.op);
        let shape = crate::shape::infer(&node, &self.shapes).map_err(|e| e.at(&at()))?;
        self.budget.admit(&shape).map_err(|e| e.at(&at()))?;
        self.nodes.push(node);
        self.shapes.push(shape);
        self.value_names.push(onnx_name);
        Ok(output)
    }

    fn node(&mut self, np: &'a NodeProto) -> Result<(), ModelError> {
        let out: &'a str = np.output.first().map(String::as_str).unwrap_or("");
        let display: &str = if np.name.is_empty() { out } else { &np.name };
        let ctx = Ctx {
            op: &np.op_type,
            node: display,
        };
        if np.domain == super::ORIGAMI_DOMAIN && np.op_type == "Dilate" {
            let x = self.computed(&ctx, input_name(np, 0))?;
            let op = Op::Dilate {
                stride: strides(&ctx, np)?,
                pads: pads(&ctx, np)?,
            };
            let v = self.push(&ctx, display.to_string(), op, vec![x], out)?;
            return self.define(out, Val::Computed(v));
        }
        if !is_default_domain(np) {
            return Err(
                ctx.unsupported(format!("operator domain '{}' is not supported", np.domain))
            );
        }
        if out.is_empty() {
            return Err(ctx.malformed("the node has no output"));
        }
        for (k, extra) in np.output.iter().enumerate().skip(1) {
            if !extra.is_empty() && self.uses_of(extra) > 0 {
                return Err(ctx.unsupported(format!(
                    "output #{k} '{extra}' is used; only the first output is supported"
                )));
            }
        }
        for i in &np.input {
            if !i.is_empty() {
                self.lookup(&ctx, i)?;
            }
        }
        let input = |k: usize| np.input.get(k).map(String::as_str).unwrap_or("");
        // IR node name: the ONNX node name, or its output's when the node is unnamed.
        let name = display.to_string();
        if self.opset < 7 && !LEGACY_OPS.contains(&np.op_type.as_str()) {
            return Err(ctx.unsupported(format!(
                "opset {}: this operator's meaning before opset 7 is not supported (re-export \
                 the model with opset 7 or later)",
                self.opset
            )));
        }
        // Shape computations on constants (what exporters emit around Reshape) fold here.
        if let Some(c) = self.fold(&ctx, np)? {
            let idx = self.consts.len();
            self.consts.push(c);
            return self.define(out, Val::Const(idx));
        }

        let op = match np.op_type.as_str() {
            "Constant" => {
                let c = self.constant_node(&ctx, np)?;
                let idx = self.consts.len();
                self.consts.push(c);
                return self.define(out, Val::Const(idx));
            }
            "Identity" | "Dropout" => {
                let v = self.lookup(&ctx, input(0))?;
                return self.define(out, v);
            }
            "Add" if self.is_bias_add(&ctx, np)? => return self.add(&ctx, np, name, out),
            "Add" | "Sub" | "Mul" | "Div" | "Sum" => return self.arith(&ctx, np, name, out),
            "Concat" => return self.concat(&ctx, np, name, out),
            "Unsqueeze" | "Squeeze" => return self.squeeze(&ctx, np, name, out),
            "ConvTranspose" => return self.conv_transpose(&ctx, np, name, out),
            "Transpose" => self.transpose_op(&ctx, np)?,
            "LRN" => lrn(&ctx, np)?,
            "Pad" => self.pad(&ctx, np)?,
            "PRelu" => self.prelu(&ctx, np)?,
            "Sigmoid" | "Tanh" | "LeakyRelu" | "Elu" | "HardSigmoid" | "HardSwish" => {
                Op::Unary(unary(&ctx, np)?)
            }
            "GlobalMaxPool" => Op::GlobalMaxPool,
            "ReduceMean" => return self.reduce_mean(&ctx, np, name, out),
            "Conv" => self.conv(&ctx, np)?,
            "Gemm" => self.gemm(&ctx, np)?,
            "MatMul" => {
                let (bd, b) = self.const_f32(&ctx, input(1))?;
                let [k, m] = bd[..] else {
                    return Err(ctx.unsupported(format!(
                        "the constant operand must be a 2-D matrix, it has shape {bd:?}"
                    )));
                };
                Op::Dense(Dense {
                    out_f: m,
                    in_f: k,
                    weight: transpose(&b, k, m),
                    bias: vec![0.0; m],
                })
            }
            "Relu" => Op::Relu,
            "Clip" => {
                let (min, max) = if self.opset >= 11 {
                    (
                        self.scalar_or(&ctx, input(1), f32::NEG_INFINITY)?,
                        self.scalar_or(&ctx, input(2), f32::INFINITY)?,
                    )
                } else {
                    (
                        attr_f(&ctx, np, "min")?.unwrap_or(f32::NEG_INFINITY),
                        attr_f(&ctx, np, "max")?.unwrap_or(f32::INFINITY),
                    )
                };
                Op::Clip { min, max }
            }
            "MaxPool" => {
                if attr_i(&ctx, np, "storage_order")?.unwrap_or(0) != 0 {
                    return Err(ctx.unsupported("storage_order must be 0"));
                }
                Op::MaxPool(pool(&ctx, np, false)?)
            }
            "AveragePool" => Op::AvgPool(pool(&ctx, np, true)?),
            "GlobalAveragePool" => Op::GlobalAvgPool,
            "BatchNormalization" => self.batch_norm(&ctx, np)?,
            "Flatten" => {
                let x = self.computed(&ctx, input(0))?;
                let rank = self.shapes[x.index()].len();
                let axis = attr_i(&ctx, np, "axis")?.unwrap_or(1);
                if normalize_axis(axis, rank) != Some(1) {
                    return Err(ctx.unsupported(format!(
                        "axis {axis} on a rank-{rank} input; only axis 1 is supported"
                    )));
                }
                Op::Flatten
            }
            "Reshape" => self.reshape(&ctx, np)?,
            "Softmax" | "LogSoftmax" => {
                let x = self.computed(&ctx, input(0))?;
                let rank = self.shapes[x.index()].len();
                let default = if self.opset >= 13 { -1 } else { 1 };
                let axis = attr_i(&ctx, np, "axis")?.unwrap_or(default);
                // Before opset 13 Softmax flattens to 2-D at `axis`; over the last axis both
                // definitions agree. (rank ≥ 1: every IR value has a batch dimension.)
                if normalize_axis(axis, rank) != rank.checked_sub(1) {
                    return Err(ctx.unsupported(format!(
                        "axis {axis} on a rank-{rank} input; only the last axis is supported"
                    )));
                }
                if np.op_type == "Softmax" {
                    Op::Softmax
                } else {
                    Op::LogSoftmax
                }
            }
            _ => return Err(ctx.unsupported("operator not supported")),
        };
        let x = self.computed(&ctx, input(0))?;
        let v = self.push(&ctx, name, op, vec![x], out)?;
        self.define(out, Val::Computed(v))
    }

    fn constant_node(&self, ctx: &Ctx, np: &'a NodeProto) -> Result<Const<'a>, ModelError> {
        let [a] = &np.attribute[..] else {
            return Err(ctx.malformed("a Constant node must have exactly one attribute"));
        };
        Ok(match a.name.as_str() {
            "value" => match &a.t {
                Some(t) => Const::Proto(t),
                None => return Err(ctx.malformed("attribute 'value' holds no tensor")),
            },
            "value_float" => Const::Floats(vec![], vec![expect_f(ctx, a)?]),
            "value_floats" => Const::Floats(vec![a.floats.len()], a.floats.clone()),
            "value_int" => Const::Ints(vec![], vec![expect_i(ctx, a)?]),
            "value_ints" => Const::Ints(vec![a.ints.len()], a.ints.clone()),
            other => return Err(ctx.unsupported(format!("constant attribute '{other}'"))),
        })
    }

    /// Whether this `Add` is a constant bias of the Gemm/MatMul before it, which nothing else
    /// reads: then it folds into that layer's bias (exact; the layer stays one linear layer).
    fn is_bias_add(&self, ctx: &Ctx, np: &NodeProto) -> Result<bool, ModelError> {
        if np.input.len() != 2 {
            return Ok(false);
        }
        let (a, b) = (input_name(np, 0), input_name(np, 1));
        let (x, c) = match (self.lookup(ctx, a)?, self.lookup(ctx, b)?) {
            (Val::Computed(x), Val::Const(_)) => (x, b),
            (Val::Const(_), Val::Computed(x)) => (x, a),
            _ => return Ok(false),
        };
        // x > 0: the model input is never a Dense output.
        let sole_reader = x != INPUT && self.uses_of(self.value_names[x.index()]) == 1;
        let Some(Node {
            op: Op::Dense(d), ..
        }) = x.node().and_then(|n| self.nodes.get(n.index()))
        else {
            return Ok(false);
        };
        if !sole_reader {
            return Ok(false);
        }
        Ok(match self.constant(ctx, c)? {
            (cd, Data::F32(cv)) => matches!(cd[..], [_] | [1, _]) && cv.len() == d.out_f,
            _ => false,
        })
    }

    /// A constant bias folded into the Gemm/MatMul before it ([`Importer::is_bias_add`]).
    fn add(
        &mut self,
        ctx: &Ctx,
        np: &NodeProto,
        _name: String,
        out: &'a str,
    ) -> Result<(), ModelError> {
        let (a, b) = (input_name(np, 0), input_name(np, 1));
        let (x, c) = match self.lookup(ctx, a)? {
            Val::Computed(x) => (x, b),
            Val::Const(_) => (self.computed(ctx, b)?, a),
        };
        let (_, cv) = self.const_f32(ctx, c)?;
        let Some(Node {
            op: Op::Dense(dense),
            ..
        }) = x.node().and_then(|n| self.nodes.get_mut(n.index()))
        else {
            return Err(ctx.malformed("bias Add without its Dense layer"));
        };
        for (b, c) in dense.bias.iter_mut().zip(cv) {
            *b += c;
        }
        self.define(out, Val::Computed(x))
    }
}
