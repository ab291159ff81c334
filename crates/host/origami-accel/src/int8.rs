//! Exact field layers from 8-bit integer dot products.
//!
//! A blinded operand x̄ ∈ [0, p), p < 2^24, is split into unsigned limbs x̄ = Σ_l x_l · 2^(b·l);
//! every limb is multiplied by the int8 weights with a u8×i8→i32 GEMM (`rten-gemm`'s kernels:
//! AVX-512 VNNI `vpdpbusd`, AVX2 `vpmaddubsw`, Arm `sdot`/`udot`/i8mm, chosen by the crate at
//! run time), and the limb products are recombined and reduced mod p in i64.
//!
//! Two layouts, both computing Σ_k w·x_l exactly:
//! - dense layers: A = the L limb rows (u8), B = Wᵀ (i8, prepacked): one GEMM, M = L;
//! - convolutions: A = W + 128 (u8, zero point 128), B = the patch matrix (K × a tile of output
//!   pixels, i8) of the limb image shifted to i8 (x_l − z, zero point −z, z = 128 for 8-bit
//!   limbs, 64 for 7-bit ones), built by copying rows of an image padded by hand with the zero
//!   point; the kernel subtracts the zero points' cross terms, so each entry is
//!   Σ (a − 128)(b + z) = Σ w · x_l. One GEMM per limb and tile, tiles in parallel.
//!
//! ## No overflow (every layer is checked against this before it is accepted: [`Int8Gemm::fits`])
//! - Limb width b = 8 (three limbs, shifts 0, 8, 16) on kernels that accumulate u8·i8 products
//!   straight into i32 (VNNI, Arm dot products, the generic kernel). The exact value of every
//!   output, Σ_k w·x_l with |w| ≤ 128 and x_l ≤ 255, is below 32 640 · K < 2^31 for K ≤ 65 793
//!   ([`Limbs::max_k`]); VGG's fc6 has K = 25 088 (< 8.2 · 10^8). Dense layers accumulate
//!   exactly that sum. The convolution layout's raw products and zero-point terms are added in
//!   wrapping i32 SIMD arithmetic (`vpdpbusd`, `vpaddd`, `vpmulld`), so the result is the exact
//!   value mod 2^32, which is the exact value because it lies in i32.
//! - Limb width b = 7 (four limbs, shifts 0, 7, 14, 21) on kernels that may saturate
//!   (`GemmExecutor::may_saturate`: AVX2 without VNNI, whose `vpmaddubsw` adds two u8·i8
//!   products in a saturating i16). Dense: two products are at most 2 · 127 · 128 = 32 512 ≤
//!   32 767. Convolution: |a| ≤ 255, b ∈ [−64, 63], two products at most 2 · 255 · 64 = 32 640
//!   ≤ 32 767. No pair saturates; the exact value is below 127 · 128 · K < 2^31 for K ≤ 132 104.
//! - Recombination: each limb result |o_l| < 2^31, so |Σ_l o_l · 2^(b·l)| < 2^31 · 2^22 · 2 < 2^54
//!   < 2^63: exact in i64, then reduced with `rem_euclid`.
//!
//! Weights must lie in [−128, 127] (the planner's are in [−127, 127]); layers outside that or
//! past `max_k` stay on the f64 path (`cpu.rs`).

use std::sync::Mutex;

use rayon::prelude::*;
use rten_gemm::{GemmExecutor, GemmInputA, GemmInputB, GemmOptions, PackedBMatrix, QuantParams};
use rten_tensor::NdTensorView;

use origami_field::P_I64;
use origami_model::linalg::{ConvGeom, LinearShape};

use crate::{AccelError, FieldLayer};

/// How a blinded operand is split into unsigned limbs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limbs {
    /// Three 8-bit limbs: for kernels that accumulate u8·i8 products exactly in i32.
    Eight,
    /// Four limbs of at most 7 bits: for kernels whose pairwise i16 sums may saturate.
    Seven,
}

