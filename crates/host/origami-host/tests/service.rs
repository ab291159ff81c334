//! The attested service in-process: a client verifies the (simulated) evidence against its
//! policy, seals its input to the enclave's session key, the host drives the request with the
//! same loop as the engine, and only the client can open the answer — which equals the quantized
//! reference bit for bit. Replays and tampering are rejected, and the service keeps serving.

use std::sync::Arc;

use origami_accel::{Accelerator, CpuAccelerator};
use origami_enclave::service::{self_code_id, EnclaveService};
use origami_enclave::{reference, CoreConfig, EnclaveError, Placement, Plan, QuantConfig};
use origami_host::{drive, field_layers, HostError, PadStore};
use origami_model::{zoo, Tensor};
use origami_proto::evidence::{hex, verify, AllowedMeasurement, Policy};
use origami_proto::rejection::Rejection;
use origami_proto::session::{seal_request, Failure, SealedAnswer, SealedRequest};
use origami_proto::tensor::WireTensor;
use origami_proto::ProtoError;

struct Host {
    service: EnclaveService,
    accel: CpuAccelerator,
    pads: PadStore,
}

impl Host {
    fn new(plan: &Arc<Plan>, placement: Placement) -> Self {
        let cfg = CoreConfig {
            placement,
            verify: true,
            threads: 1,
        };
        let mut service =
            EnclaveService::simulated(plan.clone(), cfg, self_code_id().unwrap()).unwrap();
        let mut accel = CpuAccelerator::new();
        accel
            .prepare(
                plan.model.clone(),
                &field_layers(plan, service.core().head_end()),
            )
            .unwrap();
        let mut pads = PadStore::default();
        pads.insert_all(service.core_mut().precompute(4).unwrap());
        Self {
            service,
            accel,
            pads,
        }
    }

    /// Begins `req` (typed errors) and drives it honestly to its answer.
    fn try_serve(&mut self, req: &SealedRequest) -> Result<SealedAnswer, EnclaveError> {
        let first = self.service.begin(req)?;
        let service = &mut self.service;
        Ok(drive(
            &mut self.accel,
            &mut self.pads,
            first,
            |r| service.resume(r),
            &mut Default::default(),
        )
        .expect("an honest host drives an opened request to its answer"))
    }

    fn serve(&mut self, req: &SealedRequest) -> Result<SealedAnswer, HostError> {
        let first = self.service.begin(req)?;
        let service = &mut self.service;
        drive(
            &mut self.accel,
            &mut self.pads,
            first,
            |r| service.resume(r),
            &mut Default::default(),
        )
    }
}

fn policy(plan: &Plan, allow_simulated: bool) -> Policy {
    Policy {
        allow_simulated,
        measurements: vec![AllowedMeasurement {
            platform: "simulated".into(),
            code_id: hex(&self_code_id().unwrap()),
            model_hash: hex(&plan.model.hash()),
            min_split: None,
        }],
        placements: vec!["slalom".into(), "enclave".into(), "origami".into()],
        ..Policy::default()
    }
}

fn input(model: &origami_model::Model, seed: u64) -> (Tensor, Vec<u8>) {
    let x = zoo::seeded_input(model, seed);
    let bytes = origami_proto::encode(&WireTensor {
        shape: x.shape.iter().map(|&d| d as u32).collect(),
        data: x.data.clone(),
    });
    (x, bytes)
}

#[test]
fn sealed_request_and_answer_match_the_reference() {
    let model = zoo::fashion();
    let calib: Vec<Tensor> = (0..4).map(|s| zoo::seeded_input(&model, 100 + s)).collect();
    let plan = Arc::new(Plan::build(&model, &calib, QuantConfig::default()).unwrap());
    for placement in [Placement::Slalom, Placement::Origami { split: 4 }] {
        let mut host = Host::new(&plan, placement);
        let ev = host.service.evidence().clone();
        // The default policy refuses a simulated enclave, with a clear message.
        let e = verify(&ev, &Policy::default()).unwrap_err();
        assert!(
            matches!(e, ProtoError::Evidence(Rejection::Simulated)),
            "{e:?}"
        );
        assert!(e.to_string().contains("SIMULATED"), "{e}");
        let binding = verify(&ev, &policy(&plan, true)).unwrap();
        // Full privacy by policy: only slalom.
        let only_slalom = Policy {
            placements: vec!["slalom".into()],
            ..policy(&plan, true)
        };
        assert_eq!(
            verify(&ev, &only_slalom).is_ok(),
            placement == Placement::Slalom
        );
        for seed in 1..=2 {
            let (x, bytes) = input(&model, seed);
            let (req, pending) = seal_request(&ev.enclave_key, &binding, &bytes).unwrap();
            let answer = host.serve(&req).unwrap();
            let got: WireTensor = pending.open_answer(&answer).unwrap();
            let head_end = plan.head_end(placement).unwrap();
            let want = reference(&plan, &x, head_end, 1).unwrap();
            assert_eq!(
                got.shape,
                want.shape.iter().map(|&d| d as u32).collect::<Vec<_>>()
            );
            assert!(
                got.data
                    .iter()
                    .zip(&want.data)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{placement:?}: the decrypted answer differs from the reference"
            );
            // The host cannot replay the request.
            let e = host.serve(&req).unwrap_err();
            assert!(
                matches!(e, HostError::Enclave(EnclaveError::BadRequest(_))),
                "{e}"
            );
        }
    }
}

