//! Shape inference for one node, given the shapes of earlier values (batch dimension first).
//!
//! Every size is computed with checked arithmetic and every inferred value is bounded by
//! [`MAX_VALUE_ELEMENTS`]; [`Budget`] bounds all values together by [`MAX_TOTAL_ELEMENTS`]. So a
//! model that passes shape inference has no size that overflows `usize`, and nothing sized from
//! it is allocated before the bounds are checked.

use crate::ir::{Node, Op, PadMode, MAX_TOTAL_ELEMENTS, MAX_VALUE_ELEMENTS};
use crate::ops::broadcast_shape;
use crate::ModelError;

/// Why shape inference refused a node; [`InferError::at`] names the node.
#[derive(Debug)]
pub(crate) enum InferError {
    /// Shapes do not fit together ([`ModelError::Shape`]).
    Shape(String),
    /// A size overflows or exceeds a cap ([`ModelError::TooLarge`]).
    TooLarge(String),
}

impl InferError {
    /// The crate error, its message prefixed by `at` (the node).
    pub(crate) fn at(self, at: &str) -> ModelError {
        match self {
            InferError::Shape(m) => ModelError::Shape(format!("{at}: {m}")),
            InferError::TooLarge(m) => ModelError::TooLarge(format!("{at}: {m}")),
        }
    }
}

impl From<String> for InferError {
    fn from(m: String) -> Self {
        InferError::Shape(m)
    }
}

impl From<&str> for InferError {
    fn from(m: &str) -> Self {
        InferError::Shape(m.into())
    }
}

impl From<ModelError> for InferError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::TooLarge(m) => InferError::TooLarge(m),
            other => InferError::Shape(other.to_string()),
        }
    }
}

/// Product of `dims`, or `None` on overflow.
pub(crate) fn checked_product(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Product of `dims` when it, and the product of every subset of the non-zero dims, is at most
/// [`MAX_VALUE_ELEMENTS`]: a zero dimension does not hide an overflowing plane (`0 × 2^40 ×
/// 2^40` is refused, since code computing `h · w` of it would wrap).
pub(crate) fn bounded_product(dims: &[usize]) -> Option<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d.max(1)))
        .filter(|&n| n <= MAX_VALUE_ELEMENTS)?;
    checked_product(dims)
}

/// Elements of a value of this shape, refusing overflow and more than [`MAX_VALUE_ELEMENTS`]
/// (counting zero dimensions as one, see [`bounded_product`]).
pub(crate) fn value_elements(shape: &[usize]) -> Result<usize, InferError> {
    bounded_product(shape).ok_or_else(|| {
        InferError::TooLarge(format!(
            "a value of shape {shape:?} would have more than {MAX_VALUE_ELEMENTS} elements"
        ))
    })
}

/// Running total of the elements of a model's values, bounded by [`MAX_TOTAL_ELEMENTS`].
#[derive(Debug, Default)]
pub(crate) struct Budget {
    total: usize,
}

impl Budget {
    /// Counts one more value of this shape; errs when it or the total is too large.
    pub(crate) fn admit(&mut self, shape: &[usize]) -> Result<(), InferError> {
        let n = value_elements(shape)?;
        self.total = self
            .total
            .checked_add(n)
            .filter(|&t| t <= MAX_TOTAL_ELEMENTS)
            .ok_or_else(|| {
                InferError::TooLarge(format!(
                    "the model's values would have more than {MAX_TOTAL_ELEMENTS} elements in all"
                ))
            })?;
        Ok(())
    }
}

/// The output shape of `n`. Also refuses (as [`InferError::TooLarge`]) an output of more than
/// [`MAX_VALUE_ELEMENTS`] elements.
pub(crate) fn infer(n: &Node, shapes: &[Vec<usize>]) -> Result<Vec<usize>, InferError> {
    let s = infer_shape(n, shapes)?;
    value_elements(&s)?;
    Ok(s)
}

