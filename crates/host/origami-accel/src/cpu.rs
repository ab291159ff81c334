//! The CPU backend: exact field layers through f64 GEMMs, the float tail through the
//! reference executor, threads from rayon's pool (`--threads` / `RAYON_NUM_THREADS`).
//!
//! Why f64 and not integer limbs: hand-written i16-limb loops reached about the throughput per
//! core of faer's f64 GEMM here, but need 2–3 GEMMs per layer (24-bit values split into limbs);
//! one exact f64 GEMM is the faster and simpler choice on this CPU (docs/BENCHMARKS.md,
//! "Measurements behind design decisions"; DEPENDENCIES.md). Exactness: |Σ w·x̄| < 2^53, checked
//! per layer by `FieldLayer::check_exact`.

use std::collections::HashMap;
use std::sync::Arc;

use origami_field::{reduce_f64, P_I64};
use origami_model::exec;
use origami_model::linalg::{conv2d, gemm_nt};
use origami_model::{Model, NodeId, Tensor, ValueId};

use crate::{AccelError, Accelerator, FieldLayer, LinearShape};

/// Exact field arithmetic and the float tail on the host CPU.
#[derive(Default)]
pub struct CpuAccelerator {
    model: Option<Arc<Model>>,
    layers: HashMap<u16, (LinearShape, Vec<f64>)>,
}

impl CpuAccelerator {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Accelerator for CpuAccelerator {
    fn name(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
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
            layers.insert(
                l.layer,
                (l.shape, l.weight.iter().map(|&w| w as f64).collect()),
            );
        }
        self.layers = layers;
        self.model = Some(model);
        Ok(())
    }

    fn field_linear(&mut self, layer: u16, blinded: &[u32]) -> Result<Vec<u32>, AccelError> {
        let (shape, w) = self
            .layers
            .get(&layer)
            .ok_or(AccelError::UnknownLayer(layer))?;
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
