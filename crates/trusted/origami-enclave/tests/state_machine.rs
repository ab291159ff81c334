//! The enclave core's state machine by itself (no accelerator, no host crate): every misuse
//! transition a host can attempt is refused with a typed error, and a refusal never costs a pad
//! it should not, never revives a consumed one, and never corrupts the request in flight.

use std::sync::Arc;

use origami_enclave::{CoreConfig, EnclaveCore, EnclaveError, Placement, Plan, Reply, Step};
use origami_field::SealedPad;
use origami_model::{zoo, Tensor};

fn core(placement: Placement) -> EnclaveCore {
    let model = zoo::fashion();
    let plan = Arc::new(Plan::served(model, placement, 2).unwrap());
    EnclaveCore::new(
        plan,
        CoreConfig {
            placement,
            verify: true,
            threads: 1,
        },
    )
    .unwrap()
}

fn input(seed: u64) -> Tensor {
    zoo::seeded_input(&zoo::fashion(), seed)
}

fn offload(step: Step) -> origami_enclave::Offload {
    match step {
        Step::Offload(o) => o,
        other => panic!("expected an offload, got {other:?}"),
    }
}

#[test]
fn resume_before_begin_is_misuse() {
    let mut c = core(Placement::Slalom);
    let e = c.resume(Reply::Tail(input(1))).unwrap_err();
    assert!(matches!(e, EnclaveError::Misuse(_)), "{e}");
}

#[test]
fn a_request_needs_a_ready_pad() {
    let mut c = core(Placement::Slalom);
    assert!(matches!(
        c.begin(input(1)),
        Err(EnclaveError::PadsExhausted)
    ));
    c.precompute(1).unwrap();
    assert!(matches!(
        c.begin_with_pad(input(1), Some(99)),
        Err(EnclaveError::PadNotReady { pad: 99 })
    ));
    // The refusals consumed nothing.
    assert_eq!(c.pads_ready(), 1);
    assert!(c.pad_is_ready(0));
}

#[test]
fn a_bad_input_costs_no_pad() {
    let mut c = core(Placement::Slalom);
    c.precompute(1).unwrap();
    let wrong = Tensor::new(vec![1, 1, 14, 14], vec![0.5; 196]).unwrap();
    assert!(matches!(c.begin(wrong), Err(EnclaveError::BadRequest(_))));
    let batch = Tensor::new(vec![2, 1, 28, 28], vec![0.5; 2 * 784]).unwrap();
    assert!(matches!(c.begin(batch), Err(EnclaveError::BadRequest(_))));
    assert_eq!(c.pads_ready(), 1);
}

#[test]
fn begin_while_in_flight_keeps_the_request_in_flight() {
    let mut c = core(Placement::Slalom);
    c.precompute(2).unwrap();
    let first = offload(c.begin(input(1)).unwrap());
    assert!(matches!(c.begin(input(2)), Err(EnclaveError::Misuse(_))));
    // The second begin took no pad, and the first request is still the one in flight.
    assert_eq!(c.pads_ready(), 1);
    assert!(matches!(c.begin(input(3)), Err(EnclaveError::Misuse(_))));
    assert_eq!(first.layer, 0);
}

#[test]
fn wrong_replies_end_the_request_and_its_pad_stays_used() {
    let mut c = core(Placement::Slalom);
    c.precompute(3).unwrap();
    // A tail reply to an offload.
    let o = offload(c.begin(input(1)).unwrap());
    let e = c.resume(Reply::Tail(input(1))).unwrap_err();
    assert!(matches!(e, EnclaveError::Misuse(_)), "{e}");
    assert!(!c.pad_is_ready(o.pad_id), "a pad is never revived");
    // The request was abandoned: a new one begins (on the next pad).
    let o = offload(c.begin(input(2)).unwrap());
    // A result of the wrong length.
    let sealed = SealedPad {
        pad_id: o.pad_id,
        layer: o.layer,
        len: 1,
        ciphertext: vec![0; 32],
    };
    let e = c
        .resume(Reply::Linear {
            result: vec![0; 3],
            sealed_u: sealed,
        })
        .unwrap_err();
    assert!(
        matches!(
            e,
            EnclaveError::AcceleratorMisbehaved {
                layer: Some(0),
                what: origami_enclave::Misbehaviour::WrongLength { got: 3, .. }
            }
        ),
        "{e}"
    );
    assert!(!c.pad_is_ready(o.pad_id));
    // Abort then resume: misuse, nothing in flight.
    let _ = offload(c.begin(input(3)).unwrap());
    c.abort();
    assert!(matches!(
        c.resume(Reply::Tail(input(3))),
        Err(EnclaveError::Misuse(_))
    ));
    assert_eq!(c.pads_ready(), 0);
}

