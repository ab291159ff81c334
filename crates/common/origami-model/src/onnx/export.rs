//! [`Model`] → ONNX `ModelProto`.
//!
//! Every operator is written in the form the importer maps back to the identical IR op, so that
//! import(export(m)) == m. Batch norm is written as an already-folded affine map (mean 0, var 1,
//! epsilon 0), which the importer turns back into exactly the same scale and shift.

use super::proto::{
    attribute_type, data_type, tensor_shape_proto, type_proto, AttributeProto, GraphProto,
    ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use super::LABELS_KEY;
use super::ORIGAMI_DOMAIN;
use crate::ir::{Model, Op, PadMode, Pool, Unary, ValueId, INPUT};

/// ONNX IR version written (what PyTorch's exporter writes too).
const IR_VERSION: i64 = 10;
/// Default-domain opset written.
const OPSET: i64 = 18;
/// Name of the graph input.
const INPUT_NAME: &str = "input";
/// Name of the graph output.
const OUTPUT_NAME: &str = "output";

pub(super) fn export(model: &Model) -> ModelProto {
    // Shapes are only used to annotate the output; an invalid model is still written.
    let shapes = model.validate().ok();
    let value_name = |v: ValueId| -> String {
        if v == INPUT {
            INPUT_NAME.to_string()
        } else if v == model.output {
            OUTPUT_NAME.to_string()
        } else {
            format!("v{v}")
        }
    };

    let rank_of = |v: ValueId| shapes.as_ref().and_then(|s| s.get(v.index())).map(Vec::len);
    let mut uses_origami_domain = false;
    let mut nodes = Vec::with_capacity(model.nodes.len());
    let mut inits = Vec::new();
    for n in &model.nodes {
        let mut inputs: Vec<String> = n.inputs.iter().map(|&v| value_name(v)).collect();
        // Initializer names derive from the (unique) output value, not the node name, which need
        // not be unique.
        let prefix = format!("v{}", n.output);
        let mut init = |suffix: &str, t: TensorProto| -> String {
            let name = format!("{prefix}.{suffix}");
            inits.push(TensorProto {
                name: name.clone(),
                ..t
            });
            name
        };
        let mut attrs = Vec::new();
        let mut domain = "";
        let op_type = match &n.op {
            Op::Conv(c) => {
                // `checked_div` keeps an invalid model (groups 0) from panicking; it will fail to
                // import anyway.
                let in_pg = c.in_c.checked_div(c.groups).unwrap_or(0);
                inputs.push(init(
                    "weight",
                    f32_tensor(&[c.out_c, in_pg, c.kh, c.kw], &c.weight),
                ));
                inputs.push(init("bias", f32_tensor(&[c.bias.len()], &c.bias)));
                attrs.push(ints_attr("kernel_shape", &[c.kh, c.kw]));
                attrs.push(ints_attr("strides", &c.stride));
                attrs.push(ints_attr("pads", &c.pads));
                attrs.push(ints_attr("dilations", &[1, 1]));
                attrs.push(int_attr("group", c.groups as i64));
                "Conv"
            }
            Op::Dense(d) => {
                inputs.push(init("weight", f32_tensor(&[d.out_f, d.in_f], &d.weight)));
                inputs.push(init("bias", f32_tensor(&[d.bias.len()], &d.bias)));
                attrs.push(int_attr("transB", 1));
                "Gemm"
            }
            Op::Relu => "Relu",
            Op::Clip { min, max } => {
                inputs.push(init("min", f32_tensor(&[], &[*min])));
                inputs.push(init("max", f32_tensor(&[], &[*max])));
                "Clip"
            }
            Op::MaxPool(p) => {
                pool_attrs(&mut attrs, p);
                "MaxPool"
            }
            Op::AvgPool(p) => {
                pool_attrs(&mut attrs, p);
                attrs.push(int_attr("count_include_pad", p.count_include_pad as i64));
                "AveragePool"
            }
            Op::GlobalAvgPool => "GlobalAveragePool",
            Op::BatchNorm { scale, shift } => {
                let c = scale.len();
                inputs.push(init("scale", f32_tensor(&[c], scale)));
                inputs.push(init("bias", f32_tensor(&[shift.len()], shift)));
                inputs.push(init("mean", f32_tensor(&[c], &vec![0.0; c])));
                inputs.push(init("var", f32_tensor(&[c], &vec![1.0; c])));
                attrs.push(float_attr("epsilon", 0.0));
                "BatchNormalization"
            }
            Op::Flatten => {
                attrs.push(int_attr("axis", 1));
                "Flatten"
            }
            Op::Reshape(dims) => {
                // 0 copies the batch dimension, so the file works for any batch size.
                let shape: Vec<i64> = std::iter::once(0)
                    .chain(dims.iter().map(|&d| d as i64))
                    .collect();
                inputs.push(init("shape", i64_tensor(&shape)));
                "Reshape"
            }
            Op::Add => "Add",
            Op::Softmax => {
                attrs.push(int_attr("axis", -1));
                "Softmax"
            }
            Op::LogSoftmax => {
                attrs.push(int_attr("axis", -1));
                "LogSoftmax"
            }
            Op::Unary(u) => {
                match *u {
                    Unary::LeakyRelu(a) | Unary::Elu(a) => attrs.push(float_attr("alpha", a)),
                    Unary::HardSigmoid { alpha, beta } => {
                        attrs.push(float_attr("alpha", alpha));
                        attrs.push(float_attr("beta", beta));
                    }
                    Unary::Sigmoid | Unary::Tanh | Unary::HardSwish => {}
                }
                u.kind()
            }
            Op::PRelu { slope } => {
                // Per channel: [C, 1, ...] aligned on axis 1 of the input.
                let rank = rank_of(n.inputs[0]).unwrap_or(4);
                let mut dims = vec![slope.len()];
                if slope.len() > 1 {
                    dims.extend(std::iter::repeat_n(1, rank.saturating_sub(2)));
                }
                inputs.push(init("slope", f32_tensor(&dims, slope)));
                "PRelu"
            }
            Op::Binary(b) => b.kind(),
            Op::BinaryConst { op, c, c_first } => {
                let name = init("c", f32_tensor(&c.shape, &c.data));
                if *c_first {
                    inputs.insert(0, name);
                } else {
                    inputs.push(name);
                }
                op.kind()
            }
            Op::Concat { axis } => {
                attrs.push(int_attr("axis", *axis as i64));
                "Concat"
            }
            Op::Transpose(perm) => {
                attrs.push(ints_attr("perm", perm));
                "Transpose"
            }
            Op::Lrn(l) => {
                attrs.push(int_attr("size", l.size as i64));
                attrs.push(float_attr("alpha", l.alpha));
                attrs.push(float_attr("beta", l.beta));
                attrs.push(float_attr("bias", l.bias));
                "LRN"
            }
            Op::Pad { pads, mode } => {
                let p = |v: usize| v as i64;
                let all = [0, 0, p(pads[0]), p(pads[1]), 0, 0, p(pads[2]), p(pads[3])];
                inputs.push(init("pads", i64_tensor(&all)));
                let (m, v) = match mode {
                    PadMode::Constant(v) => ("constant", *v),
                    PadMode::Reflect => ("reflect", 0.0),
                    PadMode::Edge => ("edge", 0.0),
                };
                inputs.push(init("value", f32_tensor(&[], &[v])));
                attrs.push(string_attr("mode", m));
                "Pad"
            }
            Op::Dilate { stride, pads } => {
                // No standard operator: written in Origami's own domain (what the importer
                // makes of a ConvTranspose, re-imported as is).
                domain = ORIGAMI_DOMAIN;
                uses_origami_domain = true;
                attrs.push(ints_attr("strides", stride));
                attrs.push(ints_attr("pads", pads));
                "Dilate"
            }
            Op::GlobalMaxPool => "GlobalMaxPool",
        };
        nodes.push(NodeProto {
            input: inputs,
            output: vec![value_name(n.output)],
            name: n.name.clone(),
            op_type: op_type.to_string(),
            domain: domain.to_string(),
            attribute: attrs,
            ..Default::default()
        });
    }

    let batch = || tensor_shape_proto::Dimension {
        value: Some(tensor_shape_proto::dimension::Value::DimParam("N".into())),
        ..Default::default()
    };
    let mut input_dims = vec![batch()];
    input_dims.extend(model.input_shape.iter().map(|&d| dim(d)));
    let output_dims = shapes
        .as_ref()
        .and_then(|s| s.get(model.output.index()))
        .map(|s| {
            std::iter::once(batch())
                .chain(s.iter().skip(1).map(|&d| dim(d)))
                .collect()
        });

    let graph = GraphProto {
        node: nodes,
        name: model.name.clone(),
        initializer: inits,
        input: vec![value_info(INPUT_NAME, Some(input_dims))],
        output: vec![value_info(OUTPUT_NAME, output_dims)],
        ..Default::default()
    };
    let metadata_props = match &model.labels {
        Some(labels) => vec![StringStringEntryProto {
            key: LABELS_KEY.into(),
            value: labels.join("\n"),
        }],
        None => Vec::new(),
    };
    ModelProto {
        ir_version: IR_VERSION,
        opset_import: std::iter::once(OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        })
        .chain(uses_origami_domain.then(|| OperatorSetIdProto {
            domain: ORIGAMI_DOMAIN.into(),
            version: 1,
        }))
        .collect(),
        producer_name: "origami".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        metadata_props,
        ..Default::default()
    }
}

