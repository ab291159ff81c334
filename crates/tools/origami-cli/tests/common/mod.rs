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
