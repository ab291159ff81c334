//! Decoding helpers of the ONNX importer: attributes, constant tensors (raw, typed and external
//! storage), spatial parameters and error constructors. Everything here treats the file as
//! untrusted: sizes are bounded before allocating, paths may not leave the model's directory.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path};

use super::import::{MAX_OPSET, MIN_OPSET};
use super::proto::{
    attribute_type, data_location, data_type, tensor_shape_proto::dimension, type_proto,
    AttributeProto, ModelProto, NodeProto, TensorProto, ValueInfoProto,
};
use crate::ir::Pool;
use crate::ModelError;

/// Decoded constant data.
#[derive(Clone, Debug)]
pub(super) enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// Largest number of elements in one tensor (2^31): bounds allocations driven by file contents.
pub(super) const MAX_ELEMENTS: usize = 1 << 31;
/// Largest kernel, stride or padding accepted, far above any real network; bounding these keeps
/// shape arithmetic far from overflow.
pub(super) const MAX_SPATIAL: i64 = 1 << 20;

pub(super) fn malformed(msg: impl Into<String>) -> ModelError {
    ModelError::Malformed(msg.into())
}

/// The operator and node being converted, for error messages.
pub(super) struct Ctx<'n> {
    pub(super) op: &'n str,
    pub(super) node: &'n str,
}

impl Ctx<'_> {
    pub(super) fn unsupported(&self, detail: impl Into<String>) -> ModelError {
        ModelError::Unsupported {
            op: self.op.to_string(),
            node: self.node.to_string(),
            detail: detail.into(),
        }
    }
    pub(super) fn malformed(&self, msg: impl std::fmt::Display) -> ModelError {
        malformed(format!("node '{}' ({}): {msg}", self.node, self.op))
    }
}

pub(super) fn is_default_domain(n: &NodeProto) -> bool {
    n.domain.is_empty() || n.domain == "ai.onnx"
}

pub(super) fn input_name(np: &NodeProto, k: usize) -> &str {
    np.input.get(k).map(String::as_str).unwrap_or("")
}

/// `axis` in `[-rank, rank)` → `[0, rank)`.
pub(super) fn normalize_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}

/// A row-major `rows × cols` matrix, transposed.
pub(super) fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; m.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = m[r * cols + c];
        }
    }
    t
}

pub(super) fn to_usize(v: i64) -> Result<usize, ModelError> {
    usize::try_from(v).map_err(|_| malformed(format!("{v} is not a valid size")))
}

/// Product of `dims`, rejecting overflow and tensors above [`MAX_ELEMENTS`].
pub(super) fn element_count(dims: &[usize], what: &str) -> Result<usize, ModelError> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| {
            malformed(format!(
                "{what}: shape {dims:?} has more than {MAX_ELEMENTS} elements"
            ))
        })
}

// ---- attributes ----

pub(super) fn find_attr<'n>(np: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    np.attribute.iter().find(|a| a.name == name)
}

/// Checks the attribute's type discriminator (UNDEFINED is tolerated for pre-IR-2 files).
pub(super) fn check_type(
    ctx: &Ctx,
    a: &AttributeProto,
    want: i32,
    what: &str,
) -> Result<(), ModelError> {
    if a.r#type == want || a.r#type == attribute_type::UNDEFINED {
        Ok(())
    } else {
        Err(ctx.malformed(format!(
            "attribute '{}' must be {what} (type {want}), it has type {}",
            a.name, a.r#type
        )))
    }
}

pub(super) fn expect_i(ctx: &Ctx, a: &AttributeProto) -> Result<i64, ModelError> {
    check_type(ctx, a, attribute_type::INT, "an int")?;
    Ok(a.i.unwrap_or(0))
}

pub(super) fn expect_f(ctx: &Ctx, a: &AttributeProto) -> Result<f32, ModelError> {
    check_type(ctx, a, attribute_type::FLOAT, "a float")?;
    Ok(a.f.unwrap_or(0.0))
}

