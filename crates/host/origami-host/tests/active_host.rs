//! Attacks by an active host on the enclave process, run through the real frame protocol: what
//! the host receives when a request fails must not depend on the client's data.

use std::os::unix::net::UnixStream;
use std::sync::Arc;

use origami_accel::{Accelerator, CpuAccelerator, Tampering};
use origami_enclave::service::{self_code_id, EnclaveService};
use origami_enclave::{CoreConfig, EnclaveError, Placement, Plan, QuantConfig};
use origami_field::P;
use origami_host::remote::RemoteEnclave;
use origami_host::{drive, field_layers, HostError, PadStore};
use origami_model::{zoo, Tensor};
use origami_proto::evidence::{hex, verify, AllowedMeasurement, Policy};
use origami_proto::session::{seal_request, Failure, SealedAnswer};
use origami_proto::tensor::WireTensor;

fn fashion_plan() -> Plan {
    let model = zoo::fashion();
    let calib: Vec<Tensor> = (0..4).map(|s| zoo::seeded_input(&model, 100 + s)).collect();
    Plan::build(&model, &calib, QuantConfig::default()).unwrap()
}

/// One request through an enclave process (slalom, `verify` as given) with `accel`: the
/// host-side result and what the client opens.
fn one_request(
    plan: Arc<Plan>,
    verify_on: bool,
    mut accel: Box<dyn Accelerator>,
    seed: u64,
) -> (Result<SealedAnswer, HostError>, Result<WireTensor, Failure>) {
    let placement = Placement::Slalom;
    let (host_end, enclave_end) = UnixStream::pair().unwrap();
    let cfg = CoreConfig {
        placement,
        verify: verify_on,
        threads: 1,
    };
    let mut service =
        EnclaveService::simulated(plan.clone(), cfg, self_code_id().unwrap()).unwrap();
    let t = std::thread::spawn(move || {
        let mut s = enclave_end;
        let _ = origami_enclave::process::serve(&mut s, &mut service, 64 << 20);
    });
    let mut remote = RemoteEnclave::new(host_end);
    let ev = remote.evidence().unwrap();
    let policy = Policy {
        allow_simulated: true,
        allow_unverified: true,
        measurements: vec![AllowedMeasurement {
            platform: "simulated".into(),
            code_id: hex(&ev.measurement.code_id),
            model_hash: hex(&plan.model.hash()),
            min_split: None,
        }],
        ..Policy::default()
    };
    let binding = verify(&ev, &policy).unwrap();
    let head_end = plan.head_end(placement).unwrap();
    accel
        .prepare(plan.model.clone(), &field_layers(&plan, head_end))
        .unwrap();
    let mut pads = PadStore::default();
    pads.insert_all(remote.precompute(1).unwrap());
    let x = zoo::seeded_input(&plan.model, seed);
    let bytes = origami_proto::encode(&WireTensor {
        shape: x.shape.iter().map(|&d| d as u32).collect(),
        data: x.data.clone(),
    });
    let (req, pending) = seal_request(&ev.enclave_key, &binding, &bytes).unwrap();
    let first = remote.begin(&req).unwrap();
    let host = drive(
        accel.as_mut(),
        &mut pads,
        first,
        |r| remote.resume(r),
        &mut Default::default(),
    );
    let sealed = match &host {
        Ok(a) => a.clone(),
        Err(HostError::Enclave(EnclaveError::Failed(a))) => a.clone(),
        Err(e) => panic!("expected an answer or a sealed failure, got {e:?}"),
    };
    let client = pending.open_answer(&sealed).map_err(|e| e.unwrap());
    drop(remote);
    t.join().unwrap();
    (host, client)
}

/// What the host holds after a failed request: the error's text and the sealed answer's size.
fn host_view(r: &Result<SealedAnswer, HostError>) -> (String, usize) {
    match r {
        Err(e @ HostError::Enclave(EnclaveError::Failed(a))) => (e.to_string(), a.ciphertext.len()),
        other => panic!("expected a sealed failure, got {other:?}"),
    }
}

/// A malicious accelerator adds ⌊p/2⌋ to one output of a blinded layer. Before the fix the
/// saturation error carried that unit's exact pre-activation to the host. Now, without
/// Freivalds checks the enclave still fails the request, but the host receives only a sealed
/// failure (no cause, no value); with them (the default) the lie is caught at that layer. Both
/// look the same to the host.
#[test]
fn a_tampering_accelerator_reads_no_activation_through_failures() {
    let plan = Arc::new(fashion_plan());
    let tamper = |position| {
        let mut t = Tampering::new(CpuAccelerator::new(), Some(vec![0]));
        t.delta = P / 2;
        t.position = position;
        Box::new(t) as Box<dyn Accelerator>
    };
    let mut views = Vec::new();
    for (verify_on, position, cause) in [
        (false, 5, Failure::Saturation),
        (false, 77, Failure::Saturation),
        (true, 5, Failure::AcceleratorMisbehaved),
    ] {
        let (host, client) = one_request(plan.clone(), verify_on, tamper(position), 7);
        assert_eq!(client.unwrap_err(), cause, "verify {verify_on}");
        let (text, len) = host_view(&host);
        assert!(
            !text.chars().any(|c| c.is_ascii_digit()),
            "the host-visible error carries a number: {text}"
        );
        views.push((text, len));
    }
    assert!(
        views.windows(2).all(|w| w[0] == w[1]),
        "failures differ to the host: {views:?}"
    );
    // The honest run of the same input answers.
    let (host, client) = one_request(plan, true, Box::new(CpuAccelerator::new()), 7);
    assert!(host.is_ok());
    assert_eq!(client.unwrap().data.len(), 10);
}

/// An input the calibration did not foresee saturates a layer (here forced by a bias of 3p/8):
/// the host sees exactly what it sees for a tampered request.
#[test]
fn natural_saturation_looks_like_any_other_failure() {
    let mut plan = fashion_plan();
    plan.linears[1]
        .bias_q
        .iter_mut()
        .for_each(|b| *b = 3 * (P as i64) / 8);
    let plan = Arc::new(plan);
    let (host, client) = one_request(plan.clone(), true, Box::new(CpuAccelerator::new()), 3);
    assert_eq!(client.unwrap_err(), Failure::Saturation);
    let natural = host_view(&host);
    let mut t = Tampering::new(CpuAccelerator::new(), Some(vec![0]));
    t.delta = P / 2;
    let (host, client) = one_request(plan, true, Box::new(t), 3);
    assert_eq!(client.unwrap_err(), Failure::AcceleratorMisbehaved);
    assert_eq!(host_view(&host), natural);
}
