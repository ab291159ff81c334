//! The enclave binary's dependency closure, as Cargo resolves it for this package alone (what
//! a measured build compiles: `cargo build --release -p origami-enclave-bin`), holds none of the
//! host's machinery: no HTTP server or client, no async runtime, no GPU loader, no image
//! decoding, plotting or training code, and none of the untrusted origami crates.

use std::collections::BTreeSet;
use std::process::Command;

const FORBIDDEN: [&str; 22] = [
    "axum",
    "hyper",
    "hyper-util",
    "tower",
    "tokio",
    "mio",
    "ureq",
    "reqwest",
    "rustls",
    "cudarc",
    "plotters",
    "image",
    "png",
    "jpeg-decoder",
    "zune-jpeg",
    "indicatif",
    "origami-host",
    "origami-server",
    "origami-client",
    "origami-train",
    "origami-audit",
    "origami-cuda",
];

#[test]
fn the_enclave_binary_links_no_host_machinery() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "--locked",
            "-p",
            "origami-enclave-bin",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crates: BTreeSet<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert!(crates.contains("origami-enclave"), "{crates:?}");
    let bad: Vec<&str> = FORBIDDEN
        .iter()
        .copied()
        .filter(|f| crates.contains(*f))
        .collect();
    assert!(bad.is_empty(), "the enclave binary depends on {bad:?}");
    // Also: no test-only key constructors in what it links.
    let features = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "tree",
            "--offline",
            "--locked",
            "-p",
            "origami-enclave-bin",
            "-e",
            "normal,features",
            "--prefix",
            "none",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo tree");
    let text = String::from_utf8_lossy(&features.stdout);
    assert!(!text.contains("insecure-test-keys"), "{text}");
    eprintln!("the enclave binary's closure: {} crates", crates.len());
}