pub(super) fn attr_i(ctx: &Ctx, np: &NodeProto, name: &str) -> Result<Option<i64>, ModelError> {
    find_attr(np, name).map(|a| expect_i(ctx, a)).transpose()
}

pub(super) fn attr_f(ctx: &Ctx, np: &NodeProto, name: &str) -> Result<Option<f32>, ModelError> {
    find_attr(np, name).map(|a| expect_f(ctx, a)).transpose()
}

pub(super) fn attr_ints(
    ctx: &Ctx,
    np: &NodeProto,
    name: &str,
) -> Result<Option<Vec<i64>>, ModelError> {
    find_attr(np, name)
        .map(|a| {
            check_type(ctx, a, attribute_type::INTS, "a list of ints")?;
            Ok(a.ints.clone())
        })
        .transpose()
}

pub(super) fn attr_s(ctx: &Ctx, np: &NodeProto, name: &str) -> Result<Option<String>, ModelError> {
    find_attr(np, name)
        .map(|a| {
            check_type(ctx, a, attribute_type::STRING, "a string")?;
            Ok(String::from_utf8_lossy(a.s.as_deref().unwrap_or_default()).into_owned())
        })
        .transpose()
}

/// Two spatial values, each in `[lo, MAX_SPATIAL]`.
pub(super) fn spatial<const N: usize>(
    ctx: &Ctx,
    name: &str,
    v: &[i64],
    lo: i64,
) -> Result<[usize; N], ModelError> {
    let arr: [i64; N] = v.try_into().map_err(|_| {
        ctx.unsupported(format!(
            "{name} {v:?}: only 2-D (NCHW) operators are supported"
        ))
    })?;
    let mut out = [0usize; N];
    for (o, &x) in out.iter_mut().zip(&arr) {
        if !(lo..=MAX_SPATIAL).contains(&x) {
            return Err(ctx.malformed(format!("{name} {v:?} out of range")));
        }
        *o = to_usize(x)?;
    }
    Ok(out)
}

pub(super) fn strides(ctx: &Ctx, np: &NodeProto) -> Result<[usize; 2], ModelError> {
    match attr_ints(ctx, np, "strides")? {
        Some(s) => spatial(ctx, "strides", &s, 1),
        None => Ok([1, 1]),
    }
}

/// Padding `[top, left, bottom, right]`, honouring `auto_pad` (NOTSET or VALID only). ONNX
/// orders pads `[x1_begin, x2_begin, x1_end, x2_end]`, which for NCHW is the same order.
pub(super) fn pads(ctx: &Ctx, np: &NodeProto) -> Result<[usize; 4], ModelError> {
    match attr_s(ctx, np, "auto_pad")?.as_deref() {
        None | Some("NOTSET") | Some("") => {}
        Some("VALID") => return Ok([0; 4]),
        Some(other) => {
            return Err(ctx.unsupported(format!(
                "auto_pad {other}; only NOTSET (explicit pads) and VALID are supported"
            )))
        }
    }
    match attr_ints(ctx, np, "pads")? {
        Some(p) => spatial(ctx, "pads", &p, 0),
        None => Ok([0; 4]),
    }
}

/// `dilations` (default 1, 1), each in `[1, MAX_SPATIAL]`.
pub(super) fn dilations(ctx: &Ctx, np: &NodeProto) -> Result<[usize; 2], ModelError> {
    match attr_ints(ctx, np, "dilations")? {
        Some(d) => spatial(ctx, "dilations", &d, 1),
        None => Ok([1, 1]),
    }
}

/// Refuses pooling dilations other than 1.
pub(super) fn check_dilations(ctx: &Ctx, np: &NodeProto) -> Result<(), ModelError> {
    if dilations(ctx, np)? != [1, 1] {
        return Err(ctx.unsupported("pooling dilations other than 1 are not supported"));
    }
    Ok(())
}

/// Largest factor by which expanding a dilated kernel may multiply its size.
const MAX_DILATED_GROWTH: usize = 64;

