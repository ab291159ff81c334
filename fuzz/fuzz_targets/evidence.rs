//! Evidence parsing (JSON, as `GET /v1/evidence` serves it, and postcard) and verification
//! against a permissive policy: no panic; nothing unsigned verifies.
#![no_main]
use libfuzzer_sys::fuzz_target;
use origami_proto::evidence::{verify, AllowedMeasurement, Evidence, Policy};

fuzz_target!(|data: &[u8]| {
    let policy = Policy {
        allow_simulated: true,
        measurements: vec![AllowedMeasurement {
            platform: "simulated".into(),
            code_id: "*".into(),
            model_hash: "00".repeat(32),
            min_split: None,
        }],
        ..Policy::default()
    };
    if let Ok(ev) = serde_json::from_slice::<Evidence>(data) {
        let _ = verify(&ev, &policy);
    }
    if let Ok(ev) = origami_proto::decode::<Evidence>(data) {
        let _ = verify(&ev, &policy);
    }
});
