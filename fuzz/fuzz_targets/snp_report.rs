//! SEV-SNP report parsing and the full sev-snp verification path on arbitrary report bytes
//! with a real VCEK: no panic, nothing verifies. The first byte picks whether the bytes are the
//! report or (for the certificate-table parser) an `auxblob`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use origami_proto::evidence::{verify, Evidence, Measurement, Platform, Policy};

const VCEK_DER: &[u8] =
    include_bytes!("../../crates/common/origami-proto/tests/data/vcek_milan.der");

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    if mode & 1 == 1 {
        let _ = origami_proto::snp::vcek_from_cert_table(data);
        return;
    }
    let _ = origami_proto::snp::parse_snp_report(data);
    let vcek = sev::certs::snp::Certificate::from_der(VCEK_DER).unwrap();
    let collateral = serde_json::to_string(&origami_proto::snp::SnpCollateral {
        vcek: String::from_utf8(vcek.to_pem().unwrap()).unwrap(),
    })
    .unwrap();
    let m = Measurement {
        code_id: [0; 32],
        model_hash: [0; 32],
        plan_hash: [3; 32],
        placement: origami_proto::Placement::Slalom,
        verify: true,
    };
    let mut ev = Evidence::unsigned(Platform::SevSnp, m, [0; 32], [0; 16], [0; 32]);
    ev.proof = data.to_vec();
    ev.collateral = collateral;
    assert!(verify(&ev, &Policy::default()).is_err());
});
