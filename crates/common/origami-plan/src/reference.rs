//! The quantized reference: the head in fixed point computed directly (no field, no blinding,
//! no state machine), then the float tail. Every placement must reproduce it bit for bit.

use origami_model::{exec, NodeId, Tensor, ValueId, INPUT};

use crate::plan::Plan;
use crate::qops::{eval_nonlinear, linear_local, requantize, QVal};
use crate::EnclaveError;

/// The values that cross a split at `head_end` (what the tail reads), computed by the quantized
/// reference head and dequantized: what the host sees in the `origami` placement.
pub fn reference_handoff(
    plan: &Plan,
    input: &Tensor,
    head_end: NodeId,
    threads: usize,
) -> Result<Vec<(ValueId, Tensor)>, EnclaveError> {
    let env = run_head(plan, input, head_end, threads)?;
    Ok(exec::live_across(&plan.model, head_end)
        .into_iter()
        .filter_map(|v| env[v.index()].as_ref().map(|q| (v, q.to_float())))
        .collect())
}

/// Runs nodes `..head_end` in fixed point and the rest in float.
/// `head_end = 0` is the float model; `head_end = nodes.len()` is fully quantized.
pub fn reference(
    plan: &Plan,
    input: &Tensor,
    head_end: NodeId,
    threads: usize,
) -> Result<Tensor, EnclaveError> {
    let model = &plan.model;
    if head_end.index() == 0 {
        exec::check_input(model, input).map_err(|e| EnclaveError::BadRequest(e.to_string()))?;
        return exec::run(model, input).map_err(|e| EnclaveError::Plan(e.to_string()));
    }
    let env = run_head(plan, input, head_end, threads)?;
    if head_end >= model.end() {
        return env[model.output.index()]
            .as_ref()
            .map(QVal::to_float)
            .ok_or_else(|| EnclaveError::Plan("no output".into()));
    }
    let mut fenv: Vec<Option<Tensor>> = vec![None; model.num_values()];
    for v in exec::live_across(model, head_end) {
        fenv[v.index()] = env[v.index()].as_ref().map(QVal::to_float);
    }
    exec::run_from(model, head_end, fenv).map_err(|e| EnclaveError::Plan(e.to_string()))
}

/// The fixed-point head: every value computed by nodes `..head_end`.
fn run_head(
    plan: &Plan,
    input: &Tensor,
    head_end: NodeId,
    threads: usize,
) -> Result<Vec<Option<QVal>>, EnclaveError> {
    let model = &plan.model;
    exec::check_input(model, input).map_err(|e| EnclaveError::BadRequest(e.to_string()))?;
    let mut env: Vec<Option<QVal>> = vec![None; model.num_values()];
    env[INPUT.index()] = Some(QVal::Float(input.clone()));
    let mut i = 0;
    while i < head_end.index() {
        let n = &model.nodes[i];
        if let Some(li) = plan.by_node[i] {
            let l = &plan.linears[li];
            let x = env[n.inputs[0].index()]
                .as_ref()
                .ok_or_else(|| EnclaveError::Plan("missing value".into()))?;
            let xq = requantize(x, l.in_exp, plan.act_clamp);
            let (value, next) = l.produces();
            env[value.index()] = Some(linear_local(
                l,
                &n.name,
                &xq,
                &plan.shapes[value.index()],
                l.fused_relu,
                threads,
            )?);
            i = next.index();
            continue;
        }
        let out = {
            let ins: Vec<&QVal> = n
                .inputs
                .iter()
                .map(|&v| {
                    env[v.index()]
                        .as_ref()
                        .ok_or_else(|| EnclaveError::Plan("missing value".into()))
                })
                .collect::<Result<_, _>>()?;
            eval_nonlinear(n, &ins)?
        };
        env[n.output.index()] = Some(out);
        i += 1;
    }
    Ok(env)
}
