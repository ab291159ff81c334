//! Model files as allocation bombs and size overflows: shapes whose inferred sizes are huge or
//! wrap around must be refused (`ModelError::TooLarge`) at import / validation, before anything
//! of that size is allocated, and the GEMM paths must never accept a wrapped size.
//!
//! A counting global allocator records the largest single allocation of this test binary, so
//! the tests can check that a refused model allocated nothing near its claimed size.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use origami_model::linalg::{conv2d, ConvGeom};
use origami_model::onnx::{self, proto::*};
use origami_model::{
    exec, Conv, Model, ModelError, Node, Op, Pool, Tensor, MAX_TOTAL_ELEMENTS, MAX_VALUE_ELEMENTS,
};
use prost::Message;

mod common;
use common::{a_ints, dim_value, op, value_info};

// ---------------------------------------------------------------------------------------------
// Largest-allocation tracking

struct Tracking;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only records sizes.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

/// No allocation of this test binary may come near a bomb's size (the largest legitimate one is
/// the 16 MiB weight tensor of the convolution bomb and its encoded copies).
const ALLOCATION_LIMIT: usize = 256 << 20;

fn assert_nothing_huge_was_allocated() {
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        largest < ALLOCATION_LIMIT,
        "an allocation of {largest} bytes was made"
    );
}

