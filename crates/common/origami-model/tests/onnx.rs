//! ONNX import/export: exact round trips of hand-built IR models, files written by the official
//! `onnx` Python package (tests/fixtures, see make_fixtures.py), a foreign numerical oracle, the
//! operator mapping rules on hand-crafted graphs, and robustness against corrupt input.

use std::path::{Path, PathBuf};

use origami_model::onnx::{self, proto::*};
use origami_model::{BinOp, Conv, Dense, Model, ModelError, Node, Op, Pool, ValueId};
use prost::Message;

mod common;
use common::{a_ints, dim_value, op, value_info};

// ---------------------------------------------------------------------------------------------
// Helpers

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A fresh, unique scratch directory (removed by the tests that create it).
fn scratch_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let d = std::env::temp_dir().join(format!("origami-onnx-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Deterministic pseudo-random weights in [-1, 1) (no RNG dev-dependency needed).
fn weights(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn node(name: &str, op: Op, inputs: &[usize], output: usize) -> Node {
    Node {
        name: name.into(),
        op,
        inputs: inputs.iter().map(|&v| ValueId::new(v)).collect(),
        output: ValueId::new(output),
    }
}

fn conv(
    in_c: usize,
    out_c: usize,
    k: [usize; 2],
    stride: [usize; 2],
    pads: [usize; 4],
    groups: usize,
    seed: u64,
) -> Op {
    let mut c = Conv {
        out_c,
        in_c,
        kh: k[0],
        kw: k[1],
        stride,
        pads,
        groups,
        weight: vec![],
        bias: weights(out_c, seed + 1000),
    };
    c.weight = weights(out_c * c.k(), seed);
    Op::Conv(c)
}

fn dense(in_f: usize, out_f: usize, seed: u64) -> Op {
    Op::Dense(Dense {
        out_f,
        in_f,
        weight: weights(out_f * in_f, seed),
        bias: weights(out_f, seed + 1000),
    })
}

fn pool(kernel: usize, stride: usize, pads: [usize; 4], count_include_pad: bool) -> Pool {
    Pool {
        kernel: [kernel, kernel],
        stride: [stride, stride],
        pads,
        count_include_pad,
    }
}

/// A network using every IR operator: plain, strided, depthwise and grouped convolutions with
/// asymmetric padding, batch norm, clip, both pools (average pooling counting padding both
/// ways), a residual Add, a reshape, two heads joined by Add, dense layers and softmax.
fn every_op_model() -> Model {
    let bn = Op::BatchNorm {
        scale: weights(8, 7),
        shift: weights(8, 8),
    };
    let nodes = vec![
        node(
            "conv0",
            conv(3, 8, [3, 3], [1, 1], [1, 1, 1, 1], 1, 1),
            &[0],
            1,
        ), // 8x12x12
        node("bn0", bn, &[1], 2),
        node("relu0", Op::Relu, &[2], 3),
        node(
            "dw",
            conv(8, 8, [3, 3], [2, 2], [1, 0, 1, 2], 8, 2),
            &[3],
            4,
        ), // 8x6x6
        node("relu6", Op::Clip { min: 0.0, max: 6.0 }, &[4], 5),
        node("grouped", conv(8, 8, [1, 1], [1, 1], [0; 4], 2, 3), &[5], 6),
        node("residual", Op::Add, &[6, 4], 7),
        node("maxpool", Op::MaxPool(pool(2, 2, [0; 4], false)), &[7], 8), // 8x3x3
        node("avg_incl", Op::AvgPool(pool(3, 1, [1; 4], true)), &[8], 9),
        node(
            "avg_excl",
            Op::AvgPool(pool(2, 1, [0, 0, 1, 1], false)),
            &[9],
            10,
        ),
        node("reshape", Op::Reshape(vec![4, 18]), &[10], 11),
        node("flatten", Op::Flatten, &[11], 12), // 72
        node("fc_a", dense(72, 5, 4), &[12], 13),
        node("gap", Op::GlobalAvgPool, &[10], 14), // 8x1x1
        node("gap_flat", Op::Flatten, &[14], 15),
        node("fc_b", dense(8, 5, 5), &[15], 16),
        node("heads", Op::Add, &[13, 16], 17),
        node(
            "clip_lo",
            Op::Clip {
                min: -1.5,
                max: f32::INFINITY,
            },
            &[17],
            18,
        ),
        node("softmax", Op::Softmax, &[18], 19),
    ];
    let m = Model {
        name: "every_op".into(),
        input_shape: vec![3, 12, 12],
        nodes,
        output: ValueId::new(19),
        labels: Some(
            ["cat", "dog", "bird", "fish", "ünïcode label"]
                .map(String::from)
                .to_vec(),
        ),
    };
    m.validate().expect("the hand-built model is valid");
    m
}

fn unsupported(r: Result<Model, ModelError>) -> (String, String, String) {
    match r {
        Err(ModelError::Unsupported { op, node, detail }) => (op, node, detail),
        other => panic!("expected ModelError::Unsupported, got {other:?}"),
    }
}

fn malformed(r: Result<Model, ModelError>) -> String {
    match r {
        Err(ModelError::Malformed(m)) => m,
        other => panic!("expected ModelError::Malformed, got {other:?}"),
    }
}

// ---- raw ONNX graph builders for the operator-mapping tests ----

fn f32_init(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: data_type::FLOAT,
        float_data: data.to_vec(),
        ..Default::default()
    }
}

fn i64_init(name: &str, data: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![data.len() as i64],
        data_type: data_type::INT64,
        raw_data: data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn a_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INT,
        i: Some(v),
        ..Default::default()
    }
}

fn a_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::FLOAT,
        f: Some(v),
        ..Default::default()
    }
}

