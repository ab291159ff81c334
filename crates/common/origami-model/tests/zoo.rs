//! The ImageNet-shaped zoo models: they have the published layer counts and multiply-accumulate
//! counts of their architectures, survive an ONNX export → import unchanged, and run to finite,
//! input-dependent logits.

use origami_model::{exec, onnx, zoo, Model};

/// (name, linear layers, GMAC at 224 as published for the architecture).
const IMAGENET: [(&str, usize, f64); 5] = [
    ("resnet50", 54, 4.09),
    ("mobilenetv2", 53, 0.30),
    ("efficientnet-b0", 82, 0.39),
    ("densenet121", 121, 2.87),
    ("squeezenet1.1", 26, 0.35),
];

#[test]
fn imagenet_zoo_models_have_their_architectures_sizes() {
    for (name, linears, gmac) in IMAGENET {
        let m = zoo::by_name(name).unwrap();
        m.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(m.name, name);
        assert_eq!(m.input_shape, vec![3, 224, 224], "{name}");
        assert_eq!(m.linear_nodes().len(), linears, "{name}: linear layers");
        let got = m.macs().unwrap() as f64 / 1e9;
        // Published counts are rounded and differ by a few percent between sources (bias adds,
        // the SE block's pooling): 5% separates every architecture here from its neighbours.
        assert!(
            (got / gmac - 1.0).abs() < 0.05,
            "{name}: {got:.3} GMAC, published ≈ {gmac}"
        );
        assert_eq!(zoo::load(name).unwrap().hash(), m.hash(), "{name}: seeded");
    }
}

#[test]
fn imagenet_zoo_models_take_a_size_and_refuse_bad_ones() {
    let m = zoo::load("resnet50@64").unwrap();
    assert_eq!(m.input_shape, vec![3, 64, 64]);
    m.validate().unwrap();
    assert!(zoo::load("mobilenetv2@50").is_err());
    let err = zoo::load("resnet-small@64").unwrap_err().to_string();
    assert!(err.contains("takes no size"), "{err}");
    assert_ne!(
        zoo::load("squeezenet1.1@64").unwrap().hash(),
        zoo::by_name("squeezenet1.1").unwrap().hash()
    );
}

#[test]
fn imagenet_zoo_models_round_trip_through_onnx() {
    for (name, _, _) in IMAGENET {
        let m = zoo::load(&format!("{name}@64")).unwrap();
        let back = onnx::from_bytes(&onnx::to_bytes(&m), None).unwrap();
        assert_eq!(back, m, "{name}");
    }
}

fn logits(m: &Model, seed: u64) -> Vec<f32> {
    exec::run(m, &zoo::seeded_input(m, seed)).unwrap().data
}

#[test]
fn imagenet_zoo_models_run_to_finite_input_dependent_logits() {
    for (name, _, _) in IMAGENET {
        let m = zoo::load(&format!("{name}@64")).unwrap();
        let a = logits(&m, 1);
        let b = logits(&m, 2);
        assert_eq!(a.len(), 1000, "{name}");
        assert!(a.iter().chain(&b).all(|v| v.is_finite()), "{name}");
        // Seeded weights keep activations at a usable scale through depth: the logits neither
        // vanish nor blow up, and they depend on the input.
        let rms = (a.iter().map(|v| v * v).sum::<f32>() / a.len() as f32).sqrt();
        assert!(rms > 1e-3 && rms < 1e4, "{name}: logit rms {rms}");
        assert!(a.iter().zip(&b).any(|(x, y)| x != y), "{name}");
    }
}
