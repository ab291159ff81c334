//! Winograd F(2×2, 3×3) convolution for the plain float path (Lavin & Gray, 2016).
//!
//! Each 2×2 block of outputs ("tile") comes from a 4×4 input patch d:
//! Y = Aᵀ·[(G·g·Gᵀ) ⊙ (Bᵀ·d·B)]·A, so a tile costs 16 products per (input, output channel)
//! pair instead of 36: 2.25 times fewer multiply-adds. Summed over input channels, the 16
//! element-wise products become 16 GEMMs (out_c × in_c)·(in_c × tiles), run by faer like every
//! other GEMM of the executor; the transforms are additions and halvings.
//!
//! **Float only.** The result differs from the direct convolution by rounding (the transforms
//! add and subtract before multiplying): a few units in the last place, well within the float
//! path's tolerance against ONNX Runtime. It is never used on field or fixed-point data: the
//! exact paths call [`crate::linalg::conv2d`] directly; this is reached only from the float
//! executor (`exec`), for 3×3, stride-1, ungrouped convolutions with enough channels
//! ([`applies`]).
//!
//! **Layout.** The input transform runs on whole input rows: Bᵀ·d mixes four padded rows
//! element-wise, then B mixes columns, which for a row of tiles is four contiguous runs of the
//! row's even and odd columns (tile tx starts at column 2·tx). V\[ξ\]\[c\]\[tile\] and
//! M\[ξ\]\[o\]\[tile\] are kept for a block of tile rows at a time (about 2 MiB), one block per
//! worker thread, and the output transform writes the block's rows of the output.

use rayon::prelude::*;

use crate::linalg::{gemm, gemm_nt, ConvGeom};

/// Fewest input and output channels for which the transforms pay for themselves (the GEMMs'
/// inner dimension is the input channel count).
const MIN_CHANNELS: usize = 16;
/// Floats of V and M per block (16 · (in_c + out_c) per tile): about 2 MiB ...
const BLOCK_FLOATS: usize = 1 << 19;
/// ... but at least this many tiles: each block's 16 GEMMs pack U again (16 · in_c · out_c
/// floats), which few columns do not pay for ...
const MIN_BLOCK_TILES: usize = 256;
/// ... and never more than 32 MiB of V and M per block.
const MAX_BLOCK_FLOATS: usize = 1 << 23;
/// Largest in_c · out_c: U holds 16 floats per filter (16/9 of the weights), made per call.
const MAX_FILTERS: usize = 1 << 20;
/// Fewest tiles (2×2 output blocks) per image: below, the filter transform and the GEMMs'
/// packing of U cost more than the multiply-adds saved (VGG's 14×14 layers measured 0.91–0.97x
/// on one thread; 28×28 and larger 1.22–1.48x: docs/BENCHMARKS.md).
const MIN_TILES: usize = 100;

/// Whether [`conv3x3`] computes this convolution.
pub fn applies(g: &ConvGeom) -> bool {
    g.kh == 3
        && g.kw == 3
        && g.stride == [1, 1]
        && g.groups == 1
        && g.in_c >= MIN_CHANNELS
        && g.out_c >= MIN_CHANNELS
        && g.in_c * g.out_c <= MAX_FILTERS
        && g.oh >= 2
        && g.ow >= 2
        && g.oh.div_ceil(2) * g.ow.div_ceil(2) >= MIN_TILES
}

/// Transformed filters of one convolution: U\[ξ\] = (G·g·Gᵀ)\[ξ\], `16 × out_c × in_c` (made once
/// per call of the executor and shared by the images of a batch).
pub struct Filters {
    u: Vec<f32>,
    in_c: usize,
    out_c: usize,
}

impl Filters {
    /// From `weight` (`out_c × in_c × 3 × 3`) of a convolution that [`applies`].
    pub fn new(g: &ConvGeom, weight: &[f32], threads: usize) -> Self {
        assert!(
            applies(g),
            "winograd: not a 3×3 stride-1 ungrouped convolution"
        );
        assert_eq!(weight.len(), g.out_c * g.k(), "winograd: weight size");
        Self {
            u: filters(weight, g.in_c, g.out_c, threads),
            in_c: g.in_c,
            out_c: g.out_c,
        }
    }
}

