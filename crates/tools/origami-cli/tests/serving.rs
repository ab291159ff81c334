//! The enclave as its own process and `origami serve` end to end: an enclave killed
//! mid-request and restarted, serve + infer with a policy file, graceful stops on SIGINT and
//! SIGTERM, pad files from `origami precompute` with an attached enclave.

use std::path::{Path, PathBuf};

use origami_model::zoo;

mod common;
use common::{bin, run_err, run_ok, tmpdir};

/// Starts `origami enclave` on a fresh socket and waits until it listens.
fn start_enclave(dir: &Path, mode: &str) -> (std::process::Child, PathBuf) {
    let sock = dir.join(format!("enclave-{mode}.sock"));
    let mut child = bin()
        .args([
            "enclave",
            "--socket",
            &sock.display().to_string(),
            "--model",
            "fashion",
            "--mode",
            mode,
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..600 {
        if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
            return (child, sock);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!(
        "the enclave process did not start listening on {}",
        sock.display()
    );
}

/// The enclave in its own process: killed mid-request, the host gets a clear error; a restarted
/// enclave has new keys, and a pad of the old instance is rejected there.
#[test]
fn enclave_process_fault_and_restart() {
    use origami_enclave::Reply;
    use origami_host::remote::RemoteEnclave;
    use origami_proto::evidence::{verify, AllowedMeasurement, Policy};
    use origami_proto::session::seal_request;
    use origami_proto::tensor::WireTensor;
    let dir = tmpdir("enclave-proc");
    let model = zoo::fashion();
    let policy = Policy {
        allow_simulated: true,
        measurements: vec![AllowedMeasurement {
            platform: "simulated".into(),
            code_id: "*".into(),
            model_hash: origami_proto::evidence::hex(&model.hash()),
            min_split: None,
        }],
        placements: vec!["slalom".into()],
        ..Policy::default()
    };
    let x = zoo::seeded_input(&model, 1);
    let req_bytes = origami_proto::encode(&WireTensor {
        shape: x.shape.iter().map(|&d| d as u32).collect(),
        data: x.data.clone(),
    });
    let (mut child, sock) = start_enclave(&dir, "slalom");
    let mut remote = RemoteEnclave::new(std::os::unix::net::UnixStream::connect(&sock).unwrap());
    let ev = remote.evidence().unwrap();
    let binding = verify(&ev, &policy).unwrap();
    // Without the simulation opt-in the evidence is refused, with the reason.
    let strict = Policy {
        allow_simulated: false,
        ..policy.clone()
    };
    assert!(verify(&ev, &strict)
        .unwrap_err()
        .to_string()
        .contains("SIMULATED"));
    let old_pads = remote.precompute(1).unwrap();
    let (req, _) = seal_request(&ev.enclave_key, &binding, &req_bytes).unwrap();
    let first = remote.begin(&req).unwrap();
    let origami_enclave::Step::Offload(o) = first else {
        panic!("slalom starts with an offload");
    };
    // Kill the enclave mid-request.
    child.kill().unwrap();
    child.wait().unwrap();
    let old = old_pads
        .iter()
        .find(|p| p.pad_id == o.pad_id && p.layer == o.layer)
        .unwrap()
        .clone();
    let e = remote
        .resume(Reply::Linear {
            result: vec![0; old.len],
            sealed_u: old.clone(),
        })
        .unwrap_err();
    assert!(
        matches!(e, origami_enclave::EnclaveError::Unavailable(_)),
        "{e}"
    );
    // Restart: new keys and instance; the old session's request does not open there.
    let (mut child2, sock2) = start_enclave(&dir, "slalom");
    let mut remote2 = RemoteEnclave::new(std::os::unix::net::UnixStream::connect(&sock2).unwrap());
    let ev2 = remote2.evidence().unwrap();
    assert_ne!(ev2.enclave_key, ev.enclave_key);
    assert_ne!(ev2.instance, ev.instance);
    let (stale, _) = seal_request(&ev.enclave_key, &binding, &req_bytes).unwrap();
    assert!(remote2.begin(&stale).is_err());
    // A client re-attests; the old instance's pad is rejected by the new one.
    let binding2 = verify(&ev2, &policy).unwrap();
    let _ = remote2.precompute(1).unwrap();
    let (req2, pending2) = seal_request(&ev2.enclave_key, &binding2, &req_bytes).unwrap();
    let origami_enclave::Step::Offload(o2) = remote2.begin(&req2).unwrap() else {
        panic!("slalom starts with an offload");
    };
    assert_eq!(
        (o2.pad_id, o2.layer),
        (o.pad_id, o.layer),
        "same ids, different instance"
    );
    let e = remote2
        .resume(Reply::Linear {
            result: vec![0; old.len],
            sealed_u: old,
        })
        .unwrap_err();
    // The host learns only that the request failed; its client learns why.
    let origami_enclave::EnclaveError::Failed(sealed) = e else {
        panic!("expected a sealed failure, got {e:?}");
    };
    assert_eq!(
        pending2.open_answer(&sealed).unwrap_err().unwrap(),
        origami_proto::session::Failure::PadRejected
    );
    child2.kill().unwrap();
    child2.wait().unwrap();
}

fn http_get(url: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// `origami serve` on port 0 (the enclave as its own process) and `origami infer` with a
/// policy file: the answer for a bundled image, a clear refusal of the simulated enclave without
/// the opt-in; the enclave process killed → restarted with new keys, the client re-attests and
/// gets its answer; a clean exit on Ctrl-C (SIGINT).
#[test]
fn serve_and_infer_with_a_policy() {
    let dir = tmpdir("serve");
    let Served {
        mut child,
        url,
        code,
        model,
        enclave_pid,
        rest,
    } = start_serve(&["--pad-low", "1", "--pad-high", "1"]);
    let pid = enclave_pid.unwrap_or(0);
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!("allow_simulated = true\nplacements = [\"slalom\"]\n[[measurements]]\n{code}\n{model}\n"),
    )
    .unwrap();
    let img = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../common/origami-model/assets/samples/6_coat.png");
    let args = |p: &Path| {
        vec![
            "infer".to_string(),
            "--server".into(),
            url.clone(),
            "--image".into(),
            img.display().to_string(),
            "--policy".into(),
            p.display().to_string(),
        ]
    };
    let a = args(&policy);
    let out = run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.contains("placement slalom"), "{out}");
    assert!(out.contains("1. class    4 Coat"), "{out}");
    let strict = dir.join("strict.toml");
    std::fs::write(
        &strict,
        format!("placements = [\"slalom\"]\n[[measurements]]\n{code}\n{model}\n"),
    )
    .unwrap();
    let a = args(&strict);
    let e = run_err(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        e.contains("SIMULATED") && e.contains("refused by policy"),
        "{e}"
    );
    // Kill the enclave process (once the pool is refilled, so the server notices at the next
    // request): the server restarts it with new keys; the client re-attests and retries.
    assert!(pid > 0, "no enclave pid printed");
    for _ in 0..600 {
        if http_get(&url, "/metrics").contains("origami_pads_ready 1") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let a = args(&policy);
    let out = run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.contains("re-attested"), "{out}");
    assert!(out.contains("1. class    4 Coat"), "{out}");
    let m = http_get(&url, "/metrics");
    assert!(m.contains("origami_enclave_restarts_total 1"), "{m}");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "allow_simulated = true\nallow_everything = true\n").unwrap();
    let a = args(&bad);
    let e = run_err(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(e.contains("allow_everything"), "{e}");
    // SIGINT: graceful shutdown, exit status 0.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let rest: Vec<String> = rest.iter().collect();
    assert!(rest.iter().any(|l| l.contains("shutting down")), "{rest:?}");
}

/// A running `origami serve`.
struct Served {
    child: std::process::Child,
    url: String,
    /// The policy lines it prints (`code_id = "…"`, `model_hash = "…"`).
    code: String,
    model: String,
    /// The enclave child's pid, when it started one.
    enclave_pid: Option<i32>,
    /// Its later stdout lines.
    rest: std::sync::mpsc::Receiver<String>,
}

/// `origami serve --listen 127.0.0.1:0 --mode slalom` with `extra` arguments.
fn start_serve(extra: &[&str]) -> Served {
    use std::io::BufRead;
    let mut child = bin()
        .args(["serve", "--listen", "127.0.0.1:0", "--mode", "slalom"])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut url, mut code, mut model, mut enclave_pid) =
        (String::new(), String::new(), String::new(), None);
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(p) = line.strip_prefix("enclave process: pid ") {
            enclave_pid = Some(p.trim().parse().unwrap());
        }
        if let Some(u) = line.strip_prefix("listening on ") {
            url = u.to_string();
        }
        if let Some(p) = line.strip_prefix("policy for clients: ") {
            // `platform = …, code_id = …, model_hash = …`: the platform goes with the code.
            let parts: Vec<&str> = p.split(", ").collect();
            assert_eq!(parts.len(), 3, "{p}");
            code = format!("{}\n{}", parts[0], parts[1]);
            model = parts[2].to_string();
            break;
        }
    }
    assert!(
        url.starts_with("http://127.0.0.1:"),
        "serve did not start: {url}"
    );
    // Keep draining stdout so the server never blocks on a full pipe.
    let (tx, rest) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    Served {
        child,
        url,
        code,
        model,
        enclave_pid,
        rest,
    }
}

