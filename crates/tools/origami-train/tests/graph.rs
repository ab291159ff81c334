//! The IR → burn interpreter against the float executor: on every ONNX operator fixture (every
//! operator of the IR, written by `onnx.helper`), the forward pass equals `exec::run`; the input
//! gradient and, on the zoo models, the weight gradient match finite differences.

use std::path::PathBuf;

use burn::module::Module;
use burn::tensor::Tensor as BurnTensor;
use origami_model::{exec, npy, onnx, zoo, Model, Tensor, ValueId};
use origami_train::graph::{device, tensor, values, Graph, Weights};

fn fixtures() -> Vec<(String, Model, Tensor)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../common/origami-model/tests/fixtures/ops");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("the operator fixtures")
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "onnx").then(|| p.file_stem()?.to_str().map(String::from))?
        })
        .collect();
    names.sort();
    assert!(names.len() >= 20, "found {} fixtures", names.len());
    names
        .into_iter()
        .map(|n| {
            let m = onnx::load(&dir.join(format!("{n}.onnx"))).unwrap();
            let x = npy::read_npy(&dir.join(format!("{n}_input.npy"))).unwrap();
            (n, m, x)
        })
        .collect()
}

fn input(x: &Tensor) -> BurnTensor<4> {
    let s = &x.shape;
    tensor(x.data.clone(), [s[0], s[1], s[2], s[3]], &device())
}

/// Largest |a − b| relative to max(1, |b|).
fn rel(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, f32::max)
}

