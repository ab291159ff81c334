//! The `sgx-gramine` platform: Intel SGX under Gramine, attested with DCAP quotes.
//!
//! **Enclave side** (`GraminePlatform`): Gramine's `/dev/attestation` interface. The enclave
//! writes 64 bytes of user report data to `/dev/attestation/user_report_data` and reads a DCAP
//! quote from `/dev/attestation/quote`; the quoting enclave signs the report, whose report data
//! is `evidence.digest() ‖ 0^32`. The digest covers the session public key, the measurement
//! (model hash, placement, split, code id) and the instance id, so the quote binds all of them
//! to the key the client encrypts to — not just the key's hash. The code id is MRENCLAVE, read
//! from the platform's own quote at start.
//!
//! **Client side** (`verify_quote`): `dcap-qvl` checks the quote's signature chain up to
//! Intel's root CA (built into dcap-qvl) with the collateral (TCB info, QE identity, CRLs) the
//! host attaches; then the TCB status must be allowed by the policy (default: `UpToDate`
//! only), the enclave must not be a DEBUG enclave (unless the policy allows it), MRENCLAVE must
//! equal the evidence's code id and the report data must equal the evidence digest.
//!
//! Quote layout (Intel SGX ECDSA Quote Library API, quote format v3): a 48-byte header, the
//! 384-byte ISV enclave report body (MRENCLAVE at body offset 64, attributes at 48, report
//! data at 320), a u32 length, then the ECDSA signature data. Parsing is dcap-qvl's.

use std::path::{Path, PathBuf};

use dcap_qvl::quote::{EnclaveReport, Quote};
use dcap_qvl::QuoteCollateralV3;

use crate::evidence::{Attester, Evidence, Measurement, Platform, Policy};
use crate::rejection::Rejection;
use crate::ProtoError;

/// Largest quote accepted (real ones are about 4.6 KiB with the PCK chain).
pub const MAX_QUOTE: usize = 64 << 10;
/// Largest collateral JSON accepted (real ones are about 15 KiB).
pub const MAX_COLLATERAL: usize = 1 << 20;
/// The DEBUG bit of the SGX attributes' flags (bit 1 of the first byte).
const SGX_FLAGS_DEBUG: u8 = 0x02;

fn reject(r: Rejection) -> ProtoError {
    ProtoError::Evidence(r)
}

/// A failure of this enclave's own attestation interface (not a client's rejection).
fn attestation_err(m: impl Into<String>) -> ProtoError {
    ProtoError::Attestation(m.into())
}

/// The report data an SGX quote must carry for evidence with this digest.
pub fn report_data(digest: &[u8; 32]) -> [u8; 64] {
    let mut r = [0u8; 64];
    r[..32].copy_from_slice(digest);
    r
}

/// What every hardware report must bind, whatever the TEE: its code measurement (`code`: the
/// platform's code id) is the evidence's code id, its report data is the evidence digest, and
/// the evidence carries no platform key (the hardware signs, not a key of the enclave's).
pub(crate) fn check_binding(
    code: &[u8; 32],
    data: &[u8; 64],
    ev: &Evidence,
    digest: &[u8; 32],
) -> Result<(), ProtoError> {
    if *code != ev.measurement.code_id {
        return Err(reject(Rejection::CodeIdMismatch {
            quote: crate::evidence::hex(code),
            evidence: crate::evidence::hex(&ev.measurement.code_id),
        }));
    }
    if *data != report_data(digest) {
        return Err(reject(Rejection::ReportDataMismatch));
    }
    if ev.platform_key != [0; 32] {
        return Err(reject(Rejection::PlatformKeyPresent));
    }
    Ok(())
}

/// Parses a DCAP quote (bounded; SGX enclave reports only) and returns its enclave report.
pub fn parse_sgx_quote(quote: &[u8]) -> Result<EnclaveReport, ProtoError> {
    if quote.len() > MAX_QUOTE {
        return Err(reject(Rejection::QuoteTooLarge {
            len: quote.len(),
            max: MAX_QUOTE,
        }));
    }
    let q = Quote::parse(quote).map_err(|e| reject(Rejection::QuoteMalformed(e.to_string())))?;
    match q.report.as_sgx() {
        Some(r) => Ok(*r),
        None => Err(reject(Rejection::NotSgxQuote)),
    }
}

