//! The device: one CUDA context, one stream, one cuBLAS handle and the NVRTC-compiled kernels.
//!
//! Everything runs in order on one stream, so cudarc's per-buffer event tracking is switched off
//! (it only matters across streams); host code synchronizes the stream before it reads results
//! or rewrites a pinned staging buffer.

use std::ffi::c_void;
use std::fmt::Debug;
use std::sync::Arc;

use cudarc::cublas::{sys as blas_sys, CudaBlas};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DevicePtrMut,
    LaunchConfig,
};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileError, CompileOptions, Ptx};

use origami_accel::AccelError;

use crate::limbs::{I8Gemm, INPUT_LIMBS, LIMB_OFFSET, LIMB_THRESHOLD, MAX_TERMS, P};

/// Threads per block for every kernel (all are grid-stride loops).
const BLOCK: u32 = 256;
/// Most blocks per launch; the grid-stride loops cover the rest.
const MAX_BLOCKS: usize = 1 << 20;

/// Maps any CUDA-side error to `AccelError::Backend` with what was being done.
pub(crate) fn backend<E: Debug>(what: impl Into<String>) -> impl FnOnce(E) -> AccelError {
    let what = what.into();
    move |e| AccelError::Backend(format!("{what}: {e:?}"))
}

/// The kernel source as NVRTC compiles it: the field constants (from the Rust definitions, so
/// the two can never disagree) followed by `kernels.cu`.
pub fn kernel_source() -> String {
    format!(
        "#define FIELD_P {p}\n#define LIMB_OFFSET {off}\n#define LIMB_THRESHOLD {thr}u\n\
         #define MAX_TERMS {terms}\n#define INPUT_LIMBS {limbs}\n{body}",
        p = P,
        off = LIMB_OFFSET,
        thr = LIMB_THRESHOLD,
        terms = MAX_TERMS,
        limbs = INPUT_LIMBS,
        body = include_str!("kernels.cu")
    )
}

/// Declares the kernels once: the `Kernels` struct, its loader and [`KERNEL_NAMES`].
macro_rules! kernels {
    ($($name:ident),* $(,)?) => {
        /// Every kernel of `kernels.cu`, loaded once.
        pub(crate) struct Kernels {
            $(pub $name: CudaFunction,)*
        }

        /// The entry points `kernels.cu` must export (`extern "C"`), as the device loads them.
        pub const KERNEL_NAMES: &[&str] = &[$(stringify!($name)),*];

        impl Kernels {
            fn load(module: &Arc<CudaModule>) -> Result<Self, AccelError> {
                Ok(Self {
                    $($name: module
                        .load_function(stringify!($name))
                        .map_err(backend(concat!("kernel ", stringify!($name))))?,)*
                })
            }
        }
    };
}

kernels!(
    field_im2col_limbs,
    field_reduce,
    im2col_f32,
    bias_act,
    clip_f32,
    batchnorm_f32,
    pool_f32,
    global_avg_f32,
    add_f32,
    softmax_f32,
);

/// Whether NVRTC (`libnvrtc.so.13`) can be loaded; no GPU or driver is needed for it.
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the library by name.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Compiles [`kernel_source`] with NVRTC exactly as the device does and returns the PTX text.
/// Needs only NVRTC, not a GPU, so the compile can be checked anywhere the library is.
pub fn compile_kernels() -> Result<String, String> {
    compile_ptx().map(|p| p.to_src())
}

fn compile_ptx() -> Result<Ptx, String> {
    if !nvrtc_present() {
        return Err("NVRTC (libnvrtc.so.13) cannot be loaded; add it to LD_LIBRARY_PATH".into());
    }
    let opts = CompileOptions {
        // No contraction of a·b + c into an FMA: the tail's elementwise kernels then round
        // exactly as the CPU executor does. No fast math anywhere.
        fmad: Some(false),
        name: Some("origami_kernels.cu".into()),
        ..Default::default()
    };
    compile_ptx_with_opts(kernel_source(), opts).map_err(|e| match e {
        CompileError::CompileError { log, .. } => format!(
            "NVRTC failed to compile kernels.cu:\n{}",
            log.to_string_lossy()
        ),
        other => format!("NVRTC failed to compile kernels.cu: {other:?}"),
    })
}

pub(crate) struct Device {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub blas: CudaBlas,
    pub k: Kernels,
    /// `cuda:N (name)`.
    pub label: String,
    /// `ORIGAMI_CUDA_SYNC=1`: synchronize after every launch, so an asynchronous fault is
    /// reported against the kernel or GEMM that caused it (slow; for debugging).
    pub debug_sync: bool,
}

