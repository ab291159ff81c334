//! ONNX `ModelProto` → [`Model`].
//!
//! The graph is walked once, in file order (ONNX requires topological order). Each ONNX value
//! name maps either to a computed IR value or to a constant (initializer or `Constant` node);
//! constants are decoded lazily, when an operator needs them as weights, shapes or axes, so an
//! unused initializer of an exotic type does not stop the import. Shapes are inferred node by
//! node because a few conversions (Reshape, ReduceMean, Softmax, Flatten axes) depend on the rank
//! or the dimensions of their input.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path};

use super::proto::{
    attribute_type, data_location, data_type, tensor_shape_proto::dimension, type_proto,
    AttributeProto, ModelProto, NodeProto, TensorProto, ValueInfoProto,
};
use super::LABELS_KEY;
use crate::ir::{Conv, Dense, Model, Node, NodeId, Op, Pool, ValueId, INPUT};
use crate::shape::Budget;
use crate::ModelError;

/// Oldest default-domain opset accepted. The operators we import changed meaning only in ways
/// handled below (Clip bounds as attributes before 11, ReduceMean axes as an attribute before
/// 18, Softmax's 2-D coercion before 13, BatchNormalization's `spatial` before 9).
const MIN_OPSET: i64 = 7;
/// Newest default-domain opset accepted: versions 21 and 22 only widened type constraints of
/// the operators we import.
const MAX_OPSET: i64 = 22;
/// Largest number of elements in one tensor (2^31): bounds allocations driven by file contents.
const MAX_ELEMENTS: usize = 1 << 31;
/// Largest kernel, stride or padding accepted, far above any real network; bounding these keeps
/// shape arithmetic far from overflow.
const MAX_SPATIAL: i64 = 1 << 20;

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
    let input_shape = input_shape(input)?;
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

fn malformed(msg: impl Into<String>) -> ModelError {
    ModelError::Malformed(msg.into())
}

/// The opset version of the default ONNX domain, checked against the supported range.
fn default_opset(mp: &ModelProto, graph_name: &str) -> Result<i64, ModelError> {
    let version = mp
        .opset_import
        .iter()
        .filter(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .max()
        .ok_or_else(|| malformed("no opset_import entry for the default ONNX domain"))?;
    if !(MIN_OPSET..=MAX_OPSET).contains(&version) {
        return Err(ModelError::Unsupported {
            op: "opset_import".into(),
            node: graph_name.into(),
            detail: format!(
                "opset {version} is outside the supported range {MIN_OPSET}..={MAX_OPSET}"
            ),
        });
    }
    Ok(version)
}

/// `[N, C, H, W]` with concrete C, H, W and N symbolic, unknown or 1 → `[C, H, W]`.
fn input_shape(vi: &ValueInfoProto) -> Result<Vec<usize>, ModelError> {
    let name = &vi.name;
    let Some(type_proto::Value::TensorType(tt)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(malformed(format!("input '{name}' has no tensor type")));
    };
    if tt.elem_type != data_type::FLOAT {
        return Err(ModelError::Invalid(format!(
            "input '{name}' has element type {}, only float32 is supported",
            type_name(tt.elem_type)
        )));
    }
    let dims = tt.shape.as_ref().map(|s| &s.dim[..]).unwrap_or(&[]);
    if dims.len() != 4 {
        return Err(ModelError::Invalid(format!(
            "input '{name}' must be a 4-D NCHW image tensor, it has rank {}",
            dims.len()
        )));
    }
    match &dims[0].value {
        None | Some(dimension::Value::DimParam(_)) | Some(dimension::Value::DimValue(1)) => {}
        Some(dimension::Value::DimValue(n)) => {
            return Err(ModelError::Invalid(format!(
                "input '{name}' has batch size {n}; it must be 1 or symbolic"
            )))
        }
    }
    let mut chw = Vec::with_capacity(3);
    for d in &dims[1..] {
        match d.value {
            Some(dimension::Value::DimValue(v)) if v > 0 => chw.push(to_usize(v)?),
            _ => {
                return Err(ModelError::Invalid(format!(
                    "input '{name}' must have concrete positive C, H and W dimensions"
                )))
            }
        }
    }
    element_count(&chw, name)?;
    Ok(chw)
}

/// What an ONNX value name stands for.
#[derive(Clone, Copy, Debug)]
enum Val {
    /// An IR value (the input or a node output).
    Computed(ValueId),
    /// Index into `Importer::consts`.
    Const(usize),
}

/// A constant, decoded on demand.
enum Const<'a> {
    Proto(&'a TensorProto),
    Floats(Vec<usize>, Vec<f32>),
    Ints(Vec<usize>, Vec<i64>),
}

/// Decoded constant data.
enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// The operator and node being converted, for error messages.
struct Ctx<'n> {
    op: &'n str,
    node: &'n str,
}

