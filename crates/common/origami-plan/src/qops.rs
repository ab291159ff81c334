//! Fixed-point tensors and the operations the enclave runs on them. Shared by the quantized
//! reference and the enclave core, so that every placement computes the same bits.

use origami_model::exec;
use origami_model::linalg::{conv2d, gemm_nt, LinearShape};
use origami_model::{Node, Op, Pool, Tensor};

use crate::plan::{quantize, quantize_scaled, QLinear, SATURATION_LIMIT};
use crate::EnclaveError;

pub use crate::blinded::{finish_unblinded, finish_unblinded_pool2, requantize_blind};

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
pub(crate) fn shift_round(v: i64, s: i32) -> i64 {
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
    threads: usize,
) -> Result<(Vec<usize>, Vec<i32>), EnclaveError> {
    let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3]);
    let (oh, ow) = p
        .out_hw(h, w)
        .map_err(|e| EnclaveError::Plan(e.to_string()))?;
    let mut out = vec![0i32; n * c * oh * ow];
    if max && exec::is_pool_2x2(p) {
        // Planes split over the enclave's threads.
        let (ip, op) = (h * w, oh * ow);
        origami_field::pad::par_parts(&mut out, op.max(1), threads, |start, part| {
            let first = start / op.max(1);
            let planes = part.len() / op.max(1);
            exec::max_pool_2x2(&data[first * ip..(first + planes) * ip], h, w, part);
        });
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
    eval_nonlinear_on(node, ins, 1)
}

/// [`eval_nonlinear`] with max-pooling over planes on up to `threads` threads (same bits).
pub fn eval_nonlinear_on(node: &Node, ins: &[&QVal], threads: usize) -> Result<QVal, EnclaveError> {
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
                let (s, d) = pool_int(shape, data, p, true, threads)?;
                return Ok(int(s, d));
            }
            Op::AvgPool(p) => {
                let (s, d) = pool_int(shape, data, p, false, threads)?;
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
