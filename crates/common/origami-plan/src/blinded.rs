//! The blinded path of a request, on the enclave's threads: requantize and blind a layer's
//! input (x̄ = x̃ + r mod p, the mask r drawn segment by segment from the pad key), and unblind
//! the accelerator's reply (y = center(result − u mod p) + bias, ReLU). Both run over
//! independent parts on up to `threads` scoped threads and give the same bits whatever the
//! thread count: the mask's segments are fixed (`origami_field::pad::MASK_SEGMENT`), not the
//! threads' parts.

use origami_field::pad::{par_parts, MASK_SEGMENT};
use origami_field::MaskRng;
use origami_model::linalg::LinearShape;
use zeroize::Zeroize;

use crate::plan::{quantize_scaled, QLinear, SATURATION_LIMIT};
use crate::qops::{finish_linear, shift_round, QVal};
use crate::EnclaveError;

/// The two hottest loops of a request, compiled twice: for the baseline x86-64 target and for
/// AVX2, chosen at run time (the build never assumes the CPU: no `target-cpu`).
mod simd {
    use origami_field::with_avx2;

    with_avx2!(
        /// [`blind32_kernel`], with AVX2 where the CPU has it.
        pub fn blind32(o: &mut [u32], x: &[i32], r: &[u32], s: u32, half: u32, clamp: i32, p: i32)
            => blind32_kernel
    );

    with_avx2!(
        /// [`unblind_kernel`], with AVX2 where the CPU has it.
        pub fn unblind(out: &mut [i32], res: &[u32], ub: &[u8], bias: i32, relu: bool, p: i32, half: i32) -> i32
            => unblind_kernel
    );

    with_avx2!(
        /// [`add_mask_kernel`], with AVX2 where the CPU has it.
        pub fn add_mask(o: &mut [u32], x: &[i32], r: &[u32], p: i32) => add_mask_kernel
    );

    /// x̄ = x̃ + r mod p for x̃ already requantized (|x̃| < p).
    #[inline(always)]
    fn add_mask_kernel(o: &mut [u32], x: &[i32], r: &[u32], p: i32) {
        for ((o, &x), &r) in o.iter_mut().zip(x).zip(r) {
            let v = if x < 0 { x + p } else { x } + r as i32;
            *o = (if v >= p { v - p } else { v }) as u32;
        }
    }

    /// x̄ = clamp(round(x · 2^-s)) + r mod p in 32-bit lanes (1 ≤ s ≤ 30, clamp < 2^24):
    /// |x| + half < 2^31 + 2^29 fits u32, the sums stay below 2^26.
    #[inline(always)]
    fn blind32_kernel(o: &mut [u32], x: &[i32], r: &[u32], s: u32, half: u32, clamp: i32, p: i32) {
        for ((o, &x), &r) in o.iter_mut().zip(x).zip(r) {
            let a = ((x.unsigned_abs() + half) >> s) as i32;
            let v = if x < 0 { -a } else { a }.clamp(-clamp, clamp);
            let v = if v < 0 { v + p } else { v } + r as i32;
            *o = (if v >= p { v - p } else { v }) as u32;
        }
    }

