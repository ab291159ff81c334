//! Convolution and dense layers as GEMMs through faer, shared by every executor: the float
//! reference and tail (`f32`), the exact field layers of the CPU accelerator (`f64`, exact below
//! 2^53) and the enclave's own integer arithmetic (`f64` on small integers).
//!
//! Convolution is tiled im2col: output pixels are cut into tiles whose column buffer fits in
//! the L2 cache (~512 KiB), each tile is one GEMM `W[M×K] · cols[K×T]` written straight into
//! the output rows. Tiles run in parallel with rayon when there are enough of them; otherwise
//! the GEMM itself is parallel. faer picks its SIMD kernels at run time (no `target-cpu`).

use std::num::NonZeroUsize;

use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use crate::ir::Conv;

/// Element types the GEMMs run on.
pub trait Scalar: faer::traits::ComplexField + Copy + Default + Send + Sync + 'static {
    fn one() -> Self;
}
impl Scalar for f32 {
    fn one() -> Self {
        1.0
    }
}
impl Scalar for f64 {
    fn one() -> Self {
        1.0
    }
}

fn par(threads: usize) -> Par {
    match NonZeroUsize::new(threads) {
        Some(n) if n.get() > 1 => Par::Rayon(n),
        _ => Par::Seq,
    }
}

/// `c[m×n] = a[m×k] · b[k×n]`, all row-major; `c` rows are `ldc` apart.
///
/// # Safety
/// `c` must be valid for writes of `m` rows of `n` elements spaced `ldc` apart, and not alias
/// `a` or `b`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_raw<T: Scalar>(
    m: usize,
    k: usize,
    n: usize,
    a: &[T],
    b: &[T],
    c: *mut T,
    ldc: usize,
    threads: usize,
) {
    let (Some(mk), Some(kn)) = (m.checked_mul(k), k.checked_mul(n)) else {
        panic!("gemm: size overflows ({m}x{k} · {k}x{n})");
    };
    assert!(a.len() >= mk && b.len() >= kn, "gemm: operands too short");
    let a = MatRef::from_row_major_slice(&a[..mk], m, k);
    let b = MatRef::from_row_major_slice(&b[..kn], k, n);
    let c = MatMut::from_raw_parts_mut(c, m, n, ldc as isize, 1);
    faer::linalg::matmul::matmul(c, Accum::Replace, a, b, T::one(), par(threads));
}

/// `c[m×n] = a[m×k] · b[k×n]`, all row-major and contiguous.
pub fn gemm<T: Scalar>(
    m: usize,
    k: usize,
    n: usize,
    a: &[T],
    b: &[T],
    c: &mut [T],
    threads: usize,
) {
    // Checked products: a wrapped size can never match a buffer length.
    assert!(
        len_is(a, &[m, k]) && len_is(b, &[k, n]) && len_is(c, &[m, n]),
        "gemm: shape mismatch"
    ); // callers pass validated shapes
       // SAFETY: c is an exclusive, contiguous m×n buffer (its length is exactly m·n).
    unsafe { gemm_raw(m, k, n, a, b, c.as_mut_ptr(), n, threads) }
}

/// Dense layer: `out[n×m] = x[n×k] · w[m×k]ᵀ`.
pub fn gemm_nt<T: Scalar>(
    n: usize,
    k: usize,
    m: usize,
    x: &[T],
    w: &[T],
    out: &mut [T],
    threads: usize,
) {
    assert!(
        len_is(x, &[n, k]) && len_is(w, &[m, k]) && len_is(out, &[n, m]),
        "gemm_nt: shape mismatch"
    );
    let xm = MatRef::from_row_major_slice(x, n, k);
    let wt = MatRef::from_row_major_slice(w, m, k).transpose();
    let om = MatMut::from_row_major_slice_mut(out, n, m);
    faer::linalg::matmul::matmul(om, Accum::Replace, xm, wt, T::one(), par(threads));
}

/// Whether `v` holds exactly `dims.product()` elements, the product computed without overflow.
fn len_is<T>(v: &[T], dims: &[usize]) -> bool {
    crate::shape::checked_product(dims) == Some(v.len())
}

