//! Real SEV-SNP verification (the `sev` crate's pure-Rust crypto against AMD's ARK and ASK built
//! into it) of a real Milan attestation report and its VCEK (tests/data, from the `sev` crate's
//! test data), and the `sev-snp` attester over configfs-tsm against a fake kernel. The report's
//! data is not an origami digest, so full acceptance is shown on the attester's side only; these
//! tests show that the chain, the signature, the canonical encoding, the debug bit, the TCB and
//! the binding are each checked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use origami_proto::evidence::{
    hex, verify, AllowedMeasurement, Attester, Evidence, Measurement, Platform, Policy,
};
use origami_proto::rejection::Rejection;
use origami_proto::sgx::report_data;
use origami_proto::snp::{
    check_snp_report, parse_snp_report, snp_code_id, vcek_from_cert_table, vcek_issued_for,
    SnpCollateral, SnpPlatform, SnpTcb, REPORT_LEN,
};
use origami_proto::tsm::TsmFs;
use origami_proto::ProtoError;
use sev::certs::snp::Certificate;
use sev::firmware::guest::AttestationReport;

const REPORT_HEX: &str = include_str!("data/report_milan.hex");
const VCEK_DER: &[u8] = include_bytes!("data/vcek_milan.der");
/// REPORT_DATA's offset in an SNP report (AMD SEV-SNP ABI, table 22).
const REPORT_DATA_AT: usize = 0x50;

