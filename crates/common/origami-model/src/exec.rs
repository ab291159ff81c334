//! The float executor on CPU: the reference for accuracy and the plain tail of the `origami`
//! and `plain` placements. Deterministic: the same model, input and thread count give the same
//! bits (tiles write disjoint outputs; no reduction order depends on scheduling).

use crate::ir::{Model, Node, NodeId, Op, Pool, ValueId, INPUT};
use crate::linalg::{conv2d, gemm_nt, ConvGeom};
use crate::{ops, winograd};
use crate::{ModelError, Tensor};

/// Runs the whole model on a batch `[N, C, H, W]`.
pub fn run(model: &Model, input: &Tensor) -> Result<Tensor, ModelError> {
    check_input(model, input)?;
    let mut env: Vec<Option<Tensor>> = vec![None; model.num_values()];
    env[INPUT.index()] = Some(input.clone());
    run_from(model, NodeId::new(0), env)
}

/// Checks that `input` is `[N, C, H, W]` with the model's C, H, W and finite values.
pub fn check_input(model: &Model, input: &Tensor) -> Result<(), ModelError> {
    if input.shape.len() != 4 || input.shape[1..] != model.input_shape[..] || input.shape[0] == 0 {
        return Err(ModelError::Input(format!(
            "model '{}' takes input [N, {}], got {:?}",
            model.name,
            model
                .input_shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            input.shape
        )));
    }
    if input.data.len() != input.shape.iter().product::<usize>() {
        return Err(ModelError::Input(
            "input data does not match its shape".into(),
        ));
    }
    if input.data.iter().any(|v| !v.is_finite()) {
        return Err(ModelError::Input(
            "input holds NaN or infinite values".into(),
        ));
    }
    Ok(())
}

/// For each value, the index of the last node that reads it (or `usize::MAX` for the output).
pub fn last_uses(model: &Model) -> Vec<usize> {
    let mut last = vec![0usize; model.num_values()];
    for (i, n) in model.nodes.iter().enumerate() {
        for &v in &n.inputs {
            last[v.index()] = i;
        }
    }
    last[model.output.index()] = usize::MAX;
    last
}

/// Runs nodes `start..` given the values they need in `env` (indexed by [`ValueId::index`]:
/// values computed before `start` that later nodes read). Values are dropped after their last
/// use.
pub fn run_from(
    model: &Model,
    start: NodeId,
    env: Vec<Option<Tensor>>,
) -> Result<Tensor, ModelError> {
    run_impl(model, start, env, None)
}

/// `run_from`, calling `observe(node_index, output)` after every node (calibration uses it).
pub fn run_observed(
    model: &Model,
    start: NodeId,
    env: Vec<Option<Tensor>>,
    mut observe: impl FnMut(usize, &Tensor),
) -> Result<Tensor, ModelError> {
    run_impl(model, start, env, Some(&mut observe))
}

/// A callback after each node: `(node index, output)`.
type Observer<'a> = &'a mut dyn FnMut(usize, &Tensor);

