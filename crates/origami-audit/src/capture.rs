//! What the untrusted side sees at a split: the engine runs the `origami` placement with a
//! `Recording` accelerator, and the capture is the plain tensor the tail received — exactly the
//! bytes an attacker on the host gets, not a recomputation.

use std::sync::Arc;

use origami_accel::{CpuAccelerator, Record, Recording};
use origami_enclave::{CoreConfig, EnclaveCore, Placement, Plan, Reply, Step};
use origami_host::{field_layers, PadStore};
use origami_model::{Tensor, ValueId};

use crate::AuditError;

/// The placement whose handoff is the split: `origami --split K`, or `plain` for split 0 (the
/// host receives the raw input; the engine refuses `origami --split 0` for that reason).
pub fn placement(split: usize) -> Placement {
    if split == 0 {
        Placement::Plain
    } else {
        Placement::Origami { split }
    }
}

/// Runs one private inference with `--split split` and returns the values handed to the tail.
pub fn capture(
    plan: &Arc<Plan>,
    split: usize,
    input: &Tensor,
) -> Result<Vec<(ValueId, Tensor)>, AuditError> {
    use origami_accel::Accelerator;
    let err = |e: &dyn std::fmt::Display| AuditError::Engine(e.to_string());
    let cfg = CoreConfig {
        placement: placement(split),
        verify: false,
        threads: 1,
    };
    let mut core = EnclaveCore::new(plan.clone(), cfg).map_err(|e| err(&e))?;
    let mut acc = Recording::new(CpuAccelerator::new());
    acc.prepare(plan.model.clone(), &field_layers(plan, core.head_end()))
        .map_err(|e| err(&e))?;
    let mut pads = PadStore::default();
    pads.insert_all(core.precompute(1).map_err(|e| err(&e))?);
    let mut step = core.begin(input.clone()).map_err(|e| err(&e))?;
    loop {
        step = match step {
            Step::Offload(o) => {
                let result = acc.field_linear(o.layer, &o.blinded).map_err(|e| err(&e))?;
                let sealed_u = pads
                    .take(o.pad_id, o.layer)
                    .ok_or_else(|| AuditError::Engine("missing pad".into()))?;
                core.resume(Reply::Linear { result, sealed_u })
                    .map_err(|e| err(&e))?
            }
            Step::Handoff(h) => {
                let out = acc.run_tail(h.start, h.values).map_err(|e| err(&e))?;
                core.resume(Reply::Tail(out)).map_err(|e| err(&e))?
            }
            Step::Done(_) => break,
        };
    }
    acc.records
        .into_iter()
        .find_map(|r| match r {
            Record::Tail { values, .. } => Some(values),
            Record::Field { .. } => None,
        })
        .ok_or_else(|| AuditError::Engine("the split handed nothing to the tail".into()))
}