/// Checks an SGX enclave report against the evidence and policy (everything after the quote's
/// signature chain and TCB status were verified).
pub fn check_report(
    report: &EnclaveReport,
    ev: &Evidence,
    digest: &[u8; 32],
    policy: &Policy,
) -> Result<(), ProtoError> {
    if report.attributes[0] & SGX_FLAGS_DEBUG != 0 && !policy.sgx_allow_debug {
        return Err(reject(Rejection::DebugEnclave));
    }
    check_binding(&report.mr_enclave, &report.report_data, ev, digest)
}

/// The TCB statuses a policy accepts (`allowed`; empty: `UpToDate` only).
fn allowed_status(allowed: &[String]) -> Vec<&str> {
    if allowed.is_empty() {
        vec!["UpToDate"]
    } else {
        allowed.iter().map(String::as_str).collect()
    }
}

/// A DCAP quote (`ev.proof`, SGX or TDX) verified by dcap-qvl with the host's collateral
/// (`ev.collateral`, bounded) at `now_secs`, then its TCB judged by `check_tcb`.
pub(crate) fn verify_dcap(
    ev: &Evidence,
    now_secs: u64,
    allow_debug: bool,
    allowed: &[String],
    min_eval: Option<u32>,
) -> Result<dcap_qvl::verify::VerifiedReport, ProtoError> {
    if ev.collateral.is_empty() {
        return Err(reject(Rejection::NoCollateral));
    }
    if ev.collateral.len() > MAX_COLLATERAL {
        return Err(reject(Rejection::CollateralTooLarge {
            len: ev.collateral.len(),
            max: MAX_COLLATERAL,
        }));
    }
    let collateral: QuoteCollateralV3 = serde_json::from_str(&ev.collateral)
        .map_err(|e| reject(Rejection::CollateralMalformed(e.to_string())))?;
    let verifier = dcap_qvl::verify::QuoteVerifier::new_prod().allow_debug(allow_debug);
    let verified = verifier
        .verify(&ev.proof, &collateral, now_secs)
        .map_err(|e| reject(Rejection::DcapFailed(format!("{e:#}"))))?;
    check_tcb(
        &verifier,
        ev,
        &collateral,
        now_secs,
        &verified,
        allowed,
        min_eval,
    )?;
    Ok(verified)
}

/// The checks after dcap-qvl verified a quote (SGX or TDX): the collateral's TCB evaluation
/// data number is at least `min_eval`, and the TCB status is one of `allowed` (never
/// `Revoked`).
fn check_tcb(
    verifier: &dcap_qvl::verify::QuoteVerifier,
    ev: &Evidence,
    collateral: &QuoteCollateralV3,
    now_secs: u64,
    verified: &dcap_qvl::verify::VerifiedReport,
    allowed: &[String],
    min_eval: Option<u32>,
) -> Result<(), ProtoError> {
    if let Some(min) = min_eval {
        // The claims API reports the collateral's evaluation data number; the claims-only
        // policy applies no checks of its own (ours follow below).
        let claims = verifier
            .verify_with_policy(
                &ev.proof,
                collateral.clone(),
                now_secs,
                &dcap_qvl::QuotePolicy::claims_only(now_secs),
            )
            .map_err(|e| reject(Rejection::DcapFailed(format!("{e:#}"))))?;
        if claims.tcb.eval_data_number < min {
            return Err(reject(Rejection::CollateralTooOld {
                got: claims.tcb.eval_data_number,
                min,
            }));
        }
    }
    let allowed = allowed_status(allowed);
    if verified.status == "Revoked" || !allowed.contains(&verified.status.as_str()) {
        return Err(reject(Rejection::TcbStatus {
            status: verified.status.clone(),
            advisories: if verified.advisory_ids.is_empty() {
                "none".to_string()
            } else {
                verified.advisory_ids.join(", ")
            },
            allowed: allowed.join(", "),
        }));
    }
    Ok(())
}

