//! Freivalds' check for Y = W·X over Z_p.
//!
//! With a secret s uniform over Z_p^M, a wrong Y' ≠ Y passes sᵀY' = (sᵀW)·X with probability at
//! most 1/p ≈ 2^-24 per check (the difference is a non-zero vector, and a random linear form
//! vanishes on it with probability 1/p). The enclave runs the check with two independent
//! vectors, ≈ 2^-48 per layer. Cost: M·P + K·P multiply-adds instead of M·K·P.

use crate::P;

/// Reduce an accumulated `u64` sum every this many products: each product is < 2^48, so 2^15
/// of them stay below 2^63.
const REDUCE_EVERY: usize = 1 << 15;

/// `out[c] = Σ_i s[i] · y[i·cols + c] mod p` for a row-major `rows × cols` matrix y over Z_p.
pub fn combine_rows(s: &[u32], y: &[u32], cols: usize) -> Vec<u32> {
    assert_eq!(s.len() * cols, y.len(), "combine_rows: shape mismatch"); // callers pass checked shapes
    let mut acc = vec![0u64; cols];
    for (i, &si) in s.iter().enumerate() {
        let row = &y[i * cols..(i + 1) * cols];
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += si as u64 * v as u64;
        }
        if (i + 1) % REDUCE_EVERY == 0 {
            for a in acc.iter_mut() {
                *a %= P as u64;
            }
        }
    }
    acc.into_iter().map(|a| (a % P as u64) as u32).collect()
}

/// `Σ_i a[i]·b[i] mod p` for field elements.
pub fn dot(a: &[u32], b: &[u32]) -> u32 {
    let mut acc = 0u64;
    for (k, (&x, &y)) in a.iter().zip(b).enumerate() {
        acc += x as u64 * y as u64;
        if (k + 1) % REDUCE_EVERY == 0 {
            acc %= P as u64;
        }
    }
    (acc % P as u64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{mul, reduce};

    #[test]
    fn combine_matches_naive_on_extreme_values() {
        let rows = 40_000; // more than REDUCE_EVERY rows of maximal values
        let cols = 3;
        let s = vec![P - 1; rows];
        let y = vec![P - 1; rows * cols];
        let out = combine_rows(&s, &y, cols);
        let expect = reduce(rows as i64 * mul(P - 1, P - 1) as i64);
        assert_eq!(out, vec![expect; cols]);
        assert_eq!(dot(&s, &y[..rows]), expect);
    }
}
