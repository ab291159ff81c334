//! Attestation evidence: what the enclave claims (its measurement: code identity, model hash,
//! placement and split, and what the host sees in that placement) bound to its session key and
//! instance, with a platform proof. Platforms sit behind one trait, `Attester`:
//! - `Simulated` evidence is signed (Ed25519) by a platform key generated locally: it proves
//!   nothing about hardware, says so in its type, and clients refuse it unless their policy
//!   explicitly allows simulation.
//! - `SgxGramine` evidence carries a DCAP quote whose report data is the evidence digest (see
//!   `crate::sgx`), verified on the client with `dcap-qvl` against Intel's root CA.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::rejection::Rejection;
use crate::{Placement, ProtoError};

/// The identity the client checks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measurement {
    /// SHA-256 of the enclave's code (the running executable for `simulated`; MRENCLAVE under SGX).
    pub code_id: [u8; 32],
    /// `Model::hash` of the served model.
    pub model_hash: [u8; 32],
    /// The quantization plan's hash (scales, exponents, field bounds): what sealed pads bind to
    /// and what a host must plan with to drive this enclave. A host whose plan differs is
    /// refused when it attaches.
    pub plan_hash: [u8; 32],
    /// Where the layers run (`Enclave`, `Slalom` or `Origami { split }`; `Plain` is never
    /// attested).
    pub placement: Placement,
    /// Freivalds integrity checks on every blinded layer. Without them a lying accelerator
    /// controls the head's values (it can, for instance, remove the ReLUs before the split), so
    /// privacy against an active host depends on this being on.
    pub verify: bool,
}

/// The placements a policy accepts when it names none: the two in which the host sees no
/// features (`origami` must be allowed explicitly, with the splits the operator audited).
pub const DEFAULT_PLACEMENTS: [&str; 2] = ["slalom", "enclave"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Platform {
    /// No TEE: a local key signs. For development and tests only.
    Simulated,
    /// Intel SGX under Gramine: a DCAP quote whose report data holds the digest.
    SgxGramine,
    /// An Intel TDX confidential VM: a TDX quote (configfs-tsm) whose report data holds the
    /// digest; the code id hashes MRTD and RTMR0–3 (`crate::tdx`).
    Tdx,
    /// An AMD SEV-SNP confidential VM: an SNP report (configfs-tsm) whose report data holds the
    /// digest, signed by a VCEK chained to AMD; the code id hashes MEASUREMENT and HOST_DATA
    /// (`crate::snp`).
    SevSnp,
}

impl Platform {
    /// The name policies use (`[[measurements]] platform = …`).
    pub fn id(self) -> &'static str {
        match self {
            Platform::Simulated => "simulated",
            Platform::SgxGramine => "sgx-gramine",
            Platform::Tdx => "tdx",
            Platform::SevSnp => "sev-snp",
        }
    }

    /// Every platform, for checking the names in a policy.
    pub const ALL: [Platform; 4] = [
        Platform::Simulated,
        Platform::SgxGramine,
        Platform::Tdx,
        Platform::SevSnp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Platform::Simulated => "simulated (NO TEE: development only)",
            Platform::SgxGramine => "sgx-gramine",
            Platform::Tdx => "tdx (Intel TDX confidential VM)",
            Platform::SevSnp => "sev-snp (AMD SEV-SNP confidential VM)",
        }
    }
}

/// Evidence served by `GET /v1/evidence`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub platform: Platform,
    pub measurement: Measurement,
    /// The enclave's X25519 session public key.
    pub enclave_key: [u8; 32],
    /// Random per enclave start: pads and sessions of another instance are never accepted.
    pub instance: [u8; 16],
    /// `measurement.placement.host_sees()`.
    pub host_sees: String,
    /// `Simulated`: the Ed25519 verifying key of the local platform key.
    pub platform_key: [u8; 32],
    /// `Simulated`: an Ed25519 signature of `digest()`; `SgxGramine`: the DCAP quote.
    pub proof: Vec<u8>,
    /// `SgxGramine`: the DCAP collateral (Intel-signed TCB info, QE identity, CRLs) as JSON,
    /// attached by the host (it is signed by Intel, so the untrusted host may carry it; it is
    /// not covered by `digest()`). Empty for `Simulated`.
    #[serde(default)]
    pub collateral: String,
}

