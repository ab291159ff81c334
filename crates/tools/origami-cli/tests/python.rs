//! The Python suites against this `origami` binary, under the Python named by `ORIGAMI_PYTHON`
//! (a venv where the client's wheel is installed; `.ci/run` builds it with
//! `scripts/python-client.sh`): the Python client's own suite (crates/client/origami-python/
//! tests) and the Kubernetes session-affinity test (deploy/k8s/tests: two replicas behind a
//! load balancer). Without `ORIGAMI_PYTHON` they skip with a message; `ORIGAMI_REQUIRE_PYTHON=1`
//! makes that a failure.

use std::path::Path;
use std::process::Command;

fn python() -> Option<std::ffi::OsString> {
    let p = std::env::var_os("ORIGAMI_PYTHON");
    if p.is_none() {
        let why = "ORIGAMI_PYTHON is not set (a Python with the origami_client wheel and pytest; \
                   `eval \"$(scripts/python-client.sh)\"` builds one)";
        if std::env::var("ORIGAMI_REQUIRE_PYTHON").as_deref() == Ok("1") {
            panic!("ORIGAMI_REQUIRE_PYTHON=1: {why}");
        }
        eprintln!("skipped: {why}");
    }
    p
}

/// Runs pytest on `dir` (relative to the repository root) and asserts that tests ran and passed.
fn pytest(python: &std::ffi::OsStr, dir: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..");
    let out = Command::new(python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(root.join(dir))
        .env("ORIGAMI_BIN", env!("CARGO_BIN_EXE_origami"))
        .output()
        .expect("ORIGAMI_PYTHON runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The suite's own summary, for the log (`cargo test -- --nocapture` shows it).
    println!("{dir}:\n{text}");
    assert!(out.status.success(), "{dir} failed:\n{text}");
    assert!(text.contains(" passed"), "no test ran in {dir}:\n{text}");
}

#[test]
fn python_client_suite() {
    if let Some(p) = python() {
        pytest(&p, "crates/client/origami-python/tests");
    }
}

#[test]
fn kubernetes_session_affinity_suite() {
    if let Some(p) = python() {
        pytest(&p, "deploy/k8s/tests");
    }
}