    /// One channel of y = center(result − u mod p) + bias (ReLU if asked); returns max |y|
    /// before the ReLU.
    #[inline(always)]
    fn unblind_kernel(
        out: &mut [i32],
        res: &[u32],
        ub: &[u8],
        bias: i32,
        relu: bool,
        p: i32,
        half: i32,
    ) -> i32 {
        let mut worst = 0i32;
        for ((o, &r), w) in out.iter_mut().zip(res).zip(ub.chunks_exact(4)) {
            let u = u32::from_le_bytes([w[0], w[1], w[2], w[3]]) as i32;
            let d = r as i32 - u; // (−p, p)
            let d = if d < 0 { d + p } else { d }; // result − u mod p
            let v = if d > half { d - p } else { d } + bias;
            worst = worst.max(v.abs());
            *o = if relu { v.max(0) } else { v };
        }
        worst
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// The run-time dispatched loops (AVX2 here where the CPU has it) give the baseline
        /// build's bits.
        #[test]
        fn dispatched_kernels_match_the_baseline_build() {
            let p = origami_field::P as i32;
            let n = 1000;
            let x: Vec<i32> = (0..n as i64).map(|i| (i * 7_654_321 + 17) as i32).collect();
            let r: Vec<u32> = (0..n as u64)
                .map(|i| (i * 2_654_435_761 % p as u64) as u32)
                .collect();
            for s in [1u32, 7, 30] {
                let (mut a, mut b) = (vec![0u32; n], vec![0u32; n]);
                blind32(&mut a, &x, &r, s, 1 << (s - 1), 1023, p);
                blind32_kernel(&mut b, &x, &r, s, 1 << (s - 1), 1023, p);
                assert_eq!(a, b, "shift {s}");
            }
            let ub: Vec<u8> = r.iter().rev().flat_map(|v| v.to_le_bytes()).collect();
            for (bias, relu) in [(0, false), (-5000, true), (1 << 29, false)] {
                let (mut a, mut b) = (vec![0i32; n], vec![0i32; n]);
                let wa = unblind(&mut a, &r, &ub, bias, relu, p, p / 2);
                let wb = unblind_kernel(&mut b, &r, &ub, bias, relu, p, p / 2);
                assert_eq!((a, wa), (b, wb), "bias {bias}, relu {relu}");
            }
            let xs: Vec<i32> = x.iter().map(|&v| v % 1024).collect();
            let (mut a, mut b) = (vec![0u32; n], vec![0u32; n]);
            add_mask(&mut a, &xs, &r, p);
            add_mask_kernel(&mut b, &xs, &r, p);
            assert_eq!(a, b);
        }
    }
}

/// Elements per pass: r for this many into a small buffer (wiped), then one branch-free loop.
const CHUNK: usize = 1024;

/// `requantize` fused with blinding: x̄ = x̃ + r mod p, where `segment(k)` gives the stream of
/// the mask's segment k (`PadKey::mask_segment`), on up to `threads` threads. With `keep`, also
/// x̃ from the same pass (the Freivalds check needs it; the caller wipes it). Neither r nor
/// (without `keep`) x̃ is ever held whole. The same bits as
/// `requantize_with(v, exp, clamp, |q| add(reduce_small(q), r[i]))` with r the whole mask.
pub fn requantize_blind(
    v: &QVal,
    exp: i32,
    clamp: i64,
    segment: &(dyn Fn(usize) -> MaskRng + Sync),
    threads: usize,
    keep: bool,
) -> (Vec<u32>, Option<Vec<i32>>) {
    let n = match v {
        QVal::Float(t) => t.data.len(),
        QVal::Int { data, .. } => data.len(),
    };
    let mut out = vec![0u32; n];
    let mut kept = keep.then(|| vec![0i32; n]);
    // One part per thread: (start, x̄ part, x̃ part).
    let work = |start: usize, o: &mut [u32], k: Option<&mut [i32]>| {
        let mut r = [0u32; CHUNK];
        let mut k = k;
        for (j, o) in o.chunks_mut(MASK_SEGMENT).enumerate() {
            let at = start + j * MASK_SEGMENT;
            let mut rng = segment(at / MASK_SEGMENT);
            for (c, o) in o.chunks_mut(CHUNK).enumerate() {
                let a = at + c * CHUNK;
                let r = &mut r[..o.len()];
                rng.fill(r);
                match k.as_deref_mut() {
                    Some(k) => {
                        let k = &mut k[a - start..a - start + o.len()];
                        requantize_into(v, exp, clamp, a, k);
                        simd::add_mask(o, k, r, origami_field::P as i32);
                    }
                    None => blind_into(v, exp, clamp, a, o, r),
                }
            }
        }
        r.zeroize();
    };
    match kept.as_mut() {
        None => par_parts(&mut out, MASK_SEGMENT, threads, |s, o| work(s, o, None)),
        Some(k) => {
            // Split x̄ and x̃ alike: parts of whole segments, paired.
            let mut pairs: Vec<(&mut [u32], &mut [i32])> = Vec::new();
            let per = n.div_ceil(MASK_SEGMENT).div_ceil(threads.max(1)).max(1) * MASK_SEGMENT;
            for (o, k) in out.chunks_mut(per).zip(k.chunks_mut(per)) {
                pairs.push((o, k));
            }
            par_parts(&mut pairs, 1, threads, |i, part| {
                for (j, (o, k)) in part.iter_mut().enumerate() {
                    work((i + j) * per, o, Some(k));
                }
            });
        }
    }
    (out, kept)
}

