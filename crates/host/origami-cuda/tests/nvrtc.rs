//! The real kernel source through NVIDIA's own compilers, without a GPU: NVRTC (the library the
//! accelerator compiles with at start-up) must accept `kernels.cu` and export every kernel the
//! device loads, and `ptxas` (the assembler the driver's JIT is built on) must turn the PTX into
//! Hopper machine code. A g++ build of the same source is tested in `src/emu.rs`; this catches
//! what only NVIDIA's front end rejects.
//!
//! Needs `libnvrtc.so.13` on `LD_LIBRARY_PATH` and `ptxas` on `PATH` (or `ORIGAMI_PTXAS`);
//! `scripts/cuda-tools.sh` fetches both from PyPI and `.ci/run` uses it. Skips with a reason
//! where they are missing.

use std::path::PathBuf;
use std::process::Command;

use origami_cuda::{compile_kernels, nvrtc_present, KERNEL_NAMES};

fn ptxas() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ORIGAMI_PTXAS") {
        return Some(PathBuf::from(p));
    }
    let ok = Command::new("ptxas").arg("--version").output();
    ok.is_ok_and(|o| o.status.success()).then(|| "ptxas".into())
}

#[test]
fn nvrtc_compiles_the_kernels_and_ptxas_assembles_them_for_hopper() {
    if !nvrtc_present() {
        origami_model::skip::missing(
            origami_model::skip::REQUIRE_GPU,
            "NVRTC (libnvrtc.so.13) not found on LD_LIBRARY_PATH; \
             run scripts/cuda-tools.sh and export what it prints",
        );
        return;
    }
    let ptx = compile_kernels().unwrap_or_else(|e| panic!("{e}"));
    // Every kernel the device loads is an exported (extern "C", unmangled) entry point, and
    // there is no other.
    let entries: Vec<&str> = ptx
        .lines()
        .filter_map(|l| l.trim().strip_prefix(".visible .entry "))
        .map(|l| l.split('(').next().unwrap_or("").trim())
        .collect();
    let mut want: Vec<&str> = KERNEL_NAMES.to_vec();
    let mut got = entries.clone();
    want.sort_unstable();
    got.sort_unstable();
    assert_eq!(
        got, want,
        "entry points in the PTX vs the kernels the device loads"
    );
    // No contracted multiply-add: the device compiles with --fmad=false so the elementwise
    // kernels (bias, batch norm, pooling) round as the CPU executor does. The one exception is
    // softmax, whose expf is CUDA's own implementation (explicit FMAs inside; the stated tail
    // tolerance covers it).
    let mut kernel = "";
    for line in ptx.lines() {
        if let Some(rest) = line.trim().strip_prefix(".visible .entry ") {
            kernel = rest.split('(').next().unwrap_or("").trim();
        }
        let op = line.trim_start();
        if op.starts_with("fma.") && (op.contains(".f32") || op.contains(".f64")) {
            assert_eq!(kernel, "softmax_f32", "float FMA in {kernel}: {op}");
        }
    }
    eprintln!(
        "NVRTC: {} kernels, {} bytes of PTX",
        entries.len(),
        ptx.len()
    );

    let Some(ptxas) = ptxas() else {
        eprintln!("ptxas not found (PATH or ORIGAMI_PTXAS): Hopper assembly not checked");
        return;
    };
    let dir = std::env::temp_dir().join(format!("origami-ptxas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let src = dir.join("kernels.ptx");
    std::fs::write(&src, &ptx).expect("write PTX");
    let out = Command::new(&ptxas)
        .args(["-arch=sm_90", "-v", "-o"])
        .arg(dir.join("kernels.cubin"))
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", ptxas.display()));
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "ptxas -arch=sm_90 failed:\n{log}");
    // One resource line per kernel; every kernel must launch with 256 threads per block
    // (device.rs BLOCK): at most 255 registers a thread, and no local-memory spills.
    let mut reported = 0;
    for name in KERNEL_NAMES {
        let at = log
            .find(&format!("Compiling entry function '{name}'"))
            .unwrap_or_else(|| panic!("ptxas did not compile {name}:\n{log}"));
        let rest = &log[at..];
        let block = rest[1..]
            .find("Compiling entry function")
            .map_or(rest, |end| &rest[..=end]);
        let regs: u32 = block
            .split("Used ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no register count for {name}:\n{block}"));
        assert!(regs <= 255, "{name}: {regs} registers");
        assert!(
            block.contains("0 bytes spill stores"),
            "{name} spills registers:\n{block}"
        );
        eprintln!("ptxas sm_90: {name}: {regs} registers");
        reported += 1;
    }
    assert_eq!(reported, KERNEL_NAMES.len());
}
