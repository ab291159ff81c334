//! Tests on the real Fashion-MNIST data (Debian package dataset-fashion-mnist, which `.ci/run`
//! installs). Without the data they skip with a message.

use std::path::Path;
use std::sync::Arc;

use origami_enclave::{reference, Plan, QuantConfig};
use origami_model::{input, zoo, Tensor};
use origami_train::{accuracy, data, train, TrainConfig};

fn dataset(split: data::Split) -> Option<data::Dataset> {
    let dir = Path::new(data::DEFAULT_DIR);
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
    Some(data::load(dir, split).expect("the Debian package's files load"))
}

/// The bundled, trained model reaches ≥ 90 % on the 10 000 test images.
#[test]
fn bundled_model_reaches_90_percent() {
    let Some(test) = dataset(data::Split::Test) else {
        return;
    };
    assert_eq!(test.len(), 10_000);
    let acc = accuracy(&zoo::fashion(), &test).unwrap();
    eprintln!("bundled model: test accuracy {acc}");
    assert!(acc >= 0.90, "test accuracy {acc}");
}

/// Fixed point against float on real images: top-1 agreement ≥ 99 % (every layer quantized,
/// calibrated on the ten bundled images as the CLI does).
#[test]
fn quantized_top1_agrees_with_float_on_real_images() {
    let Some(test) = dataset(data::Split::Test) else {
        return;
    };
    let model = zoo::fashion();
    let calib: Vec<Tensor> = (0..10)
        .map(|i| Tensor::new(vec![1, 1, 28, 28], test.image(i).to_vec()).unwrap())
        .collect();
    let plan = Arc::new(Plan::build(&model, &calib, QuantConfig::default()).unwrap());
    let n = 1000;
    let mut agree = 0;
    let mut correct_q = 0;
    for i in 0..n {
        let x = Tensor::new(vec![1, 1, 28, 28], test.image(i).to_vec()).unwrap();
        let q = reference(&plan, &x, plan.model.end(), 1).unwrap();
        let f = origami_model::exec::run(&plan.model, &x).unwrap();
        let (tq, tf) = (q.top_k(1)[0][0].0, f.top_k(1)[0][0].0);
        agree += (tq == tf) as usize;
        correct_q += (tq == test.labels[i] as usize) as usize;
    }
    eprintln!(
        "fixed point vs float: top-1 agreement {agree}/{n}, quantized accuracy {correct_q}/{n}"
    );
    assert!(
        agree as f32 / n as f32 >= 0.99,
        "top-1 agreement {agree}/{n}"
    );
    assert!(
        correct_q as f32 / n as f32 >= 0.88,
        "quantized accuracy {correct_q}/{n}"
    );
    // The PNG path gives the same tensor as the IDX path for a bundled image.
    let png = image::load_from_memory(input::SAMPLE_PNGS[0].1).unwrap();
    assert_eq!(
        input::image_to_tensor(&png, &model).data,
        test.image(0).to_vec()
    );
}

/// A tiny training budget already learns: one epoch on 3 000 images beats 60 % on 500 others.
#[test]
fn quick_training_learns() {
    let Some(train_set) = dataset(data::Split::Train) else {
        return;
    };
    let Some(test) = dataset(data::Split::Test) else {
        return;
    };
    let mut model = zoo::small();
    let cfg = TrainConfig {
        epochs: 1,
        ..TrainConfig::default()
    };
    let before = accuracy(&model, &test.clone().truncate(500)).unwrap();
    let rep = train(
        &mut model,
        &train_set.truncate(3000),
        &test.truncate(500),
        &cfg,
        |_| {},
    )
    .unwrap();
    assert!(
        rep[0].test_accuracy > 0.6 && rep[0].test_accuracy > before + 0.3,
        "{before} -> {rep:?}"
    );
}

/// Hardened training at split 4 (`origami train --harden-split 4 --harden-weight 10`), one
/// epoch on 3 000 images: on held-out images the
/// within-class share of the variance of what the host sees falls far below that of the same
/// training without the penalty (same seed, same batches), and the model still classifies.
#[test]
fn hardening_leaves_the_host_little_but_the_class() {
    use origami_train::harden::split_share;
    use origami_train::Harden;
    let Some(train_set) = dataset(data::Split::Train) else {
        return;
    };
    let Some(test) = dataset(data::Split::Test) else {
        return;
    };
    let (train_set, test) = (train_set.truncate(3000), test.truncate(1000));
    let run = |harden: Option<Harden>| {
        let mut model = zoo::small();
        let cfg = TrainConfig {
            epochs: 1,
            harden,
            ..TrainConfig::default()
        };
        let rep = train(&mut model, &train_set, &test, &cfg, |_| {}).unwrap();
        let share = split_share(&model, &test, 4).unwrap();
        (rep[0].test_accuracy, share, rep[0].train_share)
    };
    let (acc_plain, share_plain, none) = run(None);
    let (acc_hard, share_hard, train_share) = run(Some(Harden {
        split: 4,
        weight: 10.0,
    }));
    eprintln!(
        "split 4 within-class share: plain {share_plain:.3} (accuracy {acc_plain:.3}), \
         hardened {share_hard:.3} (accuracy {acc_hard:.3}, training batches {train_share:?})"
    );
    assert!(none.is_none() && train_share.is_some());
    assert!(
        share_plain > 0.3 && share_hard < 0.7 * share_plain,
        "plain {share_plain}, hardened {share_hard}"
    );
    assert!(acc_hard > 0.5, "hardened accuracy {acc_hard}");
    // Bad hardening settings are refused before training.
    for (split, weight) in [(0, 1.0), (6, 1.0), (4, -1.0), (4, f32::NAN)] {
        let mut model = zoo::small();
        let cfg = TrainConfig {
            epochs: 1,
            harden: Some(Harden { split, weight }),
            ..TrainConfig::default()
        };
        let e = train(&mut model, &train_set, &test, &cfg, |_| {}).unwrap_err();
        assert!(
            matches!(e, origami_train::TrainError::Model(_)),
            "{split}, {weight}: {e}"
        );
    }
}