/// Geometry of one convolution applied to an input of known size.
///
/// Built by [`ConvGeom::new`], which refuses geometries whose input, output or weight sizes
/// overflow or exceed [`crate::MAX_VALUE_ELEMENTS`]; the size methods panic rather than wrap on
/// a hand-built geometry that bypasses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub in_c: usize,
    pub h: usize,
    pub w: usize,
    pub out_c: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub pads: [usize; 4],
    pub groups: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ConvGeom {
    /// Geometry of `conv` on an `h × w` input (shapes are validated by `Model::validate`).
    ///
    /// Errs ([`crate::ModelError::TooLarge`]) when a size overflows or the input or output has
    /// more than [`crate::MAX_VALUE_ELEMENTS`] elements, and ([`crate::ModelError::Shape`]) when
    /// the groups do not divide the channels or the kernel does not fit.
    pub fn new(conv: &Conv, h: usize, w: usize) -> Result<Self, crate::ModelError> {
        use crate::ModelError;
        if conv.groups == 0
            || !conv.in_c.is_multiple_of(conv.groups)
            || !conv.out_c.is_multiple_of(conv.groups)
        {
            return Err(ModelError::Shape(format!(
                "groups {} must divide in {} and out {} channels",
                conv.groups, conv.in_c, conv.out_c
            )));
        }
        let (oh, ow) = conv.out_hw(h, w)?;
        let cap = |what: &str, dims: &[usize]| {
            crate::shape::bounded_product(dims).ok_or_else(|| {
                ModelError::TooLarge(format!(
                    "convolution {what} {dims:?} has more than {} elements",
                    crate::MAX_VALUE_ELEMENTS
                ))
            })
        };
        cap("input", &[conv.in_c, h, w])?;
        cap("output", &[conv.out_c, oh, ow])?;
        crate::shape::checked_product(&[conv.out_c, conv.in_per_group(), conv.kh, conv.kw])
            .ok_or_else(|| ModelError::TooLarge("convolution weight size overflows".into()))?;
        Ok(Self {
            in_c: conv.in_c,
            h,
            w,
            out_c: conv.out_c,
            kh: conv.kh,
            kw: conv.kw,
            stride: conv.stride,
            pads: conv.pads,
            groups: conv.groups,
            oh,
            ow,
        })
    }
    /// Elements of one image's input. Panics (never wraps) on a size that overflows.
    pub fn in_len(&self) -> usize {
        self.checked_lens().expect("ConvGeom: size overflows").0
    }
    /// Elements of one image's output. Panics (never wraps) on a size that overflows.
    pub fn out_len(&self) -> usize {
        self.checked_lens().expect("ConvGeom: size overflows").1
    }
    /// Rows of the per-group weight matrix. Panics (never wraps) on a size that overflows.
    pub fn k(&self) -> usize {
        self.checked_k().expect("ConvGeom: size overflows")
    }
    fn checked_k(&self) -> Option<usize> {
        let ipg = self.in_c.checked_div(self.groups)?;
        crate::shape::checked_product(&[ipg, self.kh, self.kw])
    }
    /// Input, output and weight lengths, or `None` when one (or a plane) overflows or `groups`
    /// is 0.
    fn checked_lens(&self) -> Option<(usize, usize, usize)> {
        // Planes first: with zero channels, a plane that overflows must still be refused.
        let input = self.in_c.checked_mul(self.h.checked_mul(self.w)?)?;
        let output = self.out_c.checked_mul(self.oh.checked_mul(self.ow)?)?;
        let weight = self.out_c.checked_mul(self.checked_k()?)?;
        Some((input, output, weight))
    }
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == [1, 1] && self.pads == [0; 4]
    }
}

/// Shape of a linear layer (convolution or dense).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinearShape {
    Conv(ConvGeom),
    Dense { in_f: usize, out_f: usize },
}

impl LinearShape {
    /// The layer as a convolution: a dense layer is a 1 × 1 convolution of `in_f` channels on
    /// a 1 × 1 input.
    pub fn as_conv(&self) -> ConvGeom {
        match *self {
            LinearShape::Conv(g) => g,
            LinearShape::Dense { in_f, out_f } => ConvGeom {
                in_c: in_f,
                h: 1,
                w: 1,
                out_c: out_f,
                kh: 1,
                kw: 1,
                stride: [1, 1],
                pads: [0; 4],
                groups: 1,
                oh: 1,
                ow: 1,
            },
        }
    }

    /// Elements of one image's input.
    pub fn in_len(&self) -> usize {
        match self {
            LinearShape::Conv(g) => g.in_len(),
            LinearShape::Dense { in_f, .. } => *in_f,
        }
    }
    /// Elements of one image's output.
    pub fn out_len(&self) -> usize {
        match self {
            LinearShape::Conv(g) => g.out_len(),
            LinearShape::Dense { out_f, .. } => *out_f,
        }
    }
    /// Terms in each output's dot product.
    pub fn k(&self) -> usize {
        match self {
            LinearShape::Conv(g) => g.k(),
            LinearShape::Dense { in_f, .. } => *in_f,
        }
    }
    /// Elements of the weight tensor.
    pub fn weight_len(&self) -> usize {
        match self {
            LinearShape::Conv(g) => g.out_c * g.k(),
            LinearShape::Dense { in_f, out_f } => in_f * out_f,
        }
    }
}

