//! The vocabulary of one request between the host and the enclave core: where layers run
//! (`Placement`, defined in `origami_proto` so the evidence carries it), what the core asks of the host (`Step`: `Offload`, `Handoff`, `Done`) and what
//! the host answers (`Reply`). Both sides use these types; only the trusted crate acts on them.

use origami_field::SealedPad;
use origami_model::{NodeId, Tensor, ValueId};

pub use origami_proto::Placement;

/// What the host must do next. `T` is the answer: the plain tensor for the bare core, a sealed
/// answer for the attested service.
#[derive(Debug)]
pub enum Step<T = Tensor> {
    Offload(Offload),
    Handoff(Handoff),
    Done(T),
}

/// A blinded linear layer to compute: `(W_layer · blinded) mod p`.
#[derive(Debug)]
pub struct Offload {
    pub layer: u16,
    /// The pad whose sealed u the host must return with the result.
    pub pad_id: u64,
    pub blinded: Vec<u32>,
}

/// Plain values for the tail, which starts at node `start`.
#[derive(Debug)]
pub struct Handoff {
    pub start: NodeId,
    pub values: Vec<(ValueId, Tensor)>,
}

/// The host's answer to a step.
pub enum Reply {
    /// The accelerator's result for the last `Offload`, and the sealed u of its pad and layer.
    Linear {
        result: Vec<u32>,
        sealed_u: SealedPad,
    },
    /// The tail's output after a `Handoff`.
    Tail(Tensor),
}
