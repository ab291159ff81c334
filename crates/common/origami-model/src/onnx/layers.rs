//! Import of the operators of the bring-your-own-CNN families: broadcasting arithmetic and
//! `Sum`, `Concat`, `Unsqueeze`/`Squeeze` (as reshapes), `Transpose`, `LRN`, `Pad`, the
//! elementwise activations, `PRelu` and `ConvTranspose` (as zero insertion and a convolution).

use super::decode::*;
use super::fold::squeeze_dims;
use super::import::{Importer, Val};
use super::proto::NodeProto;
use crate::ir::{BinOp, Conv, Lrn, Op, PadMode, Unary, ValueId};
use crate::{ModelError, Tensor};

/// An operand of an arithmetic node: computed, or a constant (its shape and values).
enum Operand {
    V(ValueId),
    C(Vec<usize>, Vec<f32>),
}

impl<'a> Importer<'a> {
    fn operand(&self, ctx: &Ctx, name: &str) -> Result<Operand, ModelError> {
        Ok(match self.lookup(ctx, name)? {
            Val::Computed(v) => Operand::V(v),
            Val::Const(_) => {
                let (d, v) = self.const_f32(ctx, name)?;
                Operand::C(d, v)
            }
        })
    }

    /// `Add`, `Sub`, `Mul`, `Div` (two operands) and `Sum` (any number), between computed
    /// values and constants, with numpy broadcasting (and, before opset 7, the `broadcast` and
    /// `axis` attributes).
    pub(super) fn arith(
        &mut self,
        ctx: &Ctx,
        np: &NodeProto,
        name: String,
        out: &'a str,
    ) -> Result<(), ModelError> {
        let op = match np.op_type.as_str() {
            "Sub" => BinOp::Sub,
            "Mul" => BinOp::Mul,
            "Div" => BinOp::Div,
            _ => BinOp::Add,
        };
        let sum = np.op_type == "Sum";
        let names: Vec<&str> = np.input.iter().map(String::as_str).collect();
        if names.is_empty() || (!sum && names.len() != 2) || names.contains(&"") {
            return Err(ctx.malformed(format!("{} inputs", names.len())));
        }
        // Before opset 7, a constant second operand of another shape needs `broadcast = 1`, and
        // `axis` says where its dimensions align (default: the trailing ones).
        let legacy_axis = if self.opset < 7 && !sum {
            match attr_i(ctx, np, "broadcast")?.unwrap_or(0) {
                0 => None,
                _ => attr_i(ctx, np, "axis")?,
            }
        } else {
            None
        };
        let mut acc = self.operand(ctx, names[0])?;
        let last = names.len() - 1;
        for (k, n) in names.iter().enumerate().skip(1) {
            let rhs = self.operand(ctx, n)?;
            let (node_name, onnx) = if k == last {
                (name.clone(), out)
            } else {
                (format!("{name}/{k}"), "")
            };
            acc = Operand::V(self.combine(ctx, op, acc, rhs, legacy_axis, node_name, onnx)?);
        }
        match acc {
            Operand::V(v) => self.define(out, Val::Computed(v)),
            // One input (a Sum of one value).
            Operand::C(..) => Err(ctx.unsupported("a Sum of one constant")),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn combine(
        &mut self,
        ctx: &Ctx,
        op: BinOp,
        a: Operand,
        b: Operand,
        legacy_axis: Option<i64>,
        name: String,
        onnx: &'a str,
    ) -> Result<ValueId, ModelError> {
        let (x, c, c_first) = match (a, b) {
            (Operand::V(x), Operand::V(y)) => {
                let same = self.shapes[x.index()] == self.shapes[y.index()];
                let op = if same && op == BinOp::Add {
                    Op::Add
                } else {
                    Op::Binary(op)
                };
                return self.push(ctx, name, op, vec![x, y], onnx);
            }
            (Operand::V(x), Operand::C(d, v)) => (x, (d, v), false),
            (Operand::C(d, v), Operand::V(x)) => (x, (d, v), true),
            (Operand::C(..), Operand::C(..)) => {
                return Err(ctx.unsupported("constants mixed with computed values in a Sum"))
            }
        };
        let rank = self.shapes[x.index()].len();
        let (cd, cv) = c;
        // The constant's dimensions aligned to the input's rank: trailing (numpy), or from
        // `axis` (legacy broadcasting).
        let at = match legacy_axis {
            Some(a) => normalize_axis(a, rank)
                .ok_or_else(|| ctx.malformed(format!("axis {a} for a rank-{rank} input")))?,
            None => rank.checked_sub(cd.len()).ok_or_else(|| {
                ctx.unsupported(format!(
                    "a constant of shape {cd:?} has more dimensions than the input (rank {rank})"
                ))
            })?,
        };
        if at + cd.len() > rank {
            return Err(ctx.malformed(format!(
                "constant of shape {cd:?} does not fit at axis {at}"
            )));
        }
        let mut shape = vec![1; rank];
        shape[at..at + cd.len()].copy_from_slice(&cd);
        if at == 0 && shape[0] != 1 {
            return Err(ctx.unsupported(format!(
                "a constant of shape {cd:?} varies along the batch axis"
            )));
        }
        let c = Tensor::new(shape, cv)?;
        self.push(ctx, name, Op::BinaryConst { op, c, c_first }, vec![x], onnx)
    }

    /// `Concat` of computed values along a non-batch axis.
    pub(super) fn concat(
        &mut self,
        ctx: &Ctx,
        np: &NodeProto,
        name: String,
        out: &'a str,
    ) -> Result<(), ModelError> {
        let mut ins = Vec::with_capacity(np.input.len());
        for n in np.input.iter().filter(|n| !n.is_empty()) {
            match self.lookup(ctx, n)? {
                Val::Computed(v) => ins.push(v),
                Val::Const(_) => {
                    return Err(ctx.unsupported(format!(
                        "input '{n}' is a constant; only computed values are concatenated"
                    )))
                }
            }
        }
        let Some(&first) = ins.first() else {
            return Err(ctx.malformed("no inputs"));
        };
        let rank = self.shapes[first.index()].len();
        // `axis` is required from opset 4; before, it defaults to 1.
        let axis = match attr_i(ctx, np, "axis")? {
            Some(a) => a,
            None if self.opset < 4 => 1,
            None => return Err(ctx.malformed("attribute 'axis' is required")),
        };
        let axis = match normalize_axis(axis, rank) {
            Some(0) => return Err(ctx.unsupported("concatenation along the batch axis")),
            Some(a) => a,
            None => return Err(ctx.malformed(format!("axis {axis} for a rank-{rank} input"))),
        };
        if ins.len() == 1 {
            return self.define(out, Val::Computed(first));
        }
        let v = self.push(ctx, name, Op::Concat { axis }, ins, out)?;
        self.define(out, Val::Computed(v))
    }

    /// `Unsqueeze` / `Squeeze` of a computed value: a reshape that keeps the batch axis first.
    pub(super) fn squeeze(
        &mut self,
        ctx: &Ctx,
        np: &NodeProto,
        name: String,
        out: &'a str,
    ) -> Result<(), ModelError> {
        let unsqueeze = np.op_type == "Unsqueeze";
        let x = self.computed(ctx, input_name(np, 0))?;
        let axes = if self.opset >= 13 {
            match input_name(np, 1) {
                "" => None,
                a => Some(self.const_i64(ctx, a)?.1),
            }
        } else {
            attr_ints(ctx, np, "axes")?
        };
        let dims = self.shapes[x.index()].clone();
        let rank_out = if unsqueeze {
            dims.len() + axes.as_ref().map_or(0, Vec::len)
        } else {
            dims.len()
        };
        let touches_batch = match &axes {
            Some(a) => a.iter().any(|&a| normalize_axis(a, rank_out) == Some(0)),
            None => false,
        };
        if touches_batch {
            return Err(ctx.unsupported("axes including the batch axis 0"));
        }
        // Without axes, Squeeze drops every size-1 axis but the batch.
        let axes = match axes {
            None if !unsqueeze => Some(
                (1..dims.len())
                    .filter(|&k| dims[k] == 1)
                    .map(|k| k as i64)
                    .collect(),
            ),
            a => a,
        };
        let new = squeeze_dims(ctx, &dims, axes.as_deref(), unsqueeze)?;
        let op = if new.len() == 2 {
            Op::Flatten
        } else {
            Op::Reshape(new[1..].to_vec())
        };
        let v = self.push(ctx, name, op, vec![x], out)?;
        self.define(out, Val::Computed(v))
    }

    pub(super) fn transpose_op(&self, ctx: &Ctx, np: &NodeProto) -> Result<Op, ModelError> {
        let x = self.computed(ctx, input_name(np, 0))?;
        let rank = self.shapes[x.index()].len();
        let perm: Vec<usize> = match attr_ints(ctx, np, "perm")? {
            Some(p) => p
                .iter()
                .map(|&a| {
                    normalize_axis(a, rank)
                        .ok_or_else(|| ctx.malformed(format!("perm {p:?} for rank {rank}")))
                })
                .collect::<Result<_, _>>()?,
            None => (0..rank).rev().collect(),
        };
        if perm.first() != Some(&0) {
            return Err(ctx.unsupported(format!(
                "perm {perm:?} moves the batch axis (it must stay first)"
            )));
        }
        Ok(Op::Transpose(perm))
    }

    /// `Pad` of the spatial axes of an NCHW value.
    pub(super) fn pad(&self, ctx: &Ctx, np: &NodeProto) -> Result<Op, ModelError> {
        let x = self.computed(ctx, input_name(np, 0))?;
        let rank = self.shapes[x.index()].len();
        let mode = attr_s(ctx, np, "mode")?.unwrap_or_else(|| "constant".into());
        let (pads, value) = if self.opset >= 11 {
            if !input_name(np, 3).is_empty() {
                return Err(ctx.unsupported("the 'axes' input"));
            }
            let pads = self.const_i64(ctx, input_name(np, 1))?.1;
            (pads, self.scalar_or(ctx, input_name(np, 2), 0.0)?)
        } else {
            let attr = if self.opset < 2 { "paddings" } else { "pads" };
            let pads = attr_ints(ctx, np, attr)?
                .ok_or_else(|| ctx.malformed(format!("attribute '{attr}' is required")))?;
            (pads, attr_f(ctx, np, "value")?.unwrap_or(0.0))
        };
        if rank != 4 || pads.len() != 8 {
            return Err(ctx.unsupported(format!(
                "pads {pads:?} on a rank-{rank} input; only NCHW spatial padding is supported"
            )));
        }
        if pads[0] != 0 || pads[1] != 0 || pads[4] != 0 || pads[5] != 0 {
            return Err(ctx.unsupported("padding of the batch or channel axes"));
        }
        if pads.iter().any(|&p| p < 0) {
            return Err(ctx.unsupported("negative pads (cropping)"));
        }
        let p: [usize; 4] = spatial(ctx, "pads", &[pads[2], pads[3], pads[6], pads[7]], 0)?;
        let mode = match mode.as_str() {
            "constant" => {
                if !value.is_finite() {
                    return Err(ctx.malformed(format!("pad value {value}")));
                }
                PadMode::Constant(value)
            }
            "reflect" => PadMode::Reflect,
            "edge" => PadMode::Edge,
            m => return Err(ctx.unsupported(format!("mode '{m}'"))),
        };
        Ok(Op::Pad { pads: p, mode })
    }

    /// `PRelu` with one slope, or one per channel (axis 1).
    pub(super) fn prelu(&self, ctx: &Ctx, np: &NodeProto) -> Result<Op, ModelError> {
        let x = self.computed(ctx, input_name(np, 0))?;
        let xs = &self.shapes[x.index()];
        let (sd, slope) = self.const_f32(ctx, input_name(np, 1))?;
        let c = xs.get(1).copied().unwrap_or(1);
        // Numpy alignment puts the slope's last dimension on the input's last axis: per
        // channel means C at axis 1 and 1 after it ([C, 1, 1] for NCHW). Before opset 7 a 1-D
        // slope of C values is per channel.
        let trailing_ones = sd.len() < xs.len()
            && sd.iter().rev().take(xs.len() - 2).all(|&d| d == 1)
            && sd.len() + 1 >= xs.len();
        let per_channel = slope.len() == c
            && ((self.opset < 7 && sd.len() == 1) || trailing_ones || sd.len() == xs.len());
        if slope.len() != 1 && !per_channel {
            return Err(ctx.unsupported(format!(
                "slope of shape {sd:?} for input {xs:?}; only one slope or one per channel"
            )));
        }
        if slope.iter().any(|v| !v.is_finite()) {
            return Err(ctx.malformed("a slope is not finite"));
        }
        Ok(Op::PRelu { slope })
    }

    /// `ConvTranspose` as zero insertion and padding (`Op::Dilate`) followed by a stride-1
    /// convolution with the flipped, transposed kernel: exactly the same sums, and a linear
    /// layer every executor (and the blinded field path) already runs.
    pub(super) fn conv_transpose(
        &mut self,
        ctx: &Ctx,
        np: &NodeProto,
        name: String,
        out: &'a str,
    ) -> Result<(), ModelError> {
        let x = self.computed(ctx, input_name(np, 0))?;
        let (wd, w) = self.const_f32(ctx, input_name(np, 1))?;
        let [in_c, out_pg, kh, kw] = wd[..] else {
            return Err(ctx.unsupported(format!(
                "only 2-D transposed convolutions are supported (weight shape {wd:?})"
            )));
        };
        if attr_ints(ctx, np, "output_shape")?.is_some() {
            return Err(ctx.unsupported("'output_shape' (give pads and output_padding instead)"));
        }
        let group = attr_i(ctx, np, "group")?.unwrap_or(1);
        if group < 1 || group > MAX_ELEMENTS as i64 || in_c % group as usize != 0 {
            return Err(ctx.malformed(format!("invalid group {group} for {in_c} channels")));
        }
        let groups = group as usize;
        let stride = strides(ctx, np)?;
        let pads = pads(ctx, np)?;
        let out_pad: [usize; 2] = match attr_ints(ctx, np, "output_padding")? {
            Some(p) => spatial(ctx, "output_padding", &p, 0)?,
            None => [0, 0],
        };
        if out_pad[0] >= stride[0] || out_pad[1] >= stride[1] {
            return Err(ctx.malformed(format!(
                "output_padding {out_pad:?} must be below the strides {stride:?}"
            )));
        }
        let (eh, ew, w) = dilate_kernel(ctx, [kh, kw], dilations(ctx, np)?, w)?;
        let out_c = out_pg
            .checked_mul(groups)
            .ok_or_else(|| ctx.malformed("channel count overflows"))?;
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
        // Padding of the zero-inserted input: k − 1 − pad on each side (+ output_padding at
        // the end); a pad beyond k − 1 would crop, which this form cannot express.
        let side = |k: usize, p: usize, extra: usize| (k - 1 + extra).checked_sub(p);
        let (Some(t), Some(l), Some(b), Some(r)) = (
            side(eh, pads[0], 0),
            side(ew, pads[1], 0),
            side(eh, pads[2], out_pad[0]),
            side(ew, pads[3], out_pad[1]),
        ) else {
            return Err(ctx.unsupported(format!(
                "pads {pads:?} larger than the kernel {eh}x{ew} minus one"
            )));
        };
        // W'[g·Cog + o][i][y][x] = W[g·Cig + i][o][eh−1−y][ew−1−x].
        let in_pg = in_c / groups;
        let taps = eh * ew;
        let mut weight = vec![0f32; out_c * in_pg * taps];
        for g in 0..groups {
            for i in 0..in_pg {
                for o in 0..out_pg {
                    let src = ((g * in_pg + i) * out_pg + o) * taps;
                    let dst = ((g * out_pg + o) * in_pg + i) * taps;
                    for t in 0..taps {
                        weight[dst + t] = w[src + taps - 1 - t];
                    }
                }
            }
        }
        let z = self.push(
            ctx,
            format!("{name}/zeros"),
            Op::Dilate {
                stride,
                pads: [t, l, b, r],
            },
            vec![x],
            "",
        )?;
        let conv = Op::Conv(Conv {
            out_c,
            in_c,
            kh: eh,
            kw: ew,
            stride: [1, 1],
            pads: [0; 4],
            groups,
            weight,
            bias,
        });
        let v = self.push(ctx, name, conv, vec![z], out)?;
        self.define(out, Val::Computed(v))
    }
}

/// `LRN` with ONNX's defaults.
pub(super) fn lrn(ctx: &Ctx, np: &NodeProto) -> Result<Op, ModelError> {
    let size = attr_i(ctx, np, "size")?.ok_or_else(|| ctx.malformed("'size' is required"))?;
    if !(1..=MAX_SPATIAL).contains(&size) {
        return Err(ctx.malformed(format!("size {size}")));
    }
    let l = Lrn {
        size: size as usize,
        alpha: attr_f(ctx, np, "alpha")?.unwrap_or(1e-4),
        beta: attr_f(ctx, np, "beta")?.unwrap_or(0.75),
        bias: attr_f(ctx, np, "bias")?.unwrap_or(1.0),
    };
    if ![l.alpha, l.beta, l.bias].iter().all(|v| v.is_finite()) {
        return Err(ctx.malformed("a parameter is not finite"));
    }
    Ok(Op::Lrn(l))
}

/// The elementwise activations, with ONNX's default attributes.
pub(super) fn unary(ctx: &Ctx, np: &NodeProto) -> Result<Unary, ModelError> {
    let f = |name: &str, default: f32| -> Result<f32, ModelError> {
        let v = attr_f(ctx, np, name)?.unwrap_or(default);
        if v.is_finite() {
            Ok(v)
        } else {
            Err(ctx.malformed(format!("{name} = {v}")))
        }
    };
    Ok(match np.op_type.as_str() {
        "Sigmoid" => Unary::Sigmoid,
        "Tanh" => Unary::Tanh,
        "LeakyRelu" => Unary::LeakyRelu(f("alpha", 0.01)?),
        "Elu" => Unary::Elu(f("alpha", 1.0)?),
        "HardSigmoid" => Unary::HardSigmoid {
            alpha: f("alpha", 0.2)?,
            beta: f("beta", 0.5)?,
        },
        _ => Unary::HardSwish,
    })
}