/// The honest accelerator's answer to an offload, computed here: (W · x̄) mod p, exactly.
fn linear(c: &EnclaveCore, o: &origami_enclave::Offload) -> Vec<u32> {
    use origami_model::linalg::{conv2d, gemm_nt, LinearShape};
    let l = &c.plan().linears[o.layer as usize];
    let x: Vec<f64> = o.blinded.iter().map(|&v| v as f64).collect();
    let mut y = vec![0f64; l.shape.out_len()];
    match &l.shape {
        LinearShape::Conv(g) => conv2d(g, &x, &l.wq, &mut y, 1),
        LinearShape::Dense { in_f, out_f } => gemm_nt(1, *in_f, *out_f, &x, &l.wq, &mut y, 1),
    }
    y.into_iter().map(origami_field::reduce_f64).collect()
}

/// Begins a request on a core at `origami --split 1` and drives it to its handoff.
fn handed_off(
    c: &mut EnclaveCore,
    pads: &mut Vec<SealedPad>,
    seed: u64,
) -> origami_enclave::Handoff {
    let o = offload(c.begin(input(seed)).unwrap());
    let i = pads
        .iter()
        .position(|p| p.pad_id == o.pad_id && p.layer == o.layer)
        .expect("the pad of the offload");
    let sealed_u = pads.remove(i);
    let result = linear(c, &o);
    match c.resume(Reply::Linear { result, sealed_u }).unwrap() {
        Step::Handoff(h) => h,
        other => panic!("expected a handoff, got {other:?}"),
    }
}

#[test]
fn only_a_handed_off_request_waits_for_its_tail_and_parks() {
    let mut c = core(Placement::Origami { split: 1 });
    let mut pads = c.precompute(3).unwrap();
    assert!(!c.awaiting_tail());
    // Nothing in flight: nothing to park.
    assert!(matches!(c.park(), Err(EnclaveError::Misuse(_))));
    let o = offload(c.begin(input(1)).unwrap());
    // During an offload the request does not wait for a tail, and cannot be parked; the
    // refusal leaves the request in flight.
    assert!(!c.awaiting_tail());
    assert!(matches!(c.park(), Err(EnclaveError::Misuse(_))));
    let i = pads.iter().position(|p| p.pad_id == o.pad_id).unwrap();
    let sealed_u = pads.remove(i);
    let result = linear(&c, &o);
    assert!(matches!(
        c.resume(Reply::Linear { result, sealed_u }),
        Ok(Step::Handoff(_))
    ));
    assert!(c.awaiting_tail());
    let first = c.park().unwrap();
    assert_eq!(first.dropped, None);
    // Parked: the core is free for the next request, which parks too.
    assert!(!c.awaiting_tail());
    let _ = handed_off(&mut c, &mut pads, 2);
    let second = c.park().unwrap();
    assert_ne!(first.ticket, second.ticket);
    assert_eq!(c.parked(), 2);
    // A tail output of the wrong shape is refused, and the ticket is spent all the same.
    assert!(matches!(
        c.finish(first.ticket, &input(1)),
        Err(EnclaveError::AcceleratorMisbehaved {
            layer: None,
            what: origami_enclave::Misbehaviour::TailShape { .. }
        })
    ));
    assert!(matches!(
        c.finish(first.ticket, &input(1)),
        Err(EnclaveError::Misuse(_))
    ));
    // The right shape finishes; a ticket is used once; an unknown ticket is misuse.
    let out_shape = c.plan().shapes[c.plan().model.output.index()].clone();
    let out = Tensor::zeros(out_shape);
    c.finish(second.ticket, &out).unwrap();
    assert!(matches!(
        c.finish(second.ticket, &out),
        Err(EnclaveError::Misuse(_))
    ));
    assert!(matches!(c.finish(999, &out), Err(EnclaveError::Misuse(_))));
    assert_eq!(c.parked(), 0);
    // A tail reply is refused once the request is parked (nothing is in flight).
    let _ = handed_off(&mut c, &mut pads, 3);
    let third = c.park().unwrap();
    assert!(matches!(
        c.resume(Reply::Tail(out.clone())),
        Err(EnclaveError::Misuse(_))
    ));
    c.finish(third.ticket, &out).unwrap();
}

#[test]
fn parking_beyond_the_bound_drops_the_oldest() {
    let mut c = core(Placement::Origami { split: 1 });
    let n = origami_enclave::MAX_PARKED + 1;
    let mut pads = c.precompute(n).unwrap();
    let mut tickets = Vec::new();
    for i in 0..n {
        let _ = handed_off(&mut c, &mut pads, i as u64);
        let p = c.park().unwrap();
        if i < n - 1 {
            assert_eq!(p.dropped, None);
        } else {
            assert_eq!(p.dropped, Some(tickets[0]));
        }
        tickets.push(p.ticket);
    }
    assert_eq!(c.parked(), origami_enclave::MAX_PARKED);
    let out = Tensor::zeros(c.plan().shapes[c.plan().model.output.index()].clone());
    assert!(matches!(
        c.finish(tickets[0], &out),
        Err(EnclaveError::Misuse(_))
    ));
    c.finish(tickets[n - 1], &out).unwrap();
}
