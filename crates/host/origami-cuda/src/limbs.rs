//! The exact field arithmetic of the GPU path, in pure Rust: the limb scheme, the buffer layouts
//! the kernels and cuBLAS share, and a CPU emulation of the whole pipeline (used by the tests, so
//! the arithmetic is verified on a machine with no GPU).
//!
//! # The scheme
//! A field layer computes `y = W·x̄ mod p` for blinded `x̄ ∈ [0, p)`, `p = 2^24 − 3`, and integer
//! weights `|w| ≤ 2^15`. The GPU's exact fast path is an int8 × int8 → int32 GEMM, so both
//! operands are cut into int8 digits:
//!
//! * **Inputs.** Three signed base-256 digits `d_i ∈ [−128, 127]` represent exactly the integers
//!   `[−128·S, 127·S]` with `S = 1 + 2^8 + 2^16 = 65 793`, i.e. `[−0x80_8080, 0x7F_7F7F]`: 2^24
//!   consecutive integers, more than p. So every `x̄` has a representative
//!   `v ≡ x̄ (mod p)` there: `v = x̄` if `x̄ ≤ 0x7F_7F7F`, else `v = x̄ − p` (≥ −0x80_8077).
//!   The digits are read off `u = v + 0x80_8080 ∈ [0, 2^24)`: `d_i = byte_i(u) − 128`, and
//!   `v = d_0 + 2^8·d_1 + 2^16·d_2` exactly. Zero (the padding) has digits 0, 0, 0.
//! * **Weights.** The same balanced digits with `L_w` limbs, the fewest that cover the layer's
//!   weights: 1 limb covers `[−128, 127]` (the planner's 8-bit weights), 2 cover
//!   `[−32 896, 32 639]`, 3 cover `[−8 421 504, 8 355 711]` (so `±2^15` needs 3: `+32 768` is one
//!   past the 2-limb range).
//! * **Products.** `Σ_k w_k·x̄_k ≡ Σ_k w_k·v_k = Σ_t 2^{8t}·s_t` with
//!   `s_t = Σ_{i+j=t} Σ_k e_{j,k}·d_{i,k}`, exactly over the integers. One GEMM computes all the
//!   `Σ_k e_{j,k}·d_{i,k}` at once: the weight limbs are stacked as rows, the input limbs as
//!   column blocks. A reduction kernel then sums the `s_t` in 64 bits and folds them mod p by
//!   Horner's rule, on the device; only u32 results come back.
//!
//! # No-overflow bound (the int32 accumulator)
//! Every product `e·d` has `|e·d| ≤ 128·128 = 2^14` (both factors lie in `[−128, 127]`). A GEMM
//! over `k` terms therefore stays within `k·2^14` in magnitude, and so does *every partial sum*,
//! whatever order the tensor cores add in. int32 holds up to `2^31 − 1`, so `k ≤ 131 071` is
//! safe and `k = 2^17` is not (`2^17·2^14 = 2^31`). We cut K into chunks of
//! [`K_CHUNK`]` = 2^16` terms, half the limit: `|C| ≤ 2^30` for every chunk; larger K runs one
//! GEMM per chunk and the reduction adds the chunks in 64 bits. (The worst case is reached:
//! [`WORST_INPUT`] has digits −128, −127, −128 and the weight −128 is one limb −128.)
//!
//! # Recombination bound (64-bit)
//! `s_t` adds at most 3 pairs `(i, j)` with `i + j = t` per chunk, over at most
//! `⌈K / 2^16⌉ ≤ 2^15` chunks (K < 2^31: cuBLAS takes `int` sizes), each `≤ 2^30`:
//! `|s_t| < 3·2^15·2^30 < 2^47`. Horner's step `r ← (256·r + (s_t mod p)) mod p` with
//! `r ∈ [0, p)` stays below `2^32 + 2^24` in magnitude. Both fit an i64 with room to spare.

use origami_accel::{AccelError, LinearShape};
use origami_model::linalg::ConvGeom;

