//! The enclave behind a stream (the process protocol, served from a thread over a Unix socket
//! pair): the decrypted answer equals the reference bit for bit; malformed frames and tampered
//! pads are rejected with clear errors and the enclave keeps serving; a dead enclave is a clear
//! error on the host, not a hang.

use std::os::unix::net::UnixStream;
use std::sync::Arc;

use origami_accel::{Accelerator, CpuAccelerator};
use origami_enclave::service::{self_code_id, EnclaveService};
use origami_enclave::{reference, CoreConfig, EnclaveError, Placement, Plan, QuantConfig};
use origami_host::remote::RemoteEnclave;
use origami_host::{drive, field_layers, HostError, PadStore};
use origami_model::{zoo, Tensor};
use origami_proto::evidence::{hex, verify, AllowedMeasurement, Policy};
use origami_proto::frame::{read_frame, write_frame};
use origami_proto::session::{seal_request, Failure};
use origami_proto::tensor::WireTensor;
use origami_proto::wire::{ErrorKind, FromEnclave};

fn plan() -> Arc<Plan> {
    let model = zoo::fashion();
    let calib: Vec<Tensor> = (0..4).map(|s| zoo::seeded_input(&model, 100 + s)).collect();
    Arc::new(Plan::build(&model, &calib, QuantConfig::default()).unwrap())
}

fn spawn(
    plan: &Arc<Plan>,
    placement: Placement,
) -> (RemoteEnclave<UnixStream>, std::thread::JoinHandle<()>) {
    let (host_end, enclave_end) = UnixStream::pair().unwrap();
    let cfg = CoreConfig {
        placement,
        verify: true,
        threads: 1,
    };
    let mut service =
        EnclaveService::simulated(plan.clone(), cfg, self_code_id().unwrap()).unwrap();
    let h = std::thread::spawn(move || {
        let mut s = enclave_end;
        let _ = origami_enclave::process::serve(&mut s, &mut service, 64 << 20);
    });
    (RemoteEnclave::new(host_end), h)
}

fn policy(plan: &Plan) -> Policy {
    Policy {
        allow_simulated: true,
        measurements: vec![AllowedMeasurement {
            platform: "simulated".into(),
            code_id: hex(&self_code_id().unwrap()),
            model_hash: hex(&plan.model.hash()),
            min_split: None,
        }],
        placements: vec!["slalom".into(), "origami".into()],
        ..Policy::default()
    }
}

fn request(x: &Tensor) -> Vec<u8> {
    origami_proto::encode(&WireTensor {
        shape: x.shape.iter().map(|&d| d as u32).collect(),
        data: x.data.clone(),
    })
}

#[test]
fn requests_through_the_enclave_process_protocol() {
    let plan = plan();
    let placement = Placement::Origami { split: 4 };
    let (mut remote, thread) = spawn(&plan, placement);
    let ev = remote.evidence().unwrap();
    let binding = verify(&ev, &policy(&plan)).unwrap();
    let mut accel = CpuAccelerator::new();
    let head_end = plan.head_end(placement).unwrap();
    accel
        .prepare(plan.model.clone(), &field_layers(&plan, head_end))
        .unwrap();
    let mut pads = PadStore::default();
    pads.insert_all(remote.precompute(4).unwrap());
    assert_eq!(pads.len(), 4 * 4, "four pads for the four blinded layers");

    // A frame that is not a message: a clear error, and the enclave keeps serving.
    write_frame(remote.stream_mut(), b"\xff\xfenot a message", 1 << 20).unwrap();
    let reply: FromEnclave =
        origami_proto::decode(&read_frame(remote.stream_mut(), 1 << 20).unwrap().unwrap()).unwrap();
    assert!(
        matches!(
            &reply,
            FromEnclave::Error {
                kind: ErrorKind::Malformed,
                ..
            }
        ),
        "{reply:?}"
    );
    // Too many pads at once.
    let e = remote.precompute(100_000).unwrap_err();
    assert!(matches!(e, EnclaveError::Misuse(_)), "{e}");

    let model = &plan.model;
    for seed in 1..=2 {
        let x = zoo::seeded_input(model, seed);
        let (req, pending) = seal_request(&ev.enclave_key, &binding, &request(&x)).unwrap();
        let first = remote.begin(&req).unwrap();
        let answer = drive(
            &mut accel,
            &mut pads,
            first,
            |r| remote.resume(r),
            &mut Default::default(),
        )
        .unwrap();
        let got: WireTensor = pending.open_answer(&answer).unwrap();
        let want = reference(&plan, &x, head_end, 1).unwrap();
        assert!(got
            .data
            .iter()
            .zip(&want.data)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    // A tampered sealed pad is rejected; the request is abandoned, the next one works.
    let x = zoo::seeded_input(model, 3);
    let (req, tampered_pending) = seal_request(&ev.enclave_key, &binding, &request(&x)).unwrap();
    let first = remote.begin(&req).unwrap();
    let mut tampered = false;
    let r = drive(
        &mut accel,
        &mut pads,
        first,
        |mut r| {
            if let origami_enclave::Reply::Linear { sealed_u, .. } = &mut r {
                if !tampered {
                    sealed_u.ciphertext[5] ^= 4;
                    tampered = true;
                }
            }
            remote.resume(r)
        },
        &mut Default::default(),
    );
    // The host learns only that the request failed; the client is told why, sealed.
    let Err(HostError::Enclave(EnclaveError::Failed(sealed))) = r else {
        panic!("expected a sealed failure, got {r:?}");
    };
    assert_eq!(
        tampered_pending.open_answer(&sealed).unwrap_err().unwrap(),
        Failure::PadRejected
    );
    let (req, pending) = seal_request(&ev.enclave_key, &binding, &request(&x)).unwrap();
    // The rest of the abandoned pad's factors are useless now; use the next pad.
    let first = remote.begin(&req).unwrap();
    let answer = drive(
        &mut accel,
        &mut pads,
        first,
        |r| remote.resume(r),
        &mut Default::default(),
    )
    .unwrap();
    pending.open_answer(&answer).unwrap();

    // The enclave goes away: a clear error, no hang.
    drop(remote);
    thread.join().unwrap();
}

#[test]
fn a_dead_enclave_is_a_clear_error() {
    let plan = plan();
    let (host_end, enclave_end) = UnixStream::pair().unwrap();
    drop(enclave_end);
    let mut remote = RemoteEnclave::new(host_end);
    let e = remote.evidence().unwrap_err();
    assert!(matches!(e, EnclaveError::Unavailable(_)), "{e}");
    let _ = plan;
}

/// An enclave process that accepts a message and never answers: the host's call fails with
/// `Unavailable` once its reply timeout passes (the server then restarts the enclave), instead
/// of blocking the worker forever (review finding 16).
#[test]
fn a_hung_enclave_times_out() {
    let (host_end, enclave_end) = UnixStream::pair().unwrap();
    let conn = origami_host::remote::Conn::Unix(host_end);
    conn.set_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    let mut remote = RemoteEnclave::new(conn);
    let e = remote.evidence().unwrap_err();
    assert!(matches!(e, EnclaveError::Unavailable(_)), "{e}");
    drop(enclave_end);
}
