//! Freivalds checks of a blinded layer's reply, on the enclave's own small integers.
//!
//! The accelerator returns y′ for y = W·x̄ with x̄ = x̃ + r; the pad gives u = W·r, so an honest
//! reply unblinds to d = y′ − u = W·x̃ (mod p), an `out_c × oh × ow` tensor (a dense layer is a
//! 1 × 1 convolution here). For secret uniform vectors s (per output channel), a (per output
//! row) and b (per output column) the core checks
//!
//!   Σ_{i,y,x} sᵢ·a_y·b_x·d_{i,y,x}  ≡  Σ_k (sᵀW)_k · (X·(a⊗b))_k  (mod p),
//!
//! where X is the im2col matrix of x̃ (`K × oh·ow`, K = in_c·kh·kw over all groups), so both
//! sides equal sᵀ·W·X·(a⊗b) for an honest reply.
//!
//! **Soundness.** A wrong reply leaves an error E = d − W·x̃ ≢ 0. The check passes only if
//! Σ sᵢ a_y b_x E_{i,y,x} ≡ 0: a non-zero polynomial of degree 3 in the secret (s, a, b), so by
//! Schwartz–Zippel with probability at most 3/p. The core runs [`TRIALS`] independent trials:
//! (3/p)^3 < 2^-66 per forged reply (p = 2^24 − 3). The vectors are drawn once per layer from a
//! key of their own (never sent anywhere); a host learns only whether a forgery passed, and a
//! failed one ends the request.
//!
//! **Cost.** The right side never forms X: Σ_x b_x·x̃[c, y′, x·sx + kx − pl] per input row and
//! kernel column first (in_c·h·kw·ow products), then Σ_y a_y over the rows each kernel row
//! reaches (in_c·kh·kw·oh). The left side is one pass over the reply and the pad (out_c·oh·ow
//! products per trial). A check with the conv itself and two rows of sᵀW costs 2·in_c·kh·kw·oh·ow
//! products on the input side; this one costs 3·in_c·h·kw·ow, about 2·kh/3 times fewer.
//!
//! **Exactness.** Products are u32 × u32 → u64 (SSE2 `pmuludq` vectorizes them on the baseline
//! x86-64 target): the input side uses x̃ + clamp ∈ [0, 2·clamp] (clamp < 2^17) and takes the
//! offset back with prefix sums of b, so a row sum of ow products < 2^42 stays below 2^63 for
//! ow < 2^21 (checked when the probe is built); field products (< 2^49) are reduced every
//! [`REDUCE_EVERY`] terms.

use zeroize::Zeroize;

use origami_field::{reduce, with_avx2, PadKey, P};
use origami_model::linalg::{ConvGeom, LinearShape};
use origami_plan::EnclaveError;

/// Independent trials per check.
pub(crate) const TRIALS: usize = 3;
/// Field products (< 2^49) summed before a reduction: 2^14 · 2^49 = 2^63.
const REDUCE_EVERY: usize = 1 << 14;

/// One trial's secret vectors and the probe row v = sᵀW (mod p, groups expanded).
struct Trial {
    s: Vec<u32>,
    a: Vec<u32>,
    b: Vec<u32>,
    /// bsum[n] = Σ_{x<n} b_x (to undo the offset that makes x̃ unsigned).
    bsum: Vec<u64>,
    v: Vec<u32>,
}

impl Drop for Trial {
    fn drop(&mut self) {
        self.s.zeroize();
        self.a.zeroize();
        self.b.zeroize();
        self.bsum.zeroize();
        self.v.zeroize();
    }
}

/// Secret Freivalds vectors for one layer.
pub(crate) struct Probe {
    g: ConvGeom,
    clamp: i64,
    trials: Vec<Trial>,
}