impl Evidence {
    /// What the proof covers and what sessions are bound to: everything but the proof.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"origami/v1/evidence");
        h.update([self.platform as u8]);
        h.update(crate::encode(&self.measurement));
        h.update(self.enclave_key);
        h.update(self.instance);
        h.update((self.host_sees.len() as u64).to_le_bytes());
        h.update(self.host_sees.as_bytes());
        h.update(self.platform_key);
        h.finalize().into()
    }
}

/// The seam between the enclave and its platform: who vouches for the measurement.
pub trait Attester: Send {
    fn platform(&self) -> Platform;
    /// The enclave's code identity on this platform (SHA-256 of the executable when simulated,
    /// MRENCLAVE under SGX).
    fn code_id(&self) -> [u8; 32];
    /// Evidence binding `measurement` to the session key and instance.
    fn attest(
        &self,
        measurement: Measurement,
        enclave_key: [u8; 32],
        instance: [u8; 16],
    ) -> Result<Evidence, ProtoError>;
}

impl Evidence {
    /// Evidence without its proof, for `Attester` implementations to fill in.
    pub fn unsigned(
        platform: Platform,
        measurement: Measurement,
        enclave_key: [u8; 32],
        instance: [u8; 16],
        platform_key: [u8; 32],
    ) -> Self {
        Evidence {
            platform,
            host_sees: measurement.placement.host_sees(),
            measurement,
            enclave_key,
            instance,
            platform_key,
            proof: Vec::new(),
            collateral: String::new(),
        }
    }
}

/// The simulated platform: a signing key from the OS, per process.
pub struct SimulatedPlatform {
    key: SigningKey,
    code_id: [u8; 32],
}

impl SimulatedPlatform {
    /// `code_id`: what the platform reports as the code identity (the executable's SHA-256).
    pub fn new(code_id: [u8; 32]) -> Result<Self, ProtoError> {
        let mut b = zeroize::Zeroizing::new([0u8; 32]);
        use rand_core::{OsRng, TryRngCore};
        OsRng
            .try_fill_bytes(&mut *b)
            .map_err(|e| ProtoError::Io(std::io::Error::other(e.to_string())))?;
        Ok(Self {
            key: SigningKey::from_bytes(&b),
            code_id,
        })
    }
}

impl Attester for SimulatedPlatform {
    fn platform(&self) -> Platform {
        Platform::Simulated
    }

    fn code_id(&self) -> [u8; 32] {
        self.code_id
    }

    fn attest(
        &self,
        measurement: Measurement,
        enclave_key: [u8; 32],
        instance: [u8; 16],
    ) -> Result<Evidence, ProtoError> {
        let mut ev = Evidence::unsigned(
            Platform::Simulated,
            measurement,
            enclave_key,
            instance,
            self.key.verifying_key().to_bytes(),
        );
        ev.proof = self.key.sign(&ev.digest()).to_bytes().to_vec();
        Ok(ev)
    }
}