/// A fixed pseudo-random vector in [−1, 1].
fn direction(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

#[test]
fn forward_equals_the_float_executor_on_every_operator() {
    for (name, m, x) in fixtures() {
        let g = Graph::new(&m).unwrap_or_else(|e| panic!("{name}: {e}"));
        let w = Weights::from_model(&m, &device());
        let got = values(
            g.run(&w, input(&x), m.output)
                .unwrap_or_else(|e| panic!("{name}: {e}")),
        );
        let want = exec::run(&m, &x).unwrap();
        let err = rel(&got, &want.data);
        assert!(err < 1e-4, "{name}: interpreter differs from exec by {err}");
    }
}

/// Σ out · r through the executor.
fn loss_exec(m: &Model, x: &Tensor, r: &[f32]) -> f64 {
    let y = exec::run(m, x).unwrap();
    y.data
        .iter()
        .zip(r)
        .map(|(a, b)| *a as f64 * *b as f64)
        .sum()
}

/// The input gradient of Σ out · r along a direction d against a central difference of the
/// executor: ⟨∇L, d⟩ ≈ (L(x + h·d) − L(x − h·d)) / 2h.
#[test]
fn input_gradients_match_finite_differences_on_every_operator() {
    for (name, m, x) in fixtures() {
        let g = Graph::new(&m).unwrap();
        let w = Weights::from_model(&m, &device()).no_grad();
        let xt = input(&x).require_grad();
        let out = g.run(&w, xt.clone(), m.output).unwrap();
        let r = direction(out.dims().iter().product(), 1);
        let rt: BurnTensor<2> = tensor(r.clone(), out.dims(), &device());
        let grads = (out * rt).sum().backward();
        let gx = values(xt.grad(&grads).expect("an input gradient"));
        let d = direction(x.data.len(), 2);
        let analytic: f64 = gx.iter().zip(&d).map(|(a, b)| *a as f64 * *b as f64).sum();
        let h = 1e-3f32;
        let shifted = |s: f32| {
            let data = x.data.iter().zip(&d).map(|(v, e)| v + s * h * e).collect();
            Tensor::new(x.shape.clone(), data).unwrap()
        };
        let numeric = (loss_exec(&m, &shifted(1.0), &r) - loss_exec(&m, &shifted(-1.0), &r))
            / (2.0 * h as f64);
        let tol = 1e-2 * numeric.abs().max(analytic.abs()).max(1.0);
        assert!(
            (numeric - analytic).abs() <= tol,
            "{name}: directional derivative {analytic} vs finite difference {numeric}"
        );
    }
}

/// The weight gradient (every Conv and Dense tensor at once, along a random direction) of the
/// cross-entropy-like loss Σ logits · r, on the trained model and a residual one.
#[test]
fn weight_gradients_match_finite_differences() {
    for m in [zoo::fashion(), zoo::resnet_small()] {
        let x = zoo::seeded_input(&m, 3);
        let g = Graph::new(&m).unwrap();
        let w = Weights::from_model(&m, &device());
        let out = g.run(&w, input(&x), m.output).unwrap();
        let r = direction(out.dims().iter().product(), 5);
        let rt: BurnTensor<2> = tensor(r.clone(), out.dims(), &device());
        let grads = (out * rt).sum().backward();
        let mut analytic = 0f64;
        let dirs: Vec<Vec<f32>> = w
            .tensors
            .iter()
            .enumerate()
            .map(|(k, p)| {
                let gk = values(p.val().grad(&grads).expect("a weight gradient"));
                let d = direction(gk.len(), 10 + k as u64);
                analytic += gk
                    .iter()
                    .zip(&d)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum::<f64>();
                d
            })
            .collect();
        let h = 1e-3f32;
        let shifted = |s: f32| {
            let mut m2 = m.clone();
            let moved = Weights::from_model(&m, &device());
            let moved = Weights {
                tensors: moved
                    .tensors
                    .into_iter()
                    .zip(&dirs)
                    .map(|(p, d)| {
                        let v: Vec<f32> = values(p.val())
                            .iter()
                            .zip(d)
                            .map(|(a, e)| a + s * h * e)
                            .collect();
                        let n = v.len();
                        burn::module::Param::from_tensor(tensor(v, [n], &device()))
                    })
                    .collect(),
            };
            moved.write_to(&mut m2).unwrap();
            m2
        };
        let numeric = (loss_exec(&shifted(1.0), &x, &r) - loss_exec(&shifted(-1.0), &x, &r))
            / (2.0 * h as f64);
        let tol = 1e-2 * numeric.abs().max(analytic.abs()).max(1.0);
        assert!(
            (numeric - analytic).abs() <= tol,
            "{}: weight directional derivative {analytic} vs finite difference {numeric}",
            m.name
        );
    }
}

/// Weights taken from a model and written back leave it unchanged; a model of another
/// architecture is refused.
#[test]
fn weights_round_trip_and_refuse_other_models() {
    let m = zoo::fashion();
    let w = Weights::from_model(&m, &device());
    let mut again = m.clone();
    w.write_to(&mut again).unwrap();
    assert_eq!(again, m);
    let mut other = zoo::resnet_small();
    assert!(w.write_to(&mut other).is_err());
}

/// A run up to an inner value equals the executor on the truncated model (what the host sees
/// at a split), at batch 3.
#[test]
fn inner_values_equal_the_truncated_model() {
    let m = zoo::fashion();
    let imgs: Vec<Tensor> = (0..3).map(|s| zoo::seeded_input(&m, s)).collect();
    let mut data = Vec::new();
    imgs.iter().for_each(|t| data.extend(&t.data));
    let x = Tensor::new(vec![3, 1, 28, 28], data).unwrap();
    let g = Graph::new(&m).unwrap();
    let w = Weights::from_model(&m, &device());
    for end in [0, 2, 5, m.nodes.len()] {
        let got = values(g.run(&w, input(&x), ValueId::new(end)).unwrap());
        let want = if end == 0 {
            x.data.clone()
        } else {
            let mut head = m.clone();
            head.nodes.truncate(end);
            head.output = ValueId::new(end);
            exec::run(&head, &x).unwrap().data
        };
        assert!(rel(&got, &want) < 1e-4, "value {end}");
    }
    // A wrong input shape is refused with an error.
    let bad = tensor(vec![0.0; 2 * 28 * 28], [1, 2, 28, 28], &device());
    assert!(g.run(&w, bad, m.output).is_err());
}
