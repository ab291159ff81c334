//! Reading and writing `.npy` files (NumPy format 1.0–3.0), float32 C-order, with bounded and
//! validated headers: a malformed file gives an error, never a panic or a huge allocation.

use std::path::Path;

use crate::{ModelError, Tensor};

/// Largest tensor accepted from a file: 2^30 elements (4 GiB of f32).
const MAX_ELEMENTS: usize = 1 << 30;
const MAGIC: &[u8] = b"\x93NUMPY";

fn bad(msg: impl Into<String>) -> ModelError {
    ModelError::Input(format!("not a usable .npy file: {}", msg.into()))
}

/// Parses `.npy` bytes holding little-endian float32 (or float64, converted) in C order.
pub fn parse_npy(bytes: &[u8]) -> Result<Tensor, ModelError> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad("missing the \\x93NUMPY magic"));
    }
    let major = bytes[6];
    let (hlen, hstart) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(bad("truncated header"));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(bad(format!("unsupported format version {v}"))),
    };
    if hlen > 1 << 16 || bytes.len() < hstart + hlen {
        return Err(bad("truncated or oversized header"));
    }
    let header = std::str::from_utf8(&bytes[hstart..hstart + hlen])
        .map_err(|_| bad("header is not text"))?;
    let field = |key: &str| -> Result<&str, ModelError> {
        let pos = header
            .find(&format!("'{key}'"))
            .ok_or_else(|| bad(format!("header has no '{key}'")))?;
        let rest = &header[pos + key.len() + 2..];
        let colon = rest.find(':').ok_or_else(|| bad("malformed header"))?;
        Ok(rest[colon + 1..].trim_start())
    };
    let descr = field("descr")?;
    let elem = if descr.starts_with("'<f4'") {
        4
    } else if descr.starts_with("'<f8'") {
        8
    } else {
        return Err(bad(format!(
            "dtype {} is not supported (use little-endian float32)",
            descr.split(',').next().unwrap_or("?")
        )));
    };
    if !field("fortran_order")?.starts_with("False") {
        return Err(bad("Fortran-order arrays are not supported"));
    }
    let shape_s = field("shape")?;
    let close = shape_s.find(')').ok_or_else(|| bad("malformed shape"))?;
    let inner = shape_s
        .get(1..close)
        .ok_or_else(|| bad("malformed shape"))?;
    let mut shape = Vec::new();
    for part in inner.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        shape.push(
            part.parse::<usize>()
                .map_err(|_| bad(format!("bad dimension '{part}'")))?,
        );
    }
    let mut n: usize = 1;
    for &d in &shape {
        n = n
            .checked_mul(d)
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| bad("array too large"))?;
    }
    let data = &bytes[hstart + hlen..];
    if data.len() != n * elem {
        return Err(bad(format!(
            "expected {} data bytes for shape {shape:?}, found {}",
            n * elem,
            data.len()
        )));
    }
    let values: Vec<f32> = if elem == 4 {
        data.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else {
        data.chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect()
    };
    Tensor::new(shape, values)
}

/// Reads a `.npy` file.
pub fn read_npy(path: &Path) -> Result<Tensor, ModelError> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_npy(&bytes)
}

/// Encodes a tensor as `.npy` (format 1.0, `<f4`, C order).
pub fn to_npy_bytes(t: &Tensor) -> Vec<u8> {
    let dims: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so that the data starts on a 64-byte boundary, header ends with '\n'.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + t.data.len() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in &t.data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Writes a tensor as `.npy`, atomically (`crate::atomic`: never half-written).
pub fn write_npy(path: &Path, t: &Tensor) -> Result<(), ModelError> {
    let io = |p: &Path, source| ModelError::Io {
        path: p.display().to_string(),
        source,
    };
    crate::atomic::write_with(
        path,
        |tmp| std::fs::write(tmp, to_npy_bytes(t)).map_err(|e| io(tmp, e)),
        io,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects_garbage() {
        let t = Tensor::new(vec![1, 2, 3], vec![1.0, -2.5, 3.0, 0.0, 7.25, -1e-3]).unwrap();
        let b = to_npy_bytes(&t);
        assert_eq!((10 + u16::from_le_bytes([b[8], b[9]]) as usize) % 64, 0);
        assert_eq!(parse_npy(&b).unwrap(), t);
        for cut in 0..b.len() {
            assert!(parse_npy(&b[..cut]).is_err(), "truncated at {cut}");
        }
        let huge = b"\x93NUMPY\x01\x00\x46\x00{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999), }\n";
        assert!(parse_npy(huge).is_err());
        let int = String::from_utf8_lossy(&b).replace("<f4", "<i4");
        assert!(parse_npy(int.as_bytes()).is_err());
    }
}
