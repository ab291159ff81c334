//! What crosses a trust boundary: length-prefixed frames with bounded decoding (`frame`), the
//! client's session crypto (`session`: X25519 + HKDF-SHA256 + ChaCha20-Poly1305, one fresh key
//! per request, replays rejected) and attestation evidence (`evidence`: a measurement bound to
//! the enclave's session key; the `simulated` platform signs with a local key and says so;
//! `sgx` verifies Gramine-SGX DCAP quotes) and where the layers run (`Placement`, which the
//! measurement carries).

pub mod evidence;
pub mod frame;
pub mod link;
pub mod placement;
pub mod rejection;
pub mod session;
pub mod sgx;
pub mod snp;
pub mod tdx;
pub mod tensor;
pub mod tsm;
pub mod wire;

pub use placement::{Placement, PlacementError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("truncated frame")]
    Truncated,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("decryption failed: the message was tampered with or is for another session")]
    Decrypt,
    #[error("replayed request rejected")]
    Replay,
    /// The request names a session key this enclave does not hold (retired by rotation, or
    /// never its own): fetch the evidence again.
    #[error("the request is sealed to a session key this enclave no longer holds: re-attest")]
    UnknownKey,
    /// The session key has served its maximum number of requests: fetch the evidence again.
    #[error("this enclave session key has served its maximum number of requests: re-attest")]
    KeyExhausted,
    /// The enclave process closed a TCP link after its first frame: the link token is wrong.
    #[error("the enclave refused the link token (give both sides the same token file)")]
    TokenRefused,
    #[error("evidence rejected: {0}")]
    Evidence(#[from] rejection::Rejection),
    /// The enclave's own attestation interface failed (e.g. no Gramine `/dev/attestation`).
    #[error("attestation: {0}")]
    Attestation(String),
}

/// Decodes a postcard message that must use every byte of `bytes` and be in canonical form
/// (postcard also accepts overlong varints; here a message has exactly one accepted encoding —
/// found by the `wire` fuzz target).
pub fn decode<T: serde::de::DeserializeOwned + serde::Serialize>(
    bytes: &[u8],
) -> Result<T, ProtoError> {
    let (v, rest) =
        postcard::take_from_bytes(bytes).map_err(|e| ProtoError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(ProtoError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    // The re-encoding may hold a client's plaintext (a decoded request): wiped on drop.
    if *zeroize::Zeroizing::new(encode(&v)) != bytes {
        return Err(ProtoError::Malformed("non-canonical encoding".into()));
    }
    Ok(v)
}

pub fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).expect("serializing to memory does not fail")
}

#[cfg(test)]
mod tests {
    /// Overlong varints decode in postcard; they are rejected here.
    #[test]
    fn non_canonical_encodings_are_rejected() {
        let m = crate::wire::ToEnclave::Precompute { count: 124 };
        let b = crate::encode(&m);
        assert_eq!(b, [1, 124]);
        assert_eq!(crate::decode::<crate::wire::ToEnclave>(&b).unwrap(), m);
        let e = crate::decode::<crate::wire::ToEnclave>(&[1, 0xfc, 0x00]).unwrap_err();
        assert!(e.to_string().contains("non-canonical"), "{e}");
    }
}