impl Ctx<'_> {
    fn unsupported(&self, detail: impl Into<String>) -> ModelError {
        ModelError::Unsupported {
            op: self.op.to_string(),
            node: self.node.to_string(),
            detail: detail.into(),
        }
    }
    fn malformed(&self, msg: impl std::fmt::Display) -> ModelError {
        malformed(format!("node '{}' ({}): {msg}", self.node, self.op))
    }
}

struct Importer<'a> {
    opset: i64,
    base_dir: Option<&'a Path>,
    names: HashMap<&'a str, Val>,
    consts: Vec<Const<'a>>,
    nodes: Vec<Node>,
    /// Shape of every IR value with batch size 1.
    shapes: Vec<Vec<usize>>,
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

    fn define(&mut self, name: &'a str, v: Val) -> Result<(), ModelError> {
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

    fn uses_of(&self, name: &'a str) -> usize {
        self.uses.get(self.root_of(name)).copied().unwrap_or(0)
    }

    fn lookup(&self, ctx: &Ctx, name: &str) -> Result<Val, ModelError> {
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
    fn computed(&self, ctx: &Ctx, name: &str) -> Result<ValueId, ModelError> {
        match self.lookup(ctx, name)? {
            Val::Computed(v) => Ok(v),
            Val::Const(_) => Err(ctx.unsupported(format!(
                "input '{name}' is a constant; computing on constants only is not supported"
            ))),
        }
    }

    fn constant(&self, ctx: &Ctx, name: &str) -> Result<(Vec<usize>, Data), ModelError> {
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
    fn const_f32(&self, ctx: &Ctx, name: &str) -> Result<(Vec<usize>, Vec<f32>), ModelError> {
        match self.constant(ctx, name)? {
            (d, Data::F32(v)) => Ok((d, v)),
            (_, Data::I64(_)) => Err(ctx.malformed(format!(
                "constant '{name}' must be a float tensor, it holds int64"
            ))),
        }
    }

    /// A constant int64 tensor (shapes, axes).
    fn const_i64(&self, ctx: &Ctx, name: &str) -> Result<(Vec<usize>, Vec<i64>), ModelError> {
        match self.constant(ctx, name)? {
            (d, Data::I64(v)) => Ok((d, v)),
            (_, Data::F32(_)) => Err(ctx.malformed(format!(
                "constant '{name}' must be an int64 tensor, it holds floats"
            ))),
        }
    }

    /// A constant float scalar (a tensor of one element), or `default` when the input is absent.
    fn scalar_or(&self, ctx: &Ctx, name: &str, default: f32) -> Result<f32, ModelError> {
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
    fn push(
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
            "Add" => return self.add(&ctx, np, name, out),
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
            "Softmax" => {
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
                Op::Softmax
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

    fn conv(&self, ctx: &Ctx, np: &NodeProto) -> Result<Op, ModelError> {
        let (wd, weight) = self.const_f32(ctx, input_name(np, 1))?;
        let [out_c, in_pg, kh, kw] = wd[..] else {
            return Err(ctx.unsupported(format!(
                "only 2-D convolutions are supported (weight shape {wd:?})"
            )));
        };
        let group = attr_i(ctx, np, "group")?.unwrap_or(1);
        if group < 1 || group > MAX_ELEMENTS as i64 {
            return Err(ctx.malformed(format!("invalid group {group}")));
        }
        let groups = to_usize(group)?;
        check_dilations(ctx, np)?;
        if let Some(ks) = attr_ints(ctx, np, "kernel_shape")? {
            if ks != [kh as i64, kw as i64] {
                return Err(ctx.malformed(format!(
                    "kernel_shape {ks:?} does not match the weight shape {wd:?}"
                )));
            }
        }
        let stride = strides(ctx, np)?;
        let pads = pads(ctx, np)?;
        let bias = match input_name(np, 2) {
            "" => vec![0.0; out_c],
            b => {
                let (bd, bias) = self.const_f32(ctx, b)?;
                if bias.len() != out_c || bd.len() != 1 {
                    return Err(ctx.malformed(format!("bias has shape {bd:?}, expected [{out_c}]")));
                }
                bias
            }
        };
        let in_c = in_pg
            .checked_mul(groups)
            .ok_or_else(|| ctx.malformed("channel count overflows"))?;
        Ok(Op::Conv(Conv {
            out_c,
            in_c,
            kh,
            kw,
            stride,
            pads,
            groups,
            weight,
            bias,
        }))
    }

    fn gemm(&self, ctx: &Ctx, np: &NodeProto) -> Result<Op, ModelError> {
        if attr_i(ctx, np, "transA")?.unwrap_or(0) != 0 {
            return Err(ctx.unsupported("transA must be 0"));
        }
        let trans_b = attr_i(ctx, np, "transB")?.unwrap_or(0);
        for name in ["alpha", "beta"] {
            let v = attr_f(ctx, np, name)?.unwrap_or(1.0);
            if v != 1.0 {
                return Err(ctx.unsupported(format!("{name} = {v}; only 1 is supported")));
            }
        }
        let (bd, b) = self.const_f32(ctx, input_name(np, 1))?;
        let [r, c] = bd[..] else {
            return Err(ctx.malformed(format!("B must be a 2-D matrix, it has shape {bd:?}")));
        };
        let (out_f, in_f, weight) = match trans_b {
            1 => (r, c, b),
            0 => (c, r, transpose(&b, r, c)),
            t => return Err(ctx.malformed(format!("transB = {t}"))),
        };
        let bias = match input_name(np, 2) {
            "" => vec![0.0; out_f],
            name => {
                let (cd, cv) = self.const_f32(ctx, name)?;
                // C broadcasts to [M, out_f]: accept a per-output row or a single value.
                let row_shape = cd.iter().rev().skip(1).all(|&d| d == 1) && cd.len() <= 2;
                match cv.len() {
                    n if n == out_f && row_shape => cv,
                    1 => vec![cv[0]; out_f],
                    _ => {
                        return Err(ctx.unsupported(format!(
                            "C of shape {cd:?}; only a bias of {out_f} values is supported"
                        )))
                    }
                }
            }
        };
        Ok(Op::Dense(Dense {
            out_f,
            in_f,
            weight,
            bias,
        }))
    }

    fn batch_norm(&self, ctx: &Ctx, np: &NodeProto) -> Result<Op, ModelError> {
        if attr_i(ctx, np, "training_mode")?.unwrap_or(0) != 0 {
            return Err(ctx.unsupported("training_mode must be 0 (inference)"));
        }
        if attr_i(ctx, np, "spatial")?.unwrap_or(1) != 1 {
            return Err(ctx.unsupported("spatial must be 1"));
        }
        let x = self.computed(ctx, input_name(np, 0))?;
        let c = self.shapes[x.index()]
            .get(1)
            .copied()
            .ok_or_else(|| ctx.unsupported("the input has no channel dimension"))?;
        let eps = f64::from(attr_f(ctx, np, "epsilon")?.unwrap_or(1e-5));
        let mut params = Vec::with_capacity(4);
        for (k, what) in [(1, "scale"), (2, "B"), (3, "mean"), (4, "var")] {
            let (d, v) = self.const_f32(ctx, input_name(np, k))?;
            if v.len() != c || d.len() != 1 {
                return Err(ctx.malformed(format!(
                    "{what} has shape {d:?}, expected [{c}] for the input's channels"
                )));
            }
            params.push(v);
        }
        let (gamma, beta, mean, var) = (&params[0], &params[1], &params[2], &params[3]);
        let mut scale = Vec::with_capacity(c);
        let mut shift = Vec::with_capacity(c);
        for i in 0..c {
            // f64 so the folded parameters are the correctly rounded f32 of the exact map.
            let s = f64::from(gamma[i]) / (f64::from(var[i]) + eps).sqrt();
            scale.push(s as f32);
            shift.push((f64::from(beta[i]) - f64::from(mean[i]) * s) as f32);
        }
        Ok(Op::BatchNorm { scale, shift })
    }

    fn reshape(&self, ctx: &Ctx, np: &NodeProto) -> Result<Op, ModelError> {
        let x = self.computed(ctx, input_name(np, 0))?;
        let (sd, target) = self.const_i64(ctx, input_name(np, 1))?;
        if sd.len() != 1 {
            return Err(ctx.malformed(format!("the shape must be 1-D, it has shape {sd:?}")));
        }
        let allow_zero = attr_i(ctx, np, "allowzero")?.unwrap_or(0) != 0;
        let x_shape = &self.shapes[x.index()];
        let total: usize = x_shape.iter().product();
        let mut out = Vec::with_capacity(target.len());
        let mut infer = None;
        for (i, &d) in target.iter().enumerate() {
            match d {
                0 if allow_zero => {
                    return Err(
                        ctx.unsupported("zero-sized dimensions (allowzero) are not supported")
                    )
                }
                0 => out.push(*x_shape.get(i).ok_or_else(|| {
                    ctx.malformed(format!("dimension {i} copies a dimension the input lacks"))
                })?),
                -1 if infer.is_none() => {
                    infer = Some(i);
                    out.push(1);
                }
                d if (1..=MAX_ELEMENTS as i64).contains(&d) => out.push(to_usize(d)?),
                d => return Err(ctx.malformed(format!("invalid target dimension {d}"))),
            }
        }
        let known = element_count(&out, "reshape target")?;
        if let Some(i) = infer {
            if total.checked_rem(known) != Some(0) {
                return Err(ModelError::Shape(format!(
                    "node '{}' (Reshape): cannot reshape {x_shape:?} to {target:?}",
                    ctx.node
                )));
            }
            out[i] = total / known;
        } else if known != total {
            return Err(ModelError::Shape(format!(
                "node '{}' (Reshape): cannot reshape {x_shape:?} to {target:?}",
                ctx.node
            )));
        }
        // The IR keeps the batch dimension: the first target entry must copy it (0), infer it
        // (-1 with everything else fixed), or be the literal 1 of a batch-1 export.
        let keeps_batch = out.len() >= 2 && (-1..=1).contains(&target[0]) && out[0] == 1;
        if !keeps_batch {
            return Err(ctx.unsupported(format!(
                "target shape {target:?} does not keep the batch dimension first"
            )));
        }
        Ok(if out.len() == 2 {
            Op::Flatten
        } else {
            Op::Reshape(out[1..].to_vec())
        })
    }

    /// `Add` of two computed values, or a constant bias folded into the Gemm/MatMul before it.
    fn add(
        &mut self,
        ctx: &Ctx,
        np: &NodeProto,
        name: String,
        out: &'a str,
    ) -> Result<(), ModelError> {
        let (a, b) = (input_name(np, 0), input_name(np, 1));
        match (self.lookup(ctx, a)?, self.lookup(ctx, b)?) {
            (Val::Computed(x), Val::Computed(y)) => {
                let v = self.push(ctx, name, Op::Add, vec![x, y], out)?;
                self.define(out, Val::Computed(v))
            }
            (Val::Computed(x), Val::Const(_)) | (Val::Const(_), Val::Computed(x)) => {
                let c = if matches!(self.lookup(ctx, a)?, Val::Const(_)) {
                    a
                } else {
                    b
                };
                let (cd, cv) = self.const_f32(ctx, c)?;
                // Folding is exact only if nothing else reads the Dense output (x > 0: the
                // model input is never a Dense output).
                let sole_reader = x != INPUT && self.uses_of(self.value_names[x.index()]) == 1;
                let dense = match x.node().and_then(|n| self.nodes.get_mut(n.index())) {
                    Some(Node {
                        op: Op::Dense(d), ..
                    }) if sole_reader => d,
                    _ => {
                        return Err(ctx.unsupported(
                            "a constant operand is only supported as the bias of a Gemm or \
                             MatMul whose output feeds nothing else",
                        ))
                    }
                };
                let row_shape = matches!(cd[..], [_] | [1, _]);
                if !row_shape || cv.len() != dense.out_f {
                    return Err(ctx
                        .unsupported(format!("bias of shape {cd:?} for {} outputs", dense.out_f)));
                }
                for (b, c) in dense.bias.iter_mut().zip(cv) {
                    *b += c;
                }
                self.define(out, Val::Computed(x))
            }
            (Val::Const(_), Val::Const(_)) => {
                Err(ctx
                    .unsupported("both operands are constants; constant folding is not supported"))
            }
        }
    }

    /// `ReduceMean` over the spatial axes: global average pooling (+ Flatten without keepdims).
    fn reduce_mean(
        &mut self,
        ctx: &Ctx,
        np: &NodeProto,
        name: String,
        out: &'a str,
    ) -> Result<(), ModelError> {
        let x = self.computed(ctx, input_name(np, 0))?;
        let rank = self.shapes[x.index()].len();
        if rank != 4 {
            return Err(ctx.unsupported(format!("input of rank {rank}; only NCHW is supported")));
        }
        let axes = if self.opset >= 18 {
            match input_name(np, 1) {
                "" => None,
                a => Some(self.const_i64(ctx, a)?.1),
            }
        } else {
            attr_ints(ctx, np, "axes")?
        };
        let mut axes: Vec<Option<usize>> = axes
            .unwrap_or_default()
            .iter()
            .map(|&a| normalize_axis(a, rank))
            .collect();
        axes.sort();
        if axes != [Some(2), Some(3)] {
            return Err(ctx.unsupported("only a mean over the spatial axes [2, 3] is supported"));
        }
        let keep = attr_i(ctx, np, "keepdims")?.unwrap_or(1) != 0;
        let v = if keep {
            self.push(ctx, name, Op::GlobalAvgPool, vec![x], out)?
        } else {
            let flatten_name = format!("{name}/flatten");
            let g = self.push(ctx, name, Op::GlobalAvgPool, vec![x], "")?;
            self.push(ctx, flatten_name, Op::Flatten, vec![g], out)?
        };
        self.define(out, Val::Computed(v))
    }
}

fn is_default_domain(n: &NodeProto) -> bool {
    n.domain.is_empty() || n.domain == "ai.onnx"
}

fn input_name(np: &NodeProto, k: usize) -> &str {
    np.input.get(k).map(String::as_str).unwrap_or("")
}

/// `axis` in `[-rank, rank)` → `[0, rank)`.
fn normalize_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}

/// A row-major `rows × cols` matrix, transposed.
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; m.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = m[r * cols + c];
        }
    }
    t
}

fn to_usize(v: i64) -> Result<usize, ModelError> {
    usize::try_from(v).map_err(|_| malformed(format!("{v} is not a valid size")))
}

/// Product of `dims`, rejecting overflow and tensors above [`MAX_ELEMENTS`].
fn element_count(dims: &[usize], what: &str) -> Result<usize, ModelError> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| {
            malformed(format!(
                "{what}: shape {dims:?} has more than {MAX_ELEMENTS} elements"
            ))
        })
}

