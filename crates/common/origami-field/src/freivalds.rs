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

/// `out[c] = Σ_i s[i] · ((y − u) mod p)[i·cols + c] mod p`: [`combine_rows`] of the unblinded
/// reply, with `u` as little-endian u32 words (an opened pad) and y, u in [0, p). Each term is
/// s·(y + p − u) < 2^24·2^25 = 2^49, so 2^14 of them stay below 2^63.
pub fn combine_rows_unblinded(s: &[u32], y: &[u32], u: &[u8], cols: usize) -> Vec<u32> {
    // Callers pass checked shapes.
    assert!(
        s.len() * cols == y.len() && u.len() == 4 * y.len(),
        "combine_rows_unblinded: shape mismatch"
    );
    const EVERY: usize = 1 << 14;
    let mut acc = vec![0u64; cols];
    for (i, &si) in s.iter().enumerate() {
        let row = &y[i * cols..(i + 1) * cols];
        let urow = &u[4 * i * cols..4 * (i + 1) * cols];
        for ((a, &v), ub) in acc.iter_mut().zip(row).zip(urow.chunks_exact(4)) {
            let uw = u32::from_le_bytes([ub[0], ub[1], ub[2], ub[3]]);
            *a += si as u64 * (v as u64 + P as u64 - uw as u64);
        }
        if (i + 1) % EVERY == 0 {
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
    fn combine_unblinded_is_combine_of_the_difference() {
        let (rows, cols) = (20_000, 3); // more than 2^14 rows
        let s = vec![P - 1; rows];
        let y: Vec<u32> = (0..rows * cols)
            .map(|i| {
                if i % 3 == 0 {
                    P - 1
                } else {
                    (i as u64 * 7919 % P as u64) as u32
                }
            })
            .collect();
        let u: Vec<u32> = (0..rows * cols)
            .map(|i| {
                if i % 3 == 0 {
                    0
                } else {
                    (i as u64 * 104_729 % P as u64) as u32
                }
            })
            .collect();
        let ub: Vec<u8> = u.iter().flat_map(|w| w.to_le_bytes()).collect();
        let d: Vec<u32> = y.iter().zip(&u).map(|(&a, &b)| crate::sub(a, b)).collect();
        assert_eq!(
            combine_rows_unblinded(&s, &y, &ub, cols),
            combine_rows(&s, &d, cols)
        );
    }

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
