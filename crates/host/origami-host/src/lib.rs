//! The untrusted host: the one place where the enclave core and the accelerator meet.
//!
//! `drive` serves one request's steps (offloads from the pad store and the accelerator, the
//! plain tail) for any enclave side: a remote enclave process (`remote`, what the server uses)
//! or, in `local`, a core in this very process (`Engine`: keys in the host's memory, for
//! development, audits and benchmarks only). `bench` runs the four placements side by side.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use origami_accel::{AccelError, Accelerator, FieldLayer};
use origami_field::SealedPad;
use origami_model::{NodeId, Tensor, ValueId};
use origami_plan::{EnclaveError, Plan, Reply, Step};

pub mod batch;
pub mod bench;
pub mod handle;
pub mod local;
pub mod padfile;
pub mod pool;
pub mod remote;

pub use pool::PadPool;

/// Host errors, by cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    #[error(transparent)]
    Enclave(#[from] EnclaveError),
    #[error("accelerator: {0}")]
    Accel(#[from] AccelError),
    /// The pad store has no sealed u for a pad the enclave asked for.
    #[error("sealed pad {pad_id} for layer {layer} is missing from the pad store")]
    PadMissing { pad_id: u64, layer: u16 },
    /// The `tee-plain` benchmark baseline could not run (thread pool, model input).
    #[error("tee-plain baseline: {0}")]
    Baseline(String),
}

/// Sealed pads kept outside the enclave (host memory; `padfile` saves and loads them). Each
/// is handed out once. Ordered by pad id: the host offers the enclave its oldest pad.
#[derive(Default)]
pub struct PadStore {
    pads: BTreeMap<(u64, u16), SealedPad>,
}

impl PadStore {
    pub fn insert_all(&mut self, pads: Vec<SealedPad>) {
        for p in pads {
            self.pads.insert((p.pad_id, p.layer), p);
        }
    }
    /// Removes and returns the sealed u for (pad, layer).
    pub fn take(&mut self, pad_id: u64, layer: u16) -> Option<SealedPad> {
        self.pads.remove(&(pad_id, layer))
    }
    /// The oldest pad held.
    pub fn next_pad(&self) -> Option<u64> {
        self.pads.keys().next().map(|&(id, _)| id)
    }
    /// Drops every layer of `pad_id` (a pad the enclave refused).
    pub fn discard(&mut self, pad_id: u64) {
        self.pads.retain(|&(id, _), _| id != pad_id);
    }
    /// Distinct pads held.
    pub fn pad_count(&self) -> usize {
        let mut n = 0;
        let mut last = None;
        for &(id, _) in self.pads.keys() {
            if last != Some(id) {
                n += 1;
                last = Some(id);
            }
        }
        n
    }
    /// Sealed layer entries held.
    pub fn len(&self) -> usize {
        self.pads.len()
    }
    pub fn is_empty(&self) -> bool {
        self.pads.is_empty()
    }
    /// Bytes of sealed data held.
    pub fn bytes(&self) -> usize {
        self.pads.values().map(|p| p.ciphertext.len()).sum()
    }
    /// Every sealed entry, in pad order.
    pub fn iter(&self) -> impl Iterator<Item = &SealedPad> {
        self.pads.values()
    }
}

/// Time spent per stage of one request.
#[derive(Clone, Debug, Default)]
pub struct StageTimes {
    /// Inside the enclave core (blinding, unblinding, non-linear layers, checks).
    pub enclave: Duration,
    /// Blinded linear layers on the accelerator.
    pub field: Duration,
    /// The plain tail on the accelerator.
    pub tail: Duration,
    pub total: Duration,
    pub offloads: usize,
    /// Bytes sent to / received from the accelerator for blinded layers.
    pub bytes_out: usize,
    pub bytes_in: usize,
}

/// The field layers the accelerator needs for `core`'s placement.
pub fn field_layers(plan: &Plan, head_end: NodeId) -> Vec<FieldLayer> {
    plan.linears
        .iter()
        .filter(|l| l.node < head_end)
        .map(|l| FieldLayer {
            layer: l.layer,
            shape: l.shape,
            weight: l.weights_i32(),
        })
        .collect()
}

/// The host loop, the one place where the enclave and the accelerator meet: serves `Offload`
/// steps (the sealed pad from `pads`, the blinded product from the accelerator) and `Handoff`
/// steps (the plain tail) until the enclave is done, adding times to `st`. Generic over the
/// enclave side (`resume`: the bare core, the attested service, a remote enclave process) and
/// its answer type.
pub fn drive<T>(
    accel: &mut dyn Accelerator,
    pads: &mut PadStore,
    first: Step<T>,
    mut resume: impl FnMut(Reply) -> Result<Step<T>, EnclaveError>,
    st: &mut StageTimes,
) -> Result<T, HostError> {
    match drive_head(accel, pads, first, &mut resume, st)? {
        Headed::Done(out) => Ok(out),
        Headed::Handoff(h) => {
            let t = Instant::now();
            let out = accel.run_tail(h.start, h.values)?;
            accel.synchronize()?;
            st.tail += t.elapsed();
            let t = Instant::now();
            let step = resume(Reply::Tail(out))?;
            st.enclave += t.elapsed();
            match step {
                Step::Done(out) => Ok(out),
                _ => Err(HostError::Enclave(EnclaveError::Misuse(
                    "the enclave did not finish after the tail".into(),
                ))),
            }
        }
    }
}

/// Stacks the handoffs of several requests along the batch axis (they share `start` and value
/// ids: one placement, one plan).
pub fn stack_handoffs(hs: &[&origami_plan::Handoff]) -> Result<Vec<(ValueId, Tensor)>, String> {
    let first = hs.first().ok_or("no handoff")?;
    let mut out = Vec::with_capacity(first.values.len());
    for (j, (id, _)) in first.values.iter().enumerate() {
        let mut items = Vec::with_capacity(hs.len());
        for h in hs {
            match h.values.get(j) {
                Some((vid, t)) if vid == id && h.start == first.start => items.push(t),
                _ => return Err("handoffs of different shapes".into()),
            }
        }
        out.push((*id, Tensor::stack(&items).map_err(|e| e.to_string())?));
    }
    Ok(out)
}

/// Splits a batched tail output into one tensor per request.
pub fn unstack(t: Tensor, n: usize) -> Result<Vec<Tensor>, String> {
    if t.batch() != n || !t.data.len().is_multiple_of(n) {
        return Err(format!(
            "tail output of shape {:?} for {n} requests",
            t.shape
        ));
    }
    Ok(t.unstack())
}

/// One accelerator call for the tails of several handoffs (stacked along the batch axis);
/// returns one output per handoff, in order.
pub fn run_tails(
    accel: &mut dyn Accelerator,
    handoffs: &[&origami_plan::Handoff],
) -> Result<Vec<Tensor>, HostError> {
    let bad = |e: String| HostError::Accel(AccelError::BadInput(e));
    let start = handoffs
        .first()
        .ok_or_else(|| bad("no handoff".into()))?
        .start;
    let out = accel.run_tail(start, stack_handoffs(handoffs).map_err(bad)?)?;
    accel.synchronize()?;
    unstack(out, handoffs.len()).map_err(bad)
}

/// Where `drive_head` stopped.
pub enum Headed<T> {
    /// The enclave answered (no tail: the enclave and slalom placements).
    Done(T),
    /// The head handed off: the tail is the host's to run (alone, or batched with others).
    Handoff(origami_plan::Handoff),
}

/// The offload part of `drive`: serves `Offload` steps until the enclave answers or hands off.
pub fn drive_head<T>(
    accel: &mut dyn Accelerator,
    pads: &mut PadStore,
    first: Step<T>,
    mut resume: impl FnMut(Reply) -> Result<Step<T>, EnclaveError>,
    st: &mut StageTimes,
) -> Result<Headed<T>, HostError> {
    let mut step = first;
    loop {
        match step {
            Step::Offload(o) => {
                st.offloads += 1;
                st.bytes_out += o.blinded.len() * 4;
                let sealed_u = pads.take(o.pad_id, o.layer).ok_or(HostError::PadMissing {
                    pad_id: o.pad_id,
                    layer: o.layer,
                })?;
                let t = Instant::now();
                let result = accel.field_linear(o.layer, &o.blinded)?;
                st.field += t.elapsed();
                st.bytes_in += result.len() * 4;
                let t = Instant::now();
                step = resume(Reply::Linear { result, sealed_u })?;
                st.enclave += t.elapsed();
            }
            Step::Handoff(h) => return Ok(Headed::Handoff(h)),
            Step::Done(out) => return Ok(Headed::Done(out)),
        }
    }
}