/// Raw output pointer shared by tiles that write disjoint columns.
#[derive(Clone, Copy)]
struct OutPtr<T>(*mut T);
// SAFETY: every tile writes a disjoint set of output columns; the pointer outlives the scope.
unsafe impl<T: Send> Send for OutPtr<T> {}
unsafe impl<T: Send> Sync for OutPtr<T> {}

/// The adjoint of `im2col` for a whole image (groups 1): sums the patch-matrix gradient
/// `dcols` (`K × P`) back onto the input pixels. Used by backpropagation.
pub fn col2im(g: &ConvGeom, dcols: &[f32]) -> Vec<f32> {
    let p = g.oh * g.ow;
    let mut dx = vec![0f32; g.in_len()];
    let mut row = 0;
    for c in 0..g.in_c {
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let src = &dcols[row * p..(row + 1) * p];
                for oy in 0..g.oh {
                    let iy = (oy * g.stride[0] + ky) as isize - g.pads[0] as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    for ox in 0..g.ow {
                        let ix = (ox * g.stride[1] + kx) as isize - g.pads[1] as isize;
                        if ix >= 0 && ix < g.w as isize {
                            dx[(c * g.h + iy as usize) * g.w + ix as usize] += src[oy * g.ow + ox];
                        }
                    }
                }
                row += 1;
            }
        }
    }
    dx
}

/// Fills `cols` (row-major `K × (p1 − p0)`) with the im2col patch columns for output pixels
/// `p0..p1` of one group whose input channels start at `input`.
pub fn im2col<T: Scalar>(g: &ConvGeom, input: &[T], p0: usize, p1: usize, cols: &mut [T]) {
    let t = p1 - p0;
    let ipg = g.in_c / g.groups;
    let zero = T::default();
    let mut row = 0;
    for ci in 0..ipg {
        let plane = &input[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let dst = &mut cols[row * t..(row + 1) * t];
                row += 1;
                let mut j = 0;
                let mut p = p0;
                while p < p1 {
                    let oy = p / g.ow;
                    let ox0 = p % g.ow;
                    let ox1 = (ox0 + (p1 - p)).min(g.ow);
                    let seg = &mut dst[j..j + (ox1 - ox0)];
                    let iy = (oy * g.stride[0] + ky) as isize - g.pads[0] as isize;
                    if iy < 0 || iy >= g.h as isize {
                        seg.fill(zero);
                    } else {
                        let src = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                        let off = kx as isize - g.pads[1] as isize;
                        if g.stride[1] == 1 {
                            // Contiguous: ix = ox + off; copy the in-range part, zero the rest.
                            let lo = (-off - ox0 as isize).clamp(0, seg.len() as isize) as usize;
                            let hi = (g.w as isize - off - ox0 as isize)
                                .clamp(lo as isize, seg.len() as isize)
                                as usize;
                            seg[..lo].fill(zero);
                            if hi > lo {
                                let s0 = (ox0 as isize + lo as isize + off) as usize;
                                seg[lo..hi].copy_from_slice(&src[s0..s0 + (hi - lo)]);
                            }
                            seg[hi..].fill(zero);
                        } else {
                            for (q, d) in seg.iter_mut().enumerate() {
                                let ix = ((ox0 + q) * g.stride[1]) as isize + off;
                                *d = if ix < 0 || ix >= g.w as isize {
                                    zero
                                } else {
                                    src[ix as usize]
                                };
                            }
                        }
                    }
                    j += ox1 - ox0;
                    p += ox1 - ox0;
                }
            }
        }
    }
}

const TILE_BYTES: usize = 256 * 1024;
const MIN_TILE: usize = 256;