/// The convolution of `input` (`in_c × h × w`) with the filters plus `bias` (`out_c`), then
/// max(·, 0) if `relu`, into `out` (`out_c × oh × ow`), on up to `threads` threads. Panics
/// unless [`applies`] and the buffers match the geometry (callers pass validated shapes).
pub fn conv3x3(
    g: &ConvGeom,
    f: &Filters,
    input: &[f32],
    (bias, relu): (&[f32], bool),
    out: &mut [f32],
    threads: usize,
) {
    assert!(
        applies(g),
        "winograd: not a 3×3 stride-1 ungrouped convolution"
    );
    assert!(
        input.len() == g.in_len()
            && out.len() == g.out_len()
            && (f.in_c, f.out_c) == (g.in_c, g.out_c)
            && bias.len() == g.out_c,
        "winograd: buffer sizes do not match the geometry"
    );
    let (ci, co) = (g.in_c, g.out_c);
    let u = &f.u;
    let (tyn, txn) = (g.oh.div_ceil(2), g.ow.div_ceil(2));
    // Tile rows per block: at least one.
    let per_row = 16 * (ci + co) * txn;
    // At least one block per thread: the transforms run on the blocks' threads.
    let rows = (BLOCK_FLOATS / per_row)
        .max(MIN_BLOCK_TILES.div_ceil(txn))
        .min(MAX_BLOCK_FLOATS / per_row)
        .min(tyn.div_ceil(threads.max(1)))
        .clamp(1, tyn);
    let nblocks = tyn.div_ceil(rows);
    let plane = g.oh * g.ow;
    // Each block writes output rows 2·ty0 .. 2·ty1 of every channel: disjoint between blocks.
    let optr = OutPtr(out.as_mut_ptr());
    let run = |b: usize, s: &mut Scratch, gemm_threads: usize| {
        let (ty0, ty1) = (b * rows, ((b + 1) * rows).min(tyn));
        let nt = (ty1 - ty0) * txn;
        s.v.resize(16 * ci * nt, 0.0);
        s.m.resize(16 * co * nt, 0.0);
        inputs(g, input, ty0, ty1, &mut s.v, &mut s.row);
        for xi in 0..16 {
            gemm(
                co,
                ci,
                nt,
                &u[xi * co * ci..(xi + 1) * co * ci],
                &s.v[xi * ci * nt..(xi + 1) * ci * nt],
                &mut s.m[xi * co * nt..(xi + 1) * co * nt],
                gemm_threads,
            );
        }
        let o = optr;
        for (oc, &b) in bias.iter().enumerate() {
            let (y0, y1) = (2 * ty0, (2 * ty1).min(g.oh));
            // SAFETY: rows y0..y1 of channel oc belong to this block only, inside `out`
            // (y1 ≤ oh, the channel's plane is in range: oc < out_c).
            let dst = unsafe {
                std::slice::from_raw_parts_mut(o.0.add(oc * plane + y0 * g.ow), (y1 - y0) * g.ow)
            };
            outputs(g, &s.m, (oc, b, relu), nt, (ty0, ty1), &mut s.row, dst);
        }
    };
    if threads > 1 && nblocks >= threads {
        (0..threads).into_par_iter().for_each(|t| {
            let mut s = Scratch::default();
            for b in (t..nblocks).step_by(threads) {
                run(b, &mut s, 1);
            }
        });
    } else {
        let mut s = Scratch::default();
        for b in 0..nblocks {
            run(b, &mut s, threads);
        }
    }
}

#[derive(Default)]
struct Scratch {
    v: Vec<f32>,
    m: Vec<f32>,
    row: Vec<f32>,
}

#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: each worker writes a disjoint set of output rows (see `conv3x3`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// U\[ξ\]\[o\]\[c\] = (G·g·Gᵀ)\[ξ\] for each filter g = weight\[o\]\[c\]: U\[ξ\] is a fixed
/// combination of the 9 taps, (G ⊗ G)\[ξ\]\[k\], so all of U is one GEMM (16 × 9)·(9 × out_c·in_c)
/// with the weights read as their transpose.
fn filters(weight: &[f32], ci: usize, co: usize, threads: usize) -> Vec<f32> {
    const G: [[f32; 3]; 4] = [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ];
    let mut c = [0f32; 16 * 9];
    for (xi, row) in c.chunks_exact_mut(9).enumerate() {
        let (i, j) = (xi / 4, xi % 4);
        for (k, v) in row.iter_mut().enumerate() {
            *v = G[i][k / 3] * G[j][k % 3];
        }
    }
    let n = co * ci;
    let mut u = vec![0f32; 16 * n];
    gemm_nt(16, 9, n, &c, weight, &mut u, threads);
    u
}

