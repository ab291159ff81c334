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
//! **Split by linearity.** Σ s a b d = Σ s a b y′ − Σ s a b u. The pad side is computed offline
//! with u ([`Probe::pad_sums`], kept in the enclave with the pad); the reply side comes out of the
//! range scan every reply gets anyway ([`Probe::scan_reply`]), so the online check never reads u.
//!
//! **Cost.** The right side never forms X: for each input channel it first folds the rows,
//! z_{ky}[x] = Σ_y a_y·x̃[c, y·sy + ky − pt, x] (in_c·h·kh·w products per trial, streaming row
//! axpys), then Σ_x z_{ky}[x]·b_{ox(x, kx)} per kernel tap (in_c·kh·kw·w). The left side is
//! out_c·oh·ow products per trial in the reply's scan. A check with the conv itself and two rows
//! of sᵀW would cost 2·in_c·kh·kw·oh·ow products on the input side.
//!
//! **Exactness.** The input side is i32 × i32 → i64 (`vpmuldq`) on centred values: |a|, |b| ≤
//! (p − 1)/2, |x̃| ≤ clamp, so sums of oh products a·x̃ and of w products z·b stay below 2^63
//! (checked when the probe is built). The reply side is u32 × u32 → u64 with b, y′ < 2^24: a
//! row of ow < 2^14 products stays below 2^62. The kernels are built for AVX-512, AVX2 and the
//! baseline and chosen at run time (`origami_field::with_avx2`).

use zeroize::{Zeroize, Zeroizing};

use origami_field::{reduce, with_avx2, PadKey, HALF, P, P_I64};
use origami_model::linalg::{ConvGeom, LinearShape};
use origami_plan::EnclaveError;

/// Independent trials per check.
pub(crate) const TRIALS: usize = 3;

/// One trial's secret vectors and the probe row v = sᵀW (mod p, groups expanded).
struct Trial {
    s: Vec<u32>,
    a: Vec<u32>,
    b: Vec<u32>,
    v: Vec<u32>,
}

impl Drop for Trial {
    fn drop(&mut self) {
        self.s.zeroize();
        self.a.zeroize();
        self.b.zeroize();
        self.v.zeroize();
    }
}

/// Secret Freivalds vectors for one layer.
pub(crate) struct Probe {
    g: ConvGeom,
    trials: Vec<Trial>,
    /// `kw·TRIALS × w`, row-major: B[kx·TRIALS + j, x] = b_j[ox] (centred in (−p/2, p/2))
    /// for the output column ox whose tap kx reads input column x, else 0.
    bmat: Zeroizing<Vec<i32>>,
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
        // Exactness (see the module doc): input-side sums of oh products a·x̃ and of w products
        // z·b (centred, |·| ≤ p/2) below 2^63 in i64; reply-side sums of ow products below
        // 2^49 · 2^14 = 2^63 in u64.
        if !(0..1 << 20).contains(&clamp)
            || g.oh as u128 * clamp as u128 * HALF as u128 >= 1 << 63
            || g.w as u128 * (HALF * HALF) as u128 >= 1 << 63
            || g.ow >= 1 << 14
        {
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
                Trial { s, a, b, v }
            })
            .collect::<Vec<_>>();
        let [_, sx] = g.stride;
        let pl = g.pads[1];
        let cols = g.kw * TRIALS;
        let mut bmat = Zeroizing::new(vec![0i32; cols * g.w]);
        for x in 0..g.w {
            for kx in 0..g.kw {
                // ox·sx + kx − pl = x
                let Some(num) = (x + pl).checked_sub(kx) else {
                    continue;
                };
                if num % sx != 0 || num / sx >= g.ow {
                    continue;
                }
                for (j, t) in trials.iter().enumerate() {
                    bmat[(kx * TRIALS + j) * g.w + x] = centred(t.b[num / sx]) as i32;
                }
            }
        }
        Ok(Self { g, trials, bmat })
    }

    /// Bytes held for the layer's lifetime.
    pub(crate) fn bytes(&self) -> usize {
        self.trials
            .iter()
            .map(|t| 4 * (t.s.len() + t.a.len() + t.b.len() + t.v.len()))
            .sum::<usize>()
            + 4 * self.bmat.len()
    }

    /// Offline, with the pad: Σ sᵢ·a_y·b_x·u_{i,y,x} mod p per trial for the pad's u = W·r
    /// (the enclave keeps these with the pad; the reply side then never reads u).
    pub(crate) fn pad_sums(&self, u: &[u32], threads: usize) -> [u32; TRIALS] {
        let (top, sums) = self.scan_reply(u, threads);
        debug_assert!(top < P, "u is reduced");
        sums
    }

    /// One pass over a reply y′ on `threads` enclave threads: its largest word (the caller
    /// refuses ≥ p) and Σ sᵢ·a_y·b_x·y′_{i,y,x} mod p per trial.
    pub(crate) fn scan_reply(&self, y: &[u32], threads: usize) -> (u32, [u32; TRIALS]) {
        let g = &self.g;
        assert_eq!(
            y.len(),
            g.out_c * g.oh * g.ow,
            "probe: reply does not match the layer"
        );
        let parts = split(g.out_c, threads, |r0, r1| lhs(self, y, r0, r1));
        let top = parts.iter().map(|p| p.0).max().unwrap_or(0);
        (top, sum_mod(parts.iter().map(|p| p.1)))
    }

    /// Whether the reply whose [`scan_reply`](Self::scan_reply) sums are `reply`, for a pad
    /// whose [`pad_sums`](Self::pad_sums) are `pad`, is W·x̃ + u for the enclave's requantized
    /// input `xq` (on `threads` enclave threads): Σ s a b (y′ − u) ≡ sᵀ·W·X·(a⊗b) per trial.
    pub(crate) fn check(
        &self,
        xq: &[i32],
        reply: [u32; TRIALS],
        pad: [u32; TRIALS],
        threads: usize,
    ) -> bool {
        let g = &self.g;
        assert_eq!(
            xq.len(),
            g.in_c * g.h * g.w,
            "probe: input does not match the layer"
        );
        let rhs = sum_mod(split(g.in_c, threads, |c0, c1| rhs(self, xq, c0, c1)).into_iter());
        let mut ok = true;
        for ((&r, &u), &x) in reply.iter().zip(&pad).zip(&rhs) {
            // Not short-circuited: the same work whichever trial fails.
            ok &= origami_field::sub(r, u) == x;
        }
        ok
    }
}