fn infer_shape(n: &Node, shapes: &[Vec<usize>]) -> Result<Vec<usize>, InferError> {
    let x = &shapes[n.inputs[0].index()];
    let nchw = |x: &Vec<usize>| -> Result<(usize, usize, usize, usize), InferError> {
        if x.len() != 4 {
            return Err(format!("expects a 4-D NCHW input, got shape {x:?}").into());
        }
        Ok((x[0], x[1], x[2], x[3]))
    };
    let too_large = |what: &str| InferError::TooLarge(format!("{what} overflows"));
    match &n.op {
        Op::Conv(c) => {
            let (b, ch, h, w) = nchw(x)?;
            if c.groups == 0 || c.in_c % c.groups != 0 || c.out_c % c.groups != 0 {
                return Err(format!(
                    "groups {} must divide in {} and out {} channels",
                    c.groups, c.in_c, c.out_c
                )
                .into());
            }
            if ch != c.in_c {
                return Err(format!("input has {ch} channels, weights expect {}", c.in_c).into());
            }
            if c.stride.contains(&0) || c.kh == 0 || c.kw == 0 {
                return Err("zero stride or kernel size".into());
            }
            let weight_len = checked_product(&[c.out_c, c.in_per_group(), c.kh, c.kw])
                .ok_or_else(|| too_large("the weight size"))?;
            if c.weight.len() != weight_len || c.bias.len() != c.out_c {
                return Err("weight or bias size does not match the declared shape".into());
            }
            let (oh, ow) = c.out_hw(h, w)?;
            Ok(vec![b, c.out_c, oh, ow])
        }
        Op::Dense(d) => {
            if x.len() != 2 || x[1] != d.in_f {
                return Err(format!("expects [N, {}], got {x:?}", d.in_f).into());
            }
            let weight_len = d
                .out_f
                .checked_mul(d.in_f)
                .ok_or_else(|| too_large("the weight size"))?;
            if d.weight.len() != weight_len || d.bias.len() != d.out_f {
                return Err("weight or bias size does not match the declared shape".into());
            }
            Ok(vec![x[0], d.out_f])
        }
        Op::Relu | Op::Clip { .. } | Op::Softmax => Ok(x.clone()),
        Op::BatchNorm { scale, shift } => {
            if x.len() < 2 || scale.len() != x[1] || shift.len() != x[1] {
                return Err(format!("{} channel parameters for input {x:?}", scale.len()).into());
            }
            Ok(x.clone())
        }
        Op::MaxPool(p) | Op::AvgPool(p) => {
            let (b, ch, h, w) = nchw(x)?;
            let (oh, ow) = p.out_hw(h, w)?;
            Ok(vec![b, ch, oh, ow])
        }
        Op::GlobalAvgPool => {
            let (b, ch, _, _) = nchw(x)?;
            Ok(vec![b, ch, 1, 1])
        }
        Op::Flatten => {
            let (&b, rest) = x
                .split_first()
                .ok_or_else(|| InferError::from("expects an input with a batch dimension"))?;
            let f = checked_product(rest).ok_or_else(|| too_large("the flattened size"))?;
            Ok(vec![b, f])
        }
        Op::Reshape(dims) => {
            let (&b, rest) = x
                .split_first()
                .ok_or_else(|| InferError::from("expects an input with a batch dimension"))?;
            let have = checked_product(rest).ok_or_else(|| too_large("the input size"))?;
            let want = checked_product(dims).ok_or_else(|| too_large("the target size"))?;
            if have != want {
                return Err(format!("cannot reshape {x:?} to [N, {dims:?}]").into());
            }
            let mut s = vec![b];
            s.extend_from_slice(dims);
            Ok(s)
        }
        Op::Add => {
            let y = &shapes[n.inputs[1].index()];
            if x != y {
                return Err(format!("operands have different shapes {x:?} and {y:?}").into());
            }
            Ok(x.clone())
        }
        Op::LogSoftmax | Op::Unary(_) => Ok(x.clone()),
        Op::PRelu { slope } => {
            if !(slope.len() == 1 || x.get(1) == Some(&slope.len())) {
                return Err(format!("{} slopes for input {x:?}", slope.len()).into());
            }
            Ok(x.clone())
        }
        Op::Binary(_) => {
            let y = &shapes[n.inputs[1].index()];
            broadcast_shape(x, y)
                .ok_or_else(|| format!("operands {x:?} and {y:?} do not broadcast").into())
        }
        Op::BinaryConst { c, .. } => {
            if c.data.len() != checked_product(&c.shape).unwrap_or(usize::MAX)
                || c.shape.first() != Some(&1)
            {
                return Err(format!("malformed constant of shape {:?}", c.shape).into());
            }
            broadcast_shape(x, &c.shape).ok_or_else(|| {
                format!("operand {x:?} and constant {:?} do not broadcast", c.shape).into()
            })
        }
        Op::Concat { axis } => {
            if *axis == 0 || *axis >= x.len() {
                return Err(format!("axis {axis} of a rank-{} input", x.len()).into());
            }
            let mut out = x.clone();
            for v in &n.inputs[1..] {
                let y = &shapes[v.index()];
                let same = y.len() == x.len()
                    && y.iter()
                        .zip(x)
                        .enumerate()
                        .all(|(d, (a, b))| d == *axis || a == b);
                if !same {
                    return Err(format!("cannot concatenate {x:?} and {y:?} on axis {axis}").into());
                }
                out[*axis] = out[*axis]
                    .checked_add(y[*axis])
                    .ok_or_else(|| too_large("the concatenated size"))?;
            }
            Ok(out)
        }
        Op::Transpose(perm) => {
            let mut seen = vec![false; x.len()];
            let valid = perm.len() == x.len()
                && perm.first() == Some(&0)
                && perm
                    .iter()
                    .all(|&p| p < seen.len() && !std::mem::replace(&mut seen[p], true));
            if !valid {
                return Err(format!(
                    "permutation {perm:?} of a rank-{} input (the batch axis must stay first)",
                    x.len()
                )
                .into());
            }
            Ok(perm.iter().map(|&p| x[p]).collect())
        }
        Op::Lrn(l) => {
            nchw(x)?;
            if l.size == 0 {
                return Err("LRN size 0".into());
            }
            Ok(x.clone())
        }
        Op::Pad { pads, mode } => {
            let (b, ch, h, w) = nchw(x)?;
            if matches!(mode, PadMode::Reflect)
                && (pads[0].max(pads[2]) >= h || pads[1].max(pads[3]) >= w)
            {
                return Err(format!("reflect padding {pads:?} of a {h}x{w} plane").into());
            }
            let sum = |a: usize, p: usize, q: usize| a.checked_add(p)?.checked_add(q);
            let (Some(oh), Some(ow)) = (sum(h, pads[0], pads[2]), sum(w, pads[1], pads[3])) else {
                return Err(too_large("the padded size"));
            };
            Ok(vec![b, ch, oh, ow])
        }
        Op::Dilate { stride, pads } => {
            let (b, ch, h, w) = nchw(x)?;
            if stride.contains(&0) {
                return Err("zero stride".into());
            }
            let (oh, ow) = crate::ops::dilated_hw(h.max(1), w.max(1), *stride, *pads)
                .ok_or_else(|| too_large("the zero-inserted size"))?;
            Ok(vec![b, ch, oh, ow])
        }
        Op::GlobalMaxPool => {
            let (b, ch, _, _) = nchw(x)?;
            Ok(vec![b, ch, 1, 1])
        }
    }
}