/// V\[ξ\]\[c\]\[tile\] = (Bᵀ·d·B)\[ξ\] for the tiles of tile rows ty0..ty1 (tile index
/// (ty − ty0)·txn + tx), d the 4×4 input patch at rows 2·ty − pt, columns 2·tx − pl (zero
/// outside the input).
fn inputs(g: &ConvGeom, input: &[f32], ty0: usize, ty1: usize, v: &mut [f32], row: &mut Vec<f32>) {
    let txn = g.ow.div_ceil(2);
    let nt = (ty1 - ty0) * txn;
    let (pt, pl) = (g.pads[0] as isize, g.pads[1]);
    // Padded row: column q is input column q − pl; 2·txn + 2 columns cover every patch.
    let wp = 2 * txn + 2;
    row.resize(5 * wp + 8 * (txn + 1), 0.0);
    let (padded, rest) = row.split_at_mut(4 * wp);
    let (tmp, eo) = rest.split_at_mut(wp);
    for c in 0..g.in_c {
        let chan = &input[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ty in ty0..ty1 {
            // The four padded input rows of this tile row.
            for i in 0..4 {
                let p = &mut padded[i * wp..(i + 1) * wp];
                p.fill(0.0);
                let y = 2 * ty as isize - pt + i as isize;
                if (0..g.h as isize).contains(&y) {
                    let src = &chan[y as usize * g.w..(y as usize + 1) * g.w];
                    let n = g.w.min(wp.saturating_sub(pl));
                    p[pl..pl + n].copy_from_slice(&src[..n]);
                }
            }
            // Bᵀ·d on whole rows (contiguous), then each row split into even and odd columns.
            let (d0, rest) = padded.split_at(wp);
            let (d1, rest) = rest.split_at(wp);
            let (d2, d3) = rest.split_at(wp);
            let k = txn + 1;
            for r in 0..4 {
                let t = &mut tmp[..wp];
                match r {
                    0 => t
                        .iter_mut()
                        .zip(d0.iter().zip(d2))
                        .for_each(|(t, (a, b))| *t = a - b),
                    1 => t
                        .iter_mut()
                        .zip(d1.iter().zip(d2))
                        .for_each(|(t, (a, b))| *t = a + b),
                    2 => t
                        .iter_mut()
                        .zip(d2.iter().zip(d1))
                        .for_each(|(t, (a, b))| *t = a - b),
                    _ => t
                        .iter_mut()
                        .zip(d1.iter().zip(d3))
                        .for_each(|(t, (a, b))| *t = a - b),
                }
                let (ev, od) = eo[2 * r * k..(2 * r + 2) * k].split_at_mut(k);
                for ((e, o), pair) in ev.iter_mut().zip(od.iter_mut()).zip(t.chunks_exact(2)) {
                    *e = pair[0];
                    *o = pair[1];
                }
            }
            // ·B on columns: tile tx reads columns 2tx .. 2tx + 3 = ev[tx], od[tx], ev[tx+1],
            // od[tx+1].
            let at = (ty - ty0) * txn;
            for r in 0..4 {
                let (ev, od) = eo[2 * r * k..(2 * r + 2) * k].split_at(k);
                let base = |j: usize| ((4 * r + j) * g.in_c + c) * nt + at;
                let vp = v.as_mut_ptr();
                // SAFETY: four runs in different ξ slabs of V (disjoint), each in bounds
                // (ξ < 16, c < in_c, at + txn ≤ nt).
                let [r0, r1, r2, r3] = [0, 1, 2, 3]
                    .map(|j| unsafe { std::slice::from_raw_parts_mut(vp.add(base(j)), txn) });
                let (e0, e1, o0, o1) = (&ev[..txn], &ev[1..], &od[..txn], &od[1..]);
                for tx in 0..txn {
                    r0[tx] = e0[tx] - e1[tx];
                    r1[tx] = o0[tx] + e1[tx];
                    r2[tx] = e1[tx] - o0[tx];
                    r3[tx] = o0[tx] - o1[tx];
                }
            }
        }
    }
}

/// Output rows 2·ty0 .. min(2·ty1, oh) of channel `oc` from M: Y = Aᵀ·m·A per tile plus the
/// bias (and ReLU), as contiguous runs over a row of tiles, then interleaved into the rows.
fn outputs(
    g: &ConvGeom,
    m: &[f32],
    (oc, bias, relu): (usize, f32, bool),
    nt: usize,
    (ty0, ty1): (usize, usize),
    tmp: &mut Vec<f32>,
    dst: &mut [f32],
) {
    let txn = g.ow.div_ceil(2);
    tmp.resize(12 * txn, 0.0);
    let (s, y) = tmp.split_at_mut(8 * txn);
    for ty in ty0..ty1 {
        let at = (ty - ty0) * txn;
        let run = |xi: usize| &m[(xi * g.out_c + oc) * nt + at..][..txn];
        // Aᵀ·m: s0_j = m_j + m_{4+j} + m_{8+j}, s1_j = m_{4+j} − m_{8+j} − m_{12+j}.
        for j in 0..4 {
            let (a, b, c, d) = (run(j), run(4 + j), run(8 + j), run(12 + j));
            let (s0, s1) = s[2 * j * txn..(2 * j + 2) * txn].split_at_mut(txn);
            for t in 0..txn {
                s0[t] = a[t] + b[t] + c[t];
                s1[t] = b[t] - c[t] - d[t];
            }
        }
        // ·A: y_i0 = s_i0 + s_i1 + s_i2, y_i1 = s_i1 − s_i2 − s_i3.
        for i in 0..2 {
            let sj = |j: usize| &s[(2 * j + i) * txn..][..txn];
            let (a, b, c, d) = (sj(0), sj(1), sj(2), sj(3));
            let (y0, y1) = y[2 * i * txn..(2 * i + 2) * txn].split_at_mut(txn);
            for t in 0..txn {
                y0[t] = a[t] + b[t] + c[t] + bias;
                y1[t] = b[t] - c[t] - d[t] + bias;
            }
            if relu {
                y0.iter_mut()
                    .chain(y1.iter_mut())
                    .for_each(|v| *v = v.max(0.0));
            }
        }
        for i in 0..2 {
            let yy = 2 * ty + i;
            if yy >= g.oh {
                break;
            }
            let row = &mut dst[(yy - 2 * ty0) * g.ow..][..g.ow];
            let (y0, y1) = y[2 * i * txn..(2 * i + 2) * txn].split_at(txn);
            let full = g.ow / 2;
            for ((pair, &a), &b) in row.chunks_exact_mut(2).zip(y0).zip(y1).take(full) {
                pair[0] = a;
                pair[1] = b;
            }
            if g.ow % 2 == 1 {
                row[g.ow - 1] = y0[full];
            }
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Conv;
    use crate::linalg::conv2d_naive;

    fn geom(in_c: usize, out_c: usize, h: usize, w: usize, pads: [usize; 4]) -> ConvGeom {
        let conv = Conv {
            out_c,
            in_c,
            kh: 3,
            kw: 3,
            stride: [1, 1],
            pads,
            groups: 1,
            weight: vec![],
            bias: vec![],
        };
        ConvGeom::new(&conv, h, w).unwrap()
    }

    /// Against the definition (in f64) for odd and even sizes, every padding, one and several
    /// blocks, one and several threads: within float rounding of the transforms.
    #[test]
    fn matches_the_definition() {
        for (ci, co, h, w, pads, threads) in [
            (16, 16, 20, 20, [1; 4], 1),
            (16, 20, 21, 19, [1; 4], 2),
            (17, 16, 22, 25, [0; 4], 1),
            (16, 16, 24, 21, [2, 0, 1, 2], 3),
            (32, 24, 40, 33, [1; 4], 2), // several blocks per thread
            (20, 16, 3, 201, [0, 0, 1, 0], 1), // one row of tiles
            (16, 16, 31, 30, [1; 4], 7), // more threads than rows of tiles
        ] {
            let g = geom(ci, co, h, w, pads);
            assert!(applies(&g), "{g:?}");
            let x: Vec<f32> = (0..g.in_len())
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
                .collect();
            let wt: Vec<f32> = (0..co * ci * 9)
                .map(|i| ((i * 53 % 89) as f32 - 44.0) / 40.0)
                .collect();
            let xd: Vec<f64> = x.iter().map(|&v| v as f64).collect();
            let wd: Vec<f64> = wt.iter().map(|&v| v as f64).collect();
            let bias: Vec<f32> = (0..co).map(|o| o as f32 * 0.25 - 2.0).collect();
            let plane = g.oh * g.ow;
            let want: Vec<f64> = conv2d_naive(&g, &xd, &wd)
                .iter()
                .enumerate()
                .map(|(i, &v)| v + bias[i / plane] as f64)
                .collect();
            let mut got = vec![f32::NAN; g.out_len()];
            let f = Filters::new(&g, &wt, threads);
            conv3x3(&g, &f, &x, (&bias, false), &mut got, threads);
            let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
            for (i, (&a, &b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a as f64 - b).abs() <= 1e-5 * scale,
                    "{g:?} at {i}: {a} vs {b}"
                );
            }
            let mut rel = vec![f32::NAN; g.out_len()];
            conv3x3(&g, &f, &x, (&bias, true), &mut rel, threads);
            assert!(
                rel.iter().zip(&got).all(|(&r, &v)| r == v.max(0.0)),
                "{g:?}"
            );
        }
    }

    #[test]
    fn refuses_what_it_does_not_compute() {
        let mut g = geom(16, 16, 20, 20, [1; 4]);
        assert!(applies(&g));
        g.stride = [2, 2];
        assert!(!applies(&g));
        let g = geom(8, 16, 20, 20, [1; 4]);
        assert!(!applies(&g));
        let g = geom(16, 16, 14, 14, [1; 4]); // 49 tiles: im2col + GEMM is faster
        assert!(!applies(&g));
    }
}
