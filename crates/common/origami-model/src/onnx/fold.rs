//! Constant folding at import: the shape computations exporters emit around `Reshape`
//! (`Shape → Gather → Unsqueeze → Concat`, `Cast`, `ConstantOfShape`, `Range`, `Slice`,
//! arithmetic on shapes) are evaluated once, so the IR only ever sees constant targets. `Shape`
//! of a computed value folds to its inferred shape, with the declared batch size first.

use super::decode::*;
use super::import::{Const, Importer, Val};
use super::proto::{data_type, NodeProto};
use crate::ModelError;

/// Operators folded when every input is a constant.
const FOLDABLE: &[&str] = &[
    "Gather",
    "Cast",
    "ConstantOfShape",
    "Range",
    "Unsqueeze",
    "Squeeze",
    "Concat",
    "Reshape",
    "Slice",
    "Add",
    "Sub",
    "Mul",
    "Div",
];

/// Largest constant a fold may create: shape computations are tiny, and a `ConstantOfShape`
/// or `Range` from a hostile file must not allocate gigabytes.
const FOLD_MAX: usize = 1 << 24;

/// A constant being folded.
struct C {
    dims: Vec<usize>,
    data: Data,
}

impl C {
    fn len(&self) -> usize {
        match &self.data {
            Data::F32(v) => v.len(),
            Data::I64(v) => v.len(),
        }
    }
    fn ints(&self, ctx: &Ctx, what: &str) -> Result<&[i64], ModelError> {
        match &self.data {
            Data::I64(v) => Ok(v),
            Data::F32(_) => Err(ctx.malformed(format!("{what} must be an integer tensor"))),
        }
    }
    /// Elements picked by `index` (flat positions), keeping the type.
    fn pick(&self, dims: Vec<usize>, index: impl Iterator<Item = usize>) -> C {
        let data = match &self.data {
            Data::F32(v) => Data::F32(index.map(|i| v[i]).collect()),
            Data::I64(v) => Data::I64(index.map(|i| v[i]).collect()),
        };
        C { dims, data }
    }
}

fn bounded(ctx: &Ctx, dims: &[usize]) -> Result<usize, ModelError> {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= FOLD_MAX)
        .ok_or_else(|| {
            ctx.unsupported(format!(
                "a folded constant of shape {dims:?} has more than {FOLD_MAX} elements"
            ))
        })
}

fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for d in (0..dims.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * dims[d + 1];
    }
    s
}

