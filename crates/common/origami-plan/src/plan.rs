//! The plan: a model with batch normalization folded, fixed-point scales calibrated on sample
//! inputs, weights quantized, and the field bounds checked.
//!
//! # Fixed point
//! A value x is held as an integer x̃ = round(x · 2^e) with a power-of-two exponent e chosen per
//! tensor. For each linear layer:
//! - its input is requantized to `in_exp`, chosen so the calibrated max |x| maps to
//!   2^act_bits − 1 (default 8 bits), and clamped to ±(2^(act_bits+1) − 1) (one bit of headroom);
//! - its weights use `w_exp`, chosen so max |W| maps to at most 2^(weight_bits−1) − 1 = 127;
//! - the bias is quantized at the product scale `in_exp + w_exp`; the output keeps that scale
//!   until the next linear layer requantizes it (ReLU, max-pool commute with scaling; average
//!   pools divide with rounding; residual Adds align to the smaller exponent).
//!
//! # Field bound
//! Blinded arithmetic is exact mod p = 2^24 − 3, so the true result must satisfy
//! |W̃·x̃ + b̃| < p/2, or it wraps silently. The plan estimates each layer's largest |y| from the
//! calibration data and requires `estimate · headroom < p/2` (headroom 4 by default), giving up
//! activation or weight bits until it holds. At run time the enclave rejects any |y| > p/4
//! (`EnclaveError::Saturation`): a value past p/4 but below 3p/4 in magnitude is always caught,
//! since its centred residue lies outside [−p/4, p/4]; the calibrated headroom (estimate
//! < p/8) makes larger ones implausible. The plan also reports, per layer, the provable worst
//! case Σ|w̃|·clamp + |b̃|, which is often far beyond p/2 for wide layers — hence calibration.
//!
//! # Exactness of f64 arithmetic
//! |w̃| ≤ 127 and x̄ < 2^24 over K ≤ 2^15 terms keep every sum below 2^46 < 2^53
//! (`origami_accel::FieldLayer::check_exact` enforces it for every layer).

use std::sync::Arc;

use origami_field::{HALF, P};
use origami_model::exec;
use origami_model::linalg::{ConvGeom, LinearShape};
use origami_model::{Model, NodeId, Op, Tensor, ValueId};

use crate::EnclaveError;

/// Fixed-point settings.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantConfig {
    /// Magnitude bits of activations at the calibrated maximum.
    pub act_bits: u32,
    /// Weight bits including sign.
    pub weight_bits: u32,
    /// Required factor between the calibrated max |y| and p/2.
    pub headroom: f64,
}

impl Default for QuantConfig {
    fn default() -> Self {
        Self {
            act_bits: 8,
            weight_bits: 8,
            headroom: 4.0,
        }
    }
}

/// Runtime guard: any unblinded |y| above this is a saturation error.
pub const SATURATION_LIMIT: i64 = P as i64 / 4;

/// One quantized linear layer.
#[derive(Clone, Debug)]
pub struct QLinear {
    /// Its node in `Plan::model`.
    pub node: NodeId,
    /// Ordinal among linear layers (what `--split` counts; the pad and field layer id).
    pub layer: u16,
    pub shape: LinearShape,
    /// Quantized weights, integers held as f64 (exact: |w̃| ≤ 127).
    pub wq: Vec<f64>,
    pub w_exp: i32,
    pub in_exp: i32,
    /// Bias at scale `in_exp + w_exp`.
    pub bias_q: Vec<i64>,
    /// Calibrated estimate of max |y| in integer units.
    pub est_max: f64,
    /// Provable worst case Σ|w̃|·clamp + |b̃| over output rows.
    pub worst_case: u128,
    /// Marked by the fusion pass (`Model::relu_fusions`): the next node is a ReLU that only
    /// this layer feeds; the enclave applies it in the unblinding pass and skips the node.
    pub fused_relu: bool,
}