with_avx2!(
    /// [`lhs_kernel`], with AVX-512 or AVX2 where the CPU has them.
    fn lhs(p: &Probe, y: &[u32], r0: usize, r1: usize) -> (u32, [u32; TRIALS]) => lhs_kernel
);

/// Over output channels r0..r1: the largest word of y and Σ sᵢ·Σ a_y b_x y_{i,y,x} mod p per
/// trial, in one pass over each output row.
#[inline(always)]
fn lhs_kernel(p: &Probe, y: &[u32], r0: usize, r1: usize) -> (u32, [u32; TRIALS]) {
    let (oh, ow) = (p.g.oh, p.g.ow);
    let bs: [&[u32]; TRIALS] = std::array::from_fn(|t| &p.trials[t].b[..ow]);
    let mut top = 0u32;
    let mut out = [0u64; TRIALS];
    for i in r0..r1 {
        let mut row = [0u64; TRIALS];
        for oy in 0..oh {
            let at = (i * oh + oy) * ow;
            let mut q = [0u64; TRIALS];
            // b < 2^24 and y < 2^24 in an honest reply: products < 2^48, ow < 2^14 of them
            // below 2^62 (checked when the probe is built). A word ≥ p (refused by the
            // caller from `top`) may wrap the sum: it is never used then.
            for (x, &yv) in y[at..at + ow].iter().enumerate() {
                top = top.max(yv);
                for t in 0..TRIALS {
                    q[t] = q[t].wrapping_add(bs[t][x] as u64 * yv as u64);
                }
            }
            for ((t, r), qt) in p.trials.iter().zip(row.iter_mut()).zip(q) {
                *r = (*r + t.a[oy] as u64 * (qt % P as u64)) % P as u64;
            }
        }
        for ((t, o), r) in p.trials.iter().zip(out.iter_mut()).zip(row) {
            *o = (*o + t.s[i] as u64 * r) % P as u64;
        }
    }
    (top, out.map(|v| v as u32))
}

with_avx2!(
    /// [`rhs_kernel`], with AVX-512 or AVX2 where the CPU has them.
    fn rhs(p: &Probe, xq: &[i32], c0: usize, c1: usize) -> [u32; TRIALS] => rhs_kernel
);

