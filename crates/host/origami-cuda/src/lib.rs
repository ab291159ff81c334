//! The CUDA accelerator: exact field layers as int8-limb GEMMs on the tensor cores, the plain tail
//! in f32 with cuBLAS and NVRTC kernels.
//!
//! Built on cudarc with dynamic loading: this crate compiles on a machine with no CUDA at all,
//! and the driver, cuBLAS and NVRTC libraries are opened at run time. Where they (or a GPU) are
//! missing, [`CudaAccelerator::new`] returns `AccelError::Unavailable` with the reason and
//! [`available`] says why; nothing panics.
//!
//! * Field layers (`field_linear`): see [`limbs`] for the scheme and the overflow proofs. Per
//!   call: copy x̄ (u32, pinned staging) → im2col + limb split kernel → one batched int8 GEMM per
//!   K chunk (`cublasGemmStridedBatchedEx`, int32 accumulation) → recombine + reduce mod p kernel
//!   → u32 back (pinned). All device buffers are allocated at `prepare`.
//! * The tail (`run_tail`): see `tail.rs`. Float only; TF32 only with
//!   [`CudaOptions::tf32_tail`], which never touches field data (the int8 GEMMs compute in int32
//!   whatever the cuBLAS math mode).
//!
//! Debugging on the GPU machine: `ORIGAMI_CUDA_SYNC=1` synchronizes after every kernel and GEMM
//! so a fault names its step; errors carry the node or layer they happened in.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaSlice, PinnedHostSlice};

use origami_accel::{AccelError, Accelerator, FieldLayer};
use origami_model::{Model, NodeId, Tensor, ValueId};

mod device;
#[cfg(test)]
mod emu;
pub mod limbs;
pub mod support;
mod tail;

use device::{backend, launch, Device};
use limbs::{FieldPlan, I8Gemm, P};
use tail::Tail;

pub use device::{compile_kernels, kernel_source, nvrtc_present, KERNEL_NAMES};

/// Options of the CUDA accelerator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CudaOptions {
    /// Let cuBLAS use TF32 tensor cores for the float tail's GEMMs (faster, ~10 bits of
    /// mantissa). Never affects field layers. Off by default.
    pub tf32_tail: bool,
}

/// Runs `f`, turning a panic inside cudarc (a missing library symbol, say) into an error.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(format!("{what} panicked: {msg}"))
        }
    }
}

/// Whether the CUDA libraries this backend loads at run time can be opened.
fn libraries() -> Result<(), String> {
    // SAFETY: these only try to dlopen the libraries by name (and close them again).
    let (driver, blas, nvrtc) = unsafe {
        (
            cudarc::driver::sys::is_culib_present(),
            cudarc::cublas::sys::is_culib_present(),
            cudarc::nvrtc::sys::is_culib_present(),
        )
    };
    if !driver {
        return Err(
            "the NVIDIA driver library libcuda.so cannot be loaded (no driver here)".into(),
        );
    }
    let hint = "add the CUDA 13 libraries to LD_LIBRARY_PATH, e.g. /usr/local/cuda/lib64";
    if !blas {
        return Err(format!("cuBLAS (libcublas.so.13) cannot be loaded: {hint}"));
    }
    if !nvrtc {
        return Err(format!("NVRTC (libnvrtc.so.13) cannot be loaded: {hint}"));
    }
    Ok(())
}

fn device_count() -> Result<usize, String> {
    guarded("cuInit", || {
        CudaContext::device_count()
            .map(|n| n.max(0) as usize)
            .map_err(|e| format!("the CUDA driver found no usable device: {e:?}"))
    })
}

/// Whether a CUDA GPU can be used: `Ok("cuda:0 (NVIDIA H100 …, sm_90, 80 GiB; 1 device)")` or
/// `Err(reason)`. Cheap enough for a test's first line; opens no cuBLAS handle.
pub fn available() -> Result<String, String> {
    libraries()?;
    let n = device_count()?;
    if n == 0 {
        return Err("the CUDA driver reports no device".into());
    }
    guarded("device query", || {
        let ctx = CudaContext::new(0).map_err(|e| format!("cannot open cuda:0: {e:?}"))?;
        let name = ctx.name().map_err(|e| format!("{e:?}"))?;
        let (maj, min) = ctx.compute_capability().map_err(|e| format!("{e:?}"))?;
        let gib = ctx.total_mem().map_err(|e| format!("{e:?}"))? as f64 / (1u64 << 30) as f64;
        Ok(format!(
            "cuda:0 ({name}, sm_{maj}{min}, {gib:.0} GiB; {n} device{})",
            if n == 1 { "" } else { "s" }
        ))
    })
}

