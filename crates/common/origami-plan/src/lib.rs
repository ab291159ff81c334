//! What both sides of the trust boundary share about a served model: the quantization `Plan`
//! (BN folding, calibration, fixed-point exponents, field bounds), `QLinear`, the quantized
//! operators the enclave core runs (`qops`) and the quantized `reference` they must match, where
//! layers run (`Placement`), one request's steps (`Step`, `Reply`) and the error kinds
//! (`EnclaveError`). Public code: host, server, audit and client tooling use it without the
//! trusted crate (`origami-enclave`), which holds the keys and acts on these types.

pub mod blinded;
pub mod convert;
pub mod plan;
pub mod qops;
pub mod reference;
pub mod step;

pub use plan::{Plan, QuantConfig};
pub use reference::{reference, reference_handoff};
pub use step::{Handoff, Offload, Placement, Reply, Step};

/// Errors of the trusted core, by cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnclaveError {
    /// Bad input from outside (the client's request).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The accelerator returned something that is not the correct result (`layer` is the
    /// blinded layer, `None` for the plain tail).
    #[error("the accelerator misbehaved {}: {what}", at_layer(*.layer))]
    AcceleratorMisbehaved {
        layer: Option<u16>,
        what: Misbehaviour,
    },
    /// A sealed pad was tampered with, replayed or belongs to another instance.
    #[error("pad rejected: {0}")]
    PadRejected(origami_field::FieldError),
    /// The operating system's randomness or another crypto primitive failed.
    #[error("crypto: {0}")]
    Crypto(String),
    /// No pad is ready: the request must wait for precompute.
    #[error("pads exhausted: no precomputed pad is left; precompute more")]
    PadsExhausted,
    /// The pad id space of this instance is used up (2^48 pads): restart the enclave.
    #[error("pad id space exhausted; restart the enclave")]
    PadIdsExhausted,
    /// The request is sealed to a session key the enclave no longer holds (rotated out) or
    /// that has served its maximum: the client must fetch the evidence again. The request
    /// was not opened.
    #[error("the request's session key is retired: fetch the evidence again (re-attest)")]
    KeyRetired,
    /// The host offered a pad that is not one of this instance's ready pads.
    #[error("pad {pad} is not a ready pad of this enclave instance (already used, or never precomputed here)")]
    PadNotReady { pad: u64 },
    /// A fixed-point value left the range the field can hold: the answer would be wrong. It
    /// names the layer, never the value (a lying accelerator could otherwise read exact
    /// activations through it); in the attested service it reaches only the client, sealed.
    #[error("fixed-point saturation at layer {layer} ({node}): a value exceeds p/4; recalibrate with inputs like this one")]
    Saturation { layer: u16, node: String },
    /// The request failed after the attested service opened it. The answer, sealed to the
    /// client, says why (`origami_proto::session::Failure`); the host only forwards it.
    #[error("the request failed inside the enclave (the cause is sealed to the client)")]
    Failed(origami_proto::session::SealedAnswer),
    /// The enclave (process) cannot be reached or stopped mid-request (a host-side link error).
    #[error("the enclave is unavailable: {0}")]
    Unavailable(String),
    /// `--mode` and `--split` name no placement.
    #[error(transparent)]
    Placement(#[from] origami_proto::PlacementError),
    /// The plan or configuration is invalid.
    #[error("plan: {0}")]
    Plan(String),
    /// The caller used the core out of order.
    #[error("misuse: {0}")]
    Misuse(String),
}

/// How an accelerator's answer failed the enclave's checks. Every field is a size the host
/// itself chose, never a value derived from the client's data.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Misbehaviour {
    /// A blinded layer's result has the wrong number of values.
    #[error("returned {got} values, expected {expected}")]
    WrongLength { got: usize, expected: usize },
    /// A blinded layer's result holds a value that is not reduced mod p.
    #[error("returned values not reduced mod p")]
    NotReduced,
    /// A blinded layer's result failed the Freivalds check: it is not `W·x̄`.
    #[error("Freivalds check failed: the result is not W·x̄")]
    FreivaldsFailed,
    /// The tail's output does not have the model's output shape.
    #[error("tail output has shape {got:?}, expected {expected:?}")]
    TailShape {
        got: Vec<usize>,
        expected: Vec<usize>,
    },
}

fn at_layer(layer: Option<u16>) -> String {
    match layer {
        Some(l) => format!("at layer {l}"),
        None => "in the tail".into(),
    }
}

impl EnclaveError {
    /// What the client is told, sealed, when this error ends a request the service opened.
    pub fn failure(&self) -> origami_proto::session::Failure {
        use origami_proto::session::Failure;
        match self {
            Self::BadRequest(_) => Failure::BadInput,
            Self::Saturation { .. } => Failure::Saturation,
            Self::AcceleratorMisbehaved { .. } => Failure::AcceleratorMisbehaved,
            Self::PadRejected(_) => Failure::PadRejected,
            Self::Misuse(_) => Failure::HostMisbehaved,
            _ => Failure::Internal,
        }
    }
}

impl From<origami_field::FieldError> for EnclaveError {
    fn from(e: origami_field::FieldError) -> Self {
        match e {
            origami_field::FieldError::SealTampered { .. } => Self::PadRejected(e),
            other => Self::Crypto(other.to_string()),
        }
    }
}
