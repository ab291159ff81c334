//! The audit's building blocks: scores checked against scikit-image, the capture equal to the
//! quantized reference's handoff, and the white-box attack passing its sanity checks.

use std::path::Path;
use std::sync::Arc;

use origami_audit::capture::capture;
use origami_audit::metrics::{psnr, ssim};
use origami_audit::whitebox::{invert, invert_from, WhiteboxConfig};
use origami_enclave::{reference_handoff, Placement, Plan, QuantConfig};
use origami_model::{input, zoo, Tensor};

fn images() -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let n = 28 * 28;
    let a: Vec<f32> = (0..n).map(|i| ((i * 37) % 101) as f32 / 100.0).collect();
    let b: Vec<f32> = a
        .iter()
        .enumerate()
        .map(|(i, v)| (v + 0.1 * (i as f32).sin()).clamp(0.0, 1.0))
        .collect();
    let c: Vec<f32> = a.iter().map(|v| (v * 0.5 + 0.2).clamp(0.0, 1.0)).collect();
    let g: Vec<f32> = (0..n).map(|i| i as f32 / (n - 1) as f32).collect();
    (a, b, c, g)
}

/// Values from scikit-image 0.25 (tests/ssim_reference.py).
#[test]
fn ssim_and_psnr_match_scikit_image() {
    let (a, b, c, g) = images();
    let flip: Vec<f32> = (0..28)
        .rev()
        .flat_map(|r| g[r * 28..(r + 1) * 28].to_vec())
        .collect();
    for (name, u, v, s_ref, p_ref) in [
        ("noisy", &a, &b, 0.9724312230601025, 23.28594789979708),
        ("contrast", &a, &c, 0.7971388548981908, 16.240635799333344),
        ("flip", &g, &flip, -0.5651251105368476, 4.765669540931674),
    ] {
        let s = ssim(u, v, 28, 28);
        let p = psnr(u, v);
        // f32 inputs (scikit-image used f64): agreement to 1e-5.
        assert!((s - s_ref).abs() < 1e-5, "{name}: ssim {s} vs {s_ref}");
        assert!((p - p_ref).abs() < 1e-3, "{name}: psnr {p} vs {p_ref}");
    }
    assert!((ssim(&a, &a, 28, 28) - 1.0).abs() < 1e-12);
    assert!(psnr(&a, &a).is_infinite());
}

fn ankle_boot(model: &origami_model::Model) -> Tensor {
    let png = image::load_from_memory(input::SAMPLE_PNGS[0].1).unwrap();
    input::image_to_tensor(&png, model)
}

fn plan(model: &origami_model::Model) -> Arc<Plan> {
    let x = ankle_boot(model);
    Arc::new(Plan::build(model, std::slice::from_ref(&x), QuantConfig::default()).unwrap())
}

/// The capture is exactly the handoff of the fixed-point reference head, bit for bit.
#[test]
fn capture_is_what_the_accelerator_receives() {
    let model = zoo::fashion();
    let plan = plan(&model);
    let x = ankle_boot(&model);
    for split in 1..plan.linears.len() {
        let got = capture(&plan, split, &x).unwrap();
        let head_end = plan.head_end(Placement::Origami { split }).unwrap();
        let want = reference_handoff(&plan, &x, head_end, 1).unwrap();
        assert_eq!(got, want, "split {split}");
    }
}

/// At split 0 the host receives the raw input (the `plain` placement), exactly.
#[test]
fn capture_at_split_0_is_the_input() {
    let model = zoo::fashion();
    let plan = plan(&model);
    let x = ankle_boot(&model);
    let got = capture(&plan, 0, &x).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.data, x.data);
}

/// An attack that cannot rebuild the raw input, or the output of the first convolution, is
/// broken, not "private".
#[test]
fn whitebox_attack_passes_its_sanity_checks() {
    let model = zoo::fashion();
    let plan = plan(&model);
    let x = ankle_boot(&model);
    let cfg = WhiteboxConfig::default();
    // Split 0: the features are the image.
    let r0 = invert(&plan.model, 0, std::slice::from_ref(&x.data), &cfg, |_| {}).unwrap();
    let s0 = ssim(&r0[0], &x.data, 28, 28);
    assert!(s0 > 0.9, "split 0: ssim {s0}");
    // After the first convolution (and its ReLU), from the captured tensor.
    let feats = capture(&plan, 1, &x).unwrap();
    assert_eq!(feats.len(), 1);
    let head_end = plan
        .head_end(Placement::Origami { split: 1 })
        .unwrap()
        .index();
    let r1 = invert(
        &plan.model,
        head_end,
        &[feats[0].1.data.clone()],
        &cfg,
        |_| {},
    )
    .unwrap();
    let s1 = ssim(&r1[0], &x.data, 28, 28);
    eprintln!(
        "white-box: ssim {s0:.3} at split 0, {s1:.3} after conv1_1 (psnr {:.1} dB)",
        psnr(&r1[0], &x.data)
    );
    assert!(s1 > 0.9, "after the first convolution: ssim {s1}");
}

