//! The vocabulary of one request between the host and the enclave core: where layers run
//! (`Placement`), what the core asks of the host (`Step`: `Offload`, `Handoff`, `Done`) and what
//! the host answers (`Reply`). Both sides use these types; only the trusted crate acts on them.

use origami_field::SealedPad;
use origami_model::{Tensor, ValueId};

use crate::plan::Plan;
use crate::EnclaveError;

/// Where the layers run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Every layer inside the enclave: the secure baseline.
    Enclave,
    /// Every linear layer blinded and offloaded; non-linear layers in the enclave.
    Slalom,
    /// The first `split` linear layers as in slalom, the rest in plain on the accelerator.
    Origami { split: usize },
    /// Everything in plain on the accelerator: no privacy.
    Plain,
}

impl Placement {
    /// Parses `--mode` and `--split`.
    pub fn parse(mode: &str, split: Option<usize>) -> Result<Self, EnclaveError> {
        match (mode, split) {
            ("enclave", None) => Ok(Self::Enclave),
            ("slalom", None) => Ok(Self::Slalom),
            ("plain", None) => Ok(Self::Plain),
            ("origami", Some(k)) => Ok(Self::Origami { split: k }),
            ("origami", None) => Err(EnclaveError::Plan("--mode origami needs --split K".into())),
            ("enclave" | "slalom" | "plain", Some(_)) => Err(EnclaveError::Plan(format!(
                "--split only applies to --mode origami, not {mode}"
            ))),
            _ => Err(EnclaveError::Plan(format!(
                "unknown mode '{mode}' (enclave, slalom, origami, plain)"
            ))),
        }
    }

    pub fn name(&self) -> String {
        match self {
            Self::Enclave => "enclave".into(),
            Self::Slalom => "slalom".into(),
            Self::Origami { split } => format!("origami --split {split}"),
            Self::Plain => "plain".into(),
        }
    }

    /// First tail node for this placement on `plan`.
    pub fn head_end(&self, plan: &Plan) -> Result<usize, EnclaveError> {
        match self {
            Self::Enclave | Self::Slalom => Ok(plan.model.nodes.len()),
            Self::Plain => Ok(0),
            Self::Origami { split } => plan.split_node(*split),
        }
    }
}

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
    pub start: usize,
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
