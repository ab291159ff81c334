//! The conformance suite every `Accelerator` must pass (CPU, CUDA, wrappers).
//!
//! Field layers must be bit-exact against an i128 definition mod p, including worst-case
//! magnitudes (x̄ = p − 1 everywhere, |w| at the largest value the plan allows); bad calls must
//! fail with errors; the tail must match the float reference within `tail_tolerance`
//! (0 for the CPU: bit-identical).

use std::sync::Arc;

use origami_field::P;
use origami_model::exec;
use origami_model::linalg::ConvGeom;
use origami_model::{zoo, Conv, Model, NodeId, Tensor, INPUT};

use crate::{Accelerator, FieldLayer, LinearShape};

/// The largest weight magnitude the planner emits (8-bit weights).
pub const PLAN_WEIGHT_MAX: i32 = 127;

/// A small deterministic generator for test data (shared by the backends' own tests).
pub struct Lcg(pub u64);
impl Lcg {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    /// Uniform-ish in [0, p).
    pub fn field(&mut self) -> u32 {
        (self.next_u64() % P as u64) as u32
    }
    /// In [-max, max].
    pub fn weight(&mut self, max: i32) -> i32 {
        (self.next_u64() % (2 * max as u64 + 1)) as i32 - max
    }
    /// In [-1, 1], on a grid of 1e-4.
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() % 20_001) as f32 / 10_000.0 - 1.0
    }
}

/// A square-kernel convolution geometry with symmetric padding (for tests).
#[allow(clippy::too_many_arguments)]
pub fn geom(
    in_c: usize,
    h: usize,
    w: usize,
    out_c: usize,
    k: usize,
    stride: usize,
    pad: usize,
    groups: usize,
) -> ConvGeom {
    let c = Conv {
        out_c,
        in_c,
        kh: k,
        kw: k,
        stride: [stride, stride],
        pads: [pad; 4],
        groups,
        weight: vec![],
        bias: vec![],
    };
    // Fixed, valid parameters.
    ConvGeom::new(&c, h, w).unwrap_or_else(|e| panic!("conformance geometry: {e}"))
}

/// The definition: y[o] = Σ w·x̄ over i128, reduced mod p (what every backend must compute).
pub fn reference(shape: &LinearShape, w: &[i32], x: &[u32]) -> Vec<u32> {
    let p = P as i128;
    match shape {
        LinearShape::Dense { in_f, out_f } => (0..*out_f)
            .map(|o| {
                let s: i128 = (0..*in_f)
                    .map(|i| w[o * in_f + i] as i128 * x[i] as i128)
                    .sum();
                s.rem_euclid(p) as u32
            })
            .collect(),
        LinearShape::Conv(g) => {
            let xf: Vec<f64> = x.iter().map(|&v| v as f64).collect();
            // The naive convolution in f64 is exact only for small K; use i128 directly.
            let ipg = g.in_c / g.groups;
            let opg = g.out_c / g.groups;
            let mut out = vec![0u32; g.out_len()];
            for oc in 0..g.out_c {
                let grp = oc / opg;
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let mut s: i128 = 0;
                        for ci in 0..ipg {
                            for ky in 0..g.kh {
                                for kx in 0..g.kw {
                                    let iy = (oy * g.stride[0] + ky) as isize - g.pads[0] as isize;
                                    let ix = (ox * g.stride[1] + kx) as isize - g.pads[1] as isize;
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize
                                    {
                                        continue;
                                    }
                                    let c = grp * ipg + ci;
                                    let xv =
                                        xf[(c * g.h + iy as usize) * g.w + ix as usize] as i128;
                                    s += xv * w[((oc * ipg + ci) * g.kh + ky) * g.kw + kx] as i128;
                                }
                            }
                        }
                        out[(oc * g.oh + oy) * g.ow + ox] = s.rem_euclid(p) as u32;
                    }
                }
            }
            out
        }
    }
}

fn layers(rng: &mut Lcg) -> Vec<(FieldLayer, Vec<Vec<u32>>)> {
    let shapes = [
        LinearShape::Conv(geom(3, 9, 11, 8, 3, 1, 1, 1)),
        LinearShape::Conv(geom(8, 10, 10, 8, 3, 2, 1, 4)),
        LinearShape::Conv(geom(6, 7, 7, 6, 3, 1, 1, 6)), // depthwise
        LinearShape::Conv(geom(16, 5, 5, 4, 1, 1, 0, 1)), // pointwise
        LinearShape::Conv(geom(512, 3, 3, 2, 3, 1, 1, 1)), // K = 4608, as VGG's deepest convs
        LinearShape::Dense {
            in_f: 25_088,
            out_f: 3,
        }, // K of VGG's fc6
        LinearShape::Dense { in_f: 37, out_f: 5 },
    ];
    shapes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let worst = i % 2 == 0;
            let weight: Vec<i32> = (0..s.weight_len())
                .map(|j| {
                    if worst {
                        if j % 3 == 0 {
                            -PLAN_WEIGHT_MAX
                        } else {
                            PLAN_WEIGHT_MAX
                        }
                    } else {
                        rng.weight(PLAN_WEIGHT_MAX)
                    }
                })
                .collect();
            let inputs = vec![
                vec![P - 1; s.in_len()], // worst-case magnitude
                vec![0; s.in_len()],
                (0..s.in_len()).map(|_| rng.field()).collect(),
            ];
            (
                FieldLayer {
                    layer: i as u16 * 3 + 1,
                    shape: *s,
                    weight,
                },
                inputs,
            )
        })
        .collect()
}