impl QLinear {
    pub fn out_exp(&self) -> i32 {
        self.in_exp + self.w_exp
    }
    /// The value this layer produces (the ReLU's output when fused) and the next node to run.
    pub fn produces(&self) -> (ValueId, NodeId) {
        let next = NodeId::new(self.node.index() + 1 + usize::from(self.fused_relu));
        // The value of the last node run: the layer's, or the fused ReLU's.
        (ValueId::new(next.index()), next)
    }
    /// The weights as integers, for the accelerator.
    pub fn weights_i32(&self) -> Vec<i32> {
        self.wq.iter().map(|&w| w as i32).collect()
    }
}

/// A prepared model: folded, calibrated, quantized.
#[derive(Debug)]
pub struct Plan {
    /// The folded model. In a head-only plan (`build_head_only`) the weights of nodes from
    /// `head_only` on are dropped; structure and shapes stay.
    pub model: Arc<Model>,
    /// `Model::hash` of the complete folded model (what attestation reports).
    pub model_hash: [u8; 32],
    /// Hash of the folded model and the quantization: what pads bind to.
    pub hash: [u8; 32],
    /// `Some(node)`: weights (float and quantized) of nodes from `node` on were dropped — the
    /// enclave's copy for a placement whose enclave part ends there.
    pub head_only: Option<NodeId>,
    pub cfg: QuantConfig,
    pub linears: Vec<QLinear>,
    /// For each node, its index in `linears` when it is linear.
    pub by_node: Vec<Option<usize>>,
    /// Shapes of every value for batch size 1.
    pub shapes: Vec<Vec<usize>>,
    /// Clamp for requantized activations: 2^(act_bits+1) − 1.
    pub act_clamp: i64,
}

fn exp_for(max: f64, target: f64) -> i32 {
    if max <= 0.0 || !max.is_finite() {
        0
    } else {
        (target / max).log2().floor().clamp(-60.0, 60.0) as i32
    }
}

/// round(x · 2^e), half away from zero.
pub fn quantize(x: f32, e: i32) -> i64 {
    quantize_scaled(x, 2f64.powi(e))
}

/// round(x · scale) for a precomputed power-of-two scale, half away from zero. Written with a
/// truncating cast: `f64::round` is a libm call on baseline x86-64.
#[inline]
pub fn quantize_scaled(x: f32, scale: f64) -> i64 {
    let y = x as f64 * scale;
    (y + 0.5f64.copysign(y)) as i64
}

impl Plan {
    /// Builds a plan, calibrating on `calib` (each `[1, C, H, W]` or a batch).
    pub fn build(model: &Model, calib: &[Tensor], cfg: QuantConfig) -> Result<Self, EnclaveError> {
        Self::build_inner(model.fold_batchnorm(), calib, cfg, None)
    }

    /// The plan an enclave serves `placement` with, calibrated on `zoo::calibration(model,
    /// calib)` (the host builds its own from the same inputs, so both agree): for `origami
    /// --split K` head-only (`build_head_only`), otherwise the full plan.
    pub fn served(
        model: Model,
        placement: crate::Placement,
        calib: usize,
    ) -> Result<Self, EnclaveError> {
        let c = origami_model::zoo::calibration(&model, calib);
        if c.is_empty() {
            return Err(EnclaveError::Plan(
                "calibration needs at least one input".into(),
            ));
        }
        match placement {
            crate::Placement::Origami { split } => {
                Self::build_head_only(model, &c, QuantConfig::default(), split)
            }
            _ => Self::build(&model, &c, QuantConfig::default()),
        }
    }

    /// The enclave's plan for `origami --split k`: identical scales and hashes (the whole model
    /// is still calibrated), but the tail's weights, float and quantized, are never kept — the
    /// enclave holds only the head it runs, which bounds its memory (VGG-16: the tail is >99%
    /// of the weights). The model must be taken by value so its tail weights can be freed.
    pub fn build_head_only(
        model: Model,
        calib: &[Tensor],
        cfg: QuantConfig,
        split: usize,
    ) -> Result<Self, EnclaveError> {
        // Fold without a second copy of the weights when there is nothing to fold.
        let folded = if model
            .nodes
            .iter()
            .any(|n| matches!(n.op, Op::BatchNorm { .. }))
        {
            model.fold_batchnorm()
        } else {
            model
        };
        Self::build_inner(folded, calib, cfg, Some(split))
    }

