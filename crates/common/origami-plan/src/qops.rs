//! Fixed-point tensors and the operations the enclave runs on them. Shared by the quantized
//! reference and the enclave core, so that every placement computes the same bits.

use origami_model::exec;
use origami_model::linalg::{conv2d, gemm_nt, LinearShape};
use origami_model::{Node, Op, Pool, Tensor};

use origami_field::MaskRng;

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
        }
    }
}

use crate::plan::{quantize, quantize_scaled, QLinear, SATURATION_LIMIT};
use crate::EnclaveError;

/// A value inside the enclave: fixed point (x ≈ data · 2^-exp) or float.
#[derive(Clone, Debug, PartialEq)]
pub enum QVal {
    Int {
        shape: Vec<usize>,
        data: Vec<i32>,
        exp: i32,
    },
    Float(Tensor),
}

/// Values in the enclave derive from the user's input: cleared when dropped.
impl Drop for QVal {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        match self {
            QVal::Int { data, .. } => data.zeroize(),
            QVal::Float(t) => t.data.zeroize(),
        }
    }
}

impl QVal {
    pub fn shape(&self) -> &[usize] {
        match self {
            QVal::Int { shape, .. } => shape,
            QVal::Float(t) => &t.shape,
        }
    }

    /// Bytes held (for the enclave memory meter).
    pub fn bytes(&self) -> usize {
        match self {
            QVal::Int { data, .. } => data.len() * 4,
            QVal::Float(t) => t.data.len() * 4,
        }
    }

    /// The float value (exact scaling by a power of two, rounded once to f32).
    pub fn to_float(&self) -> Tensor {
        match self {
            QVal::Float(t) => t.clone(),
            QVal::Int { shape, data, exp } => {
                let s = 2f64.powi(-exp);
                Tensor {
                    shape: shape.clone(),
                    data: data.iter().map(|&v| (v as f64 * s) as f32).collect(),
                }
            }
        }
    }
}

/// v · 2^-s rounded half away from zero (s ≥ 0), or v · 2^s exactly (s < 0).
#[inline]
fn shift_round(v: i64, s: i32) -> i64 {
    if s <= 0 {
        v << (-s).min(40)
    } else if s >= 62 {
        0
    } else {
        let half = 1i64 << (s - 1);
        if v >= 0 {
            (v + half) >> s
        } else {
            -((-v + half) >> s)
        }
    }
}

/// The value requantized to exponent `exp` and clamped to ±`clamp`: a linear layer's input.
pub fn requantize(v: &QVal, exp: i32, clamp: i64) -> Vec<i32> {
    requantize_with(v, exp, clamp, |q| q)
}

/// `requantize` fused with a per-element map (the enclave blinds in the same pass, so the
/// plaintext input of an offloaded layer is never materialized).
pub fn requantize_with<T>(v: &QVal, exp: i32, clamp: i64, mut f: impl FnMut(i32) -> T) -> Vec<T> {
    match v {
        QVal::Float(t) => {
            let scale = 2f64.powi(exp);
            t.data
                .iter()
                .map(|&x| f(quantize_scaled(x, scale).clamp(-clamp, clamp) as i32))
                .collect()
        }
        QVal::Int { data, exp: e, .. } => {
            let s = e - exp;
            data.iter()
                .map(|&x| f(shift_round(x as i64, s).clamp(-clamp, clamp) as i32))
                .collect()
        }
    }
}

