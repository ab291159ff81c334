//! `origami train --harden-split`: a hardened model is an ordinary ONNX model — it loads and
//! runs in every placement, bit-identical to the quantized reference — and bad hardening
//! settings fail with clear errors. Skips without Fashion-MNIST (Debian's
//! dataset-fashion-mnist, which `.ci/run` installs).

use origami_model::{onnx, zoo};

mod common;
use common::{run_err, run_ok, runs_match_the_reference, tmpdir};

#[test]
fn hardened_model_exports_and_runs_in_every_placement() {
    let data = std::path::Path::new(origami_train::data::DEFAULT_DIR);
    if !data.exists() {
        origami_model::skip::missing(
            origami_model::skip::REQUIRE_DATA,
            "Fashion-MNIST not found (apt-get install dataset-fashion-mnist)",
        );
        return;
    }
    let d = tmpdir("harden");
    let path = d.join("hardened.onnx");
    let out = run_ok(&[
        "train",
        "--quick",
        "--harden-split",
        "4",
        "--harden-weight",
        "3",
        "--out",
        path.to_str().unwrap(),
    ]);
    assert!(out.contains("hardened at split 4 with λ = 3"), "{out}");
    assert!(out.contains("split 4: within-class share"), "{out}");
    let model = onnx::load(&path).unwrap();
    assert_eq!(model.name, "fashion-small-hardened-4");
    let x = zoo::calibration(&model, 1).remove(0);
    runs_match_the_reference(
        &d,
        path.to_str().unwrap(),
        &model,
        &x,
        &[
            ("enclave", None),
            ("slalom", None),
            ("origami", Some("4")),
            ("origami", Some("2")),
            ("plain", None),
        ],
    );
    // Bad settings: refused before any training, with the reason.
    let e = run_err(&["train", "--quick", "--harden-split", "0"]);
    assert!(
        e.contains("a hardened split must be between 1 and 5"),
        "{e}"
    );
    let e = run_err(&["train", "--quick", "--harden-split", "6"]);
    assert!(
        e.contains("a hardened split must be between 1 and 5"),
        "{e}"
    );
    let e = run_err(&[
        "train",
        "--quick",
        "--harden-split",
        "4",
        "--harden-weight=-1",
    ]);
    assert!(e.contains("hardening weight"), "{e}");
    let e = run_err(&["train", "--quick", "--harden-weight", "2"]);
    assert!(e.contains("--harden-split"), "{e}");
}

/// The hardened model committed with its audit (docs/audit/hardened/: `origami train
/// --harden-split 4 --harden-weight 10`, audited at splits 0 and 4) passes the default policy at
/// split 4: `--split auto` takes it, and the privacy line quotes that audit, not the recorded
/// one of the built-in model.
#[test]
fn the_committed_hardened_model_runs_at_its_audited_split() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../docs/audit/hardened");
    let model = dir.join("fashion-small-hardened-4.onnx");
    let audit = dir.join("audit.json");
    let img = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../common/origami-model/assets/samples/0_ankle_boot.png");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&audit).unwrap()).unwrap();
    assert_eq!(report["recommended_split"], 4);
    let out = run_ok(&[
        "run",
        "--model",
        model.to_str().unwrap(),
        "--split",
        "auto",
        "--audit",
        audit.to_str().unwrap(),
        "--input",
        img.to_str().unwrap(),
    ]);
    assert!(out.contains("--split auto: split 4"), "{out}");
    assert!(
        out.contains(&format!("privacy (audit, {}): at split 4", audit.display())),
        "{out}"
    );
    assert!(out.contains("recommended split 4"), "{out}");
    assert!(out.contains("Ankle boot"), "{out}");
    // The built-in model's recorded audit is not taken for this one.
    let out = run_ok(&[
        "run",
        "--model",
        model.to_str().unwrap(),
        "--split",
        "4",
        "--input",
        img.to_str().unwrap(),
    ]);
    assert!(
        out.contains("is not an audit of fashion-small-hardened-4"),
        "{out}"
    );
}
