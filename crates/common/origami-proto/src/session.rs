//! The client's session with the enclave. Every request carries a fresh client X25519 key; both
//! sides derive two keys with HKDF-SHA256 from the shared secret, salted with the digest of the
//! evidence the client verified (so a request is bound to that measurement and enclave
//! instance): one for the request, one for the answer. Each key seals exactly one message, so
//! the ChaCha20-Poly1305 nonce is fixed; the associated data names the direction and binds the
//! evidence digest (and, for the answer, the client key). The enclave remembers every client key
//! it has accepted and rejects a second request with the same one (a replay); it accepts at most
//! `max_requests` per session key (the enclave rotates to a fresh key before that: see
//! `origami_enclave::service`).

use std::collections::HashSet;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand_core::{OsRng, TryRngCore};
use serde::{Deserialize, Serialize};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

use crate::ProtoError;

const INFO: &[u8] = b"origami/v1/session";
const AAD_REQUEST: &[u8] = b"origami/v1/request";
const AAD_ANSWER: &[u8] = b"origami/v1/answer";
/// Each derived key seals one message, so one fixed nonce is never reused under a key.
const NONCE: [u8; 12] = [0; 12];

/// A request as it travels through the untrusted host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedRequest {
    /// The enclave session key the client sealed to (the one in the evidence it verified): it
    /// picks the session that opens the request while the enclave rotates its keys.
    pub enclave_key: [u8; 32],
    pub client_key: [u8; 32],
    pub ciphertext: Vec<u8>,
}

/// An answer as it travels back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedAnswer {
    pub ciphertext: Vec<u8>,
}

/// What a sealed answer holds (postcard, then sealed): the model's output, or why the request
/// failed after the enclave opened it. Only the client can open it, so the cause never reaches
/// the host; every cause is a unit variant, so a failed answer has the same size whatever the
/// cause.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Answer {
    Output(crate::tensor::WireTensor),
    Failed(Failure),
}

/// Why a request failed inside the enclave (told to the client only, sealed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Failure {
    /// The request's plaintext is not a tensor of the model's input shape.
    BadInput,
    /// A fixed-point value left the range the field holds (an input unlike the calibration
    /// data), or the accelerator made it so: the answer would have been wrong.
    Saturation,
    /// The accelerator's reply failed a check (length, range, or the Freivalds integrity check).
    AcceleratorMisbehaved,
    /// The host supplied a sealed pad that does not authenticate.
    PadRejected,
    /// The host drove the request out of order, or returned a tail output of the wrong shape.
    HostMisbehaved,
    /// A failure inside the enclave.
    Internal,
}

impl Failure {
    /// A stable name for the cause (`"bad_input"`, `"saturation"`, …), for bindings that
    /// match on it.
    pub fn code(self) -> &'static str {
        match self {
            Failure::BadInput => "bad_input",
            Failure::Saturation => "saturation",
            Failure::AcceleratorMisbehaved => "accelerator_misbehaved",
            Failure::PadRejected => "pad_rejected",
            Failure::HostMisbehaved => "host_misbehaved",
            Failure::Internal => "internal",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Failure::BadInput => "the input is not a tensor of the model's input shape",
            Failure::Saturation => "a fixed-point value saturated (an input unlike the calibration data, or a lying accelerator)",
            Failure::AcceleratorMisbehaved => "the accelerator's result failed the enclave's checks",
            Failure::PadRejected => "the host supplied a sealed pad that does not authenticate",
            Failure::HostMisbehaved => "the host drove the request out of protocol",
            Failure::Internal => "an internal error of the enclave",
        })
    }
}

fn random32() -> Result<Zeroizing<[u8; 32]>, ProtoError> {
    let mut b = Zeroizing::new([0u8; 32]);
    OsRng
        .try_fill_bytes(&mut *b)
        .map_err(|e| ProtoError::Io(std::io::Error::other(e.to_string())))?;
    Ok(b)
}

/// An HKDF output length.
struct OkmLen(usize);

