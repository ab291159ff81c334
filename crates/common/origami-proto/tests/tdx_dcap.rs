//! Real DCAP verification of a real TDX quote (v4) and its collateral (tests/data, from
//! dcap-qvl's samples), and the `tdx` attester over configfs-tsm against a fake kernel. The
//! quote's report data is not an origami digest, so full acceptance is shown on the attester's
//! side only; these tests show that the chain, collateral, validity time, TCB status, debug
//! bit, registers and binding are each checked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use origami_proto::evidence::{
    hex, verify_at, AllowedMeasurement, Attester, Evidence, Measurement, Platform, Policy,
};
use origami_proto::rejection::Rejection;
use origami_proto::sgx::report_data;
use origami_proto::tdx::{check_td_report, parse_tdx_quote, tdx_code_id, TdxPlatform};
use origami_proto::tsm::TsmFs;
use origami_proto::ProtoError;

const QUOTE: &[u8] = include_bytes!("data/tdx_quote");
const COLLATERAL: &str = include_str!("data/tdx_quote_collateral.json");
/// 2025-06-20T00:00:00Z: inside the sample collateral's validity (issued 2025-06-19, next
/// update 2025-07-19).
const NOW: u64 = 1_750_377_600;
/// Where the TD report's report data sits in a v4 quote: the 48-byte header, then the TD
/// report (16 + 3×48 + 3×8 + 4×48 + 4×48 = 520 bytes before the report data).
const REPORT_DATA_AT: usize = 48 + 520;

fn measurement() -> Measurement {
    Measurement {
        code_id: tdx_code_id(&parse_tdx_quote(QUOTE).unwrap()),
        model_hash: [2; 32],
        plan_hash: [3; 32],
        placement: origami_proto::Placement::Slalom,
        verify: true,
    }
}

fn evidence() -> Evidence {
    let mut ev = Evidence::unsigned(Platform::Tdx, measurement(), [9; 32], [3; 16], [0; 32]);
    ev.proof = QUOTE.to_vec();
    ev.collateral = COLLATERAL.to_string();
    ev
}

fn policy() -> Policy {
    Policy {
        measurements: vec![AllowedMeasurement {
            platform: "tdx".into(),
            code_id: hex(&measurement().code_id),
            model_hash: hex(&[2; 32]),
            min_split: None,
        }],
        ..Policy::default()
    }
}

fn err(ev: &Evidence, p: &Policy, now: u64) -> Rejection {
    match verify_at(ev, p, now) {
        Err(ProtoError::Evidence(r)) => r,
        other => panic!("expected an evidence rejection, got {other:?}"),
    }
}

#[test]
fn the_sample_is_a_td_report_with_its_registers() {
    let r = parse_tdx_quote(QUOTE).unwrap();
    assert_eq!(
        &QUOTE[REPORT_DATA_AT..REPORT_DATA_AT + 64],
        &r.report_data[..]
    );
    // The code id changes with any one register.
    let mut other = r;
    other.rt_mr3[0] ^= 1;
    assert_ne!(tdx_code_id(&other), tdx_code_id(&r));
    // An SGX quote is not a TD quote.
    let sgx = include_bytes!("data/sgx_quote");
    assert!(matches!(
        parse_tdx_quote(sgx),
        Err(ProtoError::Evidence(Rejection::NotTdxQuote))
    ));
}

#[test]
fn the_chain_and_tcb_verify_and_the_binding_is_enforced() {
    // The sample's TCB is UpToDate: the default policy gets past the chain and the TCB
    // status, to the report data, which is not this evidence's digest.
    assert_eq!(
        err(&evidence(), &policy(), NOW),
        Rejection::ReportDataMismatch
    );
    // Registers that are not the evidence's code id.
    let mut ev = evidence();
    ev.measurement.code_id = [1; 32];
    let mut p = policy();
    p.measurements[0].code_id = hex(&[1; 32]);
    assert!(matches!(
        err(&ev, &p, NOW),
        Rejection::CodeIdMismatch { .. }
    ));
    // A policy that accepts only another status refuses it.
    let p = Policy {
        tdx_tcb_status: vec!["OutOfDate".into()],
        ..policy()
    };
    assert!(matches!(
        err(&evidence(), &p, NOW),
        Rejection::TcbStatus { .. }
    ));
    // A minimum evaluation number above the collateral's.
    let p = Policy {
        tdx_min_tcb_eval_data_number: Some(u32::MAX),
        ..policy()
    };
    assert!(matches!(
        err(&evidence(), &p, NOW),
        Rejection::CollateralTooOld { .. }
    ));
    // An entry for another platform does not admit TDX evidence (checked after the proof).
    let mut p = policy();
    p.measurements[0].platform = "sgx-gramine".into();
    assert_eq!(err(&evidence(), &p, NOW), Rejection::ReportDataMismatch);
}