/// The suite's fixed data: the field layers with their inputs, and the model for the tail.
struct Fixture {
    cases: Vec<(FieldLayer, Vec<Vec<u32>>)>,
    layers: Vec<FieldLayer>,
    model: Arc<Model>,
}

fn fixture() -> Fixture {
    let cases = layers(&mut Lcg(0x5eed));
    let layers = cases.iter().map(|(l, _)| l.clone()).collect();
    Fixture {
        cases,
        layers,
        model: Arc::new(zoo::resnet_small()),
    }
}

/// Names the accelerator in a failure.
fn failure(accel: &dyn Accelerator) -> impl Fn(String) -> String {
    let name = accel.name();
    move |what| format!("accelerator {name}: {what}")
}

fn prepared(accel: &mut dyn Accelerator) -> Result<Fixture, String> {
    let f = fixture();
    accel
        .prepare(f.model.clone(), &f.layers)
        .map_err(|e| failure(accel)(format!("prepare: {e}")))?;
    Ok(f)
}

/// Property: a field layer before any `prepare` is an error.
pub fn unprepared_calls_fail(accel: &mut dyn Accelerator) -> Result<(), String> {
    if accel.field_linear(1, &[0]).is_ok() {
        return Err(failure(accel)(
            "field_linear before prepare must fail".into(),
        ));
    }
    Ok(())
}

/// Property: every field layer is exact mod p (worst-case magnitudes, zeros, random inputs).
pub fn field_layers_are_exact(accel: &mut dyn Accelerator) -> Result<(), String> {
    let f = prepared(accel)?;
    let fail = failure(accel);
    for (l, inputs) in &f.cases {
        for (ii, x) in inputs.iter().enumerate() {
            let got = accel
                .field_linear(l.layer, x)
                .map_err(|e| fail(format!("layer {}: {e}", l.layer)))?;
            let want = reference(&l.shape, &l.weight, x);
            if got != want {
                let bad = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(0);
                return Err(fail(format!(
                    "layer {} ({:?}) input #{ii}: not exact mod p (first difference at {bad}: got {:?}, want {})",
                    l.layer,
                    l.shape,
                    got.get(bad),
                    want[bad]
                )));
            }
        }
    }
    Ok(())
}

/// Property: bad calls are errors (unknown layer, wrong length, unreduced input, weights past
/// the exactness bound), and the accelerator still prepares afterwards.
pub fn bad_calls_are_rejected(accel: &mut dyn Accelerator) -> Result<(), String> {
    let f = prepared(accel)?;
    let fail = failure(accel);
    let (l0, x0) = (&f.cases[0].0, &f.cases[0].1[2]);
    if accel.field_linear(999, x0).is_ok() {
        return Err(fail("an unknown layer must be rejected".into()));
    }
    if accel.field_linear(l0.layer, &x0[1..]).is_ok() {
        return Err(fail("a wrong input length must be rejected".into()));
    }
    let mut unreduced = x0.clone();
    unreduced[0] = P;
    if accel.field_linear(l0.layer, &unreduced).is_ok() {
        return Err(fail("an input not reduced mod p must be rejected".into()));
    }
    let mut too_big = f.layers.clone();
    too_big[0].weight[0] = 1 << 20;
    if accel.prepare(f.model.clone(), &too_big).is_ok() {
        return Err(fail(
            "weights beyond the exactness bound must be rejected".into(),
        ));
    }
    accel
        .prepare(f.model.clone(), &f.layers)
        .map_err(|e| fail(format!("prepare after a refused prepare: {e}")))?;
    Ok(())
}