/// Verifies `ev.proof` (a DCAP quote) with `ev.collateral` at `now_secs`, then the report
/// against the evidence and policy.
pub fn verify_quote(
    ev: &Evidence,
    digest: &[u8; 32],
    policy: &Policy,
    now_secs: u64,
) -> Result<(), ProtoError> {
    let report = parse_sgx_quote(&ev.proof)?;
    let verified = verify_dcap(
        ev,
        now_secs,
        policy.sgx_allow_debug,
        &policy.sgx_tcb_status,
        policy.sgx_min_tcb_eval_data_number,
    )?;
    // The report dcap-qvl verified, not a second parse of the bytes.
    let verified_report = verified
        .report
        .as_sgx()
        .ok_or_else(|| reject(Rejection::NotSgxQuote))?;
    debug_assert_eq!(verified_report, &report);
    check_report(verified_report, ev, digest, policy)
}

/// Gramine's attestation interface (`/dev/attestation` inside a Gramine-SGX enclave).
pub struct GraminePlatform {
    dir: PathBuf,
    mr_enclave: [u8; 32],
}

impl GraminePlatform {
    /// Opens the interface under `dir` (`/dev/attestation` in production); checks that the
    /// attestation type is DCAP and reads this enclave's MRENCLAVE from a first quote.
    pub fn open(dir: &Path) -> Result<Self, ProtoError> {
        let kind = std::fs::read_to_string(dir.join("attestation_type")).map_err(|e| {
            attestation_err(format!(
                "no Gramine attestation interface at {} ({e}): run the enclave under gramine-sgx with sgx.remote_attestation = \"dcap\", or use --platform simulated for development",
                dir.display()
            ))
        })?;
        if kind.trim() != "dcap" {
            return Err(attestation_err(format!(
                "Gramine attestation type is {:?}; origami needs \"dcap\" (sgx.remote_attestation = \"dcap\" in the manifest)",
                kind.trim()
            )));
        }
        let mut p = Self {
            dir: dir.to_path_buf(),
            mr_enclave: [0; 32],
        };
        let first = p.quote(&[0; 64])?;
        p.mr_enclave = parse_sgx_quote(&first)?.mr_enclave;
        Ok(p)
    }

    /// Writes the user report data and reads the quote over it.
    fn quote(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, ProtoError> {
        std::fs::write(self.dir.join("user_report_data"), report_data)?;
        let q = std::fs::read(self.dir.join("quote"))?;
        if q.len() > MAX_QUOTE {
            return Err(attestation_err(format!(
                "quote of {} bytes from Gramine",
                q.len()
            )));
        }
        Ok(q)
    }
}

impl Attester for GraminePlatform {
    fn platform(&self) -> Platform {
        Platform::SgxGramine
    }

    fn code_id(&self) -> [u8; 32] {
        self.mr_enclave
    }