/// One field layer on the device.
struct FieldGpu {
    plan: FieldPlan,
    gemms: Vec<I8Gemm>,
    /// Packed int8 weight limbs (A).
    a: CudaSlice<i8>,
    /// The blinded input and the reduced output of one image.
    x: CudaSlice<u32>,
    y: CudaSlice<u32>,
    /// Page-locked staging for the copies (None where the driver refused to pin).
    pin_in: Option<PinnedHostSlice<u32>>,
    pin_out: Option<PinnedHostSlice<u32>>,
}

/// What `prepare` builds.
struct Prepared {
    model: Arc<Model>,
    field: HashMap<u16, FieldGpu>,
    /// Scratch shared by the field layers (one stream: never two layers at once): the B
    /// operand (int8 digits) and the C results (int32), sized for the largest layer.
    b: CudaSlice<i8>,
    c: CudaSlice<i32>,
    tail: Tail,
}

/// The CUDA accelerator (one GPU, one stream).
pub struct CudaAccelerator {
    prepared: Option<Prepared>,
    opts: CudaOptions,
    dev: Device,
}

impl CudaAccelerator {
    /// Opens GPU `device_ordinal` with default options (no TF32). `AccelError::Unavailable` with
    /// the reason when there is no driver, library or device; `Backend` when the device is
    /// there but fails (kernel compilation, cuBLAS).
    pub fn new(device_ordinal: usize) -> Result<Self, AccelError> {
        Self::with_options(device_ordinal, CudaOptions::default())
    }

    /// [`CudaAccelerator::new`] with options.
    pub fn with_options(device_ordinal: usize, opts: CudaOptions) -> Result<Self, AccelError> {
        let unavailable = |r: String| AccelError::Unavailable(format!("no CUDA driver/GPU: {r}"));
        libraries().map_err(unavailable)?;
        let n = device_count().map_err(unavailable)?;
        if device_ordinal >= n {
            return Err(unavailable(format!(
                "no device cuda:{device_ordinal} (the driver reports {n})"
            )));
        }
        let dev = guarded("opening the device", || {
            Device::open(device_ordinal, opts.tf32_tail).map_err(|e| e.to_string())
        })
        .map_err(AccelError::Backend)?;
        Ok(Self {
            prepared: None,
            opts,
            dev,
        })
    }

    /// The options this accelerator was opened with.
    pub fn options(&self) -> CudaOptions {
        self.opts
    }
}

impl Accelerator for CudaAccelerator {
    fn name(&self) -> String {
        if self.opts.tf32_tail {
            format!("{} [tf32 tail]", self.dev.label)
        } else {
            self.dev.label.clone()
        }
    }

    fn prepare(
        &mut self,
        model: Arc<Model>,
        field_layers: &[FieldLayer],
    ) -> Result<(), AccelError> {
        // Everything that can be checked on the host first, so a bad call leaves the previous
        // state in place (as the CPU accelerator does).
        model
            .validate()
            .map_err(|e| AccelError::BadInput(e.to_string()))?;
        // A head ends just before a linear layer (or at the end), so the tail starts at the
        // linear layer after the last blinded one: refuse, naming it, an operator from there on
        // that the CUDA tail has no kernel for (the enclave runs the head's own).
        let tail_from = match field_layers.iter().map(|l| l.layer).max() {
            None => NodeId::new(0),
            Some(last) => model
                .linear_nodes()
                .get(usize::from(last) + 1)
                .copied()
                .unwrap_or(model.end()),
        };
        support::check_supported(&model, tail_from)?;
        let mut plans = Vec::with_capacity(field_layers.len());
        for l in field_layers {
            l.check_exact()?;
            let plan = FieldPlan::new(&l.shape, &l.weight)
                .map_err(|e| AccelError::BadInput(format!("layer {}: {e}", l.layer)))?;
            plans.push((l, plan));
        }
        self.prepared = None; // free the old buffers before allocating the new ones
        let dev = &self.dev;
        let mut field = HashMap::new();
        let (mut b_len, mut c_len) = (1, 1);
        for (l, plan) in plans {
            b_len = b_len.max(plan.b_len());
            c_len = c_len.max(plan.c_len());
            let (in_len, out_len) = (plan.geom.in_len(), plan.geom.out_len());
            let a = dev
                .stream
                .clone_htod(&plan.pack_weights(&l.weight))
                .map_err(backend(format!("upload field layer {}", l.layer)))?;
            // SAFETY (both): staging buffers, always written before they are read.
            let pin_in = unsafe { dev.ctx.alloc_pinned_with_flags::<u32>(in_len, 0) }.ok();
            let pin_out = unsafe { dev.ctx.alloc_pinned_with_flags::<u32>(out_len, 0) }.ok();
            field.insert(
                l.layer,
                FieldGpu {
                    gemms: plan.gemms(),
                    a,
                    x: dev.alloc(in_len, "field input")?,
                    y: dev.alloc(out_len, "field output")?,
                    pin_in,
                    pin_out,
                    plan,
                },
            );
        }
        let b = dev.alloc(b_len, "field B operand")?;
        let c = dev.alloc(c_len, "field C results")?;
        let tail = Tail::upload(dev, &model)?;
        dev.sync()?;
        self.prepared = Some(Prepared {
            model,
            field,
            b,
            c,
            tail,
        });
        Ok(())
    }

