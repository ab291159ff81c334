//! Real DCAP verification (dcap-qvl against Intel's root CA) of a real SGX quote and its
//! collateral (tests/data, from dcap-qvl's samples). Its report data is not an origami digest,
//! so full acceptance cannot be shown with it; these tests show that the signature chain,
//! collateral, validity time and TCB status are checked, in that order, before the binding.

use origami_proto::evidence::{
    hex, verify_at, AllowedMeasurement, Evidence, Measurement, Platform, Policy,
};
use origami_proto::sgx::parse_sgx_quote;

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
        placement: "slalom".into(),
        split: None,
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

fn err(ev: &Evidence, p: &Policy, now: u64) -> String {
    verify_at(ev, p, now).unwrap_err().to_string()
}

#[test]
fn the_chain_verifies_and_the_default_policy_wants_up_to_date() {
    let e = err(&evidence(), &policy(&[]), NOW);
    assert!(
        e.contains("TCB status is ConfigurationAndSWHardeningNeeded")
            && e.contains("INTEL-SA-00615")
            && e.contains("accepts UpToDate"),
        "{e}"
    );
}

#[test]
fn with_the_status_allowed_the_binding_is_still_enforced() {
    let e = err(
        &evidence(),
        &policy(&["ConfigurationAndSWHardeningNeeded"]),
        NOW,
    );
    assert!(e.contains("report data does not bind"), "{e}");
}

#[test]
fn tampered_quotes_collateral_and_stale_time_are_rejected() {
    let p = policy(&["ConfigurationAndSWHardeningNeeded"]);
    // A bit flipped in the signed report body (ISV SVN).
    let mut ev = evidence();
    ev.proof[48 + 258] ^= 1;
    let e = err(&ev, &p, NOW);
    assert!(e.contains("failed DCAP verification"), "{e}");
    // A bit flipped in the ECDSA signature.
    let mut ev = evidence();
    ev.proof[48 + 384 + 4 + 10] ^= 1;
    assert!(err(&ev, &p, NOW).contains("failed DCAP verification"));
    // Collateral edited (TCB info no longer matches Intel's signature).
    let mut ev = evidence();
    ev.collateral = COLLATERAL.replacen("UpToDate", "UpToDatf", 1);
    assert!(err(&ev, &p, NOW).contains("failed DCAP verification"));
    // Collateral expired: a year later.
    assert!(err(&evidence(), &p, NOW + 365 * 86_400).contains("failed DCAP verification"));
    // No collateral; malformed collateral; not a quote.
    let mut ev = evidence();
    ev.collateral.clear();
    assert!(err(&ev, &p, NOW).contains("--sgx-collateral"));
    ev.collateral = "{".into();
    assert!(err(&ev, &p, NOW).contains("malformed DCAP collateral"));
    let mut ev = evidence();
    ev.proof.truncate(100);
    assert!(err(&ev, &p, NOW).contains("malformed SGX quote"));
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
    let refused =
        |min: u32| err(&evidence(), &with_min(min), NOW).contains("evaluation data number");
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
    let e = err(&evidence(), &with_min(lo), NOW);
    assert!(e.contains("report data does not bind"), "{e}");
    let e = err(&evidence(), &with_min(hi), NOW);
    assert!(
        e.contains(&format!("is {lo}, below the policy's minimum {hi}")),
        "{e}"
    );
}
