//! The `tdx` platform: the enclave runs in an Intel TDX confidential VM and is attested with a
//! TDX quote (DCAP, quote format v4/v5) that the VM asks for through configfs-tsm (`crate::tsm`).
//!
//! **What is measured.** In a CVM the TEE measures the boot chain, not one binary: MRTD (the
//! initial TD memory: the virtual firmware), RTMR0 (firmware configuration), RTMR1 (the kernel
//! and its boot loader), RTMR2 (the kernel command line and initrd), RTMR3 (whatever the running
//! VM extends; nothing, in the minimal image that starts `origami-enclave` with fixed arguments).
//! The evidence's code id for `tdx` is `tdx_code_id`: SHA-256 over a domain label and the five
//! registers, so a policy's `code_id` pins all of them at once (docs/CVM.md; the reproducible VM
//! image whose values an operator would pin is not written yet).
//!
//! **Client side** (`verify_quote`): dcap-qvl checks the quote's signature chain up to Intel's
//! root CA with the collateral the host attaches, then: the TCB status must be allowed by the
//! policy (`tdx_tcb_status`, default `UpToDate`), the collateral's TCB evaluation number at least
//! `tdx_min_tcb_eval_data_number`, the TD must not be a DEBUG TD (TD attributes bit 0) unless
//! `tdx_allow_debug`, the registers must hash to the evidence's code id and the report data must
//! be the evidence digest (`sgx::report_data`: digest ‖ 0^32).

use dcap_qvl::quote::{Quote, TDReport10};
use sha2::{Digest, Sha256};

use crate::evidence::{Evidence, Platform, Policy};
use crate::rejection::Rejection;
use crate::sgx::{check_binding, MAX_QUOTE};
use crate::tsm::{self, CvmPlatform, CvmTee, GuestReport, Provider, TsmReport};
use crate::ProtoError;

/// The DEBUG bit of the TD attributes (TUD byte, bit 0): the host can read a debug TD's memory.
const TD_ATTRIBUTES_DEBUG: u8 = 0x01;

fn reject(r: Rejection) -> ProtoError {
    ProtoError::Evidence(r)
}

/// The code id of a TD: SHA-256("origami/v1/tdx-code" ‖ MRTD ‖ RTMR0 ‖ RTMR1 ‖ RTMR2 ‖ RTMR3).
pub fn tdx_code_id(r: &TDReport10) -> [u8; 32] {
    tdx_code_id_of(&r.mr_td, [&r.rt_mr0, &r.rt_mr1, &r.rt_mr2, &r.rt_mr3])
}

/// `tdx_code_id` from the registers themselves (`origami measure tdx`).
pub fn tdx_code_id_of(mrtd: &[u8; 48], rtmrs: [&[u8; 48]; 4]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"origami/v1/tdx-code");
    h.update(mrtd);
    for reg in rtmrs {
        h.update(reg);
    }
    h.finalize().into()
}

/// Parses a DCAP quote (bounded) that must carry a TD report (TDX 1.0 or 1.5).
pub fn parse_tdx_quote(quote: &[u8]) -> Result<TDReport10, ProtoError> {
    if quote.len() > MAX_QUOTE {
        return Err(reject(Rejection::QuoteTooLarge {
            len: quote.len(),
            max: MAX_QUOTE,
        }));
    }
    let q = Quote::parse(quote).map_err(|e| reject(Rejection::QuoteMalformed(e.to_string())))?;
    q.report
        .as_td10()
        .copied()
        .ok_or_else(|| reject(Rejection::NotTdxQuote))
}

/// Checks a TD report against the evidence and policy (after the quote's signature chain and
/// TCB status were verified).
pub fn check_td_report(
    r: &TDReport10,
    ev: &Evidence,
    digest: &[u8; 32],
    policy: &Policy,
) -> Result<(), ProtoError> {
    if r.td_attributes[0] & TD_ATTRIBUTES_DEBUG != 0 && !policy.tdx_allow_debug {
        return Err(reject(Rejection::DebugTd));
    }
    check_binding(&tdx_code_id(r), &r.report_data, ev, digest)
}

/// Verifies `ev.proof` (a TDX quote) with `ev.collateral` at `now_secs`, then the TD report
/// against the evidence and policy.
pub fn verify_quote(
    ev: &Evidence,
    digest: &[u8; 32],
    policy: &Policy,
    now_secs: u64,
) -> Result<(), ProtoError> {
    let report = parse_tdx_quote(&ev.proof)?;
    let verified = crate::sgx::verify_dcap(
        ev,
        now_secs,
        policy.tdx_allow_debug,
        &policy.tdx_tcb_status,
        policy.tdx_min_tcb_eval_data_number,
    )?;
    // The report dcap-qvl verified, not a second parse of the bytes.
    let verified_report = verified
        .report
        .as_td10()
        .ok_or_else(|| reject(Rejection::NotTdxQuote))?;
    debug_assert_eq!(verified_report, &report);
    check_td_report(verified_report, ev, digest, policy)
}

/// What `CvmPlatform` needs of TDX: the quote, its report data and its code id.
pub struct Tdx;

impl CvmTee for Tdx {
    const PLATFORM: Platform = Platform::Tdx;
    const PROVIDER: Provider = Provider::Tdx;

    fn read(report: TsmReport) -> Result<GuestReport, ProtoError> {
        let r = parse_tdx_quote(&report.outblob)?;
        Ok(GuestReport {
            report_data: r.report_data,
            code_id: tdx_code_id(&r),
            proof: report.outblob,
            collateral: String::new(),
        })
    }
}

/// The TDX guest's attestation: configfs-tsm reports (`CvmPlatform::open` in a TD).
pub type TdxPlatform<F = tsm::RealFs> = CvmPlatform<Tdx, F>;
