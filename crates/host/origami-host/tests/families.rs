//! One block per architecture family users bring (Inception with LRN and Concat, DenseNet,
//! SqueezeNet fire, ShuffleNet, a ResNet-50 bottleneck joined by `Sum`, EfficientNet MBConv with
//! squeeze-and-excitation, MobileNetV3 with HardSwish), written by `onnx.helper` (see
//! `origami-model/tests/fixtures/ops/make_ops.py`), in every placement: blinded placements
//! reproduce the quantized reference bit for bit, the head never hands the host a branch's
//! earlier features beside the joined ones, and quantized and float agree on the top class.

use std::path::PathBuf;
use std::sync::Arc;

use origami_accel::CpuAccelerator;
use origami_enclave::{reference, CoreConfig, Placement, Plan, QuantConfig};
use origami_host::local::Engine;
use origami_model::{exec, onnx, zoo, Model, Tensor};

const FAMILIES: [&str; 7] = [
    "inception_lrn",
    "densenet_block",
    "squeezenet_fire",
    "shufflenet_unit",
    "resnet50_sum",
    "efficientnet_mbconv",
    "mobilenetv3_block",
];

fn load(name: &str) -> Model {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../common/origami-model/tests/fixtures/ops")
        .join(format!("{name}.onnx"));
    onnx::load(&p).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn argmax(t: &Tensor) -> usize {
    t.data
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv {
                (i, v)
            } else {
                (bi, bv)
            }
        })
        .0
}

fn plan_for(model: &Model) -> Arc<Plan> {
    let calib: Vec<Tensor> = (0..8).map(|s| zoo::seeded_input(model, 100 + s)).collect();
    Arc::new(Plan::build(model, &calib, QuantConfig::default()).unwrap())
}

#[test]
fn every_family_runs_in_every_placement_bit_identical_to_the_reference() {
    for name in FAMILIES {
        let model = load(name);
        let plan = plan_for(&model);
        let inputs: Vec<Tensor> = (0..2).map(|s| zoo::seeded_input(&model, s)).collect();
        let mut placements = vec![Placement::Enclave, Placement::Slalom, Placement::Plain];
        placements.extend((1..plan.linears.len()).map(|split| Placement::Origami { split }));
        for placement in placements {
            let cfg = CoreConfig {
                placement,
                verify: true,
                threads: 1,
            };
            let mut e = Engine::new(plan.clone(), cfg, Box::new(CpuAccelerator::new()))
                .unwrap_or_else(|err| panic!("{name} ({}): {err}", placement.name()));
            e.precompute(inputs.len()).unwrap();
            let head_end = plan.head_end(placement).unwrap();
            for x in &inputs {
                let (got, _) = e
                    .infer(x.clone())
                    .unwrap_or_else(|err| panic!("{name} ({}): {err}", placement.name()));
                let want = reference(&plan, x, head_end, 1).unwrap();
                let same = got.shape == want.shape
                    && got
                        .data
                        .iter()
                        .zip(&want.data)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "{name} ({}): differs from the quantized reference",
                    placement.name()
                );
            }
        }
    }
}

#[test]
fn a_split_inside_a_branch_extends_the_head_to_where_the_branches_join() {
    for name in FAMILIES {
        let model = load(name);
        let plan = plan_for(&model);
        for split in 1..plan.linears.len() {
            let end = plan.head_end(Placement::Origami { split }).unwrap();
            let crossing = exec::live_across(&plan.model, end);
            assert!(
                crossing.len() == 1 || end == plan.model.end(),
                "{name} split {split}: {} values cross the split",
                crossing.len()
            );
            assert!(plan.model.head_layers(end) >= split, "{name} split {split}");
        }
    }
    // The DenseNet block's layers all feed the next concatenation: a split after its first
    // 1x1 convolution keeps the whole block in the head.
    let m = load("densenet_block").fold_batchnorm();
    let end = m.split_node(2).unwrap();
    assert!(
        m.head_layers(end) > 2,
        "head of {} layers",
        m.head_layers(end)
    );
}

/// The gap between the two largest logits, relative to the largest magnitude.
fn margin(t: &Tensor) -> f32 {
    let mut v = t.data.clone();
    v.sort_by(|a, b| b.total_cmp(a));
    let scale = t.data.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    (v[0] - v.get(1).copied().unwrap_or(f32::NEG_INFINITY)) / scale
}

#[test]
fn quantized_and_float_agree_on_the_top_class() {
    for name in FAMILIES {
        let model = load(name);
        let plan = plan_for(&model);
        let (mut decided, mut worst) = (0, 0f32);
        for s in 0..16 {
            let x = zoo::seeded_input(&model, 1000 + s);
            let float = exec::run(&model, &x).unwrap();
            let quant = reference(&plan, &x, plan.model.end(), 1).unwrap();
            let scale = float
                .data
                .iter()
                .fold(0f32, |m, v| m.max(v.abs()))
                .max(1e-6);
            let err = float
                .data
                .iter()
                .zip(&quant.data)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
                / scale;
            worst = worst.max(err);
            // Seeded weights make near-ties: the top class is only meaningful with a margin
            // above the quantization error.
            if margin(&float) > 2.0 * err {
                decided += 1;
                assert_eq!(argmax(&float), argmax(&quant), "{name}, input {s}");
            }
        }
        assert!(
            worst < 0.1,
            "{name}: quantized logits off by {worst} (relative)"
        );
        assert!(
            decided >= 8,
            "{name}: only {decided} of 16 inputs have a clear top class"
        );
    }
}

/// The ImageNet-shaped zoo models (at 32×32, to keep the test short): `--split 2` and the whole
/// network blinded (Slalom) reproduce the quantized reference bit for bit, and the split hands
/// the host one tensor.
#[test]
fn zoo_architectures_run_blinded_bit_identical_to_the_reference() {
    for name in [
        "resnet50",
        "mobilenetv2",
        "efficientnet-b0",
        "densenet121",
        "squeezenet1.1",
    ] {
        let model = zoo::load(&format!("{name}@32")).unwrap();
        let plan = plan_for(&model);
        let x = zoo::seeded_input(&model, 7);
        for placement in [Placement::Origami { split: 2 }, Placement::Slalom] {
            let cfg = CoreConfig {
                placement,
                verify: true,
                threads: 1,
            };
            let mut e = Engine::new(plan.clone(), cfg, Box::new(CpuAccelerator::new())).unwrap();
            e.precompute(1).unwrap();
            let head_end = plan.head_end(placement).unwrap();
            assert_eq!(exec::live_across(&plan.model, head_end).len(), 1, "{name}");
            let (got, _) = e
                .infer(x.clone())
                .unwrap_or_else(|err| panic!("{name} ({}): {err}", placement.name()));
            let want = reference(&plan, &x, head_end, 1).unwrap();
            assert_eq!(got.shape, want.shape, "{name}");
            assert!(
                got.data
                    .iter()
                    .zip(&want.data)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{name} ({}): differs from the quantized reference",
                placement.name()
            );
        }
    }
}
