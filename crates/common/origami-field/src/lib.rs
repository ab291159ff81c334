//! Arithmetic in the prime field Z_p, one-time pads and Freivalds checks.
//!
//! # The prime
//! `P = 2^24 − 3 = 16 777 213` is the largest prime below 2^24 (Slalom used it for its
//! integrity checks). Three properties make it the right choice here:
//! - every element fits in a `u32` (and is exactly representable in an `f32`, which lets a GPU
//!   backend split blinded values into exact limbs);
//! - a blinded value centred in (−p/2, p/2) has magnitude < 2^23, so a dot product with 8-bit
//!   weights over K ≤ 2^15 terms stays below 2^23 · 2^7 · 2^15 = 2^45 < 2^53: an `f64` GEMM over
//!   blinded data is exact (see `origami-accel`);
//! - the largest prime keeps the most headroom for the fixed-point values of the network
//!   (|W·x + b| < p/2 ≈ 2^23 must hold; the plan checks it, see `origami-enclave::plan`).

/// `pub fn NAME(args) -> R => KERNEL`: NAME calls KERNEL (an `#[inline(always)]` fn) built
/// for AVX-512 (F, BW, VL) or AVX2 where the CPU has them, else built for the baseline target.
/// The build never assumes the CPU (no `target-cpu`): the hot loops of the enclave are compiled
/// three times and chosen at run time. Items may also be `pub(crate)` or private.
#[macro_export]
macro_rules! with_avx2 {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)? => $kernel:ident) => {
        $(#[$m])*
        $vis fn $name($($a: $t),*) $(-> $r)? {
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512vl")
                && std::is_x86_feature_detected!("avx2")
            {
                #[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl")]
                unsafe fn avx512($($a: $t),*) $(-> $r)? {
                    $kernel($($a),*)
                }
                // SAFETY: the CPU has these features, checked just above.
                return unsafe { avx512($($a),*) };
            }
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($a: $t),*) $(-> $r)? {
                    $kernel($($a),*)
                }
                // SAFETY: the CPU has AVX2, checked just above.
                return unsafe { avx2($($a),*) };
            }
            $kernel($($a),*)
        }
    };
}

pub mod freivalds;
pub mod pad;

pub use pad::{MaskRng, OpenedPad, PadKey, SealedPad, Sealer};

/// The field modulus: 2^24 − 3, prime.
pub const P: u32 = 16_777_213;
/// `P` as an `i64`.
pub const P_I64: i64 = P as i64;
/// Largest magnitude of a centred field element: (p − 1) / 2.
pub const HALF: i64 = (P_I64 - 1) / 2;

/// Errors of this crate, by cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FieldError {
    /// The operating system could not provide randomness.
    #[error("the operating system's random number generator failed: {0}")]
    OsRandom(String),
    /// A sealed pad failed authentication: it was altered, or it belongs to another enclave
    /// instance, model, layer or pad id.
    #[error("sealed pad {pad_id} for layer {layer} failed authentication (tampered, replayed or from another enclave instance)")]
    SealTampered { pad_id: u64, layer: u16 },
    /// A buffer had the wrong length.
    #[error("length mismatch: expected {expected} elements, got {got}")]
    Length { expected: usize, got: usize },
}

/// Reduces any integer to its representative in [0, p).
#[inline]
pub fn reduce(x: i64) -> u32 {
    x.rem_euclid(P_I64) as u32
}

/// Reduces an exact integer held in an f64 (|v| < 2^52) to [0, p) without an integer
/// division: q = v/p truncated (off by at most one unit: the reciprocal is rounded),
/// |q·p| < 2^53 is exact, so v − q·p is exact and lies in (−2p, 2p); two correction steps
/// each way land it in [0, p).
#[inline]
pub fn reduce_f64(v: f64) -> u32 {
    const INV_P: f64 = 1.0 / P as f64;
    // Truncating casts only (no `floor`: without SSE4.1 at compile time it is a libm call).
    let q = (v * INV_P) as i64;
    let mut r = v as i64 - q * P_I64;
    // q is ⌊v/p⌋ or ⌈v/p⌉ up to one unit of rounding: r ∈ (−2p, 2p).
    if r < 0 {
        r += P_I64;
    }
    if r < 0 {
        r += P_I64;
    }
    if r >= P_I64 {
        r -= P_I64;
    }
    if r >= P_I64 {
        r -= P_I64;
    }
    r as u32
}

/// Reduces |x| < p to [0, p) without a division.
#[inline]
pub fn reduce_small(x: i64) -> u32 {
    debug_assert!(x.abs() < P_I64);
    (if x < 0 { x + P_I64 } else { x }) as u32
}

/// Maps a representative in [0, p) to the centred range [−(p−1)/2, (p−1)/2].
#[inline]
pub fn center(v: u32) -> i64 {
    let v = v as i64;
    if v > HALF {
        v - P_I64
    } else {
        v
    }
}

/// (a + b) mod p for representatives in [0, p).
#[inline]
pub fn add(a: u32, b: u32) -> u32 {
    let s = a + b; // < 2^25: no overflow
    if s >= P {
        s - P
    } else {
        s
    }
}

/// (a − b) mod p for representatives in [0, p).
#[inline]
pub fn sub(a: u32, b: u32) -> u32 {
    if a >= b {
        a - b
    } else {
        a + P - b
    }
}

/// (a · b) mod p.
#[inline]
pub fn mul(a: u32, b: u32) -> u32 {
    ((a as u64 * b as u64) % P as u64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p_is_prime_and_below_2_pow_24() {
        const { assert!(P < 1 << 24) };
        let mut d = 2u32;
        while d * d <= P {
            assert_ne!(P % d, 0, "{d} divides P");
            d += 1;
        }
    }

    #[test]
    fn center_and_reduce_round_trip() {
        for x in [-HALF, -1, 0, 1, HALF, 12345, -777_777] {
            assert_eq!(center(reduce(x)), x);
        }
        assert_eq!(reduce(P_I64), 0);
        assert_eq!(reduce(-1), P - 1);
        assert_eq!(add(P - 1, 2), 1);
        assert_eq!(sub(1, 2), P - 1);
        assert_eq!(mul(P - 1, P - 1), 1);
    }

    #[test]
    fn fast_reductions_match_rem_euclid() {
        let big = (1i64 << 52) - 1;
        let mut v = vec![
            0,
            1,
            -1,
            P_I64,
            -P_I64,
            P_I64 - 1,
            P_I64 + 1,
            big,
            -big,
            big - 12345,
            3 * P_I64,
            -3 * P_I64 + 1,
        ];
        let mut x = 0x1234_5678_9abc_def0u64;
        for _ in 0..100_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            v.push((x as i64) >> 12); // |v| < 2^52
        }
        for &t in &v {
            assert_eq!(reduce_f64(t as f64), reduce(t), "{t}");
        }
        for t in [-HALF, -1, 0, 1, HALF, P_I64 - 1, 1 - P_I64] {
            assert_eq!(reduce_small(t), reduce(t));
        }
    }
}
