//! The server end to end on loopback (port 0): a client that allows simulation gets answers
//! equal to the local quantized reference bit for bit; the default policy refuses the simulated
//! enclave with a clear message; tampered and replayed requests are rejected while the server
//! keeps serving; 32 concurrent clients × 20 requests are all answered, each with its own
//! answer; metrics count them.

use std::sync::Arc;

use origami_client::{Client, ClientError};
use origami_enclave::service::{self_code_id, EnclaveService};
use origami_enclave::{reference, CoreConfig, EnclaveError, Placement};
use origami_model::{zoo, Tensor};
use origami_proto::evidence::Policy;
use origami_proto::rejection::Rejection;
use origami_proto::ProtoError;
use origami_server::{cpu_accelerator, start, ServerConfig};

mod common;
use common::{plan, policy, same, serve};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_attest_infer_under_load() {
    let plan = plan();
    let placement = Placement::Slalom;
    let server = serve(&plan, placement, ServerConfig::default()).await;
    let base = format!("http://{}", server.addr);
    let p = plan.clone();
    let b = base.clone();
    tokio::task::spawn_blocking(move || {
        let plan = p;
        let base = b;
        // The default policy refuses a simulated enclave.
        let e = Client::connect(&base, &Policy::default()).err().unwrap();
        assert!(
            matches!(
                e,
                ClientError::Proto(ProtoError::Evidence(Rejection::Simulated))
            ),
            "{e:?}"
        );
        let client = Client::connect(&base, &policy(&plan)).unwrap();
        assert!(client.evidence().host_sees.contains("not the answer"));
        let head_end = plan.head_end(placement).unwrap();
        let x = zoo::seeded_input(&plan.model, 1);
        let got = client.infer(&x).unwrap();
        assert!(same(&got, &reference(&plan, &x, head_end, 1).unwrap()));

        // Replay and tampering, by hand on the wire.
        let ev = client.evidence().clone();
        let binding = origami_proto::evidence::verify(&ev, &policy(&plan)).unwrap();
        let bytes = origami_proto::encode(&origami_proto::tensor::WireTensor {
            shape: x.shape.iter().map(|&d| d as u32).collect(),
            data: x.data.clone(),
        });
        let (req, _) =
            origami_proto::session::seal_request(&ev.enclave_key, &binding, &bytes).unwrap();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let post = |body: Vec<u8>| {
            let mut r = agent
                .post(&format!("{base}/v1/infer"))
                .send(&body[..])
                .unwrap();
            (
                r.status().as_u16(),
                r.body_mut().read_to_string().unwrap_or_default(),
            )
        };
        let mut tampered = req.clone();
        tampered.ciphertext[3] ^= 1;
        let (s, m) = post(origami_proto::encode(&tampered));
        assert_eq!(s, 400, "{m}");
        assert!(m.contains("tampered"), "{m}");
        let (s, m) = post(b"\x00\x01garbage".to_vec());
        assert_eq!(s, 400, "{m}");
        assert_eq!(post(origami_proto::encode(&req)).0, 200);
        let (s, m) = post(origami_proto::encode(&req));
        assert_eq!(s, 400, "{m}");
        assert!(m.contains("replayed"), "{m}");

        // Load: 32 concurrent clients × 20 requests, each answer matching its own request.
        let threads: Vec<_> = (0..32u64)
            .map(|c| {
                let plan = plan.clone();
                let base = base.clone();
                std::thread::spawn(move || {
                    let client = Client::connect(&base, &policy(&plan)).unwrap();
                    for i in 0..20u64 {
                        let x = zoo::seeded_input(&plan.model, 1000 + c * 100 + i);
                        let got = client.infer(&x).unwrap();
                        let want = reference(&plan, &x, head_end, 1).unwrap();
                        assert!(same(&got, &want), "client {c} request {i}");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut r = agent.get(&format!("{base}/metrics")).call().unwrap();
        let metrics = r.body_mut().read_to_string().unwrap();
        assert!(
            metrics.contains("origami_requests_total{outcome=\"ok\"} 642"),
            "{metrics}"
        );
        assert!(
            metrics.contains("origami_requests_total{outcome=\"bad_request\"} 3"),
            "{metrics}"
        );
        let mut r = agent.get(&format!("{base}/healthz")).call().unwrap();
        assert_eq!(r.body_mut().read_to_string().unwrap(), "ok\n");
    })
    .await
    .unwrap();
    server.shutdown().await.unwrap();
}

/// Shutdown finishes what was received: a request waiting in the worker's batch window when
/// shutdown starts is still answered, and the server then stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_answers_requests_in_flight() {
    let plan = plan();
    let placement = Placement::Slalom;
    // A long batch window keeps the first request inside the server while it shuts down.
    let server_cfg = ServerConfig {
        max_wait: std::time::Duration::from_millis(800),
        ..ServerConfig::default()
    };
    let server = serve(&plan, placement, server_cfg).await;
    let base = format!("http://{}", server.addr);
    let p = plan.clone();
    let client = tokio::task::spawn_blocking(move || {
        let c = Client::connect(&base, &policy(&p)).unwrap();
        let x = zoo::seeded_input(&p.model, 7);
        c.infer(&x).map(|y| (x, y))
    });
    let metrics = server.metrics.clone();
    while metrics.received() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    server.shutdown().await.unwrap();
    let (x, y) = client
        .await
        .unwrap()
        .expect("the request in flight is answered");
    let want = reference(&plan, &x, plan.head_end(placement).unwrap(), 1).unwrap();
    assert!(same(&y, &want));
}

/// Dynamic batching of the origami placement's tails: concurrent clients' requests run their
/// heads through the enclave one by one, park at the handoff, and their tails run as one
/// batched accelerator call; each client still gets the answer to its own input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origami_tails_are_batched_across_clients() {
    origami_tails(true).await;
}

/// `batch_tails: false` (the CLI's default on a CPU): one tail call per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origami_tails_unbatched_on_request() {
    origami_tails(false).await;
}

async fn origami_tails(batch_tails: bool) {
    let plan = plan();
    let placement = Placement::Origami { split: 2 };
    let cfg = ServerConfig {
        max_batch: 8,
        max_wait: std::time::Duration::from_millis(30),
        batch_tails,
        ..ServerConfig::default()
    };
    let server = serve(&plan, placement, cfg).await;
    let base = format!("http://{}", server.addr);
    let p = plan.clone();
    tokio::task::spawn_blocking(move || {
        let plan = p;
        let head_end = plan.head_end(placement).unwrap();
        let policy = Policy {
            placements: vec!["origami".into()],
            ..policy(&plan)
        };
        let threads: Vec<_> = (0..8u64)
            .map(|c| {
                let (plan, base, policy) = (plan.clone(), base.clone(), policy.clone());
                std::thread::spawn(move || {
                    let client = Client::connect(&base, &policy).unwrap();
                    for i in 0..5u64 {
                        let x = zoo::seeded_input(&plan.model, 5000 + c * 100 + i);
                        let got = client.infer(&x).unwrap();
                        let want = reference(&plan, &x, head_end, 1).unwrap();
                        // The CPU accelerator is batch-invariant: bit for bit.
                        assert!(same(&got, &want), "client {c} request {i}");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
        let mut r = agent.get(&format!("{base}/metrics")).call().unwrap();
        let m = r.body_mut().read_to_string().unwrap();
        assert!(
            m.contains("origami_requests_total{outcome=\"ok\"} 40"),
            "{m}"
        );
        let max: usize = m
            .lines()
            .find_map(|l| l.strip_prefix("origami_tail_batch_size_max "))
            .unwrap()
            .parse()
            .unwrap();
        if batch_tails {
            assert!(max > 1, "tails were never batched:\n{m}");
        } else {
            assert_eq!(max, 1, "tails batched against the setting:\n{m}");
            assert!(m.contains("origami_batch_size_max 8"), "{m}");
        }
        let sum = m
            .lines()
            .find_map(|l| l.strip_prefix("origami_tail_batch_size_sum "))
            .unwrap();
        assert_eq!(sum, "40", "every request's tail ran exactly once");
    })
    .await
    .unwrap();
    server.shutdown().await.unwrap();
}

/// An accelerator whose first `fail` field calls fail (a host-side fault, not the enclave's).
struct Faulty {
    inner: Box<dyn origami_accel::Accelerator>,
    fail: usize,
}

impl origami_accel::Accelerator for Faulty {
    fn name(&self) -> String {
        "faulty".into()
    }
    fn prepare(
        &mut self,
        model: Arc<origami_model::Model>,
        field_layers: &[origami_accel::FieldLayer],
    ) -> Result<(), origami_accel::AccelError> {
        self.inner.prepare(model, field_layers)
    }
    fn field_linear(
        &mut self,
        layer: u16,
        blinded: &[u32],
    ) -> Result<Vec<u32>, origami_accel::AccelError> {
        if self.fail > 0 {
            self.fail -= 1;
            return Err(origami_accel::AccelError::Backend("injected fault".into()));
        }
        self.inner.field_linear(layer, blinded)
    }
    fn run_tail(
        &mut self,
        start: origami_model::NodeId,
        values: Vec<(origami_model::ValueId, Tensor)>,
    ) -> Result<Tensor, origami_accel::AccelError> {
        self.inner.run_tail(start, values)
    }
    fn synchronize(&mut self) -> Result<(), origami_accel::AccelError> {
        self.inner.synchronize()
    }
}

fn metric(base: &str, name: &str) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
    let mut r = agent.get(&format!("{base}/metrics")).call().unwrap();
    let m = r.body_mut().read_to_string().unwrap();
    m.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in\n{m}"))
        .to_string()
}

/// A fault of the accelerator fails that request alone: the enclave is not restarted (it
/// keeps its keys and pads), and the next request is answered under the same evidence. An
/// oversized POST is the client's error (413), and does not restart the enclave either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_faults_and_huge_bodies_fail_alone() {
    let plan = plan();
    let placement = Placement::Slalom;
    let core = CoreConfig {
        placement,
        verify: true,
        threads: 1,
    };
    let service =
        EnclaveService::simulated(plan.clone(), core.clone(), self_code_id().unwrap()).unwrap();
    let (p, c) = (plan.clone(), core.clone());
    let restart: origami_server::Restart = Box::new(move || {
        let s = EnclaveService::simulated(p.clone(), c.clone(), self_code_id().unwrap())
            .map_err(|e| e.to_string())?;
        Ok(Box::new(s) as Box<dyn origami_host::handle::EnclaveHandle>)
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = start(
        listener,
        Box::new(service),
        plan.clone(),
        placement,
        Box::new(Faulty {
            inner: cpu_accelerator(),
            fail: 1,
        }),
        ServerConfig::default(),
        Some(restart),
    )
    .await
    .unwrap();
    let base = format!("http://{}", server.addr);
    tokio::task::spawn_blocking(move || {
        let client = Client::connect(&base, &policy(&plan)).unwrap();
        let key = client.evidence().enclave_key;
        let x = zoo::seeded_input(&plan.model, 1);
        match client.infer(&x) {
            Err(origami_client::ClientError::Http { status, code, .. }) => {
                assert_eq!(status, 503);
                assert_eq!(code.as_deref(), Some("request_failed"));
            }
            other => panic!("expected the injected fault, got {other:?}"),
        }
        assert_eq!(metric(&base, "origami_enclave_restarts_total"), "0");
        let head_end = plan.head_end(placement).unwrap();
        let got = client.infer(&x).unwrap();
        assert!(same(&got, &reference(&plan, &x, head_end, 1).unwrap()));
        assert_eq!(client.reattested(), 0);
        assert_eq!(client.evidence().enclave_key, key);

        // 64 MiB: far beyond a sealed request for this model's input.
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let r = agent
            .post(&format!("{base}/v1/infer"))
            .send(&vec![0u8; 64 << 20][..]);
        match r {
            Ok(r) => assert_eq!(r.status().as_u16(), 413),
            // The server may close the connection before the whole body is sent.
            Err(e) => eprintln!("64 MiB POST: connection closed early ({e})"),
        }
        assert_eq!(metric(&base, "origami_enclave_restarts_total"), "0");
        let got = client.infer(&x).unwrap();
        assert!(same(&got, &reference(&plan, &x, head_end, 1).unwrap()));
        assert_eq!(client.evidence().enclave_key, key);
    })
    .await
    .unwrap();
    server.shutdown().await.unwrap();
}

/// Over HTTP, with a key limit of 4: 13 requests from one client are all answered. The server
/// serves the new evidence after each rotation; the client, told `key_retired`, re-attests to
/// the same measurement and resends; the enclave is never restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_keys_rotate_without_a_restart() {
    let plan = plan();
    let placement = Placement::Enclave;
    let core = CoreConfig {
        placement,
        verify: true,
        threads: 1,
    };
    let mut service =
        EnclaveService::simulated(plan.clone(), core, self_code_id().unwrap()).unwrap();
    service.set_key_limit(4).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = start(
        listener,
        Box::new(service),
        plan.clone(),
        placement,
        cpu_accelerator(),
        ServerConfig::default(),
        None,
    )
    .await
    .unwrap();
    let base = format!("http://{}", server.addr);
    tokio::task::spawn_blocking(move || {
        let pol = Policy {
            placements: vec!["enclave".into()],
            ..policy(&plan)
        };
        let client = Client::connect(&base, &pol).unwrap();
        let first = client.evidence().clone();
        let head_end = plan.head_end(placement).unwrap();
        for seed in 0..13 {
            let x = zoo::seeded_input(&plan.model, 300 + seed);
            let got = match client.infer(&x) {
                Err(origami_client::ClientError::KeyRotated) => client.infer(&x).unwrap(),
                r => r.unwrap(),
            };
            assert!(same(&got, &reference(&plan, &x, head_end, 1).unwrap()));
        }
        assert!(client.reattested() >= 3, "{}", client.reattested());
        assert_ne!(client.evidence().enclave_key, first.enclave_key);
        assert_eq!(client.evidence().instance, first.instance);
        assert_eq!(client.evidence().measurement, first.measurement);
        let rotations: u64 = metric(&base, "origami_key_rotations_total")
            .parse()
            .unwrap();
        assert!(rotations >= 3, "{rotations}");
        assert_eq!(metric(&base, "origami_enclave_restarts_total"), "0");
    })
    .await
    .unwrap();
    server.shutdown().await.unwrap();
}

/// An enclave handle whose link "fails" on the first request, so the server restarts it.
struct DiesOnce {
    inner: Box<dyn origami_host::handle::EnclaveHandle>,
    died: bool,
}

impl origami_host::handle::EnclaveHandle for DiesOnce {
    fn evidence(&mut self) -> Result<origami_proto::evidence::Evidence, EnclaveError> {
        self.inner.evidence()
    }
    fn key_epoch(&mut self) -> Result<u64, EnclaveError> {
        self.inner.key_epoch()
    }
    fn precompute(&mut self, n: usize) -> Result<Vec<origami_field::SealedPad>, EnclaveError> {
        self.inner.precompute(n)
    }
    fn begin(
        &mut self,
        req: &origami_proto::session::SealedRequest,
        pad: Option<u64>,
    ) -> Result<origami_enclave::Step<origami_proto::session::SealedAnswer>, EnclaveError> {
        if !self.died {
            self.died = true;
            return Err(EnclaveError::Unavailable("the link broke".into()));
        }
        self.inner.begin(req, pad)
    }
    fn resume(
        &mut self,
        r: origami_enclave::Reply,
    ) -> Result<origami_enclave::Step<origami_proto::session::SealedAnswer>, EnclaveError> {
        self.inner.resume(r)
    }
    fn abort(&mut self) {
        self.inner.abort()
    }
    fn park(&mut self) -> Result<u64, EnclaveError> {
        self.inner.park()
    }
    fn finish(
        &mut self,
        t: u64,
        out: Tensor,
    ) -> Result<origami_proto::session::SealedAnswer, EnclaveError> {
        self.inner.finish(t, out)
    }
}

/// A host forces a restart (it breaks the link) and brings the enclave back in a weaker
/// placement (origami at split 1, which this client's policy would otherwise accept): the
/// client re-attests, refuses, says what changed, and sends nothing to the new enclave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_into_a_weaker_placement_is_refused() {
    let plan = plan();
    let core = |placement| CoreConfig {
        placement,
        verify: true,
        threads: 1,
    };
    let service = EnclaveService::simulated(
        plan.clone(),
        core(Placement::Slalom),
        self_code_id().unwrap(),
    )
    .unwrap();
    let p = plan.clone();
    let restart: origami_server::Restart = Box::new(move || {
        let weaker = core(Placement::Origami { split: 1 });
        let s = EnclaveService::simulated(p.clone(), weaker, self_code_id().unwrap())
            .map_err(|e| e.to_string())?;
        Ok(Box::new(s) as Box<dyn origami_host::handle::EnclaveHandle>)
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = start(
        listener,
        Box::new(DiesOnce {
            inner: Box::new(service),
            died: false,
        }),
        plan.clone(),
        Placement::Slalom,
        cpu_accelerator(),
        ServerConfig::default(),
        Some(restart),
    )
    .await
    .unwrap();
    let base = format!("http://{}", server.addr);
    let metrics = server.metrics.clone();
    tokio::task::spawn_blocking(move || {
        let pol = Policy {
            placements: vec!["slalom".into(), "origami".into()],
            ..policy(&plan)
        };
        let client = Client::connect(&base, &pol).unwrap();
        assert_eq!(client.evidence().measurement.placement, Placement::Slalom);
        let x = zoo::seeded_input(&plan.model, 5);
        match client.infer(&x) {
            Err(origami_client::ClientError::MeasurementChanged { was, now }) => {
                assert!(was.starts_with("slalom"), "{was}");
                assert!(now.starts_with("origami --split 1"), "{now}");
            }
            other => panic!("expected the client to refuse, got {other:?}"),
        }
        assert_eq!(metric(&base, "origami_enclave_restarts_total"), "1");
        // Nothing more was sent: the server received the one request that hit the broken link.
        assert_eq!(metrics.received(), 1);
        // The client keeps the measurement it verified: a second try is sealed to the old key
        // (which the new enclave cannot open), and refused again on re-attestation.
        assert!(matches!(
            client.infer(&x),
            Err(origami_client::ClientError::MeasurementChanged { .. })
        ));
        assert_eq!(client.evidence().measurement.placement, Placement::Slalom);
        assert_eq!(metrics.received(), 2);
    })
    .await
    .unwrap();
    server.shutdown().await.unwrap();
}

/// Reads from a raw connection until the server closes it; returns what it sent.
async fn read_to_close(conn: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    // A guard so a broken server fails the test instead of hanging it (not a speed bound).
    let read = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        let mut buf = [0u8; 4096];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    });
    read.await.expect("the server must close the connection");
    String::from_utf8_lossy(&got).into_owned()
}

/// The HTTP bounds of review finding 6, run as attacks: a slowloris connection (headers never
/// finished) is closed; requests beyond the in-flight slots are refused (503) before their
/// bodies are read, and a body that never arrives times out (408) and frees its slot;
/// connections beyond the cap are closed at accept. Honest requests are answered after each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_surplus_connections_are_cut_off() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let plan = plan();
    let placement = Placement::Enclave;
    let pol = Policy {
        placements: vec!["enclave".into()],
        ..policy(&plan)
    };
    let ms = std::time::Duration::from_millis;
    let server = serve(
        &plan,
        placement,
        ServerConfig {
            queue: 1,
            max_batch: 1,
            header_timeout: ms(300),
            body_timeout: ms(1500),
            ..ServerConfig::default()
        },
    )
    .await;
    let addr = server.addr;
    let base = format!("http://{addr}");

    // Slowloris: half a header, then silence.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"POST /v1/infer HTTP/1.1\r\nHost: origami\r\n")
        .await
        .unwrap();
    read_to_close(&mut slow).await;

    // Two bodies that never come hold both in-flight slots (queue 1 + batch 1).
    let mut stuck = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"POST /v1/infer HTTP/1.1\r\nHost: origami\r\nContent-Length: 100\r\n\r\n")
            .await
            .unwrap();
        stuck.push(c);
    }
    let (b, p, x) = (base.clone(), pol.clone(), zoo::seeded_input(&plan.model, 9));
    let refused = tokio::task::spawn_blocking(move || {
        let client = Client::connect(&b, &p).unwrap();
        // The stuck requests take their slots as soon as their headers are parsed.
        for _ in 0..100 {
            match client.infer(&x) {
                Err(origami_client::ClientError::Http { status, code, .. }) => {
                    assert_eq!((status, code.as_deref()), (503, Some("queue_full")));
                    return true;
                }
                Ok(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
                Err(e) => panic!("{e}"),
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(
        refused,
        "a request beyond the in-flight slots must be refused"
    );
    for mut c in stuck {
        let reply = read_to_close(&mut c).await;
        assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    }
    let (b, p) = (base.clone(), pol.clone());
    let head_end = plan.head_end(placement).unwrap();
    let pl = plan.clone();
    tokio::task::spawn_blocking(move || {
        let client = Client::connect(&b, &p).unwrap();
        let x = zoo::seeded_input(&pl.model, 10);
        assert!(same(
            &client.infer(&x).unwrap(),
            &reference(&pl, &x, head_end, 1).unwrap()
        ));
    })
    .await
    .unwrap();
    server.shutdown().await.unwrap();

    // A cap of two connections: a third is closed at accept, unread.
    let server = serve(
        &plan,
        placement,
        ServerConfig {
            max_connections: 2,
            ..ServerConfig::default()
        },
    )
    .await;
    let addr = server.addr;
    let held = [
        TcpStream::connect(addr).await.unwrap(),
        TcpStream::connect(addr).await.unwrap(),
    ];
    // The two are accepted before the third (one accept loop, in order).
    tokio::time::sleep(ms(100)).await;
    let mut third = TcpStream::connect(addr).await.unwrap();
    let _ = third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: origami\r\n\r\n")
        .await;
    assert_eq!(read_to_close(&mut third).await, "");
    drop(held);
    let base = format!("http://{addr}");
    let (b, p, pl) = (base.clone(), pol.clone(), plan.clone());
    tokio::task::spawn_blocking(move || {
        // The held connections' slots free once the server sees them close.
        let client = (0..100)
            .find_map(|_| {
                Client::connect(&b, &p)
                    .map_err(|_| std::thread::sleep(std::time::Duration::from_millis(20)))
                    .ok()
            })
            .expect("the server accepts connections again");
        let x = zoo::seeded_input(&pl.model, 11);
        assert!(same(
            &client.infer(&x).unwrap(),
            &reference(&pl, &x, head_end, 1).unwrap()
        ));
        let refused: u64 = metric(&b, "origami_connections_refused_total")
            .parse()
            .unwrap();
        assert!(refused >= 1, "{refused}");
    })
    .await
    .unwrap();
    server.shutdown().await.unwrap();
}