/// The field modulus (2^24 − 3).
pub const P: u32 = origami_field::P;
/// Input digits per blinded value.
pub const INPUT_LIMBS: usize = 3;
/// `128·(1 + 2^8 + 2^16)`: added to a representative to make its balanced digits plain bytes.
pub const LIMB_OFFSET: u32 = 0x80_8080;
/// `127·(1 + 2^8 + 2^16)`: the largest value three balanced digits reach; larger `x̄` are
/// represented by `x̄ − p`.
pub const LIMB_THRESHOLD: u32 = 0x7F_7F7F;
/// A blinded value whose digits are −128, −127, −128 (`u = 0x00_0100`): the largest digit
/// magnitudes an input reaches (all three at −128 would be `v = −0x80_8080 ≡ 0x7F_7F7D`, which
/// is represented by itself instead).
pub const WORST_INPUT: u32 = P - LIMB_OFFSET + 0x100;
/// Most weight limbs the scheme supports (3 cover every |w| ≤ 2^15 = MAX_FIELD_WEIGHT).
pub const MAX_WEIGHT_LIMBS: usize = 3;
/// Terms per int32 GEMM accumulation: `K_CHUNK·2^14 = 2^30 < 2^31` (see the module docs).
pub const K_CHUNK: usize = 1 << 16;
/// Largest number of GEMM terms one int32 accumulator can take without overflow.
pub const K_INT32_LIMIT: usize = ((1u64 << 31) - 1) as usize / (128 * 128);
/// Powers of 256 in the recombination: `t = i + j ∈ [0, INPUT_LIMBS + MAX_WEIGHT_LIMBS − 1)`.
pub const MAX_TERMS: usize = INPUT_LIMBS + MAX_WEIGHT_LIMBS - 1;
/// Row alignment of the int8 operands (elements = bytes): K is padded with zeros to a multiple
/// of 16 (cuBLAS's int8 tensor-core path wants `k % 4 == 0` and 4-aligned leading dimensions).
pub const K_ALIGN: usize = 16;
/// Alignment of the GEMM's M (weight rows per limb) and of the pixel count per limb block.
pub const MN_ALIGN: usize = 4;

const _: () = assert!(K_CHUNK <= K_INT32_LIMIT && K_CHUNK.is_multiple_of(K_ALIGN));
const _: () = assert!(LIMB_OFFSET as u64 + LIMB_THRESHOLD as u64 == (1 << 24) - 1);
const _: () = assert!((P as u64) < (1 << 24) && P > LIMB_THRESHOLD);

/// The representative of `x̄ ∈ [0, p)` that three balanced digits can hold:
/// `v ≡ x̄ (mod p)`, `v ∈ [−0x80_8080, 0x7F_7F7F]`.
#[inline]
pub fn signed_rep(x: u32) -> i32 {
    debug_assert!(x < P);
    if x > LIMB_THRESHOLD {
        x as i32 - P as i32
    } else {
        x as i32
    }
}

/// The three balanced base-256 digits of `x̄`'s representative, least significant first:
/// `signed_rep(x) = d0 + 256·d1 + 65536·d2`.
#[inline]
pub fn input_digits(x: u32) -> [i8; INPUT_LIMBS] {
    let u = (signed_rep(x) + LIMB_OFFSET as i32) as u32; // ∈ [0, 2^24)
    [
        ((u & 0xff) as i32 - 128) as i8,
        (((u >> 8) & 0xff) as i32 - 128) as i8,
        (((u >> 16) & 0xff) as i32 - 128) as i8,
    ]
}

/// `S_n = 1 + 256 + … + 256^(n−1)`: n balanced digits cover `[−128·S_n, 127·S_n]`.
fn digit_span(n: usize) -> i64 {
    (0..n).map(|i| 256i64.pow(i as u32)).sum()
}

/// The fewest balanced int8 limbs (1 to 3) that represent every weight in `[min, max]`, or
/// `None` when three are not enough.
pub fn weight_limbs_for(min: i32, max: i32) -> Option<usize> {
    (1..=MAX_WEIGHT_LIMBS).find(|&n| {
        let s = digit_span(n);
        -128 * s <= min as i64 && max as i64 <= 127 * s
    })
}

/// The `n` balanced base-256 digits of `w` (least significant first; unused limbs are 0).
/// `w` must lie in the range of `n` limbs (see [`weight_limbs_for`]).
pub fn weight_digits(w: i32, n: usize) -> [i8; MAX_WEIGHT_LIMBS] {
    let mut out = [0i8; MAX_WEIGHT_LIMBS];
    let u = w as i64 + 128 * digit_span(n);
    debug_assert!(
        u >= 0 && u < 256i64.pow(n as u32),
        "w = {w} needs more than {n} limbs"
    );
    for (i, d) in out.iter_mut().enumerate().take(n) {
        *d = (((u >> (8 * i)) & 0xff) - 128) as i8;
    }
    out
}

