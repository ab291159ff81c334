//! ONNX import and export.
//!
//! Import maps the operators a CNN classifier uses (Conv, Gemm/MatMul, pooling, batch norm,
//! activations, reshapes, residual Add, Softmax) onto the [`Model`] IR and rejects everything else
//! with [`ModelError::Unsupported`] naming the operator and the node, so that users learn exactly
//! which layer stops their model. Files are untrusted input: every size, offset and path is
//! checked, and corrupt or truncated files give [`ModelError::Malformed`], never a panic.
//!
//! Export writes ONNX IR 10 / opset 18 that standard tools (onnx checker, ONNX Runtime) accept and
//! that re-imports to an identical [`Model`] (`from_bytes(&to_bytes(m)) == m`), names included.
//!
//! The protobuf messages are hand-written prost structs in [`proto`] (no `protoc`).

mod decode;
mod export;
mod fold;
mod import;
mod layers;
mod linear;
pub mod proto;
mod reshape;

use std::path::Path;

use prost::Message;

use crate::{Model, ModelError};

/// Operator domain of the one operator Origami writes that ONNX lacks: `Dilate` (zero
/// insertion), what a `ConvTranspose` imports as before its convolution.
pub const ORIGAMI_DOMAIN: &str = "ai.origami";

/// Metadata key under which the class labels are stored, joined by `'\n'`.
pub const LABELS_KEY: &str = "origami.labels";

/// Reads an ONNX file. External tensor data is resolved relative to the file's directory.
pub fn load(path: &Path) -> Result<Model, ModelError> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    from_bytes(&bytes, Some(dir))
}

/// Parses an ONNX model from memory. `base_dir` is the directory that external tensor data is
/// relative to; with `None`, a model whose weights live in external files is an error.
pub fn from_bytes(bytes: &[u8], base_dir: Option<&Path>) -> Result<Model, ModelError> {
    let proto = proto::ModelProto::decode(bytes)
        .map_err(|e| ModelError::Malformed(format!("not a valid ONNX protobuf file: {e}")))?;
    import::import(&proto, base_dir)
}

/// Serializes a model as ONNX (IR 10, opset 18) with weights inline as little-endian f32.
///
/// The model should pass [`Model::validate`]; an invalid model is still written (this function
/// cannot fail) but will not import again. Two IR forms are canonicalized by a round trip:
/// `Op::Reshape` with a single dimension re-imports as the equivalent `Op::Flatten`, and a node
/// with an empty name re-imports named after its output value. Labels must not contain `'\n'`.
pub fn to_bytes(model: &Model) -> Vec<u8> {
    export::export(model).encode_to_vec()
}

/// Writes a model as an ONNX file, atomically (`crate::atomic`): a crash or a full disk never
/// leaves a half-written model under the final name.
pub fn save(model: &Model, path: &Path) -> Result<(), ModelError> {
    let io = |p: &Path, source| ModelError::Io {
        path: p.display().to_string(),
        source,
    };
    crate::atomic::write_with(
        path,
        |tmp| std::fs::write(tmp, to_bytes(model)).map_err(|e| io(tmp, e)),
        io,
    )
}