/// One image: `out[out_c × oh·ow] = conv(input[in_c × h·w], weight[out_c × k])`, no bias.
pub fn conv2d<T: Scalar>(g: &ConvGeom, input: &[T], weight: &[T], out: &mut [T], threads: usize) {
    // Checked sizes: a geometry whose sizes wrap can never pass, so every product below (each at
    // most one of these lengths) is exact, and the raw GEMM writes stay inside `out`.
    assert!(
        g.checked_lens()
            .is_some_and(|(i, o, w)| input.len() == i && out.len() == o && weight.len() == w),
        "conv2d: buffer sizes do not match the geometry"
    ); // callers pass validated shapes
    let npix = g.oh * g.ow;
    let k = g.k();
    let ipg = g.in_c / g.groups;
    let opg = g.out_c / g.groups;
    for grp in 0..g.groups {
        let inp = &input[grp * ipg * g.h * g.w..(grp + 1) * ipg * g.h * g.w];
        let wg = &weight[grp * opg * k..(grp + 1) * opg * k];
        let out_g = &mut out[grp * opg * npix..(grp + 1) * opg * npix];
        debug_assert_eq!(out_g.len(), opg * npix);
        if g.is_pointwise() {
            gemm(opg, k, npix, wg, inp, out_g, threads);
            continue;
        }
        // Tile width: a column buffer K×T of about 256 KiB, but at least 256 columns so the
        // GEMM's inner dimension stays wide (narrower tiles measured slower on VGG-16's deep
        // layers; docs/BENCHMARKS.md, "Measurements behind design decisions").
        let budget = TILE_BYTES / std::mem::size_of::<T>();
        let tile = (budget / k.max(1)).max(MIN_TILE).min(npix);
        let ntiles = npix.div_ceil(tile);
        let optr = OutPtr(out_g.as_mut_ptr());
        let run_tile = |ti: usize, cols: &mut Vec<T>, gemm_threads: usize| {
            let p0 = ti * tile;
            let p1 = (p0 + tile).min(npix);
            cols.resize(k * (p1 - p0), T::default());
            im2col(g, inp, p0, p1, cols);
            let o = optr;
            // SAFETY: columns p0..p1 of the opg×npix output belong to this tile only.
            unsafe { gemm_raw(opg, k, p1 - p0, wg, cols, o.0.add(p0), npix, gemm_threads) };
        };
        if threads > 1 && ntiles >= 2 * threads {
            // One worker per thread, tiles interleaved (they cost the same), one scratch each.
            (0..threads).into_par_iter().for_each(|t| {
                let mut cols = Vec::new();
                for ti in (t..ntiles).step_by(threads) {
                    run_tile(ti, &mut cols, 1);
                }
            });
        } else {
            let mut cols = Vec::new();
            for ti in 0..ntiles {
                run_tile(ti, &mut cols, threads);
            }
        }
    }
}

/// Direct (naive) convolution for tests: the definition, with no tiling or GEMM.
pub fn conv2d_naive(g: &ConvGeom, input: &[f64], weight: &[f64]) -> Vec<f64> {
    let ipg = g.in_c / g.groups;
    let opg = g.out_c / g.groups;
    let mut out = vec![0.0; g.out_len()];
    for oc in 0..g.out_c {
        let grp = oc / opg;
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let mut s = 0.0;
                for ci in 0..ipg {
                    for ky in 0..g.kh {
                        for kx in 0..g.kw {
                            let iy = (oy * g.stride[0] + ky) as isize - g.pads[0] as isize;
                            let ix = (ox * g.stride[1] + kx) as isize - g.pads[1] as isize;
                            if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                continue;
                            }
                            let c = grp * ipg + ci;
                            s += input[(c * g.h + iy as usize) * g.w + ix as usize]
                                * weight[((oc * ipg + ci) * g.kh + ky) * g.kw + kx];
                        }
                    }
                }
                out[(oc * g.oh + oy) * g.ow + ox] = s;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geom(
        in_c: usize,
        hw: usize,
        out_c: usize,
        k: usize,
        s: usize,
        p: usize,
        groups: usize,
    ) -> ConvGeom {
        let conv = Conv {
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
        ConvGeom::new(&conv, hw, hw + 3).unwrap()
    }

    #[test]
    fn tiled_conv_matches_definition() {
        for &(ic, hw, oc, k, s, p, g, th) in &[
            (3, 9, 4, 3, 1, 1, 1, 1),
            (4, 11, 6, 3, 2, 1, 2, 2),
            (6, 8, 6, 3, 1, 1, 6, 2),  // depthwise
            (5, 7, 3, 1, 1, 0, 1, 1),  // pointwise
            (2, 40, 3, 5, 1, 2, 1, 2), // many tiles
            (2, 6, 2, 2, 3, 0, 1, 1),
        ] {
            let g = geom(ic, hw, oc, k, s, p, g);
            let input: Vec<f64> = (0..g.in_len())
                .map(|i| ((i * 37) % 23) as f64 - 11.0)
                .collect();
            let weight: Vec<f64> = (0..g.out_c * g.k())
                .map(|i| ((i * 13) % 7) as f64 - 3.0)
                .collect();
            let mut out = vec![0.0; g.out_len()];
            conv2d(&g, &input, &weight, &mut out, th);
            assert_eq!(out, conv2d_naive(&g, &input, &weight), "{g:?}");
        }
    }

    #[test]
    fn gemm_nt_matches_definition() {
        let (n, k, m) = (3, 5, 4);
        let x: Vec<f64> = (0..n * k).map(|i| i as f64).collect();
        let w: Vec<f64> = (0..m * k).map(|i| (i % 3) as f64 - 1.0).collect();
        let mut out = vec![0.0; n * m];
        gemm_nt(n, k, m, &x, &w, &mut out, 1);
        for i in 0..n {
            for j in 0..m {
                let s: f64 = (0..k).map(|t| x[i * k + t] * w[j * k + t]).sum();
                assert_eq!(out[i * m + j], s);
            }
        }
    }
}