// ---- attributes ----

fn find_attr<'n>(np: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    np.attribute.iter().find(|a| a.name == name)
}

/// Checks the attribute's type discriminator (UNDEFINED is tolerated for pre-IR-2 files).
fn check_type(ctx: &Ctx, a: &AttributeProto, want: i32, what: &str) -> Result<(), ModelError> {
    if a.r#type == want || a.r#type == attribute_type::UNDEFINED {
        Ok(())
    } else {
        Err(ctx.malformed(format!(
            "attribute '{}' must be {what} (type {want}), it has type {}",
            a.name, a.r#type
        )))
    }
}

fn expect_i(ctx: &Ctx, a: &AttributeProto) -> Result<i64, ModelError> {
    check_type(ctx, a, attribute_type::INT, "an int")?;
    Ok(a.i.unwrap_or(0))
}

fn expect_f(ctx: &Ctx, a: &AttributeProto) -> Result<f32, ModelError> {
    check_type(ctx, a, attribute_type::FLOAT, "a float")?;
    Ok(a.f.unwrap_or(0.0))
}

fn attr_i(ctx: &Ctx, np: &NodeProto, name: &str) -> Result<Option<i64>, ModelError> {
    find_attr(np, name).map(|a| expect_i(ctx, a)).transpose()
}

