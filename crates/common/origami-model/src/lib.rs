//! Model IR, ONNX import and export, the zoo and the fast float executor.
//!
//! Pipeline: `Model` (this crate) → `Plan` (quantized, calibrated, split; `origami-enclave`) →
//! prepared on an accelerator (`origami-accel`) → one session per request.

pub mod atomic;
pub mod exec;
mod hash;
pub mod input;
pub mod ir;
pub mod linalg;
pub mod npy;
pub mod onnx;
pub mod ops;
mod shape;
pub mod skip;
pub mod tensor;
pub mod winograd;
pub mod zoo;

pub use ir::{
    BinOp, Conv, Dense, Lrn, Model, Node, NodeId, Op, PadMode, Pool, Unary, ValueId, INPUT,
    MAX_TOTAL_ELEMENTS, MAX_VALUE_ELEMENTS,
};
pub use tensor::Tensor;

/// Errors of this crate, by cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The model uses an operator (or an attribute value) that Origami does not support.
    #[error("unsupported operator {op} at node '{node}': {detail}")]
    Unsupported {
        op: String,
        node: String,
        detail: String,
    },
    /// The file is not a well-formed model (truncated, corrupt, inconsistent).
    #[error("malformed model: {0}")]
    Malformed(String),
    /// Tensor shapes do not fit together.
    #[error("shape error: {0}")]
    Shape(String),
    /// A tensor the model would compute is larger than Origami accepts (more than
    /// [`MAX_VALUE_ELEMENTS`] elements, all values together more than [`MAX_TOTAL_ELEMENTS`]),
    /// or a size computation overflows. Refused before anything of that size is allocated.
    #[error("too large: {0}")]
    TooLarge(String),
    /// A structurally invalid model or argument.
    #[error("invalid: {0}")]
    Invalid(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// An input file (image, .npy) could not be used.
    #[error("input: {0}")]
    Input(String),
}