/// Property: the plain tail, from several split points, matches the float reference within
/// `tail_tolerance`.
pub fn tail_matches_the_reference(
    accel: &mut dyn Accelerator,
    tail_tolerance: f32,
) -> Result<(), String> {
    let f = prepared(accel)?;
    let fail = failure(accel);
    let model = &f.model;
    let input = zoo::seeded_input(model, 3);
    for start in [0, 3, 8, model.nodes.len() - 2].map(NodeId::new) {
        let mut env: Vec<Option<Tensor>> = vec![None; model.num_values()];
        env[INPUT.index()] = Some(input.clone());
        let full = exec::run_from(model, NodeId::new(0), env).map_err(|e| fail(e.to_string()))?;
        // Values crossing the split, computed by the reference head.
        let mut vals = vec![None; model.num_values()];
        vals[0] = Some(input.clone());
        for (i, n) in model.nodes.iter().enumerate().take(start.index()) {
            let ins: Vec<&Tensor> = n
                .inputs
                .iter()
                .map(|&v| vals[v.index()].as_ref().expect("computed"))
                .collect();
            vals[i + 1] = Some(exec::eval_node(n, &ins, 1).map_err(|e| fail(e.to_string()))?);
        }
        let handoff = exec::live_across(model, start)
            .into_iter()
            .map(|v| (v, vals[v.index()].clone().expect("computed")))
            .collect();
        let got = accel
            .run_tail(start, handoff)
            .map_err(|e| fail(format!("tail from {start}: {e}")))?;
        let diff = got.max_abs_diff(&full);
        if diff > tail_tolerance {
            return Err(fail(format!(
                "tail from node {start} differs from the reference by {diff}"
            )));
        }
    }
    accel.synchronize().map_err(|e| fail(e.to_string()))
}

/// Property: a batched tail (the server batches requests' tails) answers image i of the batch
/// as image i alone would.
pub fn batched_tail_matches_each_image(
    accel: &mut dyn Accelerator,
    tail_tolerance: f32,
) -> Result<(), String> {
    let f = prepared(accel)?;
    let fail = failure(accel);
    let model = &f.model;
    let batch: Vec<Tensor> = (0..3).map(|s| zoo::seeded_input(model, 40 + s)).collect();
    let stacked = Tensor::stack(&batch.iter().collect::<Vec<_>>())
        .map_err(|e| fail(format!("stack: {e}")))?;
    let got = accel
        .run_tail(NodeId::new(0), vec![(INPUT, stacked)])
        .map_err(|e| fail(format!("batched tail: {e}")))?;
    if got.shape[0] != batch.len() {
        return Err(fail(format!("batched tail: output shape {:?}", got.shape)));
    }
    let per = got.data.len() / batch.len();
    for (i, x) in batch.iter().enumerate() {
        let mut env: Vec<Option<Tensor>> = vec![None; model.num_values()];
        env[INPUT.index()] = Some(x.clone());
        let want = exec::run_from(model, NodeId::new(0), env).map_err(|e| fail(e.to_string()))?;
        let diff = want
            .data
            .iter()
            .zip(&got.data[i * per..(i + 1) * per])
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        if want.data.len() != per || diff > tail_tolerance {
            return Err(fail(format!(
                "batched tail: image {i} differs from its own run by {diff}"
            )));
        }
    }
    accel.synchronize().map_err(|e| fail(e.to_string()))
}

/// Runs every property in turn on one accelerator (unprepared first); `Err` names the first
/// failure.
pub fn check_all(accel: &mut dyn Accelerator, tail_tolerance: f32) -> Result<(), String> {
    unprepared_calls_fail(accel)?;
    field_layers_are_exact(accel)?;
    bad_calls_are_rejected(accel)?;
    tail_matches_the_reference(accel, tail_tolerance)?;
    batched_tail_matches_each_image(accel, tail_tolerance)
}

/// One `#[test]` per conformance property, so a failure names its property. `$make` is an
/// expression giving `Option<accelerator>` (`None`: skip, e.g. no GPU here); each test makes a
/// fresh one. Use it at a test file's top level:
///
/// ```text
/// origami_accel::conformance_tests!(Some(CpuAccelerator::new()), 0.0);
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr, $tolerance:expr) => {
        #[test]
        fn conformance_unprepared_calls_fail() {
            if let Some(mut a) = $make {
                $crate::conformance::unprepared_calls_fail(&mut a).unwrap();
            }
        }
        #[test]
        fn conformance_field_layers_are_exact() {
            if let Some(mut a) = $make {
                $crate::conformance::field_layers_are_exact(&mut a).unwrap();
            }
        }
        #[test]
        fn conformance_bad_calls_are_rejected() {
            if let Some(mut a) = $make {
                $crate::conformance::bad_calls_are_rejected(&mut a).unwrap();
            }
        }
        #[test]
        fn conformance_tail_matches_the_reference() {
            if let Some(mut a) = $make {
                $crate::conformance::tail_matches_the_reference(&mut a, $tolerance).unwrap();
            }
        }
        #[test]
        fn conformance_batched_tail_matches_each_image() {
            if let Some(mut a) = $make {
                $crate::conformance::batched_tail_matches_each_image(&mut a, $tolerance).unwrap();
            }
        }
    };
}