fn attr_f(ctx: &Ctx, np: &NodeProto, name: &str) -> Result<Option<f32>, ModelError> {
    find_attr(np, name).map(|a| expect_f(ctx, a)).transpose()
}

fn attr_ints(ctx: &Ctx, np: &NodeProto, name: &str) -> Result<Option<Vec<i64>>, ModelError> {
    find_attr(np, name)
        .map(|a| {
            check_type(ctx, a, attribute_type::INTS, "a list of ints")?;
            Ok(a.ints.clone())
        })
        .transpose()
}

fn attr_s(ctx: &Ctx, np: &NodeProto, name: &str) -> Result<Option<String>, ModelError> {
    find_attr(np, name)
        .map(|a| {
            check_type(ctx, a, attribute_type::STRING, "a string")?;
            Ok(String::from_utf8_lossy(a.s.as_deref().unwrap_or_default()).into_owned())
        })
        .transpose()
}

/// Two spatial values, each in `[lo, MAX_SPATIAL]`.
fn spatial<const N: usize>(
    ctx: &Ctx,
    name: &str,
    v: &[i64],
    lo: i64,
) -> Result<[usize; N], ModelError> {
    let arr: [i64; N] = v.try_into().map_err(|_| {
        ctx.unsupported(format!(
            "{name} {v:?}: only 2-D (NCHW) operators are supported"
        ))
    })?;
    let mut out = [0usize; N];
    for (o, &x) in out.iter_mut().zip(&arr) {
        if !(lo..=MAX_SPATIAL).contains(&x) {
            return Err(ctx.malformed(format!("{name} {v:?} out of range")));
        }
        *o = to_usize(x)?;
    }
    Ok(out)
}

