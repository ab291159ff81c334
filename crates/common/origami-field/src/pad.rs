//! One-time pads: the mask stream r (uniform over Z_p) and sealed unblinding factors u = W·r.
//!
//! - `PadKey` is 256 bits from the operating system, drawn inside the enclave at start, never
//!   persisted and zeroized on drop. `r` for (pad id, layer) is regenerated from it on demand, so
//!   r itself is never stored.
//! - `MaskRng` is AES-256-CTR keyed by `PadKey` (AWS-LC, AES-NI), with the 64-bit stream number
//!   `pad_id << 16 | layer` in the counter block's upper half: every (pad, layer) gets its own
//!   keystream, never shared. (It replaced ChaCha20 through rand_chacha, several times slower
//!   per byte here: docs/BENCHMARKS.md, "Measurements behind design decisions".)
//! - The mask of one (pad, layer) is cut into segments of `MASK_SEGMENT` elements; segment k is
//!   drawn from the keystream's blocks from k·2^32 on (a segment uses about 2^14 of them), so
//!   segments never share keystream and can be drawn on several threads: the elements do not
//!   depend on the thread count (`PadKey::fill_mask`, and the blinding pass in origami-plan).
//! - Values are drawn by rejection sampling (24 random bits, rejected when ≥ p), so r is exactly
//!   uniform over all of Z_p — not the ≈80 % range of Slalom's code.
//! - `Sealer` encrypts u with AES-256-GCM (AWS-LC through aws-lc-rs, with AES-NI/VAES: an order
//!   of magnitude faster per byte on one core than the pure-Rust ChaCha20-Poly1305 it replaced,
//!   docs/BENCHMARKS.md; u is 38 MB per VGG-16 request) under a second OS key, in independent
//!   pieces of `PIECE_WORDS` words so the enclave opens u on several threads. The nonce is
//!   `pad_id ‖ layer ‖ piece`, unique because the enclave seals each (pad, layer) exactly once
//!   per key; the associated data binds the model hash, pad id, layer, whole length, piece
//!   index and piece count, so a sealed u (or a piece of it) cannot be moved to another pad,
//!   layer, model, place or enclave instance, and no piece can be dropped or reordered. AWS-LC cleanses the key state when
//!   the sealer is dropped.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_256};
use rand_core::TryRngCore;
use zeroize::{Zeroize, Zeroizing};

use crate::{FieldError, P};

/// Largest pad id: ids share a 64-bit stream number with the 16-bit layer index.
pub const MAX_PAD_ID: u64 = (1 << 48) - 1;

/// Mask elements per segment (see the module doc): segment k of a (pad, layer) starts at AES
/// block k·2^32 of its stream.
pub const MASK_SEGMENT: usize = 1 << 16;
/// AES blocks reserved per segment: 2^32 blocks (64 GiB of keystream) for 2^16 elements that
/// need 2^14 blocks plus one more per 2^22 draws rejected (p is 3 below 2^24).
const SEGMENT_BLOCKS: u64 = 1 << 32;