impl Limbs {
    pub fn bits(self) -> u32 {
        match self {
            Limbs::Eight => 8,
            Limbs::Seven => 7,
        }
    }
    /// Limbs needed for a 24-bit operand.
    pub fn count(self) -> usize {
        24usize.div_ceil(self.bits() as usize)
    }
    fn mask(self) -> u32 {
        (1 << self.bits()) - 1
    }
    /// Largest K whose exact sums stay in i32: (2^b − 1) · 128 · K < 2^31.
    pub fn max_k(self) -> usize {
        ((1u64 << 31) - 1) as usize / (self.mask() as usize * 128)
    }
    /// The shift z that centres a limb on i8 (x_l − z) for the convolution layout.
    fn b_zero(self) -> i8 {
        -(1i32 << (self.bits() - 1)) as i8
    }
}

/// Bytes of one pixel tile's patch matrix (K × T, i8): about L2-sized.
const TILE_BYTES: usize = 1 << 20;

/// The convolution layout's weight zero point: A = w + 128 ∈ [0, 255].
const A_ZERO: u8 = 128;

enum Packed {
    /// Dense: Wᵀ (K × out) as B.
    Dense(PackedBMatrix<i8>),
    /// Convolution: W + 128 (out × K, row-major) as A, one block of rows per group. Not
    /// prepacked: rten-gemm 0.27 drops A's zero point when A is prepacked (measured: the
    /// result came back as Σ (w + 128)·x), and packing A per call is a small pass (out × K bytes).
    Conv(Vec<u8>),
}

/// A field layer's weights, prepacked for the int8 kernel.
pub(crate) struct Int8Layer {
    shape: LinearShape,
    packed: Packed,
}

impl Int8Layer {
    pub(crate) fn shape(&self) -> &LinearShape {
        &self.shape
    }
}

/// The int8 field GEMM: the limb width rten-gemm's u8×i8→i32 kernel for this CPU allows.
/// The executor itself is not `Send`; it is cheap to make (a CPU feature check) and picks the
/// same kernel every time, so each call makes its own and the prepacked weights stay valid.
pub struct Int8Gemm {
    kernel: String,
    limbs: Limbs,
    /// Buffers reused across calls (fresh multi-MiB buffers per call spent most of a layer's
    /// time in page faults). Uncontended: the accelerator runs one layer at a time.
    scratch: Mutex<Scratch>,
}

#[derive(Default)]
struct Scratch {
    img: Vec<i8>,
    o: Vec<i32>,
    limbs: Vec<u8>,
}

fn executor() -> GemmExecutor<u8, i8, i32> {
    GemmExecutor::new()
}

impl Int8Gemm {
    /// The executor rten-gemm picks for this CPU, with the widest limbs it allows (`None`), or
    /// the given width. Errs when 8-bit limbs are asked of a kernel that may saturate.
    pub fn new(limbs: Option<Limbs>) -> Result<Self, AccelError> {
        let exec = executor();
        let safe = if exec.may_saturate() {
            Limbs::Seven
        } else {
            Limbs::Eight
        };
        let limbs = limbs.unwrap_or(safe);
        if limbs == Limbs::Eight && safe == Limbs::Seven {
            return Err(AccelError::Unavailable(format!(
                "8-bit limbs need a non-saturating int8 kernel; this CPU's is {}",
                exec.kernel_name()
            )));
        }
        Ok(Self {
            kernel: exec.kernel_name().to_string(),
            limbs,
            scratch: Mutex::default(),
        })
    }

    pub fn limbs(&self) -> Limbs {
        self.limbs
    }

    /// E.g. "int8 x86_64-u8i8i32-avx512, 3×8-bit limbs".
    pub fn describe(&self) -> String {
        format!(
            "int8 {}, {}×{}-bit limbs",
            self.kernel,
            self.limbs.count(),
            self.limbs.bits()
        )
    }

    /// Whether this layer's weights and depth fit the no-overflow bound (module docs), and a
    /// convolution's padded image the kernel's i32 offsets.
    pub fn fits(&self, l: &FieldLayer) -> bool {
        let offsets = match &l.shape {
            LinearShape::Conv(g) => {
                let (ph, pw) = (g.h + g.pads[0] + g.pads[2], g.w + g.pads[1] + g.pads[3]);
                (g.in_c / g.groups)
                    .checked_mul(ph)
                    .and_then(|v| v.checked_mul(pw))
                    .is_some_and(|v| v < i32::MAX as usize)
            }
            LinearShape::Dense { .. } => true,
        };
        offsets
            && l.shape.k() <= self.limbs.max_k()
            && l.weight.iter().all(|&w| i8::try_from(w).is_ok())
    }

