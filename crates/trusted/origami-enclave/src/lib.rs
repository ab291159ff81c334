//! The trusted side: the plan (calibration, quantization, split), the quantized reference,
//! and the enclave core — an I/O-free state machine holding every secret.

pub mod core;
pub mod listen;
mod probe;
pub mod process;
pub mod service;

pub use crate::core::{
    CoreConfig, CoreStats, EnclaveCore, Handoff, Offload, Parked, Placement, Reply, Step,
    MAX_PARKED,
};
// The shared planning vocabulary, re-exported so the core's users need one import.
pub use origami_plan::{
    plan, qops, reference, reference_handoff, EnclaveError, Misbehaviour, Plan, QuantConfig,
};
