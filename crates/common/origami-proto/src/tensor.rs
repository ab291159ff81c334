//! Tensors on the wire: a shape and f32 values, decoded only within stated bounds.

use serde::{Deserialize, Serialize};

use crate::ProtoError;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireTensor {
    pub shape: Vec<u32>,
    pub data: Vec<f32>,
}

impl WireTensor {
    /// Decodes a tensor that must have exactly `expect` as its shape (every value finite).
    pub fn decode_exact(bytes: &[u8], expect: &[usize]) -> Result<Self, ProtoError> {
        let mut t: WireTensor = crate::decode(bytes)?;
        match t.check(expect) {
            Ok(()) => Ok(t),
            Err(e) => {
                // The values may be a client's input: a refused copy is wiped, not dropped.
                zeroize::Zeroize::zeroize(&mut t.data);
                Err(e)
            }
        }
    }

    fn check(&self, expect: &[usize]) -> Result<(), ProtoError> {
        let t = self;
        let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
        if shape != expect {
            return Err(ProtoError::Malformed(format!(
                "tensor of shape {shape:?}, expected {expect:?}"
            )));
        }
        if t.data.len() != expect.iter().product::<usize>() {
            return Err(ProtoError::Malformed(format!(
                "tensor has {} values for shape {expect:?}",
                t.data.len()
            )));
        }
        if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
            return Err(ProtoError::Malformed(format!("value {i} is not finite")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_and_values_are_checked() {
        let t = WireTensor {
            shape: vec![1, 2, 2],
            data: vec![0.5; 4],
        };
        let b = crate::encode(&t);
        assert_eq!(WireTensor::decode_exact(&b, &[1, 2, 2]).unwrap(), t);
        assert!(WireTensor::decode_exact(&b, &[1, 4]).is_err());
        let short = crate::encode(&WireTensor {
            shape: vec![1, 2, 2],
            data: vec![0.5; 3],
        });
        assert!(WireTensor::decode_exact(&short, &[1, 2, 2]).is_err());
        let nan = crate::encode(&WireTensor {
            shape: vec![1, 2, 2],
            data: vec![0.5, f32::NAN, 0.0, 0.0],
        });
        assert!(WireTensor::decode_exact(&nan, &[1, 2, 2]).is_err());
        let mut trailing = b.clone();
        trailing.push(0);
        assert!(WireTensor::decode_exact(&trailing, &[1, 2, 2]).is_err());
        // A length prefix claiming 2^32 values in a few bytes fails cleanly.
        assert!(
            WireTensor::decode_exact(&[3, 1, 2, 2, 0xff, 0xff, 0xff, 0xff, 0x0f], &[1, 2, 2])
                .is_err()
        );
    }
}
