//! The untrusted accelerator seam.
//!
//! `Accelerator` is narrow and object-safe: prepare a model, run an exact field linear layer on
//! blinded data, run the plain float tail, synchronize. Backends: `CpuAccelerator` (here: int8 limb or f64 field GEMMs),
//! CUDA (`origami-cuda`, later). Wrappers implement it too: `Recording` (what the untrusted side
//! sees; the audit trains on exactly that) and `Tampering` (a malicious accelerator for tests).
//! Every backend must pass `conformance::check_all`.

use std::sync::Arc;

pub use origami_model::linalg::LinearShape;
use origami_model::{Model, NodeId, Tensor, ValueId};

pub mod conformance;
mod cpu;
mod int8;
mod wrappers;

pub use cpu::{CpuAccelerator, FieldKernel};
pub use int8::Limbs;
pub use wrappers::{Record, Recording, Tampering};

/// Largest weight magnitude a field layer may have: exactness of the f64 path needs
/// 2^24 · max|w| · K < 2^53 (see `FieldLayer::check_exact`).
pub const MAX_FIELD_WEIGHT: i32 = 1 << 15;

/// A quantized linear layer the accelerator computes over Z_p: `y = W·x̄ mod p` (no bias: the
/// enclave adds it after unblinding). Weight layout as in the float model.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldLayer {
    pub layer: u16,
    pub shape: LinearShape,
    pub weight: Vec<i32>,
}

impl FieldLayer {
    /// Checks sizes and the exactness bound: every |Σ w·x̄| with x̄ < p < 2^24 must stay below
    /// 2^52, so that an f64 GEMM computes it exactly (< 2^53) and `reduce_f64` reduces it
    /// exactly: max|w| · K · 2^24 < 2^52.
    pub fn check_exact(&self) -> Result<(), AccelError> {
        if self.weight.len() != self.shape.weight_len() {
            return Err(AccelError::BadInput(format!(
                "layer {}: {} weights for a shape needing {}",
                self.layer,
                self.weight.len(),
                self.shape.weight_len()
            )));
        }
        let wmax = self
            .weight
            .iter()
            .map(|w| w.unsigned_abs())
            .max()
            .unwrap_or(0) as u128;
        let bound = wmax * self.shape.k() as u128 * (1u128 << 24);
        if wmax > MAX_FIELD_WEIGHT as u128 || bound >= 1u128 << 52 {
            return Err(AccelError::BadInput(format!(
                "layer {}: max |w| = {wmax} over K = {} could exceed 2^52 (f64 exactness)",
                self.layer,
                self.shape.k()
            )));
        }
        Ok(())
    }
}

/// Accelerator errors, by cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccelError {
    #[error("the accelerator has no prepared model")]
    NotPrepared,
    #[error("unknown field layer {0}")]
    UnknownLayer(u16),
    #[error("bad input: {0}")]
    BadInput(String),
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    #[error("backend failure: {0}")]
    Backend(String),
}

/// Untrusted compute. Sees only blinded field tensors (head) and plain features (tail).
pub trait Accelerator: Send {
    /// Backend name for logs and reports (e.g. "cpu", "cuda:0 (NVIDIA H100)").
    fn name(&self) -> String;
    /// Uploads weights: the float model for the tail and the quantized field layers.
    fn prepare(&mut self, model: Arc<Model>, field_layers: &[FieldLayer])
        -> Result<(), AccelError>;
    /// `(W·x̄) mod p` for one image, as representatives in [0, p).
    fn field_linear(&mut self, layer: u16, blinded: &[u32]) -> Result<Vec<u32>, AccelError>;
    /// Runs model nodes `start..` in float from the given values; returns the model output.
    fn run_tail(
        &mut self,
        start: NodeId,
        values: Vec<(ValueId, Tensor)>,
    ) -> Result<Tensor, AccelError>;
    /// Waits for outstanding work.
    fn synchronize(&mut self) -> Result<(), AccelError>;
}
