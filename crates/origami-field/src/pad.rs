//! One-time pads: the mask stream r (uniform over Z_p) and sealed unblinding factors u = W·r.
//!
//! - `PadKey` is 256 bits from the operating system, drawn inside the enclave at start, never
//!   persisted and zeroized on drop. `r` for (pad id, layer) is regenerated from it on demand, so
//!   r itself is never stored.
//! - `MaskRng` is ChaCha20 keyed by `PadKey`, with the 64-bit stream number
//!   `pad_id << 16 | layer`: every (pad, layer) gets its own keystream, never shared.
//! - Values are drawn by rejection sampling (24 random bits, rejected when ≥ p), so r is exactly
//!   uniform over all of Z_p — not the ≈80 % range of Slalom's code.
//! - `Sealer` encrypts u with ChaCha20-Poly1305 under a second OS key. The nonce is
//!   `pad_id ‖ layer`, unique because the enclave seals each (pad, layer) exactly once per key;
//!   the associated data binds the model hash, pad id, layer and length, so a sealed u cannot be
//!   moved to another pad, layer, model or enclave instance.

use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng, TryRngCore};
use zeroize::{Zeroize, Zeroizing};

use crate::{FieldError, P};

/// Largest pad id: ids share a 64-bit ChaCha stream number with the 16-bit layer index.
pub const MAX_PAD_ID: u64 = (1 << 48) - 1;

fn os_key() -> Result<[u8; 32], FieldError> {
    let mut key = [0u8; 32];
    rand_core::OsRng
        .try_fill_bytes(&mut key)
        .map_err(|e| FieldError::OsRandom(e.to_string()))?;
    Ok(key)
}

/// A 256-bit key for the mask stream. Secret: zeroized on drop, never printed.
pub struct PadKey([u8; 32]);

impl PadKey {
    /// A fresh key from the operating system. The only constructor production code uses.
    pub fn from_os() -> Result<Self, FieldError> {
        Ok(Self(os_key()?))
    }

    /// A key from a fixed seed. NO SECURITY: for deterministic tests only.
    pub fn insecure_from_seed_for_tests(seed: [u8; 32]) -> Self {
        Self(seed)
    }

    /// The mask stream for one (pad, layer).
    pub fn mask_stream(&self, pad_id: u64, layer: u16) -> MaskRng {
        assert!(pad_id <= MAX_PAD_ID, "pad id {pad_id} out of range"); // ids are assigned by the enclave, below 2^48
        let mut rng = ChaCha20Rng::from_seed(self.0);
        rng.set_stream(pad_id << 16 | layer as u64);
        MaskRng(rng)
    }
}

impl Drop for PadKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for PadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PadKey(<secret>)")
    }
}

/// A CSPRNG stream of field elements uniform over Z_p.
pub struct MaskRng(ChaCha20Rng);

impl MaskRng {
    /// One element uniform over [0, p), by rejection sampling of 24-bit words.
    #[inline]
    pub fn next_element(&mut self) -> u32 {
        loop {
            let v = self.0.next_u32() & 0x00FF_FFFF;
            if v < P {
                return v;
            }
        }
    }

    /// Fills `out` with independent uniform elements of Z_p.
    pub fn fill(&mut self, out: &mut [u32]) {
        for o in out {
            *o = self.next_element();
        }
    }
}

/// What a sealed pad is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PadBinding {
    pub model_hash: [u8; 32],
    pub pad_id: u64,
    pub layer: u16,
}

impl PadBinding {
    fn nonce(&self) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..8].copy_from_slice(&self.pad_id.to_le_bytes());
        n[8..10].copy_from_slice(&self.layer.to_le_bytes());
        n
    }

    fn aad(&self, len: usize) -> Vec<u8> {
        let mut a = Vec::with_capacity(64);
        a.extend_from_slice(b"origami-pad-v1");
        a.extend_from_slice(&self.model_hash);
        a.extend_from_slice(&self.pad_id.to_le_bytes());
        a.extend_from_slice(&self.layer.to_le_bytes());
        a.extend_from_slice(&(len as u64).to_le_bytes());
        a
    }
}