fn report() -> Vec<u8> {
    let hex = REPORT_HEX.trim();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn vcek_pem() -> String {
    let c = sev::certs::snp::Certificate::from_der(VCEK_DER).unwrap();
    String::from_utf8(c.to_pem().unwrap()).unwrap()
}

fn collateral() -> String {
    serde_json::to_string(&SnpCollateral { vcek: vcek_pem() }).unwrap()
}

fn measurement() -> Measurement {
    Measurement {
        code_id: snp_code_id(&parse_snp_report(&report()).unwrap()),
        model_hash: [2; 32],
        plan_hash: [3; 32],
        placement: origami_proto::Placement::Slalom,
        verify: true,
    }
}

fn evidence() -> Evidence {
    let mut ev = Evidence::unsigned(Platform::SevSnp, measurement(), [9; 32], [3; 16], [0; 32]);
    ev.proof = report();
    ev.collateral = collateral();
    ev
}

fn policy() -> Policy {
    Policy {
        measurements: vec![AllowedMeasurement {
            platform: "sev-snp".into(),
            code_id: hex(&measurement().code_id),
            model_hash: hex(&[2; 32]),
            min_split: None,
        }],
        ..Policy::default()
    }
}

fn err(ev: &Evidence, p: &Policy) -> Rejection {
    match verify(ev, p) {
        Err(ProtoError::Evidence(r)) => r,
        other => panic!("expected an evidence rejection, got {other:?}"),
    }
}

#[test]
fn the_chain_and_signature_verify_and_the_binding_is_enforced() {
    assert_eq!(report().len(), REPORT_LEN);
    // Chain to AMD, the VCEK's signature, the debug bit and the code id pass; the report data
    // is not this evidence's digest.
    assert_eq!(err(&evidence(), &policy()), Rejection::ReportDataMismatch);
    // Another code id.
    let mut ev = evidence();
    ev.measurement.code_id = [1; 32];
    let mut p = policy();
    p.measurements[0].code_id = hex(&[1; 32]);
    assert!(matches!(err(&ev, &p), Rejection::CodeIdMismatch { .. }));
    // A minimum TCB above the report's.
    let p = Policy {
        snp_min_tcb: Some(SnpTcb {
            bootloader: 255,
            tee: 0,
            snp: 0,
            microcode: 0,
        }),
        ..policy()
    };
    assert!(matches!(
        err(&evidence(), &p),
        Rejection::SnpTcbTooOld { .. }
    ));
    // At or below it, that check passes.
    let t = parse_snp_report(&report()).unwrap().reported_tcb;
    let p = Policy {
        snp_min_tcb: Some(SnpTcb {
            bootloader: t.bootloader,
            tee: t.tee,
            snp: t.snp,
            microcode: t.microcode,
        }),
        ..policy()
    };
    assert_eq!(err(&evidence(), &p), Rejection::ReportDataMismatch);
}

#[test]
fn every_flipped_bit_of_the_report_is_rejected() {
    let p = policy();
    let r = report();
    // The signed part (0x000..0x2A0) bit by bit at a stride, and the signature and the rest.
    for bit in (0..r.len() * 8).step_by(13) {
        let mut ev = evidence();
        ev.proof[bit / 8] ^= 1 << (bit % 8);
        let e = err(&ev, &p);
        assert_ne!(
            e,
            Rejection::ReportDataMismatch,
            "bit {bit} passed the signature"
        );
    }
    // Every truncation and an extension.
    for len in (0..r.len()).step_by(37) {
        let mut ev = evidence();
        ev.proof.truncate(len);
        assert!(
            matches!(err(&ev, &p), Rejection::SnpReportMalformed(_)),
            "len {len}"
        );
    }
    let mut ev = evidence();
    ev.proof.push(0);
    assert!(matches!(err(&ev, &p), Rejection::SnpReportMalformed(_)));
}

#[test]
fn the_vcek_must_be_amds_and_present() {
    let p = policy();
    // A VCEK altered in its signed body no longer chains to AMD.
    let mut der = VCEK_DER.to_vec();
    der[40] ^= 0xff;
    if let Ok(c) = sev::certs::snp::Certificate::from_der(&der) {
        let mut ev = evidence();
        ev.collateral = serde_json::to_string(&SnpCollateral {
            vcek: String::from_utf8(c.to_pem().unwrap()).unwrap(),
        })
        .unwrap();
        assert_eq!(err(&ev, &p), Rejection::SnpChain);
    }
    let mut ev = evidence();
    ev.collateral.clear();
    assert_eq!(err(&ev, &p), Rejection::NoCollateral);
    ev.collateral = "{\"vcek\": \"not a certificate\"}".into();
    assert!(matches!(err(&ev, &p), Rejection::CollateralMalformed(_)));
    ev.collateral = "{\"vcek\": \"x\", \"ark\": \"y\"}".into();
    assert!(matches!(err(&ev, &p), Rejection::CollateralMalformed(_)));
}

#[test]
fn a_debuggable_guest_is_refused_unless_the_policy_allows_it() {
    let ev = evidence();
    let mut r = parse_snp_report(&report()).unwrap();
    r.report_data = report_data(&ev.digest());
    check_snp_report(&r, &ev, &ev.digest(), &policy()).unwrap();
    r.policy.set_debug_allowed(true);
    let e = check_snp_report(&r, &ev, &ev.digest(), &policy()).unwrap_err();
    assert!(
        matches!(e, ProtoError::Evidence(Rejection::DebugSnpGuest)),
        "{e:?}"
    );
    let lax = Policy {
        snp_allow_debug: true,
        ..policy()
    };
    check_snp_report(&r, &ev, &ev.digest(), &lax).unwrap();
}

/// A certificate table as the SNP firmware lays it out: entries, a zero entry, then the data.
fn cert_table(vcek: &[u8]) -> Vec<u8> {
    let guid = [
        0x63, 0xda, 0x75, 0x8d, 0xe6, 0x64, 0x45, 0x64, 0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac,
        0xcd,
    ];
    let mut t = guid.to_vec();
    t.extend_from_slice(&48u32.to_le_bytes());
    t.extend_from_slice(&(vcek.len() as u32).to_le_bytes());
    t.extend_from_slice(&[0; 24]);
    t.extend_from_slice(vcek);
    t
}

#[test]
fn the_certificate_table_is_parsed_within_bounds() {
    assert_eq!(
        vcek_from_cert_table(&cert_table(VCEK_DER)).unwrap(),
        Some(VCEK_DER.to_vec())
    );
    assert_eq!(vcek_from_cert_table(&[0; 24]).unwrap(), None);
    // An entry pointing past the end, a truncated table, no terminator.
    let mut t = cert_table(VCEK_DER);
    t.truncate(t.len() - 1);
    assert!(vcek_from_cert_table(&t).is_err());
    assert!(vcek_from_cert_table(&t[..30]).is_err());
    let mut t = cert_table(VCEK_DER);
    t[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(vcek_from_cert_table(&t).is_err());
}

/// A fake configfs-tsm whose "SNP firmware" answers with the sample report carrying the
/// written report data, and the certificate table with its VCEK.
struct FakeSnp {
    files: Mutex<HashMap<PathBuf, Vec<u8>>>,
}

impl TsmFs for FakeSnp {
    fn create_dir(&self, p: &Path) -> std::io::Result<()> {
        let mut f = self.files.lock().unwrap();
        f.insert(p.join("provider"), b"sev_guest\n".to_vec());
        f.insert(p.join("generation"), b"0\n".to_vec());
        f.insert(p.join("auxblob"), cert_table(VCEK_DER));
        Ok(())
    }
    fn remove_dir(&self, _: &Path) -> std::io::Result<()> {
        Ok(())
    }
    fn write(&self, p: &Path, data: &[u8]) -> std::io::Result<()> {
        let mut f = self.files.lock().unwrap();
        f.insert(p.to_path_buf(), data.to_vec());
        f.insert(p.parent().unwrap().join("generation"), b"1\n".to_vec());
        Ok(())
    }
    fn read(&self, p: &Path, _max: usize) -> std::io::Result<Vec<u8>> {
        let f = self.files.lock().unwrap();
        if p.ends_with("outblob") {
            let mut r = report();
            let data = &f[&p.parent().unwrap().join("inblob")];
            r[REPORT_DATA_AT..REPORT_DATA_AT + 64].copy_from_slice(data);
            return Ok(r);
        }
        f.get(p).cloned().ok_or(std::io::ErrorKind::NotFound.into())
    }
}

#[test]
fn the_attester_binds_the_digest_and_carries_the_vcek() {
    assert_eq!(
        &report()[REPORT_DATA_AT..REPORT_DATA_AT + 64],
        &parse_snp_report(&report()).unwrap().report_data[..]
    );
    let fake = FakeSnp {
        files: Mutex::default(),
    };
    let p = SnpPlatform::open_with(fake, Path::new("/fake/tsm/report")).unwrap();
    assert_eq!(p.platform(), Platform::SevSnp);
    assert_eq!(p.code_id(), measurement().code_id);
    let ev = p.attest(measurement(), [9; 32], [3; 16]).unwrap();
    let r = parse_snp_report(&ev.proof).unwrap();
    assert_eq!(r.report_data, report_data(&ev.digest()));
    check_snp_report(&r, &ev, &ev.digest(), &policy()).unwrap();
    // The VCEK from auxblob travels as the evidence's collateral.
    let c: SnpCollateral = serde_json::from_str(&ev.collateral).unwrap();
    assert_eq!(c.vcek, vcek_pem());
    // The report data changed, so the VCEK's signature no longer holds: the client refuses.
    assert_eq!(err(&ev, &policy()), Rejection::SnpSignature);
}

#[test]
fn the_vcek_must_be_the_one_issued_for_the_reports_tcb_and_chip() {
    let vcek: x509_cert::Certificate = Certificate::from_der(VCEK_DER).unwrap().into();
    let r = parse_snp_report(&report()).unwrap();
    // AMD's sample: its VCEK was issued for this report's TCB and chip.
    vcek_issued_for(&vcek, &r).unwrap();
    let code = |r: &AttestationReport| match vcek_issued_for(&vcek, r) {
        Err(ProtoError::Evidence(Rejection::SnpVcekMismatch(m))) => m,
        other => panic!("expected a VCEK mismatch, got {other:?}"),
    };
    // A report claiming another TCB than its VCEK's (each component in turn): the signature
    // check alone cannot see it when the host pairs a report with another TCB's VCEK.
    for i in 0..4 {
        let mut t = r;
        let c = match i {
            0 => &mut t.reported_tcb.bootloader,
            1 => &mut t.reported_tcb.tee,
            2 => &mut t.reported_tcb.snp,
            _ => &mut t.reported_tcb.microcode,
        };
        *c = c.wrapping_add(1);
        assert!(code(&t).contains("SPL"), "component {i}");
    }
    // Another chip's report.
    let mut t = r;
    t.chip_id[5] ^= 1;
    assert!(code(&t).contains("chip id"));
    // A masked chip id (all zeros) is accepted: the guest chose not to reveal it.
    let mut t = r;
    t.chip_id = [0; 64];
    vcek_issued_for(&vcek, &t).unwrap();
}