/// Folds the per-power sums `s_t` (coefficient of 256^t) into `Σ 256^t·s_t mod p`, by Horner's
/// rule from the top, exactly as the `field_reduce` kernel does.
pub fn recombine(s: &[i64]) -> u32 {
    let p = P as i64;
    let mut r: i64 = 0;
    for &st in s.iter().rev() {
        // r ∈ [0, p): 256·r < 2^32; |st % p| < p. No overflow (module docs).
        r = (r * 256 + st % p) % p;
        if r < 0 {
            r += p;
        }
    }
    r as u32
}

/// One int8 GEMM call in cuBLAS terms (column-major, `op(A) = T`, `op(B) = N`, α = 1, β = 0,
/// batched over groups with strides). Offsets are in elements of the A/B/C buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct I8Gemm {
    pub m: i32,
    pub n: i32,
    pub k: i32,
    pub lda: i32,
    pub ldb: i32,
    pub ldc: i32,
    pub a_off: usize,
    pub b_off: usize,
    pub c_off: usize,
    pub stride_a: i64,
    pub stride_b: i64,
    pub stride_c: i64,
    pub batch: i32,
}

/// Layout of one field layer on the device. A dense layer is the 1×1 convolution of a 1×1 image
/// with `in_f` channels, so one plan (and one pair of kernels) covers both.
///
/// Buffers (per image; `g` = group, `i` = input limb, `j` = weight limb, `c` = K chunk):
/// * A (int8 weights, uploaded once): `A[g][j·mp + oc_in_group][kk]`, rows of `kp` bytes
///   (`op(A) = T`, `lda = kp`), zero in the padding.
/// * B (int8 input digits): `B[g][i·pp + pixel][kk]` — column `i·pp + pixel` of a column-major
///   `kp × nc` matrix (`ldb = kp`), zero in the padding.
/// * C (int32): `C[c][g][col][row]`, column-major `mg × nc` per (chunk, group), `ldc = mg`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldPlan {
    pub geom: ConvGeom,
    /// Input channels per group.
    pub ipg: usize,
    /// Output channels per group.
    pub opg: usize,
    /// Terms per output (`ipg·kh·kw`) and that padded to [`K_ALIGN`].
    pub k: usize,
    pub kp: usize,
    /// Output pixels (`oh·ow`) and that padded to [`MN_ALIGN`].
    pub npix: usize,
    pub pp: usize,
    /// GEMM columns per group: `INPUT_LIMBS·pp`.
    pub nc: usize,
    /// Output channels per group padded to [`MN_ALIGN`]; weight limbs; GEMM rows `lw·mp`.
    pub mp: usize,
    pub lw: usize,
    pub mg: usize,
    /// K chunks of at most [`K_CHUNK`] terms.
    pub chunks: usize,
}

fn round_up(v: usize, a: usize) -> usize {
    v.div_ceil(a) * a
}

fn fits_i32(v: usize) -> bool {
    v <= i32::MAX as usize
}

