//! The `sev-snp` platform: the enclave runs in an AMD SEV-SNP confidential VM and is attested
//! with an SNP attestation report that the VM asks for through configfs-tsm (`crate::tsm`).
//!
//! **What is measured.** MEASUREMENT is the launch digest of the guest's initial memory (the
//! firmware, and with measured direct boot the kernel, initrd and command line); HOST_DATA is 32
//! bytes the launcher fixes at launch. The evidence's code id for `sev-snp` is `snp_code_id`:
//! SHA-256 over a domain label, MEASUREMENT and HOST_DATA, so a policy's `code_id` pins both.
//!
//! **Client side** (`verify_report`), with the `sev` crate (Apache-2.0, pure-Rust crypto):
//! the VCEK certificate (carried in the evidence's collateral as JSON `{"vcek": PEM}`: from the
//! guest's `auxblob` or a file the host attaches) must chain to AMD's ARK and ASK of a known
//! product line (Milan, Genoa, Turin: built into the crate, never taken from the host); the
//! VCEK must sign the report; the report must encode canonically (every byte is signed); the
//! guest policy must not allow debugging unless `snp_allow_debug`; the reported TCB must be at
//! least `snp_min_tcb`; MEASUREMENT and HOST_DATA must hash to the evidence's code id; the
//! report data must be the evidence digest (digest ‖ 0^32).

use serde::{Deserialize, Serialize};
use sev::certs::snp::{builtin, ca, Certificate, Chain, Verifiable};
use sev::firmware::guest::AttestationReport;
use sev::parser::ByteParser;
use sha2::{Digest, Sha256};

use crate::evidence::{Evidence, Platform, Policy};
use crate::rejection::Rejection;
use crate::sgx::check_binding;
use crate::tsm::{self, CvmPlatform, CvmTee, GuestReport, Provider, TsmReport};
use crate::ProtoError;

/// An SNP attestation report is 1184 bytes (0x4A0).
pub const REPORT_LEN: usize = 0x4A0;
/// Largest collateral accepted (a VCEK in PEM is under 2 KiB).
pub const MAX_SNP_COLLATERAL: usize = 64 << 10;
/// The certificate table's GUID of the VCEK (AMD's GHCB specification).
const VCEK_GUID: [u8; 16] = [
    0x63, 0xda, 0x75, 0x8d, 0xe6, 0x64, 0x45, 0x64, 0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac, 0xcd,
];

fn reject(r: Rejection) -> ProtoError {
    ProtoError::Evidence(r)
}

/// The lowest TCB a policy accepts (`snp_min_tcb = { bootloader = 3, tee = 0, snp = 8,
/// microcode = 115 }`): each component of the report's reported TCB must be at least this.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnpTcb {
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
}

impl std::fmt::Display for SnpTcb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bootloader {}, tee {}, snp {}, microcode {}",
            self.bootloader, self.tee, self.snp, self.microcode
        )
    }
}

/// The collateral `sev-snp` evidence carries: the VCEK that signed the report.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnpCollateral {
    /// The VCEK certificate, PEM.
    pub vcek: String,
}

/// The code id of an SNP guest: SHA-256("origami/v1/snp-code" ‖ MEASUREMENT ‖ HOST_DATA).
pub fn snp_code_id(r: &AttestationReport) -> [u8; 32] {
    snp_code_id_of(&r.measurement, &r.host_data)
}

/// `snp_code_id` from MEASUREMENT and HOST_DATA themselves (`origami measure sev-snp`).
pub fn snp_code_id_of(measurement: &[u8; 48], host_data: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"origami/v1/snp-code");
    h.update(measurement);
    h.update(host_data);
    h.finalize().into()
}

/// Parses an attestation report: exactly `REPORT_LEN` bytes, in its one canonical encoding.
pub fn parse_snp_report(bytes: &[u8]) -> Result<AttestationReport, ProtoError> {
    let bad = |m: String| reject(Rejection::SnpReportMalformed(m));
    if bytes.len() != REPORT_LEN {
        return Err(bad(format!(
            "{} bytes, an SNP report has {REPORT_LEN}",
            bytes.len()
        )));
    }
    // The signature block (0x2A0..0x4A0): R and S as 72-byte little-endian fields of which a
    // P-384 value uses 48, then reserved bytes. The unused bytes must be zero, so no bit of a
    // report can change without the report being refused.
    let sig = &bytes[0x2A0..];
    if sig[48..72].iter().chain(&sig[72 + 48..]).any(|&b| b != 0) {
        return Err(bad("non-zero padding in the signature block".into()));
    }
    let r = AttestationReport::from_bytes(bytes).map_err(|e| bad(e.to_string()))?;
    // The signature is checked over the re-encoding of what was parsed: a report whose bytes
    // differ from it (reserved or ignored fields) is refused, so every byte is covered.
    match r.to_bytes() {
        Ok(b) if b.as_slice() == bytes => Ok(r),
        _ => Err(bad("not in canonical form".into())),
    }
}

