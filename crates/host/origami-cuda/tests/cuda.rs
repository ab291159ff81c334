//! The CUDA accelerator against the conformance suite and the CPU accelerator. Every test first
//! asks `origami_cuda::available()`; with no GPU it prints one `SKIPPED: …` line and returns
//! (except the test of that very path, which runs everywhere), or fails where
//! `ORIGAMI_REQUIRE_GPU=1` (scripts/gpu-check.sh sets it).

use std::sync::Arc;

use origami_accel::conformance::{check_all, geom, Lcg};
use origami_accel::{AccelError, Accelerator, CpuAccelerator, FieldLayer, LinearShape};
use origami_cuda::limbs::{LIMB_THRESHOLD, WORST_INPUT};
use origami_cuda::{available, CudaAccelerator, CudaOptions};
use origami_field::P;
use origami_model::{exec, zoo, Model, NodeId, Tensor, ValueId, INPUT};

/// Largest |GPU − reference| allowed on the conformance suite's tail (softmax outputs of
/// `resnet_small`): the GEMMs sum in another order than faer, and `expf` differs from Rust's
/// `exp` by an ulp or two. Measured differences are printed by `vgg_tail_matches_the_cpu`.
const TAIL_TOLERANCE: f32 = 1e-4;

fn gpu(test: &str) -> Option<CudaAccelerator> {
    gpu_with(test, CudaOptions::default())
}