impl FieldPlan {
    /// The plan for a layer of this shape and these weights (which must already satisfy
    /// `FieldLayer::check_exact`; this only checks what the GPU layout itself needs).
    pub fn new(shape: &LinearShape, weight: &[i32]) -> Result<Self, AccelError> {
        let geom = shape.as_conv();
        let g = &geom;
        if g.groups == 0 || !g.in_c.is_multiple_of(g.groups) || !g.out_c.is_multiple_of(g.groups) {
            return Err(AccelError::BadInput(format!(
                "groups {} must divide {} input and {} output channels",
                g.groups, g.in_c, g.out_c
            )));
        }
        if weight.len() != g.out_c * g.k() {
            return Err(AccelError::BadInput(format!(
                "{} weights for a layer needing {}",
                weight.len(),
                g.out_c * g.k()
            )));
        }
        let min = weight.iter().copied().min().unwrap_or(0);
        let max = weight.iter().copied().max().unwrap_or(0);
        let lw = weight_limbs_for(min, max).ok_or_else(|| {
            AccelError::BadInput(format!(
                "weights in [{min}, {max}] need more than {MAX_WEIGHT_LIMBS} int8 limbs"
            ))
        })?;
        let ipg = g.in_c / g.groups;
        let opg = g.out_c / g.groups;
        let k = g.k();
        let kp = round_up(k.max(1), K_ALIGN);
        let npix = g.oh * g.ow;
        let pp = round_up(npix.max(1), MN_ALIGN);
        let nc = INPUT_LIMBS * pp;
        let mp = round_up(opg.max(1), MN_ALIGN);
        let mg = lw * mp;
        let chunks = kp.div_ceil(K_CHUNK);
        let plan = Self {
            geom,
            ipg,
            opg,
            k,
            kp,
            npix,
            pp,
            nc,
            mp,
            mg,
            lw,
            chunks,
        };
        // Every size handed to cuBLAS or a kernel as an `int` must fit one.
        let ints = [
            g.in_c,
            g.h,
            g.w,
            g.out_c,
            kp,
            nc,
            mg,
            npix,
            g.in_len(),
            g.out_len(),
        ];
        if !ints.iter().all(|&v| fits_i32(v)) || !fits_i32(g.groups) {
            return Err(AccelError::BadInput(format!(
                "layer too large for 32-bit GEMM sizes: {g:?}"
            )));
        }
        plan.b_len()
            .checked_add(plan.c_len())
            .ok_or_else(|| AccelError::BadInput("layer buffers overflow usize".into()))?;
        Ok(plan)
    }

    /// Elements of A (int8).
    pub fn a_len(&self) -> usize {
        self.geom.groups * self.mg * self.kp
    }
    /// Elements of B (int8).
    pub fn b_len(&self) -> usize {
        self.geom.groups * self.nc * self.kp
    }
    /// Elements of C (int32).
    pub fn c_len(&self) -> usize {
        self.chunks * self.geom.groups * self.mg * self.nc
    }

    /// The weights as the A operand: limb j of output channel `oc` of group g is row
    /// `j·mp + (oc − g·opg)` of group g's `mg × kp` block.
    pub fn pack_weights(&self, weight: &[i32]) -> Vec<i8> {
        let mut a = vec![0i8; self.a_len()];
        for oc in 0..self.geom.out_c {
            let (g, ocl) = (oc / self.opg, oc % self.opg);
            for kk in 0..self.k {
                let d = weight_digits(weight[oc * self.k + kk], self.lw);
                for (j, &dj) in d.iter().enumerate().take(self.lw) {
                    a[(g * self.mg + j * self.mp + ocl) * self.kp + kk] = dj;
                }
            }
        }
        a
    }

    /// The int8 GEMMs, one per K chunk (each batched over the groups).
    pub fn gemms(&self) -> Vec<I8Gemm> {
        let groups = self.geom.groups;
        (0..self.chunks)
            .map(|c| {
                let k0 = c * K_CHUNK;
                I8Gemm {
                    m: self.mg as i32,
                    n: self.nc as i32,
                    k: (self.kp - k0).min(K_CHUNK) as i32,
                    lda: self.kp as i32,
                    ldb: self.kp as i32,
                    ldc: self.mg as i32,
                    a_off: k0,
                    b_off: k0,
                    c_off: c * groups * self.mg * self.nc,
                    stride_a: (self.mg * self.kp) as i64,
                    stride_b: (self.nc * self.kp) as i64,
                    stride_c: (self.mg * self.nc) as i64,
                    batch: groups as i32,
                }
            })
            .collect()
    }
}

/// What cuBLAS computes for one [`I8Gemm`] (the reference for the CPU emulation): for each batch
/// entry, `C[r + col·ldc] = Σ_kk A[kk + r·lda]·B[kk + col·ldb]`, accumulated in **checked** int32
/// so a violated bound panics instead of wrapping.
pub fn i8_gemm_reference(g: &I8Gemm, a: &[i8], b: &[i8], c: &mut [i32]) {
    for bi in 0..g.batch as usize {
        let ao = g.a_off + bi * g.stride_a as usize;
        let bo = g.b_off + bi * g.stride_b as usize;
        let co = g.c_off + bi * g.stride_c as usize;
        for col in 0..g.n as usize {
            let bcol = &b[bo + col * g.ldb as usize..][..g.k as usize];
            for r in 0..g.m as usize {
                let arow = &a[ao + r * g.lda as usize..][..g.k as usize];
                let mut acc: i32 = 0;
                for (&x, &y) in arow.iter().zip(bcol) {
                    acc = acc
                        .checked_add(x as i32 * y as i32)
                        .expect("int32 accumulator overflow: the K_CHUNK bound is broken");
                }
                c[co + r + col * g.ldc as usize] = acc;
            }
        }
    }
}

