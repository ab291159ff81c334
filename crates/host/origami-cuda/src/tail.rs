//! The plain tail in f32 on the GPU: convolution as im2col + cuBLAS SGEMM (strided-batched over
//! the images), dense layers as one SGEMM, every other operator of the IR as an NVRTC kernel.
//! Weights are uploaded once (`Tail::upload`); activation buffers are kept per value id and only
//! grow (batch-1 sizes are allocated at prepare time, a larger batch reallocates once).
//!
//! Results match the CPU executor bit for bit except where the summation order differs:
//! convolution and dense (cuBLAS vs faer), softmax's `expf` (CUDA's vs Rust's `exp`, ≤ 2 ulp).
//! Pooling, batch norm, clip/ReLU, bias, add and global average pooling use the CPU's order of
//! operations and rounding (the kernels are compiled with `--fmad=false`).

use cudarc::cublas::{sys as blas_sys, Gemm, GemmConfig, StridedBatchedConfig};
use cudarc::driver::CudaSlice;

use origami_accel::AccelError;
use origami_model::linalg::ConvGeom;
use origami_model::{Conv, Model, NodeId, Op, Pool, Tensor, ValueId};

use crate::device::{backend, launch, Device};

/// Largest im2col buffer (f32 elements, 256 MiB): convolutions over a large batch run in chunks of
/// images; one image always fits whatever its size.
const COLS_CAP: usize = 64 << 20;

/// Parameters of one node on the device (uploaded once).
pub(crate) enum NodeParams {
    Conv {
        w: CudaSlice<f32>,
        b: CudaSlice<f32>,
    },
    Dense {
        w: CudaSlice<f32>,
        b: CudaSlice<f32>,
    },
    BatchNorm {
        scale: CudaSlice<f32>,
        shift: CudaSlice<f32>,
    },
    None,
}

/// A value on the device: its shape (batch first) and the id of the buffer holding it (its own
/// id, or an earlier one for Flatten/Reshape, which only relabel the shape).
#[derive(Clone, Debug)]
struct DevVal {
    shape: Vec<usize>,
    buf: ValueId,
}

impl DevVal {
    fn len(&self) -> usize {
        self.shape.iter().product()
    }
}

pub(crate) struct Tail {
    params: Vec<NodeParams>,
    /// Activation buffer of each value id, reused across calls.
    bufs: Vec<Option<CudaSlice<f32>>>,
    cols: Option<CudaSlice<f32>>,
}

fn bad(msg: impl Into<String>) -> AccelError {
    AccelError::BadInput(msg.into())
}

fn i32_of(v: usize, what: &str) -> Result<i32, AccelError> {
    i32::try_from(v).map_err(|_| {
        bad(format!(
            "{what} = {v} exceeds the 32-bit sizes of the GPU path"
        ))
    })
}

impl Tail {
    /// Uploads every node's parameters and allocates batch-1 activation buffers.
    pub fn upload(dev: &Device, model: &Model) -> Result<Self, AccelError> {
        let shapes = model
            .validate()
            .map_err(|e| AccelError::BadInput(e.to_string()))?;
        let up = |v: &[f32], what: &str| {
            dev.stream
                .clone_htod(v)
                .map_err(backend(format!("upload {what}")))
        };
        let mut params = Vec::with_capacity(model.nodes.len());
        for n in &model.nodes {
            params.push(match &n.op {
                Op::Conv(c) => NodeParams::Conv {
                    w: up(&c.weight, &n.name)?,
                    b: up(&c.bias, &n.name)?,
                },
                Op::Dense(d) => NodeParams::Dense {
                    w: up(&d.weight, &n.name)?,
                    b: up(&d.bias, &n.name)?,
                },
                Op::BatchNorm { scale, shift } => NodeParams::BatchNorm {
                    scale: up(scale, &n.name)?,
                    shift: up(shift, &n.name)?,
                },
                _ => NodeParams::None,
            });
        }
        let mut bufs = Vec::with_capacity(shapes.len());
        for (v, s) in shapes.iter().enumerate() {
            bufs.push(Some(
                dev.alloc::<f32>(s.iter().product(), &format!("value {v}"))?,
            ));
        }
        dev.sync()?;
        Ok(Self {
            params,
            bufs,
            cols: None,
        })
    }

