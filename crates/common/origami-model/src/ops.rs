//! Parameters and float kernels of the operators beyond the VGG/ResNet core: elementwise maps,
//! broadcasting arithmetic, concatenation, transposition, local response normalization, padding,
//! zero insertion (the first half of a transposed convolution), global max pooling and
//! log-softmax. Shape rules are in `shape.rs`; the enclave runs these on dequantized values, so
//! every kernel here is also the reference for the quantized head.

use crate::{ModelError, Tensor};

/// An elementwise map, with ONNX's definitions and default attributes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    /// 1 / (1 + e^-x).
    Sigmoid,
    Tanh,
    /// x ≥ 0 ? x : alpha·x (ONNX default alpha 0.01).
    LeakyRelu(f32),
    /// x > 0 ? x : alpha·(e^x − 1) (default alpha 1).
    Elu(f32),
    /// max(0, min(1, alpha·x + beta)) (defaults 0.2, 0.5).
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    /// x · max(0, min(1, x/6 + 1/2)).
    HardSwish,
}

impl Unary {
    /// The ONNX operator name.
    pub fn kind(self) -> &'static str {
        match self {
            Unary::Sigmoid => "Sigmoid",
            Unary::Tanh => "Tanh",
            Unary::LeakyRelu(_) => "LeakyRelu",
            Unary::Elu(_) => "Elu",
            Unary::HardSigmoid { .. } => "HardSigmoid",
            Unary::HardSwish => "HardSwish",
        }
    }

    /// The attributes, for hashing and export.
    pub fn params(self) -> Vec<f32> {
        match self {
            Unary::LeakyRelu(a) | Unary::Elu(a) => vec![a],
            Unary::HardSigmoid { alpha, beta } => vec![alpha, beta],
            Unary::Sigmoid | Unary::Tanh | Unary::HardSwish => vec![],
        }
    }

    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Unary::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Unary::Tanh => x.tanh(),
            Unary::LeakyRelu(a) => {
                if x >= 0.0 {
                    x
                } else {
                    a * x
                }
            }
            Unary::Elu(a) => {
                if x > 0.0 {
                    x
                } else {
                    a * (x.exp() - 1.0)
                }
            }
            Unary::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            Unary::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
        }
    }
}

/// Elementwise arithmetic with numpy broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinOp {
    pub fn kind(self) -> &'static str {
        match self {
            BinOp::Add => "Add",
            BinOp::Sub => "Sub",
            BinOp::Mul => "Mul",
            BinOp::Div => "Div",
        }
    }
    #[inline]
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinOp::Add => a + b,
            BinOp::Sub => a - b,
            BinOp::Mul => a * b,
            BinOp::Div => a / b,
        }
    }
}

/// How `Pad` fills the border.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PadMode {
    Constant(f32),
    /// Mirror without repeating the edge (`[a b c]` → `c b | a b c | b a`).
    Reflect,
    /// Repeat the edge value.
    Edge,
}

/// Local response normalization across channels (AlexNet, GoogLeNet):
/// y = x / (bias + alpha/size · Σ x²)^beta over `size` neighbouring channels.
#[derive(Clone, Debug, PartialEq)]
pub struct Lrn {
    pub size: usize,
    pub alpha: f32,
    pub beta: f32,
    pub bias: f32,
}

