//! The `origami` binary end to end: demo, run with .npy in and out, zoo export → import, and
//! clear errors for bad input.

use std::path::Path;

use origami_model::{npy, onnx, zoo, Tensor};

mod common;
use common::{run_err, run_ok, runs_match_the_reference, tmpdir};

#[test]
fn demo_runs_and_checks_itself() {
    let out = run_ok(&["demo"]);
    assert!(out.contains("top-5:"), "{out}");
    assert!(out.contains("placement: origami --split 4"), "{out}");
    // The recorded audit's verdict on that split is printed.
    assert!(
        out.contains("privacy (audit, docs/AUDIT.md): at split 4"),
        "{out}"
    );
    assert!(
        out.contains("bit-identical to the quantized reference: yes"),
        "{out}"
    );
    assert!(out.contains("time (ms): total"), "{out}");
    // The built-in trained model recognizes the bundled ankle boot.
    assert!(out.contains("answer: Ankle boot"), "{out}");
    assert!(out.contains("trained on Fashion-MNIST"), "{out}");
    let e = run_err(&["demo", "--image", "10"]);
    assert!(e.contains("--image"), "{e}");
}

/// `run` with an .npy input writes the output as .npy, bit-identical to the in-process
/// quantized reference with the same calibration (seeded inputs + the bundled images).
#[test]
fn run_npy_in_npy_out_matches_the_reference() {
    let model = zoo::resnet_small();
    let x = zoo::seeded_input(&model, 77);
    runs_match_the_reference(
        &tmpdir("npy"),
        "resnet-small",
        &model,
        &x,
        &[
            ("slalom", None),
            ("origami", Some("3")),
            ("plain", None),
            ("enclave", None),
        ],
    );
}

#[test]
fn zoo_export_import_gives_identical_outputs() {
    let d = tmpdir("zoo");
    for name in ["small", "resnet-small", "vgg16@32"] {
        let path = d.join(format!("{name}.onnx"));
        run_ok(&["zoo", "export", name, path.to_str().unwrap()]);
        let imported = onnx::load(&path).unwrap();
        let original = match name {
            "vgg16@32" => zoo::vgg16(32),
            n => zoo::by_name(n).unwrap(),
        };
        assert_eq!(imported, original);
        let x = zoo::seeded_input(&original, 1);
        let a = origami_model::exec::run(&original, &x).unwrap();
        let b = origami_model::exec::run(&imported, &x).unwrap();
        assert_eq!(a, b);
    }
    // And the CLI runs the exported file with an image input.
    let img = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../common/origami-model/assets/samples/1_pullover.png");
    let text = run_ok(&[
        "run",
        "--model",
        d.join("small.onnx").to_str().unwrap(),
        "--mode",
        "origami",
        "--split",
        "2",
        "--input",
        img.to_str().unwrap(),
    ]);
    assert!(
        text.contains("Pullover") || text.contains("top-5"),
        "{text}"
    );
}