impl Probe {
    /// The probe for one layer: vectors from `key`'s streams 0..3·TRIALS for `layer`; `wq` the
    /// quantized weights (`out × K/groups`, as the plan holds them); `clamp` the bound on |x̃|.
    pub(crate) fn new(
        key: &PadKey,
        layer: u16,
        shape: &LinearShape,
        wq: &[f64],
        clamp: i64,
    ) -> Result<Self, EnclaveError> {
        let g = shape.as_conv();
        // Row sums of ow products (2·clamp)·2^24 in u64 (see the module doc).
        if !(0..1 << 20).contains(&clamp) || (g.ow as u128 * 2 * clamp as u128) << 24 >= 1 << 63 {
            return Err(EnclaveError::Plan(format!(
                "layer {layer}: output width {} with activation clamp {clamp} is too large to verify exactly",
                g.ow
            )));
        }
        let k = shape.k();
        let kfull = g.in_c * g.kh * g.kw;
        let (ipg, opg, kk) = (g.in_c / g.groups, g.out_c / g.groups, g.kh * g.kw);
        let draw = |stream: usize, n: usize| {
            let mut v = vec![0u32; n];
            key.mask_stream(stream as u64, layer).fill(&mut v);
            v
        };
        let trials = (0..TRIALS)
            .map(|j| {
                let (s, a, b) = (
                    draw(3 * j, g.out_c),
                    draw(3 * j + 1, g.oh),
                    draw(3 * j + 2, g.ow),
                );
                let mut acc = vec![0u64; kfull];
                for oc in 0..g.out_c {
                    let base = (oc / opg) * ipg * kk;
                    for t in 0..ipg * kk {
                        let wv = reduce(wq[oc * k + t] as i64) as u64;
                        acc[base + t] = (acc[base + t] + s[oc] as u64 * wv) % P as u64;
                    }
                }
                let v = acc.iter().map(|&x| x as u32).collect();
                acc.zeroize();
                let bsum = std::iter::once(0)
                    .chain(b.iter().scan(0u64, |t, &x| {
                        *t += x as u64;
                        Some(*t)
                    }))
                    .collect();
                Trial { s, a, b, bsum, v }
            })
            .collect();
        Ok(Self { g, clamp, trials })
    }

    /// Bytes held for the layer's lifetime.
    pub(crate) fn bytes(&self) -> usize {
        self.trials
            .iter()
            .map(|t| 4 * (t.s.len() + t.a.len() + t.b.len() + t.v.len()) + 8 * t.bsum.len())
            .sum()
    }

    /// Whether the reply `y` (with the opened pad `u`, little-endian u32 words) is W·x̃ + u for
    /// the enclave's requantized input `xq`, on `threads` enclave threads. The caller passes
    /// buffers of the layer's sizes.
    pub(crate) fn check(&self, xq: &[i32], y: &[u32], u: &[u8], threads: usize) -> bool {
        let g = &self.g;
        assert!(
            xq.len() == g.in_c * g.h * g.w
                && y.len() == g.out_c * g.oh * g.ow
                && u.len() == 4 * y.len(),
            "probe: buffers do not match the layer"
        );
        let threads = threads.max(1);
        let lhs = split_sum(g.out_c, threads, |r0, r1| lhs(self, y, u, r0, r1));
        let rhs = split_sum(g.in_c, threads, |c0, c1| rhs(self, xq, c0, c1));
        lhs == rhs
    }
}

with_avx2!(
    /// [`lhs_kernel`], with AVX2 where the CPU has it.
    fn lhs(p: &Probe, y: &[u32], u: &[u8], r0: usize, r1: usize) -> [u64; TRIALS] => lhs_kernel
);

with_avx2!(
    /// [`rhs_kernel`], with AVX2 where the CPU has it.
    fn rhs(p: &Probe, xq: &[i32], c0: usize, c1: usize) -> [u64; TRIALS] => rhs_kernel
);

/// Σ over output channels r0..r1 of sᵢ·Σ a_y b_x d_{i,y,x}, per trial.
#[inline(always)]
fn lhs_kernel(p: &Probe, y: &[u32], u: &[u8], r0: usize, r1: usize) -> [u64; TRIALS] {
    let this = p;
    let (oh, ow) = (this.g.oh, this.g.ow);
    let mut d = vec![0u32; ow];
    let mut out = [0u64; TRIALS];
    for i in r0..r1 {
        let mut row = [0u64; TRIALS];
        for oy in 0..oh {
            let at = (i * oh + oy) * ow;
            for ((dv, &yv), ub) in d
                .iter_mut()
                .zip(&y[at..at + ow])
                .zip(u[4 * at..].chunks_exact(4))
            {
                let uw = u32::from_le_bytes([ub[0], ub[1], ub[2], ub[3]]);
                *dv = yv + P - uw; // < 2^25
            }
            for (t, r) in this.trials.iter().zip(row.iter_mut()) {
                let q = dot_mod(&t.b, &d);
                *r = (*r + t.a[oy] as u64 * q) % P as u64;
            }
        }
        for ((t, o), r) in this.trials.iter().zip(out.iter_mut()).zip(row) {
            *o = (*o + t.s[i] as u64 * r) % P as u64;
        }
    }
    d.zeroize();
    out
}