fn strides(ctx: &Ctx, np: &NodeProto) -> Result<[usize; 2], ModelError> {
    match attr_ints(ctx, np, "strides")? {
        Some(s) => spatial(ctx, "strides", &s, 1),
        None => Ok([1, 1]),
    }
}

/// Padding `[top, left, bottom, right]`, honouring `auto_pad` (NOTSET or VALID only). ONNX
/// orders pads `[x1_begin, x2_begin, x1_end, x2_end]`, which for NCHW is the same order.
fn pads(ctx: &Ctx, np: &NodeProto) -> Result<[usize; 4], ModelError> {
    match attr_s(ctx, np, "auto_pad")?.as_deref() {
        None | Some("NOTSET") | Some("") => {}
        Some("VALID") => return Ok([0; 4]),
        Some(other) => {
            return Err(ctx.unsupported(format!(
                "auto_pad {other}; only NOTSET (explicit pads) and VALID are supported"
            )))
        }
    }
    match attr_ints(ctx, np, "pads")? {
        Some(p) => spatial(ctx, "pads", &p, 0),
        None => Ok([0; 4]),
    }
}

fn check_dilations(ctx: &Ctx, np: &NodeProto) -> Result<(), ModelError> {
    if let Some(d) = attr_ints(ctx, np, "dilations")? {
        if d.iter().any(|&x| x != 1) {
            return Err(ctx.unsupported(format!("dilations {d:?}; only 1 is supported")));
        }
    }
    Ok(())
}