/// What a client accepts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Accept `simulated` evidence (no TEE). Off unless set.
    #[serde(default)]
    pub allow_simulated: bool,
    /// Accepted (code_id, model_hash) pairs, hex. Empty: refuse everything.
    #[serde(default)]
    pub measurements: Vec<AllowedMeasurement>,
    /// Accepted placements (e.g. `["slalom"]` for full privacy). Empty: `slalom` and `enclave`
    /// (`DEFAULT_PLACEMENTS`); `origami` must be listed explicitly, and each measurement entry
    /// may bound its split (`min_split`).
    #[serde(default)]
    pub placements: Vec<String>,
    /// Accept a blinded placement (`slalom`, `origami`) whose enclave does not run Freivalds
    /// checks. Off unless set: without them the host can alter the head's values.
    #[serde(default)]
    pub allow_unverified: bool,
    /// `sgx-gramine`: accepted TCB statuses of the platform (dcap-qvl's names, e.g.
    /// `"SWHardeningNeeded"`). Empty: `["UpToDate"]` only. `Revoked` is never accepted.
    #[serde(default)]
    pub sgx_tcb_status: Vec<String>,
    /// `sgx-gramine`: accept a DEBUG enclave (its memory is readable by the host: never in
    /// production). Off unless set.
    #[serde(default)]
    pub sgx_allow_debug: bool,
    /// `sgx-gramine`: the lowest TCB evaluation data number accepted in the collateral (the
    /// lower of its TCB info's and QE identity's). The host carries the collateral, so without
    /// it a host may keep serving pre-recovery collateral (any Intel-signed set that has not
    /// expired) after a TCB recovery; set it to the number of the latest recovery you require.
    #[serde(default)]
    pub sgx_min_tcb_eval_data_number: Option<u32>,
    /// `tdx`: accepted TCB statuses of the platform (as `sgx_tcb_status`). Empty: `["UpToDate"]`
    /// only. `Revoked` is never accepted.
    #[serde(default)]
    pub tdx_tcb_status: Vec<String>,
    /// `tdx`: accept a DEBUG TD (the host can read its memory: never in production). Off unless
    /// set.
    #[serde(default)]
    pub tdx_allow_debug: bool,
    /// `tdx`: the lowest TCB evaluation data number accepted in the collateral (as
    /// `sgx_min_tcb_eval_data_number`).
    #[serde(default)]
    pub tdx_min_tcb_eval_data_number: Option<u32>,
    /// `sev-snp`: accept a guest whose policy allows debugging (the hypervisor can read its
    /// memory: never in production). Off unless set.
    #[serde(default)]
    pub snp_allow_debug: bool,
    /// `sev-snp`: the lowest reported TCB accepted, per component.
    #[serde(default)]
    pub snp_min_tcb: Option<crate::snp::SnpTcb>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowedMeasurement {
    /// The platform this measurement is for (`simulated` or `sgx-gramine`): an entry admits
    /// evidence of its own platform only, so allowing simulation never lets simulated
    /// evidence pass for an SGX measurement.
    pub platform: String,
    /// Hex SHA-256 of the enclave code (MRENCLAVE under SGX), or `"*"` for any (simulated
    /// entries only).
    pub code_id: String,
    /// Hex model hash.
    pub model_hash: String,
    /// `origami`: the smallest split accepted for this model (the earliest split the audit
    /// found private). None: any split, if `origami` is an allowed placement.
    #[serde(default)]
    pub min_split: Option<u32>,
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The policy's entries that admit `code` and `model` on `platform`. Any code (`*`) only on the
/// simulated platform: on a real TEE it would accept an enclave the host wrote itself.
fn allowed_entries<'p>(
    policy: &'p Policy,
    platform: Platform,
    code: &str,
    model: &str,
) -> Vec<&'p AllowedMeasurement> {
    let any_code_ok = platform == Platform::Simulated;
    policy
        .measurements
        .iter()
        .filter(|m| {
            m.platform == platform.id()
                && ((m.code_id == "*" && any_code_ok) || m.code_id == code)
                && m.model_hash == model
        })
        .collect()
}

/// Checks `ev` against `policy`: the platform, the proof, the measurement and the placement.
/// Returns the digest sessions must bind to. SGX collateral validity is judged at the current
/// system time.
pub fn verify(ev: &Evidence, policy: &Policy) -> Result<[u8; 32], ProtoError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    verify_at(ev, policy, now)
}

