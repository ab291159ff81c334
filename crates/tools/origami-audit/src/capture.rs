//! What the untrusted side sees at a split: the engine runs the `origami` placement with a
//! `Recording` accelerator, and the capture is the plain tensor the tail received — exactly the
//! bytes an attacker on the host gets, not a recomputation. The host loop is `origami_host::drive`,
//! the same one `Engine::infer` runs.

use std::sync::Arc;

use origami_accel::{CpuAccelerator, Record, Recording};
use origami_enclave::{CoreConfig, EnclaveCore, Placement, Plan};
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
    let first = core.begin(input.clone()).map_err(|e| err(&e))?;
    origami_host::drive(
        &mut acc,
        &mut pads,
        first,
        |r| core.resume(r),
        &mut Default::default(),
    )
    .map_err(|e| err(&e))?;
    acc.records
        .into_iter()
        .find_map(|r| match r {
            Record::Tail { values, .. } => Some(values),
            Record::Field { .. } => None,
        })
        .ok_or_else(|| AuditError::Engine("the split handed nothing to the tail".into()))
}