/// Σ over input channels c0..c1 and the kernel of vₖ·(X·(a⊗b))ₖ, per trial.
#[inline(always)]
fn rhs_kernel(p: &Probe, xq: &[i32], c0: usize, c1: usize) -> [u64; TRIALS] {
    let this = p;
    let g = &this.g;
    let [sy, sx] = g.stride;
    let (pt, pl) = (g.pads[0], g.pads[1]);
    // r1[j][iy·kw + kx] = Σ_x b_x · x̃[c, iy, x·sx + kx − pl] mod p, one channel at a time.
    let mut r1 = vec![vec![0u32; g.h * g.kw]; TRIALS];
    // x̃ + clamp ≥ 0, so the products are u32 × u32 → u64; the offset is taken back with
    // the prefix sums of b.
    let off = this.clamp as u32;
    let mut row = vec![0u32; g.w];
    let mut out = [0u64; TRIALS];
    for c in c0..c1 {
        for iy in 0..g.h {
            let src = &xq[(c * g.h + iy) * g.w..][..g.w];
            for (d, &v) in row.iter_mut().zip(src) {
                debug_assert!(v.unsigned_abs() <= off, "x̃ beyond the clamp");
                *d = (v + off as i32) as u32;
            }
            for kx in 0..g.kw {
                // Output columns whose tap kx lands inside the row.
                let lo = pl.saturating_sub(kx).div_ceil(sx);
                let hi = ((g.w + pl).saturating_sub(kx)).div_ceil(sx).min(g.ow);
                if lo >= hi {
                    for r in r1.iter_mut() {
                        r[iy * g.kw + kx] = 0;
                    }
                    continue;
                }
                for (t, r) in this.trials.iter().zip(r1.iter_mut()) {
                    let acc: u64 = if sx == 1 {
                        let xs = &row[lo + kx - pl..hi + kx - pl];
                        t.b[lo..hi]
                            .iter()
                            .zip(xs)
                            .map(|(&bv, &xv)| bv as u64 * xv as u64)
                            .sum()
                    } else {
                        (lo..hi)
                            .map(|ox| t.b[ox] as u64 * row[ox * sx + kx - pl] as u64)
                            .sum()
                    };
                    let shift = off as u64 * (t.bsum[hi] - t.bsum[lo]);
                    r[iy * g.kw + kx] =
                        ((acc % P as u64 + P as u64 - shift % P as u64) % P as u64) as u32;
                }
            }
        }
        for (t, (r, o)) in this.trials.iter().zip(r1.iter().zip(out.iter_mut())) {
            for ky in 0..g.kh {
                let lo = pt.saturating_sub(ky).div_ceil(sy);
                let hi = ((g.h + pt).saturating_sub(ky)).div_ceil(sy).min(g.oh);
                for kx in 0..g.kw {
                    let mut acc = 0u64;
                    for (n, oy) in (lo..hi).enumerate() {
                        acc += t.a[oy] as u64 * r[(oy * sy + ky - pt) * g.kw + kx] as u64;
                        if (n + 1) % REDUCE_EVERY == 0 {
                            acc %= P as u64;
                        }
                    }
                    let vk = t.v[(c * g.kh + ky) * g.kw + kx] as u64;
                    *o = (*o + vk * (acc % P as u64)) % P as u64;
                }
            }
        }
    }
    for r in r1.iter_mut() {
        r.zeroize();
    }
    row.zeroize();
    out
}

/// Σ a[i]·b[i] mod p for a < p and b < 2^25 (u32 × u32 → u64 products, which vectorize).
#[inline(always)]
fn dot_mod(a: &[u32], b: &[u32]) -> u64 {
    let mut total = 0u64;
    for (ac, bc) in a.chunks(REDUCE_EVERY).zip(b.chunks(REDUCE_EVERY)) {
        let s: u64 = ac.iter().zip(bc).map(|(&x, &y)| x as u64 * y as u64).sum();
        total = (total + s % P as u64) % P as u64;
    }
    total
}