/// `requantize` fused with blinding: x̄ = x̃ + r mod p, with r drawn from `mask`. Works in
/// chunks: r for 1024 elements into a small buffer (wiped before returning), then one
/// branch-free pass the compiler vectorizes; neither x̃ nor r is ever held whole. The same bits
/// as `requantize_with(v, exp, clamp, |q| add(reduce_small(q), mask.next_element()))`.
pub fn requantize_blind(v: &QVal, exp: i32, clamp: i64, mask: &mut MaskRng) -> Vec<u32> {
    /// Runs `pass(out, x, r)` over chunks of `xs` with r freshly drawn for each chunk.
    fn by_chunks<X>(
        xs: &[X],
        mask: &mut MaskRng,
        mut pass: impl FnMut(&mut [u32], &[X], &[u32]),
    ) -> Vec<u32> {
        const CHUNK: usize = 1024;
        let mut r = [0u32; CHUNK];
        let mut out = vec![0u32; xs.len()];
        for (o, x) in out.chunks_mut(CHUNK).zip(xs.chunks(CHUNK)) {
            let r = &mut r[..o.len()];
            mask.fill(r);
            pass(o, x, r);
        }
        zeroize::Zeroize::zeroize(&mut r);
        out
    }
    /// The 64-bit pass for any rounding `q`.
    fn blind64<X: Copy>(
        xs: &[X],
        clamp: i64,
        mask: &mut MaskRng,
        q: impl Fn(X) -> i64,
    ) -> Vec<u32> {
        let p = origami_field::P as i64;
        by_chunks(xs, mask, |o, x, r| {
            for ((o, &x), &r) in o.iter_mut().zip(x).zip(r) {
                let v = q(x).clamp(-clamp, clamp); // |v| ≤ clamp < p
                let v = if v < 0 { v + p } else { v } + r as i64; // < 2p
                *o = (if v >= p { v - p } else { v }) as u32;
            }
        })
    }
    match v {
        QVal::Float(t) => {
            let scale = 2f64.powi(exp);
            blind64(&t.data, clamp, mask, |x| quantize_scaled(x, scale))
        }
        QVal::Int { data, exp: e, .. } => {
            // `shift_round` with the shift hoisted out of the loop.
            let s = e - exp;
            if s <= 0 {
                let up = (-s).min(40);
                blind64(data, clamp, mask, |x| (x as i64) << up)
            } else if s >= 62 {
                blind64(data, clamp, mask, |_| 0)
            } else if s <= 30 && clamp < 1 << 24 {
                // The usual case, in 32-bit lanes (what the baseline x86-64 target vectorizes).
                let (half, clamp, p) = (1u32 << (s - 1), clamp as i32, origami_field::P as i32);
                by_chunks(data, mask, |o, x, r| {
                    simd::blind32(o, x, r, s as u32, half, clamp, p)
                })
            } else {
                let half = 1i64 << (s - 1);
                blind64(data, clamp, mask, |x| {
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

/// Adds the bias, checks the field bound and optionally applies a fused ReLU, in one pass;
/// `y` is `out_c × plane` (conv) or `out_f` (dense).
pub fn finish_linear(
    l: &QLinear,
    node: &str,
    y: impl Iterator<Item = i64>,
    out_shape: &[usize],
    relu: bool,
) -> Result<QVal, EnclaveError> {
    let plane = match l.shape {
        LinearShape::Conv(g) => g.oh * g.ow,
        LinearShape::Dense { .. } => 1,
    };
    let mut data = Vec::with_capacity(l.shape.out_len());
    let (mut ch, mut j) = (0usize, 0usize);
    let mut bias = l.bias_q.first().copied().unwrap_or(0);
    for v in y {
        if j == plane {
            j = 0;
            ch += 1;
            bias = l.bias_q[ch];
        }
        j += 1;
        let v = v + bias;
        if v.abs() > SATURATION_LIMIT {
            return Err(EnclaveError::Saturation {
                layer: l.layer,
                node: node.to_string(),
            });
        }
        data.push(if relu { v.max(0) as i32 } else { v as i32 });
    }
    Ok(QVal::Int {
        shape: out_shape.to_vec(),
        data,
        exp: l.out_exp(),
    })
}

/// [`finish_linear`] for a blinded layer's reply: y = center(result − u mod p), with u the
/// opened pad as little-endian u32 words. The same bits as `finish_linear` over that iterator,
/// in per-channel loops over slices the compiler vectorizes (this runs on every output of every
/// blinded layer, inside the one enclave thread).
pub fn finish_unblinded(
    l: &QLinear,
    node: &str,
    result: &[u32],
    u: &[u8],
    out_shape: &[usize],
    relu: bool,
) -> Result<QVal, EnclaveError> {
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
    let mut worst = 0i32;
    for (ch, ((out, res), ub)) in data
        .chunks_mut(plane)
        .zip(result.chunks(plane))
        .zip(u.chunks(4 * plane))
        .enumerate()
    {
        // |bias| ≤ 2^30 and |center(·)| < 2^23: the sum fits in i32.
        let bias = l.bias_q.get(ch).map_or(0, |&b| b as i32);
        let w = simd::unblind(out, res, ub, bias, relu, p, half);
        worst = worst.max(w);
    }
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

/// A linear layer computed inside the enclave (the `enclave` placement and the reference):
/// exact, since |x̃| ≤ clamp < 2^10, |w̃| ≤ 127 and K < 2^15 keep sums below 2^32 ≪ 2^53.
pub fn linear_local(
    l: &QLinear,
    node: &str,
    x: &[i32],
    out_shape: &[usize],
    relu: bool,
    threads: usize,
) -> Result<QVal, EnclaveError> {
    let mut xf: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let mut y = vec![0f64; l.shape.out_len()];
    match &l.shape {
        LinearShape::Conv(g) => conv2d(g, &xf, &l.wq, &mut y, threads),
        LinearShape::Dense { in_f, out_f } => {
            gemm_nt(1, *in_f, *out_f, &xf, &l.wq, &mut y, threads)
        }
    }
    let out = finish_linear(l, node, y.iter().map(|&v| v as i64), out_shape, relu);
    // Plaintext activations: cleared.
    zeroize::Zeroize::zeroize(&mut xf);
    zeroize::Zeroize::zeroize(&mut y);
    out
}

fn pool_int(
    shape: &[usize],
    data: &[i32],
    p: &Pool,
    max: bool,
) -> Result<(Vec<usize>, Vec<i32>), EnclaveError> {
    let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3]);
    let (oh, ow) = p
        .out_hw(h, w)
        .map_err(|e| EnclaveError::Plan(e.to_string()))?;
    let mut out = vec![0i32; n * c * oh * ow];
    if max && exec::is_pool_2x2(p) {
        exec::max_pool_2x2(data, h, w, &mut out);
        return Ok((vec![n, c, oh, ow], out));
    }
    for (pi, plane) in data.chunks(h * w).enumerate() {
        let o = &mut out[pi * oh * ow..(pi + 1) * oh * ow];
        for oy in 0..oh {
            for ox in 0..ow {
                let mut mx = i32::MIN;
                let mut sum = 0i64;
                let mut cnt = 0i64;
                for ky in 0..p.kernel[0] {
                    let iy = (oy * p.stride[0] + ky) as isize - p.pads[0] as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    for kx in 0..p.kernel[1] {
                        let ix = (ox * p.stride[1] + kx) as isize - p.pads[1] as isize;
                        if ix < 0 || ix >= w as isize {
                            continue;
                        }
                        let v = plane[iy as usize * w + ix as usize];
                        mx = mx.max(v);
                        sum += v as i64;
                        cnt += 1;
                    }
                }
                o[oy * ow + ox] = if max {
                    mx
                } else {
                    let div = if p.count_include_pad {
                        (p.kernel[0] * p.kernel[1]) as i64
                    } else {
                        cnt.max(1)
                    };
                    div_round(sum, div) as i32
                };
            }
        }
    }
    Ok((vec![n, c, oh, ow], out))
}

/// a / b rounded half away from zero (b > 0).
fn div_round(a: i64, b: i64) -> i64 {
    if a >= 0 {
        (a + b / 2) / b
    } else {
        -((-a + b / 2) / b)
    }
}

/// A non-linear node on enclave values. Integer implementations where they exist; otherwise
/// the float operator on dequantized values (e.g. Softmax, an unfolded BatchNorm).
pub fn eval_nonlinear(node: &Node, ins: &[&QVal]) -> Result<QVal, EnclaveError> {
    if let QVal::Int { shape, data, exp } = ins[0] {
        let int = |shape: Vec<usize>, data: Vec<i32>| QVal::Int {
            shape,
            data,
            exp: *exp,
        };
        match &node.op {
            Op::Relu => return Ok(int(shape.clone(), data.iter().map(|&v| v.max(0)).collect())),
            Op::Clip { min, max } => {
                let lo = if min.is_finite() {
                    quantize(*min, *exp).clamp(i32::MIN as i64, i32::MAX as i64) as i32
                } else {
                    i32::MIN
                };
                let hi = if max.is_finite() {
                    quantize(*max, *exp).clamp(i32::MIN as i64, i32::MAX as i64) as i32
                } else {
                    i32::MAX
                };
                return Ok(int(
                    shape.clone(),
                    data.iter().map(|&v| v.clamp(lo, hi.max(lo))).collect(),
                ));
            }
            Op::MaxPool(p) => {
                let (s, d) = pool_int(shape, data, p, true)?;
                return Ok(int(s, d));
            }
            Op::AvgPool(p) => {
                let (s, d) = pool_int(shape, data, p, false)?;
                return Ok(int(s, d));
            }
            Op::GlobalAvgPool => {
                let hw = shape[2] * shape[3];
                let d = data
                    .chunks(hw)
                    .map(|pl| div_round(pl.iter().map(|&v| v as i64).sum(), hw as i64) as i32)
                    .collect();
                return Ok(int(vec![shape[0], shape[1], 1, 1], d));
            }
            Op::Flatten => {
                return Ok(int(
                    vec![shape[0], data.len() / shape[0].max(1)],
                    data.clone(),
                ))
            }
            Op::Reshape(dims) => {
                let mut s = vec![shape[0]];
                s.extend_from_slice(dims);
                return Ok(int(s, data.clone()));
            }
            Op::Add => {
                if let QVal::Int {
                    data: d2,
                    exp: e2,
                    shape: s2,
                } = ins[1]
                {
                    if s2 != shape {
                        return Err(EnclaveError::Plan(format!("Add of {shape:?} and {s2:?}")));
                    }
                    let e = (*exp).min(*e2);
                    let d = data
                        .iter()
                        .zip(d2)
                        .map(|(&a, &b)| {
                            let v = shift_round(a as i64, exp - e) + shift_round(b as i64, e2 - e);
                            v.clamp(i32::MIN as i64, i32::MAX as i64) as i32
                        })
                        .collect();
                    return Ok(QVal::Int {
                        shape: shape.clone(),
                        data: d,
                        exp: e,
                    });
                }
            }
            _ => {}
        }
    }
    let mut floats: Vec<Tensor> = ins.iter().map(|v| v.to_float()).collect();
    let out = {
        let refs: Vec<&Tensor> = floats.iter().collect();
        exec::eval_node(node, &refs, 1)
    };
    // The dequantized copies of secret activations are wiped, whatever the outcome.
    for t in &mut floats {
        zeroize::Zeroize::zeroize(&mut t.data);
    }
    Ok(QVal::Float(
        out.map_err(|e| EnclaveError::Plan(e.to_string()))?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use origami_field::{add, reduce_small, PadKey};

    /// The chunked, vectorized blinding gives exactly the bits of the scalar definition, for
    /// float and fixed-point inputs, every kind of shift, negative values, clamping, and lengths
    /// that are not multiples of the chunk.
    #[test]
    fn requantize_blind_matches_the_scalar_definition() {
        let key = PadKey::insecure_from_seed_for_tests([3; 32]);
        let n = 2500;
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
                let mut a = key.mask_stream(9, layer);
                let want = requantize_with(v, exp, clamp, |q| {
                    add(reduce_small(q as i64), a.next_element())
                });
                let got = requantize_blind(v, exp, clamp, &mut key.mask_stream(9, layer));
                assert_eq!(got, want, "case {i}, exp {exp}, clamp {clamp}");
            }
        }
    }
}