#[test]
fn bad_inputs_fail_with_clear_errors() {
    let d = tmpdir("bad");
    let fixtures =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../common/origami-model/tests/fixtures");
    let img = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../common/origami-model/assets/samples/0_ankle_boot.png");
    let img = img.to_str().unwrap();
    // Platforms and accelerators: clear refusals, never a panic.
    let nowhere = d.join("no-attestation");
    let token = d.join("token");
    std::fs::write(&token, "a-link-token-of-enough-bytes\n").unwrap();
    let token = token.to_str().unwrap();
    let e = run_err(&["enclave", "--tcp", "127.0.0.1:0"]);
    assert!(e.contains("--token-file"), "{e}");
    let e = run_err(&[
        "enclave",
        "--tcp",
        "127.0.0.1:0",
        "--token-file",
        token,
        "--platform",
        "sgx-gramine",
        "--attestation-dir",
        nowhere.to_str().unwrap(),
    ]);
    assert!(e.contains("no Gramine attestation interface"), "{e}");
    let e = run_err(&[
        "enclave",
        "--tcp",
        "127.0.0.1:0",
        "--token-file",
        token,
        "--platform",
        "sev",
    ]);
    assert!(e.contains("unknown platform"), "{e}");
    // Confidential-VM platforms outside a CVM: configfs-tsm is missing, said plainly.
    for platform in ["tdx", "sev-snp"] {
        let e = run_err(&[
            "enclave",
            "--tcp",
            "127.0.0.1:0",
            "--token-file",
            token,
            "--platform",
            platform,
        ]);
        assert!(e.contains("no configfs-tsm report interface"), "{e}");
    }
    let e = run_err(&["--accel", "tpu", "demo"]);
    assert!(e.contains("unknown accelerator"), "{e}");
    let e = run_err(&["--tf32", "demo"]);
    assert!(e.contains("--tf32 needs --accel cuda"), "{e}");
    if origami_cuda_absent() {
        let e = run_err(&[
            "--accel", "cuda", "run", "--model", "fashion", "--mode", "plain", "--input", img,
        ]);
        assert!(e.contains("no usable NVIDIA GPU"), "{e}");
    }
    let bad = d.join("bad-collateral.json");
    std::fs::write(&bad, "not json").unwrap();
    let e = run_err(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--sgx-collateral",
        bad.to_str().unwrap(),
    ]);
    assert!(e.contains("not JSON collateral"), "{e}");
    // serve's enclave platform: named choices, and only for the child it starts.
    let e = run_err(&["serve", "--listen", "127.0.0.1:0", "--platform", "sgx"]);
    assert!(e.contains("simulated | tdx | sev-snp"), "{e}");
    let e = run_err(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--in-process",
        "--platform",
        "tdx",
    ]);
    assert!(e.contains("simulated only"), "{e}");
    // Outside a confidential VM the tdx child finds no configfs-tsm and says so.
    let e = run_err(&["serve", "--listen", "127.0.0.1:0", "--platform", "tdx"]);
    assert!(e.contains("configfs-tsm") || e.contains("enclave"), "{e}");
    // Unsupported operator: named with its node.
    let e = run_err(&[
        "run",
        "--model",
        fixtures.join("unsupported_resize.onnx").to_str().unwrap(),
        "--mode",
        "plain",
        "--input",
        img,
    ]);
    assert!(e.contains("Resize"), "{e}");
    // Truncated model file.
    let full = std::fs::read(fixtures.join("residual.onnx")).unwrap();
    let cut = d.join("cut.onnx");
    std::fs::write(&cut, &full[..full.len() / 2]).unwrap();
    let e = run_err(&[
        "run",
        "--model",
        cut.to_str().unwrap(),
        "--mode",
        "plain",
        "--input",
        img,
    ]);
    assert!(
        e.contains("malformed") || e.contains("Malformed") || e.contains("truncat"),
        "{e}"
    );
    // Input of the wrong shape.
    let wrong = d.join("wrong.npy");
    npy::write_npy(&wrong, &Tensor::zeros(vec![1, 3, 8, 8])).unwrap();
    let e = run_err(&[
        "run",
        "--model",
        "small",
        "--mode",
        "slalom",
        "--input",
        wrong.to_str().unwrap(),
    ]);
    assert!(e.contains("takes input"), "{e}");
    // Not an image.
    let junk = d.join("junk.png");
    std::fs::write(&junk, b"not a png").unwrap();
    let e = run_err(&[
        "run",
        "--model",
        "small",
        "--mode",
        "slalom",
        "--input",
        junk.to_str().unwrap(),
    ]);
    assert!(e.contains("cannot decode"), "{e}");
    // Missing split, unknown mode, unknown model, split past the end.
    assert!(
        run_err(&["run", "--model", "small", "--mode", "origami", "--input", img])
            .contains("--split")
    );
    assert!(
        run_err(&["run", "--model", "small", "--mode", "turbo", "--input", img])
            .contains("unknown mode")
    );
    assert!(
        run_err(&["run", "--model", "vgg99", "--mode", "plain", "--input", img])
            .contains("unknown model")
    );
    assert!(run_err(&[
        "run", "--model", "small", "--mode", "origami", "--split", "9", "--input", img
    ])
    .contains("past the last linear layer"));
}

