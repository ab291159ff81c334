//! The untrusted host: the one place where the enclave core and the accelerator meet.
//!
//! `Engine` owns a core, an accelerator and the store of sealed pads, and drives one request
//! through `begin`/`resume`, timing each stage. `bench` runs the four placements side by side.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use origami_accel::{AccelError, Accelerator, FieldLayer};
use origami_enclave::{CoreConfig, EnclaveCore, EnclaveError, Plan, Reply, Step};
use origami_field::SealedPad;
use origami_model::Tensor;

pub mod bench;
pub mod handle;
pub mod padfile;
pub mod remote;

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

/// One enclave core, one accelerator, one pad store.
pub struct Engine {
    pub core: EnclaveCore,
    pub accel: Box<dyn Accelerator>,
    pub pads: PadStore,
}

/// The field layers the accelerator needs for `core`'s placement.
pub fn field_layers(plan: &Plan, head_end: usize) -> Vec<FieldLayer> {
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

impl Engine {
    /// Creates a core with fresh OS keys and prepares the accelerator.
    pub fn new(
        plan: Arc<Plan>,
        cfg: CoreConfig,
        accel: Box<dyn Accelerator>,
    ) -> Result<Self, HostError> {
        let core = EnclaveCore::new(plan, cfg)?;
        Self::with_core(core, accel)
    }

    /// Wraps an existing core and prepares the accelerator for it.
    pub fn with_core(
        core: EnclaveCore,
        mut accel: Box<dyn Accelerator>,
    ) -> Result<Self, HostError> {
        let plan = core.plan().clone();
        let layers = if core.needs_pads() {
            field_layers(&plan, core.head_end())
        } else {
            Vec::new()
        };
        accel.prepare(plan.model.clone(), &layers)?;
        Ok(Self {
            core,
            accel,
            pads: PadStore::default(),
        })
    }

    /// Offline precompute of `count` pads; returns the time taken.
    pub fn precompute(&mut self, count: usize) -> Result<Duration, HostError> {
        let threads = self.core.config().threads;
        self.precompute_with_threads(count, threads)
    }

    /// [`precompute`](Self::precompute) on `threads` enclave threads.
    pub fn precompute_with_threads(
        &mut self,
        count: usize,
        threads: usize,
    ) -> Result<Duration, HostError> {
        if !self.core.needs_pads() {
            return Ok(Duration::ZERO);
        }
        let t = Instant::now();
        let sealed = self.core.precompute_with_threads(count, threads)?;
        self.pads.insert_all(sealed);
        Ok(t.elapsed())
    }

    /// One private inference.
    pub fn infer(&mut self, input: Tensor) -> Result<(Tensor, StageTimes), HostError> {
        let r = self.infer_inner(input);
        if r.is_err() {
            self.core.abort();
        }
        r
    }

    /// A batch of private inferences, as the server runs one: the heads one by one through the
    /// enclave (it is one thread), then — placements with a tail — ONE tail call on the
    /// accelerator for the whole batch, each output checked by the enclave core. Times are for
    /// the whole batch.
    pub fn infer_batch(
        &mut self,
        inputs: &[Tensor],
    ) -> Result<(Vec<Tensor>, StageTimes), HostError> {
        let r = self.infer_batch_inner(inputs);
        if r.is_err() {
            self.core.abort();
        }
        r
    }

    fn infer_batch_inner(
        &mut self,
        inputs: &[Tensor],
    ) -> Result<(Vec<Tensor>, StageTimes), HostError> {
        let bad = |e: String| HostError::Accel(AccelError::BadInput(e));
        let mut st = StageTimes::default();
        let t0 = Instant::now();
        let mut outs: Vec<Option<Tensor>> = vec![None; inputs.len()];
        let mut handoffs = Vec::new();
        for (i, x) in inputs.iter().enumerate() {
            let t = Instant::now();
            let step = self.core.begin(x.clone())?;
            st.enclave += t.elapsed();
            let core = &mut self.core;
            match drive_head(
                self.accel.as_mut(),
                &mut self.pads,
                step,
                |r| core.resume(r),
                &mut st,
            )? {
                Headed::Done(out) => outs[i] = Some(out),
                Headed::Handoff(h) => {
                    // The head is done; the enclave only checks the tail's output later.
                    self.core.abort();
                    handoffs.push((i, h));
                }
            }
        }
        if !handoffs.is_empty() {
            let t = Instant::now();
            let refs: Vec<&origami_enclave::core::Handoff> =
                handoffs.iter().map(|(_, h)| h).collect();
            let parts = run_tails(self.accel.as_mut(), &refs)?;
            st.tail += t.elapsed();
            let t = Instant::now();
            for ((i, _), o) in handoffs.iter().zip(parts) {
                self.core.check_tail_output(&o)?;
                outs[*i] = Some(o);
            }
            st.enclave += t.elapsed();
        }
        st.total = t0.elapsed();
        let outs = outs
            .into_iter()
            .map(|o| o.ok_or_else(|| bad("an image of the batch got no answer".into())))
            .collect::<Result<_, _>>()?;
        Ok((outs, st))
    }

    fn infer_inner(&mut self, input: Tensor) -> Result<(Tensor, StageTimes), HostError> {
        let mut st = StageTimes::default();
        let t0 = Instant::now();
        let t = Instant::now();
        let step = self.core.begin(input)?;
        st.enclave += t.elapsed();
        let core = &mut self.core;
        let out = drive(
            self.accel.as_mut(),
            &mut self.pads,
            step,
            |r| core.resume(r),
            &mut st,
        )?;
        st.total = t0.elapsed();
        Ok((out, st))
    }
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
pub fn stack_handoffs(
    hs: &[&origami_enclave::core::Handoff],
) -> Result<Vec<(usize, Tensor)>, String> {
    let first = hs.first().ok_or("no handoff")?;
    let mut out = Vec::with_capacity(first.values.len());
    for (j, (id, t0)) in first.values.iter().enumerate() {
        let mut data = Vec::with_capacity(t0.data.len() * hs.len());
        for h in hs {
            let (vid, t) = h.values.get(j).ok_or("handoffs of different shapes")?;
            if vid != id || t.shape != t0.shape || h.start != first.start || t.shape[0] != 1 {
                return Err("handoffs of different shapes".into());
            }
            data.extend_from_slice(&t.data);
        }
        let mut shape = t0.shape.clone();
        shape[0] = hs.len();
        out.push((*id, Tensor::new(shape, data).map_err(|e| e.to_string())?));
    }
    Ok(out)
}

/// Splits a batched tail output into one tensor per request.
pub fn unstack(t: Tensor, n: usize) -> Result<Vec<Tensor>, String> {
    if t.shape.first() != Some(&n) || !t.data.len().is_multiple_of(n) {
        return Err(format!(
            "tail output of shape {:?} for {n} requests",
            t.shape
        ));
    }
    let per = t.data.len() / n;
    let mut shape = t.shape.clone();
    shape[0] = 1;
    t.data
        .chunks(per)
        .map(|c| Tensor::new(shape.clone(), c.to_vec()).map_err(|e| e.to_string()))
        .collect()
}

/// One accelerator call for the tails of several handoffs (stacked along the batch axis);
/// returns one output per handoff, in order.
pub fn run_tails(
    accel: &mut dyn Accelerator,
    handoffs: &[&origami_enclave::core::Handoff],
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
    Handoff(origami_enclave::core::Handoff),
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