/// Flat positions of every element of a `dims`-shaped result, mapped through `src` (output
/// multi-index → input flat index).
fn gather_positions(dims: &[usize], mut src: impl FnMut(&[usize]) -> usize) -> Vec<usize> {
    let n: usize = dims.iter().product();
    let mut idx = vec![0usize; dims.len()];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(src(&idx));
        for d in (0..dims.len()).rev() {
            idx[d] += 1;
            if idx[d] < dims[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

fn axis_of(ctx: &Ctx, axis: i64, rank: usize) -> Result<usize, ModelError> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r).contains(&a) {
        Ok(a as usize)
    } else {
        Err(ctx.malformed(format!("axis {axis} out of range for rank {rank}")))
    }
}

impl<'a> Importer<'a> {
    /// The node's result as a constant, when it can be computed at import; `None` otherwise.
    pub(super) fn fold(
        &self,
        ctx: &Ctx,
        np: &'a NodeProto,
    ) -> Result<Option<Const<'a>>, ModelError> {
        let op = np.op_type.as_str();
        if op == "Shape" {
            let x = input_name(np, 0);
            let mut dims: Vec<i64> = match self.lookup(ctx, x)? {
                Val::Computed(v) => {
                    let mut d: Vec<i64> =
                        self.shapes[v.index()].iter().map(|&d| d as i64).collect();
                    d[0] = self.batch as i64;
                    d
                }
                Val::Const(_) => self.constant(ctx, x)?.0.iter().map(|&d| d as i64).collect(),
            };
            let r = dims.len() as i64;
            let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let start = clampi(attr_i(ctx, np, "start")?.unwrap_or(0));
            let end = clampi(attr_i(ctx, np, "end")?.unwrap_or(r));
            dims = dims[start..end.max(start)].to_vec();
            return Ok(Some(Const::Ints(vec![dims.len()], dims)));
        }
        if !FOLDABLE.contains(&op) {
            return Ok(None);
        }
        let mut ins = Vec::with_capacity(np.input.len());
        for name in &np.input {
            if name.is_empty() {
                ins.push(None);
                continue;
            }
            match self.lookup(ctx, name)? {
                Val::Computed(_) => return Ok(None),
                Val::Const(_) => {
                    let (dims, data) = self.constant(ctx, name)?;
                    ins.push(Some(C { dims, data }));
                }
            }
        }
        if ins.is_empty() && op != "ConstantOfShape" {
            return Ok(None);
        }
        let arg = |k: usize| -> Result<&C, ModelError> {
            ins.get(k)
                .and_then(Option::as_ref)
                .ok_or_else(|| ctx.malformed(format!("input #{k} is required")))
        };
        let out = match op {
            "Gather" => {
                let (d, i) = (arg(0)?, arg(1)?);
                let axis = axis_of(ctx, attr_i(ctx, np, "axis")?.unwrap_or(0), d.dims.len())?;
                let n = d.dims[axis] as i64;
                let idx = i
                    .ints(ctx, "indices")?
                    .iter()
                    .map(|&v| {
                        let v = if v < 0 { v + n } else { v };
                        if (0..n).contains(&v) {
                            Ok(v as usize)
                        } else {
                            Err(ctx.malformed(format!("index {v} out of range {n}")))
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let mut dims = d.dims[..axis].to_vec();
                dims.extend_from_slice(&i.dims);
                dims.extend_from_slice(&d.dims[axis + 1..]);
                bounded(ctx, &dims)?;
                let st = strides(&d.dims);
                let ir = i.dims.len();
                let pos = gather_positions(&dims, |o| {
                    let mut flat = 0;
                    for k in 0..axis {
                        flat += o[k] * st[k];
                    }
                    let mut ii = 0;
                    for (k, &v) in o[axis..axis + ir].iter().enumerate() {
                        ii = ii * i.dims[k] + v;
                    }
                    flat += idx[ii] * st[axis];
                    for k in axis + 1..d.dims.len() {
                        flat += o[k - 1 + ir] * st[k];
                    }
                    flat
                });
                d.pick(dims, pos.into_iter())
            }
            "Cast" => {
                let x = arg(0)?;
                let to = attr_i(ctx, np, "to")?.ok_or_else(|| ctx.malformed("'to' is required"))?;
                let as_float = matches!(
                    to as i32,
                    data_type::FLOAT | data_type::DOUBLE | data_type::FLOAT16 | data_type::BFLOAT16
                );
                let data = match (&x.data, as_float) {
                    (Data::F32(v), true) => Data::F32(v.clone()),
                    (Data::I64(v), true) => Data::F32(v.iter().map(|&x| x as f32).collect()),
                    (Data::I64(v), false) if to as i32 == data_type::BOOL => {
                        Data::I64(v.iter().map(|&x| (x != 0) as i64).collect())
                    }
                    (Data::I64(v), false) => Data::I64(v.clone()),
                    (Data::F32(v), false) if to as i32 == data_type::BOOL => {
                        Data::I64(v.iter().map(|&x| (x != 0.0) as i64).collect())
                    }
                    (Data::F32(v), false) => Data::I64(v.iter().map(|&x| x as i64).collect()),
                };
                C {
                    dims: x.dims.clone(),
                    data,
                }
            }
            "ConstantOfShape" => {
                let shape = arg(0)?.ints(ctx, "the shape")?;
                let dims = shape
                    .iter()
                    .map(|&d| usize::try_from(d).map_err(|_| ctx.malformed("negative dimension")))
                    .collect::<Result<Vec<_>, _>>()?;
                let n = bounded(ctx, &dims)?;
                let fill = match np.attribute.iter().find(|a| a.name == "value") {
                    None => Data::F32(vec![0.0]),
                    Some(a) => match &a.t {
                        Some(t) => decode_tensor(t, None)?.1,
                        None => return Err(ctx.malformed("'value' holds no tensor")),
                    },
                };
                let data = match fill {
                    Data::F32(v) if v.len() == 1 => Data::F32(vec![v[0]; n]),
                    Data::I64(v) if v.len() == 1 => Data::I64(vec![v[0]; n]),
                    _ => return Err(ctx.malformed("'value' must hold one element")),
                };
                C { dims, data }
            }
            "Range" => {
                let (s, l, d) = (arg(0)?, arg(1)?, arg(2)?);
                match (&s.data, &l.data, &d.data) {
                    (Data::I64(s), Data::I64(l), Data::I64(d))
                        if s.len() == 1 && l.len() == 1 && d.len() == 1 =>
                    {
                        let (s, l, d) = (s[0], l[0], d[0]);
                        if d == 0 {
                            return Err(ctx.malformed("Range with delta 0"));
                        }
                        let n = ((l - s) as f64 / d as f64).ceil().max(0.0) as usize;
                        bounded(ctx, &[n])?;
                        C {
                            dims: vec![n],
                            data: Data::I64((0..n as i64).map(|i| s + i * d).collect()),
                        }
                    }
                    (Data::F32(s), Data::F32(l), Data::F32(d))
                        if s.len() == 1 && l.len() == 1 && d.len() == 1 =>
                    {
                        let (s, l, d) = (s[0], l[0], d[0]);
                        let n = ((l - s) / d).ceil();
                        if !n.is_finite() {
                            return Err(ctx.malformed("Range with an infinite length"));
                        }
                        let n = n.max(0.0) as usize;
                        bounded(ctx, &[n])?;
                        C {
                            dims: vec![n],
                            data: Data::F32((0..n).map(|i| s + i as f32 * d).collect()),
                        }
                    }
                    _ => {
                        return Err(
                            ctx.malformed("start, limit and delta must be scalars of one type")
                        )
                    }
                }
            }
            "Unsqueeze" | "Squeeze" => {
                let x = arg(0)?;
                let axes = if self.opset >= 13 {
                    match ins.get(1).and_then(Option::as_ref) {
                        Some(a) => Some(a.ints(ctx, "axes")?.to_vec()),
                        None => None,
                    }
                } else {
                    attr_ints(ctx, np, "axes")?
                };
                let dims = squeeze_dims(ctx, &x.dims, axes.as_deref(), op == "Unsqueeze")?;
                C {
                    dims,
                    data: x.data.clone(),
                }
            }
            "Concat" => {
                let parts: Vec<&C> = ins.iter().flatten().collect();
                let first = parts[0];
                let axis = axis_of(
                    ctx,
                    attr_i(ctx, np, "axis")?.ok_or_else(|| ctx.malformed("'axis' is required"))?,
                    first.dims.len(),
                )?;
                let mut dims = first.dims.clone();
                dims[axis] = 0;
                for p in &parts {
                    let same = p.dims.len() == first.dims.len()
                        && p.dims
                            .iter()
                            .zip(&first.dims)
                            .enumerate()
                            .all(|(k, (a, b))| k == axis || a == b);
                    if !same {
                        return Err(ctx.malformed("concatenated constants differ in shape"));
                    }
                    dims[axis] += p.dims[axis];
                }
                bounded(ctx, &dims)?;
                let outer: usize = first.dims[..axis].iter().product();
                let data = match &first.data {
                    Data::I64(_) => {
                        let mut v = Vec::new();
                        for o in 0..outer {
                            for p in &parts {
                                let x = p.ints(ctx, "every input")?;
                                let run = x.len() / outer.max(1);
                                v.extend_from_slice(&x[o * run..(o + 1) * run]);
                            }
                        }
                        Data::I64(v)
                    }
                    Data::F32(_) => {
                        let mut v = Vec::new();
                        for o in 0..outer {
                            for p in &parts {
                                let Data::F32(x) = &p.data else {
                                    return Err(ctx.malformed("inputs of different types"));
                                };
                                let run = x.len() / outer.max(1);
                                v.extend_from_slice(&x[o * run..(o + 1) * run]);
                            }
                        }
                        Data::F32(v)
                    }
                };
                C { dims, data }
            }
            "Reshape" => {
                let (x, s) = (arg(0)?, arg(1)?);
                let target = s.ints(ctx, "the shape")?;
                let mut dims = Vec::with_capacity(target.len());
                let mut infer = None;
                for (k, &d) in target.iter().enumerate() {
                    match d {
                        0 => dims.push(
                            *x.dims
                                .get(k)
                                .ok_or_else(|| ctx.malformed("0 copies a missing dimension"))?,
                        ),
                        -1 if infer.is_none() => {
                            infer = Some(k);
                            dims.push(1);
                        }
                        d if d > 0 => dims.push(d as usize),
                        d => return Err(ctx.malformed(format!("invalid target dimension {d}"))),
                    }
                }
                let known = bounded(ctx, &dims)?;
                if let Some(k) = infer {
                    if known == 0 || x.len() % known != 0 {
                        return Err(ctx.malformed("cannot infer the -1 dimension"));
                    }
                    dims[k] = x.len() / known;
                }
                if bounded(ctx, &dims)? != x.len() {
                    return Err(ctx.malformed(format!("cannot reshape {:?} to {target:?}", x.dims)));
                }
                C {
                    dims,
                    data: x.data.clone(),
                }
            }
            "Slice" => self.fold_slice(ctx, np, &ins)?,
            "Add" | "Sub" | "Mul" | "Div" => {
                let (a, b) = (arg(0)?, arg(1)?);
                let r = a.dims.len().max(b.dims.len());
                let pad = |d: &[usize]| {
                    let mut v = vec![1; r - d.len()];
                    v.extend_from_slice(d);
                    v
                };
                let (da, db) = (pad(&a.dims), pad(&b.dims));
                let dims = crate::ops::broadcast_shape(&da, &db)
                    .ok_or_else(|| ctx.malformed("the constant operands do not broadcast"))?;
                bounded(ctx, &dims)?;
                let bpos = |d: &[usize]| {
                    let st = strides(d);
                    gather_positions(&dims, |o| {
                        o.iter()
                            .zip(d)
                            .zip(&st)
                            .map(|((&i, &n), &s)| if n == 1 { 0 } else { i * s })
                            .sum()
                    })
                };
                let (pa, pb) = (bpos(&da), bpos(&db));
                let data = match (&a.data, &b.data) {
                    (Data::I64(x), Data::I64(y)) => Data::I64(
                        pa.iter()
                            .zip(&pb)
                            .map(|(&i, &j)| {
                                let (x, y) = (x[i], y[j]);
                                match op {
                                    "Add" => Ok(x.wrapping_add(y)),
                                    "Sub" => Ok(x.wrapping_sub(y)),
                                    "Mul" => Ok(x.wrapping_mul(y)),
                                    _ => x
                                        .checked_div(y)
                                        .ok_or_else(|| ctx.malformed("integer division by zero")),
                                }
                            })
                            .collect::<Result<_, _>>()?,
                    ),
                    (Data::F32(x), Data::F32(y)) => {
                        let f = match op {
                            "Add" => crate::BinOp::Add,
                            "Sub" => crate::BinOp::Sub,
                            "Mul" => crate::BinOp::Mul,
                            _ => crate::BinOp::Div,
                        };
                        Data::F32(
                            pa.iter()
                                .zip(&pb)
                                .map(|(&i, &j)| f.apply(x[i], y[j]))
                                .collect(),
                        )
                    }
                    _ => return Err(ctx.malformed("operands of different types")),
                };
                C { dims, data }
            }
            _ => return Ok(None),
        };
        Ok(Some(match out.data {
            Data::F32(v) => Const::Floats(out.dims, v),
            Data::I64(v) => Const::Ints(out.dims, v),
        }))
    }

    /// `Slice` on a constant: starts, ends, axes and steps as inputs (opset ≥ 10) or
    /// attributes (before).
    fn fold_slice(&self, ctx: &Ctx, np: &NodeProto, ins: &[Option<C>]) -> Result<C, ModelError> {
        let x = ins
            .first()
            .and_then(Option::as_ref)
            .ok_or_else(|| ctx.malformed("the data input is required"))?;
        let list = |k: usize, attr: &str| -> Result<Option<Vec<i64>>, ModelError> {
            if self.opset >= 10 {
                match ins.get(k).and_then(Option::as_ref) {
                    Some(c) => Ok(Some(c.ints(ctx, attr)?.to_vec())),
                    None => Ok(None),
                }
            } else {
                attr_ints(ctx, np, attr)
            }
        };
        let starts = list(1, "starts")?.ok_or_else(|| ctx.malformed("starts are required"))?;
        let ends = list(2, "ends")?.ok_or_else(|| ctx.malformed("ends are required"))?;
        let r = x.dims.len();
        let axes = list(3, "axes")?.unwrap_or_else(|| (0..starts.len() as i64).collect());
        let steps = list(4, "steps")?.unwrap_or_else(|| vec![1; starts.len()]);
        if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
            return Err(ctx.malformed("starts, ends, axes and steps differ in length"));
        }
        // Per axis: first index and step, and the output size.
        let mut first = vec![0i64; r];
        let mut step = vec![1i64; r];
        let mut dims = x.dims.clone();
        for k in 0..starts.len() {
            let a = axis_of(ctx, axes[k], r)?;
            let n = x.dims[a] as i64;
            let s = steps[k];
            if s == 0 {
                return Err(ctx.malformed("a slice step is 0"));
            }
            let norm = |v: i64| if v < 0 { v.saturating_add(n) } else { v };
            let (lo, hi) = if s > 0 { (0, n) } else { (-1, n - 1) };
            let b = norm(starts[k]).clamp(lo, hi);
            let e = norm(ends[k]).clamp(lo, hi);
            let len = if s > 0 {
                (e - b + s - 1).div_euclid(s).max(0)
            } else {
                (b - e + (-s) - 1).div_euclid(-s).max(0)
            };
            first[a] = b;
            step[a] = s;
            dims[a] = len as usize;
        }
        bounded(ctx, &dims)?;
        let st = strides(&x.dims);
        let pos = gather_positions(&dims, |o| {
            o.iter()
                .enumerate()
                .map(|(a, &i)| (first[a] + i as i64 * step[a]) as usize * st[a])
                .sum()
        });
        Ok(x.pick(dims, pos.into_iter()))
    }
}

/// The dimensions after `Unsqueeze` (inserting size-1 axes at `axes` of the result) or
/// `Squeeze` (removing the size-1 `axes`, or every size-1 axis when none are given).
pub(super) fn squeeze_dims(
    ctx: &Ctx,
    dims: &[usize],
    axes: Option<&[i64]>,
    unsqueeze: bool,
) -> Result<Vec<usize>, ModelError> {
    if unsqueeze {
        let axes = axes.ok_or_else(|| ctx.malformed("axes are required"))?;
        let r = dims.len() + axes.len();
        let mut ins: Vec<usize> = axes
            .iter()
            .map(|&a| axis_of(ctx, a, r))
            .collect::<Result<_, _>>()?;
        ins.sort_unstable();
        ins.dedup();
        if ins.len() != axes.len() {
            return Err(ctx.malformed("repeated axes"));
        }
        let mut src = dims.iter();
        Ok((0..r)
            .map(|k| {
                if ins.contains(&k) {
                    1
                } else {
                    *src.next().unwrap_or(&1)
                }
            })
            .collect())
    } else {
        let drop: Vec<usize> = match axes {
            Some(a) => a
                .iter()
                .map(|&a| axis_of(ctx, a, dims.len()))
                .collect::<Result<_, _>>()?,
            None => (0..dims.len()).filter(|&k| dims[k] == 1).collect(),
        };
        if drop.iter().any(|&k| dims[k] != 1) {
            return Err(ctx.malformed(format!("cannot squeeze a non-1 axis of {dims:?}")));
        }
        Ok(dims
            .iter()
            .enumerate()
            .filter(|(k, _)| !drop.contains(k))
            .map(|(_, &d)| d)
            .collect())
    }
}