fn gpu_with(test: &str, opts: CudaOptions) -> Option<CudaAccelerator> {
    match available() {
        Err(reason) => {
            origami_model::skip::missing(
                origami_model::skip::REQUIRE_GPU,
                &format!("no CUDA GPU ({reason})"),
            );
            None
        }
        Ok(dev) => {
            eprintln!("{test}: running on {dev}");
            match CudaAccelerator::with_options(0, opts) {
                Ok(a) => Some(a),
                Err(e) => panic!("a GPU is available ({dev}) but the accelerator failed: {e}"),
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn conv(
    in_c: usize,
    h: usize,
    w: usize,
    out_c: usize,
    k: usize,
    stride: usize,
    pad: usize,
    groups: usize,
) -> LinearShape {
    LinearShape::Conv(geom(in_c, h, w, out_c, k, stride, pad, groups))
}

#[test]
fn without_a_gpu_the_constructor_says_unavailable() {
    match available() {
        Err(reason) => {
            println!("no CUDA GPU here ({reason}): checking the Unavailable path");
            match CudaAccelerator::new(0) {
                Err(AccelError::Unavailable(msg)) => {
                    assert!(msg.contains("no CUDA driver/GPU"), "{msg}")
                }
                Err(e) => panic!("expected Unavailable, got {e}"),
                Ok(a) => panic!("available() said no GPU but {} opened", a.name()),
            }
        }
        Ok(dev) => {
            println!("GPU present ({dev}): checking that a missing ordinal is Unavailable");
            assert!(matches!(
                CudaAccelerator::new(4096),
                Err(AccelError::Unavailable(_))
            ));
        }
    }
}

// One test per conformance property, each on a fresh accelerator.
origami_accel::conformance_tests!(gpu("conformance"), TAIL_TOLERANCE);

/// The whole suite twice on one accelerator: buffers are reused across prepares and calls.
#[test]
fn conformance_suite_passes_twice_on_one_accelerator() {
    let Some(mut acc) = gpu("conformance") else {
        return;
    };
    if let Err(e) = check_all(&mut acc, TAIL_TOLERANCE) {
        panic!("{e}");
    }
    if let Err(e) = check_all(&mut acc, TAIL_TOLERANCE) {
        panic!("second run: {e}");
    }
}

/// Layers for the bit-identity check: VGG-like shapes, grouped/strided/padded convolutions,
/// weights up to ±2^15 (3 limbs), K beyond one int32 chunk.
fn field_cases() -> Vec<(LinearShape, i32)> {
    vec![
        (conv(3, 32, 32, 64, 3, 1, 1, 1), 127), // VGG conv1_1 at 32×32, K = 27
        (conv(64, 16, 16, 128, 3, 1, 1, 1), 127), // K = 576
        (conv(256, 8, 8, 256, 3, 1, 1, 1), 127), // K = 2304
        (conv(16, 9, 7, 32, 3, 2, 1, 4), 128),  // 2 weight limbs, grouped, strided
        (conv(24, 6, 6, 24, 3, 1, 1, 24), 1 << 15), // depthwise, 3 weight limbs
        (conv(40, 5, 5, 7, 1, 1, 0, 1), 1 << 15), // pointwise, odd sizes
        (
            LinearShape::Dense {
                in_f: 25_088,
                out_f: 64,
            },
            127,
        ), // fc6's K
        (
            LinearShape::Dense {
                in_f: 8191,
                out_f: 3,
            },
            1 << 15,
        ), // largest K at |w| = 2^15
        (
            LinearShape::Dense {
                in_f: 140_000,
                out_f: 5,
            },
            128,
        ), // 3 K chunks (> 2^17 terms)
    ]
}

#[test]
fn field_layers_are_bit_identical_to_the_cpu() {
    let Some(mut acc) = gpu("field") else {
        return;
    };
    let mut rng = Lcg(0xf1e1d);
    let model = Arc::new(zoo::resnet_small());
    let mut layers = Vec::new();
    for (i, (shape, wmax)) in field_cases().into_iter().enumerate() {
        for worst in [true, false] {
            let weight = (0..shape.weight_len())
                .map(|j| match (worst, j % 3) {
                    (true, 0) => -wmax,
                    (true, _) => wmax,
                    _ => rng.weight(wmax),
                })
                .collect();
            layers.push(FieldLayer {
                layer: (2 * i + worst as usize) as u16,
                shape,
                weight,
            });
        }
    }
    let mut cpu = CpuAccelerator::new();
    cpu.prepare(model.clone(), &layers).expect("cpu prepare");
    acc.prepare(model, &layers).expect("gpu prepare");
    for l in &layers {
        let n = l.shape.in_len();
        let inputs = [
            vec![P - 1; n],
            vec![WORST_INPUT; n],
            vec![LIMB_THRESHOLD; n],
            vec![LIMB_THRESHOLD + 1; n],
            vec![0; n],
            (0..n).map(|_| rng.field()).collect(),
            (0..n).map(|_| rng.field()).collect(),
        ];
        for (ii, x) in inputs.iter().enumerate() {
            let want = cpu.field_linear(l.layer, x).expect("cpu");
            let got = acc
                .field_linear(l.layer, x)
                .unwrap_or_else(|e| panic!("layer {} ({:?}): {e}", l.layer, l.shape));
            if got != want {
                let bad = got.iter().zip(&want).filter(|(a, b)| a != b).count();
                let first = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(0);
                panic!(
                    "layer {} ({:?}) input #{ii}: {bad} of {} outputs differ; first at {first}: gpu {:?}, cpu {}",
                    l.layer,
                    l.shape,
                    want.len(),
                    got.get(first),
                    want[first]
                );
            }
        }
    }
    acc.synchronize().expect("synchronize");
}

/// The reference head of `model` up to `start` and the values crossing to the tail.
fn handoff(model: &Model, input: &Tensor, start: NodeId) -> Vec<(ValueId, Tensor)> {
    let mut vals: Vec<Option<Tensor>> = vec![None; model.num_values()];
    vals[0] = Some(input.clone());
    for (i, n) in model.nodes.iter().enumerate().take(start.index()) {
        let ins: Vec<&Tensor> = n
            .inputs
            .iter()
            .map(|&v| vals[v.index()].as_ref().expect("computed"))
            .collect();
        vals[i + 1] = Some(exec::eval_node(n, &ins, 1).expect("head"));
    }
    exec::live_across(model, start)
        .into_iter()
        .map(|v| (v, vals[v.index()].clone().expect("computed")))
        .collect()
}

fn batch_input(model: &Model, n: usize) -> Tensor {
    let mut data = Vec::new();
    for s in 0..n {
        data.extend(zoo::seeded_input(model, 100 + s as u64).data);
    }
    let mut shape = vec![n];
    shape.extend_from_slice(&model.input_shape);
    Tensor::new(shape, data).expect("input")
}

/// Max |a − b| and that relative to the largest |b|.
fn diff(a: &Tensor, b: &Tensor) -> (f32, f32) {
    assert_eq!(a.shape, b.shape);
    let d = a.max_abs_diff(b);
    let scale = b.data.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    (d, d / scale)
}

fn check_tail(acc: &mut CudaAccelerator, rel_tol: f32) {
    for (model, splits) in [
        (zoo::vgg16(32), vec![0usize, 4, 7]),
        (zoo::vgg19(32), vec![0, 4]),
        (zoo::resnet_small(), vec![0, 3, 8, 12]),
    ] {
        let model = Arc::new(model);
        acc.prepare(model.clone(), &[]).expect("prepare");
        for batch in [1, 3] {
            let input = batch_input(&model, batch);
            let want = exec::run(&model, &input).expect("reference");
            for &k in &splits {
                let start = if model.name.starts_with("vgg") {
                    model.split_node(k).expect("split")
                } else {
                    NodeId::new(k)
                };
                let got = acc
                    .run_tail(start, handoff(&model, &input, start))
                    .unwrap_or_else(|e| panic!("{} tail from {start}: {e}", model.name));
                let (abs, rel) = diff(&got, &want);
                println!(
                    "{} batch {batch} tail from node {start}: max |gpu − cpu| = {abs:.3e} ({rel:.3e} of max |out|)",
                    model.name
                );
                assert!(
                    rel <= rel_tol,
                    "{} batch {batch} tail from node {start}: relative difference {rel} > {rel_tol}",
                    model.name
                );
            }
        }
    }
}

#[test]
fn tails_match_the_cpu_in_f32() {
    let Some(mut acc) = gpu("tail") else {
        return;
    };
    check_tail(&mut acc, 1e-4);
}

#[test]
fn tf32_tail_stays_close_and_field_stays_exact() {
    let Some(mut acc) = gpu_with("tf32", CudaOptions { tf32_tail: true }) else {
        return;
    };
    assert!(acc.name().contains("tf32"));
    // TF32 keeps 10 mantissa bits: ~1e-3 relative per product, more through deep nets.
    check_tail(&mut acc, 3e-2);
    // Field layers are int8 GEMMs with int32 accumulation: the math mode cannot touch them.
    if let Err(e) = check_all(&mut acc, 1e-2) {
        panic!("{e}");
    }
}

#[test]
fn bad_calls_are_errors_not_crashes() {
    let Some(mut acc) = gpu("errors") else {
        return;
    };
    let model = Arc::new(zoo::resnet_small());
    assert!(matches!(
        acc.run_tail(NodeId::new(0), vec![]),
        Err(AccelError::NotPrepared)
    ));
    let layer = FieldLayer {
        layer: 7,
        shape: LinearShape::Dense { in_f: 4, out_f: 2 },
        weight: vec![1; 8],
    };
    acc.prepare(model.clone(), &[layer]).expect("prepare");
    assert!(acc.field_linear(7, &[1, 2, 3]).is_err());
    assert!(acc.field_linear(7, &[1, 2, 3, P]).is_err());
    assert!(matches!(
        acc.field_linear(8, &[0; 4]),
        Err(AccelError::UnknownLayer(8))
    ));
    // A tail input of the wrong shape is refused before any kernel runs.
    let wrong = Tensor::zeros(vec![1, 4, 32, 32]);
    assert!(matches!(
        acc.run_tail(NodeId::new(0), vec![(INPUT, wrong)]),
        Err(AccelError::BadInput(_))
    ));
    let bad_len = Tensor {
        shape: vec![1, 3, 32, 32],
        data: vec![0.0; 5],
    };
    assert!(acc
        .run_tail(NodeId::new(0), vec![(INPUT, bad_len)])
        .is_err());
    assert!(acc.run_tail(NodeId::new(0), vec![]).is_err()); // the input is missing
    assert!(acc
        .run_tail(NodeId::new(model.nodes.len() + 1), vec![])
        .is_err());
    // Still usable afterwards.
    assert_eq!(
        acc.field_linear(7, &[1, 2, 3, 4]).expect("field"),
        vec![10, 10]
    );
    let input = zoo::seeded_input(&model, 1);
    acc.run_tail(NodeId::new(0), vec![(INPUT, input)])
        .expect("tail after errors");
}