impl aws_lc_rs::hkdf::KeyType for OkmLen {
    fn len(&self) -> usize {
        self.0
    }
}

struct Keys {
    request: Zeroizing<[u8; 32]>,
    answer: Zeroizing<[u8; 32]>,
}

fn derive(
    secret: &StaticSecret,
    peer: &[u8; 32],
    binding: &[u8; 32],
    client: &[u8; 32],
    enclave: &[u8; 32],
) -> Result<Keys, ProtoError> {
    let shared = secret.diffie_hellman(&PublicKey::from(*peer));
    if !shared.was_contributory() {
        return Err(ProtoError::Malformed("low-order X25519 key".into()));
    }
    // AWS-LC's HKDF-SHA256 (RFC 5869): its PRK lives only inside the one call and is
    // cleansed there; the input secret is copied into a buffer wiped on drop.
    let prk = aws_lc_rs::hkdf::Salt::new(aws_lc_rs::hkdf::HKDF_SHA256, binding)
        .extract(shared.as_bytes());
    let info: [&[u8]; 3] = [INFO, client, enclave];
    let mut okm = Zeroizing::new([0u8; 64]);
    prk.expand(&info, OkmLen(64))
        .and_then(|o| o.fill(&mut *okm))
        .map_err(|_| ProtoError::Malformed("HKDF expansion failed".into()))?;
    let mut keys = Keys {
        request: Zeroizing::new([0; 32]),
        answer: Zeroizing::new([0; 32]),
    };
    keys.request.copy_from_slice(&okm[..32]);
    keys.answer.copy_from_slice(&okm[32..]);
    Ok(keys)
}

fn aad(label: &[u8], binding: &[u8; 32], client: &[u8; 32]) -> Vec<u8> {
    [label, binding.as_slice(), client.as_slice()].concat()
}

/// The client's half of one request: keeps the answer key until the answer arrives.
pub struct PendingAnswer {
    answer: Zeroizing<[u8; 32]>,
    binding: [u8; 32],
    client_key: [u8; 32],
}

/// Seals `plaintext` for the enclave whose verified evidence has `enclave_key` and `binding`
/// (`Evidence::digest`).
pub fn seal_request(
    enclave_key: &[u8; 32],
    binding: &[u8; 32],
    plaintext: &[u8],
) -> Result<(SealedRequest, PendingAnswer), ProtoError> {
    let secret = StaticSecret::from(*random32()?);
    let client_key = PublicKey::from(&secret).to_bytes();
    let keys = derive(&secret, enclave_key, binding, &client_key, enclave_key)?;
    let ciphertext = ChaCha20Poly1305::new(Key::from_slice(&*keys.request))
        .encrypt(
            Nonce::from_slice(&NONCE),
            Payload {
                msg: plaintext,
                aad: &aad(AAD_REQUEST, binding, &client_key),
            },
        )
        .map_err(|_| ProtoError::Decrypt)?;
    Ok((
        SealedRequest {
            enclave_key: *enclave_key,
            client_key,
            ciphertext,
        },
        PendingAnswer {
            answer: keys.answer,
            binding: *binding,
            client_key,
        },
    ))
}

