//! Import of the linear layers and what folds into them: `Conv` (dilation as a zero-expanded
//! kernel), `Gemm` (transB, alpha, beta) and `BatchNormalization` as a per-channel affine map.

use super::decode::*;
use super::import::Importer;
use super::proto::NodeProto;
use crate::ir::{Conv, Dense, Op};
use crate::ModelError;

impl<'a> Importer<'a> {
    pub(super) fn conv(&self, ctx: &Ctx, np: &NodeProto) -> Result<Op, ModelError> {
        let (wd, weight) = self.const_f32(ctx, input_name(np, 1))?;
        let [out_c, in_pg, kh, kw] = wd[..] else {
            return Err(ctx.unsupported(format!(
                "only 2-D convolutions are supported (weight shape {wd:?})"
            )));
        };
        let group = attr_i(ctx, np, "group")?.unwrap_or(1);
        if group < 1 || group > MAX_ELEMENTS as i64 {
            return Err(ctx.malformed(format!("invalid group {group}")));
        }
        let groups = to_usize(group)?;
        let dilation = dilations(ctx, np)?;
        if let Some(ks) = attr_ints(ctx, np, "kernel_shape")? {
            if ks != [kh as i64, kw as i64] {
                return Err(ctx.malformed(format!(
                    "kernel_shape {ks:?} does not match the weight shape {wd:?}"
                )));
            }
        }
        let stride = strides(ctx, np)?;
        let pads = pads(ctx, np)?;
        let bias = match input_name(np, 2) {
            "" => vec![0.0; out_c],
            b => {
                let (bd, bias) = self.const_f32(ctx, b)?;
                if bias.len() != out_c || bd.len() != 1 {
                    return Err(ctx.malformed(format!("bias has shape {bd:?}, expected [{out_c}]")));
                }
                bias
            }
        };
        let in_c = in_pg
            .checked_mul(groups)
            .ok_or_else(|| ctx.malformed("channel count overflows"))?;
        let (kh, kw, weight) = dilate_kernel(ctx, [kh, kw], dilation, weight)?;
        Ok(Op::Conv(Conv {
            out_c,
            in_c,
            kh,
            kw,
            stride,
            pads,
            groups,
            weight,
            bias,
        }))
    }
    pub(super) fn gemm(&self, ctx: &Ctx, np: &NodeProto) -> Result<Op, ModelError> {
        if attr_i(ctx, np, "transA")?.unwrap_or(0) != 0 {
            // A is the activation [N, K]; transposed, its batch axis would not come first.
            return Err(ctx.unsupported(
                "transA = 1 on the activation input (its batch axis must stay first)",
            ));
        }
        let trans_b = attr_i(ctx, np, "transB")?.unwrap_or(0);
        let alpha = attr_f(ctx, np, "alpha")?.unwrap_or(1.0);
        let beta = attr_f(ctx, np, "beta")?.unwrap_or(1.0);
        if !alpha.is_finite() || !beta.is_finite() {
            return Err(ctx.malformed(format!("alpha {alpha} or beta {beta} is not finite")));
        }
        let (bd, mut b) = self.const_f32(ctx, input_name(np, 1))?;
        // alpha·(A·B) + beta·C = A·(alpha·B) + beta·C: folded into the weights and bias.
        if alpha != 1.0 {
            b.iter_mut().for_each(|w| *w *= alpha);
        }
        let [r, c] = bd[..] else {
            return Err(ctx.malformed(format!("B must be a 2-D matrix, it has shape {bd:?}")));
        };
        let (out_f, in_f, weight) = match trans_b {
            1 => (r, c, b),
            0 => (c, r, transpose(&b, r, c)),
            t => return Err(ctx.malformed(format!("transB = {t}"))),
        };
        let bias = match input_name(np, 2) {
            "" => vec![0.0; out_f],
            name => {
                let (cd, cv) = self.const_f32(ctx, name)?;
                // C broadcasts to [M, out_f]: accept a per-output row or a single value.
                let row_shape = cd.iter().rev().skip(1).all(|&d| d == 1) && cd.len() <= 2;
                let cv: Vec<f32> = cv.into_iter().map(|v| v * beta).collect();
                match cv.len() {
                    n if n == out_f && row_shape => cv,
                    1 => vec![cv[0]; out_f],
                    _ => {
                        return Err(ctx.unsupported(format!(
                            "C of shape {cd:?}; only a bias of {out_f} values is supported"
                        )))
                    }
                }
            }
        };
        Ok(Op::Dense(Dense {
            out_f,
            in_f,
            weight,
            bias,
        }))
    }
    pub(super) fn batch_norm(&self, ctx: &Ctx, np: &NodeProto) -> Result<Op, ModelError> {
        if attr_i(ctx, np, "training_mode")?.unwrap_or(0) != 0 {
            return Err(ctx.unsupported("training_mode must be 0 (inference)"));
        }
        if attr_i(ctx, np, "spatial")?.unwrap_or(1) != 1 {
            return Err(ctx.unsupported("spatial must be 1"));
        }
        let x = self.computed(ctx, input_name(np, 0))?;
        let c = self.shapes[x.index()]
            .get(1)
            .copied()
            .ok_or_else(|| ctx.unsupported("the input has no channel dimension"))?;
        let eps = f64::from(attr_f(ctx, np, "epsilon")?.unwrap_or(1e-5));
        let mut params = Vec::with_capacity(4);
        for (k, what) in [(1, "scale"), (2, "B"), (3, "mean"), (4, "var")] {
            let (d, v) = self.const_f32(ctx, input_name(np, k))?;
            if v.len() != c || d.len() != 1 {
                return Err(ctx.malformed(format!(
                    "{what} has shape {d:?}, expected [{c}] for the input's channels"
                )));
            }
            params.push(v);
        }
        let (gamma, beta, mean, var) = (&params[0], &params[1], &params[2], &params[3]);
        let mut scale = Vec::with_capacity(c);
        let mut shift = Vec::with_capacity(c);
        for i in 0..c {
            // f64 so the folded parameters are the correctly rounded f32 of the exact map.
            let s = f64::from(gamma[i]) / (f64::from(var[i]) + eps).sqrt();
            scale.push(s as f32);
            shift.push((f64::from(beta[i]) - f64::from(mean[i]) * s) as f32);
        }
        Ok(Op::BatchNorm { scale, shift })
    }
}