/// The `field_im2col_limbs` kernel in Rust: the B operand for one image.
pub fn im2col_limbs_reference(plan: &FieldPlan, x: &[u32]) -> Vec<i8> {
    let g = &plan.geom;
    let mut b = vec![0i8; plan.b_len()];
    let limb_stride = plan.pp * plan.kp;
    for grp in 0..g.groups {
        for pix in 0..plan.npix {
            let (oy, ox) = (pix / g.ow, pix % g.ow);
            for kk in 0..plan.k {
                let ci = kk / (g.kh * g.kw);
                let (ky, kx) = ((kk / g.kw) % g.kh, kk % g.kw);
                let iy = (oy * g.stride[0] + ky) as isize - g.pads[0] as isize;
                let ix = (ox * g.stride[1] + kx) as isize - g.pads[1] as isize;
                if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                    continue; // zero: all digits 0
                }
                let xb = x[((grp * plan.ipg + ci) * g.h + iy as usize) * g.w + ix as usize];
                let base = grp * INPUT_LIMBS * limb_stride + pix * plan.kp + kk;
                for (i, d) in input_digits(xb).into_iter().enumerate() {
                    b[base + i * limb_stride] = d;
                }
            }
        }
    }
    b
}

/// The `field_reduce` kernel in Rust: `y[oc·npix + pixel]` from C.
pub fn reduce_reference(plan: &FieldPlan, c: &[i32]) -> Vec<u32> {
    let g = &plan.geom;
    (0..g.out_c * plan.npix)
        .map(|idx| {
            let (oc, pix) = (idx / plan.npix, idx % plan.npix);
            let (grp, ocl) = (oc / plan.opg, oc % plan.opg);
            let mut s = [0i64; MAX_TERMS];
            for ch in 0..plan.chunks {
                let block = (ch * g.groups + grp) * plan.nc * plan.mg;
                for i in 0..INPUT_LIMBS {
                    for j in 0..plan.lw {
                        s[i + j] +=
                            c[block + (i * plan.pp + pix) * plan.mg + j * plan.mp + ocl] as i64;
                    }
                }
            }
            recombine(&s[..INPUT_LIMBS + plan.lw - 1])
        })
        .collect()
}