impl PendingAnswer {
    /// Opens the enclave's answer to this request.
    pub fn open(self, answer: &SealedAnswer) -> Result<Zeroizing<Vec<u8>>, ProtoError> {
        ChaCha20Poly1305::new(Key::from_slice(&*self.answer))
            .decrypt(
                Nonce::from_slice(&NONCE),
                Payload {
                    msg: &answer.ciphertext,
                    aad: &aad(AAD_ANSWER, &self.binding, &self.client_key),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| ProtoError::Decrypt)
    }

    /// Opens the answer and decodes it: the output, or `Err(Ok(failure))` when the request
    /// failed inside the enclave (`Err(Err(_))`: the answer is not authentic or malformed).
    pub fn open_answer(
        self,
        answer: &SealedAnswer,
    ) -> Result<crate::tensor::WireTensor, Result<Failure, ProtoError>> {
        let plain = self.open(answer).map_err(Err)?;
        match crate::decode::<Answer>(&plain).map_err(Err)? {
            Answer::Output(t) => Ok(t),
            Answer::Failed(f) => Err(Ok(f)),
        }
    }
}

/// The enclave's side: its session key pair and the client keys already accepted.
pub struct EnclaveSession {
    secret: StaticSecret,
    public: [u8; 32],
    binding: [u8; 32],
    seen: HashSet<[u8; 32]>,
    max_requests: usize,
}

/// Seals one answer to the client of one request.
pub struct AnswerSealer {
    answer: Zeroizing<[u8; 32]>,
    binding: [u8; 32],
    client_key: [u8; 32],
}

impl EnclaveSession {
    /// A fresh key pair from the OS. `binding` is set once the evidence exists.
    pub fn new(max_requests: usize) -> Result<Self, ProtoError> {
        let secret = StaticSecret::from(*random32()?);
        let public = PublicKey::from(&secret).to_bytes();
        Ok(Self {
            secret,
            public,
            binding: [0; 32],
            seen: HashSet::new(),
            max_requests,
        })
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// Binds the session to the digest of the evidence clients verify.
    pub fn bind(&mut self, evidence_digest: [u8; 32]) {
        self.binding = evidence_digest;
    }

    /// Requests accepted so far.
    pub fn accepted(&self) -> usize {
        self.seen.len()
    }

    /// Opens a request; rejects replays, tampering and requests for another session.
    pub fn open(
        &mut self,
        req: &SealedRequest,
    ) -> Result<(Zeroizing<Vec<u8>>, AnswerSealer), ProtoError> {
        if req.enclave_key != self.public {
            return Err(ProtoError::UnknownKey);
        }
        if self.seen.contains(&req.client_key) {
            return Err(ProtoError::Replay);
        }
        if self.seen.len() >= self.max_requests {
            return Err(ProtoError::KeyExhausted);
        }
        let keys = derive(
            &self.secret,
            &req.client_key,
            &self.binding,
            &req.client_key,
            &self.public,
        )?;
        let plain = ChaCha20Poly1305::new(Key::from_slice(&*keys.request))
            .decrypt(
                Nonce::from_slice(&NONCE),
                Payload {
                    msg: &req.ciphertext,
                    aad: &aad(AAD_REQUEST, &self.binding, &req.client_key),
                },
            )
            .map_err(|_| ProtoError::Decrypt)?;
        // Only an authentic request is remembered: a forged one cannot block a real client key.
        self.seen.insert(req.client_key);
        Ok((
            Zeroizing::new(plain),
            AnswerSealer {
                answer: keys.answer,
                binding: self.binding,
                client_key: req.client_key,
            },
        ))
    }
}

impl AnswerSealer {
    pub fn seal(self, plaintext: &[u8]) -> SealedAnswer {
        let ciphertext = ChaCha20Poly1305::new(Key::from_slice(&*self.answer))
            .encrypt(
                Nonce::from_slice(&NONCE),
                Payload {
                    msg: plaintext,
                    aad: &aad(AAD_ANSWER, &self.binding, &self.client_key),
                },
            )
            .expect("ChaCha20-Poly1305 encryption of an in-memory message does not fail");
        SealedAnswer { ciphertext }
    }
}

// Keys never reach logs.
impl std::fmt::Debug for AnswerSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnswerSealer { .. }")
    }
}

impl std::fmt::Debug for PendingAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingAnswer { .. }")
    }
}