/// The broadcast of two shapes of equal rank (each dimension equal, or 1 on one side).
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    if a.len() != b.len() {
        return None;
    }
    a.iter()
        .zip(b)
        .map(|(&x, &y)| match (x, y) {
            _ if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// Row-major strides of `shape`, with 0 for broadcast (size-1) dimensions of an operand whose
/// result has a larger size there.
fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let mut s = vec![0; shape.len()];
    let mut acc = 1;
    for d in (0..shape.len()).rev() {
        s[d] = if shape[d] == 1 && out[d] != 1 { 0 } else { acc };
        acc *= shape[d];
    }
    s
}

/// `a op b` with numpy broadcasting (equal ranks).
pub fn binary(op: BinOp, a: &Tensor, b: &Tensor) -> Result<Tensor, ModelError> {
    let out = broadcast_shape(&a.shape, &b.shape).ok_or_else(|| {
        ModelError::Shape(format!(
            "{} of {:?} and {:?}: the shapes do not broadcast",
            op.kind(),
            a.shape,
            b.shape
        ))
    })?;
    if a.shape == b.shape {
        let data = a
            .data
            .iter()
            .zip(&b.data)
            .map(|(&x, &y)| op.apply(x, y))
            .collect();
        return Tensor::new(out, data);
    }
    let n = crate::shape::checked_product(&out)
        .ok_or_else(|| ModelError::TooLarge(format!("{} output {out:?}", op.kind())))?;
    let (sa, sb) = (
        broadcast_strides(&a.shape, &out),
        broadcast_strides(&b.shape, &out),
    );
    // The innermost dimension as a run: contiguous, or one broadcast element.
    let last = out.len() - 1;
    let inner = out[last];
    let mut data = Vec::with_capacity(n);
    let mut idx = vec![0usize; out.len()];
    for _ in 0..n / inner.max(1) {
        let (mut ia, mut ib) = (0, 0);
        for d in 0..last {
            ia += idx[d] * sa[d];
            ib += idx[d] * sb[d];
        }
        for j in 0..inner {
            data.push(op.apply(a.data[ia + j * sa[last]], b.data[ib + j * sb[last]]));
        }
        for d in (0..last).rev() {
            idx[d] += 1;
            if idx[d] < out[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Tensor::new(out, data)
}

/// `x` scaled per channel by `slope` where negative (`slope` of 1 or C values).
pub fn prelu(x: &Tensor, slope: &[f32]) -> Tensor {
    let c = x.shape.get(1).copied().unwrap_or(1);
    let plane: usize = x.shape.iter().skip(2).product();
    let mut out = x.clone();
    for (i, chunk) in out.data.chunks_mut(plane.max(1)).enumerate() {
        let s = if slope.len() == 1 {
            slope[0]
        } else {
            slope[i % c]
        };
        chunk
            .iter_mut()
            .for_each(|v| *v = if *v < 0.0 { *v * s } else { *v });
    }
    out
}

/// Concatenation along `axis` (≥ 1) of tensors equal in every other dimension.
pub fn concat(ins: &[&Tensor], axis: usize) -> Result<Tensor, ModelError> {
    let first = ins
        .first()
        .ok_or_else(|| ModelError::Shape("Concat of no tensors".into()))?;
    let outer: usize = first.shape[..axis].iter().product();
    let mut shape = first.shape.clone();
    shape[axis] = ins.iter().map(|t| t.shape[axis]).sum();
    let mut data = Vec::with_capacity(ins.iter().map(|t| t.data.len()).sum());
    for o in 0..outer {
        for t in ins {
            let run = t.data.len() / outer.max(1);
            data.extend_from_slice(&t.data[o * run..(o + 1) * run]);
        }
    }
    Tensor::new(shape, data)
}

/// Axes permuted: output dimension `i` is input dimension `perm[i]`.
pub fn transpose(x: &Tensor, perm: &[usize]) -> Result<Tensor, ModelError> {
    let r = x.shape.len();
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    let mut in_strides = vec![1usize; r];
    for d in (0..r.saturating_sub(1)).rev() {
        in_strides[d] = in_strides[d + 1] * x.shape[d + 1];
    }
    let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let mut data = Vec::with_capacity(x.data.len());
    let mut idx = vec![0usize; r];
    for _ in 0..x.data.len() {
        let off: usize = idx.iter().zip(&strides).map(|(i, s)| i * s).sum();
        data.push(x.data[off]);
        for d in (0..r).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Tensor::new(shape, data)
}

/// Local response normalization of an NCHW tensor.
pub fn lrn(x: &Tensor, p: &Lrn) -> Tensor {
    let (c, plane) = (x.shape[1], x.shape[2] * x.shape[3]);
    let (lo, hi) = ((p.size - 1) / 2, p.size / 2);
    let scale = p.alpha / p.size as f32;
    let mut out = x.clone();
    for (img, o) in x.data.chunks(c * plane).zip(out.data.chunks_mut(c * plane)) {
        for ch in 0..c {
            let (a, b) = (ch.saturating_sub(lo), (ch + hi).min(c - 1));
            for j in 0..plane {
                let sq: f32 = (a..=b).map(|k| img[k * plane + j].powi(2)).sum();
                o[ch * plane + j] = img[ch * plane + j] / (p.bias + scale * sq).powf(p.beta);
            }
        }
    }
    out
}

/// The source index of padded position `i` in a dimension of size `n` padded by `before`, or
/// `None` for a constant cell.
fn pad_source(i: usize, before: usize, n: usize, mode: PadMode) -> Option<usize> {
    let j = i as isize - before as isize;
    let n = n as isize;
    if (0..n).contains(&j) {
        return Some(j as usize);
    }
    match mode {
        PadMode::Constant(_) => None,
        PadMode::Edge => Some(j.clamp(0, n - 1) as usize),
        // Checked at import: pads are smaller than the size.
        PadMode::Reflect => Some(if j < 0 { -j } else { 2 * (n - 1) - j } as usize),
    }
}

/// Spatial padding `[top, left, bottom, right]` of an NCHW tensor.
pub fn pad(x: &Tensor, pads: [usize; 4], mode: PadMode) -> Result<Tensor, ModelError> {
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (oh, ow) = (h + pads[0] + pads[2], w + pads[1] + pads[3]);
    let fill = match mode {
        PadMode::Constant(v) => v,
        _ => 0.0,
    };
    let mut data = Vec::with_capacity(n * c * oh * ow);
    for plane in x.data.chunks(h * w) {
        for y in 0..oh {
            let sy = pad_source(y, pads[0], h, mode);
            for xx in 0..ow {
                let sx = pad_source(xx, pads[1], w, mode);
                data.push(match (sy, sx) {
                    (Some(a), Some(b)) => plane[a * w + b],
                    _ => fill,
                });
            }
        }
    }
    Tensor::new(vec![n, c, oh, ow], data)
}

/// Zero insertion: `stride − 1` zeros between neighbouring pixels, then zero padding
/// `[top, left, bottom, right]`. A transposed convolution is this followed by an ordinary
/// stride-1 convolution with the flipped kernel.
pub fn dilate(x: &Tensor, stride: [usize; 2], pads: [usize; 4]) -> Result<Tensor, ModelError> {
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (oh, ow) = dilated_hw(h, w, stride, pads)
        .ok_or_else(|| ModelError::TooLarge("zero insertion size overflows".into()))?;
    let mut out = Tensor::zeros(vec![n, c, oh, ow]);
    for (src, dst) in x.data.chunks(h * w).zip(out.data.chunks_mut(oh * ow)) {
        for y in 0..h {
            for xx in 0..w {
                dst[(pads[0] + y * stride[0]) * ow + pads[1] + xx * stride[1]] = src[y * w + xx];
            }
        }
    }
    Ok(out)
}

/// Output size of [`dilate`] on an `h × w` input (checked; h, w ≥ 1).
pub fn dilated_hw(
    h: usize,
    w: usize,
    stride: [usize; 2],
    pads: [usize; 4],
) -> Option<(usize, usize)> {
    let one = |n: usize, s: usize, a: usize, b: usize| {
        (n.checked_sub(1)?)
            .checked_mul(s)?
            .checked_add(1)?
            .checked_add(a)?
            .checked_add(b)
    };
    Some((
        one(h, stride[0], pads[0], pads[2])?,
        one(w, stride[1], pads[1], pads[3])?,
    ))
}

/// The maximum of each channel plane of an NCHW tensor, as `[N, C, 1, 1]`.
pub fn global_max_pool(x: &Tensor) -> Result<Tensor, ModelError> {
    let plane = x.shape[2] * x.shape[3];
    let data = x
        .data
        .chunks(plane.max(1))
        .map(|p| p.iter().copied().fold(f32::NEG_INFINITY, f32::max))
        .collect();
    Tensor::new(vec![x.shape[0], x.shape[1], 1, 1], data)
}

/// log(softmax(row)), computed stably as x − max − log Σ e^(x − max).
pub fn log_softmax_in_place(row: &mut [f32]) {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let s: f64 = row.iter().map(|&v| ((v - m) as f64).exp()).sum();
    let ls = s.ln() as f32;
    row.iter_mut().for_each(|v| *v = *v - m - ls);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], data: Vec<f32>) -> Tensor {
        Tensor::new(shape.to_vec(), data).unwrap()
    }

    #[test]
    fn broadcasting_follows_numpy() {
        let a = t(&[1, 2, 3], (0..6).map(|v| v as f32).collect());
        let b = t(&[1, 2, 1], vec![10.0, 20.0]);
        assert_eq!(
            binary(BinOp::Add, &a, &b).unwrap().data,
            [10.0, 11.0, 12.0, 23.0, 24.0, 25.0]
        );
        let c = t(&[1, 1, 3], vec![1.0, 2.0, 4.0]);
        assert_eq!(
            binary(BinOp::Div, &a, &c).unwrap().data,
            [0.0, 0.5, 0.5, 3.0, 2.0, 1.25]
        );
        // Both sides broadcast: [1, 2, 1] - [1, 1, 3] → [1, 2, 3].
        assert_eq!(
            binary(BinOp::Sub, &b, &c).unwrap().data,
            [9.0, 8.0, 6.0, 19.0, 18.0, 16.0]
        );
        assert!(binary(BinOp::Mul, &a, &t(&[1, 3, 1], vec![0.0; 3])).is_err());
    }

    #[test]
    fn transpose_concat_pad_and_dilate_move_the_right_elements() {
        let x = t(&[1, 2, 3], (0..6).map(|v| v as f32).collect());
        let y = transpose(&x, &[0, 2, 1]).unwrap();
        assert_eq!(y.shape, [1, 3, 2]);
        assert_eq!(y.data, [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        let c = concat(&[&x, &t(&[1, 1, 3], vec![9.0; 3])], 1).unwrap();
        assert_eq!(c.shape, [1, 3, 3]);
        assert_eq!(&c.data[6..], [9.0; 3]);
        let img = t(&[1, 1, 1, 3], vec![1.0, 2.0, 3.0]);
        let r = pad(&img, [0, 2, 0, 2], PadMode::Reflect).unwrap();
        assert_eq!(r.data, [3.0, 2.0, 1.0, 2.0, 3.0, 2.0, 1.0]);
        let e = pad(&img, [0, 1, 0, 1], PadMode::Edge).unwrap();
        assert_eq!(e.data, [1.0, 1.0, 2.0, 3.0, 3.0]);
        let k = pad(&img, [1, 0, 0, 0], PadMode::Constant(-1.0)).unwrap();
        assert_eq!(k.data, [-1.0, -1.0, -1.0, 1.0, 2.0, 3.0]);
        let d = dilate(&img, [1, 2], [0, 1, 0, 0]).unwrap();
        assert_eq!(d.data, [0.0, 1.0, 0.0, 2.0, 0.0, 3.0]);
    }
}