/// x̃ for elements `a .. a + out.len()` of `v` (as `requantize`).
fn requantize_into(v: &QVal, exp: i32, clamp: i64, a: usize, out: &mut [i32]) {
    match v {
        QVal::Float(t) => {
            let scale = 2f64.powi(exp);
            for (o, &x) in out.iter_mut().zip(&t.data[a..]) {
                *o = quantize_scaled(x, scale).clamp(-clamp, clamp) as i32;
            }
        }
        QVal::Int { data, exp: e, .. } => {
            let s = e - exp;
            for (o, &x) in out.iter_mut().zip(&data[a..]) {
                *o = shift_round(x as i64, s).clamp(-clamp, clamp) as i32;
            }
        }
    }
}

/// x̄ for elements `a .. a + o.len()` of `v`, from the mask elements `r`, in one pass.
fn blind_into(v: &QVal, exp: i32, clamp: i64, a: usize, o: &mut [u32], r: &[u32]) {
    /// The 64-bit pass for any rounding `q`.
    fn blind64<X: Copy>(o: &mut [u32], xs: &[X], r: &[u32], clamp: i64, q: impl Fn(X) -> i64) {
        let p = origami_field::P as i64;
        for ((o, &x), &r) in o.iter_mut().zip(xs).zip(r) {
            let v = q(x).clamp(-clamp, clamp); // |v| ≤ clamp < p
            let v = if v < 0 { v + p } else { v } + r as i64; // < 2p
            *o = (if v >= p { v - p } else { v }) as u32;
        }
    }
    let b = a + o.len();
    match v {
        QVal::Float(t) => {
            let scale = 2f64.powi(exp);
            blind64(o, &t.data[a..b], r, clamp, |x| quantize_scaled(x, scale))
        }
        QVal::Int { data, exp: e, .. } => {
            // `shift_round` with the shift hoisted out of the loop.
            let (s, xs) = (e - exp, &data[a..b]);
            if s <= 0 {
                let up = (-s).min(40);
                blind64(o, xs, r, clamp, |x| (x as i64) << up)
            } else if s >= 62 {
                blind64(o, xs, r, clamp, |_| 0)
            } else if s <= 30 && clamp < 1 << 24 {
                // The usual case, in 32-bit lanes (what the baseline x86-64 target vectorizes).
                let (half, clamp, p) = (1u32 << (s - 1), clamp as i32, origami_field::P as i32);
                simd::blind32(o, xs, r, s as u32, half, clamp, p)
            } else {
                let half = 1i64 << (s - 1);
                blind64(o, xs, r, clamp, |x| {
                    let v = x as i64;
                    let a = (v.abs() + half) >> s;
                    if v < 0 {
                        -a
                    } else {
                        a
                    }
                })
            }
        }
    }
}

