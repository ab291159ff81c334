//! Why a client refused evidence: one variant per cause, so callers match on the cause and
//! never on wording (`ProtoError::Evidence`). The texts say what to do about it.

/// Why evidence was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    // The policy itself.
    #[error("policy: unknown platform {0:?} in [[measurements]] (simulated | sgx-gramine | tdx | sev-snp)")]
    UnknownPolicyPlatform(String),
    #[error(
        "policy: code_id = \"*\" on platform {0}: any code is accepted for simulated evidence only"
    )]
    AnyCodeOnRealPlatform(String),

    // The platform's proof.
    #[error("the server's enclave is SIMULATED (no TEE): refused by policy (set allow_simulated = true only for development)")]
    Simulated,
    #[error("{0}")]
    BadSimulatedProof(&'static str),
    #[error("SGX quote of {len} bytes exceeds {max}")]
    QuoteTooLarge { len: usize, max: usize },
    #[error("malformed SGX quote: {0}")]
    QuoteMalformed(String),
    #[error("the quote is not an SGX enclave quote (TDX?)")]
    NotSgxQuote,
    #[error("the quote is not a TDX quote (SGX?)")]
    NotTdxQuote,
    #[error(
        "sgx-gramine evidence without DCAP collateral: start the server with --sgx-collateral FILE"
    )]
    NoCollateral,
    #[error("DCAP collateral of {len} bytes exceeds {max}")]
    CollateralTooLarge { len: usize, max: usize },
    #[error("malformed DCAP collateral: {0}")]
    CollateralMalformed(String),
    #[error("the SGX quote failed DCAP verification: {0}")]
    DcapFailed(String),
    #[error("the DCAP collateral's TCB evaluation data number is {got}, below the policy's minimum {min}: the host serves collateral from before a TCB recovery (fetch current collateral)")]
    CollateralTooOld { got: u32, min: u32 },
    #[error("the platform's TCB status is {status} (advisories: {advisories}); the policy accepts {allowed}")]
    TcbStatus {
        status: String,
        advisories: String,
        allowed: String,
    },
    #[error("the SGX enclave runs in DEBUG mode (the host can read its memory): refused by policy (sgx_allow_debug)")]
    DebugEnclave,
    #[error("the TDX guest is a DEBUG TD (the host can read its memory): refused by policy (tdx_allow_debug)")]
    DebugTd,
    #[error("malformed SNP attestation report: {0}")]
    SnpReportMalformed(String),
    #[error("the VCEK does not chain to AMD's ARK and ASK (Milan, Genoa or Turin)")]
    SnpChain,
    #[error("the VCEK did not sign this SNP report")]
    SnpSignature,
    #[error("the SEV-SNP guest's policy allows debugging (the hypervisor can read its memory): refused by policy (snp_allow_debug)")]
    DebugSnpGuest,
    #[error("the SNP report's TCB ({got}) is below the policy's minimum ({min})")]
    SnpTcbTooOld { got: String, min: String },
    #[error("the VCEK was not issued for this report: {0}")]
    SnpVcekMismatch(String),
    #[error("the quote's code measurement {quote} (MRENCLAVE, or the TD's registers hashed) differs from the evidence's code id {evidence}")]
    CodeIdMismatch { quote: String, evidence: String },
    #[error(
        "the quote's report data does not bind this evidence (session key, measurement, instance)"
    )]
    ReportDataMismatch,
    #[error("sgx-gramine evidence must not carry a platform key")]
    PlatformKeyPresent,

    // The claims against the policy.
    #[error("the evidence misstates what the host sees")]
    HostSeesMisstated,
    #[error("placement {placement} is not allowed by policy (allowed: {allowed}); the host would see: {host_sees}")]
    PlacementNotAllowed {
        placement: String,
        allowed: String,
        host_sees: String,
    },
    #[error("the enclave runs {placement} without integrity checks (--no-verify): the host could alter what it computes; refused by policy (allow_unverified = true only for benchmarks)")]
    Unverified { placement: String },
    #[error("measurement not allowed by policy: platform {platform}, code {code}, model {model}{}", if *.other_platform { format!(" (an entry with this code is for another platform; this evidence is {platform})") } else { String::new() })]
    MeasurementNotAllowed {
        platform: &'static str,
        code: String,
        model: String,
        /// An entry with this code exists for another platform.
        other_platform: bool,
    },
    #[error("origami split {split} is earlier than the policy's minimum {min} for model {model}: the host would see features closer to the input than audited")]
    SplitTooEarly {
        split: usize,
        min: u32,
        model: String,
    },
}

impl Rejection {
    /// A stable name for the cause (`"simulated"`, `"measurement_not_allowed"`, …), for
    /// bindings and logs that match on the cause without its wording.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::UnknownPolicyPlatform(_) => "unknown_policy_platform",
            Rejection::AnyCodeOnRealPlatform(_) => "any_code_on_real_platform",
            Rejection::Simulated => "simulated",
            Rejection::BadSimulatedProof(_) => "bad_simulated_proof",
            Rejection::QuoteTooLarge { .. } => "quote_too_large",
            Rejection::QuoteMalformed(_) => "quote_malformed",
            Rejection::NotSgxQuote => "not_sgx_quote",
            Rejection::NotTdxQuote => "not_tdx_quote",
            Rejection::NoCollateral => "no_collateral",
            Rejection::CollateralTooLarge { .. } => "collateral_too_large",
            Rejection::CollateralMalformed(_) => "collateral_malformed",
            Rejection::DcapFailed(_) => "dcap_failed",
            Rejection::CollateralTooOld { .. } => "collateral_too_old",
            Rejection::TcbStatus { .. } => "tcb_status",
            Rejection::DebugEnclave => "debug_enclave",
            Rejection::DebugTd => "debug_td",
            Rejection::SnpReportMalformed(_) => "snp_report_malformed",
            Rejection::SnpChain => "snp_chain",
            Rejection::SnpSignature => "snp_signature",
            Rejection::DebugSnpGuest => "debug_snp_guest",
            Rejection::SnpTcbTooOld { .. } => "snp_tcb_too_old",
            Rejection::SnpVcekMismatch(_) => "snp_vcek_mismatch",
            Rejection::CodeIdMismatch { .. } => "code_id_mismatch",
            Rejection::ReportDataMismatch => "report_data_mismatch",
            Rejection::PlatformKeyPresent => "platform_key_present",
            Rejection::HostSeesMisstated => "host_sees_misstated",
            Rejection::PlacementNotAllowed { .. } => "placement_not_allowed",
            Rejection::Unverified { .. } => "unverified",
            Rejection::MeasurementNotAllowed { .. } => "measurement_not_allowed",
            Rejection::SplitTooEarly { .. } => "split_too_early",
        }
    }
}