impl Drop for EnclaveSession {
    fn drop(&mut self) {
        self.binding.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> EnclaveSession {
        let mut s = EnclaveSession::new(4).unwrap();
        s.bind([7; 32]);
        s
    }

    /// RFC 5869 test case 1 (HKDF-SHA256), through the same AWS-LC calls `derive` makes.
    #[test]
    fn hkdf_matches_rfc_5869() {
        let h = |s: &str| -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        let ikm = [0x0bu8; 22];
        let salt = h("000102030405060708090a0b0c");
        let info = h("f0f1f2f3f4f5f6f7f8f9");
        let prk = aws_lc_rs::hkdf::Salt::new(aws_lc_rs::hkdf::HKDF_SHA256, &salt).extract(&ikm);
        let mut okm = [0u8; 42];
        prk.expand(&[&info[..5], &info[5..]], OkmLen(42))
            .unwrap()
            .fill(&mut okm)
            .unwrap();
        assert_eq!(
            okm.to_vec(),
            h("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")
        );
    }

    #[test]
    fn round_trip() {
        let mut s = session();
        let (req, pending) = seal_request(&s.public_key(), &[7; 32], b"hello enclave").unwrap();
        assert!(!req.ciphertext.windows(5).any(|w| w == b"hello"));
        let (plain, sealer) = s.open(&req).unwrap();
        assert_eq!(&plain[..], b"hello enclave");
        let ans = sealer.seal(b"the answer");
        assert_eq!(&pending.open(&ans).unwrap()[..], b"the answer");
    }

    #[test]
    fn replay_tampering_and_wrong_binding_are_rejected() {
        let mut s = session();
        let (req, _) = seal_request(&s.public_key(), &[7; 32], b"x").unwrap();
        s.open(&req).unwrap();
        assert!(matches!(s.open(&req), Err(ProtoError::Replay)));
        // Every single-bit flip of the ciphertext or the client key is rejected.
        let (req, _) = seal_request(&s.public_key(), &[7; 32], b"payload").unwrap();
        for i in 0..req.ciphertext.len() * 8 {
            let mut t = req.clone();
            t.ciphertext[i / 8] ^= 1 << (i % 8);
            assert!(matches!(s.open(&t), Err(ProtoError::Decrypt)), "bit {i}");
        }
        let mut t = req.clone();
        t.client_key[3] ^= 0x10;
        assert!(s.open(&t).is_err());
        // The tampered copies did not burn the real request.
        s.open(&req).unwrap();
        // A request bound to other evidence does not open.
        let (other, _) = seal_request(&s.public_key(), &[8; 32], b"x").unwrap();
        assert!(matches!(s.open(&other), Err(ProtoError::Decrypt)));
    }

    #[test]
    fn answers_are_bound_to_their_request() {
        let mut s = session();
        let (r1, p1) = seal_request(&s.public_key(), &[7; 32], b"a").unwrap();
        let (r2, p2) = seal_request(&s.public_key(), &[7; 32], b"b").unwrap();
        let (_, s1) = s.open(&r1).unwrap();
        let (_, s2) = s.open(&r2).unwrap();
        let a1 = s1.seal(b"answer 1");
        let a2 = s2.seal(b"answer 2");
        assert!(p1.open(&a2).is_err());
        assert_eq!(&p2.open(&a2).unwrap()[..], b"answer 2");
        let _ = a1;
    }

    #[test]
    fn a_session_key_serves_a_bounded_number_of_requests() {
        let mut s = session();
        for _ in 0..4 {
            let (r, _) = seal_request(&s.public_key(), &[7; 32], b"x").unwrap();
            s.open(&r).unwrap();
        }
        let (r, _) = seal_request(&s.public_key(), &[7; 32], b"x").unwrap();
        assert!(matches!(s.open(&r), Err(ProtoError::KeyExhausted)));
    }

    #[test]
    fn a_request_for_another_session_key_is_not_opened() {
        let mut s = session();
        let other = session();
        let (r, _) = seal_request(&other.public_key(), &[7; 32], b"x").unwrap();
        assert!(matches!(s.open(&r), Err(ProtoError::UnknownKey)));
        // Rerouted by the host to this session: the key field no longer matches the DH.
        let mut t = r.clone();
        t.enclave_key = s.public_key();
        assert!(matches!(s.open(&t), Err(ProtoError::Decrypt)));
        assert_eq!(s.accepted(), 0);
    }
}