    fn attest(
        &self,
        measurement: Measurement,
        enclave_key: [u8; 32],
        instance: [u8; 16],
    ) -> Result<Evidence, ProtoError> {
        if measurement.code_id != self.mr_enclave {
            return Err(attestation_err(
                "the measurement's code id is not this enclave's MRENCLAVE",
            ));
        }
        let mut ev = Evidence::unsigned(
            Platform::SgxGramine,
            measurement,
            enclave_key,
            instance,
            [0; 32],
        );
        let quote = self.quote(&report_data(&ev.digest()))?;
        let report = parse_sgx_quote(&quote)?;
        if report.report_data != report_data(&ev.digest()) {
            return Err(attestation_err(
                "Gramine returned a quote over other report data (concurrent attestation?)",
            ));
        }
        ev.proof = quote;
        Ok(ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::{hex, AllowedMeasurement};

    /// A quote built byte by byte to the published v3 format (ECDSA-256 with P-256 attestation
    /// key, PCK chain certification data type 5); signatures are zeros.
    pub(crate) fn build_quote_v3(
        mr_enclave: [u8; 32],
        report_data: [u8; 64],
        debug: bool,
    ) -> Vec<u8> {
        let mut q = Vec::new();
        // Header (48 bytes).
        q.extend(3u16.to_le_bytes()); // version
        q.extend(2u16.to_le_bytes()); // attestation key type: ECDSA-256-with-P-256
        q.extend(0u32.to_le_bytes()); // TEE type: SGX
        q.extend(7u16.to_le_bytes()); // QE SVN
        q.extend(13u16.to_le_bytes()); // PCE SVN
        q.extend([
            0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f,
            0x06, 0x07,
        ]); // QE vendor id (Intel)
        q.extend([0u8; 20]); // user data
        assert_eq!(q.len(), 48);
        // ISV enclave report body (384 bytes).
        let body = q.len();
        q.extend([0x11u8; 16]); // CPU SVN
        q.extend(0u32.to_le_bytes()); // MISCSELECT
        q.extend([0u8; 28]); // reserved
        let mut attributes = [0u8; 16];
        attributes[0] = 0x04 | if debug { SGX_FLAGS_DEBUG } else { 0 }; // MODE64BIT (+ DEBUG)
        q.extend(attributes);
        q.extend(mr_enclave);
        q.extend([0u8; 32]); // reserved
        q.extend([0x5au8; 32]); // MRSIGNER
        q.extend([0u8; 96]); // reserved
        q.extend(1u16.to_le_bytes()); // ISV prod id
        q.extend(2u16.to_le_bytes()); // ISV SVN
        q.extend([0u8; 60]); // reserved
        q.extend(report_data);
        assert_eq!(q.len() - body, 384);
        // Signature data.
        let mut sig = Vec::new();
        sig.extend([0u8; 64]); // ISV report signature
        sig.extend([0u8; 64]); // attestation public key
        sig.extend([0u8; 384]); // QE report
        sig.extend([0u8; 64]); // QE report signature
        sig.extend(32u16.to_le_bytes()); // QE authentication data
        sig.extend([0xa5u8; 32]);
        let chain = b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n";
        sig.extend(5u16.to_le_bytes()); // certification data type 5: PCK chain (PEM)
        sig.extend((chain.len() as u32).to_le_bytes());
        sig.extend(chain);
        q.extend((sig.len() as u32).to_le_bytes());
        q.extend(sig);
        q
    }

    fn measurement(code_id: [u8; 32]) -> Measurement {
        Measurement {
            code_id,
            model_hash: [2; 32],
            plan_hash: [3; 32],
            placement: crate::Placement::Slalom,
            verify: true,
        }
    }

    fn policy(code_id: [u8; 32]) -> Policy {
        Policy {
            measurements: vec![AllowedMeasurement {
                platform: "sgx-gramine".into(),
                code_id: hex(&code_id),
                model_hash: hex(&[2; 32]),
                min_split: None,
            }],
            ..Policy::default()
        }
    }

    #[test]
    fn quotes_built_to_the_published_format_parse_at_the_right_offsets() {
        let mr = [0x42; 32];
        let mut rd = [0u8; 64];
        rd.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        let q = build_quote_v3(mr, rd, false);
        // Offsets from the format: MRENCLAVE at 48 + 64, report data at 48 + 320.
        assert_eq!(&q[112..144], &mr);
        assert_eq!(&q[368..432], &rd);
        let r = parse_sgx_quote(&q).unwrap();
        assert_eq!(r.mr_enclave, mr);
        assert_eq!(r.report_data, rd);
        assert_eq!(r.mr_signer, [0x5a; 32]);
        assert_eq!((r.isv_prod_id, r.isv_svn), (1, 2));
        assert_eq!(r.attributes[0] & SGX_FLAGS_DEBUG, 0);
        // Every truncation is an error, never a panic.
        for n in 0..q.len() {
            assert!(
                parse_sgx_quote(&q[..n]).is_err(),
                "prefix of {n} bytes parsed"
            );
        }
        // A TDX or unknown version is refused.
        let mut v = q.clone();
        v[0] = 9;
        assert!(parse_sgx_quote(&v).is_err());
        // Oversized input is refused before parsing.
        assert!(matches!(
            parse_sgx_quote(&vec![0; MAX_QUOTE + 1]),
            Err(ProtoError::Evidence(Rejection::QuoteTooLarge { .. }))
        ));
    }

    #[test]
    fn the_report_must_bind_the_evidence() {
        let mr = [0x42; 32];
        let ev = Evidence::unsigned(
            Platform::SgxGramine,
            measurement(mr),
            [9; 32],
            [3; 16],
            [0; 32],
        );
        let d = ev.digest();
        let p = policy(mr);
        let ok = parse_sgx_quote(&build_quote_v3(mr, report_data(&d), false)).unwrap();
        check_report(&ok, &ev, &d, &p).unwrap();
        // Another session key (or measurement, or instance) changes the digest.
        let mut other = ev.clone();
        other.enclave_key = [8; 32];
        assert!(matches!(
            check_report(&ok, &other, &other.digest(), &p),
            Err(ProtoError::Evidence(Rejection::ReportDataMismatch))
        ));
        // Another enclave binary.
        let wrong_mr =
            parse_sgx_quote(&build_quote_v3([0x43; 32], report_data(&d), false)).unwrap();
        assert!(matches!(
            check_report(&wrong_mr, &ev, &d, &p),
            Err(ProtoError::Evidence(Rejection::CodeIdMismatch { .. }))
        ));
        // DEBUG enclaves only when the policy says so.
        let dbg = parse_sgx_quote(&build_quote_v3(mr, report_data(&d), true)).unwrap();
        assert!(matches!(
            check_report(&dbg, &ev, &d, &p),
            Err(ProtoError::Evidence(Rejection::DebugEnclave))
        ));
        let lax = Policy {
            sgx_allow_debug: true,
            ..p.clone()
        };
        check_report(&dbg, &ev, &d, &lax).unwrap();
    }

    /// The fake `/dev/attestation` echoes the written report data into a quote, as Gramine does.
    #[test]
    fn gramine_interface_writes_the_digest_as_report_data() {
        let dir = std::env::temp_dir().join(format!("origami-attest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mr = [0x42; 32];
        // Not DCAP: refused with a clear message.
        std::fs::write(dir.join("attestation_type"), "epid").unwrap();
        let e = GraminePlatform::open(&dir).err().unwrap().to_string();
        assert!(e.contains("needs \"dcap\""), "{e}");
        std::fs::write(dir.join("attestation_type"), "dcap\n").unwrap();
        std::fs::write(dir.join("quote"), build_quote_v3(mr, [0; 64], false)).unwrap();
        let p = GraminePlatform::open(&dir).unwrap();
        assert_eq!(p.code_id(), mr);
        // A quote over other report data than the one written is refused.
        let e = p
            .attest(measurement(mr), [9; 32], [3; 16])
            .unwrap_err()
            .to_string();
        assert!(e.contains("other report data"), "{e}");
        // The expected report data, as real Gramine would produce after the write.
        let ev0 = Evidence::unsigned(
            Platform::SgxGramine,
            measurement(mr),
            [9; 32],
            [3; 16],
            [0; 32],
        );
        std::fs::write(
            dir.join("quote"),
            build_quote_v3(mr, report_data(&ev0.digest()), false),
        )
        .unwrap();
        let ev = p.attest(measurement(mr), [9; 32], [3; 16]).unwrap();
        assert_eq!(ev.digest(), ev0.digest());
        assert_eq!(
            std::fs::read(dir.join("user_report_data")).unwrap(),
            report_data(&ev.digest())
        );
        assert_eq!(
            parse_sgx_quote(&ev.proof).unwrap().report_data,
            report_data(&ev.digest())
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(GraminePlatform::open(&dir)
            .err()
            .unwrap()
            .to_string()
            .contains("no Gramine attestation interface"));
    }
}