/// Without an observer, a linear node marked by the fusion pass (`Model::relu_fusions`) runs
/// with the ReLU after it in one pass (the same bits as two: max(x + b, 0) either way).
fn run_impl(
    model: &Model,
    start: NodeId,
    mut env: Vec<Option<Tensor>>,
    mut observe: Option<Observer<'_>>,
) -> Result<Tensor, ModelError> {
    if env.len() != model.num_values() {
        return Err(ModelError::Invalid(
            "environment size does not match the model".into(),
        ));
    }
    let last = last_uses(model);
    let threads = rayon::current_num_threads();
    let fusions = model.relu_fusions();
    let mut skip = false;
    for (i, node) in model.nodes.iter().enumerate().skip(start.index()) {
        if skip {
            skip = false;
            continue;
        }
        if observe.is_none() && fusions[i] {
            let x = env[node.inputs[0].index()].as_ref().ok_or_else(|| {
                ModelError::Invalid(format!("value needed by node {} is missing", node.name))
            })?;
            let out = match &node.op {
                Op::Conv(c) => conv(c, x, threads, true).map_err(|e| in_node(e, &node.name))?,
                _ => {
                    let mut y = eval_node(node, &[x], threads)?;
                    y.data.iter_mut().for_each(|v| *v = v.max(0.0));
                    y
                }
            };
            if last[node.inputs[0].index()] <= i + 1 {
                env[node.inputs[0].index()] = None;
            }
            // The fused ReLU's output (the next node's).
            env[node.output.index() + 1] = Some(out);
            skip = true;
            continue;
        }
        let out = {
            let ins: Vec<&Tensor> = node
                .inputs
                .iter()
                .map(|&v| {
                    env[v.index()].as_ref().ok_or_else(|| {
                        ModelError::Invalid(format!(
                            "value {v} needed by node {} is missing",
                            node.name
                        ))
                    })
                })
                .collect::<Result<_, _>>()?;
            eval_node(node, &ins, threads)?
        };
        if let Some(o) = observe.as_mut() {
            o(i, &out);
        }
        for &v in &node.inputs {
            if last[v.index()] == i {
                env[v.index()] = None;
            }
        }
        env[node.output.index()] = Some(out);
    }
    env[model.output.index()]
        .take()
        .ok_or_else(|| ModelError::Invalid("the model output was not computed".into()))
}

fn dims4(t: &Tensor) -> Result<(usize, usize, usize, usize), ModelError> {
    match t.shape[..] {
        [n, c, h, w] => Ok((n, c, h, w)),
        _ => Err(ModelError::Shape(format!(
            "expected NCHW, got {:?}",
            t.shape
        ))),
    }
}

/// Evaluates one node in float.
pub fn eval_node(node: &Node, ins: &[&Tensor], threads: usize) -> Result<Tensor, ModelError> {
    let x = ins[0];
    Ok(match &node.op {
        Op::Conv(c) => conv(c, x, threads, false).map_err(|e| in_node(e, &node.name))?,
        Op::Dense(d) => {
            let n = x.shape[0];
            let mut out = vec![0f32; batch_len(n, d.out_f, &node.name)?];
            gemm_nt(n, d.in_f, d.out_f, &x.data, &d.weight, &mut out, threads);
            for row in out.chunks_mut(d.out_f) {
                row.iter_mut().zip(&d.bias).for_each(|(v, b)| *v += b);
            }
            Tensor::new(vec![n, d.out_f], out)?
        }
        Op::Relu => map(x, |v| v.max(0.0)),
        Op::Clip { min, max } => map(x, |v| v.max(*min).min(*max)),
        Op::BatchNorm { scale, shift } => {
            let c = x.shape[1];
            let plane = x.data.len() / (x.shape[0] * c);
            let mut out = x.clone();
            for (i, chunk) in out.data.chunks_mut(plane).enumerate() {
                let ch = i % c;
                chunk
                    .iter_mut()
                    .for_each(|v| *v = *v * scale[ch] + shift[ch]);
            }
            out
        }
        Op::MaxPool(p) => pool(x, p, true).map_err(|e| in_node(e, &node.name))?,
        Op::AvgPool(p) => pool(x, p, false).map_err(|e| in_node(e, &node.name))?,
        Op::GlobalAvgPool => {
            let (n, c, h, w) = dims4(x)?;
            let data = x
                .data
                .chunks(h * w)
                .map(|pl| (pl.iter().map(|&v| v as f64).sum::<f64>() / (h * w) as f64) as f32)
                .collect();
            Tensor::new(vec![n, c, 1, 1], data)?
        }
        Op::Flatten => Tensor::new(vec![x.shape[0], x.data.len() / x.shape[0]], x.data.clone())?,
        Op::Reshape(d) => {
            let mut s = vec![x.shape[0]];
            s.extend_from_slice(d);
            Tensor::new(s, x.data.clone())?
        }
        Op::Add => {
            let y = ins[1];
            if x.shape != y.shape {
                return Err(ModelError::Shape(format!(
                    "Add of {:?} and {:?}",
                    x.shape, y.shape
                )));
            }
            Tensor::new(
                x.shape.clone(),
                x.data.iter().zip(&y.data).map(|(a, b)| a + b).collect(),
            )?
        }
        Op::Softmax | Op::LogSoftmax => {
            let last = *x.shape.last().unwrap_or(&1);
            let mut out = x.clone();
            let f = if matches!(node.op, Op::Softmax) {
                softmax_in_place
            } else {
                ops::log_softmax_in_place
            };
            out.data.chunks_mut(last.max(1)).for_each(f);
            out
        }
        Op::Unary(u) => map(x, |v| u.apply(v)),
        Op::PRelu { slope } => ops::prelu(x, slope),
        Op::Binary(b) => ops::binary(*b, x, ins[1])?,
        Op::BinaryConst { op, c, c_first } => {
            if *c_first {
                ops::binary(*op, c, x)?
            } else {
                ops::binary(*op, x, c)?
            }
        }
        Op::Concat { axis } => ops::concat(ins, *axis)?,
        Op::Transpose(perm) => ops::transpose(x, perm)?,
        Op::Lrn(l) => {
            dims4(x)?;
            ops::lrn(x, l)
        }
        Op::Pad { pads, mode } => {
            dims4(x)?;
            ops::pad(x, *pads, *mode)?
        }
        Op::Dilate { stride, pads } => {
            dims4(x)?;
            ops::dilate(x, *stride, *pads)?
        }
        Op::GlobalMaxPool => {
            dims4(x)?;
            ops::global_max_pool(x)?
        }
    })
}