/// SIGTERM (what Kubernetes and `docker stop` send) stops `origami serve` as Ctrl-C does:
/// exit status 0, the graceful-shutdown line, and its enclave child gone with it.
#[test]
fn serve_stops_gracefully_on_sigterm_with_its_enclave() {
    let Served {
        mut child,
        enclave_pid,
        rest,
        ..
    } = start_serve(&[]);
    let pid = enclave_pid.expect("serve printed its enclave's pid");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let gone = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(25));
        (unsafe { libc::kill(pid, 0) }) != 0
    });
    if !gone {
        // Never leave it behind (it would also hold this test's output pipe open).
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    assert!(status.success(), "{status:?}");
    assert!(gone, "the enclave process {pid} outlived the server");
    let rest: Vec<String> = rest.iter().collect();
    assert!(rest.iter().any(|l| l.contains("shutting down")), "{rest:?}");
}

fn stop(mut child: std::process::Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert!(child.wait().unwrap().success());
}

/// A long-lived enclave on TCP; `origami precompute` fills a pad file with a progress bar;
/// `origami serve --enclave … --pads FILE` answers from those pads without precomputing; a
/// second server on the same file never reuses a pad (the enclave refuses used ones, the host
/// drops them and offers the next); a tampered pad in the file fails its request with a clear
/// error while serving goes on; a new enclave instance refuses the old file outright.
#[test]
fn pad_files_from_precompute_with_an_attached_enclave() {
    use std::io::BufRead;
    let dir = tmpdir("padfile");
    let token = dir.join("token");
    std::fs::write(&token, "0f3c9a1e6b2d4f7a8c5e0b1d3f6a9c2e\n").unwrap();
    let token = token.display().to_string();
    let start = || {
        let mut c = bin()
            .args([
                "enclave",
                "--tcp",
                "127.0.0.1:0",
                "--token-file",
                &token,
                "--model",
                "fashion",
                "--mode",
                "slalom",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = c.stdout.take().unwrap();
        let line = std::io::BufReader::new(out)
            .lines()
            .next()
            .unwrap()
            .unwrap();
        let at = line.rsplit_once("listening on ").unwrap().1.to_string();
        assert!(at.starts_with("tcp:127.0.0.1:"), "{line}");
        assert!(
            line.contains("SIMULATED") || line.contains("simulated"),
            "{line}"
        );
        (c, at)
    };
    let (mut enclave, at) = start();
    let pads = dir.join("pads.bin");
    let pads_s = pads.display().to_string();
    // Without the link token, or with another, the enclave refuses the host.
    let e = run_err(&[
        "precompute",
        "--enclave",
        &at,
        "--count",
        "1",
        "--out",
        &pads_s,
    ]);
    assert!(e.contains("--enclave-token-file"), "{e}");
    let wrong = dir.join("wrong-token");
    std::fs::write(&wrong, "not-the-token-the-enclave-has").unwrap();
    let e = run_err(&[
        "precompute",
        "--enclave",
        &at,
        "--enclave-token-file",
        wrong.to_str().unwrap(),
        "--count",
        "1",
        "--out",
        &pads_s,
    ]);
    assert!(e.contains("refused the link token"), "{e}");
    assert!(!e.contains("not-the-token"), "{e}");
    let out = run_ok(&[
        "precompute",
        "--enclave",
        &at,
        "--enclave-token-file",
        &token,
        "--count",
        "4",
        "--out",
        &pads_s,
    ]);
    assert!(out.contains("wrote 4 pads"), "{out}");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "temporary files left behind: {left:?}");
    let img = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../common/origami-model/assets/samples/6_coat.png");
    let img = img.display().to_string();
    let infer = |url: &str, policy: &Path, ok: bool| {
        let p = policy.display().to_string();
        let args = ["infer", "--server", url, "--image", &img, "--policy", &p];
        if ok {
            let out = run_ok(&args);
            assert!(out.contains("1. class    4 Coat"), "{out}");
            out
        } else {
            run_err(&args)
        }
    };
    let policy_for = |code: &str, model: &str| {
        let p = dir.join("policy.toml");
        std::fs::write(
            &p,
            format!("allow_simulated = true\n[[measurements]]\n{code}\n{model}\n"),
        )
        .unwrap();
        p
    };
    let serve_args = [
        "--enclave",
        &at,
        "--enclave-token-file",
        &token,
        "--pads",
        &pads_s,
        "--pad-low",
        "0",
        "--pad-high",
        "1",
    ];
    // First server: pad 0 from the file, nothing precomputed by the server.
    let Served {
        child: server,
        url,
        code,
        model,
        ..
    } = start_serve(&serve_args);
    let policy = policy_for(&code, &model);
    infer(&url, &policy, true);
    let m = http_get(&url, "/metrics");
    assert!(m.contains("origami_pads_precomputed_total 0"), "{m}");
    assert!(m.contains("origami_pads_ready 3"), "{m}");
    stop(server);
    // Second server on the same file: pad 0 is used, refused by the enclave and dropped;
    // pad 1 answers.
    let Served {
        child: server, url, ..
    } = start_serve(&serve_args);
    infer(&url, &policy, true);
    let m = http_get(&url, "/metrics");
    assert!(m.contains("origami_pads_precomputed_total 0"), "{m}");
    assert!(m.contains("origami_pads_ready 2"), "{m}");
    stop(server);
    // A bit flipped in the last sealed entry (pad 3): pad 2 answers, pad 3's request fails
    // clearly, the next request gets a fresh pad.
    let mut bytes = std::fs::read(&pads).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    let tampered = dir.join("tampered.bin");
    std::fs::write(&tampered, bytes).unwrap();
    let t = tampered.display().to_string();
    let Served {
        child: server, url, ..
    } = start_serve(&[
        "--enclave",
        &at,
        "--enclave-token-file",
        &token,
        "--pads",
        &t,
        "--pad-low",
        "0",
        "--pad-high",
        "1",
    ]);
    infer(&url, &policy, true);
    let e = infer(&url, &policy, false);
    // The client, not the host, learns the cause (sealed in the answer).
    assert!(e.contains("sealed pad that does not authenticate"), "{e}");
    infer(&url, &policy, true);
    stop(server);
    // A restarted enclave is another instance: the file is refused, not loaded.
    let _ = enclave.kill();
    let _ = enclave.wait();
    let (mut enclave, at2) = start();
    let e = run_err(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--mode",
        "slalom",
        "--enclave",
        &at2,
        "--enclave-token-file",
        &token,
        "--pads",
        &pads_s,
    ]);
    assert!(e.contains("not to the running instance"), "{e}");
    let e = run_err(&[
        "precompute",
        "--enclave",
        "tcp:nowhere",
        "--count",
        "1",
        "--out",
        &pads_s,
    ]);
    assert!(e.contains("tcp:HOST:PORT"), "{e}");
    let _ = enclave.kill();
    let _ = enclave.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