/// [`finish_linear`] for a blinded layer's reply: y = center(result − u mod p), with u the
/// opened pad as little-endian u32 words. The same bits as `finish_linear` over that iterator,
/// in per-channel loops over slices the compiler vectorizes, channels split over up to
/// `threads` threads (this runs on every output of every blinded layer).
pub fn finish_unblinded(
    l: &QLinear,
    node: &str,
    reply: (&[u32], &[u8]),
    out_shape: &[usize],
    relu: bool,
    threads: usize,
) -> Result<QVal, EnclaveError> {
    let (result, u) = reply;
    let n = l.shape.out_len();
    assert!(
        result.len() == n && u.len() == 4 * n,
        "reply and pad sizes were checked"
    );
    let plane = match l.shape {
        LinearShape::Conv(g) => g.oh * g.ow,
        LinearShape::Dense { .. } => 1,
    };
    let unblinded = || {
        result
            .iter()
            .zip(origami_field::pad::words(u))
            .map(|(&r, u)| origami_field::center(origami_field::sub(r, u)))
    };
    // Biases beyond 2^30 (an odd model; they saturate anyway) take the i64 path.
    if l.bias_q.iter().any(|b| b.unsigned_abs() > 1 << 30) {
        return finish_linear(l, node, unblinded(), out_shape, relu);
    }
    let (p, half) = (origami_field::P as i32, (origami_field::P / 2) as i32);
    let mut data = vec![0i32; n];
    let worst = std::sync::atomic::AtomicI32::new(0);
    par_parts(&mut data, plane, threads, |start, part| {
        let mut w = 0i32;
        for (j, out) in part.chunks_mut(plane).enumerate() {
            let (ch, a) = (start / plane + j, start + j * plane);
            // |bias| ≤ 2^30 and |center(·)| < 2^23: the sum fits in i32.
            let bias = l.bias_q.get(ch).map_or(0, |&b| b as i32);
            let (res, ub) = (&result[a..a + out.len()], &u[4 * a..4 * (a + out.len())]);
            w = w.max(simd::unblind(out, res, ub, bias, relu, p, half));
        }
        worst.fetch_max(w, std::sync::atomic::Ordering::Relaxed);
    });
    let worst = worst.into_inner();
    if worst as i64 > SATURATION_LIMIT {
        // The same error as `finish_linear` (it names the layer, never the value).
        return finish_linear(l, node, unblinded(), out_shape, relu);
    }
    Ok(QVal::Int {
        shape: out_shape.to_vec(),
        data,
        exp: l.out_exp(),
    })
}