/// Convolution + bias (+ ReLU when `relu`), batch by batch.
fn conv(c: &crate::ir::Conv, x: &Tensor, threads: usize, relu: bool) -> Result<Tensor, ModelError> {
    let (n, _, h, w) = dims4(x)?;
    let g = ConvGeom::new(c, h, w)?;
    let mut out = vec![0f32; batch_len(n, g.out_len(), "conv")?];
    // Float data only: Winograd where it applies (docs in `winograd`; bias and ReLU in its
    // output pass), else im2col + GEMM and a bias pass.
    let wino = winograd::applies(&g).then(|| winograd::Filters::new(&g, &c.weight, threads));
    for b in 0..n {
        let o = &mut out[b * g.out_len()..(b + 1) * g.out_len()];
        let xb = &x.data[b * g.in_len()..(b + 1) * g.in_len()];
        if let Some(f) = &wino {
            winograd::conv3x3(&g, f, xb, (&c.bias, relu), o, threads);
            continue;
        }
        conv2d(&g, xb, &c.weight, o, threads);
        let plane = g.oh * g.ow;
        for (oc, chunk) in o.chunks_mut(plane).enumerate() {
            let bias = c.bias[oc];
            if relu {
                chunk.iter_mut().for_each(|v| *v = (*v + bias).max(0.0));
            } else {
                chunk.iter_mut().for_each(|v| *v += bias);
            }
        }
    }
    Tensor::new(vec![n, c.out_c, g.oh, g.ow], out)
}

/// `n` images of `per_image` elements, refusing overflow and tensors above
/// [`crate::MAX_VALUE_ELEMENTS`] per image (a validated model never has those).
fn batch_len(n: usize, per_image: usize, what: &str) -> Result<usize, ModelError> {
    if per_image > crate::MAX_VALUE_ELEMENTS {
        return Err(ModelError::TooLarge(format!(
            "{what}: an output of {per_image} elements per image is above the cap"
        )));
    }
    n.checked_mul(per_image).ok_or_else(|| {
        ModelError::TooLarge(format!(
            "{what}: a batch of {n} outputs of {per_image} elements overflows"
        ))
    })
}

/// Names the node in a size error from a layer.
fn in_node(e: ModelError, node: &str) -> ModelError {
    match e {
        ModelError::TooLarge(m) => ModelError::TooLarge(format!("node {node}: {m}")),
        other => other,
    }
}