    /// `model` is already folded (`Model::fold_batchnorm`).
    fn build_inner(
        mut model: Model,
        calib: &[Tensor],
        cfg: QuantConfig,
        head_split: Option<usize>,
    ) -> Result<Self, EnclaveError> {
        if calib.is_empty() {
            return Err(EnclaveError::Plan(
                "calibration needs at least one input".into(),
            ));
        }
        if !(2..=16).contains(&cfg.act_bits)
            || !(2..=12).contains(&cfg.weight_bits)
            || cfg.headroom.is_nan()
            || cfg.headroom < 1.0
        {
            return Err(EnclaveError::Plan(format!(
                "quantization settings out of range: {cfg:?}"
            )));
        }
        let head_only = match head_split {
            Some(k) => Some(
                model
                    .split_node(k)
                    .map_err(|e| EnclaveError::Plan(e.to_string()))?,
            ),
            None => None,
        };
        let shapes = model
            .validate()
            .map_err(|e| EnclaveError::Plan(e.to_string()))?;
        if model.linear_nodes().len() > u16::MAX as usize {
            return Err(EnclaveError::Plan("too many linear layers".into()));
        }
        // Calibration: max |value| of every value over the sample inputs, in float.
        let mut vmax = vec![0f64; model.num_values()];
        for x in calib {
            exec::check_input(&model, x)
                .map_err(|e| EnclaveError::Plan(format!("calibration input: {e}")))?;
            vmax[0] = vmax[0].max(max_abs(&x.data));
            let mut env = vec![None; model.num_values()];
            env[0] = Some(x.clone());
            exec::run_observed(&model, NodeId::new(0), env, |i, t| {
                vmax[i + 1] = vmax[i + 1].max(max_abs(&t.data));
            })
            .map_err(|e| EnclaveError::Plan(e.to_string()))?;
        }
        let act_target = ((1u64 << cfg.act_bits) - 1) as f64;
        let w_target = ((1u64 << (cfg.weight_bits - 1)) - 1) as f64;
        let act_clamp = (1i64 << (cfg.act_bits + 1)) - 1;
        let half = HALF as f64;
        let mut linears = Vec::new();
        let mut by_node = vec![None; model.nodes.len()];
        let fusions = model.relu_fusions();
        for (i, n) in model.nodes.iter().enumerate() {
            let (shape, w, b) = match &n.op {
                Op::Conv(c) => {
                    let s = &shapes[n.inputs[0].index()];
                    let g = ConvGeom::new(c, s[2], s[3])
                        .map_err(|e| EnclaveError::Plan(e.to_string()))?;
                    (LinearShape::Conv(g), &c.weight, &c.bias)
                }
                Op::Dense(d) => (
                    LinearShape::Dense {
                        in_f: d.in_f,
                        out_f: d.out_f,
                    },
                    &d.weight,
                    &d.bias,
                ),
                _ => continue,
            };
            let in_max = vmax[n.inputs[0].index()];
            let out_max = vmax[n.output.index()];
            let wmax = max_abs(w);
            let mut in_exp = exp_for(in_max, act_target);
            let mut w_exp = exp_for(wmax, w_target);
            // Give up bits until the calibrated output fits with the headroom.
            let mut guard = 0;
            while out_max * 2f64.powi(in_exp + w_exp) * cfg.headroom >= half {
                let act_used = in_max * 2f64.powi(in_exp);
                let w_used = wmax * 2f64.powi(w_exp);
                if act_used >= w_used {
                    in_exp -= 1;
                } else {
                    w_exp -= 1;
                }
                guard += 1;
                if guard > 200 {
                    return Err(EnclaveError::Plan(format!(
                        "layer {}: cannot fit the field",
                        n.name
                    )));
                }
            }
            let ws = 2f64.powi(w_exp);
            // A head-only plan keeps no quantized weights past the head.
            let keep = head_only.is_none_or(|h| i < h.index());
            let wq: Vec<f64> = if keep {
                w.iter().map(|&v| quantize_scaled(v, ws) as f64).collect()
            } else {
                Vec::new()
            };
            let bias_q: Vec<i64> = if keep {
                b.iter().map(|&v| quantize(v, in_exp + w_exp)).collect()
            } else {
                Vec::new()
            };
            let k = match shape {
                LinearShape::Conv(g) => g.k(),
                LinearShape::Dense { in_f, .. } => in_f,
            };
            let worst_case = wq
                .chunks(k)
                .zip(&bias_q)
                .map(|(row, b)| {
                    row.iter().map(|w| w.abs() as u64).sum::<u64>() as u128 * act_clamp as u128
                        + b.unsigned_abs() as u128
                })
                .max()
                .unwrap_or(0);
            by_node[i] = Some(linears.len());
            linears.push(QLinear {
                node: NodeId::new(i),
                layer: linears.len() as u16,
                shape,
                wq,
                w_exp,
                in_exp,
                bias_q,
                est_max: out_max * 2f64.powi(in_exp + w_exp),
                worst_case,
                fused_relu: fusions[i],
            });
        }
        let model_hash = model.hash();
        if let Some(h) = head_only {
            for n in &mut model.nodes[h.index()..] {
                match &mut n.op {
                    Op::Conv(c) => {
                        c.weight = Vec::new();
                        c.bias = Vec::new();
                    }
                    Op::Dense(d) => {
                        d.weight = Vec::new();
                        d.bias = Vec::new();
                    }
                    _ => {}
                }
            }
        }
        let mut plan = Plan {
            hash: [0; 32],
            model_hash,
            head_only,
            model: Arc::new(model),
            cfg,
            linears,
            by_node,
            shapes,
            act_clamp,
        };
        plan.hash = plan.compute_hash();
        Ok(plan)
    }

