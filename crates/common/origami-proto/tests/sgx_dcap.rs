//! Real DCAP verification (dcap-qvl against Intel's root CA) of a real SGX quote and its
//! collateral (tests/data, from dcap-qvl's samples). Its report data is not an origami digest,
//! so full acceptance cannot be shown with it; these tests show that the signature chain,
//! collateral, validity time and TCB status are checked, in that order, before the binding.

use origami_proto::evidence::{
    hex, verify_at, AllowedMeasurement, Evidence, Measurement, Platform, Policy,
};
use origami_proto::rejection::Rejection;
use origami_proto::sgx::parse_sgx_quote;
use origami_proto::ProtoError;

const QUOTE: &[u8] = include_bytes!("data/sgx_quote");
const COLLATERAL: &str = include_str!("data/sgx_quote_collateral.json");
/// 2025-06-20T00:00:00Z: inside the sample collateral's validity (TCB info and QE identity
/// issued 2025-06-19, next update 2025-07-19).
const NOW: u64 = 1_750_377_600;

fn evidence() -> Evidence {
    let report = parse_sgx_quote(QUOTE).unwrap();
    let m = Measurement {
        code_id: report.mr_enclave,
        model_hash: [2; 32],
        plan_hash: [3; 32],
        placement: origami_proto::Placement::Slalom,
        verify: true,
    };
    let mut ev = Evidence::unsigned(Platform::SgxGramine, m, [9; 32], [3; 16], [0; 32]);
    ev.proof = QUOTE.to_vec();
    ev.collateral = COLLATERAL.to_string();
    ev
}

fn policy(status: &[&str]) -> Policy {
    Policy {
        measurements: vec![AllowedMeasurement {
            platform: "sgx-gramine".into(),
            code_id: hex(&parse_sgx_quote(QUOTE).unwrap().mr_enclave),
            model_hash: hex(&[2; 32]),
            min_split: None,
        }],
        sgx_tcb_status: status.iter().map(|s| s.to_string()).collect(),
        ..Policy::default()
    }
}

/// Why `ev` is refused; every refusal here must be a typed evidence rejection.
fn err(ev: &Evidence, p: &Policy, now: u64) -> Rejection {
    match verify_at(ev, p, now) {
        Err(ProtoError::Evidence(r)) => r,
        other => panic!("expected an evidence rejection, got {other:?}"),
    }
}

#[test]
fn the_chain_verifies_and_the_default_policy_wants_up_to_date() {
    match err(&evidence(), &policy(&[]), NOW) {
        Rejection::TcbStatus {
            status,
            advisories,
            allowed,
        } => {
            assert_eq!(status, "ConfigurationAndSWHardeningNeeded");
            assert!(advisories.contains("INTEL-SA-00615"), "{advisories}");
            assert_eq!(allowed, "UpToDate");
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn with_the_status_allowed_the_binding_is_still_enforced() {
    let e = err(
        &evidence(),
        &policy(&["ConfigurationAndSWHardeningNeeded"]),
        NOW,
    );
    assert_eq!(e, Rejection::ReportDataMismatch);
}

#[test]
fn tampered_quotes_collateral_and_stale_time_are_rejected() {
    let p = policy(&["ConfigurationAndSWHardeningNeeded"]);
    // A bit flipped in the signed report body (ISV SVN).
    let mut ev = evidence();
    ev.proof[48 + 258] ^= 1;
    let dcap_failed = |r: Rejection| matches!(r, Rejection::DcapFailed(_));
    assert!(dcap_failed(err(&ev, &p, NOW)));
    // A bit flipped in the ECDSA signature.
    let mut ev = evidence();
    ev.proof[48 + 384 + 4 + 10] ^= 1;
    assert!(dcap_failed(err(&ev, &p, NOW)));
    // Collateral edited (TCB info no longer matches Intel's signature).
    let mut ev = evidence();
    ev.collateral = COLLATERAL.replacen("UpToDate", "UpToDatf", 1);
    assert!(dcap_failed(err(&ev, &p, NOW)));
    // Collateral expired: a year later.
    assert!(dcap_failed(err(&evidence(), &p, NOW + 365 * 86_400)));
    // No collateral; malformed collateral; not a quote.
    let mut ev = evidence();
    ev.collateral.clear();
    assert_eq!(err(&ev, &p, NOW), Rejection::NoCollateral);
    ev.collateral = "{".into();
    assert!(matches!(
        err(&ev, &p, NOW),
        Rejection::CollateralMalformed(_)
    ));
    let mut ev = evidence();
    ev.proof.truncate(100);
    assert!(matches!(err(&ev, &p, NOW), Rejection::QuoteMalformed(_)));
}

/// Review finding 8: a policy's minimum TCB evaluation data number refuses collateral older
/// than it (the host picks the collateral). The sample collateral's number is found by
/// bisection over the policy alone: the first minimum it fails is one above its number.
#[test]
fn a_minimum_tcb_evaluation_data_number_refuses_older_collateral() {
    let with_min = |min: u32| Policy {
        sgx_min_tcb_eval_data_number: Some(min),
        ..policy(&["ConfigurationAndSWHardeningNeeded"])
    };
    let refused = |min: u32| {
        matches!(
            err(&evidence(), &with_min(min), NOW),
            Rejection::CollateralTooOld { .. }
        )
    };
    assert!(!refused(0), "every collateral has a number of at least 0");
    assert!(refused(u32::MAX));
    let (mut lo, mut hi) = (0u32, u32::MAX);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if refused(mid) {
            hi = mid
        } else {
            lo = mid
        }
    }
    // At its own number the collateral passes this check and fails later, at the binding.
    assert_eq!(
        err(&evidence(), &with_min(lo), NOW),
        Rejection::ReportDataMismatch
    );
    assert_eq!(
        err(&evidence(), &with_min(hi), NOW),
        Rejection::CollateralTooOld { got: lo, min: hi }
    );
}