fn pool(ctx: &Ctx, np: &NodeProto, avg: bool) -> Result<Pool, ModelError> {
    let kernel = match attr_ints(ctx, np, "kernel_shape")? {
        Some(k) => spatial(ctx, "kernel_shape", &k, 1)?,
        None => return Err(ctx.malformed("kernel_shape is required")),
    };
    if attr_i(ctx, np, "ceil_mode")?.unwrap_or(0) != 0 {
        return Err(ctx.unsupported("ceil_mode must be 0"));
    }
    check_dilations(ctx, np)?;
    let count_include_pad = avg && attr_i(ctx, np, "count_include_pad")?.unwrap_or(0) != 0;
    Ok(Pool {
        kernel,
        stride: strides(ctx, np)?,
        pads: pads(ctx, np)?,
        count_include_pad,
    })
}

// ---- tensors ----

fn type_name(t: i32) -> String {
    let name = match t {
        data_type::UNDEFINED => "UNDEFINED",
        data_type::FLOAT => "FLOAT",
        data_type::UINT8 => "UINT8",
        data_type::INT8 => "INT8",
        data_type::INT32 => "INT32",
        data_type::INT64 => "INT64",
        data_type::STRING => "STRING",
        data_type::BOOL => "BOOL",
        data_type::FLOAT16 => "FLOAT16",
        data_type::DOUBLE => "DOUBLE",
        data_type::BFLOAT16 => "BFLOAT16",
        _ => return format!("data type {t}"),
    };
    name.to_string()
}