/// A dilated kernel `[out, in, kh, kw]` as the ordinary kernel of size `d·(k − 1) + 1` with
/// zeros between the taps: the same convolution, exactly (the zeros add nothing), run by every
/// executor and by the blinded field layers without a dilation parameter. Costs the zeros'
/// multiplications, so growth beyond [`MAX_DILATED_GROWTH`] is refused.
pub(super) fn dilate_kernel(
    ctx: &Ctx,
    k: [usize; 2],
    d: [usize; 2],
    w: Vec<f32>,
) -> Result<(usize, usize, Vec<f32>), ModelError> {
    if d == [1, 1] {
        return Ok((k[0], k[1], w));
    }
    let grow = |k: usize, d: usize| k.saturating_sub(1).checked_mul(d).map(|v| v + 1);
    let (Some(eh), Some(ew)) = (grow(k[0], d[0]), grow(k[1], d[1])) else {
        return Err(ctx.malformed("dilated kernel size overflows"));
    };
    let factor = (eh * ew) / (k[0] * k[1]).max(1);
    if factor > MAX_DILATED_GROWTH {
        return Err(ctx.unsupported(format!(
            "dilations {d:?} grow the {}x{} kernel to {eh}x{ew}, more than {MAX_DILATED_GROWTH}x",
            k[0], k[1]
        )));
    }
    let taps = k[0] * k[1];
    let mut out = vec![0f32; (w.len() / taps.max(1)) * eh * ew];
    for (src, dst) in w.chunks(taps).zip(out.chunks_mut(eh * ew)) {
        for y in 0..k[0] {
            for x in 0..k[1] {
                dst[y * d[0] * ew + x * d[1]] = src[y * k[1] + x];
            }
        }
    }
    Ok((eh, ew, out))
}

pub(super) fn pool(ctx: &Ctx, np: &NodeProto, avg: bool) -> Result<Pool, ModelError> {
    let kernel = match attr_ints(ctx, np, "kernel_shape")? {
        Some(k) => spatial(ctx, "kernel_shape", &k, 1)?,
        None => return Err(ctx.malformed("kernel_shape is required")),
    };
    if attr_i(ctx, np, "ceil_mode")?.unwrap_or(0) != 0 {
        return Err(ctx.unsupported("ceil_mode must be 0"));
    }
    check_dilations(ctx, np)?;
    let count_include_pad = avg && attr_i(ctx, np, "count_include_pad")?.unwrap_or(0) != 0;
    Ok(Pool {
        kernel,
        stride: strides(ctx, np)?,
        pads: pads(ctx, np)?,
        count_include_pad,
    })
}

// ---- tensors ----

pub(super) fn type_name(t: i32) -> String {
    let name = match t {
        data_type::UNDEFINED => "UNDEFINED",
        data_type::FLOAT => "FLOAT",
        data_type::UINT8 => "UINT8",
        data_type::INT8 => "INT8",
        data_type::INT32 => "INT32",
        data_type::INT64 => "INT64",
        data_type::STRING => "STRING",
        data_type::BOOL => "BOOL",
        data_type::FLOAT16 => "FLOAT16",
        data_type::DOUBLE => "DOUBLE",
        data_type::BFLOAT16 => "BFLOAT16",
        _ => return format!("data type {t}"),
    };
    name.to_string()
}