/// `verify` at a given time (seconds since the Unix epoch).
pub fn verify_at(ev: &Evidence, policy: &Policy, now_secs: u64) -> Result<[u8; 32], ProtoError> {
    let reject = |r: Rejection| Err(ProtoError::Evidence(r));
    for m in &policy.measurements {
        if !Platform::ALL.iter().any(|p| p.id() == m.platform) {
            return reject(Rejection::UnknownPolicyPlatform(m.platform.clone()));
        }
        if m.code_id == "*" && m.platform != Platform::Simulated.id() {
            return reject(Rejection::AnyCodeOnRealPlatform(m.platform.clone()));
        }
    }
    let digest = ev.digest();
    match ev.platform {
        Platform::Simulated => {
            if !policy.allow_simulated {
                return reject(Rejection::Simulated);
            }
            let bad = |what| ProtoError::Evidence(Rejection::BadSimulatedProof(what));
            let key = VerifyingKey::from_bytes(&ev.platform_key)
                .map_err(|_| bad("bad simulated platform key"))?;
            let sig = Signature::from_slice(&ev.proof)
                .map_err(|_| bad("bad simulated signature encoding"))?;
            key.verify(&digest, &sig)
                .map_err(|_| bad("the simulated signature does not match the evidence"))?;
        }
        Platform::SgxGramine => crate::sgx::verify_quote(ev, &digest, policy, now_secs)?,
        Platform::Tdx => crate::tdx::verify_quote(ev, &digest, policy, now_secs)?,
        Platform::SevSnp => crate::snp::verify_report(ev, &digest, policy)?,
    }
    if ev.host_sees != ev.measurement.placement.host_sees() {
        return reject(Rejection::HostSeesMisstated);
    }
    let placements: Vec<&str> = if policy.placements.is_empty() {
        DEFAULT_PLACEMENTS.to_vec()
    } else {
        policy.placements.iter().map(String::as_str).collect()
    };
    let placement = ev.measurement.placement;
    if !placements.contains(&placement.mode()) || placement == Placement::Plain {
        return reject(Rejection::PlacementNotAllowed {
            placement: placement.name(),
            allowed: placements.join(", "),
            host_sees: ev.host_sees.clone(),
        });
    }
    if placement.needs_pads() && !ev.measurement.verify && !policy.allow_unverified {
        return reject(Rejection::Unverified {
            placement: placement.name(),
        });
    }
    let code = hex(&ev.measurement.code_id);
    let model = hex(&ev.measurement.model_hash);
    let entries = allowed_entries(policy, ev.platform, &code, &model);
    if entries.is_empty() {
        let other_platform = policy
            .measurements
            .iter()
            .any(|m| m.platform != ev.platform.id() && m.code_id == code);
        return reject(Rejection::MeasurementNotAllowed {
            platform: ev.platform.id(),
            code,
            model,
            other_platform,
        });
    }
    if let Some(split) = placement.split() {
        if !entries
            .iter()
            .any(|m| m.min_split.is_none_or(|min| split >= min as usize))
        {
            let min = entries
                .iter()
                .filter_map(|m| m.min_split)
                .min()
                .unwrap_or(0);
            return reject(Rejection::SplitTooEarly { split, min, model });
        }
    }
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measurement() -> Measurement {
        Measurement {
            code_id: [1; 32],
            model_hash: [2; 32],
            plan_hash: [3; 32],
            placement: Placement::Slalom,
            verify: true,
        }
    }

    /// Why `ev` is refused under `p`: always a typed rejection, never only a text.
    fn refused(ev: &Evidence, p: &Policy) -> Rejection {
        match verify(ev, p) {
            Err(ProtoError::Evidence(r)) => r,
            other => panic!("expected an evidence rejection, got {other:?}"),
        }
    }

    fn policy() -> Policy {
        Policy {
            allow_simulated: true,
            measurements: vec![AllowedMeasurement {
                platform: "simulated".into(),
                code_id: hex(&[1; 32]),
                model_hash: hex(&[2; 32]),
                min_split: None,
            }],
            ..Policy::default()
        }
    }

    #[test]
    fn simulated_evidence_verifies_only_when_allowed() {
        let p = SimulatedPlatform::new([1; 32]).unwrap();
        let ev = p.attest(measurement(), [9; 32], [3; 16]).unwrap();
        assert_eq!(verify(&ev, &policy()).unwrap(), ev.digest());
        let strict = Policy {
            allow_simulated: false,
            ..policy()
        };
        assert_eq!(refused(&ev, &strict), Rejection::Simulated);
    }

    #[test]
    fn any_change_to_the_evidence_is_rejected() {
        let p = SimulatedPlatform::new([1; 32]).unwrap();
        let ev = p.attest(measurement(), [9; 32], [3; 16]).unwrap();
        let bytes = crate::encode(&ev);
        let mut rejected = 0;
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            match crate::decode::<Evidence>(&b) {
                Err(_) => rejected += 1,
                Ok(t) => {
                    assert!(verify(&t, &policy()).is_err(), "bit {i} accepted");
                    rejected += 1;
                }
            }
        }
        assert_eq!(rejected, bytes.len() * 8);
    }

    #[test]
    fn policy_checks_measurement_and_placement() {
        let p = SimulatedPlatform::new([1; 32]).unwrap();
        let mut m = measurement();
        m.placement = Placement::Origami { split: 4 };
        let ev = p.attest(m, [9; 32], [3; 16]).unwrap();
        assert!(ev.host_sees.contains("plain features at split 4"));
        // The default policy accepts the placements that show the host no features only.
        match refused(&ev, &policy()) {
            Rejection::PlacementNotAllowed { placement, .. } => {
                assert_eq!(placement, "origami --split 4")
            }
            e => panic!("{e:?}"),
        }
        let with_origami = Policy {
            placements: vec!["slalom".into(), "origami".into()],
            ..policy()
        };
        verify(&ev, &with_origami).unwrap();
        let mut other = measurement();
        other.model_hash = [5; 32];
        let e = refused(&p.attest(other, [9; 32], [3; 16]).unwrap(), &policy());
        assert!(
            matches!(e, Rejection::MeasurementNotAllowed { ref model, other_platform: false, .. } if *model == hex(&[5; 32])),
            "{e:?}"
        );
    }

    /// A host that restarts the enclave at an earlier split than the operator audited is
    /// refused by a policy with a minimum split.
    #[test]
    fn a_minimum_split_refuses_an_earlier_split() {
        let p = SimulatedPlatform::new([1; 32]).unwrap();
        let mut pol = policy();
        pol.placements = vec!["origami".into()];
        pol.measurements[0].min_split = Some(4);
        for (split, ok) in [(1, false), (3, false), (4, true), (6, true)] {
            let mut m = measurement();
            m.placement = Placement::Origami { split };
            let ev = p.attest(m, [9; 32], [3; 16]).unwrap();
            if ok {
                verify(&ev, &pol).unwrap();
            } else {
                assert!(matches!(
                    refused(&ev, &pol),
                    Rejection::SplitTooEarly { split: s, min: 4, .. } if s == split
                ));
            }
        }
    }

    /// Blinded placements without Freivalds checks are refused unless the policy opts in.
    #[test]
    fn unverified_blinded_placements_are_refused_by_default() {
        let p = SimulatedPlatform::new([1; 32]).unwrap();
        let mut m = measurement();
        m.verify = false;
        let ev = p.attest(m, [9; 32], [3; 16]).unwrap();
        assert!(matches!(
            refused(&ev, &policy()),
            Rejection::Unverified { .. }
        ));
        let bench = Policy {
            allow_unverified: true,
            ..policy()
        };
        verify(&ev, &bench).unwrap();
        // The enclave placement offloads nothing: there is nothing to verify.
        let mut m = measurement();
        m.placement = Placement::Enclave;
        m.verify = false;
        verify(&p.attest(m, [9; 32], [3; 16]).unwrap(), &policy()).unwrap();
    }

    /// `code_id = "*"` never matches evidence of a real platform.
    #[test]
    fn any_code_is_for_simulated_evidence_only() {
        let mut pol = policy();
        pol.measurements[0].code_id = "*".into();
        let p = SimulatedPlatform::new([1; 32]).unwrap();
        verify(&p.attest(measurement(), [9; 32], [3; 16]).unwrap(), &pol).unwrap();
        let (code, model) = (hex(&[7; 32]), hex(&[2; 32]));
        assert_eq!(
            allowed_entries(&pol, Platform::Simulated, &code, &model).len(),
            1
        );
        assert!(allowed_entries(&pol, Platform::SgxGramine, &code, &model).is_empty());
        // "*" on an SGX entry is a policy error, not a silent wildcard.
        pol.measurements[0].platform = "sgx-gramine".into();
        let e = refused(&p.attest(measurement(), [9; 32], [3; 16]).unwrap(), &pol);
        assert_eq!(e, Rejection::AnyCodeOnRealPlatform("sgx-gramine".into()));
        // An exact code id matches on SGX, for an SGX entry.
        pol.measurements[0].code_id = code.clone();
        assert_eq!(
            allowed_entries(&pol, Platform::SgxGramine, &code, &model).len(),
            1
        );
    }

    /// Review finding 9: an entry admits evidence of its own platform only. With simulation
    /// allowed, simulated evidence claiming an SGX measurement's code id is still refused.
    #[test]
    fn a_measurement_admits_its_own_platform_only() {
        let p = SimulatedPlatform::new([1; 32]).unwrap();
        let ev = p.attest(measurement(), [9; 32], [3; 16]).unwrap();
        let mut pol = policy();
        verify(&ev, &pol).unwrap();
        pol.measurements[0].platform = "sgx-gramine".into();
        assert!(matches!(
            refused(&ev, &pol),
            Rejection::MeasurementNotAllowed {
                platform: "simulated",
                other_platform: true,
                ..
            }
        ));
        pol.measurements[0].platform = "sev".into();
        assert_eq!(
            refused(&ev, &pol),
            Rejection::UnknownPolicyPlatform("sev".into())
        );
        // A policy without the platform is refused when read.
        let json =
            r#"{"allow_simulated": true, "measurements": [{"code_id": "01", "model_hash": "02"}]}"#;
        let e = serde_json::from_str::<Policy>(json)
            .unwrap_err()
            .to_string();
        assert!(e.contains("platform"), "{e}");
    }
}