/// The VCEK's chain to AMD: the ARK and ASK built into the `sev` crate, one product line at a
/// time (the host supplies only the VCEK).
fn chain_to_amd(vcek: Certificate) -> Result<Chain, ProtoError> {
    type Roots = fn() -> std::io::Result<Certificate>;
    let lines: [(Roots, Roots); 3] = [
        (builtin::milan::ark, builtin::milan::ask),
        (builtin::genoa::ark, builtin::genoa::ask),
        (builtin::turin::ark, builtin::turin::ask),
    ];
    for (ark, ask) in lines {
        let (Ok(ark), Ok(ask)) = (ark(), ask()) else {
            continue;
        };
        let chain = Chain {
            ca: ca::Chain { ark, ask },
            vek: vcek.clone(),
        };
        if (&chain).verify().is_ok() {
            return Ok(chain);
        }
    }
    Err(reject(Rejection::SnpChain))
}

/// Checks a signature-verified report against the evidence and policy.
pub fn check_snp_report(
    r: &AttestationReport,
    ev: &Evidence,
    digest: &[u8; 32],
    policy: &Policy,
) -> Result<(), ProtoError> {
    if r.policy.debug_allowed() && !policy.snp_allow_debug {
        return Err(reject(Rejection::DebugSnpGuest));
    }
    if let Some(min) = policy.snp_min_tcb {
        let t = &r.reported_tcb;
        let got = SnpTcb {
            bootloader: t.bootloader,
            tee: t.tee,
            snp: t.snp,
            microcode: t.microcode,
        };
        if got.bootloader < min.bootloader
            || got.tee < min.tee
            || got.snp < min.snp
            || got.microcode < min.microcode
        {
            return Err(reject(Rejection::SnpTcbTooOld {
                got: got.to_string(),
                min: min.to_string(),
            }));
        }
    }
    check_binding(&snp_code_id(r), &r.report_data, ev, digest)
}

/// Verifies `ev.proof` (an SNP report) with the VCEK in `ev.collateral`, then the report
/// against the evidence and policy: the VCEK must be the one issued for the report's TCB and
/// chip (`vcek_issued_for`). (VCEKs carry no expiry to judge; revocation of a product line's
/// ASK is AMD's CRL, not checked here.)
pub fn verify_report(ev: &Evidence, digest: &[u8; 32], policy: &Policy) -> Result<(), ProtoError> {
    let report = parse_snp_report(&ev.proof)?;
    if ev.collateral.is_empty() {
        return Err(reject(Rejection::NoCollateral));
    }
    if ev.collateral.len() > MAX_SNP_COLLATERAL {
        return Err(reject(Rejection::CollateralTooLarge {
            len: ev.collateral.len(),
            max: MAX_SNP_COLLATERAL,
        }));
    }
    let malformed = |m: String| reject(Rejection::CollateralMalformed(m));
    let c: SnpCollateral = serde_json::from_str(&ev.collateral)
        .map_err(|e| malformed(format!("SNP collateral: {e}")))?;
    let vcek = Certificate::from_pem(c.vcek.as_bytes())
        .map_err(|e| malformed(format!("VCEK certificate: {e}")))?;
    let chain = chain_to_amd(vcek)?;
    (&chain, &report)
        .verify()
        .map_err(|_| reject(Rejection::SnpSignature))?;
    vcek_issued_for(&x509_cert::Certificate::from(chain.vek), &report)?;
    check_snp_report(&report, ev, digest, policy)
}

/// AMD's X.509 extensions of a VCEK (the VCEK specification, 57230): the TCB it was derived
/// for, one security patch level per component, and the chip's hardware id.
const OID_BL_SPL: &str = "1.3.6.1.4.1.3704.1.3.1";
const OID_TEE_SPL: &str = "1.3.6.1.4.1.3704.1.3.2";
const OID_SNP_SPL: &str = "1.3.6.1.4.1.3704.1.3.3";
const OID_UCODE_SPL: &str = "1.3.6.1.4.1.3704.1.3.8";
const OID_FMC_SPL: &str = "1.3.6.1.4.1.3704.1.3.9";
const OID_HW_ID: &str = "1.3.6.1.4.1.3704.1.4";

