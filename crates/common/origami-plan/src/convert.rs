//! Conversions between the core's types and their wire forms (`origami_proto::wire`), used by
//! the enclave process and by the host's side of the link alike.

use origami_field::SealedPad;
use origami_model::Tensor;
use origami_proto::tensor::WireTensor;
use origami_proto::wire::WirePad;

use crate::EnclaveError;

pub fn pad_to_wire(p: SealedPad) -> WirePad {
    WirePad {
        pad_id: p.pad_id,
        layer: p.layer,
        len: p.len as u64,
        ciphertext: p.ciphertext,
    }
}

pub fn pad_from_wire(p: WirePad) -> SealedPad {
    SealedPad {
        pad_id: p.pad_id,
        layer: p.layer,
        len: p.len as usize,
        ciphertext: p.ciphertext,
    }
}

pub fn tensor_to_wire(t: Tensor) -> WireTensor {
    WireTensor {
        shape: t.shape.iter().map(|&d| d as u32).collect(),
        data: t.data,
    }
}

/// A wire tensor whose size matches its shape (the core checks the shape against the plan).
pub fn tensor_from_wire(t: WireTensor) -> Result<Tensor, EnclaveError> {
    let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
    Tensor::new(shape, t.data).map_err(|e| EnclaveError::BadRequest(e.to_string()))
}
