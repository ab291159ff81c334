//! TDX quote parsing (dcap-qvl under origami's bounds) and the full tdx verification path on
//! arbitrary quote bytes with real collateral: no panic, nothing verifies.
#![no_main]
use libfuzzer_sys::fuzz_target;
use origami_proto::evidence::{verify_at, Evidence, Measurement, Platform, Policy};

const COLLATERAL: &str =
    include_str!("../../crates/common/origami-proto/tests/data/tdx_quote_collateral.json");

fuzz_target!(|data: &[u8]| {
    let _ = origami_proto::tdx::parse_tdx_quote(data);
    let m = Measurement {
        code_id: [0; 32],
        model_hash: [0; 32],
        plan_hash: [3; 32],
        placement: origami_proto::Placement::Slalom,
        verify: true,
    };
    let mut ev = Evidence::unsigned(Platform::Tdx, m, [0; 32], [0; 16], [0; 32]);
    ev.proof = data.to_vec();
    ev.collateral = COLLATERAL.to_string();
    assert!(verify_at(&ev, &Policy::default(), 1_750_377_600).is_err());
});