fn fashion_train(n: usize) -> Option<origami_train::Dataset> {
    let dir = Path::new(origami_train::data::DEFAULT_DIR);
    if !dir.exists() {
        origami_model::skip::missing(
            origami_model::skip::REQUIRE_DATA,
            &format!(
                "{} not found (apt-get install dataset-fashion-mnist)",
                dir.display()
            ),
        );
        return None;
    }
    Some(
        origami_train::data::load(dir, origami_train::data::Split::Train)
            .unwrap()
            .truncate(n),
    )
}

/// Mean SSIM of `attack` (on all images at once) over the ten bundled test images (never used
/// for training).
fn bundled_ssim(
    model: &origami_model::Model,
    attack: impl Fn(&[Vec<f32>]) -> Vec<Vec<f32>>,
) -> f64 {
    let xs: Vec<Vec<f32>> = input::SAMPLE_PNGS
        .iter()
        .map(|(_, png)| input::image_to_tensor(&image::load_from_memory(png).unwrap(), model).data)
        .collect();
    assert_eq!(xs.len(), 10);
    let rs = attack(&xs);
    let scores: Vec<f64> = rs
        .iter()
        .zip(&xs)
        .map(|(r, x)| ssim(r, x, 28, 28))
        .collect();
    scores.iter().sum::<f64>() / scores.len() as f64
}

/// The learned attacks, trained on public data (Fashion-MNIST training images) with a tiny
/// budget, rebuild the raw input almost perfectly at split 0 — an attack that cannot is broken,
/// not "private" — and far better than a blank guess after the first block. Skips without the
/// dataset (Debian's dataset-fashion-mnist, installed by `.ci/run`).
#[test]
fn learned_attacks_pass_their_sanity_checks() {
    use origami_audit::decoder::{feature_shape, features, Decoder, TrainBudget};
    use origami_audit::gan::Gan;
    let Some(train) = fashion_train(1500) else {
        return;
    };
    let model = zoo::fashion();
    let plan = plan(&model);
    let img = [1, 28, 28];
    let budget = TrainBudget {
        epochs: 2,
        ..TrainBudget::default()
    };
    // Split 0: the features are the image.
    let dec0 = Decoder::train(
        &train.images,
        img,
        &train.images,
        img,
        &budget,
        |_, _, _| {},
    )
    .unwrap();
    let s_dec = bundled_ssim(&model, |x| dec0.invert(x).unwrap());
    // The U-Net is deeper than the decoder and its adversarial term adds noise: one more epoch.
    let gan_budget = TrainBudget {
        epochs: 3,
        ..budget.clone()
    };
    let gan0 = Gan::train(
        &train.images,
        img,
        &train.images,
        img,
        &gan_budget,
        |_, _, _| {},
    )
    .unwrap();
    let s_gan = bundled_ssim(&model, |x| gan0.invert(x).unwrap());
    // After the first block (split 2), from the captured tensor.
    let head_end = plan
        .head_end(Placement::Origami { split: 2 })
        .unwrap()
        .index();
    let f = feature_shape(&plan.model, head_end).unwrap();
    let feats = features(&plan.model, head_end, &train.images).unwrap();
    let dec2 = Decoder::train(&feats, f, &train.images, img, &budget, |_, _, _| {}).unwrap();
    let x = ankle_boot(&model);
    let cap = capture(&plan, 2, &x).unwrap();
    let observed = vec![cap[0].1.data.clone()];
    let r2 = dec2.invert(&observed).unwrap();
    let s2 = ssim(&r2[0], &x.data, 28, 28);
    // Combined: white-box optimisation started at the decoder's reconstruction.
    let wb = WhiteboxConfig::default();
    let s_comb = bundled_ssim(&model, |x| {
        invert_from(&plan.model, 0, x, &dec0.invert(x).unwrap(), &wb, |_| {}).unwrap()
    });
    let rc2 = invert_from(&plan.model, head_end, &observed, &r2, &wb, |_| {}).unwrap();
    let sc2 = ssim(&rc2[0], &x.data, 28, 28);
    let blank = ssim(&vec![0.0; 784], &x.data, 28, 28);
    eprintln!(
        "split 0: decoder ssim {s_dec:.3}, cGAN {s_gan:.3}, combined {s_comb:.3}; split 2: decoder {s2:.3}, combined {sc2:.3} (blank {blank:.3})"
    );
    assert!(s_dec > 0.9, "decoder at split 0: ssim {s_dec}");
    assert!(s_gan > 0.9, "cGAN at split 0: ssim {s_gan}");
    assert!(s_comb > 0.9, "combined at split 0: ssim {s_comb}");
    assert!(s2 > blank + 0.3, "decoder at split 2: ssim {s2}");
    assert!(sc2 > blank + 0.3, "combined at split 2: ssim {sc2}");
}

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("origami-audit-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A folder of images: clear errors for no usable images and for the wrong size; the scored
/// images are the last fifth, labelled by the model's own prediction.
#[test]
fn folder_data_is_validated() {
    use origami_audit::audit::AuditData;
    let model = zoo::fashion();
    let empty = tmpdir("empty");
    std::fs::write(empty.join("notes.txt"), "not an image").unwrap();
    let e = AuditData::folder(&empty, &model, 100, 10)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("usable images"), "{e}");
    let wrong = tmpdir("wrong");
    for i in 0..10 {
        image::GrayImage::new(32, 32)
            .save(wrong.join(format!("{i}.png")))
            .unwrap();
    }
    let e = AuditData::folder(&wrong, &model, 100, 10)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("32×32") && e.contains("28×28"), "{e}");
    let good = tmpdir("good");
    for (name, png) in input::SAMPLE_PNGS {
        std::fs::write(good.join(name), png).unwrap();
    }
    let d = AuditData::folder(&good, &model, 100, 10).unwrap();
    assert_eq!((d.n_train(), d.n_eval()), (8, 2));
    // 8_sandal and 9_sneaker are scored; the trained model gets both right.
    assert_eq!(d.eval_labels, vec![5, 7]);
}

