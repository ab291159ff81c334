//! The audit on a 3-channel model with its own preprocessing (ImageNet normalisation): at split
//! 0 (the host sees the normalised input) every attack must rebuild the pixels almost
//! perfectly, or the audit is broken. Colour images: Fashion-MNIST training images padded to
//! 32×32 and tinted with a seeded colour each. Skips without the dataset.

use std::path::Path;
use std::sync::Arc;

use origami_audit::audit::{self, AuditConfig, AuditData, Policy, Silent};
use origami_audit::decoder::TrainBudget;
use origami_audit::whitebox::WhiteboxConfig;
use origami_enclave::{Plan, QuantConfig};
use origami_model::input::Preprocess;
use origami_model::{zoo, Tensor};

/// `n` tinted 3×32×32 images from the first Fashion-MNIST training images, with labels.
fn tinted(n: usize) -> Option<(Vec<f32>, Vec<usize>)> {
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
    let ds = origami_train::data::load(dir, origami_train::data::Split::Train)
        .unwrap()
        .truncate(n);
    let mut out = Vec::with_capacity(n * 3 * 32 * 32);
    let mut s = 0x2545_f491_4f6c_dd1du64;
    for i in 0..n {
        let img = ds.image(i);
        for _ in 0..3 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let tint = 0.3 + 0.7 * (s >> 40) as f32 / (1u64 << 24) as f32;
            for y in 0..32 {
                for x in 0..32 {
                    let inside = (2..30).contains(&y) && (2..30).contains(&x);
                    out.push(if inside {
                        img[(y - 2) * 28 + x - 2] * tint
                    } else {
                        0.0
                    });
                }
            }
        }
    }
    Some((out, ds.labels.iter().map(|&l| l as usize).collect()))
}

#[test]
fn every_attack_rebuilds_rgb_inputs_at_split_0() {
    let (n_train, n_eval) = (1500, 10);
    let Some((pixels, labels)) = tinted(n_train + n_eval) else {
        return;
    };
    // A VGG-shaped RGB head (8 and 16 channels) at 32×32, seeded.
    let model = zoo::vgg(
        "vgg-rgb",
        &[512, 0, 1024, 0, 1024, 0, 1024, 0, 1024, 0],
        32,
        64,
        9,
    );
    assert_eq!(model.input_shape, [3, 32, 32]);
    let pre = Preprocess::for_model(&model);
    assert_ne!(pre.mean, [0.0; 3], "an RGB model is normalised");
    let l = 3 * 32 * 32;
    let (train, eval) = pixels.split_at(n_train * l);
    let data = AuditData {
        source: "tinted fashion-mnist".into(),
        shape: [3, 32, 32],
        pre,
        train: train.to_vec(),
        train_labels: labels[..n_train].to_vec(),
        eval: eval.to_vec(),
        eval_labels: labels[n_train..].to_vec(),
    };
    let calib: Vec<Tensor> = (0..4)
        .map(|i| {
            Tensor::new(
                vec![1, 3, 32, 32],
                data.to_model(&train[i * l..(i + 1) * l]),
            )
            .unwrap()
        })
        .collect();
    let plan = Arc::new(Plan::build(&model, &calib, QuantConfig::default()).unwrap());
    let budget = TrainBudget {
        epochs: 2,
        ..TrainBudget::default()
    };
    let cfg = AuditConfig {
        layers: Some(vec![0]),
        n_train,
        n_eval,
        decoder: budget.clone(),
        gan: budget,
        whitebox: WhiteboxConfig {
            steps: 150,
            ..WhiteboxConfig::default()
        },
        policy: Policy::default(),
    };
    let (report, gallery) = audit::run(&plan, &data, &cfg, &Silent).unwrap();
    let row = &report.layers[0];
    assert_eq!(row.feature_shape, [3, 32, 32]);
    for a in &row.attacks {
        eprintln!(
            "split 0, {}: ssim {:.3}, psnr {:.1} dB",
            a.attack, a.ssim, a.psnr
        );
        assert!(
            a.ssim > 0.9,
            "{} at split 0 on RGB inputs: ssim {}",
            a.attack,
            a.ssim
        );
    }
    // The grid shows the images in colour.
    let grid = origami_audit::report::grid(&report, &gallery).unwrap();
    assert!(
        grid.pixels().any(|p| p.0[0] != p.0[1] || p.0[1] != p.0[2]),
        "the grid of RGB images has no colour"
    );
}

/// Images of other shapes are refused with a clear error.
#[test]
fn unsupported_image_shapes_are_refused() {
    let mut m = zoo::vgg(
        "vgg-rgb",
        &[512, 0, 512, 0, 512, 0, 512, 0, 512, 0],
        32,
        64,
        9,
    );
    m.input_shape = vec![2, 32, 32];
    let dir = std::env::temp_dir().join(format!("origami-rgb-shape-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let e = AuditData::folder(&dir, &m, 10, 2)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("1 or 3 channels") && e.contains("28 to 224"),
        "{e}"
    );
}