#[test]
fn tampered_requests_are_rejected_and_the_service_keeps_serving() {
    let model = zoo::fashion();
    let calib: Vec<Tensor> = (0..4).map(|s| zoo::seeded_input(&model, 100 + s)).collect();
    let plan = Arc::new(Plan::build(&model, &calib, QuantConfig::default()).unwrap());
    let mut host = Host::new(&plan, Placement::Slalom);
    let ev = host.service.evidence().clone();
    let binding = verify(&ev, &policy(&plan, true)).unwrap();
    let (_, bytes) = input(&model, 3);
    let (req, pending) = seal_request(&ev.enclave_key, &binding, &bytes).unwrap();
    for bit in [0, 77, req.ciphertext.len() * 8 - 1] {
        let mut t = req.clone();
        t.ciphertext[bit / 8] ^= 1 << (bit % 8);
        let e = host.serve(&t).unwrap_err();
        assert!(
            matches!(e, HostError::Enclave(EnclaveError::BadRequest(_))),
            "{e}"
        );
    }
    // A well-formed request for another shape is refused after decryption.
    let wrong = origami_proto::encode(&WireTensor {
        shape: vec![1, 1, 14, 14],
        data: vec![0.5; 196],
    });
    // The host learns only that it failed; the client is told why, sealed.
    let (w, wrong_pending) = seal_request(&ev.enclave_key, &binding, &wrong).unwrap();
    let Err(EnclaveError::Failed(sealed)) = host.service.begin(&w) else {
        panic!("a wrong shape must fail, sealed to the client");
    };
    assert_eq!(
        wrong_pending.open_answer(&sealed).unwrap_err().unwrap(),
        Failure::BadInput
    );
    // The original still goes through: nothing was half-done.
    let answer = host.serve(&req).unwrap();
    pending.open_answer(&answer).unwrap();
    // A second instance (a restarted enclave) has new keys: the old session does not open there.
    let mut restarted = Host::new(&plan, Placement::Slalom);
    assert_ne!(restarted.service.evidence().enclave_key, ev.enclave_key);
    let (again, _) = seal_request(&ev.enclave_key, &binding, &bytes).unwrap();
    assert!(restarted.serve(&again).is_err());
}