#[test]
fn bench_writes_one_entry_per_placement() {
    let d = tmpdir("bench");
    let json = d.join("b.json");
    run_ok(&[
        "bench",
        "--model",
        "small",
        "--iters",
        "2",
        "--warmup",
        "1",
        "--verify",
        "--json",
        json.to_str().unwrap(),
        "--chart",
        d.join("b.png").to_str().unwrap(),
    ]);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let results = v["results"].as_array().unwrap();
    let names: Vec<&str> = results
        .iter()
        .map(|r| r["placement"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "enclave",
            "slalom",
            "origami --split 4",
            "plain",
            "tee-plain"
        ]
    );
    for r in results {
        assert!(r["median_ms"].as_f64().unwrap() > 0.0);
        assert_eq!(r["batch"], 1);
    }
    assert!(v["ratios"]["origami/plain"].as_f64().unwrap() > 0.0);
    // Every placement against both all-in-TEE baselines; both thread counts recorded.
    for p in ["slalom", "origami --split 4", "plain"] {
        for base in ["enclave", "tee-plain"] {
            assert!(v["ratios"][format!("{base}/{p}")].as_f64().unwrap() > 0.0);
        }
    }
    assert!(v["accelerator_threads"].as_u64().unwrap() >= 1);
    assert_eq!(v["enclave_threads"], 1);
    let png = image::open(d.join("b.png")).unwrap();
    assert!(png.width() > 500 && png.height() > 300);
    // Batches: heads through the enclave one by one, one tail call; per-image times.
    run_ok(&[
        "bench",
        "--model",
        "small",
        "--iters",
        "1",
        "--warmup",
        "0",
        "--batch",
        "3",
        "--precompute-threads",
        "2",
        "--verify",
        "--json",
        json.to_str().unwrap(),
    ]);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["batch"], 3);
    // The JSON says how the pads were made (that such pads give the reference answers is
    // tested in origami-host's placements tests).
    assert_eq!(v["precompute_threads"], 2);
    assert_eq!(v["results"][1]["precompute_threads"], 2);
    for r in v["results"].as_array().unwrap() {
        let (run, per) = (
            r["median_ms"].as_f64().unwrap(),
            r["per_image_ms"].as_f64().unwrap(),
        );
        assert!((run / 3.0 - per).abs() < 1e-9 && per > 0.0, "{r}");
    }
    let e = run_err(&["bench", "--model", "small", "--batch", "0"]);
    assert!(e.contains("--batch"), "{e}");
    let e = run_err(&["bench", "--model", "small", "--precompute-threads", "0"]);
    assert!(e.contains("--precompute-threads"), "{e}");
    let e = run_err(&["bench", "--model", "small", "--placements", "plain,cvm"]);
    assert!(e.contains("'cvm'") && e.contains("tee-plain"), "{e}");
}

/// No CUDA driver here (the development and CI machines): `--accel cuda` must refuse clearly.
fn origami_cuda_absent() -> bool {
    !std::path::Path::new("/dev/nvidiactl").exists()
}

fn ankle_boot_png() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../common/origami-model/assets/samples/0_ankle_boot.png")
        .display()
        .to_string()
}

/// `--split auto` takes the split from an audit of the same model, and refuses an audit of
/// another model or one without a recommendation, with clear errors.
#[test]
fn split_auto_follows_the_audit() {
    let dir = tmpdir("auto");
    let img = ankle_boot_png();
    let recorded: serde_json::Value =
        serde_json::from_str(origami_audit::split::RECORDED_AUDIT).unwrap();
    // The recorded audit of the built-in model is what `--split auto` uses by default.
    let args = [
        "run", "--model", "fashion", "--split", "auto", "--input", &img,
    ];
    match recorded["recommended_split"].as_u64() {
        Some(k) => {
            let out = run_ok(&args);
            assert!(out.contains(&format!("--split auto: split {k}")), "{out}");
        }
        None => {
            let e = run_err(&args);
            assert!(e.contains("found no split"), "{e}");
        }
    }
    let mut v = recorded.clone();
    v["recommended_split"] = serde_json::json!(5);
    let a = dir.join("a.json");
    std::fs::write(&a, v.to_string()).unwrap();
    let a = a.display().to_string();
    let out = run_ok(&[
        "run", "--model", "fashion", "--split", "auto", "--audit", &a, "--input", &img,
    ]);
    assert!(out.contains("--split auto: split 5"), "{out}");
    assert!(out.contains("placement origami --split 5"), "{out}");
    assert!(out.contains("privacy (audit"), "{out}");
    let e = run_err(&[
        "run", "--model", "small", "--split", "auto", "--audit", &a, "--input", &img,
    ]);
    assert!(e.contains("audits model fashion-small"), "{e}");
    v["recommended_split"] = serde_json::Value::Null;
    let b = dir.join("b.json");
    std::fs::write(&b, v.to_string()).unwrap();
    let e = run_err(&[
        "run",
        "--model",
        "fashion",
        "--split",
        "auto",
        "--audit",
        &b.display().to_string(),
        "--input",
        &img,
    ]);
    assert!(e.contains("found no split"), "{e}");
    let e = run_err(&[
        "run", "--model", "fashion", "--split", "many", "--input", &img,
    ]);
    assert!(e.contains("--split takes a number or `auto`"), "{e}");
}