    /// Prepacks a layer that [`fits`](Self::fits) (checked sizes: `l.check_exact` passed).
    pub(crate) fn prepare(&self, l: &FieldLayer) -> Int8Layer {
        debug_assert!(self.fits(l));
        let exec = executor();
        let packed = match &l.shape {
            LinearShape::Dense { in_f, out_f } => {
                let w: Vec<i8> = l.weight.iter().map(|&w| w as i8).collect(); // in range: `fits`
                let b =
                    NdTensorView::from_data_with_strides([*in_f, *out_f], w.as_slice(), [1, *in_f])
                        .expect("a K × out view of an out × K buffer");
                Packed::Dense(exec.prepack_b(b))
            }
            LinearShape::Conv(_) => Packed::Conv(
                l.weight
                    .iter()
                    .map(|&w| (w + A_ZERO as i32) as u8)
                    .collect(),
            ),
        };
        Int8Layer {
            shape: l.shape,
            packed,
        }
    }

    /// `W · x̄ mod p` for one image (`x` already checked: right length, every value < 2^24).
    pub(crate) fn run(&self, layer: &Int8Layer, x: &[u32]) -> Result<Vec<u32>, AccelError> {
        match (&layer.shape, &layer.packed) {
            (LinearShape::Dense { in_f, out_f }, Packed::Dense(b)) => {
                self.dense(*in_f, *out_f, b, x)
            }
            (LinearShape::Conv(g), Packed::Conv(a)) => self.conv(g, a, x),
            _ => Err(AccelError::Backend(
                "int8 layer packed for another shape".into(),
            )),
        }
    }

    fn dense(
        &self,
        in_f: usize,
        out_f: usize,
        b: &PackedBMatrix<i8>,
        x: &[u32],
    ) -> Result<Vec<u32>, AccelError> {
        let (l, bits, mask) = (self.limbs.count(), self.limbs.bits(), self.limbs.mask());
        let mut guard = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let Scratch { limbs: a, o, .. } = &mut *guard;
        resize(a, l * in_f, 0);
        for (row, limb) in a.chunks_exact_mut(in_f).zip(0..) {
            for (d, &v) in row.iter_mut().zip(x) {
                *d = ((v >> (bits * limb)) & mask) as u8;
            }
        }
        resize(o, l * out_f, 0);
        let a = NdTensorView::from_data([l, in_f], a.as_slice());
        executor()
            .gemm(
                o,
                GemmInputA::Unpacked(a),
                GemmInputB::Packed(b),
                GemmOptions::default(),
            )
            .map_err(|e| AccelError::Backend(format!("int8 dense GEMM: {e:?}")))?;
        Ok((0..out_f)
            .map(|j| {
                let s: i64 = (0..l)
                    .map(|i| (o[i * out_f + j] as i64) << (bits as usize * i))
                    .sum();
                s.rem_euclid(P_I64) as u32 // < p < 2^24
            })
            .collect())
    }

