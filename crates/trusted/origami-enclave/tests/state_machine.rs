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

#[test]
fn only_a_handed_off_request_waits_for_its_tail() {
    let mut c = core(Placement::Origami { split: 1 });
    c.precompute(1).unwrap();
    assert!(!c.awaiting_tail());
    let _ = offload(c.begin(input(1)).unwrap());
    // During an offload the request does not wait for a tail (the service refuses `park`).
    assert!(!c.awaiting_tail());
    // A tail output of the wrong shape is refused by the check the service applies.
    assert!(matches!(
        c.check_tail_output(&input(1)),
        Err(EnclaveError::AcceleratorMisbehaved {
            layer: None,
            what: origami_enclave::Misbehaviour::TailShape { .. }
        })
    ));
}