/// Σ over input channels c0..c1 and the kernel of vₖ·(X·(a⊗b))ₖ, per trial.
#[inline(always)]
fn rhs_kernel(p: &Probe, xq: &[i32], c0: usize, c1: usize) -> [u32; TRIALS] {
    let g = &p.g;
    let [sy, _] = g.stride;
    let pt = g.pads[0];
    // z[(ky·TRIALS + j)·w + x] = Σ_oy a_j[oy] · x̃[c, oy·sy + ky − pt, x] for one channel: each
    // input row added, scaled, to the rows of z its kernel rows reach (exact in i64, see
    // `Probe::new`); then Σ_x z·B per kernel column.
    let mut z = Zeroizing::new(vec![0i64; g.kh * TRIALS * g.w]);
    let mut zr = Zeroizing::new(vec![0i32; g.w]);
    let mut out = [0u64; TRIALS];
    for c in c0..c1 {
        z.fill(0);
        for iy in 0..g.h {
            let row = &xq[(c * g.h + iy) * g.w..][..g.w];
            for ky in 0..g.kh {
                // oy·sy + ky − pt = iy
                let Some(num) = (iy + pt).checked_sub(ky) else {
                    continue;
                };
                if num % sy != 0 || num / sy >= g.oh {
                    continue;
                }
                for (j, t) in p.trials.iter().enumerate() {
                    // i32 × i32 → i64 products (vpmuldq).
                    let a = centred(t.a[num / sy]) as i32;
                    let zrow = &mut z[(ky * TRIALS + j) * g.w..][..g.w];
                    for (zv, &x) in zrow.iter_mut().zip(row) {
                        *zv += a as i64 * x as i64;
                    }
                }
            }
        }
        for ky in 0..g.kh {
            for (j, (t, o)) in p.trials.iter().zip(out.iter_mut()).enumerate() {
                for (d, &v) in zr.iter_mut().zip(&z[(ky * TRIALS + j) * g.w..][..g.w]) {
                    *d = centred(reduce(v)) as i32;
                }
                for kx in 0..g.kw {
                    let bcol = &p.bmat[(kx * TRIALS + j) * g.w..][..g.w];
                    let sum: i64 = zr
                        .iter()
                        .zip(bcol)
                        .map(|(&x, &b)| x as i64 * b as i64)
                        .sum();
                    let vk = t.v[(c * g.kh + ky) * g.kw + kx] as u64;
                    *o = (*o + vk * reduce(sum) as u64) % P as u64;
                }
            }
        }
    }
    out.map(|v| v as u32)
}

/// The representative of a field element in (−p/2, p/2).
#[inline(always)]
fn centred(v: u32) -> i64 {
    let v = v as i64;
    if v > HALF {
        v - P_I64
    } else {
        v
    }
}

/// `f` over `0..n` in up to `threads` contiguous ranges (scoped threads), one result per range.
fn split<T, F>(n: usize, threads: usize, f: F) -> Vec<T>
where
    T: Send,
    F: Fn(usize, usize) -> T + Sync,
{
    let parts = threads.max(1).min(n).max(1);
    let per = n.div_ceil(parts);
    if parts == 1 {
        return vec![f(0, n)];
    }
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
}

/// Per-trial sums mod p.
fn sum_mod(parts: impl Iterator<Item = [u32; TRIALS]>) -> [u32; TRIALS] {
    let mut out = [0u32; TRIALS];
    for s in parts {
        for (o, v) in out.iter_mut().zip(s) {
            *o = origami_field::add(*o, v);
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

    /// The core's use: the pad's sums offline, the reply's range and sums, then the check.
    fn verify(probe: &Probe, x: &[i32], y: &[u32], u: &[u32], threads: usize) -> bool {
        let pad = probe.pad_sums(u, threads);
        let (top, reply) = probe.scan_reply(y, threads);
        assert!(top < P);
        probe.check(x, reply, pad, threads)
    }

    /// A reply y = W·x̃ + u mod p computed by the definition, and its pad u.
    fn reply(g: &ConvGeom, x: &[i32], w: &[f64]) -> (Vec<u32>, Vec<u32>) {
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
        (y, u)
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
            assert!(verify(&probe, &x, &y, &u, threads), "{g:?}");
            for pos in [0, y.len() / 2, y.len() - 1] {
                for delta in [1, P - 1, 1 << 20] {
                    let mut bad = y.clone();
                    bad[pos] = (bad[pos] + delta) % P;
                    assert!(
                        !verify(&probe, &x, &bad, &u, threads),
                        "{g:?} pos {pos} delta {delta}"
                    );
                }
            }
            // A wrong pad is a wrong reply too.
            let mut bad_u = u.clone();
            bad_u[1] = (bad_u[1] + 1) % P;
            assert!(!verify(&probe, &x, &y, &bad_u, threads), "{g:?}");
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
        assert!(verify(&probe, &x, &y, &u, 1));
        let mut bad = y.clone();
        bad[out_f - 1] = (bad[out_f - 1] + 1) % P;
        assert!(!verify(&probe, &x, &bad, &u, 1));
    }
}