    fn conv(&self, g: &ConvGeom, weight: &[u8], x: &[u32]) -> Result<Vec<u32>, AccelError> {
        let npix = g.oh * g.ow;
        let (per, ipg, k) = (g.out_c / g.groups, g.in_c / g.groups, g.k());
        let l = self.limbs.count();
        let (bits, mask) = (self.limbs.bits() as usize, self.limbs.mask());
        let zb = self.limbs.b_zero();
        let (ph, pw) = (g.h + g.pads[0] + g.pads[2], g.w + g.pads[1] + g.pads[3]);
        let plane = ph * pw;
        // Pixel tiles: a K × T column block of about 1 MiB, at least 256 columns.
        let tile = (TILE_BYTES / k.max(1)).max(256).min(npix.max(1));
        let ntiles = npix.div_ceil(tile);
        let mut guard = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let Scratch { img, .. } = &mut *guard;
        let mut y = vec![0u32; g.out_len()];
        for (grp, a) in weight.chunks_exact(per * k).enumerate() {
            let inp = &x[grp * ipg * g.h * g.w..(grp + 1) * ipg * g.h * g.w];
            // The L limb images, padded by hand: every padding pixel holds the zero point
            // (value 0 after the shift).
            img.clear();
            img.resize(l * ipg * plane, zb);
            img.par_chunks_exact_mut(plane)
                .enumerate()
                .for_each(|(lc, dst)| {
                    let (limb, c) = (lc / ipg, lc % ipg);
                    let sh = bits * limb;
                    let src = &inp[c * g.h * g.w..(c + 1) * g.h * g.w];
                    for (r, row) in src.chunks_exact(g.w).enumerate() {
                        let d = (r + g.pads[0]) * pw + g.pads[1];
                        for (t, &v) in dst[d..d + g.w].iter_mut().zip(row) {
                            *t = (((v >> sh) & mask) as i32 + zb as i32) as i8;
                        }
                    }
                });
            let img = &*img;
            let a = NdTensorView::from_data([per, k], a);
            let tiles: Vec<Vec<u32>> = (0..ntiles)
                .into_par_iter()
                .map_init(
                    || {
                        (
                            Vec::new(),
                            Vec::new(),
                            Vec::new(),
                            vec![A_ZERO; per],
                            vec![zb; tile],
                        )
                    },
                    |(cols, o, acc, a_zero, b_zero), ti| {
                        let p0 = ti * tile;
                        let t = tile.min(npix - p0);
                        resize(cols, k * t, 0i8);
                        resize(o, per * t, 0i32);
                        resize(acc, per * t, 0i64);
                        acc.fill(0);
                        let exec = executor();
                        for limb in 0..l {
                            let limg = &img[limb * ipg * plane..(limb + 1) * ipg * plane];
                            im2col_padded(g, limg, pw, plane, p0, t, cols);
                            let b = NdTensorView::from_data([k, t], cols.as_slice());
                            exec.gemm(
                                o,
                                GemmInputA::Unpacked(a),
                                GemmInputB::Unpacked(b),
                                GemmOptions {
                                    a_quant: Some(QuantParams { zero_point: a_zero }),
                                    b_quant: Some(QuantParams {
                                        zero_point: &b_zero[..t],
                                    }),
                                    ..GemmOptions::default()
                                },
                            )
                            .map_err(|e| AccelError::Backend(format!("int8 conv GEMM: {e:?}")))?;
                            let sh = bits * limb;
                            for (s, &v) in acc.iter_mut().zip(o.iter()) {
                                *s += (v as i64) << sh;
                            }
                        }
                        Ok(acc.iter().map(|s| s.rem_euclid(P_I64) as u32).collect())
                    },
                )
                .collect::<Result<_, AccelError>>()?;
            let yg = &mut y[grp * per * npix..(grp + 1) * per * npix];
            for (ti, r) in tiles.iter().enumerate() {
                let p0 = ti * tile;
                let t = r.len() / per;
                for (oc, seg) in r.chunks_exact(t).enumerate() {
                    yg[oc * npix + p0..oc * npix + p0 + t].copy_from_slice(seg);
                }
            }
        }
        Ok(y)
    }
}

/// Sets `v`'s length to `n` (contents are overwritten by the caller), keeping its allocation.
fn resize<T: Copy>(v: &mut Vec<T>, n: usize, fill: T) {
    v.truncate(n);
    v.resize(n, fill);
}

