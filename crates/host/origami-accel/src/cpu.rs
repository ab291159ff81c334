//! The CPU backend: exact field layers through int8 limb GEMMs (`int8.rs`: rten-gemm's
//! u8×i8→i32 kernels, AVX-512 VNNI here) or f64 GEMMs, the float tail through the reference
//! executor, threads from rayon's pool (`--threads` / `RAYON_NUM_THREADS`).
//!
//! Which field kernel: [`FieldKernel::Auto`] (the default) runs every layer whose weights fit
//! in i8 and whose depth fits the no-overflow bound on int8 limbs (three 8-bit limbs, or four
//! 7-bit ones on kernels that may saturate), others on f64. The int8 path measured 1.3–1.6x the
//! f64 path on VGG-16's 3×3 convolutions (K ≥ 576) and 7.9x on fc6, 0.66x on conv1_1 (K = 27)
//! at one thread (docs/BENCHMARKS.md). f64 exactness:
//! |Σ w·x̄| < 2^53, checked per layer by `FieldLayer::check_exact`. Both give the same bits.

use std::collections::HashMap;
use std::sync::Arc;

use origami_field::{reduce_f64, P_I64};
use origami_model::exec;
use origami_model::linalg::{conv2d, gemm_nt};
use origami_model::{Model, NodeId, Tensor, ValueId};

use crate::int8::{Int8Gemm, Int8Layer, Limbs};
use crate::{AccelError, Accelerator, FieldLayer, LinearShape};

/// How the CPU backend computes exact field layers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldKernel {
    /// int8 limbs where a layer fits, f64 otherwise.
    #[default]
    Auto,
    /// f64 GEMMs for every layer.
    F64,
    /// int8 limbs of this width for every layer (a layer that does not fit is refused).
    Int8(Limbs),
}

enum CpuLayer {
    F64(LinearShape, Vec<f64>),
    Int8(Int8Layer),
}

/// Exact field arithmetic and the float tail on the host CPU.
pub struct CpuAccelerator {
    model: Option<Arc<Model>>,
    layers: HashMap<u16, CpuLayer>,
    kernel: FieldKernel,
    int8: Option<Int8Gemm>,
}

impl Default for CpuAccelerator {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuAccelerator {
    /// The default field kernel ([`FieldKernel::Auto`]).
    pub fn new() -> Self {
        Self::with_field_kernel(FieldKernel::Auto).unwrap_or_else(|_| Self {
            model: None,
            layers: HashMap::new(),
            kernel: FieldKernel::F64,
            int8: None,
        })
    }

    /// A backend forced onto one field kernel (tests force each path; benchmarks compare them).
    /// Errs ([`AccelError::Unavailable`]) for 8-bit limbs on a CPU whose int8 kernel may
    /// saturate.
    pub fn with_field_kernel(kernel: FieldKernel) -> Result<Self, AccelError> {
        let int8 = match kernel {
            FieldKernel::F64 => None,
            FieldKernel::Auto => Some(Int8Gemm::new(None)?),
            FieldKernel::Int8(l) => Some(Int8Gemm::new(Some(l))?),
        };
        Ok(Self {
            model: None,
            layers: HashMap::new(),
            kernel,
            int8,
        })
    }

    /// The field kernel in words, e.g. "int8 x86_64-u8i8i32-avx512, 3×8-bit limbs".
    pub fn field_kernel(&self) -> String {
        match (&self.int8, self.kernel) {
            (Some(g), FieldKernel::Auto) => {
                format!("{} (f64 where a layer does not fit)", g.describe())
            }
            (Some(g), _) => g.describe(),
            (None, _) => "f64".into(),
        }
    }
}

impl Accelerator for CpuAccelerator {
    fn name(&self) -> String {
        format!(
            "cpu ({} threads, field: {})",
            rayon::current_num_threads(),
            self.field_kernel()
        )
    }

    fn prepare(
        &mut self,
        model: Arc<Model>,
        field_layers: &[FieldLayer],
    ) -> Result<(), AccelError> {
        model
            .validate()
            .map_err(|e| AccelError::BadInput(e.to_string()))?;
        let mut layers = HashMap::new();
        for l in field_layers {
            l.check_exact()?;
            let layer = match &self.int8 {
                Some(g) if g.fits(l) => CpuLayer::Int8(g.prepare(l)),
                Some(g) if self.kernel != FieldKernel::Auto => {
                    return Err(AccelError::BadInput(format!(
                        "layer {}: weights outside [-128, 127] or K = {} past {} for {}",
                        l.layer,
                        l.shape.k(),
                        g.limbs().max_k(),
                        g.describe()
                    )))
                }
                _ => CpuLayer::F64(l.shape, l.weight.iter().map(|&w| w as f64).collect()),
            };
            layers.insert(l.layer, layer);
        }
        self.layers = layers;
        self.model = Some(model);
        Ok(())
    }