    fn compute_hash(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"origami-plan-v1");
        h.update(self.model_hash);
        for l in &self.linears {
            h.update(l.in_exp.to_le_bytes());
            h.update(l.w_exp.to_le_bytes());
        }
        h.update(self.act_clamp.to_le_bytes());
        h.finalize().into()
    }

    /// Index of the first tail node for a split after `k` linear layers.
    /// First tail node for `placement` on this plan: every node for `enclave` and `slalom`,
    /// none for `plain`, the node after the `split`-th linear layer for `origami`.
    pub fn head_end(&self, placement: crate::Placement) -> Result<NodeId, EnclaveError> {
        match placement {
            crate::Placement::Enclave | crate::Placement::Slalom => Ok(self.model.end()),
            crate::Placement::Plain => Ok(NodeId::new(0)),
            crate::Placement::Origami { split } => self.split_node(split),
        }
    }

    pub fn split_node(&self, k: usize) -> Result<NodeId, EnclaveError> {
        self.model
            .split_node(k)
            .map_err(|e| EnclaveError::Plan(e.to_string()))
    }

    /// A human-readable table of the quantization.
    pub fn summary(&self) -> String {
        let mut s =
            String::from("layer  node                 in_exp w_exp  est|y|/(p/2)  provable\n");
        for l in &self.linears {
            s.push_str(&format!(
                "{:>5}  {:<20} {:>6} {:>5}  {:>12.4}  {}\n",
                l.layer,
                self.model.node(l.node).name,
                l.in_exp,
                l.w_exp,
                l.est_max / HALF as f64,
                if l.worst_case < HALF as u128 {
                    "yes"
                } else {
                    "no (calibrated)"
                }
            ));
        }
        s
    }
}

fn max_abs(v: &[f32]) -> f64 {
    v.iter().fold(0f32, |m, x| m.max(x.abs())) as f64
}