    /// Takes value `id`'s buffer out (reallocating when it is smaller than `len`); the caller puts
    /// it back with `put`.
    fn take(
        &mut self,
        dev: &Device,
        id: ValueId,
        len: usize,
    ) -> Result<CudaSlice<f32>, AccelError> {
        match self.bufs[id.index()].take() {
            Some(b) if b.len() >= len => Ok(b),
            _ => dev.alloc::<f32>(len, &format!("value {id}")),
        }
    }

    fn put(&mut self, id: ValueId, b: CudaSlice<f32>) {
        self.bufs[id.index()] = Some(b);
    }

    fn buf(&self, v: &DevVal) -> Result<&CudaSlice<f32>, AccelError> {
        self.bufs[v.buf.index()]
            .as_ref()
            .ok_or_else(|| AccelError::Backend(format!("buffer {} is missing", v.buf)))
    }

    /// Runs nodes `start..` (the caller checked `start < nodes.len()` and the value ids).
    pub fn run(
        &mut self,
        dev: &Device,
        model: &Model,
        start: NodeId,
        values: Vec<(ValueId, Tensor)>,
    ) -> Result<Tensor, AccelError> {
        crate::support::check_supported(model, start)?;
        let mut env: Vec<Option<DevVal>> = vec![None; model.num_values()];
        for (v, t) in values {
            let len = t.data.len();
            if t.shape.is_empty() || t.shape[0] == 0 || t.shape.iter().product::<usize>() != len {
                return Err(bad(format!(
                    "value {v}: shape {:?} does not describe {len} elements with a batch",
                    t.shape
                )));
            }
            let mut b = self.take(dev, v, len)?;
            let r = dev
                .stream
                .memcpy_htod(&t.data, &mut b.slice_mut(0..len))
                .map_err(backend(format!("upload value {v}")));
            self.put(v, b);
            r?;
            env[v.index()] = Some(DevVal {
                shape: t.shape,
                buf: v,
            });
        }
        let fusions = model.relu_fusions();
        let mut skip = false;
        for (i, node) in model.nodes.iter().enumerate().skip(start.index()) {
            if skip {
                skip = false;
                continue;
            }
            let ins: Vec<DevVal> = node
                .inputs
                .iter()
                .map(|&v| {
                    env[v.index()].clone().ok_or_else(|| {
                        bad(format!("value {v} needed by node {} is missing", node.name))
                    })
                })
                .collect::<Result<_, _>>()?;
            let shape = out_shape(&node.op, &ins[0].shape, ins.get(1).map(|v| &v.shape[..]))
                .map_err(|e| bad(format!("node {} ({}): {e}", node.name, node.op.kind())))?;
            // A node marked by the fusion pass (`Model::relu_fusions`) applies the ReLU after it
            // in its bias pass (max(v + b, 0) either way, as the CPU executor fuses).
            let fuse_relu = fusions[i];
            let out = self
                .node(dev, i, &node.op, &ins, &shape, fuse_relu)
                .map_err(|e| match e {
                    AccelError::Backend(m) => {
                        AccelError::Backend(format!("node {} ({}): {m}", node.name, node.op.kind()))
                    }
                    e => e,
                })?;
            env[node.output.index()] = Some(out.clone());
            if fuse_relu {
                // The fused ReLU's output (the next node's).
                env[node.output.index() + 1] = Some(out);
                skip = true;
            }
        }
        let out = env[model.output.index()]
            .take()
            .ok_or_else(|| bad("the model output was not computed"))?;
        let len = out.len();
        let data = dev
            .stream
            .clone_dtoh(&self.buf(&out)?.slice(0..len))
            .map_err(backend("download the tail output"))?;
        Tensor::new(out.shape, data).map_err(|e| AccelError::Backend(e.to_string()))
    }