fn a_str(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::STRING,
        s: Some(v.as_bytes().to_vec()),
        ..Default::default()
    }
}

/// A model proto with input "x" of shape [N, c, h, w] and output "y".
fn graph(opset: i64, chw: [i64; 3], nodes: Vec<NodeProto>, inits: Vec<TensorProto>) -> ModelProto {
    let mut dims = vec![tensor_shape_proto::Dimension {
        value: Some(tensor_shape_proto::dimension::Value::DimParam(
            "batch".into(),
        )),
        ..Default::default()
    }];
    dims.extend(chw.iter().map(|&d| dim_value(d)));
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        graph: Some(GraphProto {
            name: "g".into(),
            node: nodes,
            initializer: inits,
            input: vec![value_info("x", dims)],
            output: vec![value_info("y", vec![])],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn import(m: &ModelProto) -> Result<Model, ModelError> {
    onnx::from_bytes(&m.encode_to_vec(), None)
}

// ---------------------------------------------------------------------------------------------
// Round trips of our own exports

#[test]
fn every_op_model_round_trips_exactly() {
    let m = every_op_model();
    let bytes = onnx::to_bytes(&m);
    let back = onnx::from_bytes(&bytes, None).unwrap();
    assert_eq!(back, m);
    assert_eq!(back.hash(), m.hash());
    // Export is deterministic.
    assert_eq!(onnx::to_bytes(&back), bytes);
}

#[test]
fn export_writes_ir10_opset18_with_symbolic_batch() {
    let m = every_op_model();
    let p = ModelProto::decode(&onnx::to_bytes(&m)[..]).unwrap();
    assert_eq!(p.ir_version, 10);
    assert_eq!(p.producer_name, "origami");
    assert_eq!(p.opset_import.len(), 1);
    assert_eq!(
        (p.opset_import[0].domain.as_str(), p.opset_import[0].version),
        ("", 18)
    );
    let g = p.graph.unwrap();
    assert_eq!(g.name, "every_op");
    assert_eq!(g.input.len(), 1);
    assert_eq!(g.input[0].name, "input");
    assert_eq!(g.output[0].name, "output");
    let Some(type_proto::Value::TensorType(t)) = g.input[0].r#type.as_ref().unwrap().value.clone()
    else {
        panic!("input is not a tensor")
    };
    let dims: Vec<_> = t.shape.unwrap().dim.into_iter().map(|d| d.value).collect();
    use tensor_shape_proto::dimension::Value::*;
    assert_eq!(
        dims,
        vec![
            Some(DimParam("N".into())),
            Some(DimValue(3)),
            Some(DimValue(12)),
            Some(DimValue(12))
        ]
    );
    let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
    assert_eq!(
        ops,
        [
            "Conv",
            "BatchNormalization",
            "Relu",
            "Conv",
            "Clip",
            "Conv",
            "Add",
            "MaxPool",
            "AveragePool",
            "AveragePool",
            "Reshape",
            "Flatten",
            "Gemm",
            "GlobalAveragePool",
            "Flatten",
            "Gemm",
            "Add",
            "Clip",
            "Softmax"
        ]
    );
    // Weights are raw little-endian f32.
    let w = g
        .initializer
        .iter()
        .find(|t| t.name == "v1.weight")
        .unwrap();
    assert_eq!(w.dims, [8, 3, 3, 3]);
    assert_eq!(w.raw_data.len(), 8 * 27 * 4);
    assert!(w.float_data.is_empty());
    let labels = p
        .metadata_props
        .iter()
        .find(|e| e.key == "origami.labels")
        .unwrap();
    assert_eq!(labels.value, "cat\ndog\nbird\nfish\nünïcode label");
}

#[test]
fn models_without_labels_and_small_models_round_trip() {
    let m = Model {
        name: String::new(),
        input_shape: vec![1, 1, 1],
        nodes: vec![node("fc", dense(1, 2, 9), &[0], 1)],
        output: ValueId::new(1),
        labels: None,
    };
    // A Dense on a [N, 1, 1, 1] input is invalid (Dense wants [N, in]); put a Flatten first.
    let m = Model {
        nodes: vec![
            node("flat", Op::Flatten, &[0], 1),
            node("fc", dense(1, 2, 9), &[1], 2),
        ],
        output: ValueId::new(2),
        ..m
    };
    let back = onnx::from_bytes(&onnx::to_bytes(&m), None).unwrap();
    assert_eq!(back, m);
    let mut labelled = m.clone();
    labelled.labels = Some(vec![]);
    assert_eq!(
        onnx::from_bytes(&onnx::to_bytes(&labelled), None).unwrap(),
        labelled
    );
}

#[test]
fn save_then_load_round_trips_and_leaves_no_temp_file() {
    let dir = scratch_dir("save");
    let path = dir.join("every_op.onnx");
    let m = every_op_model();
    onnx::save(&m, &path).unwrap();
    // Overwriting an existing file works too.
    onnx::save(&m, &path).unwrap();
    assert_eq!(onnx::load(&path).unwrap(), m);
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["every_op.onnx"]);
    // Saving into a missing directory is an I/O error naming the path.
    let err = onnx::save(&m, &dir.join("missing/x.onnx")).unwrap_err();
    assert!(matches!(err, ModelError::Io { .. }), "{err:?}");
    assert!(matches!(
        onnx::load(&dir.join("nope.onnx")),
        Err(ModelError::Io { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Files written by the official onnx package (tests/fixtures/make_fixtures.py)

#[test]
fn imports_residual_cnn_written_by_onnx_helper() {
    let m = onnx::load(&fixture("residual.onnx")).unwrap();
    assert_eq!(m.name, "residual");
    assert_eq!(m.input_shape, [3, 16, 16]);
    assert_eq!(m.labels, None);
    let ops: Vec<(&str, &str)> = m
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.op.kind()))
        .collect();
    // Constants, Identity and the Reshape's constant shape leave no node of their own.
    assert_eq!(
        ops,
        [
            ("conv1", "Conv"),
            ("bn1", "BatchNormalization"),
            ("relu1", "Relu"),
            ("pool1", "MaxPool"),
            ("conv2", "Conv"),
            ("bn2", "BatchNormalization"),
            ("relu6", "Clip"),
            ("residual", "Add"),
            ("relu2", "Relu"),
            ("gap", "GlobalAveragePool"),
            ("reshape", "Reshape"),
            ("flatten", "Flatten"),
            ("fc", "Gemm"),
            ("softmax", "Softmax"),
        ]
    );
    assert_eq!(
        m.nodes[7].inputs,
        [ValueId::new(4), ValueId::new(7)],
        "residual adds the pool and clip outputs"
    );
    assert_eq!(m.nodes[10].op, Op::Reshape(vec![2, 4]));
    assert_eq!(m.nodes[6].op, Op::Clip { min: 0.0, max: 6.0 });
    let Op::Conv(c2) = &m.nodes[4].op else {
        panic!()
    };
    assert_eq!((c2.groups, c2.in_c, c2.out_c, c2.pads), (2, 8, 8, [1; 4]));
    let shapes = m.validate().unwrap();
    assert_eq!(shapes[m.output.index()], [1, 10]);
}

#[test]
fn external_data_copy_imports_to_the_same_model() {
    let inline = onnx::load(&fixture("residual.onnx")).unwrap();
    let ext = onnx::load(&fixture("residual_ext.onnx")).unwrap();
    assert_eq!(ext, inline);
    // Through from_bytes, external data needs the base directory.
    let bytes = std::fs::read(fixture("residual_ext.onnx")).unwrap();
    let msg = malformed(onnx::from_bytes(&bytes, None));
    assert!(msg.contains("external"), "{msg}");
    let with_dir = onnx::from_bytes(&bytes, Some(&fixture(""))).unwrap();
    assert_eq!(with_dir, inline);
}

#[test]
fn foreign_model_survives_our_export() {
    let m = onnx::load(&fixture("residual.onnx")).unwrap();
    assert_eq!(onnx::from_bytes(&onnx::to_bytes(&m), None).unwrap(), m);
}

#[test]
fn residual_matches_onnx_reference_evaluator() {
    let model = onnx::load(&fixture("residual.onnx")).unwrap();
    let input = origami_model::npy::read_npy(&fixture("residual_input.npy")).unwrap();
    let want = origami_model::npy::read_npy(&fixture("residual_output.npy")).unwrap();
    assert_eq!(input.shape, [1, 3, 16, 16]);
    let got = origami_model::exec::run(&model, &input).unwrap();
    assert_eq!(got.shape, want.shape);
    let diff = got.max_abs_diff(&want);
    assert!(
        diff <= 1e-4,
        "max |origami - ReferenceEvaluator| = {diff}\n got  {:?}\n want {:?}",
        got.data,
        want.data
    );
}

#[test]
fn unsupported_operator_error_names_op_and_node() {
    let (op, node, detail) = unsupported(onnx::load(&fixture("unsupported_resize.onnx")));
    assert_eq!(
        (op.as_str(), node.as_str()),
        ("Resize", "upsample"),
        "{detail}"
    );
    let msg = onnx::load(&fixture("unsupported_resize.onnx"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("Resize") && msg.contains("upsample"), "{msg}");
}

#[test]
fn dilated_convolution_imports_as_a_zero_expanded_kernel() {
    // dilations [2, 2] on a 3x3 kernel: the 5x5 kernel with the taps at even positions.
    let m = onnx::load(&fixture("dilated_conv.onnx")).unwrap();
    let Op::Conv(c) = &m.nodes[0].op else {
        panic!("{:?}", m.nodes[0].op)
    };
    assert_eq!((c.kh, c.kw), (5, 5));
    for (i, w) in c.weight.iter().enumerate() {
        let (y, x) = ((i % 25) / 5, i % 5);
        if y % 2 == 1 || x % 2 == 1 {
            assert_eq!(*w, 0.0, "tap {i}");
        }
    }
}

#[test]
fn truncated_files_are_errors_not_panics() {
    for name in ["residual.onnx", "residual_ext.onnx"] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        let dir = fixture("");
        let mut cuts: Vec<usize> = (0..bytes.len()).step_by(5).collect();
        cuts.extend(bytes.len().saturating_sub(40)..bytes.len());
        for len in cuts {
            let r = std::panic::catch_unwind(|| onnx::from_bytes(&bytes[..len], Some(&dir)));
            match r {
                Err(_) => panic!("{name} truncated to {len} bytes panicked"),
                Ok(Ok(_)) => panic!("{name} truncated to {len} bytes imported successfully"),
                Ok(Err(_)) => {}
            }
        }
    }
    // A protobuf that ends inside a field is reported as malformed.
    let bytes = std::fs::read(fixture("residual.onnx")).unwrap();
    let msg = malformed(onnx::from_bytes(&bytes[..bytes.len() / 2], None));
    assert!(msg.contains("protobuf"), "{msg}");
}

#[test]
fn flipped_bytes_never_panic() {
    let mut errors = 0;
    let mut total = 0;
    for name in ["residual.onnx", "residual_ext.onnx"] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        let dir = fixture("");
        for i in 0..bytes.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= mask;
                let r = std::panic::catch_unwind(|| onnx::from_bytes(&b, Some(&dir)));
                total += 1;
                match r {
                    Err(_) => panic!("{name} with byte {i} ^ {mask:#x} panicked"),
                    // Flipping a weight byte legitimately gives another valid model.
                    Ok(Ok(m)) => {
                        m.validate().unwrap();
                    }
                    Ok(Err(_)) => errors += 1,
                }
            }
        }
    }
    // Most flips hit structure (tags, lengths, names, dims), not weights.
    assert!(errors * 4 > total, "{errors} errors out of {total} flips");
}

// ---------------------------------------------------------------------------------------------
// Operator mapping on hand-crafted graphs

#[test]
fn matmul_then_constant_add_folds_into_dense_bias() {
    let w = weights(6, 1); // [K=3, M=2]
    let m = import(&graph(
        17,
        [3, 1, 1],
        vec![
            op("Flatten", "flat", &["x"], &["f"], vec![]),
            op("MatMul", "mm", &["f", "w"], &["h"], vec![]),
            op("Add", "bias", &["b", "h"], &["y"], vec![]),
        ],
        vec![
            f32_init("w", &[3, 2], &w),
            f32_init("b", &[2], &[0.5, -0.25]),
        ],
    ))
    .unwrap();
    assert_eq!(m.nodes.len(), 2);
    assert_eq!(m.nodes[1].name, "mm");
    assert_eq!(
        m.nodes[1].op,
        Op::Dense(Dense {
            out_f: 2,
            in_f: 3,
            // [out, in] = transpose of [K, M].
            weight: vec![w[0], w[2], w[4], w[1], w[3], w[5]],
            bias: vec![0.5, -0.25],
        })
    );
    assert_eq!(m.output, ValueId::new(2));
}

#[test]
fn constant_add_is_not_folded_when_the_dense_output_is_shared() {
    let r = import(&graph(
        17,
        [3, 1, 1],
        vec![
            op("Flatten", "flat", &["x"], &["f"], vec![]),
            op("MatMul", "mm", &["f", "w"], &["h"], vec![]),
            op("Identity", "id", &["h"], &["h2"], vec![]),
            op("Add", "bias", &["h2", "b"], &["hb"], vec![]),
            op("Add", "sum", &["hb", "h"], &["y"], vec![]),
        ],
        vec![
            f32_init("w", &[3, 2], &weights(6, 1)),
            f32_init("b", &[2], &[1.0, 2.0]),
        ],
    ));
    // Not folded (the sum reads the Dense output too): a broadcast Add of the constant.
    let m = r.unwrap();
    let Op::Dense(d) = &m.nodes[1].op else {
        panic!("{:?}", m.nodes[1].op)
    };
    assert_eq!(d.bias, [0.0, 0.0]);
    assert_eq!(m.nodes[2].name, "bias");
    let Op::BinaryConst { op, c, c_first } = &m.nodes[2].op else {
        panic!("{:?}", m.nodes[2].op)
    };
    assert_eq!(
        (*op, c.shape.as_slice(), *c_first),
        (BinOp::Add, &[1, 2][..], false)
    );
    assert_eq!(c.data, [1.0, 2.0]);
}

#[test]
fn gemm_variants() {
    let b = weights(6, 3); // [K=3, N=2] without transB
    let nodes = |attrs| {
        vec![
            op("Flatten", "flat", &["x"], &["f"], vec![]),
            op("Gemm", "", &["f", "b", "c"], &["y"], attrs),
        ]
    };
    let inits = vec![
        f32_init("b", &[3, 2], &b),
        f32_init("c", &[1, 2], &[1.0, 2.0]),
    ];
    let m = import(&graph(13, [3, 1, 1], nodes(vec![]), inits.clone())).unwrap();
    // An unnamed node is named after its output.
    assert_eq!(m.nodes[1].name, "y");
    let Op::Dense(d) = &m.nodes[1].op else {
        panic!()
    };
    assert_eq!(d.weight, [b[0], b[2], b[4], b[1], b[3], b[5]]);
    assert_eq!(d.bias, [1.0, 2.0]);

    // alpha scales the weights, beta the bias.
    let m = import(&graph(
        13,
        [3, 1, 1],
        nodes(vec![a_float("alpha", 2.0), a_float("beta", 0.5)]),
        inits.clone(),
    ))
    .unwrap();
    let Op::Dense(d) = &m.nodes[1].op else {
        panic!()
    };
    let want: Vec<f32> = [b[0], b[2], b[4], b[1], b[3], b[5]]
        .iter()
        .map(|v| v * 2.0)
        .collect();
    assert_eq!(d.weight, want);
    assert_eq!(d.bias, [0.5, 1.0]);
    let (_, _, detail) = unsupported(import(&graph(
        13,
        [3, 1, 1],
        nodes(vec![a_int("transA", 1)]),
        inits,
    )));
    assert!(detail.contains("transA"), "{detail}");
}

#[test]
fn reduce_mean_maps_to_global_average_pool() {
    // Opset 18: axes as an input; keepdims = 0 adds a Flatten with a derived name.
    let m = import(&graph(
        18,
        [4, 5, 5],
        vec![op(
            "ReduceMean",
            "mean",
            &["x", "axes"],
            &["y"],
            vec![a_int("keepdims", 0)],
        )],
        vec![i64_init("axes", &[-1, 2])],
    ))
    .unwrap();
    let kinds: Vec<_> = m.nodes.iter().map(|n| (n.name.as_str(), &n.op)).collect();
    assert_eq!(
        kinds,
        [("mean", &Op::GlobalAvgPool), ("mean/flatten", &Op::Flatten)]
    );
    assert_eq!(m.validate().unwrap()[m.output.index()], [1, 4]);

    // Opset 13: axes as an attribute, keepdims defaults to 1.
    let m = import(&graph(
        13,
        [4, 5, 5],
        vec![op(
            "ReduceMean",
            "mean",
            &["x"],
            &["y"],
            vec![a_ints("axes", &[2, 3])],
        )],
        vec![],
    ))
    .unwrap();
    assert_eq!(m.nodes.len(), 1);
    assert_eq!(m.nodes[0].op, Op::GlobalAvgPool);

    // Any other reduction is unsupported.
    let (op_, node, _) = unsupported(import(&graph(
        13,
        [4, 5, 5],
        vec![op(
            "ReduceMean",
            "mean",
            &["x"],
            &["y"],
            vec![a_ints("axes", &[1])],
        )],
        vec![],
    )));
    assert_eq!((op_.as_str(), node.as_str()), ("ReduceMean", "mean"));
}

#[test]
fn clip_bounds_from_inputs_attributes_and_defaults() {
    // Opset 18: min from a Constant node (value_float), max absent → +inf.
    let m = import(&graph(
        18,
        [1, 2, 2],
        vec![
            op(
                "Constant",
                "lo",
                &[],
                &["lo"],
                vec![a_float("value_float", -2.0)],
            ),
            op("Clip", "clip", &["x", "lo"], &["y"], vec![]),
        ],
        vec![],
    ))
    .unwrap();
    assert_eq!(
        m.nodes[0].op,
        Op::Clip {
            min: -2.0,
            max: f32::INFINITY
        }
    );
    // Empty names mean absent, too.
    let m = import(&graph(
        18,
        [1, 2, 2],
        vec![op("Clip", "clip", &["x", "", "hi"], &["y"], vec![])],
        vec![f32_init("hi", &[], &[6.0])],
    ))
    .unwrap();
    assert_eq!(
        m.nodes[0].op,
        Op::Clip {
            min: f32::NEG_INFINITY,
            max: 6.0
        }
    );
    // Opset 10: attributes.
    let m = import(&graph(
        10,
        [1, 2, 2],
        vec![op(
            "Clip",
            "clip",
            &["x"],
            &["y"],
            vec![a_float("min", 0.0), a_float("max", 6.0)],
        )],
        vec![],
    ))
    .unwrap();
    assert_eq!(m.nodes[0].op, Op::Clip { min: 0.0, max: 6.0 });
}

#[test]
fn batch_norm_is_folded_to_scale_and_shift() {
    let (gamma, beta, mean, var) = ([2.0f32, 0.5], [1.0f32, -1.0], [0.5f32, 2.0], [3.0f32, 0.25]);
    let eps = 1e-3f32;
    let m = import(&graph(
        15,
        [2, 1, 1],
        vec![op(
            "BatchNormalization",
            "bn",
            &["x", "g", "b", "m", "v"],
            &["y"],
            vec![a_float("epsilon", eps)],
        )],
        vec![
            f32_init("g", &[2], &gamma),
            f32_init("b", &[2], &beta),
            f32_init("m", &[2], &mean),
            f32_init("v", &[2], &var),
        ],
    ))
    .unwrap();
    let Op::BatchNorm { scale, shift } = &m.nodes[0].op else {
        panic!()
    };
    for c in 0..2 {
        let s = gamma[c] as f64 / (var[c] as f64 + eps as f64).sqrt();
        assert_eq!(scale[c], s as f32);
        assert_eq!(shift[c], (beta[c] as f64 - mean[c] as f64 * s) as f32);
    }
}

#[test]
fn reshape_rules() {
    let reshape = |shape: &[i64]| {
        import(&graph(
            14,
            [2, 3, 4],
            vec![op("Reshape", "rs", &["x", "s"], &["y"], vec![])],
            vec![i64_init("s", shape)],
        ))
    };
    // Copying the batch and inferring the rest flattens.
    assert_eq!(reshape(&[0, -1]).unwrap().nodes[0].op, Op::Flatten);
    assert_eq!(reshape(&[1, 24]).unwrap().nodes[0].op, Op::Flatten);
    assert_eq!(
        reshape(&[0, 0, -1]).unwrap().nodes[0].op,
        Op::Reshape(vec![2, 12])
    );
    assert_eq!(
        reshape(&[-1, 6, 2, 2]).unwrap().nodes[0].op,
        Op::Reshape(vec![6, 2, 2])
    );
    // Dropping or folding the batch dimension is unsupported.
    let (op_, node, _) = unsupported(reshape(&[-1]));
    assert_eq!((op_.as_str(), node.as_str()), ("Reshape", "rs"));
    unsupported(reshape(&[-1, 12]));
    // Impossible targets are shape errors, bad ones malformed.
    assert!(matches!(reshape(&[0, 5, -1]), Err(ModelError::Shape(_))));
    assert!(matches!(reshape(&[0, 7]), Err(ModelError::Shape(_))));
    malformed(reshape(&[0, -1, -1]));
    malformed(reshape(&[0, -2]));
}

#[test]
fn softmax_axis_must_be_last() {
    let softmax = |opset, attrs| {
        import(&graph(
            opset,
            [3, 2, 2],
            vec![
                op("Flatten", "flat", &["x"], &["f"], vec![]),
                op("Softmax", "sm", &["f"], &["y"], attrs),
            ],
            vec![],
        ))
    };
    assert_eq!(softmax(18, vec![]).unwrap().nodes[1].op, Op::Softmax);
    assert_eq!(softmax(11, vec![]).unwrap().nodes[1].op, Op::Softmax); // default axis 1 of 2
    assert_eq!(
        softmax(18, vec![a_int("axis", 1)]).unwrap().nodes[1].op,
        Op::Softmax
    );
    unsupported(softmax(18, vec![a_int("axis", 0)]));
    // On a 4-D tensor, the old default axis 1 is not the last axis.
    let r = import(&graph(
        11,
        [3, 2, 2],
        vec![op("Softmax", "sm", &["x"], &["y"], vec![])],
        vec![],
    ));
    unsupported(r);
}

#[test]
fn conv_and_pool_attribute_rules() {
    let w = f32_init("w", &[2, 1, 3, 3], &weights(18, 1));
    let conv = |attrs: Vec<AttributeProto>| {
        import(&graph(
            18,
            [1, 6, 6],
            vec![op("Conv", "c", &["x", "w"], &["y"], attrs)],
            vec![w.clone()],
        ))
    };
    let m = conv(vec![
        a_ints("pads", &[1, 2, 3, 4]),
        a_ints("strides", &[2, 1]),
    ])
    .unwrap();
    let Op::Conv(c) = &m.nodes[0].op else {
        panic!()
    };
    assert_eq!(
        (c.pads, c.stride, c.bias.clone()),
        ([1, 2, 3, 4], [2, 1], vec![0.0; 2])
    );
    let m = conv(vec![
        a_str("auto_pad", "VALID"),
        a_ints("pads", &[1, 1, 1, 1]),
    ])
    .unwrap();
    let Op::Conv(c) = &m.nodes[0].op else {
        panic!()
    };
    assert_eq!(c.pads, [0; 4]);
    let (_, _, d) = unsupported(conv(vec![a_str("auto_pad", "SAME_UPPER")]));
    assert!(d.contains("SAME_UPPER"), "{d}");
    malformed(conv(vec![a_ints("kernel_shape", &[5, 5])]));
    malformed(conv(vec![a_ints("pads", &[-1, 0, 0, 0])]));
    malformed(conv(vec![a_ints("strides", &[0, 1])]));
    malformed(conv(vec![a_ints("pads", &[1 << 40, 0, 0, 0])]));
    malformed(conv(vec![a_int("group", 0)]));
    // group 2 needs 2 input channels; the input has 1.
    assert!(matches!(
        conv(vec![a_int("group", 2)]),
        Err(ModelError::Shape(_))
    ));

    let pool = |op_type: &str, attrs: Vec<AttributeProto>| {
        import(&graph(
            18,
            [1, 6, 6],
            vec![op(op_type, "p", &["x"], &["y"], attrs)],
            vec![],
        ))
    };
    let m = pool(
        "AveragePool",
        vec![
            a_ints("kernel_shape", &[3, 2]),
            a_ints("pads", &[1, 0, 1, 0]),
            a_int("count_include_pad", 1),
        ],
    )
    .unwrap();
    assert_eq!(
        m.nodes[0].op,
        Op::AvgPool(Pool {
            kernel: [3, 2],
            stride: [1, 1],
            pads: [1, 0, 1, 0],
            count_include_pad: true
        })
    );
    let k = || a_ints("kernel_shape", &[2, 2]);
    let (_, _, d) = unsupported(pool("MaxPool", vec![k(), a_int("ceil_mode", 1)]));
    assert!(d.contains("ceil_mode"), "{d}");
    unsupported(pool("MaxPool", vec![k(), a_ints("dilations", &[2, 2])]));
    unsupported(pool("MaxPool", vec![k(), a_int("storage_order", 1)]));
    malformed(pool("MaxPool", vec![]));
    unsupported(pool("MaxPool", vec![a_ints("kernel_shape", &[2])]));
}

#[test]
fn pass_through_and_multi_output_rules() {
    // Dropout with an unused mask output and Identity are aliases.
    let m = import(&graph(
        18,
        [1, 2, 2],
        vec![
            op("Relu", "r", &["x"], &["a"], vec![]),
            op("Dropout", "d", &["a"], &["b", "mask"], vec![]),
            op("Identity", "i", &["b"], &["y"], vec![]),
        ],
        vec![],
    ))
    .unwrap();
    assert_eq!(m.nodes.len(), 1);
    assert_eq!(m.output, ValueId::new(1));
    // A used second output is unsupported.
    let (op_, node, _) = unsupported(import(&graph(
        18,
        [1, 2, 2],
        vec![
            op(
                "MaxPool",
                "p",
                &["x"],
                &["a", "idx"],
                vec![a_ints("kernel_shape", &[1, 1])],
            ),
            op("Add", "s", &["a", "idx"], &["y"], vec![]),
        ],
        vec![],
    )));
    assert_eq!((op_.as_str(), node.as_str()), ("MaxPool", "p"));
}

#[test]
fn structural_errors() {
    let relu = || vec![op("Relu", "r", &["x"], &["y"], vec![])];
    // Unknown value (not topologically sorted).
    let msg = malformed(import(&graph(
        18,
        [1, 2, 2],
        vec![
            op("Relu", "r2", &["a"], &["y"], vec![]),
            op("Relu", "r1", &["x"], &["a"], vec![]),
        ],
        vec![],
    )));
    assert!(msg.contains("'a'") && msg.contains("r2"), "{msg}");
    // A value defined twice.
    malformed(import(&graph(
        18,
        [1, 2, 2],
        vec![
            op("Relu", "r1", &["x"], &["y"], vec![]),
            op("Relu", "r2", &["x"], &["y"], vec![]),
        ],
        vec![],
    )));
    // Unsupported opsets, operators whose pre-7 meaning is not handled, and custom domains.
    let (op_, _, _) = unsupported(import(&graph(23, [1, 2, 2], relu(), vec![])));
    assert_eq!(op_, "opset_import");
    import(&graph(5, [1, 2, 2], relu(), vec![])).unwrap();
    let (op_, node, detail) = unsupported(import(&graph(
        5,
        [1, 2, 2],
        vec![op("Upsample", "up", &["x"], &["y"], vec![])],
        vec![],
    )));
    assert_eq!((op_.as_str(), node.as_str()), ("Upsample", "up"));
    assert!(detail.contains("opset 5"), "{detail}");
    let mut custom = graph(18, [1, 2, 2], relu(), vec![]);
    custom.graph.as_mut().unwrap().node[0].domain = "com.microsoft".into();
    let (op_, node, _) = unsupported(import(&custom));
    assert_eq!((op_.as_str(), node.as_str()), ("Relu", "r"));
    // No graph, no opset.
    malformed(import(&ModelProto::default()));
    let mut no_opset = graph(18, [1, 2, 2], relu(), vec![]);
    no_opset.opset_import.clear();
    malformed(import(&no_opset));
    // Two inputs; a non-4-D input; a symbolic spatial dimension; a batch of 2.
    let mut two = graph(18, [1, 2, 2], relu(), vec![]);
    let g = two.graph.as_mut().unwrap();
    g.input.push(value_info("z", vec![dim_value(1); 4]));
    assert!(matches!(import(&two), Err(ModelError::Invalid(_))));
    let mut rank3 = graph(18, [1, 2, 2], relu(), vec![]);
    rank3.graph.as_mut().unwrap().input[0] = value_info("x", vec![dim_value(1); 3]);
    assert!(matches!(import(&rank3), Err(ModelError::Invalid(_))));
    // A fixed batch of 2 imports (the IR runs any batch); a negative one does not.
    let mut batch2 = graph(18, [1, 2, 2], relu(), vec![]);
    batch2.graph.as_mut().unwrap().input[0] = value_info("x", vec![dim_value(2); 4]);
    assert_eq!(import(&batch2).unwrap().input_shape, [2, 2, 2]);
    let mut neg = graph(18, [1, 2, 2], relu(), vec![]);
    neg.graph.as_mut().unwrap().input[0] = value_info(
        "x",
        vec![dim_value(-2), dim_value(1), dim_value(2), dim_value(2)],
    );
    assert!(matches!(import(&neg), Err(ModelError::Invalid(_))));
    // Initializers listed as graph inputs (IR < 4 style) are not model inputs.
    let mut listed = graph(
        18,
        [1, 2, 2],
        vec![op("Clip", "c", &["x", "lo"], &["y"], vec![])],
        vec![f32_init("lo", &[], &[0.0])],
    );
    listed
        .graph
        .as_mut()
        .unwrap()
        .input
        .push(value_info("lo", vec![]));
    import(&listed).unwrap();
    // Computing on constants only is unsupported.
    unsupported(import(&graph(
        18,
        [1, 2, 2],
        vec![
            op("Relu", "rc", &["lo"], &["z"], vec![]),
            op("Add", "s", &["x", "z"], &["y"], vec![]),
        ],
        vec![f32_init("lo", &[1, 1, 2, 2], &[0.0; 4])],
    )));
}

#[test]
fn corrupt_tensors_are_malformed() {
    let conv = |w: TensorProto| {
        import(&graph(
            18,
            [1, 2, 2],
            vec![op("Conv", "c", &["x", "w"], &["y"], vec![])],
            vec![w],
        ))
    };
    // Data length does not match the dims (typed and raw storage).
    let msg = malformed(conv(f32_init("w", &[1, 1, 2, 2], &[1.0; 3])));
    assert!(msg.contains("'w'"), "{msg}");
    let mut raw = f32_init("w", &[1, 1, 2, 2], &[]);
    raw.raw_data = vec![0; 15];
    malformed(conv(raw));
    // Dims whose product overflows or is absurdly large, negative dims.
    malformed(conv(f32_init("w", &[1 << 40, 1 << 40, 1, 1], &[1.0])));
    malformed(conv(f32_init("w", &[1 << 20, 1 << 12, 1, 1], &[1.0])));
    malformed(conv(f32_init("w", &[1, -1, 2, 2], &[1.0])));
    // Weights must be float (double is converted).
    let mut int32 = f32_init("w", &[1, 1, 1, 1], &[]);
    int32.data_type = data_type::INT32;
    int32.int32_data = vec![1];
    let msg = malformed(conv(int32));
    assert!(msg.contains("INT32"), "{msg}");
    let mut double = f32_init("w", &[1, 1, 1, 1], &[]);
    double.data_type = data_type::DOUBLE;
    double.double_data = vec![0.5];
    let Op::Conv(c) = &conv(double).unwrap().nodes[0].op else {
        panic!()
    };
    assert_eq!(c.weight, [0.5]);
    // Shapes must be int64.
    let r = import(&graph(
        18,
        [1, 2, 2],
        vec![op("Reshape", "rs", &["x", "s"], &["y"], vec![])],
        vec![f32_init("s", &[2], &[0.0, -1.0])],
    ));
    malformed(r);
}

#[test]
fn external_data_paths_and_ranges_are_checked() {
    let dir = scratch_dir("ext");
    let data: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    std::fs::write(dir.join("w.bin"), &data).unwrap();
    let model = |entries: &[(&str, &str)]| {
        let w = TensorProto {
            name: "w".into(),
            dims: vec![1, 1, 2, 2],
            data_type: data_type::FLOAT,
            data_location: data_location::EXTERNAL,
            external_data: entries
                .iter()
                .map(|(k, v)| StringStringEntryProto {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            ..Default::default()
        };
        graph(
            18,
            [1, 2, 2],
            vec![op("Conv", "c", &["x", "w"], &["y"], vec![])],
            vec![w],
        )
        .encode_to_vec()
    };
    let load = |entries: &[(&str, &str)]| onnx::from_bytes(&model(entries), Some(&dir));

    let m = load(&[("location", "w.bin")]).unwrap();
    let Op::Conv(c) = &m.nodes[0].op else {
        panic!()
    };
    assert_eq!(c.weight, [1.0, 2.0, 3.0, 4.0]);
    load(&[("location", "./w.bin"), ("offset", "0"), ("length", "16")]).unwrap();

    for bad in [
        "../w.bin",
        "sub/../../w.bin",
        "/etc/passwd",
        "..\\w.bin",
        "C:\\w.bin",
        "",
    ] {
        let msg = malformed(load(&[("location", bad)]));
        assert!(msg.contains("'w'"), "{bad}: {msg}");
    }
    // Offsets and lengths past the end of the file, or not matching the dims.
    malformed(load(&[("location", "w.bin"), ("offset", "20")]));
    malformed(load(&[
        ("location", "w.bin"),
        ("offset", "4"),
        ("length", "16"),
    ]));
    malformed(load(&[("location", "w.bin"), ("length", "12")]));
    malformed(load(&[("location", "w.bin"), ("offset", "4")]));
    malformed(load(&[("location", "w.bin"), ("offset", "-4")]));
    malformed(load(&[
        ("location", "w.bin"),
        ("length", "18446744073709551615"),
    ]));
    // A missing file is an I/O error.
    assert!(matches!(
        load(&[("location", "missing.bin")]),
        Err(ModelError::Io { .. })
    ));
    // No base directory.
    malformed(onnx::from_bytes(&model(&[("location", "w.bin")]), None));
    // A symlink pointing out of the model directory is refused.
    #[cfg(unix)]
    {
        let outside = scratch_dir("outside");
        std::fs::write(outside.join("secret.bin"), &data).unwrap();
        std::os::unix::fs::symlink(outside.join("secret.bin"), dir.join("link.bin")).unwrap();
        let msg = malformed(load(&[("location", "link.bin")]));
        assert!(msg.contains("outside"), "{msg}");
        std::fs::remove_dir_all(&outside).unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