fn pool_attrs(attrs: &mut Vec<AttributeProto>, p: &Pool) {
    attrs.push(ints_attr("kernel_shape", &p.kernel));
    attrs.push(ints_attr("strides", &p.stride));
    attrs.push(ints_attr("pads", &p.pads));
}

fn dim(d: usize) -> tensor_shape_proto::Dimension {
    tensor_shape_proto::Dimension {
        value: Some(tensor_shape_proto::dimension::Value::DimValue(d as i64)),
        ..Default::default()
    }
}

fn value_info(name: &str, dims: Option<Vec<tensor_shape_proto::Dimension>>) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: data_type::FLOAT,
                shape: dims.map(|dim| TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn f32_tensor(dims: &[usize], data: &[f32]) -> TensorProto {
    TensorProto {
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: data_type::FLOAT,
        raw_data: data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn i64_tensor(data: &[i64]) -> TensorProto {
    TensorProto {
        dims: vec![data.len() as i64],
        data_type: data_type::INT64,
        raw_data: data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn int_attr(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INT,
        i: Some(v),
        ..Default::default()
    }
}

fn float_attr(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::FLOAT,
        f: Some(v),
        ..Default::default()
    }
}

fn string_attr(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::STRING,
        s: Some(v.as_bytes().to_vec()),
        ..Default::default()
    }
}

fn ints_attr(name: &str, v: &[usize]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INTS,
        ints: v.iter().map(|&x| x as i64).collect(),
        ..Default::default()
    }
}