    /// Computes one node into its own buffer (or relabels, for Flatten/Reshape).
    fn node(
        &mut self,
        dev: &Device,
        i: usize,
        op: &Op,
        ins: &[DevVal],
        shape: &[usize],
        relu: bool,
    ) -> Result<DevVal, AccelError> {
        let out_id = NodeId::new(i).output();
        let x = &ins[0];
        let n_out: usize = shape.iter().product();
        if matches!(op, Op::Flatten | Op::Reshape(_)) {
            return Ok(DevVal {
                shape: shape.to_vec(),
                buf: x.buf,
            });
        }
        let mut out = self.take(dev, out_id, n_out)?;
        let r = self.compute(dev, i, op, ins, shape, relu, &mut out);
        self.put(out_id, out);
        r?;
        Ok(DevVal {
            shape: shape.to_vec(),
            buf: out_id,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn compute(
        &mut self,
        dev: &Device,
        i: usize,
        op: &Op,
        ins: &[DevVal],
        shape: &[usize],
        relu: bool,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), AccelError> {
        let x = &ins[0];
        let n_out: usize = shape.iter().product();
        let n64 = n_out as i64;
        match op {
            Op::Conv(c) => self.conv(dev, i, c, x, out, relu),
            Op::Dense(d) => {
                let NodeParams::Dense { w, b } = &self.params[i] else {
                    return Err(AccelError::Backend("dense weights not uploaded".into()));
                };
                let batch = i32_of(x.shape[0], "batch")?;
                let (in_f, out_f) = (i32_of(d.in_f, "in_f")?, i32_of(d.out_f, "out_f")?);
                // Row-major out[N × out_f] = x[N × in_f] · Wᵀ is, column-major,
                // out (out_f × N) = op(W: in_f × out_f)ᵀ · x (in_f × N).
                let cfg = GemmConfig {
                    transa: blas_sys::cublasOperation_t::CUBLAS_OP_T,
                    transb: blas_sys::cublasOperation_t::CUBLAS_OP_N,
                    m: out_f,
                    n: batch,
                    k: in_f,
                    alpha: 1.0f32,
                    lda: in_f,
                    ldb: in_f,
                    beta: 0.0f32,
                    ldc: out_f,
                };
                let xb = self.buf(x)?;
                // SAFETY: W holds out_f·in_f, x holds N·in_f (checked by out_shape), out holds
                // N·out_f elements.
                unsafe { dev.blas.gemm(cfg, w, xb, out) }.map_err(backend("SGEMM (dense)"))?;
                dev.after("SGEMM (dense)")?;
                let (ch, plane, act) = (out_f, 1i64, relu as i32);
                launch!(
                    dev,
                    bias_act,
                    n_out,
                    [&mut *out, b, &n64, &ch, &plane, &act]
                );
                Ok(())
            }
            Op::Relu | Op::Clip { .. } => {
                let (lo, hi) = match op {
                    Op::Clip { min, max } => (*min, *max),
                    _ => (0.0f32, f32::INFINITY),
                };
                let xb = self.buf(x)?;
                launch!(dev, clip_f32, n_out, [xb, &mut *out, &n64, &lo, &hi]);
                Ok(())
            }
            Op::BatchNorm { .. } => {
                let NodeParams::BatchNorm { scale, shift } = &self.params[i] else {
                    return Err(AccelError::Backend(
                        "batch norm parameters not uploaded".into(),
                    ));
                };
                let ch = i32_of(x.shape[1], "channels")?;
                let plane = (n_out / (x.shape[0] * x.shape[1]).max(1)) as i64;
                let xb = self.buf(x)?;
                launch!(
                    dev,
                    batchnorm_f32,
                    n_out,
                    [xb, &mut *out, scale, shift, &n64, &ch, &plane]
                );
                Ok(())
            }
            Op::MaxPool(p) | Op::AvgPool(p) => {
                let mode = matches!(op, Op::AvgPool(_)) as i32;
                pool(dev, self.buf(x)?, out, &x.shape, shape, p, mode)
            }
            Op::GlobalAvgPool => {
                let planes = i32_of(x.shape[0] * x.shape[1], "planes")?;
                let hw = (x.shape[2] * x.shape[3]) as i64;
                let xb = self.buf(x)?;
                launch!(
                    dev,
                    global_avg_f32,
                    planes as usize,
                    [xb, &mut *out, &planes, &hw]
                );
                Ok(())
            }
            Op::Add => {
                let (a, b) = (self.buf(&ins[0])?, self.buf(&ins[1])?);
                launch!(dev, add_f32, n_out, [a, b, &mut *out, &n64]);
                Ok(())
            }
            Op::Softmax => {
                let len = *x.shape.last().unwrap_or(&1);
                let rows = i32_of(n_out / len.max(1), "softmax rows")?;
                let len = i32_of(len, "softmax row length")?;
                let xb = self.buf(x)?;
                launch!(
                    dev,
                    softmax_f32,
                    rows as usize,
                    [xb, &mut *out, &rows, &len]
                );
                Ok(())
            }
            // Handled by `node` (no data movement).
            Op::Flatten | Op::Reshape(_) => Ok(()),
            other => Err(crate::support::unsupported(other, i)),
        }
    }

    /// Convolution + bias (+ ReLU): im2col per chunk of images and per group, then one
    /// strided-batched SGEMM over the chunk's images; 1×1 stride-1 unpadded convolutions read
    /// the input directly.
    fn conv(
        &mut self,
        dev: &Device,
        i: usize,
        c: &Conv,
        x: &DevVal,
        out: &mut CudaSlice<f32>,
        relu: bool,
    ) -> Result<(), AccelError> {
        let (n, h, w) = (x.shape[0], x.shape[2], x.shape[3]);
        let g = ConvGeom::new(c, h, w).map_err(|e| bad(e.to_string()))?;
        let k = g.k();
        let npix = g.oh * g.ow;
        let (ipg, opg) = (g.in_c / g.groups, g.out_c / g.groups);
        let (in_len, out_len) = (g.in_len(), g.out_len());
        let pointwise = g.kh == 1 && g.kw == 1 && g.stride == [1, 1] && g.pads == [0; 4];
        let per_image = k * npix;
        let chunk = (COLS_CAP / per_image.max(1)).clamp(1, n);
        if !pointwise {
            let need = chunk * per_image;
            if self.cols.as_ref().is_none_or(|b| b.len() < need) {
                self.cols = None; // free first: the new buffer may be large
                self.cols = Some(dev.alloc::<f32>(need, "im2col buffer")?);
            }
        }
        let NodeParams::Conv { w: wt, b: bias } = &self.params[i] else {
            return Err(AccelError::Backend("conv weights not uploaded".into()));
        };
        let xb = self.bufs[x.buf.index()]
            .as_ref()
            .ok_or_else(|| AccelError::Backend(format!("buffer {} is missing", x.buf)))?;
        let m = i32_of(npix, "output pixels")?;
        let nn = i32_of(opg, "output channels per group")?;
        let kk = i32_of(k, "K")?;
        let ints = [
            g.in_c,
            g.h,
            g.w,
            g.kh,
            g.kw,
            g.stride[0],
            g.stride[1],
            g.pads[0],
            g.pads[1],
        ];
        let ints: Vec<i32> = ints
            .iter()
            .map(|&v| i32_of(v, "conv size"))
            .collect::<Result<_, _>>()?;
        let (oh, ow, groups) = (
            i32_of(g.oh, "oh")?,
            i32_of(g.ow, "ow")?,
            i32_of(g.groups, "groups")?,
        );
        for b0 in (0..n).step_by(chunk) {
            let nb = chunk.min(n - b0);
            let nbi = i32_of(nb, "images per chunk")?;
            for grp in 0..g.groups {
                let gi = grp as i32;
                // out (npix × opg, column-major, ld npix) = A (npix × K) · B (K × opg):
                // A = the patch matrix cols[K][npix] (or the input channels, pointwise),
                // B = the group's weights W[opg][K], both read as column-major.
                let wv = wt.slice(grp * opg * k..);
                let mut ov = out.slice_mut(b0 * out_len + grp * opg * npix..);
                let cfg = |lda: i32, stride_a: usize| StridedBatchedConfig {
                    gemm: GemmConfig {
                        transa: blas_sys::cublasOperation_t::CUBLAS_OP_N,
                        transb: blas_sys::cublasOperation_t::CUBLAS_OP_N,
                        m,
                        n: nn,
                        k: kk,
                        alpha: 1.0f32,
                        lda,
                        ldb: kk,
                        beta: 0.0f32,
                        ldc: m,
                    },
                    batch_size: nbi,
                    stride_a: stride_a as i64,
                    stride_b: 0,
                    stride_c: out_len as i64,
                };
                if pointwise {
                    let xv = xb.slice(b0 * in_len + grp * ipg * npix..);
                    // SAFETY: nb images of in_len inputs and out_len outputs lie in the buffers
                    // (shapes checked by out_shape); the group's opg·K weights lie in W.
                    unsafe {
                        dev.blas
                            .gemm_strided_batched(cfg(m, in_len), &xv, &wv, &mut ov)
                    }
                    .map_err(backend("SGEMM (1×1 conv)"))?;
                } else {
                    let cols = self
                        .cols
                        .as_mut()
                        .ok_or_else(|| AccelError::Backend("im2col buffer missing".into()))?;
                    let xv = xb.slice(b0 * in_len..);
                    let [in_c, hh, ww, kh, kw, sy, sx, pt, pl] = ints[..] else {
                        unreachable!("nine sizes")
                    };
                    launch!(
                        dev,
                        im2col_f32,
                        nb * per_image,
                        [
                            &xv, &mut *cols, &nbi, &in_c, &hh, &ww, &kh, &kw, &sy, &sx, &pt, &pl,
                            &oh, &ow, &groups, &gi
                        ]
                    );
                    // SAFETY: cols holds nb·K·npix patches; see above for W and out.
                    unsafe {
                        dev.blas
                            .gemm_strided_batched(cfg(m, per_image), &*cols, &wv, &mut ov)
                    }
                    .map_err(backend("SGEMM (conv)"))?;
                }
                dev.after("SGEMM (conv)")?;
            }
        }
        let total = (n * out_len) as i64;
        let (ch, plane, act) = (i32_of(g.out_c, "out_c")?, npix as i64, relu as i32);
        launch!(
            dev,
            bias_act,
            n * out_len,
            [&mut *out, bias, &total, &ch, &plane, &act]
        );
        Ok(())
    }
}

fn pool(
    dev: &Device,
    x: &CudaSlice<f32>,
    out: &mut CudaSlice<f32>,
    xs: &[usize],
    ys: &[usize],
    p: &Pool,
    mode: i32,
) -> Result<(), AccelError> {
    let planes = i32_of(xs[0] * xs[1], "planes")?;
    let v = [
        xs[2],
        xs[3],
        ys[2],
        ys[3],
        p.kernel[0],
        p.kernel[1],
        p.stride[0],
        p.stride[1],
        p.pads[0],
        p.pads[1],
    ];
    let v: Vec<i32> = v
        .iter()
        .map(|&s| i32_of(s, "pool size"))
        .collect::<Result<_, _>>()?;
    let [h, w, oh, ow, kh, kw, sy, sx, pt, pl] = v[..] else {
        unreachable!("ten sizes")
    };
    let cip = p.count_include_pad as i32;
    let n = ys.iter().product();
    launch!(
        dev,
        pool_f32,
        n,
        [x, &mut *out, &planes, &h, &w, &oh, &ow, &kh, &kw, &sy, &sx, &pt, &pl, &mode, &cip]
    );
    Ok(())
}

/// The output shape of `op` on inputs of these shapes (batch first), with every check the
/// kernels rely on to stay in bounds. Mirrors `origami_model`'s shape inference.
pub(crate) fn out_shape(op: &Op, x: &[usize], y: Option<&[usize]>) -> Result<Vec<usize>, String> {
    let nchw = || -> Result<(usize, usize, usize, usize), String> {
        match *x {
            [n, c, h, w] => Ok((n, c, h, w)),
            _ => Err(format!("expects a 4-D NCHW input, got {x:?}")),
        }
    };
    if x.is_empty() || x[0] == 0 {
        return Err(format!("input {x:?} has no batch"));
    }
    Ok(match op {
        Op::Conv(c) => {
            let (n, ch, h, w) = nchw()?;
            if ch != c.in_c {
                return Err(format!(
                    "input has {ch} channels, weights expect {}",
                    c.in_c
                ));
            }
            let (oh, ow) = c.out_hw(h, w).map_err(|e| e.to_string())?;
            vec![n, c.out_c, oh, ow]
        }
        Op::Dense(d) => {
            if x.len() != 2 || x[1] != d.in_f {
                return Err(format!("expects [N, {}], got {x:?}", d.in_f));
            }
            vec![x[0], d.out_f]
        }
        Op::Relu | Op::Clip { .. } | Op::Softmax => x.to_vec(),
        Op::BatchNorm { scale, shift } => {
            if x.len() < 2 || scale.len() != x[1] || shift.len() != x[1] {
                return Err(format!(
                    "{} channel parameters for input {x:?}",
                    scale.len()
                ));
            }
            x.to_vec()
        }
        Op::MaxPool(p) | Op::AvgPool(p) => {
            let (n, c, h, w) = nchw()?;
            let (oh, ow) = p.out_hw(h, w).map_err(|e| e.to_string())?;
            vec![n, c, oh, ow]
        }
        Op::GlobalAvgPool => {
            let (n, c, _, _) = nchw()?;
            vec![n, c, 1, 1]
        }
        Op::Flatten => vec![x[0], x[1..].iter().product()],
        Op::Reshape(d) => {
            if x[1..].iter().product::<usize>() != d.iter().product::<usize>() {
                return Err(format!("cannot reshape {x:?} to [N, {d:?}]"));
            }
            let mut s = vec![x[0]];
            s.extend_from_slice(d);
            s
        }
        Op::Add => {
            let y = y.ok_or("Add takes two inputs")?;
            if x != y {
                return Err(format!("operands have different shapes {x:?} and {y:?}"));
            }
            x.to_vec()
        }
        other => {
            return Err(format!(
                "operator {} is not supported by the CUDA tail",
                other.kind()
            ))
        }
    })
}

/// The values handed to a tail from `start` must exist and be computed before it (the CPU
/// accelerator's rule); a value the tail needs but was not given is reported by `run`.
pub(crate) fn check_handoff(
    model: &Model,
    start: NodeId,
    values: &[(ValueId, Tensor)],
) -> Result<(), AccelError> {
    for (v, _) in values {
        if v.index() >= model.num_values() || v.index() > start.index() {
            return Err(bad(format!(
                "value {v} cannot feed a tail starting at node {start}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use origami_model::zoo;

    #[test]
    fn out_shape_agrees_with_model_validation() {
        for model in [zoo::resnet_small(), zoo::vgg16(32), zoo::small()] {
            let shapes = model.validate().unwrap();
            for (i, n) in model.nodes.iter().enumerate() {
                let x = &shapes[n.inputs[0].index()];
                let y = n.inputs.get(1).map(|&v| &shapes[v.index()][..]);
                assert_eq!(
                    out_shape(&n.op, x, y).unwrap(),
                    shapes[i + 1],
                    "node {}",
                    n.name
                );
                // A larger batch only changes the first dimension.
                let mut xb = x.clone();
                xb[0] = 5;
                let yb = y.map(|s| {
                    let mut s = s.to_vec();
                    s[0] = 5;
                    s
                });
                let got = out_shape(&n.op, &xb, yb.as_deref()).unwrap();
                assert_eq!(got[0], 5);
                assert_eq!(got[1..], shapes[i + 1][1..]);
            }
        }
    }

    #[test]
    fn out_shape_rejects_mismatches() {
        let m = zoo::resnet_small();
        let conv = &m.nodes[0].op;
        assert!(out_shape(conv, &[1, 4, 32, 32], None).is_err());
        assert!(out_shape(conv, &[1, 3, 32], None).is_err());
        assert!(out_shape(conv, &[0, 3, 32, 32], None).is_err());
        assert!(out_shape(&Op::Add, &[1, 2], Some(&[1, 3])).is_err());
        let dense = m
            .nodes
            .iter()
            .find(|n| matches!(n.op, Op::Dense(_)))
            .unwrap();
        assert!(out_shape(&dense.op, &[1, 31], None).is_err());
        assert!(out_shape(&Op::Reshape(vec![3, 3]), &[1, 10], None).is_err());
    }
}