/// The whole GPU field pipeline emulated on the CPU with the same layouts and the same GEMM
/// calls: im2col + limbs, the int8 GEMMs (checked int32), the reduction.
pub fn emulate_field(plan: &FieldPlan, packed_a: &[i8], x: &[u32]) -> Vec<u32> {
    let b = im2col_limbs_reference(plan, x);
    let mut c = vec![0i32; plan.c_len()];
    for gm in plan.gemms() {
        i8_gemm_reference(&gm, packed_a, &b, &mut c);
    }
    reduce_reference(plan, &c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use origami_accel::conformance::{reference, Lcg};
    use origami_model::Conv;

    #[test]
    fn input_digits_reconstruct_every_boundary() {
        let mut rng = Lcg(1);
        let mut xs: Vec<u32> = vec![
            0,
            1,
            127,
            128,
            255,
            256,
            LIMB_THRESHOLD - 1,
            LIMB_THRESHOLD,
            LIMB_THRESHOLD + 1,
            WORST_INPUT,
            P / 2,
            P / 2 + 1,
            P - 2,
            P - 1,
        ];
        xs.extend((0..100_000).map(|_| rng.field()));
        for x in xs {
            let d = input_digits(x);
            let v = d[0] as i64 + 256 * d[1] as i64 + 65536 * d[2] as i64;
            assert_eq!(v, signed_rep(x) as i64, "x = {x}");
            assert_eq!(v.rem_euclid(P as i64), x as i64, "x = {x}");
        }
        assert_eq!(input_digits(0), [0, 0, 0]);
        assert_eq!(input_digits(WORST_INPUT), [-128, -127, -128]);
        assert_eq!(input_digits(P - LIMB_OFFSET), [125, 127, 127]);
        assert_eq!(input_digits(LIMB_THRESHOLD + 1), [-125, -128, -128]);
        assert_eq!(input_digits(LIMB_THRESHOLD), [127, 127, 127]);
    }

    #[test]
    fn input_digits_exhaustive_over_the_field() {
        // All 2^24 − 3 values: 16 M digit decompositions, well under a second.
        for x in 0..P {
            let d = input_digits(x);
            let v = d[0] as i32 + 256 * d[1] as i32 + 65536 * d[2] as i32;
            assert_eq!(v, signed_rep(x));
            assert!(v.rem_euclid(P as i32) as u32 == x);
        }
    }

    #[test]
    fn weight_limbs_cover_the_allowed_range() {
        assert_eq!(weight_limbs_for(-128, 127), Some(1));
        assert_eq!(weight_limbs_for(-127, 128), Some(2));
        assert_eq!(weight_limbs_for(-129, 0), Some(2));
        assert_eq!(weight_limbs_for(-32_768, 32_639), Some(2));
        assert_eq!(weight_limbs_for(0, 32_768), Some(3)); // +2^15 is one past 2 limbs
        assert_eq!(weight_limbs_for(-(1 << 15), 1 << 15), Some(3));
        assert_eq!(weight_limbs_for(-8_421_504, 8_355_711), Some(3));
        assert_eq!(weight_limbs_for(0, 8_355_712), None);
        let max = origami_accel::MAX_FIELD_WEIGHT;
        for n in 1..=3 {
            let s = digit_span(n) as i32;
            let lo = if n == 3 { -max } else { -128 * s };
            let hi = if n == 3 { max } else { 127 * s };
            for w in (lo..=hi)
                .step_by(if n == 1 { 1 } else { 7 })
                .chain([lo, hi])
            {
                let d = weight_digits(w, n);
                let v: i64 = (0..n).map(|i| d[i] as i64 * 256i64.pow(i as u32)).sum();
                assert_eq!(v, w as i64, "w = {w}, {n} limbs");
                assert!(d[n..].iter().all(|&x| x == 0));
            }
        }
    }

    #[test]
    fn recombine_matches_i128() {
        let mut rng = Lcg(2);
        for _ in 0..10_000 {
            let s: Vec<i64> = (0..MAX_TERMS)
                .map(|_| (rng.next_u64() as i64 - (1 << 30)) << (rng.next_u64() % 17))
                .collect();
            let want: i128 = s
                .iter()
                .enumerate()
                .map(|(t, &v)| v as i128 * 256i128.pow(t as u32))
                .sum();
            assert_eq!(recombine(&s) as i128, want.rem_euclid(P as i128));
        }
        // Extremes of the stated bound.
        let big = (1i64 << 47) - 1;
        for s in [[big; 5], [-big; 5], [big, -big, big, -big, big]] {
            let want: i128 = s
                .iter()
                .enumerate()
                .map(|(t, &v)| v as i128 * 256i128.pow(t as u32))
                .sum();
            assert_eq!(recombine(&s) as i128, want.rem_euclid(P as i128));
        }
    }

    #[test]
    fn int32_bound_is_tight_where_stated() {
        // K_CHUNK terms of the largest product fit; the stated limit is the true one.
        assert_eq!(K_CHUNK as i64 * 128 * 128, 1 << 30);
        assert!((K_INT32_LIMIT as i64) * 128 * 128 <= i32::MAX as i64);
        assert!((K_INT32_LIMIT as i64 + 1) * 128 * 128 > i32::MAX as i64);
    }

    fn conv(
        in_c: usize,
        hw: usize,
        out_c: usize,
        k: usize,
        s: usize,
        p: usize,
        groups: usize,
    ) -> LinearShape {
        let c = Conv {
            out_c,
            in_c,
            kh: k,
            kw: k,
            stride: [s, s],
            pads: [p, p, p + 1, p],
            groups,
            weight: vec![],
            bias: vec![],
        };
        LinearShape::Conv(ConvGeom::new(&c, hw, hw + 2).unwrap())
    }

    fn check_layer(shape: LinearShape, weight: Vec<i32>, inputs: &[Vec<u32>]) {
        let plan = FieldPlan::new(&shape, &weight).unwrap();
        let a = plan.pack_weights(&weight);
        for (n, x) in inputs.iter().enumerate() {
            assert_eq!(
                emulate_field(&plan, &a, x),
                reference(&shape, &weight, x),
                "{shape:?} input #{n} (plan {plan:?})"
            );
        }
    }

    fn inputs(len: usize, rng: &mut Lcg) -> Vec<Vec<u32>> {
        vec![
            vec![P - 1; len],
            vec![WORST_INPUT; len],
            vec![LIMB_THRESHOLD; len],
            vec![LIMB_THRESHOLD + 1; len],
            vec![0; len],
            (0..len).map(|_| rng.field()).collect(),
        ]
    }

    #[test]
    fn emulated_pipeline_is_exact_on_convolutions() {
        let mut rng = Lcg(3);
        for (shape, wmax) in [
            (conv(3, 9, 8, 3, 1, 1, 1), 127),
            (conv(8, 10, 8, 3, 2, 1, 4), 128),    // 2 weight limbs
            (conv(6, 7, 6, 3, 1, 1, 6), 1 << 15), // depthwise, 3 limbs
            (conv(16, 5, 4, 1, 1, 0, 1), 1 << 15),
            (conv(5, 6, 7, 2, 3, 0, 1), 300),
        ] {
            let n = shape.weight_len();
            for worst in [true, false] {
                let w: Vec<i32> = (0..n)
                    .map(|j| match (worst, j % 3) {
                        (true, 0) => -wmax,
                        (true, _) => wmax,
                        _ => rng.weight(wmax),
                    })
                    .collect();
                check_layer(shape, w, &inputs(shape.in_len(), &mut rng));
            }
        }
    }

    #[test]
    fn emulated_pipeline_is_exact_at_the_weight_limit() {
        // |w| = 2^15 (MAX_FIELD_WEIGHT), the largest K that check_exact allows with it
        // (2^15·K·2^24 < 2^52 ⇒ K < 2^13), every x̄ at p − 1 and at the all-(−128) digits.
        let mut rng = Lcg(4);
        let k = (1 << 13) - 1;
        let shape = LinearShape::Dense { in_f: k, out_f: 3 };
        for w0 in [1 << 15, -(1 << 15)] {
            let w: Vec<i32> = (0..3 * k)
                .map(|j| if j % 5 == 4 { -w0 } else { w0 })
                .collect();
            check_layer(shape, w, &inputs(k, &mut rng));
        }
    }

    #[test]
    fn emulated_pipeline_chunks_k_beyond_the_int32_limit() {
        // K = 140 000 > 2·K_CHUNK and > K_INT32_LIMIT: three chunks. With x̄ = WORST_INPUT digits
        // 0 and 2 are −128 and with w = −128 so is the weight limb: a full chunk accumulates
        // exactly K_CHUNK·2^14 = 2^30 (checked), and one unchunked GEMM would have overflowed.
        let k = 140_000;
        let shape = LinearShape::Dense { in_f: k, out_f: 2 };
        let w = vec![-128; 2 * k];
        let plan = FieldPlan::new(&shape, &w).unwrap();
        assert_eq!(plan.chunks, 3);
        assert_eq!(plan.lw, 1);
        assert!(k * 128 * 128 > i32::MAX as usize);
        let mut rng = Lcg(5);
        check_layer(shape, w, &inputs(k, &mut rng)[..2]);
        let w: Vec<i32> = (0..2 * k).map(|_| rng.weight(127)).collect();
        check_layer(shape, w, &inputs(k, &mut rng)[5..]);
    }

    #[test]
    fn gemm_sizes_follow_the_alignment_rules() {
        for shape in [
            conv(3, 9, 8, 3, 1, 1, 1),
            conv(6, 7, 6, 3, 1, 1, 6),
            LinearShape::Dense { in_f: 37, out_f: 5 },
            LinearShape::Dense {
                in_f: 25_088,
                out_f: 3,
            },
        ] {
            let w = vec![1; shape.weight_len()];
            let plan = FieldPlan::new(&shape, &w).unwrap();
            for g in plan.gemms() {
                assert_eq!(g.k % 4, 0);
                assert_eq!(g.lda % 4, 0);
                assert_eq!(g.ldb % 4, 0);
                assert_eq!(g.m % 4, 0);
                assert!(g.k as usize <= K_CHUNK);
                assert_eq!(g.a_off % K_ALIGN, 0);
                assert_eq!(g.stride_a % 16, 0);
                assert_eq!(g.stride_b % 16, 0);
            }
        }
    }
}