/// [`finish_unblinded`] of a convolution followed by a 2×2 stride-2 max-pool, without the
/// unpooled output ever existing: each pair of output rows is unblinded into a small buffer
/// (wiped) and pooled at once. The same bits as `max_pool_2x2` over `finish_unblinded`'s output,
/// and the same saturation check over every unpooled value (an odd last row or column is
/// unblinded and checked, then dropped as the pool drops it). `pooled_shape` is the pool's
/// output, `[1, out_c, oh / 2, ow / 2]`.
pub fn finish_unblinded_pool2(
    l: &QLinear,
    node: &str,
    reply: (&[u32], &[u8]),
    pooled_shape: &[usize],
    relu: bool,
    threads: usize,
) -> Result<QVal, EnclaveError> {
    let (result, u) = reply;
    let LinearShape::Conv(g) = l.shape else {
        return Err(EnclaveError::Plan(format!(
            "{node}: pooled unblinding of a dense layer"
        )));
    };
    let (oh, ow) = (g.oh, g.ow);
    let (ph, pw) = (oh / 2, ow / 2);
    let n = l.shape.out_len();
    assert!(
        result.len() == n && u.len() == 4 * n,
        "reply and pad sizes were checked"
    );
    if pooled_shape != [1, g.out_c, ph, pw] {
        return Err(EnclaveError::Plan(format!(
            "{node}: a 2×2 pool of {}×{}×{} gives {}×{}×{}, not {pooled_shape:?}",
            g.out_c, oh, ow, g.out_c, ph, pw
        )));
    }
    if l.bias_q.iter().any(|b| b.unsigned_abs() > 1 << 30) {
        // Biases beyond 2^30 (an odd model; they saturate anyway): the two steps.
        let y = finish_unblinded(l, node, reply, &[1, g.out_c, oh, ow], relu, threads)?;
        let QVal::Int { data, exp, .. } = &y else {
            return Err(EnclaveError::Plan(format!(
                "{node}: unblinding gave floats"
            )));
        };
        let mut out = vec![0i32; pooled_shape.iter().product()];
        origami_model::exec::max_pool_2x2(data, oh, ow, &mut out);
        return Ok(QVal::Int {
            shape: pooled_shape.to_vec(),
            data: out,
            exp: *exp,
        });
    }
    let (p, half) = (origami_field::P as i32, (origami_field::P / 2) as i32);
    let (plane, pplane) = (oh * ow, ph * pw);
    let mut data = vec![0i32; g.out_c * pplane];
    let worst = std::sync::atomic::AtomicI32::new(0);
    par_parts(&mut data, pplane.max(1), threads, |start, part| {
        let mut w = 0i32;
        let mut rows = vec![0i32; 2 * ow];
        let first = start / pplane.max(1);
        for ch in first..first + part.len() / pplane.max(1) {
            let bias = l.bias_q.get(ch).map_or(0, |&b| b as i32);
            let out = &mut part[(ch - first) * pplane..(ch - first + 1) * pplane];
            for y in (0..oh).step_by(2) {
                let nrows = (oh - y).min(2);
                let a = ch * plane + y * ow;
                let len = nrows * ow;
                let (res, ub) = (&result[a..a + len], &u[4 * a..4 * (a + len)]);
                w = w.max(simd::unblind(
                    &mut rows[..len],
                    res,
                    ub,
                    bias,
                    relu,
                    p,
                    half,
                ));
                if nrows == 2 {
                    let o = &mut out[(y / 2) * pw..(y / 2 + 1) * pw];
                    origami_model::exec::max_pool_2x2(&rows, 2, ow, o);
                }
            }
        }
        rows.zeroize();
        worst.fetch_max(w, std::sync::atomic::Ordering::Relaxed);
    });
    if worst.into_inner() as i64 > SATURATION_LIMIT {
        data.zeroize();
        // The same error as `finish_linear` (it names the layer, never the value).
        let unblinded = result
            .iter()
            .zip(origami_field::pad::words(u))
            .map(|(&r, u)| origami_field::center(origami_field::sub(r, u)));
        return match finish_linear(l, node, unblinded, &[1, g.out_c, oh, ow], relu) {
            Err(e) => Err(e),
            Ok(_) => Err(EnclaveError::Plan(format!(
                "{node}: saturation check disagrees"
            ))),
        };
    }
    Ok(QVal::Int {
        shape: pooled_shape.to_vec(),
        data,
        exp: l.out_exp(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qops::{requantize, requantize_with};
    use origami_field::{add, reduce_small, PadKey};
    use origami_model::Tensor;

    /// The chunked, vectorized blinding gives exactly the bits of the scalar definition, for
    /// float and fixed-point inputs, every kind of shift, negative values, clamping, and lengths
    /// that are not multiples of the chunk.
    #[test]
    fn requantize_blind_matches_the_scalar_definition() {
        let key = PadKey::insecure_from_seed_for_tests([3; 32]);
        // Three segments and a partial one, so parts and segments fall differently.
        let n = 3 * MASK_SEGMENT + 2500;
        let mut ints: Vec<i32> = (0..n as i64)
            .map(|i| ((i * 7919 % 4001) - 2000) as i32 * if i % 7 == 0 { 1 << 12 } else { 1 })
            .collect();
        ints[..6].copy_from_slice(&[i32::MIN, i32::MAX, -1, 1, i32::MIN + 1, 0]);
        let floats: Vec<f32> = ints.iter().map(|&v| v as f32 * 0.013).collect();
        let mut cases = vec![QVal::Float(Tensor {
            shape: vec![n],
            data: floats,
        })];
        for e in [-3, 0, 5, 9, 31, 34, 40, 70] {
            cases.push(QVal::Int {
                shape: vec![n],
                data: ints.clone(),
                exp: e,
            });
        }
        for (i, v) in cases.iter().enumerate() {
            for (exp, clamp) in [(4, 1023), (0, 100), (7, 1 << 20)] {
                let layer = (i * 3 + exp as usize) as u16;
                let mut r = vec![0u32; n];
                key.fill_mask(9, layer, &mut r, 1);
                let mut at = 0;
                let want = requantize_with(v, exp, clamp, |q| {
                    at += 1;
                    add(reduce_small(q as i64), r[at - 1])
                });
                let x = requantize(v, exp, clamp);
                let segment = |k: usize| key.mask_segment(9, layer, k);
                for threads in [1, 2, 3] {
                    let (got, none) = requantize_blind(v, exp, clamp, &segment, threads, false);
                    assert!(
                        got == want && none.is_none(),
                        "case {i}, exp {exp}, clamp {clamp}"
                    );
                    let (got, kept) = requantize_blind(v, exp, clamp, &segment, threads, true);
                    assert!(got == want, "case {i}, exp {exp}, clamp {clamp}, keep");
                    assert!(
                        kept.as_ref() == Some(&x),
                        "case {i}, exp {exp}, clamp {clamp}"
                    );
                }
            }
        }
    }

    /// The pooled unblinding gives exactly `max_pool_2x2` of the plain unblinding, for even
    /// and odd output sizes, with and without ReLU, negative biases, on 1 to 3 threads; and
    /// the same saturation error from a value the pool would have dropped.
    #[test]
    fn pooled_unblinding_is_unblinding_then_pooling() {
        use origami_model::linalg::ConvGeom;
        use origami_model::NodeId;
        let p = origami_field::P as u64;
        for (oh, ow, relu) in [(8, 6, true), (7, 5, false), (5, 9, true), (2, 2, false)] {
            let out_c = 3;
            let g = ConvGeom {
                in_c: 1,
                h: oh,
                w: ow,
                out_c,
                kh: 1,
                kw: 1,
                stride: [1, 1],
                pads: [0; 4],
                groups: 1,
                oh,
                ow,
            };
            let l = QLinear {
                node: NodeId::new(0),
                layer: 0,
                shape: LinearShape::Conv(g),
                wq: vec![1.0; out_c],
                w_exp: 0,
                in_exp: 0,
                bias_q: vec![-40, 0, 25],
                est_max: 0.0,
                worst_case: 0,
                fused_relu: relu,
            };
            let n = out_c * oh * ow;
            // d = result − u mod p spans negative and positive values around ±100.
            let u: Vec<u32> = (0..n as u64)
                .map(|i| (i * 2_654_435_761 % p) as u32)
                .collect();
            let d: Vec<i64> = (0..n as i64).map(|i| (i * 37 % 201) - 100).collect();
            let result: Vec<u32> = u
                .iter()
                .zip(&d)
                .map(|(&u, &d)| ((u as i64 + d).rem_euclid(p as i64)) as u32)
                .collect();
            let ub: Vec<u8> = u.iter().flat_map(|v| v.to_le_bytes()).collect();
            let full =
                finish_unblinded(&l, "c", (&result, &ub), &[1, out_c, oh, ow], relu, 1).unwrap();
            let QVal::Int { data, exp, .. } = &full else {
                panic!()
            };
            let mut want = vec![0i32; out_c * (oh / 2) * (ow / 2)];
            origami_model::exec::max_pool_2x2(data, oh, ow, &mut want);
            let shape = [1, out_c, oh / 2, ow / 2];
            for threads in [1, 2, 3] {
                let got =
                    finish_unblinded_pool2(&l, "c", (&result, &ub), &shape, relu, threads).unwrap();
                assert_eq!(
                    got,
                    QVal::Int {
                        shape: shape.to_vec(),
                        data: want.clone(),
                        exp: *exp
                    },
                    "{oh}×{ow}, relu {relu}, {threads} threads"
                );
            }
            // A saturated value in the last row, which an odd pool drops, still fails.
            let mut bad = result.clone();
            bad[n - 1] = ((u[n - 1] as u64 + p / 2) % p) as u32;
            let e = finish_unblinded_pool2(&l, "c", (&bad, &ub), &shape, relu, 2).unwrap_err();
            assert!(matches!(e, EnclaveError::Saturation { .. }), "{e:?}");
            // A shape that is not this conv's pool is refused.
            assert!(
                finish_unblinded_pool2(&l, "c", (&result, &ub), &[1, out_c, oh, ow], relu, 1)
                    .is_err()
            );
        }
    }
}
