//! Import of the operators that only reshape or reduce: `Reshape` (targets keep the batch axis
//! first) and `ReduceMean` over the spatial axes (global average pooling).

use super::decode::*;
use super::import::{Importer, Val};
use super::proto::NodeProto;
use crate::ir::Op;
use crate::ModelError;

impl<'a> Importer<'a> {
    pub(super) fn reshape(&self, ctx: &Ctx, np: &NodeProto) -> Result<Op, ModelError> {
        let x = self.computed(ctx, input_name(np, 0))?;
        // Before opset 5 the target is an attribute.
        let (sd, mut target) = if self.opset < 5 {
            let t = attr_ints(ctx, np, "shape")?
                .ok_or_else(|| ctx.malformed("attribute 'shape' is required before opset 5"))?;
            (vec![t.len()], t)
        } else {
            self.const_i64(ctx, input_name(np, 1))?
        };
        if sd.len() != 1 {
            return Err(ctx.malformed(format!("the shape must be 1-D, it has shape {sd:?}")));
        }
        // A fixed batch N named literally (a file exported with batch N) is the batch axis.
        if self.batch > 1 && target.first() == Some(&(self.batch as i64)) {
            target[0] = 0;
        }
        let allow_zero = attr_i(ctx, np, "allowzero")?.unwrap_or(0) != 0;
        let x_shape = &self.shapes[x.index()];
        let total: usize = x_shape.iter().product();
        let mut out = Vec::with_capacity(target.len());
        let mut infer = None;
        for (i, &d) in target.iter().enumerate() {
            match d {
                0 if allow_zero => {
                    return Err(
                        ctx.unsupported("zero-sized dimensions (allowzero) are not supported")
                    )
                }
                0 => out.push(*x_shape.get(i).ok_or_else(|| {
                    ctx.malformed(format!("dimension {i} copies a dimension the input lacks"))
                })?),
                -1 if infer.is_none() => {
                    infer = Some(i);
                    out.push(1);
                }
                d if (1..=MAX_ELEMENTS as i64).contains(&d) => out.push(to_usize(d)?),
                d => return Err(ctx.malformed(format!("invalid target dimension {d}"))),
            }
        }
        let known = element_count(&out, "reshape target")?;
        if let Some(i) = infer {
            if total.checked_rem(known) != Some(0) {
                return Err(ModelError::Shape(format!(
                    "node '{}' (Reshape): cannot reshape {x_shape:?} to {target:?}",
                    ctx.node
                )));
            }
            out[i] = total / known;
        } else if known != total {
            return Err(ModelError::Shape(format!(
                "node '{}' (Reshape): cannot reshape {x_shape:?} to {target:?}",
                ctx.node
            )));
        }
        // The IR keeps the batch dimension: the first target entry must copy it (0), infer it
        // (-1 with everything else fixed), or be the literal 1 of a batch-1 export.
        let keeps_batch = out.len() >= 2 && (-1..=1).contains(&target[0]) && out[0] == 1;
        if !keeps_batch {
            return Err(ctx.unsupported(format!(
                "target shape {target:?} does not keep the batch dimension first"
            )));
        }
        Ok(if out.len() == 2 {
            Op::Flatten
        } else {
            Op::Reshape(out[1..].to_vec())
        })
    }
    /// `ReduceMean` over the spatial axes: global average pooling (+ Flatten without keepdims).
    pub(super) fn reduce_mean(
        &mut self,
        ctx: &Ctx,
        np: &NodeProto,
        name: String,
        out: &'a str,
    ) -> Result<(), ModelError> {
        let x = self.computed(ctx, input_name(np, 0))?;
        let rank = self.shapes[x.index()].len();
        if rank != 4 {
            return Err(ctx.unsupported(format!("input of rank {rank}; only NCHW is supported")));
        }
        let axes = if self.opset >= 18 {
            match input_name(np, 1) {
                "" => None,
                a => Some(self.const_i64(ctx, a)?.1),
            }
        } else {
            attr_ints(ctx, np, "axes")?
        };
        let mut axes: Vec<Option<usize>> = axes
            .unwrap_or_default()
            .iter()
            .map(|&a| normalize_axis(a, rank))
            .collect();
        axes.sort();
        if axes != [Some(2), Some(3)] {
            return Err(ctx.unsupported("only a mean over the spatial axes [2, 3] is supported"));
        }
        let keep = attr_i(ctx, np, "keepdims")?.unwrap_or(1) != 0;
        let v = if keep {
            self.push(ctx, name, Op::GlobalAvgPool, vec![x], out)?
        } else {
            let flatten_name = format!("{name}/flatten");
            let g = self.push(ctx, name, Op::GlobalAvgPool, vec![x], "")?;
            self.push(ctx, flatten_name, Op::Flatten, vec![g], out)?
        };
        self.define(out, Val::Computed(v))
    }
}