fn too_large<T: std::fmt::Debug>(r: Result<T, ModelError>) -> String {
    match r {
        Err(ModelError::TooLarge(m)) => m,
        other => panic!("expected ModelError::TooLarge, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Raw ONNX builders (a_ints, op, dim_value, value_info: tests/common)

/// A model file with input "x" of shape [1, c, h, w] and output "y", opset 18.
fn graph_bytes(chw: [i64; 3], nodes: Vec<NodeProto>, inits: Vec<TensorProto>) -> Vec<u8> {
    let mut dims = vec![dim_value(1)];
    dims.extend(chw.iter().map(|&d| dim_value(d)));
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 18,
        }],
        graph: Some(GraphProto {
            name: "bomb".into(),
            node: nodes,
            initializer: inits,
            input: vec![value_info("x", dims)],
            output: vec![value_info("y", vec![])],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

const P20: i64 = 1 << 20;

/// Attack 1: input [1, 1, 1, 1], MaxPool with a 1×1 window and pads of 2^20 on every side: the
/// output plane is (2^21 + 1) × (2^21 + 1), about 2^42 elements.
fn pool_bomb() -> Vec<u8> {
    graph_bytes(
        [1, 1, 1],
        vec![op(
            "MaxPool",
            "bomb_pool",
            &["x"],
            &["y"],
            vec![
                a_ints("kernel_shape", &[1, 1]),
                a_ints("pads", &[P20, P20, P20, P20]),
            ],
        )],
        vec![],
    )
}

/// Attack 2: a 1×1 convolution with 2^22 output channels and pads [2^20, 2^20, 2^20 − 1,
/// 2^20 − 1] on a 1 × 1 input: the output is 2^22 × 2^21 × 2^21 = 2^64 elements, which wraps to
/// 0 in unchecked `usize` arithmetic.
fn conv_bomb() -> Vec<u8> {
    let out_c = 1i64 << 22;
    let weight = TensorProto {
        name: "w".into(),
        dims: vec![out_c, 1, 1, 1],
        data_type: data_type::FLOAT,
        raw_data: vec![0; 4 << 22],
        ..Default::default()
    };
    graph_bytes(
        [1, 1, 1],
        vec![op(
            "Conv",
            "bomb_conv",
            &["x", "w"],
            &["y"],
            vec![
                a_ints("kernel_shape", &[1, 1]),
                a_ints("pads", &[P20, P20, P20 - 1, P20 - 1]),
            ],
        )],
        vec![weight],
    )
}

/// The geometry attack 2 would produce if nothing checked it: out_len wraps to 0.
fn wrapping_geometry() -> ConvGeom {
    ConvGeom {
        in_c: 1,
        h: 1,
        w: 1,
        out_c: 1 << 22,
        kh: 1,
        kw: 1,
        stride: [1, 1],
        pads: [1 << 20, 1 << 20, (1 << 20) - 1, (1 << 20) - 1],
        groups: 1,
        oh: 1 << 21,
        ow: 1 << 21,
    }
}

fn bomb_conv_ir() -> Conv {
    Conv {
        out_c: 1 << 22,
        in_c: 1,
        kh: 1,
        kw: 1,
        stride: [1, 1],
        pads: [1 << 20, 1 << 20, (1 << 20) - 1, (1 << 20) - 1],
        groups: 1,
        weight: vec![0.0; 1 << 22],
        bias: vec![0.0; 1 << 22],
    }
}

fn one_node_model(input_shape: Vec<usize>, op: Op) -> Model {
    Model {
        name: "m".into(),
        input_shape,
        nodes: vec![Node {
            name: "n".into(),
            op,
            inputs: vec![origami_model::INPUT],
            output: origami_model::ValueId::new(1),
        }],
        output: origami_model::ValueId::new(1),
        labels: None,
    }
}

// ---------------------------------------------------------------------------------------------
// The two bombs of the finding, as files

#[test]
fn a_pool_whose_output_is_2_to_the_42_elements_is_refused() {
    let bytes = pool_bomb();
    assert!(bytes.len() < 512, "the bomb is {} bytes", bytes.len());
    let msg = too_large(onnx::from_bytes(&bytes, None));
    assert!(msg.contains("bomb_pool"), "{msg}");
    assert_nothing_huge_was_allocated();
}

#[test]
fn a_conv_whose_output_size_wraps_to_zero_is_refused() {
    let msg = too_large(onnx::from_bytes(&conv_bomb(), None));
    assert!(msg.contains("bomb_conv"), "{msg}");
    assert_nothing_huge_was_allocated();
}

#[test]
fn loading_a_pool_bomb_from_disk_is_refused() {
    let path = std::env::temp_dir().join(format!("origami-pool-bomb-{}.onnx", std::process::id()));
    std::fs::write(&path, pool_bomb()).unwrap();
    let r = onnx::load(&path);
    std::fs::remove_file(&path).unwrap();
    too_large(r);
    assert_nothing_huge_was_allocated();
}

#[test]
fn a_model_whose_values_together_exceed_the_total_cap_is_refused() {
    // Input of exactly 2^31 elements (allowed alone), then two ReLUs: 3 · 2^31 > 2^32 in all.
    let bytes = graph_bytes(
        [1, 1 << 15, 1 << 16],
        vec![
            op("Relu", "r1", &["x"], &["h"], vec![]),
            op("Relu", "r2", &["h"], &["y"], vec![]),
        ],
        vec![],
    );
    assert_eq!(MAX_VALUE_ELEMENTS, 1 << 31);
    assert_eq!(MAX_TOTAL_ELEMENTS, 1 << 32);
    let msg = too_large(onnx::from_bytes(&bytes, None));
    assert!(msg.contains("r2"), "{msg}");
    assert_nothing_huge_was_allocated();
}

// ---------------------------------------------------------------------------------------------
// The same checks on in-memory models and on the geometry / GEMM layer

#[test]
fn validating_an_in_memory_conv_bomb_is_refused() {
    let m = one_node_model(vec![1, 1, 1], Op::Conv(bomb_conv_ir()));
    too_large(m.validate());
    too_large(m.macs());
    assert_nothing_huge_was_allocated();
}

#[test]
fn running_an_unvalidated_conv_bomb_returns_an_error_instead_of_writing_out_of_bounds() {
    let m = one_node_model(vec![1, 1, 1], Op::Conv(bomb_conv_ir()));
    let x = Tensor::new(vec![1, 1, 1, 1], vec![1.0]).unwrap();
    too_large(exec::run(&m, &x));
    assert_nothing_huge_was_allocated();
}

#[test]
fn running_an_unvalidated_pool_bomb_returns_an_error_instead_of_allocating() {
    let p = Pool {
        kernel: [1, 1],
        stride: [1, 1],
        pads: [1 << 20; 4],
        count_include_pad: false,
    };
    let m = one_node_model(vec![1, 1, 1], Op::MaxPool(p));
    let x = Tensor::new(vec![1, 1, 1, 1], vec![1.0]).unwrap();
    too_large(exec::run(&m, &x));
    assert_nothing_huge_was_allocated();
}

#[test]
fn a_conv_geometry_whose_output_size_wraps_cannot_be_built() {
    too_large(ConvGeom::new(&bomb_conv_ir(), 1, 1));
}

#[test]
#[should_panic(expected = "conv2d: buffer sizes do not match the geometry")]
fn conv2d_refuses_a_hand_built_geometry_whose_output_size_wraps_to_zero() {
    let g = wrapping_geometry();
    let weight = vec![0f32; 1 << 22];
    // With unchecked arithmetic out_len() is 0 and this empty buffer passed the length check.
    conv2d(&g, &[1.0f32], &weight, &mut [], 1);
}

#[test]
#[should_panic(expected = "ConvGeom: size overflows")]
fn the_output_length_of_a_wrapping_geometry_panics_instead_of_wrapping() {
    let _ = wrapping_geometry().out_len();
}

#[test]
#[should_panic(expected = "gemm: shape mismatch")]
fn gemm_refuses_sizes_whose_product_wraps() {
    // 2^32 · 2^32 wraps to 0, which an empty output buffer would have matched.
    origami_model::linalg::gemm::<f32>(1 << 32, 0, 1 << 32, &[], &[], &mut [], 1);
}

#[test]
fn padding_that_overflows_usize_is_refused_not_a_panic() {
    let p = Pool {
        kernel: [1, 1],
        stride: [1, 1],
        pads: [usize::MAX, 0, 1, 0],
        count_include_pad: false,
    };
    too_large(p.out_hw(1, 1));
    let mut c = bomb_conv_ir();
    c.pads = [0, usize::MAX, 0, usize::MAX];
    too_large(c.out_hw(1, 1));
    too_large(one_node_model(vec![1, 1, 1], Op::MaxPool(p)).validate());
}

#[test]
fn a_zero_stride_is_a_shape_error_not_a_division_by_zero() {
    let p = Pool {
        kernel: [1, 1],
        stride: [0, 1],
        pads: [0; 4],
        count_include_pad: false,
    };
    assert!(matches!(p.out_hw(4, 4), Err(ModelError::Shape(_))));
}

#[test]
fn a_reshape_whose_target_size_overflows_is_refused() {
    let m = one_node_model(vec![1, 1, 1], Op::Reshape(vec![1 << 32, 1 << 32, 1]));
    too_large(m.validate());
}

#[test]
fn an_input_of_more_than_2_to_the_31_elements_is_refused() {
    let m = one_node_model(vec![1 << 16, 1 << 16, 1], Op::Flatten);
    too_large(m.validate());
    let bytes = graph_bytes(
        [1 << 16, 1 << 16, 1],
        vec![op("Flatten", "f", &["x"], &["y"], vec![])],
        vec![],
    );
    assert!(matches!(
        onnx::from_bytes(&bytes, None),
        Err(ModelError::Malformed(_) | ModelError::TooLarge(_))
    ));
}

#[test]
fn a_flatten_of_an_overflowing_shape_is_refused() {
    // Hand-built shapes never reach Flatten unchecked: the input itself is refused first.
    let m = one_node_model(vec![usize::MAX, 2, 1], Op::Flatten);
    too_large(m.validate());
}

#[test]
fn a_large_but_legal_pool_still_imports() {
    // 1 × 1 input, 1 × 1 window, pads 2^10: a 2049 × 2049 output, far under the caps.
    let p = 1i64 << 10;
    let bytes = graph_bytes(
        [1, 1, 1],
        vec![op(
            "MaxPool",
            "p",
            &["x"],
            &["y"],
            vec![
                a_ints("kernel_shape", &[1, 1]),
                a_ints("pads", &[p, p, p, p]),
            ],
        )],
        vec![],
    );
    let m = onnx::from_bytes(&bytes, None).unwrap();
    assert_eq!(m.validate().unwrap()[1], vec![1, 1, 2049, 2049]);
}

#[test]
fn a_conv_with_zero_output_channels_cannot_hide_an_overflowing_plane() {
    // [1, 0, 2^33, 2^33] has no elements, but code computing oh · ow of it would wrap.
    let c = Conv {
        out_c: 0,
        in_c: 1,
        kh: 1,
        kw: 1,
        stride: [1, 1],
        pads: [1 << 32, 1 << 32, (1 << 32) - 1, (1 << 32) - 1],
        groups: 1,
        weight: vec![],
        bias: vec![],
    };
    too_large(ConvGeom::new(&c, 1, 1));
    too_large(one_node_model(vec![1, 1, 1], Op::Conv(c)).validate());
}