/// The audit command fails fast with clear errors on bad arguments and data.
#[test]
fn audit_rejects_bad_input() {
    let empty = tmpdir("audit-empty");
    let out = tmpdir("audit-out");
    let e = run_err(&[
        "audit",
        "--data",
        &empty.display().to_string(),
        "--out",
        &out.display().to_string(),
    ]);
    assert!(e.contains("usable images"), "{e}");
    let e = run_err(&["audit", "--layers", "1,x"]);
    assert!(e.contains("--layers takes"), "{e}");
    let e = run_err(&["audit", "--max-identification", "1.5"]);
    assert!(
        e.contains("--max-identification must be between 0 and 1"),
        "{e}"
    );
    let e = run_err(&[
        "audit",
        "--model",
        "squeezenet1.1@256",
        "--data",
        &empty.display().to_string(),
    ]);
    assert!(e.contains("sides of 28 to 224 pixels"), "{e}");
}

#[test]
fn plan_and_run_say_where_a_head_inside_a_branch_really_ends() {
    // resnet-small: split 2 ends inside the first residual block; the head extends to 3.
    let out = run_ok(&["plan", "--model", "resnet-small"]);
    assert!(
        out.contains("--split 2 falls inside a branch: the head extends to 3 linear layers"),
        "{out}"
    );
    let d = tmpdir("branch");
    let inp = d.join("x.npy");
    npy::write_npy(&inp, &zoo::seeded_input(&zoo::resnet_small(), 5)).unwrap();
    let run = |split: &str| {
        run_ok(&[
            "run",
            "--model",
            "resnet-small",
            "--mode",
            "origami",
            "--split",
            split,
            "--input",
            inp.to_str().unwrap(),
        ])
    };
    let out = run("2");
    assert!(out.contains("the head extends to 3 linear layers"), "{out}");
    // A split at a join is not extended.
    let out = run("3");
    assert!(!out.contains("falls inside a branch"), "{out}");
}