/// The launch shape for a grid-stride kernel over `n` items.
pub(crate) fn launch_cfg(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(BLOCK as usize).clamp(1, MAX_BLOCKS) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Launches `kernel` over `n` items with the given arguments (each a reference that outlives the
/// launch: bind scalars to locals first), then runs the debug synchronization if enabled.
macro_rules! launch {
    ($dev:expr, $kernel:ident, $n:expr, [$($arg:expr),* $(,)?]) => {{
        use cudarc::driver::PushKernelArg as _;
        let dev: &$crate::device::Device = $dev;
        let mut builder = dev.stream.launch_builder(&dev.k.$kernel);
        $( builder.arg($arg); )*
        // SAFETY: the arguments match the kernel's parameter list in kernels.cu, in order and
        // type (i32 ↔ int, i64 ↔ long long, f32 ↔ float, device buffers ↔ pointers); the
        // buffers were sized by the caller for the index ranges the kernel touches (the same
        // ranges the CPU emulation tests run through).
        unsafe { builder.launch($crate::device::launch_cfg($n)) }
            .map_err($crate::device::backend(concat!("launch ", stringify!($kernel))))?;
        dev.after(stringify!($kernel))?;
    }};
}
pub(crate) use launch;

impl Device {
    /// Opens device `ordinal`: context, stream, cuBLAS (math mode: TF32 only when asked, and
    /// only float GEMMs are affected: the int8 GEMMs compute in int32), kernels.
    pub fn open(ordinal: usize, tf32_tail: bool) -> Result<Self, AccelError> {
        let ctx = CudaContext::new(ordinal).map_err(backend(format!("open cuda:{ordinal}")))?;
        // SAFETY: this accelerator uses a single stream; ordering on it replaces the per-buffer
        // events (see the module docs). Set before any buffer is allocated.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(backend("create stream"))?;
        let name = ctx
            .name()
            .unwrap_or_else(|e| format!("unknown device ({e:?})"));
        let blas = CudaBlas::new(stream.clone()).map_err(backend("create cuBLAS handle"))?;
        let mode = if tf32_tail {
            blas_sys::cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH
        } else {
            blas_sys::cublasMath_t::CUBLAS_DEFAULT_MATH
        };
        // SAFETY: a valid handle and a valid enum value.
        unsafe { blas_sys::cublasSetMathMode(*blas.handle(), mode) }
            .result()
            .map_err(backend("cublasSetMathMode"))?;
        let ptx = compile_ptx().map_err(AccelError::Backend)?;
        let module = ctx.load_module(ptx).map_err(backend("load PTX module"))?;
        let k = Kernels::load(&module)?;
        Ok(Self {
            ctx,
            stream,
            blas,
            k,
            label: format!("cuda:{ordinal} ({name})"),
            debug_sync: std::env::var("ORIGAMI_CUDA_SYNC").is_ok_and(|v| v == "1"),
        })
    }

    /// After each launch: with `ORIGAMI_CUDA_SYNC=1`, wait and name the failing step.
    pub fn after(&self, what: &str) -> Result<(), AccelError> {
        if self.debug_sync {
            self.stream
                .synchronize()
                .map_err(backend(format!("after {what} (ORIGAMI_CUDA_SYNC)")))?;
        }
        Ok(())
    }

    pub fn sync(&self) -> Result<(), AccelError> {
        self.stream
            .synchronize()
            .map_err(backend("stream synchronize"))
    }

    /// An uninitialized device buffer of `len` elements (at least 1).
    pub fn alloc<T: cudarc::driver::DeviceRepr>(
        &self,
        len: usize,
        what: &str,
    ) -> Result<CudaSlice<T>, AccelError> {
        // SAFETY: every buffer is fully written by a copy or a kernel before it is read.
        unsafe { self.stream.alloc::<T>(len.max(1)) }.map_err(backend(format!(
            "allocate {what} ({len} × {} bytes)",
            std::mem::size_of::<T>()
        )))
    }

    /// One batched int8 GEMM: `C = Aᵀ·B` per batch entry, int32 accumulation (exact under the
    /// bound in `limbs.rs`), through `cublasGemmStridedBatchedEx` with `CUBLAS_COMPUTE_32I`.
    pub fn i8_gemm(
        &self,
        g: &I8Gemm,
        a: &CudaSlice<i8>,
        b: &CudaSlice<i8>,
        c: &mut CudaSlice<i32>,
    ) -> Result<(), AccelError> {
        // Bounds, checked here so a layout bug is an error and never an out-of-bounds access.
        let last = |off: usize, stride: i64, ld: i32, cols: i32, rows: i32| {
            off + (g.batch as usize - 1) * stride as usize
                + (cols as usize - 1) * ld as usize
                + rows as usize
        };
        let need_a = last(g.a_off, g.stride_a, g.lda, g.m, g.k);
        let need_b = last(g.b_off, g.stride_b, g.ldb, g.n, g.k);
        let need_c = last(g.c_off, g.stride_c, g.ldc, g.n, g.m);
        if need_a > a.len() || need_b > b.len() || need_c > c.len() {
            return Err(AccelError::Backend(format!(
                "int8 GEMM {g:?} exceeds its buffers (A {need_a}/{}, B {need_b}/{}, C {need_c}/{})",
                a.len(),
                b.len(),
                c.len()
            )));
        }
        let alpha: i32 = 1;
        let beta: i32 = 0;
        let (ap, _ga) = a.device_ptr(&self.stream);
        let (bp, _gb) = b.device_ptr(&self.stream);
        let (cp, _gc) = c.device_ptr_mut(&self.stream);
        // SAFETY: pointers and extents checked above; α, β are host int32 as COMPUTE_32I needs;
        // op(A) = T, op(B) = N with k, lda, ldb multiples of 4 (the tensor-core int8 path).
        unsafe {
            cudarc::cublas::result::gemm_strided_batched_ex(
                *self.blas.handle(),
                blas_sys::cublasOperation_t::CUBLAS_OP_T,
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                g.m,
                g.n,
                g.k,
                &alpha as *const i32 as *const c_void,
                (ap + g.a_off as u64) as *const c_void,
                blas_sys::cudaDataType::CUDA_R_8I,
                g.lda,
                g.stride_a,
                (bp + g.b_off as u64) as *const c_void,
                blas_sys::cudaDataType::CUDA_R_8I,
                g.ldb,
                g.stride_b,
                &beta as *const i32 as *const c_void,
                (cp + (g.c_off * 4) as u64) as *mut c_void,
                blas_sys::cudaDataType::CUDA_R_32I,
                g.ldc,
                g.stride_c,
                g.batch,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32I,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DFALT,
            )
        }
        .map_err(backend(format!("cublasGemmStridedBatchedEx int8 {g:?}")))?;
        self.after("int8 GEMM")
    }
}
