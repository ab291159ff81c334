//! What the `origami` binary's tests share: the binary, a scratch directory, and runs that
//! must succeed or fail with a clear error.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_origami"));
    c.env("RAYON_NUM_THREADS", "2");
    c
}

pub fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("origami-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn run_ok(args: &[&str]) -> String {
    let out = bin().args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "origami {args:?} failed:\n{text}");
    text
}

pub fn run_err(args: &[&str]) -> String {
    let out = bin().args(args).output().unwrap();
    assert!(!out.status.success(), "origami {args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.starts_with("error: "), "no clear error message: {err}");
    assert!(
        !err.contains("panicked"),
        "panic instead of an error: {err}"
    );
    err
}

/// `origami run --model MODEL_ARG --mode M [--split K] --verify --input x.npy --output y.npy
/// --calib 3` for each `(mode, split)`: the .npy output must be bit-identical to the in-process
/// quantized reference with the calibration the CLI uses (`zoo::calibration(model, 3)`).
pub fn runs_match_the_reference(
    dir: &std::path::Path,
    model_arg: &str,
    model: &origami_model::Model,
    x: &origami_model::Tensor,
    placements: &[(&str, Option<&str>)],
) {
    use origami_enclave::{reference, Placement, Plan, QuantConfig};
    use origami_model::{npy, zoo};
    let inp = dir.join("x.npy");
    npy::write_npy(&inp, x).unwrap();
    let calib = zoo::calibration(model, 3);
    let plan = Plan::build(model, &calib, QuantConfig::default()).unwrap();
    for &(mode, split) in placements {
        let outp = dir.join(format!("y-{mode}-{}.npy", split.unwrap_or("-")));
        let mut args = vec![
            "run",
            "--model",
            model_arg,
            "--mode",
            mode,
            "--verify",
            "--input",
            inp.to_str().unwrap(),
            "--output",
            outp.to_str().unwrap(),
            "--calib",
            "3",
        ];
        if let Some(s) = split {
            args.extend(["--split", s]);
        }
        let text = run_ok(&args);
        assert!(text.contains("top-5:"), "{text}");
        let got = npy::read_npy(&outp).unwrap();
        let placement = Placement::parse(mode, split.map(|s| s.parse().unwrap())).unwrap();
        let want = reference(&plan, x, plan.head_end(placement).unwrap(), 1).unwrap();
        assert_eq!(got, want, "{mode} {split:?}");
    }
}