/// Decodes a FLOAT, DOUBLE (→ f32) or INT64 tensor from raw, typed or external storage,
/// checking that the stored data has exactly the length the dims call for.
pub(super) fn decode_tensor(
    t: &TensorProto,
    base_dir: Option<&Path>,
) -> Result<(Vec<usize>, Data), ModelError> {
    let name = &t.name;
    let dims = t
        .dims
        .iter()
        .map(|&d| {
            usize::try_from(d)
                .map_err(|_| malformed(format!("tensor '{name}' has negative dimension {d}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let n = element_count(&dims, &format!("tensor '{name}'"))?;
    let elem_size = match t.data_type {
        data_type::FLOAT => 4,
        data_type::DOUBLE | data_type::INT64 => 8,
        other => {
            return Err(malformed(format!(
                "tensor '{name}' has type {}; only FLOAT (DOUBLE) weights and INT64 shapes/axes \
                 are supported",
                type_name(other)
            )))
        }
    };
    // Cannot overflow: n ≤ 2^31 and elem_size ≤ 8.
    let nbytes = n * elem_size;
    let external;
    let raw: Option<&[u8]> = if t.data_location == data_location::EXTERNAL {
        external = read_external(t, base_dir, nbytes)?;
        Some(&external)
    } else if !t.raw_data.is_empty() {
        Some(&t.raw_data)
    } else {
        None
    };
    let mismatch = |have: usize| {
        malformed(format!(
            "tensor '{name}' of shape {dims:?} should hold {n} values, the file holds {have}"
        ))
    };
    let data = match raw {
        Some(raw) => {
            if raw.len() != nbytes {
                return Err(malformed(format!(
                    "tensor '{name}' of shape {dims:?} needs {nbytes} bytes of data, the file \
                     holds {}",
                    raw.len()
                )));
            }
            match t.data_type {
                data_type::FLOAT => Data::F32(
                    raw.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                ),
                data_type::DOUBLE => Data::F32(
                    raw.chunks_exact(8)
                        .map(|c| f64::from_le_bytes(le8(c)) as f32)
                        .collect(),
                ),
                _ => Data::I64(
                    raw.chunks_exact(8)
                        .map(|c| i64::from_le_bytes(le8(c)))
                        .collect(),
                ),
            }
        }
        None => match t.data_type {
            data_type::FLOAT if t.float_data.len() == n => Data::F32(t.float_data.clone()),
            data_type::FLOAT => return Err(mismatch(t.float_data.len())),
            data_type::DOUBLE if t.double_data.len() == n => {
                Data::F32(t.double_data.iter().map(|&x| x as f32).collect())
            }
            data_type::DOUBLE => return Err(mismatch(t.double_data.len())),
            _ if t.int64_data.len() == n => Data::I64(t.int64_data.clone()),
            _ => return Err(mismatch(t.int64_data.len())),
        },
    };
    Ok((dims, data))
}

/// An 8-byte chunk as an array (callers pass `chunks_exact(8)` items).
pub(super) fn le8(c: &[u8]) -> [u8; 8] {
    let mut a = [0; 8];
    a.copy_from_slice(c);
    a
}

/// Reads the `nbytes` bytes of an external tensor. The location must be a relative path that
/// stays inside `base_dir` (no absolute paths, no `..`, no symlink out): model files come from
/// untrusted sources and must not make us read arbitrary files.
pub(super) fn read_external(
    t: &TensorProto,
    base_dir: Option<&Path>,
    nbytes: usize,
) -> Result<Vec<u8>, ModelError> {
    let name = &t.name;
    let bad = |msg: String| malformed(format!("tensor '{name}': {msg}"));
    let base = base_dir.ok_or_else(|| {
        bad(
            "its data is stored in an external file, which needs the model's directory (load \
             the model from a file, or pass a base directory)"
                .into(),
        )
    })?;
    let mut location = None;
    let mut offset = 0u64;
    let mut length = None;
    for e in &t.external_data {
        let num = || {
            e.value.parse::<u64>().map_err(|_| {
                bad(format!(
                    "external data {} '{}' is not a number",
                    e.key, e.value
                ))
            })
        };
        match e.key.as_str() {
            "location" => location = Some(e.value.as_str()),
            "offset" => offset = num()?,
            "length" => length = Some(num()?),
            _ => {} // "checksum" and future keys do not affect where the data is.
        }
    }
    let location = location
        .filter(|l| !l.is_empty())
        .ok_or_else(|| bad("external data has no location".into()))?;
    let rel = Path::new(location);
    let escapes = rel.is_absolute()
        || location.starts_with(['/', '\\'])
        || location.split(['/', '\\']).any(|s| s == "..")
        || location.contains(':')
        || rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if escapes {
        return Err(bad(format!(
            "external data location '{location}' must be a relative path inside the model's \
             directory"
        )));
    }
    let path = base.join(rel);
    let io = |source| ModelError::Io {
        path: path.display().to_string(),
        source,
    };
    // Symlinks could still point outside the directory: compare the resolved paths.
    let real_base = base.canonicalize().map_err(|source| ModelError::Io {
        path: base.display().to_string(),
        source,
    })?;
    let real = path.canonicalize().map_err(io)?;
    if !real.starts_with(&real_base) {
        return Err(bad(format!(
            "external data location '{location}' resolves outside the model's directory"
        )));
    }
    let mut f = File::open(&real).map_err(io)?;
    let file_len = f.metadata().map_err(io)?.len();
    let available = file_len.checked_sub(offset).ok_or_else(|| {
        bad(format!(
            "external data offset {offset} is past the end of '{location}' ({file_len} bytes)"
        ))
    })?;
    let length = length.unwrap_or(available);
    if length > available {
        return Err(bad(format!(
            "external data offset {offset} + length {length} is past the end of '{location}' \
             ({file_len} bytes)"
        )));
    }
    if length != nbytes as u64 {
        return Err(bad(format!(
            "external data length {length} does not match the {nbytes} bytes its shape needs"
        )));
    }
    let mut buf = vec![0; nbytes];
    f.seek(SeekFrom::Start(offset)).map_err(io)?;
    f.read_exact(&mut buf).map_err(io)?;
    Ok(buf)
}

/// The opset version of the default ONNX domain, checked against the supported range.
pub(super) fn default_opset(mp: &ModelProto, graph_name: &str) -> Result<i64, ModelError> {
    let version = mp
        .opset_import
        .iter()
        .filter(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .max()
        .ok_or_else(|| malformed("no opset_import entry for the default ONNX domain"))?;
    if !(MIN_OPSET..=MAX_OPSET).contains(&version) {
        return Err(ModelError::Unsupported {
            op: "opset_import".into(),
            node: graph_name.into(),
            detail: format!(
                "opset {version} is outside the supported range {MIN_OPSET}..={MAX_OPSET}"
            ),
        });
    }
    Ok(version)
}

/// `[N, C, H, W]` with concrete C, H, W → (`[C, H, W]`, N), N = 1 when symbolic or unknown.
/// A fixed N > 1 is accepted: the IR is batch-agnostic, so such a model runs any batch (an
/// N-image input gives N outputs).
pub(super) fn input_shape(vi: &ValueInfoProto) -> Result<(Vec<usize>, usize), ModelError> {
    let name = &vi.name;
    let Some(type_proto::Value::TensorType(tt)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(malformed(format!("input '{name}' has no tensor type")));
    };
    if tt.elem_type != data_type::FLOAT {
        return Err(ModelError::Invalid(format!(
            "input '{name}' has element type {}, only float32 is supported",
            type_name(tt.elem_type)
        )));
    }
    let dims = tt.shape.as_ref().map(|s| &s.dim[..]).unwrap_or(&[]);
    if dims.len() != 4 {
        return Err(ModelError::Invalid(format!(
            "input '{name}' must be a 4-D NCHW image tensor, it has rank {}",
            dims.len()
        )));
    }
    let batch = match &dims[0].value {
        None | Some(dimension::Value::DimParam(_)) => 1,
        Some(dimension::Value::DimValue(n)) if (1..=MAX_BATCH).contains(n) => to_usize(*n)?,
        Some(dimension::Value::DimValue(n)) => {
            return Err(ModelError::Invalid(format!(
                "input '{name}' has batch size {n}; it must be symbolic or 1..={MAX_BATCH}"
            )))
        }
    };
    let mut chw = Vec::with_capacity(3);
    for d in &dims[1..] {
        match d.value {
            Some(dimension::Value::DimValue(v)) if v > 0 => chw.push(to_usize(v)?),
            _ => {
                return Err(ModelError::Invalid(format!(
                    "input '{name}' must have concrete positive C, H and W dimensions"
                )))
            }
        }
    }
    element_count(&chw, name)?;
    Ok((chw, batch))
}

/// Largest fixed batch size accepted in a model's input declaration.
const MAX_BATCH: i64 = 1 << 16;