/// `f` over `0..n` in up to `threads` contiguous ranges (scoped threads), summed per trial mod p.
fn split_sum<F>(n: usize, threads: usize, f: F) -> [u64; TRIALS]
where
    F: Fn(usize, usize) -> [u64; TRIALS] + Sync,
{
    let parts = threads.min(n).max(1);
    let per = n.div_ceil(parts);
    let sums: Vec<[u64; TRIALS]> = if parts == 1 {
        vec![f(0, n)]
    } else {
        std::thread::scope(|sc| {
            let handles: Vec<_> = (0..parts)
                .map(|p| {
                    let f = &f;
                    sc.spawn(move || f((p * per).min(n), ((p + 1) * per).min(n)))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("probe thread"))
                .collect()
        })
    };
    let mut out = [0u64; TRIALS];
    for s in sums {
        for (o, v) in out.iter_mut().zip(s) {
            *o = (*o + v) % P as u64;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use origami_model::linalg::conv2d_naive;

    fn geom(
        in_c: usize,
        out_c: usize,
        hw: (usize, usize),
        k: usize,
        stride: usize,
        pad: usize,
        groups: usize,
    ) -> ConvGeom {
        let (h, w) = hw;
        ConvGeom {
            in_c,
            h,
            w,
            out_c,
            kh: k,
            kw: k,
            stride: [stride, stride],
            pads: [pad; 4],
            groups,
            oh: (h + 2 * pad - k) / stride + 1,
            ow: (w + 2 * pad - k) / stride + 1,
        }
    }

    /// A reply y = W·x̃ + u mod p computed by the definition, and its pad u as bytes.
    fn reply(g: &ConvGeom, x: &[i32], w: &[f64]) -> (Vec<u32>, Vec<u8>) {
        let xf: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let z = conv2d_naive(g, &xf, w);
        let u: Vec<u32> = (0..z.len())
            .map(|i| (i as u64 * 2_654_435_761 % P as u64) as u32)
            .collect();
        let y = z
            .iter()
            .zip(&u)
            .map(|(&zv, &uv)| ((zv as i64 + uv as i64).rem_euclid(P as i64)) as u32)
            .collect();
        (y, u.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    #[test]
    fn honest_replies_pass_and_any_single_error_fails() {
        let key = PadKey::insecure_from_seed_for_tests([7; 32]);
        let clamp = 511;
        for (g, threads) in [
            (geom(3, 4, (9, 7), 3, 1, 1, 1), 1),
            (geom(4, 6, (10, 10), 3, 2, 1, 2), 3),
            (geom(2, 5, (8, 8), 1, 1, 0, 1), 2),
            (geom(6, 6, (11, 9), 5, 2, 2, 3), 4),
            (geom(4, 4, (7, 7), 3, 1, 1, 4), 2), // depthwise
        ] {
            let k = g.in_c / g.groups * g.kh * g.kw;
            let x: Vec<i32> = (0..g.in_c * g.h * g.w)
                .map(|i| (i as i32 * 37 % (2 * clamp as i32 + 1)) - clamp as i32)
                .collect();
            let w: Vec<f64> = (0..g.out_c * k)
                .map(|i| (i as i64 * 7919 % 255) as f64 - 127.0)
                .collect();
            let probe = Probe::new(&key, 3, &LinearShape::Conv(g), &w, clamp).unwrap();
            let (y, u) = reply(&g, &x, &w);
            assert!(probe.check(&x, &y, &u, threads), "{g:?}");
            for pos in [0, y.len() / 2, y.len() - 1] {
                for delta in [1, P - 1, 1 << 20] {
                    let mut bad = y.clone();
                    bad[pos] = (bad[pos] + delta) % P;
                    assert!(
                        !probe.check(&x, &bad, &u, threads),
                        "{g:?} pos {pos} delta {delta}"
                    );
                }
            }
            // A wrong pad is a wrong reply too.
            let mut bad_u = u.clone();
            bad_u[4] ^= 1;
            assert!(!probe.check(&x, &y, &bad_u, threads), "{g:?}");
        }
    }

    #[test]
    fn dense_layers_and_extreme_values() {
        let key = PadKey::insecure_from_seed_for_tests([9; 32]);
        let (in_f, out_f, clamp) = (300, 7, (1i64 << 17) - 1);
        let shape = LinearShape::Dense { in_f, out_f };
        let w: Vec<f64> = (0..in_f * out_f)
            .map(|i| if i % 2 == 0 { 127.0 } else { -128.0 })
            .collect();
        let x: Vec<i32> = (0..in_f)
            .map(|i| {
                if i % 3 == 0 {
                    -clamp as i32
                } else {
                    clamp as i32
                }
            })
            .collect();
        let probe = Probe::new(&key, 0, &shape, &w, clamp).unwrap();
        let g = probe.g;
        let (y, u) = reply(&g, &x, &w);
        assert!(probe.check(&x, &y, &u, 1));
        let mut bad = y.clone();
        bad[out_f - 1] = (bad[out_f - 1] + 1) % P;
        assert!(!probe.check(&x, &bad, &u, 1));
    }
}
