//! Tests of `audit`.
use super::*;

fn layer(split: usize, ssims: [f64; 3], acc: f64, policy: &Policy) -> LayerReport {
    let attacks: Vec<AttackScore> = ["decoder", "cgan", "white-box"]
        .iter()
        .zip(ssims)
        .map(|(a, s)| AttackScore {
            attack: a.to_string(),
            ssim: s,
            psnr: 20.0,
            accuracy: acc,
            identification: None,
            steps: 1,
            seconds: 0.0,
        })
        .collect();
    let best = (0..3)
        .max_by(|&a, &b| attacks[a].ssim.total_cmp(&attacks[b].ssim))
        .unwrap();
    let passes = policy.allows(split, &attacks[best]);
    LayerReport {
        split,
        last_node: format!("n{split}"),
        feature_shape: [1, 1, 1],
        strongest: attacks[best].attack.clone(),
        attacks,
        passes,
    }
}

/// The strongest attack decides; split 0 never passes; the earliest passing split is
/// recommended even when a later one fails again (deeper is not always safer).
#[test]
fn policy_and_recommendation() {
    let p = Policy {
        max_ssim: 0.5,
        max_accuracy: 0.9,
        max_identification: 1.0,
    };
    let rows = vec![
        layer(0, [0.1, 0.1, 0.1], 0.1, &p),
        layer(1, [0.2, 0.6, 0.1], 0.5, &p),  // cGAN too strong
        layer(2, [0.4, 0.3, 0.2], 0.95, &p), // labels leak too well
        layer(3, [0.4, 0.45, 0.5], 0.8, &p), // at the threshold: passes
        layer(4, [0.7, 0.2, 0.1], 0.5, &p),  // deeper, but fails
        layer(5, [0.3, 0.2, 0.1], 0.5, &p),
    ];
    assert_eq!(
        rows.iter().map(|l| l.passes).collect::<Vec<_>>(),
        [false, false, false, true, false, true]
    );
    assert_eq!(rows[1].strongest, "cgan");
    assert_eq!(recommend(&rows), Some(3));
    assert_eq!(recommend(&rows[..3]), None);
    // Identification: any attack above the policy's rate fails the split, even when the
    // strongest by SSIM stays below it; audits recorded without it are unconstrained.
    let strict = Policy {
        max_identification: 0.05,
        ..p.clone()
    };
    let mut attacks = layer(3, [0.4, 0.45, 0.5], 0.8, &p).attacks;
    assert!(strict.passes(3, &attacks, &attacks[2].clone()));
    attacks[0].identification = Some(0.2);
    assert!(!strict.passes(3, &attacks, &attacks[2].clone()));
    assert!(p.passes(3, &attacks, &attacks[2].clone()));
    attacks[0].identification = Some(0.05);
    assert!(strict.passes(3, &attacks, &attacks[2].clone()));
    let old: Policy = serde_json::from_str(r#"{"max_ssim": 0.5, "max_accuracy": 1.0}"#).unwrap();
    assert_eq!(old.max_identification, 1.0);
}

/// Identification finds a reconstruction's own input among the scored images and the
/// pool; a reconstruction nearer to another candidate, or tied with one, does not count.
#[test]
fn identification_counts_nearest_true_inputs() {
    let img =
        |v: f32, k: usize| -> Vec<f32> { (0..16).map(|i| if i == k { 1.0 } else { v }).collect() };
    let originals = vec![img(0.0, 0), img(0.0, 5), img(0.0, 9), img(0.5, 3)];
    let pool: Vec<f32> = [img(0.2, 1), img(0.9, 7)].concat();
    // Exact copies: all identified.
    assert_eq!(identification(&originals, &originals, &pool, 10), 1.0);
    // Noisy copies of 0 and 1, then one nearest to a pool image, then a tie between 0 and 2.
    let recons = vec![
        img(0.05, 0),
        img(0.05, 5),
        img(0.85, 7),
        (0..16)
            .map(|i| if i == 0 || i == 9 { 0.5 } else { 0.0 })
            .collect(),
    ];
    assert_eq!(identification(&recons, &originals, &pool, 10), 0.5);
    // Without the pool, the third is nearest to the fourth original: still wrong.
    assert_eq!(identification(&recons, &originals, &[], 0), 0.5);
    assert_eq!(identification(&[], &[], &pool, 10), 0.0);
}

/// The split-0 sanity bar names every attack that cannot rebuild the raw input (NaN counts as
/// broken), and says nothing when split 0 was not audited.
#[test]
fn sanity_bar_names_broken_attacks() {
    let p = Policy {
        max_ssim: 0.5,
        max_accuracy: 1.0,
        max_identification: 1.0,
    };
    let report = |layers: Vec<LayerReport>| AuditReport {
        model: "m".into(),
        model_hash: String::new(),
        data: String::new(),
        train_images: 1,
        eval_images: 1,
        policy: p.clone(),
        baselines: Baselines {
            blank_ssim: 0.0,
            class_mean_ssim: 0.0,
        },
        layers,
        recommended_split: None,
        seconds: 0.0,
    };
    let good = report(vec![
        layer(0, [0.95, 0.99, 1.0], 0.9, &p),
        layer(2, [0.1; 3], 0.9, &p),
    ]);
    assert!(good.broken_attacks().is_empty());
    let bad = report(vec![layer(0, [0.55, f64::NAN, 1.0], 0.9, &p)]);
    let names: Vec<&str> = bad.broken_attacks().iter().map(|b| b.0).collect();
    assert_eq!(names, ["decoder", "cgan"]);
    assert!(report(vec![layer(4, [0.1; 3], 0.9, &p)])
        .broken_attacks()
        .is_empty());
}