/// Numerically stable softmax of one row.
pub fn softmax_in_place(row: &mut [f32]) {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut s = 0f64;
    for v in row.iter_mut() {
        *v = (*v - m).exp();
        s += *v as f64;
    }
    for v in row.iter_mut() {
        *v = (*v as f64 / s) as f32;
    }
}

fn map(x: &Tensor, f: impl Fn(f32) -> f32) -> Tensor {
    Tensor {
        shape: x.shape.clone(),
        data: x.data.iter().map(|&v| f(v)).collect(),
    }
}

/// Whether `p` is the common VGG max-pool window: 2×2, stride 2, no padding.
pub fn is_pool_2x2(p: &Pool) -> bool {
    p.kernel == [2, 2] && p.stride == [2, 2] && p.pads == [0; 4]
}

/// 2×2 stride-2 max-pool over planes of `h × w` (any element type), without bounds checks per
/// cell; `out` holds the `⌊h/2⌋ × ⌊w/2⌋` planes.
pub fn max_pool_2x2<T: Copy + PartialOrd>(data: &[T], h: usize, w: usize, out: &mut [T]) {
    let (oh, ow) = (h / 2, w / 2);
    let max = |a: T, b: T| if b > a { b } else { a };
    for (plane, o) in data.chunks(h * w).zip(out.chunks_mut(oh * ow)) {
        for oy in 0..oh {
            let r0 = &plane[2 * oy * w..2 * oy * w + w];
            let r1 = &plane[(2 * oy + 1) * w..(2 * oy + 1) * w + w];
            for (ox, d) in o[oy * ow..(oy + 1) * ow].iter_mut().enumerate() {
                *d = max(
                    max(r0[2 * ox], r0[2 * ox + 1]),
                    max(r1[2 * ox], r1[2 * ox + 1]),
                );
            }
        }
    }
}

fn pool(x: &Tensor, p: &Pool, max: bool) -> Result<Tensor, ModelError> {
    let (n, c, h, w) = dims4(x)?;
    let (oh, ow) = p.out_hw(h, w)?;
    let per_image = crate::shape::checked_product(&[c, oh, ow])
        .ok_or_else(|| ModelError::TooLarge(format!("pool output {c}x{oh}x{ow} overflows")))?;
    let mut out = vec![0f32; batch_len(n, per_image, "pool")?];
    if max && is_pool_2x2(p) {
        max_pool_2x2(&x.data, h, w, &mut out);
        return Tensor::new(vec![n, c, oh, ow], out);
    }
    for (pi, plane) in x.data.chunks(h * w).enumerate() {
        let o = &mut out[pi * oh * ow..(pi + 1) * oh * ow];
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = if max { f32::NEG_INFINITY } else { 0.0 };
                let mut cnt = 0usize;
                for ky in 0..p.kernel[0] {
                    for kx in 0..p.kernel[1] {
                        let iy = (oy * p.stride[0] + ky) as isize - p.pads[0] as isize;
                        let ix = (ox * p.stride[1] + kx) as isize - p.pads[1] as isize;
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                            continue;
                        }
                        let v = plane[iy as usize * w + ix as usize];
                        if max {
                            acc = acc.max(v);
                        } else {
                            acc += v;
                        }
                        cnt += 1;
                    }
                }
                o[oy * ow + ox] = if max {
                    acc
                } else {
                    let div = if p.count_include_pad {
                        p.kernel[0] * p.kernel[1]
                    } else {
                        cnt.max(1)
                    };
                    acc / div as f32
                };
            }
        }
    }
    Tensor::new(vec![n, c, oh, ow], out)
}

/// Value ids read by nodes at or after `start` but produced before it: what crosses a split.
pub fn live_across(model: &Model, start: NodeId) -> Vec<ValueId> {
    let first = start.index().min(model.nodes.len());
    let mut v: Vec<ValueId> = model.nodes[first..]
        .iter()
        .flat_map(|n| n.inputs.iter().copied())
        .filter(|&v| v.index() <= first)
        .collect();
    if model.output.index() <= first {
        v.push(model.output);
    }
    v.sort_unstable();
    v.dedup();
    v
}