/// A VCEK is derived per chip and per TCB: the one that signs a report must be the one issued
/// for the report's REPORTED_TCB and (unless the guest masks it) its CHIP_ID. Without this a
/// host could pair a report with the VCEK of an older, vulnerable TCB of the same chip, which
/// the firmware can still be made to use, while the report claims the current TCB.
pub fn vcek_issued_for(
    vcek: &x509_cert::Certificate,
    r: &AttestationReport,
) -> Result<(), ProtoError> {
    use x509_cert::der::Decode;
    let mismatch = |m: String| reject(Rejection::SnpVcekMismatch(m));
    let ext = |oid: &str| {
        vcek.tbs_certificate
            .extensions
            .iter()
            .flatten()
            .find(|e| e.extn_id.to_string() == oid)
            .map(|e| e.extn_value.as_bytes())
    };
    let spl = |name: &str, oid: &str| -> Result<u8, ProtoError> {
        let v = ext(oid).ok_or_else(|| mismatch(format!("the VCEK has no {name} SPL")))?;
        u8::from_der(v).map_err(|_| mismatch(format!("the VCEK's {name} SPL is malformed")))
    };
    let t = &r.reported_tcb;
    let mut pairs = vec![
        ("bootloader", spl("bootloader", OID_BL_SPL)?, t.bootloader),
        ("tee", spl("tee", OID_TEE_SPL)?, t.tee),
        ("snp", spl("snp", OID_SNP_SPL)?, t.snp),
        ("microcode", spl("microcode", OID_UCODE_SPL)?, t.microcode),
    ];
    if let Some(fmc) = t.fmc {
        pairs.push(("fmc", spl("fmc", OID_FMC_SPL)?, fmc));
    }
    for (name, cert, report) in pairs {
        if cert != report {
            return Err(mismatch(format!(
                "its {name} SPL is {cert}, the report's reported TCB has {report}"
            )));
        }
    }
    // The hardware id: 64 bytes (Milan, Genoa) or 8 (Turin: the report's CHIP_ID is then
    // those 8 bytes and zeros). A guest whose policy masks the chip id reports zeros.
    let hw = ext(OID_HW_ID).ok_or_else(|| mismatch("the VCEK has no hardware id".into()))?;
    let masked = r.chip_id == [0; 64];
    let fits = hw.len() <= 64
        && r.chip_id[..hw.len()] == *hw
        && r.chip_id[hw.len()..].iter().all(|&b| b == 0);
    if !masked && !fits {
        return Err(mismatch(
            "its hardware id is not the report's chip id".into(),
        ));
    }
    Ok(())
}

/// The VCEK from an SNP certificate table (`auxblob`): entries of a 16-byte GUID, a u32
/// offset and a u32 length, ended by an all-zero entry, offsets from the table's start. Every
/// offset is bounds-checked; None when no VCEK is listed.
pub fn vcek_from_cert_table(table: &[u8]) -> Result<Option<Vec<u8>>, ProtoError> {
    let bad = || ProtoError::Attestation("malformed SNP certificate table".into());
    for e in table.chunks(24) {
        if e.len() < 24 {
            return Err(bad());
        }
        let guid: [u8; 16] = e[..16].try_into().expect("16 bytes");
        if guid == [0; 16] {
            return Ok(None);
        }
        let off = u32::from_le_bytes(e[16..20].try_into().expect("4 bytes")) as usize;
        let len = u32::from_le_bytes(e[20..24].try_into().expect("4 bytes")) as usize;
        if guid == VCEK_GUID {
            let end = off.checked_add(len).ok_or_else(bad)?;
            return table
                .get(off..end)
                .map(|c| Some(c.to_vec()))
                .ok_or_else(bad);
        }
    }
    Err(bad())
}

/// What `CvmPlatform` needs of SEV-SNP: the report, its report data and code id, and the VCEK
/// from the certificate table as collateral.
pub struct Snp;

impl CvmTee for Snp {
    const PLATFORM: Platform = Platform::SevSnp;
    const PROVIDER: Provider = Provider::SevSnp;

    fn read(report: TsmReport) -> Result<GuestReport, ProtoError> {
        let parsed = parse_snp_report(&report.outblob).map_err(|e| {
            ProtoError::Attestation(format!("the SNP firmware's report does not parse: {e}"))
        })?;
        // The VCEK from the certificate table, as collateral JSON (empty: the host must attach
        // one with --sgx-collateral).
        let collateral = match report
            .auxblob
            .as_deref()
            .map(vcek_from_cert_table)
            .transpose()?
        {
            Some(Some(der)) => {
                let pem = Certificate::from_der(&der)
                    .and_then(|c| c.to_pem())
                    .map_err(|e| ProtoError::Attestation(format!("the VCEK in auxblob: {e}")))?;
                let vcek = String::from_utf8(pem)
                    .map_err(|_| ProtoError::Attestation("the VCEK's PEM is not text".into()))?;
                serde_json::to_string(&SnpCollateral { vcek })
                    .map_err(|e| ProtoError::Attestation(e.to_string()))?
            }
            _ => String::new(),
        };
        Ok(GuestReport {
            report_data: parsed.report_data,
            code_id: snp_code_id(&parsed),
            proof: report.outblob,
            collateral,
        })
    }
}

/// The SEV-SNP guest's attestation: configfs-tsm reports (`CvmPlatform::open` in an SNP guest).
pub type SnpPlatform<F = tsm::RealFs> = CvmPlatform<Snp, F>;
