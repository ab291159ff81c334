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

mod export;
mod import;
pub mod proto;

use std::io::Write;
use std::path::Path;

use prost::Message;

use crate::{Model, ModelError};

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

/// Writes a model as an ONNX file, atomically: the bytes go to a temporary file next to `path`
/// (`<name>.tmp`), which is flushed and then renamed over `path`, so a crash or a full disk never
/// leaves a half-written model under the final name.
pub fn save(model: &Model, path: &Path) -> Result<(), ModelError> {
    let io_err = |p: &Path, source| ModelError::Io {
        path: p.display().to_string(),
        source,
    };
    let Some(file_name) = path.file_name() else {
        return Err(ModelError::Invalid(format!(
            "{}: not a file path",
            path.display()
        )));
    };
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let bytes = to_bytes(model);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()
    };
    if let Err(e) = write() {
        // Best effort: the temporary file is garbage either way; the write error is what matters.
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(&tmp, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(path, e)
    })
}
