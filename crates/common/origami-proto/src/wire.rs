//! Messages between the host and the enclave process, one per frame (`frame`). The enclave
//! decodes only bounded frames and validates every field against its plan before use; the host
//! treats everything it receives as coming from a peer that may have crashed.

use serde::{Deserialize, Serialize};

use crate::evidence::Evidence;
use crate::session::{SealedAnswer, SealedRequest};
use crate::tensor::WireTensor;

/// A sealed unblinding factor (see `origami_field::SealedPad`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePad {
    pub pad_id: u64,
    pub layer: u16,
    pub len: u64,
    pub ciphertext: Vec<u8>,
}

/// Host → enclave.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ToEnclave {
    /// The evidence clients verify.
    Evidence,
    /// Precompute this many pads and return them sealed.
    Precompute { count: u32 },
    /// Start a client's request on the given pad (`None`: the enclave's oldest ready pad).
    Begin {
        request: SealedRequest,
        pad: Option<u64>,
    },
    /// The accelerator's result for the last offload, with the sealed u of its pad and layer.
    Linear { result: Vec<u32>, sealed_u: WirePad },
    /// The tail's output after a handoff.
    Tail(WireTensor),
    /// Abandon the request in flight.
    Abort,
    /// Park the request in flight at its handoff (answered `Parked`).
    Park,
    /// Seal the tail output of a parked request (answered `Done`).
    Finish { ticket: u64, output: WireTensor },
    /// How many times the enclave has rotated its session key (answered `KeyEpoch`): when it
    /// changes, the host fetches the evidence again and serves the new one.
    KeyEpoch,
}

/// Enclave → host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FromEnclave {
    Evidence(Box<Evidence>),
    Pads(Vec<WirePad>),
    Offload {
        layer: u16,
        pad_id: u64,
        blinded: Vec<u32>,
    },
    Handoff {
        start: u64,
        values: Vec<(u64, WireTensor)>,
    },
    Done(SealedAnswer),
    Aborted,
    Parked {
        ticket: u64,
    },
    /// The request failed before it was opened, or the host misused the protocol (the request
    /// in flight, if any, is abandoned; its pad stays consumed). Never carries a value derived
    /// from a client's data: `detail` names what was wrong with the host's message.
    Error {
        kind: ErrorKind,
        detail: String,
    },
    /// The request failed after the enclave opened it. Why is sealed to the client inside the
    /// answer (`crate::session::Answer::Failed`); the host learns only that it failed, the same
    /// for every cause.
    Failed(SealedAnswer),
    KeyEpoch {
        epoch: u64,
    },
}

/// Why the enclave refused a host message, as a kind the host can match on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The client's sealed request could not be opened (tampered, replayed, another session,
    /// or the session key has served its maximum).
    BadRequest,
    /// The enclave has no ready pad: precompute first.
    PadsExhausted,
    /// The host offered a pad id that is not one of the enclave's ready pads.
    PadNotReady { pad: u64 },
    /// The host sent a message out of order (no request in flight, one already in flight, a
    /// reply of the wrong kind, an unknown ticket).
    Misuse,
    /// The host's message could not be decoded or exceeds a bound.
    Malformed,
    /// A failure inside the enclave that no input should cause.
    Internal,
    /// The client's request is sealed to a session key the enclave no longer holds (rotated
    /// out, or served its maximum): the client must re-attest. The request was not opened.
    KeyRetired,
}

/// Most pads one `Precompute` may ask for (bounds the enclave's work and the reply's size).
pub const MAX_PRECOMPUTE: u32 = 256;