/// Parked requests (the server batches origami tails): two requests run their heads and park;
/// their tails come back out of order; each answer opens only for its own client and matches
/// its reference. A ticket is used once; parking outside a handoff is refused.
#[test]
fn parked_requests_finish_out_of_order_and_only_once() {
    use origami_host::{drive_head, Headed};
    let model = zoo::fashion();
    let calib: Vec<Tensor> = (0..4).map(|s| zoo::seeded_input(&model, 100 + s)).collect();
    let plan = Arc::new(Plan::build(&model, &calib, QuantConfig::default()).unwrap());
    let placement = Placement::Origami { split: 2 };
    let mut host = Host::new(&plan, placement);
    let ev = host.service.evidence().clone();
    let binding = verify(&ev, &policy(&plan, true)).unwrap();
    assert!(matches!(host.service.park(), Err(EnclaveError::Misuse(_))));
    let mut parked = Vec::new();
    for seed in [7, 8] {
        let (x, bytes) = input(&model, seed);
        let (req, pending) = seal_request(&ev.enclave_key, &binding, &bytes).unwrap();
        let first = host.service.begin(&req).unwrap();
        let service = &mut host.service;
        let Headed::Handoff(h) = drive_head(
            &mut host.accel,
            &mut host.pads,
            first,
            |r| service.resume(r),
            &mut Default::default(),
        )
        .unwrap() else {
            panic!("origami must hand off")
        };
        let ticket = host.service.park().unwrap();
        parked.push((x, pending, ticket, h));
    }
    let head_end = plan.head_end(placement).unwrap();
    // Out of order: the second request's tail first, answered; the first's gets a malformed
    // tail output (a misbehaving accelerator): refused, and its ticket is gone.
    for (n, (x, pending, ticket, h)) in parked.into_iter().rev().enumerate() {
        let out = host.accel.run_tail(h.start, h.values).unwrap();
        if n == 0 {
            let answer = host.service.finish(ticket, out).unwrap();
            let got: WireTensor = pending.open_answer(&answer).unwrap();
            let want = reference(&plan, &x, head_end, 1).unwrap();
            assert!(got
                .data
                .iter()
                .zip(&want.data)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
            let e = host.service.finish(ticket, want).unwrap_err();
            assert!(matches!(e, EnclaveError::Misuse(_)), "{e}");
        } else {
            let wrong_shape = Tensor::new(vec![1, 3], vec![0.0; 3]).unwrap();
            let Err(EnclaveError::Failed(sealed)) = host.service.finish(ticket, wrong_shape) else {
                panic!("a malformed tail output must fail, sealed to the client");
            };
            assert_eq!(
                pending.open_answer(&sealed).unwrap_err().unwrap(),
                Failure::AcceleratorMisbehaved
            );
            assert!(matches!(
                host.service.finish(ticket, out),
                Err(EnclaveError::Misuse(_))
            ));
        }
    }
}

/// Session keys rotate inside the enclave before they run out (review finding 5): with a key
/// limit of 4, more than three limits' worth of authentic requests are all answered. A client
/// holding the old evidence is served through the grace window, then told `KeyRetired` (its
/// request unopened), and the fresh evidence it fetches passes the same policy with the same
/// measurement and instance but a new key. Requests replayed across rotations are refused.
#[test]
fn session_keys_rotate_and_the_service_goes_on() {
    let model = zoo::fashion();
    let calib: Vec<Tensor> = (0..4).map(|s| zoo::seeded_input(&model, 100 + s)).collect();
    let plan = Arc::new(Plan::build(&model, &calib, QuantConfig::default()).unwrap());
    let placement = Placement::Enclave;
    let head_end = plan.head_end(placement).unwrap();
    let mut host = Host::new(&plan, placement);
    assert!(host.service.set_key_limit(1).is_err());
    host.service.set_key_limit(4).unwrap();
    let pol = policy(&plan, true);
    let first = host.service.evidence().clone();
    let mut ev = first.clone();
    let mut binding = verify(&ev, &pol).unwrap();
    let mut keys = vec![ev.enclave_key];
    let (mut retired, mut in_grace) = (0, 0);
    let mut sent = Vec::new();
    let requests = 13u64;
    for seed in 0..requests {
        let (x, bytes) = input(&model, 200 + seed);
        let (req, pending) = seal_request(&ev.enclave_key, &binding, &bytes).unwrap();
        let (req, pending, answer) = match host.try_serve(&req) {
            Ok(answer) => {
                if host.service.evidence().enclave_key != ev.enclave_key {
                    in_grace += 1;
                }
                (req, pending, answer)
            }
            Err(EnclaveError::KeyRetired) => {
                retired += 1;
                let fresh = host.service.evidence().clone();
                assert_eq!(fresh.measurement, first.measurement);
                assert_eq!(fresh.instance, first.instance);
                assert!(!keys.contains(&fresh.enclave_key), "a key is never reused");
                keys.push(fresh.enclave_key);
                binding = verify(&fresh, &pol).unwrap();
                ev = fresh;
                let (req, pending) = seal_request(&ev.enclave_key, &binding, &bytes).unwrap();
                let answer = host.try_serve(&req).expect("the current key opens it");
                (req, pending, answer)
            }
            Err(e) => panic!("request {seed}: {e}"),
        };
        let got = pending.open_answer(&answer).unwrap();
        let want = reference(&plan, &x, head_end, 1).unwrap();
        assert!(got
            .data
            .iter()
            .zip(&want.data)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        sent.push(req);
    }
    assert_eq!(sent.len() as u64, requests);
    assert!(retired >= 3, "{retired} re-attestations");
    assert!(in_grace >= 3, "{in_grace} requests in grace windows");
    assert!(host.service.key_epoch() >= 3);
    // The newest request's key is still held: a replay is refused as one.
    assert!(matches!(
        host.service.begin(sent.last().unwrap()),
        Err(EnclaveError::BadRequest(_))
    ));
    // The first request's key is gone with its secret: refused unopened.
    assert!(matches!(
        host.service.begin(&sent[0]),
        Err(EnclaveError::KeyRetired)
    ));
}