/// The whole audit on a tiny budget: every attack scored at every requested split, the
/// strongest one chosen, split 0 never recommended, and the files written and readable.
#[test]
fn audit_runs_end_to_end_and_writes_its_report() {
    use origami_audit::audit::{self, AuditConfig, AuditData, Silent};
    use origami_audit::decoder::TrainBudget;
    let dir = Path::new(origami_train::data::DEFAULT_DIR);
    if !dir.exists() {
        origami_model::skip::missing(
            origami_model::skip::REQUIRE_DATA,
            &format!(
                "{} not found (apt-get install dataset-fashion-mnist)",
                dir.display()
            ),
        );
        return;
    }
    let model = zoo::fashion();
    let plan = plan(&model);
    let data = AuditData::fashion_mnist(dir, 300, 4).unwrap();
    let tiny = TrainBudget {
        epochs: 1,
        ..TrainBudget::default()
    };
    let cfg = AuditConfig {
        layers: Some(vec![0, 5]),
        n_train: 300,
        n_eval: 4,
        decoder: tiny.clone(),
        gan: tiny,
        whitebox: WhiteboxConfig {
            steps: 20,
            ..WhiteboxConfig::default()
        },
        policy: audit::Policy {
            max_ssim: 0.99,
            max_accuracy: 1.0,
            max_identification: 1.0,
        },
    };
    let (report, gallery) = audit::run(&plan, &data, &cfg, &Silent).unwrap();
    assert_eq!(
        report.layers.iter().map(|l| l.split).collect::<Vec<_>>(),
        [0, 5]
    );
    assert_eq!(report.layers[0].feature_shape, [1, 28, 28]);
    assert_eq!(report.layers[1].feature_shape, [128, 1, 1]);
    assert_eq!(report.layers[1].last_node, "relu_fc1");
    for l in &report.layers {
        let names: Vec<&str> = l.attacks.iter().map(|a| a.attack.as_str()).collect();
        assert_eq!(names, ["decoder", "cgan", "white-box", "combined"]);
        for a in &l.attacks {
            assert!((-1.0..=1.0).contains(&a.ssim) && a.psnr > 0.0, "{a:?}");
            assert!((0.0..=1.0).contains(&a.accuracy) && a.steps > 0, "{a:?}");
            let id = a.identification.expect("measured");
            assert!((0.0..=1.0).contains(&id), "{a:?}");
        }
        let best = l.attacks.iter().map(|a| a.ssim).fold(f64::MIN, f64::max);
        assert_eq!(l.strongest().ssim, best);
        assert_eq!(
            l.passes,
            cfg.policy.passes(l.split, &l.attacks, l.strongest())
        );
    }
    // Split 0 is the raw input: never recommended, whatever the scores; there the strongest
    // attack (white-box, SSIM ≈ 0.99 with these budgets) picks every scored image out of the
    // scored ones and the 300-image pool.
    assert!(!report.layers[0].passes);
    assert_eq!(report.layers[0].strongest().identification, Some(1.0));
    assert_eq!(report.recommended_split, audit::recommend(&report.layers));
    assert!(report.baselines.class_mean_ssim > report.baselines.blank_ssim);
    assert_eq!(gallery.originals.len(), 4);
    assert_eq!(gallery.rows.len(), 2);
    let out = tmpdir("report");
    let paths = origami_audit::report::write(&report, &gallery, &out).unwrap();
    let back = origami_audit::report::load(&paths[0]).unwrap();
    assert_eq!(
        serde_json::to_value(&back).unwrap(),
        serde_json::to_value(&report).unwrap()
    );
    let grid = image::open(&paths[1]).unwrap();
    assert_eq!((grid.width(), grid.height()), (6 + 3 * 90, 44 + 4 * 90));
    let chart = image::open(&paths[2]).unwrap();
    assert_eq!((chart.width(), chart.height()), (880, 520));
    // Asking for a split the model does not have is a clear error.
    let bad = AuditConfig {
        layers: Some(vec![9]),
        ..cfg
    };
    let e = audit::run(&plan, &data, &bad, &Silent)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("split 9 is not a candidate"), "{e}");
}