/// The K × t patch matrix (row-major) of output pixels p0..p0+t over one limb image already
/// padded (`pw` columns, `plane` = padded rows · pw per channel): row (c, ky, kx) holds, for each
/// pixel, the value its patch reads there. No bounds to test: the padding is in the image.
fn im2col_padded(
    g: &ConvGeom,
    img: &[i8],
    pw: usize,
    plane: usize,
    p0: usize,
    t: usize,
    cols: &mut [i8],
) {
    let ipg = g.in_c / g.groups;
    let (sy, sx) = (g.stride[0], g.stride[1]);
    let mut rows = cols.chunks_exact_mut(t);
    for c in 0..ipg {
        let src = &img[c * plane..(c + 1) * plane];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let dst = rows.next().expect("K rows");
                let (mut j, mut p) = (0, p0);
                while j < t {
                    let (oy, ox0) = (p / g.ow, p % g.ow);
                    let n = (g.ow - ox0).min(t - j);
                    let base = (oy * sy + ky) * pw + kx + ox0 * sx;
                    let seg = &mut dst[j..j + n];
                    if sx == 1 {
                        seg.copy_from_slice(&src[base..base + n]);
                    } else {
                        for (q, d) in seg.iter_mut().enumerate() {
                            *d = src[base + q * sx];
                        }
                    }
                    j += n;
                    p += n;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{geom, reference};

    fn run(gemm: &Int8Gemm, shape: LinearShape, w: Vec<i32>, x: &[u32]) -> Vec<u32> {
        let l = FieldLayer {
            layer: 1,
            shape,
            weight: w,
        };
        assert!(gemm.fits(&l));
        gemm.run(&gemm.prepare(&l), x).unwrap()
    }

    /// The bound of the module docs at its worst: every limb at its maximum (x̄ = 2^24 − 1, all
    /// three 8-bit limbs 255, more than any reduced x̄ < p reaches), |w| = 128 and 127, at VGG
    /// fc6's K = 25 088; both limb widths where the kernel allows them.
    #[test]
    fn worst_case_limbs_and_weights_are_exact_at_fc6_depth() {
        let mut widths = vec![Limbs::Seven];
        match Int8Gemm::new(Some(Limbs::Eight)) {
            Ok(_) => widths.push(Limbs::Eight),
            Err(e) => eprintln!("8-bit limbs not tested: {e}"),
        }
        for limbs in widths {
            let gemm = Int8Gemm::new(Some(limbs)).unwrap();
            let (in_f, out_f) = (25_088, 3);
            let shape = LinearShape::Dense { in_f, out_f };
            let mut w = vec![-128; in_f];
            w.extend(vec![127; in_f]);
            w.extend((0..in_f).map(|i| if i % 2 == 0 { -128 } else { 127 }));
            for x in [vec![(1u32 << 24) - 1; in_f], vec![(1 << 24) - 4; in_f]] {
                let got = run(&gemm, shape, w.clone(), &x);
                assert_eq!(got, reference(&shape, &w, &x), "{}", gemm.describe());
            }
            // A deep conv with every weight −128 and every limb at its maximum.
            let g = geom(512, 3, 3, 2, 3, 1, 1, 1);
            let shape = LinearShape::Conv(g);
            let w = vec![-128; shape.weight_len()];
            let x = vec![(1 << 24) - 1; shape.in_len()];
            assert_eq!(run(&gemm, shape, w.clone(), &x), reference(&shape, &w, &x));
            // Stride 2, asymmetric padding, groups, mixed extreme weights, a ragged last tile.
            let c = origami_model::Conv {
                out_c: 4,
                in_c: 6,
                kh: 3,
                kw: 2,
                stride: [2, 2],
                pads: [0, 1, 2, 0],
                groups: 2,
                weight: vec![],
                bias: vec![],
            };
            let shape = LinearShape::Conv(ConvGeom::new(&c, 37, 29).unwrap());
            let w: Vec<i32> = (0..shape.weight_len())
                .map(|i| [-128, 127, -1, 0, 5][i % 5])
                .collect();
            let x: Vec<u32> = (0..shape.in_len() as u32)
                .map(|i| i.wrapping_mul(2_654_435_761) % origami_field::P)
                .collect();
            assert_eq!(run(&gemm, shape, w.clone(), &x), reference(&shape, &w, &x));
        }
    }

    #[test]
    fn layers_past_the_bound_do_not_fit() {
        let gemm = Int8Gemm::new(Some(Limbs::Seven)).unwrap();
        let deep = FieldLayer {
            layer: 1,
            shape: LinearShape::Dense {
                in_f: Limbs::Seven.max_k() + 1,
                out_f: 1,
            },
            weight: vec![1; Limbs::Seven.max_k() + 1],
        };
        assert!(!gemm.fits(&deep));
        let wide = FieldLayer {
            layer: 1,
            shape: LinearShape::Dense { in_f: 2, out_f: 1 },
            weight: vec![1, 128],
        };
        assert!(!gemm.fits(&wide));
        assert_eq!(Limbs::Eight.max_k(), 65_793);
        assert_eq!(Limbs::Seven.count(), 4);
    }
}