/// An unblinding factor u = W·r mod p, encrypted and authenticated; safe to keep outside the
/// enclave (host memory or files).
#[derive(Clone, Debug)]
pub struct SealedPad {
    pub pad_id: u64,
    pub layer: u16,
    /// Number of field elements inside.
    pub len: usize,
    pub ciphertext: Vec<u8>,
}

/// Seals and opens unblinding factors under a per-instance key.
pub struct Sealer {
    aead: ChaCha20Poly1305,
    model_hash: [u8; 32],
}

impl Sealer {
    /// A sealer with a fresh OS key, bound to one model.
    pub fn from_os(model_hash: [u8; 32]) -> Result<Self, FieldError> {
        let key = Zeroizing::new(os_key()?);
        Ok(Self {
            aead: ChaCha20Poly1305::new(Key::from_slice(&key[..])),
            model_hash,
        })
    }

    /// NO SECURITY: a sealer with a fixed key, for deterministic tests only.
    pub fn insecure_from_seed_for_tests(seed: [u8; 32], model_hash: [u8; 32]) -> Self {
        Self {
            aead: ChaCha20Poly1305::new(Key::from_slice(&seed)),
            model_hash,
        }
    }

    /// Encrypts u for (pad, layer). Each (pad, layer) must be sealed at most once per sealer:
    /// the enclave guarantees it by assigning pad ids from a counter.
    pub fn seal(&self, pad_id: u64, layer: u16, u: &[u32]) -> SealedPad {
        let b = PadBinding {
            model_hash: self.model_hash,
            pad_id,
            layer,
        };
        let mut plain = Zeroizing::new(Vec::with_capacity(u.len() * 4));
        for v in u {
            plain.extend_from_slice(&v.to_le_bytes());
        }
        let aad = b.aad(u.len());
        // Encryption with a valid key and nonce cannot fail for in-memory buffers.
        let ciphertext = self
            .aead
            .encrypt(
                Nonce::from_slice(&b.nonce()),
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        SealedPad {
            pad_id,
            layer,
            len: u.len(),
            ciphertext,
        }
    }

    /// Decrypts and authenticates u for exactly (pad, layer, len); anything else is rejected.
    pub fn open(
        &self,
        pad_id: u64,
        layer: u16,
        len: usize,
        sealed: &SealedPad,
    ) -> Result<Zeroizing<Vec<u32>>, FieldError> {
        let plain = self.open_in_place(pad_id, layer, len, sealed.clone())?;
        Ok(Zeroizing::new(words(&plain).collect()))
    }

    /// `open`, decrypting in the sealed pad's own buffer (no copy): returns the plaintext bytes,
    /// `len` little-endian u32 words, zeroized on drop. Read them with `words`.
    pub fn open_in_place(
        &self,
        pad_id: u64,
        layer: u16,
        len: usize,
        sealed: SealedPad,
    ) -> Result<Zeroizing<Vec<u8>>, FieldError> {
        let b = PadBinding {
            model_hash: self.model_hash,
            pad_id,
            layer,
        };
        let tampered = FieldError::SealTampered { pad_id, layer };
        let mut buf = Zeroizing::new(sealed.ciphertext);
        if buf.len() != len * 4 + 16 {
            return Err(tampered);
        }
        let aad = b.aad(len);
        let (body, tag) = buf.split_at_mut(len * 4);
        let tag = chacha20poly1305::Tag::clone_from_slice(tag);
        self.aead
            .decrypt_in_place_detached(Nonce::from_slice(&b.nonce()), &aad, body, &tag)
            .map_err(|_| tampered)?;
        buf.truncate(len * 4);
        Ok(buf)
    }
}

/// The little-endian u32 words of a byte buffer.
pub fn words(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_differ_per_pad_and_layer_and_are_reproducible() {
        let k = PadKey::insecure_from_seed_for_tests([7; 32]);
        let mut a = vec![0u32; 64];
        let mut b = vec![0u32; 64];
        let mut c = vec![0u32; 64];
        k.mask_stream(1, 0).fill(&mut a);
        k.mask_stream(1, 1).fill(&mut b);
        k.mask_stream(1, 0).fill(&mut c);
        assert_ne!(a, b);
        assert_eq!(a, c);
        assert!(a.iter().all(|&v| v < P));
    }

    #[test]
    fn os_keys_differ() {
        let a = PadKey::from_os().unwrap();
        let b = PadKey::from_os().unwrap();
        let mut x = vec![0u32; 8];
        let mut y = vec![0u32; 8];
        a.mask_stream(0, 0).fill(&mut x);
        b.mask_stream(0, 0).fill(&mut y);
        assert_ne!(x, y);
        assert_eq!(format!("{a:?}"), "PadKey(<secret>)");
    }

    /// Chi-square test of r over 64 equal bins of Z_p (plus a check of the top bin edge, where a
    /// biased reduction would show). 63 degrees of freedom: the 99.99th percentile is ≈ 112.
    #[test]
    fn mask_is_uniform_over_the_field() {
        let k = PadKey::from_os().unwrap();
        let mut rng = k.mask_stream(3, 2);
        const BINS: usize = 64;
        const N: usize = 640_000;
        let mut counts = [0u64; BINS];
        let mut top = 0u64; // values in the last 1/64 of the field, compared with the first
        let mut bottom = 0u64;
        for _ in 0..N {
            let v = rng.next_element();
            assert!(v < P);
            let bin = (v as u64 * BINS as u64 / P as u64) as usize;
            counts[bin] += 1;
            if v >= P - P / 1024 {
                top += 1;
            }
            if v < P / 1024 {
                bottom += 1;
            }
        }
        let expected = N as f64 / BINS as f64;
        let chi2: f64 = counts
            .iter()
            .map(|&c| (c as f64 - expected).powi(2) / expected)
            .sum();
        assert!(chi2 < 112.0, "chi-square {chi2} over {BINS} bins");
        // Each tail holds ≈ 625 draws; a range reduced to 80 % of the field would hold 0 at the top.
        assert!(top > 450 && bottom > 450, "top {top} bottom {bottom}");
    }

    #[test]
    fn seal_round_trip_and_tamper_detection() {
        let s = Sealer::insecure_from_seed_for_tests([1; 32], [9; 32]);
        let u: Vec<u32> = (0..100).map(|i| (i * 7919) % P).collect();
        let sealed = s.seal(5, 3, &u);
        assert_eq!(&s.open(5, 3, 100, &sealed).unwrap()[..], &u[..]);
        let inplace = s.open_in_place(5, 3, 100, sealed.clone()).unwrap();
        assert_eq!(words(&inplace).collect::<Vec<_>>(), u);
        let mut t = sealed.clone();
        t.ciphertext[399] ^= 0x80;
        assert!(s.open_in_place(5, 3, 100, t).is_err());
        assert!(s.open_in_place(5, 4, 100, sealed.clone()).is_err());
        // Flipped bit.
        let mut t = sealed.clone();
        t.ciphertext[10] ^= 1;
        assert!(matches!(
            s.open(5, 3, 100, &t),
            Err(FieldError::SealTampered { .. })
        ));
        // Wrong pad id, wrong layer, wrong length, truncated.
        assert!(s.open(6, 3, 100, &sealed).is_err());
        assert!(s.open(5, 4, 100, &sealed).is_err());
        assert!(s.open(5, 3, 99, &sealed).is_err());
        let mut short = sealed.clone();
        short.ciphertext.truncate(20);
        assert!(s.open(5, 3, 100, &short).is_err());
        // Another model, another instance key.
        let other_model = Sealer::insecure_from_seed_for_tests([1; 32], [8; 32]);
        assert!(other_model.open(5, 3, 100, &sealed).is_err());
        let other_instance = Sealer::from_os([9; 32]).unwrap();
        assert!(other_instance.open(5, 3, 100, &sealed).is_err());
    }
}