/// Decodes a FLOAT, DOUBLE (→ f32) or INT64 tensor from raw, typed or external storage,
/// checking that the stored data has exactly the length the dims call for.
fn decode_tensor(
    t: &TensorProto,
    base_dir: Option<&Path>,
) -> Result<(Vec<usize>, Data), ModelError> {
    let name = &t.name;
    let dims = t
        .dims
        .iter()
        .map(|&d| {
            usize::try_from(d)
                .map_err(|_| malformed(format!("tensor '{name}' has negative dimension {d}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let n = element_count(&dims, &format!("tensor '{name}'"))?;
    let elem_size = match t.data_type {
        data_type::FLOAT => 4,
        data_type::DOUBLE | data_type::INT64 => 8,
        other => {
            return Err(malformed(format!(
                "tensor '{name}' has type {}; only FLOAT (DOUBLE) weights and INT64 shapes/axes \
                 are supported",
                type_name(other)
            )))
        }
    };
    // Cannot overflow: n ≤ 2^31 and elem_size ≤ 8.
    let nbytes = n * elem_size;
    let external;
    let raw: Option<&[u8]> = if t.data_location == data_location::EXTERNAL {
        external = read_external(t, base_dir, nbytes)?;
        Some(&external)
    } else if !t.raw_data.is_empty() {
        Some(&t.raw_data)
    } else {
        None
    };
    let mismatch = |have: usize| {
        malformed(format!(
            "tensor '{name}' of shape {dims:?} should hold {n} values, the file holds {have}"
        ))
    };
    let data = match raw {
        Some(raw) => {
            if raw.len() != nbytes {
                return Err(malformed(format!(
                    "tensor '{name}' of shape {dims:?} needs {nbytes} bytes of data, the file \
                     holds {}",
                    raw.len()
                )));
            }
            match t.data_type {
                data_type::FLOAT => Data::F32(
                    raw.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                ),
                data_type::DOUBLE => Data::F32(
                    raw.chunks_exact(8)
                        .map(|c| f64::from_le_bytes(le8(c)) as f32)
                        .collect(),
                ),
                _ => Data::I64(
                    raw.chunks_exact(8)
                        .map(|c| i64::from_le_bytes(le8(c)))
                        .collect(),
                ),
            }
        }
        None => match t.data_type {
            data_type::FLOAT if t.float_data.len() == n => Data::F32(t.float_data.clone()),
            data_type::FLOAT => return Err(mismatch(t.float_data.len())),
            data_type::DOUBLE if t.double_data.len() == n => {
                Data::F32(t.double_data.iter().map(|&x| x as f32).collect())
            }
            data_type::DOUBLE => return Err(mismatch(t.double_data.len())),
            _ if t.int64_data.len() == n => Data::I64(t.int64_data.clone()),
            _ => return Err(mismatch(t.int64_data.len())),
        },
    };
    Ok((dims, data))
}

/// An 8-byte chunk as an array (callers pass `chunks_exact(8)` items).
fn le8(c: &[u8]) -> [u8; 8] {
    let mut a = [0; 8];
    a.copy_from_slice(c);
    a
}

/// Reads the `nbytes` bytes of an external tensor. The location must be a relative path that
/// stays inside `base_dir` (no absolute paths, no `..`, no symlink out): model files come from
/// untrusted sources and must not make us read arbitrary files.
fn read_external(
    t: &TensorProto,
    base_dir: Option<&Path>,
    nbytes: usize,
) -> Result<Vec<u8>, ModelError> {
    let name = &t.name;
    let bad = |msg: String| malformed(format!("tensor '{name}': {msg}"));
    let base = base_dir.ok_or_else(|| {
        bad(
            "its data is stored in an external file, which needs the model's directory (load \
             the model from a file, or pass a base directory)"
                .into(),
        )
    })?;
    let mut location = None;
    let mut offset = 0u64;
    let mut length = None;
    for e in &t.external_data {
        let num = || {
            e.value.parse::<u64>().map_err(|_| {
                bad(format!(
                    "external data {} '{}' is not a number",
                    e.key, e.value
                ))
            })
        };
        match e.key.as_str() {
            "location" => location = Some(e.value.as_str()),
            "offset" => offset = num()?,
            "length" => length = Some(num()?),
            _ => {} // "checksum" and future keys do not affect where the data is.
        }
    }
    let location = location
        .filter(|l| !l.is_empty())
        .ok_or_else(|| bad("external data has no location".into()))?;
    let rel = Path::new(location);
    let escapes = rel.is_absolute()
        || location.starts_with(['/', '\\'])
        || location.split(['/', '\\']).any(|s| s == "..")
        || location.contains(':')
        || rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if escapes {
        return Err(bad(format!(
            "external data location '{location}' must be a relative path inside the model's \
             directory"
        )));
    }
    let path = base.join(rel);
    let io = |source| ModelError::Io {
        path: path.display().to_string(),
        source,
    };
    // Symlinks could still point outside the directory: compare the resolved paths.
    let real_base = base.canonicalize().map_err(|source| ModelError::Io {
        path: base.display().to_string(),
        source,
    })?;
    let real = path.canonicalize().map_err(io)?;
    if !real.starts_with(&real_base) {
        return Err(bad(format!(
            "external data location '{location}' resolves outside the model's directory"
        )));
    }
    let mut f = File::open(&real).map_err(io)?;
    let file_len = f.metadata().map_err(io)?.len();
    let available = file_len.checked_sub(offset).ok_or_else(|| {
        bad(format!(
            "external data offset {offset} is past the end of '{location}' ({file_len} bytes)"
        ))
    })?;
    let length = length.unwrap_or(available);
    if length > available {
        return Err(bad(format!(
            "external data offset {offset} + length {length} is past the end of '{location}' \
             ({file_len} bytes)"
        )));
    }
    if length != nbytes as u64 {
        return Err(bad(format!(
            "external data length {length} does not match the {nbytes} bytes its shape needs"
        )));
    }
    let mut buf = vec![0; nbytes];
    f.seek(SeekFrom::Start(offset)).map_err(io)?;
    f.read_exact(&mut buf).map_err(io)?;
    Ok(buf)
}
