//! The Python client (crates/client/origami-python) against this `origami` binary: its pytest
//! suite runs under the Python named by `ORIGAMI_PYTHON`, a venv where the wheel is installed
//! (`.ci/run` builds it: `scripts/python-client.sh`). Without it the test skips with a message;
//! `ORIGAMI_REQUIRE_PYTHON=1` makes that a failure.

use std::path::Path;
use std::process::Command;

#[test]
fn python_client_suite() {
    let Some(python) = std::env::var_os("ORIGAMI_PYTHON") else {
        let why = "ORIGAMI_PYTHON is not set (a Python with the origami_client wheel and pytest; \
                   `eval \"$(scripts/python-client.sh)\"` builds one)";
        if std::env::var("ORIGAMI_REQUIRE_PYTHON").as_deref() == Ok("1") {
            panic!("ORIGAMI_REQUIRE_PYTHON=1: {why}");
        }
        eprintln!("skipped: {why}");
        return;
    };
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../client/origami-python/tests");
    let out = Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(&tests)
        .env("ORIGAMI_BIN", env!("CARGO_BIN_EXE_origami"))
        .output()
        .expect("ORIGAMI_PYTHON runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The suite's own summary, for the log (`cargo test -- --nocapture` shows it).
    println!("{text}");
    assert!(
        out.status.success(),
        "the Python client's tests failed:\n{text}"
    );
    assert!(text.contains(" passed"), "no Python test ran:\n{text}");
}