/// `f(first, part)` over `data` cut into up to `threads` contiguous parts of whole `unit`s
/// (scoped threads; one part runs on the calling thread), `first` the index of `part[0]`.
pub fn par_parts<T: Send>(
    data: &mut [T],
    unit: usize,
    threads: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let units = data.len().div_ceil(unit.max(1));
    let parts = threads.min(units).max(1);
    if parts == 1 {
        return f(0, data);
    }
    let per = units.div_ceil(parts) * unit;
    std::thread::scope(|sc| {
        let mut chunks = data.chunks_mut(per).enumerate();
        let (_, first) = chunks.next().expect("at least one part");
        for (i, part) in chunks {
            let f = &f;
            sc.spawn(move || f(i * per, part));
        }
        f(0, first);
    });
}

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

    /// A key from a fixed seed. NO SECURITY: for deterministic tests only (feature
    /// `insecure-test-keys`, which no production build enables).
    #[cfg(any(test, feature = "insecure-test-keys"))]
    pub fn insecure_from_seed_for_tests(seed: [u8; 32]) -> Self {
        Self(seed)
    }

    /// The mask stream for one (pad, layer): its first segment, or a stream of any length for
    /// other uses of the key (the Freivalds vectors).
    pub fn mask_stream(&self, pad_id: u64, layer: u16) -> MaskRng {
        self.mask_segment(pad_id, layer, 0)
    }

    /// Segment `segment` of the mask of one (pad, layer): elements `segment · MASK_SEGMENT ..`.
    pub fn mask_segment(&self, pad_id: u64, layer: u16, segment: usize) -> MaskRng {
        assert!(pad_id <= MAX_PAD_ID, "pad id {pad_id} out of range"); // ids are assigned by the enclave, below 2^48
        let first = segment as u64 * SEGMENT_BLOCKS;
        MaskRng::new(&self.0, pad_id << 16 | layer as u64, first)
    }

    /// The mask r of one (pad, layer), segment by segment on up to `threads` threads (the
    /// same elements whatever the thread count).
    pub fn fill_mask(&self, pad_id: u64, layer: u16, out: &mut [u32], threads: usize) {
        par_parts(out, MASK_SEGMENT, threads, |first, part| {
            for (k, seg) in part.chunks_mut(MASK_SEGMENT).enumerate() {
                self.mask_segment(pad_id, layer, first / MASK_SEGMENT + k)
                    .fill(seg);
            }
        });
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

/// Keystream bytes generated per refill of a [`MaskRng`] (1024 AES blocks: large enough that
/// the per-call cost of AES-CTR disappears).
const MASK_CHUNK: usize = 16384;

/// A CSPRNG stream of field elements uniform over Z_p: AES-256 in counter mode under the pad
/// key, counter block = stream number (64 bits, big-endian) ‖ block index (64 bits), so every
/// (pad, layer) reads its own disjoint stretch of the keystream; 24-bit words ≥ p are rejected.
pub struct MaskRng {
    key: EncryptingKey,
    stream: u64,
    /// Index of the next AES block to generate.
    block: u64,
    /// End of this stream's reserved blocks (its segment's).
    end: u64,
    /// Keystream not yet consumed: `buf[pos..]`. Secret: zeroized on drop.
    buf: Box<[u8; MASK_CHUNK]>,
    pos: usize,
}

impl MaskRng {
    fn new(key: &[u8; 32], stream: u64, first: u64) -> Self {
        // A 32-byte key is always valid for AES-256.
        let key = UnboundCipherKey::new(&AES_256, key)
            .and_then(EncryptingKey::ctr)
            .expect("AES-256-CTR takes a 32-byte key");
        Self {
            key,
            stream,
            block: first,
            end: first.saturating_add(SEGMENT_BLOCKS),
            buf: Box::new([0; MASK_CHUNK]),
            pos: MASK_CHUNK,
        }
    }

    #[cold]
    fn refill(&mut self) {
        // Never reached in practice (2^32 blocks per segment): no keystream is used twice.
        assert!(self.block < self.end, "mask segment exhausted");
        let mut iv = [0u8; 16];
        iv[..8].copy_from_slice(&self.stream.to_be_bytes());
        iv[8..].copy_from_slice(&self.block.to_be_bytes());
        self.buf.fill(0);
        // CTR encryption of zeros is the keystream; it cannot fail for a whole number of blocks.
        self.key
            .less_safe_encrypt(&mut self.buf[..], EncryptionContext::Iv128(iv.into()))
            .expect("AES-CTR over whole blocks");
        self.block += (MASK_CHUNK / 16) as u64;
        self.pos = 0;
    }

    /// One element uniform over [0, p), by rejection sampling of 24-bit words.
    #[inline]
    pub fn next_element(&mut self) -> u32 {
        loop {
            if self.pos == MASK_CHUNK {
                self.refill();
            }
            let b = &self.buf[self.pos..self.pos + 4];
            self.pos += 4;
            let v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0x00FF_FFFF;
            if v < P {
                return v;
            }
        }
    }

    /// Fills `out` with independent uniform elements of Z_p: the same elements, in the same
    /// order, as `next_element` would give.
    pub fn fill(&mut self, mut out: &mut [u32]) {
        while !out.is_empty() {
            if self.pos == MASK_CHUNK {
                self.refill();
            }
            // Fast path: the next n words straight from the buffer, when none of them is
            // rejected (a word is rejected with probability 3/2^24).
            let n = out.len().min((MASK_CHUNK - self.pos) / 4);
            let words = &self.buf[self.pos..self.pos + 4 * n];
            let mut rejected = false;
            for (o, w) in out[..n].iter_mut().zip(words.chunks_exact(4)) {
                let v = u32::from_le_bytes([w[0], w[1], w[2], w[3]]) & 0x00FF_FFFF;
                rejected |= v >= P;
                *o = v;
            }
            if rejected {
                // Rare: keep the words before the first rejected one, skip that word.
                let j = out[..n].iter().position(|&v| v >= P).unwrap_or(n);
                self.pos += 4 * (j + 1).min(n);
                out = &mut out[j..];
            } else {
                self.pos += 4 * n;
                out = &mut out[n..];
            }
        }
    }
}

impl Drop for MaskRng {
    fn drop(&mut self) {
        self.buf.as_mut_slice().zeroize();
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
    /// pad id ‖ layer ‖ piece: unique per sealer, since each (pad, layer) is sealed once.
    fn nonce(&self, piece: u16) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..8].copy_from_slice(&self.pad_id.to_le_bytes());
        n[8..10].copy_from_slice(&self.layer.to_le_bytes());
        n[10..].copy_from_slice(&piece.to_le_bytes());
        n
    }

    /// Binds a piece to its model, pad, layer, place and the whole length (so pieces cannot
    /// be moved, reordered, dropped or taken from another u).
    fn aad(&self, len: usize, piece: usize, pieces: usize) -> Vec<u8> {
        let mut a = Vec::with_capacity(80);
        // v3: u in independently sealed pieces (v2: one AES-256-GCM message; v1: ChaCha20-Poly1305)
        a.extend_from_slice(b"origami-pad-v3");
        a.extend_from_slice(&self.model_hash);
        a.extend_from_slice(&self.pad_id.to_le_bytes());
        a.extend_from_slice(&self.layer.to_le_bytes());
        a.extend_from_slice(&(len as u64).to_le_bytes());
        a.extend_from_slice(&(piece as u32).to_le_bytes());
        a.extend_from_slice(&(pieces as u32).to_le_bytes());
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
    aead: LessSafeKey,
    model_hash: [u8; 32],
}

/// Bytes of an AES-GCM tag.
const TAG_LEN: usize = 16;
/// Words of u per sealed piece: u is sealed as independent AES-GCM messages of 1 MiB, so the
/// enclave opens it on several threads (one message cannot be split).
pub const PIECE_WORDS: usize = 1 << 18;

/// Pieces of a u of `len` words (at least one), or None past the 16-bit piece index.
fn pieces(len: usize) -> Option<usize> {
    let k = len.div_ceil(PIECE_WORDS).max(1);
    (k <= u16::MAX as usize + 1).then_some(k)
}

/// The sealed size of a u of `len` words: ciphertext, then one tag per piece.
pub fn sealed_len(len: usize) -> Option<usize> {
    len.checked_mul(4)?.checked_add(pieces(len)? * TAG_LEN)
}

fn aes_key(key: &[u8; 32]) -> LessSafeKey {
    // A 32-byte key is always valid for AES-256-GCM.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("AES-256 takes a 32-byte key"))
}

impl Sealer {
    /// A sealer with a fresh OS key, bound to one model.
    pub fn from_os(model_hash: [u8; 32]) -> Result<Self, FieldError> {
        let key = Zeroizing::new(os_key()?);
        Ok(Self {
            aead: aes_key(&key),
            model_hash,
        })
    }

    /// NO SECURITY: a sealer with a fixed key, for deterministic tests only (feature
    /// `insecure-test-keys`).
    #[cfg(any(test, feature = "insecure-test-keys"))]
    pub fn insecure_from_seed_for_tests(seed: [u8; 32], model_hash: [u8; 32]) -> Self {
        Self {
            aead: aes_key(&seed),
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
        let n = u.len();
        // Layout: the pieces' ciphertexts in order (u's bytes, encrypted in place), then their
        // tags in order. Past 2^16 pieces (2^34 words, far beyond any layer) nothing is sealed:
        // an empty ciphertext never opens, so nothing unsealed can leak.
        let Some(k) = pieces(n) else {
            return SealedPad {
                pad_id,
                layer,
                len: n,
                ciphertext: Vec::new(),
            };
        };
        let mut buf = Zeroizing::new(Vec::with_capacity(n * 4 + k * TAG_LEN));
        for v in u {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        let mut tags = Vec::with_capacity(k * TAG_LEN);
        for i in 0..k {
            let part =
                &mut buf[(i * PIECE_WORDS * 4).min(n * 4)..((i + 1) * PIECE_WORDS * 4).min(n * 4)];
            let aad = b.aad(n, i, k);
            match self.aead.seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(b.nonce(i as u16)),
                Aad::from(&aad[..]),
                part,
            ) {
                Ok(tag) => tags.extend_from_slice(tag.as_ref()),
                // Only past GCM's 64 GiB message limit: as above, nothing is sealed.
                Err(_) => {
                    return SealedPad {
                        pad_id,
                        layer,
                        len: n,
                        ciphertext: Vec::new(),
                    }
                }
            }
        }
        buf.extend_from_slice(&tags);
        // Encrypted in place: the buffer now holds ciphertexts ‖ tags, no secret.
        let ciphertext = std::mem::take(&mut *buf);
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
        let plain = self.open_in_place(pad_id, layer, len, sealed.clone(), 1)?;
        Ok(Zeroizing::new(words(&plain).collect()))
    }

    /// `open`, decrypting in the sealed pad's own buffer (no copy), its pieces on up to
    /// `threads` threads: returns the plaintext bytes, `len` little-endian u32 words, wiped on
    /// drop. Read them with `words`. Every piece must authenticate.
    pub fn open_in_place(
        &self,
        pad_id: u64,
        layer: u16,
        len: usize,
        sealed: SealedPad,
        threads: usize,
    ) -> Result<OpenedPad, FieldError> {
        let b = PadBinding {
            model_hash: self.model_hash,
            pad_id,
            layer,
        };
        let tampered = FieldError::SealTampered { pad_id, layer };
        // Wiped on every path from here, a failed open included.
        let mut buf = OpenedPad {
            bytes: sealed.ciphertext,
            len: len * 4,
        };
        let (Some(k), Some(total)) = (pieces(len), sealed_len(len)) else {
            return Err(tampered);
        };
        if buf.bytes.len() != total {
            return Err(tampered);
        }
        let (body, tags) = buf.bytes.split_at_mut(len * 4);
        let tags: &[u8] = tags;
        let failed = std::sync::atomic::AtomicBool::new(false);
        par_parts(body, PIECE_WORDS * 4, threads, |start, part| {
            let first = start / (PIECE_WORDS * 4);
            for (j, piece) in part.chunks_mut(PIECE_WORDS * 4).enumerate() {
                let i = first + j;
                let aad = b.aad(len, i, k);
                let ok = self
                    .aead
                    .open_in_place_separate_tag(
                        Nonce::assume_unique_for_key(b.nonce(i as u16)),
                        Aad::from(&aad[..]),
                        &tags[i * TAG_LEN..(i + 1) * TAG_LEN],
                        piece,
                    )
                    .is_ok();
                if !ok {
                    failed.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        if failed.into_inner() {
            return Err(tampered);
        }
        Ok(buf)
    }
}

/// The plaintext of an opened pad: u as `len / 4` little-endian u32 words (the tag follows in
/// the same buffer). Wiped on drop, eight bytes per store: `zeroize` clears byte slices one
/// volatile byte at a time, and an opened pad is up to 12.8 MB (VGG-16's conv1_2).
pub struct OpenedPad {
    bytes: Vec<u8>,
    len: usize,
}

impl std::ops::Deref for OpenedPad {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Drop for OpenedPad {
    fn drop(&mut self) {
        wipe(&mut self.bytes);
    }
}

/// Zeroizes `buf` with volatile 8-byte stores (through `zeroize`, so the compiler keeps them).
pub fn wipe(buf: &mut [u8]) {
    // SAFETY: every bit pattern is a valid u64; `align_to_mut` only reinterprets the aligned
    // middle of the slice, and the unaligned ends stay bytes.
    let (head, mid, tail) = unsafe { buf.align_to_mut::<u64>() };
    head.zeroize();
    mid.zeroize();
    tail.zeroize();
}

/// The little-endian u32 words of a byte buffer.
pub fn words(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

#[cfg(test)]
mod tests;
