//! The trusted side: the plan (calibration, quantization, split), the quantized reference,
//! and the enclave core — an I/O-free state machine holding every secret.

pub mod core;
pub mod plan;
pub mod process;
pub mod qops;
pub mod reference;
pub mod service;

pub use crate::core::{
    CoreConfig, CoreStats, EnclaveCore, Handoff, Offload, Placement, Reply, Step,
};
pub use plan::{Plan, QuantConfig};
pub use reference::{reference, reference_handoff};

/// Errors of the trusted core, by cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnclaveError {
    /// Bad input from outside (the client's request).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The accelerator returned something that is not the correct result.
    #[error("the accelerator misbehaved at layer {layer}: {detail}")]
    AcceleratorMisbehaved { layer: u16, detail: String },
    /// A sealed pad was tampered with, replayed or belongs to another instance.
    #[error("pad rejected: {0}")]
    PadRejected(origami_field::FieldError),
    /// The operating system's randomness or another crypto primitive failed.
    #[error("crypto: {0}")]
    Crypto(String),
    /// No pad is available: the request must wait for precompute.
    #[error("pads exhausted: {0}")]
    PadsExhausted(String),
    /// A fixed-point value left the range the field can hold: the answer would be wrong.
    #[error("fixed-point saturation at layer {layer} ({node}): |y| = {value} exceeds p/4; recalibrate with inputs like this one")]
    Saturation {
        layer: u16,
        node: String,
        value: i64,
    },
    /// The enclave (process) cannot be reached or stopped mid-request.
    #[error("the enclave is unavailable: {0}")]
    Unavailable(String),
    /// The plan or configuration is invalid.
    #[error("plan: {0}")]
    Plan(String),
    /// The caller used the core out of order.
    #[error("misuse: {0}")]
    Misuse(String),
}

impl From<origami_field::FieldError> for EnclaveError {
    fn from(e: origami_field::FieldError) -> Self {
        match e {
            origami_field::FieldError::SealTampered { .. } => Self::PadRejected(e),
            other => Self::Crypto(other.to_string()),
        }
    }
}
