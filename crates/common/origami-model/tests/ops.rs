//! The operators of the bring-your-own-CNN set against ONNX Runtime: every fixture in
//! `tests/fixtures/ops` was written by `onnx.helper` (`make_ops.py`, not our exporter) and its
//! expected output computed by ONNX Runtime; the float executor must agree within rounding.
//! Each fixture also survives an export → import round trip unchanged.

use std::path::PathBuf;

use origami_model::{exec, npy, onnx, Model, Op, Tensor};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ops")
}

fn load(name: &str) -> (Model, Tensor, Tensor) {
    let d = dir();
    let m = onnx::load(&d.join(format!("{name}.onnx")))
        .unwrap_or_else(|e| panic!("{name}: import failed: {e}"));
    let x = npy::read_npy(&d.join(format!("{name}_input.npy"))).unwrap();
    let y = npy::read_npy(&d.join(format!("{name}_output.npy"))).unwrap();
    (m, x, y)
}

/// Largest |got − want| relative to max(1, |want|).
fn max_rel_err(got: &Tensor, want: &Tensor) -> f32 {
    assert_eq!(got.shape, want.shape, "output shapes differ");
    got.data
        .iter()
        .zip(&want.data)
        .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
        .fold(0.0, f32::max)
}

fn check(name: &str) -> Model {
    let (m, x, want) = load(name);
    let got = exec::run(&m, &x).unwrap_or_else(|e| panic!("{name}: run failed: {e}"));
    let err = max_rel_err(&got, &want);
    assert!(
        err < 1e-4,
        "{name}: differs from ONNX Runtime by {err} (relative)"
    );
    // Our own export re-imports to the identical IR.
    let again = onnx::from_bytes(&onnx::to_bytes(&m), None).unwrap();
    assert_eq!(again, m, "{name}: export → import changed the model");
    m
}

fn has(m: &Model, pred: impl Fn(&Op) -> bool) -> bool {
    m.nodes.iter().any(|n| pred(&n.op))
}

#[test]
fn concat_and_sum() {
    let m = check("concat_sum");
    assert!(has(&m, |o| matches!(o, Op::Concat { axis: 1 })));
}

#[test]
fn broadcast_arithmetic_with_constants_and_branches() {
    let m = check("arith_broadcast");
    assert!(has(&m, |o| matches!(
        o,
        Op::BinaryConst { c_first: true, .. }
    )));
    assert!(has(&m, |o| matches!(o, Op::Binary(_))));
}

#[test]
fn squeeze_and_excitation_gate() {
    check("squeeze_excite");
}

#[test]
fn channel_shuffle_with_a_shape_subgraph() {
    let m = check("channel_shuffle");
    // Shape/Gather/Unsqueeze/Concat folded away: only the data path is left.
    let kinds: Vec<&str> = m.nodes.iter().map(|n| n.op.kind()).collect();
    assert_eq!(kinds, ["Reshape", "Transpose", "Reshape"]);
}

#[test]
fn range_cast_slice_and_constant_of_shape_fold() {
    let m = check("folded_constants");
    assert_eq!(m.nodes.len(), 2, "{:?}", m.nodes);
}

#[test]
fn local_response_normalization() {
    check("lrn");
}

#[test]
fn constant_reflect_and_edge_padding() {
    check("pads");
}

#[test]
fn activations_and_prelu() {
    check("activations");
}

#[test]
fn global_max_pool_and_log_softmax() {
    check("pools_log_softmax");
}

#[test]
fn dilated_and_grouped_dilated_convolutions() {
    check("dilated_conv");
}

#[test]
fn transposed_convolutions() {
    let m = check("conv_transpose");
    assert!(has(&m, |o| matches!(o, Op::Dilate { .. })));
}

#[test]
fn gemm_with_alpha_beta_and_untransposed_b() {
    check("gemm_alpha_beta");
}

#[test]
fn fixed_batch_of_two_gives_two_outputs() {
    let m = check("batch2");
    let (_, x, _) = load("batch2");
    assert_eq!(x.shape[0], 2);
    // The same model runs one image of the batch alone, with that image's answer (within
    // rounding: the GEMM blocks differently for one row).
    let one = exec::run(&m, &x.batch_item(1).unwrap()).unwrap();
    let both = exec::run(&m, &x).unwrap();
    assert_eq!(one.shape, [1, 3]);
    assert!(max_rel_err(&one, &both.batch_item(1).unwrap()) < 1e-5);
}

#[test]
fn opset_6_and_opset_4_files_match_their_opset_13_equivalents() {
    for name in ["opset6", "opset4"] {
        check(name);
    }
}

#[test]
fn architecture_family_blocks_match_onnx_runtime() {
    for name in [
        "inception_lrn",
        "densenet_block",
        "squeezenet_fire",
        "shufflenet_unit",
        "resnet50_sum",
        "efficientnet_mbconv",
        "mobilenetv3_block",
    ] {
        check(name);
    }
}