    fn field_linear(&mut self, layer: u16, blinded: &[u32]) -> Result<Vec<u32>, AccelError> {
        let p = self.prepared.as_mut().ok_or(AccelError::NotPrepared)?;
        let l = p
            .field
            .get_mut(&layer)
            .ok_or(AccelError::UnknownLayer(layer))?;
        let plan = l.plan;
        let g = plan.geom;
        if blinded.len() != g.in_len() {
            return Err(AccelError::BadInput(format!(
                "layer {layer}: {} input elements, expected {}",
                blinded.len(),
                g.in_len()
            )));
        }
        if blinded.iter().any(|&v| v >= P) {
            return Err(AccelError::BadInput(format!(
                "layer {layer}: input is not reduced mod p"
            )));
        }
        let dev = &self.dev;
        let ctx = |what: &str| format!("field layer {layer}: {what}");
        // Work of an earlier call that failed half-way may still be queued.
        dev.sync()?;
        match l.pin_in.as_mut() {
            Some(pin) => {
                pin.as_mut_slice()
                    .map_err(backend(ctx("pinned input")))?
                    .copy_from_slice(blinded);
                dev.stream.memcpy_htod(pin, &mut l.x)
            }
            None => dev.stream.memcpy_htod(blinded, &mut l.x),
        }
        .map_err(backend(ctx("upload")))?;
        let i = |v: usize| v as i32; // FieldPlan::new checked that every size fits an i32
        let (in_c, h, w, kh, kw) = (i(g.in_c), i(g.h), i(g.w), i(g.kh), i(g.kw));
        let (sy, sx, pt, pl, ow) = (
            i(g.stride[0]),
            i(g.stride[1]),
            i(g.pads[0]),
            i(g.pads[1]),
            i(g.ow),
        );
        let (groups, k, kp, npix, pp) =
            (i(g.groups), i(plan.k), i(plan.kp), i(plan.npix), i(plan.pp));
        let (out_c, mp, lw, chunks) = (i(g.out_c), i(plan.mp), i(plan.lw), i(plan.chunks));
        launch!(
            dev,
            field_im2col_limbs,
            plan.geom.groups * plan.pp * plan.kp,
            [
                &l.x, &mut p.b, &in_c, &h, &w, &kh, &kw, &sy, &sx, &pt, &pl, &ow, &groups, &k, &kp,
                &npix, &pp
            ]
        );
        for gm in &l.gemms {
            dev.i8_gemm(gm, &l.a, &p.b, &mut p.c)
                .map_err(|e| AccelError::Backend(ctx(&e.to_string())))?;
        }
        launch!(
            dev,
            field_reduce,
            g.out_len(),
            [&p.c, &mut l.y, &out_c, &groups, &npix, &pp, &mp, &lw, &chunks]
        );
        match l.pin_out.as_mut() {
            Some(pin) => {
                dev.stream
                    .memcpy_dtoh(&l.y, pin)
                    .map_err(backend(ctx("download")))?;
                dev.sync()
                    .map_err(|e| AccelError::Backend(ctx(&e.to_string())))?;
                Ok(pin
                    .as_slice()
                    .map_err(backend(ctx("pinned output")))?
                    .to_vec())
            }
            None => {
                let v = dev
                    .stream
                    .clone_dtoh(&l.y.slice(0..g.out_len()))
                    .map_err(backend(ctx("download")))?;
                dev.sync()?;
                Ok(v)
            }
        }
    }

    fn run_tail(
        &mut self,
        start: NodeId,
        values: Vec<(ValueId, Tensor)>,
    ) -> Result<Tensor, AccelError> {
        let p = self.prepared.as_mut().ok_or(AccelError::NotPrepared)?;
        let model = p.model.clone();
        if start > model.end() {
            return Err(AccelError::BadInput(format!(
                "tail start {start} is past the model"
            )));
        }
        tail::check_handoff(&model, start, &values)?;
        if start == model.end() {
            return values
                .into_iter()
                .find(|(v, _)| *v == model.output)
                .map(|(_, t)| t)
                .ok_or_else(|| AccelError::BadInput("the output value was not given".into()));
        }
        p.tail.run(&self.dev, &model, start, values)
    }

    fn synchronize(&mut self) -> Result<(), AccelError> {
        self.dev.sync()
    }
}