/// `origami measure sev-snp` computes AMD's launch digest (the vectors the `sev` crate expects
/// for its sample firmware; they come from `sev-snp-measure`) and the code id the client's
/// verifier derives from a report with that MEASUREMENT and HOST_DATA.
#[test]
fn measure_sev_snp_gives_the_launch_digest_and_the_verifiers_code_id() {
    let d = tmpdir("measure");
    let ovmf = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/ovmf_AmdSev_suffix.bin"
    );
    let (kernel, initrd) = (d.join("vmlinuz"), d.join("initrd"));
    std::fs::write(&kernel, b"").unwrap();
    std::fs::write(&initrd, b"").unwrap();
    let (k, i) = (kernel.to_str().unwrap(), initrd.to_str().unwrap());
    let host_data = "ab".repeat(32);
    // `measure sev-snp` on the sample firmware, an empty kernel and initrd, and `extra`.
    let snp = |extra: &[&str]| -> Vec<String> {
        let base = [
            "measure", "sev-snp", "--ovmf", ovmf, "--kernel", k, "--initrd", i,
        ];
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let args = snp(&[
        "--cmdline",
        "console=ttyS0 loglevel=7",
        "--vcpus",
        "1",
        "--vcpu-type",
        "EPYC-v4",
        "--guest-features",
        "0x21",
        "--host-data",
        &host_data,
        "--model",
        "fashion",
    ]);
    let out = run_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let field = |name: &str| -> String {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {out}"))
            .trim()
            .trim_matches('"')
            .to_string()
    };
    let m = field("MEASUREMENT");
    assert_eq!(
        m,
        "803f691094946e42068aaa3a8f9e26a5c89f36f7b73ecfb28c653360fe4b3aba7e534442e7e1e17895dfe778d0228977"
    );
    let mut measurement = [0u8; 48];
    for (j, b) in measurement.iter_mut().enumerate() {
        *b = u8::from_str_radix(&m[2 * j..2 * j + 2], 16).unwrap();
    }
    let code = origami_proto::evidence::hex(&origami_proto::snp::snp_code_id_of(
        &measurement,
        &[0xab; 32],
    ));
    assert_eq!(field("code_id     "), code);
    assert_eq!(field("code_id = "), code);
    assert_eq!(field("platform = "), "sev-snp");
    assert_eq!(
        field("model_hash = "),
        origami_proto::evidence::hex(&zoo::load("fashion").unwrap().hash())
    );
    // The SNP-only feature set gives AMD's other vector; another vCPU count another digest.
    let run = |extra: &[&str]| run_ok(&snp(extra).iter().map(String::as_str).collect::<Vec<_>>());
    let out = run(&["--guest-features", "0x1"]);
    assert!(out.contains("MEASUREMENT ddc5224521617a536ee7ce9dd6224d1b58a8d4fda1c741f3ac99fc4bfa04ba6e9fc98646d4a07a9079397fa3852819b5"), "{out}");
    let two = run(&["--vcpus", "2"]);
    assert!(!two.contains("ddc5224521617a53"), "{two}");
    // Clear errors for bad input.
    let e = run_err(&["measure", "sev-snp", "--ovmf", "/nonexistent/OVMF.fd"]);
    assert!(
        e.contains("--ovmf /nonexistent/OVMF.fd: no such file"),
        "{e}"
    );
    let e = run_err(&[
        "measure",
        "sev-snp",
        "--ovmf",
        ovmf,
        "--vcpu-type",
        "pentium",
    ]);
    assert!(e.contains("--vcpu-type pentium"), "{e}");
    let e = run_err(&["measure", "sev-snp", "--ovmf", ovmf, "--host-data", "12"]);
    assert!(e.contains("--host-data: expected 64 hex digits"), "{e}");
    // Firmware without SEV metadata (not an SEV build) is refused, not measured.
    let junk = d.join("junk.fd");
    std::fs::write(&junk, vec![0u8; 8192]).unwrap();
    let e = run_err(&["measure", "sev-snp", "--ovmf", junk.to_str().unwrap()]);
    assert!(e.contains("computing the launch digest"), "{e}");
    // An empty or partial-page file is refused before parsing.
    std::fs::write(&junk, b"").unwrap();
    let e = run_err(&["measure", "sev-snp", "--ovmf", junk.to_str().unwrap()]);
    assert!(e.contains("whole number of 4 KiB pages"), "{e}");
}

/// `origami measure tdx` hashes the five registers the way the verifier does from a quote.
#[test]
fn measure_tdx_gives_the_verifiers_code_id() {
    let reg = |b: u8| format!("{b:02x}").repeat(48);
    let out = run_ok(&[
        "measure",
        "tdx",
        "--mrtd",
        &reg(1),
        "--rtmr0",
        &reg(2),
        "--rtmr1",
        &reg(3),
        "--rtmr2",
        &reg(4),
    ]);
    let want =
        origami_proto::tdx::tdx_code_id_of(&[1; 48], [&[2; 48], &[3; 48], &[4; 48], &[0; 48]]);
    assert!(
        out.contains(&format!(
            "code_id = \"{}\"",
            origami_proto::evidence::hex(&want)
        )),
        "{out}"
    );
    assert!(out.contains("platform = \"tdx\""), "{out}");
    let e = run_err(&[
        "measure",
        "tdx",
        "--mrtd",
        "zz",
        "--rtmr0",
        &reg(2),
        "--rtmr1",
        &reg(3),
        "--rtmr2",
        &reg(4),
    ]);
    assert!(e.contains("--mrtd: expected 96 hex digits"), "{e}");
}