    fn field_linear(&mut self, layer: u16, blinded: &[u32]) -> Result<Vec<u32>, AccelError> {
        let l = self
            .layers
            .get(&layer)
            .ok_or(AccelError::UnknownLayer(layer))?;
        let shape = match l {
            CpuLayer::F64(s, _) => s,
            CpuLayer::Int8(l) => l.shape(),
        };
        if blinded.len() != shape.in_len() {
            return Err(AccelError::BadInput(format!(
                "layer {layer}: {} input elements, expected {}",
                blinded.len(),
                shape.in_len()
            )));
        }
        if blinded.iter().any(|&v| v as i64 >= P_I64) {
            return Err(AccelError::BadInput(format!(
                "layer {layer}: input is not reduced mod p"
            )));
        }
        let (shape, w) = match l {
            CpuLayer::Int8(l) => {
                return self
                    .int8
                    .as_ref()
                    .expect("int8 layers need the executor")
                    .run(l, blinded)
            }
            CpuLayer::F64(s, w) => (s, w),
        };
        let x: Vec<f64> = blinded.iter().map(|&v| v as f64).collect();
        let mut y = vec![0f64; shape.out_len()];
        let threads = rayon::current_num_threads();
        match shape {
            LinearShape::Conv(g) => conv2d(g, &x, w, &mut y, threads),
            LinearShape::Dense { in_f, out_f } => gemm_nt(1, *in_f, *out_f, &x, w, &mut y, threads),
        }
        // Every y is an exact integer below 2^53 in magnitude (check_exact), so the cast is exact.
        Ok(y.into_iter().map(reduce_f64).collect())
    }

    fn run_tail(
        &mut self,
        start: NodeId,
        values: Vec<(ValueId, Tensor)>,
    ) -> Result<Tensor, AccelError> {
        let model = self.model.as_ref().ok_or(AccelError::NotPrepared)?;
        if start > model.end() {
            return Err(AccelError::BadInput(format!(
                "tail start {start} is past the model"
            )));
        }
        let mut env: Vec<Option<Tensor>> = vec![None; model.num_values()];
        for (v, t) in values {
            if v.index() >= env.len() || v.index() > start.index() {
                return Err(AccelError::BadInput(format!(
                    "value {v} cannot feed a tail starting at node {start}"
                )));
            }
            env[v.index()] = Some(t);
        }
        if start == model.end() {
            return env[model.output.index()]
                .take()
                .ok_or_else(|| AccelError::BadInput("the output value was not given".into()));
        }
        // Batch-invariant: a batched tail (the server batches requests' tails) gives every image
        // exactly the bits of its own single-image run — a batched GEMM could sum in another
        // order. Convolutions already run image by image; only dense layers would differ.
        let n = env.iter().flatten().map(|t| t.shape[0]).next().unwrap_or(1);
        if n <= 1 {
            return exec::run_from(model, start, env)
                .map_err(|e| AccelError::BadInput(e.to_string()));
        }
        if env.iter().flatten().any(|t| t.shape[0] != n) {
            return Err(AccelError::BadInput(
                "tail values with different batch sizes".into(),
            ));
        }
        let mut outs = Vec::with_capacity(n);
        for i in 0..n {
            let one: Vec<Option<Tensor>> = env
                .iter()
                .map(|v| {
                    v.as_ref()
                        .map(|t| t.batch_item(i))
                        .transpose()
                        .map_err(|e| AccelError::BadInput(e.to_string()))
                })
                .collect::<Result<_, _>>()?;
            outs.push(
                exec::run_from(model, start, one)
                    .map_err(|e| AccelError::BadInput(e.to_string()))?,
            );
        }
        let outs: Vec<&Tensor> = outs.iter().collect();
        Tensor::stack(&outs).map_err(|e| AccelError::Backend(e.to_string()))
    }

    fn synchronize(&mut self) -> Result<(), AccelError> {
        Ok(())
    }
}