#[test]
fn tampered_quotes_collateral_and_stale_time_are_rejected() {
    let p = policy();
    let dcap_failed = |r: Rejection| matches!(r, Rejection::DcapFailed(_));
    // One bit flipped in the signed TD report (in MRTD, in RTMR2, in the report data) and in
    // the signature that follows it.
    for at in [48 + 136, 48 + 456, REPORT_DATA_AT + 5, 48 + 584 + 4 + 10] {
        let mut ev = evidence();
        ev.proof[at] ^= 1;
        let r = err(&ev, &p, NOW);
        assert!(
            dcap_failed(r.clone()) || matches!(r, Rejection::CodeIdMismatch { .. }),
            "byte {at}: {r:?}"
        );
    }
    // Every truncation into the quote is refused. The sample ends in 70 zero bytes of padding
    // after the signature data's declared length (as the TDX module hands quotes out); they
    // are not part of the quote, and cutting them off changes nothing.
    let sig_len = u32::from_le_bytes(QUOTE[48 + 584..48 + 588].try_into().unwrap()) as usize;
    let end = 48 + 584 + 4 + sig_len;
    assert!(QUOTE[end..].iter().all(|&b| b == 0));
    for len in (0..end).step_by(97).chain([end - 1]) {
        let mut ev = evidence();
        ev.proof.truncate(len);
        let r = err(&ev, &p, NOW);
        assert!(
            matches!(r, Rejection::QuoteMalformed(_)) || dcap_failed(r.clone()),
            "len {len}: {r:?}"
        );
    }
    // Collateral edited, expired (a year later), missing, malformed.
    let mut ev = evidence();
    ev.collateral = COLLATERAL.replacen("UpToDate", "UpToDatf", 1);
    assert!(dcap_failed(err(&ev, &p, NOW)));
    assert!(dcap_failed(err(&evidence(), &p, NOW + 365 * 86_400)));
    let mut ev = evidence();
    ev.collateral.clear();
    assert_eq!(err(&ev, &p, NOW), Rejection::NoCollateral);
    ev.collateral = "{".into();
    assert!(matches!(
        err(&ev, &p, NOW),
        Rejection::CollateralMalformed(_)
    ));
}

#[test]
fn a_debug_td_is_refused_unless_the_policy_allows_it() {
    let ev = evidence();
    let mut r = parse_tdx_quote(QUOTE).unwrap();
    r.report_data = report_data(&ev.digest());
    check_td_report(&r, &ev, &ev.digest(), &policy()).unwrap();
    r.td_attributes[0] |= 0x01;
    let e = check_td_report(&r, &ev, &ev.digest(), &policy()).unwrap_err();
    assert!(
        matches!(e, ProtoError::Evidence(Rejection::DebugTd)),
        "{e:?}"
    );
    let lax = Policy {
        tdx_allow_debug: true,
        ..policy()
    };
    check_td_report(&r, &ev, &ev.digest(), &lax).unwrap();
}

/// A fake configfs-tsm whose "TDX module" answers with the sample quote carrying the written
/// report data (no signature is checked on the attester's side).
struct FakeTdx {
    files: Mutex<HashMap<PathBuf, Vec<u8>>>,
    /// Answer with the sample's own report data instead (a quote over other data).
    stale: bool,
}

impl TsmFs for FakeTdx {
    fn create_dir(&self, p: &Path) -> std::io::Result<()> {
        let mut f = self.files.lock().unwrap();
        f.insert(p.join("provider"), b"tdx_guest\n".to_vec());
        f.insert(p.join("generation"), b"0\n".to_vec());
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
            let mut q = QUOTE.to_vec();
            if !self.stale {
                let data = &f[&p.parent().unwrap().join("inblob")];
                q[REPORT_DATA_AT..REPORT_DATA_AT + 64].copy_from_slice(data);
            }
            return Ok(q);
        }
        f.get(p).cloned().ok_or(std::io::ErrorKind::NotFound.into())
    }
}

#[test]
fn the_attester_binds_the_digest_through_configfs_tsm() {
    let fake = FakeTdx {
        files: Mutex::default(),
        stale: false,
    };
    let p = TdxPlatform::open_with(fake, Path::new("/fake/tsm/report")).unwrap();
    assert_eq!(p.platform(), Platform::Tdx);
    assert_eq!(p.code_id(), measurement().code_id);
    let ev = p.attest(measurement(), [9; 32], [3; 16]).unwrap();
    let r = parse_tdx_quote(&ev.proof).unwrap();
    assert_eq!(r.report_data, report_data(&ev.digest()));
    check_td_report(&r, &ev, &ev.digest(), &policy()).unwrap();
    // Another code id than the TD's is refused before anything is asked.
    let mut m = measurement();
    m.code_id = [1; 32];
    assert!(p.attest(m, [9; 32], [3; 16]).is_err());
    // A quote over other report data is refused.
    let stale = FakeTdx {
        files: Mutex::default(),
        stale: true,
    };
    let p = TdxPlatform::open_with(stale, Path::new("/fake/tsm/report")).unwrap();
    let e = p.attest(measurement(), [9; 32], [3; 16]).unwrap_err();
    assert!(e.to_string().contains("other report data"), "{e}");
}
