//! SGX DCAP quote parsing (dcap-qvl under origami's bounds) and the full sgx-gramine
//! verification path on arbitrary quote bytes with real collateral: no panic, nothing verifies.
#![no_main]
use libfuzzer_sys::fuzz_target;
use origami_proto::evidence::{verify_at, Evidence, Measurement, Platform, Policy};

const COLLATERAL: &str = include_str!("../../crates/common/origami-proto/tests/data/sgx_quote_collateral.json");

fuzz_target!(|data: &[u8]| {
    let _ = origami_proto::sgx::parse_sgx_quote(data);
    let m = Measurement {
        code_id: [0; 32],
        model_hash: [0; 32],
        plan_hash: [3; 32],
        placement: origami_proto::Placement::Slalom,
        verify: true,
    };
    let mut ev = Evidence::unsigned(Platform::SgxGramine, m, [0; 32], [0; 16], [0; 32]);
    ev.proof = data.to_vec();
    ev.collateral = COLLATERAL.to_string();
    let policy = Policy {
        sgx_tcb_status: vec!["ConfigurationAndSWHardeningNeeded".into()],
        ..Policy::default()
    };
    assert!(verify_at(&ev, &policy, 1_750_377_600).is_err());
});
