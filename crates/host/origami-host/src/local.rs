//! The enclave core in the host's own process: `Engine` (a core, an accelerator, a pad store)
//! and the attested service as an `EnclaveHandle`. The keys live in the host's memory, so
//! nothing here is private against the host: it is for development, the audit's captures,
//! benchmarks and tests. The server never uses it; it serves a separate enclave process
//! (`remote`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use origami_accel::{AccelError, Accelerator};
use origami_enclave::service::EnclaveService;
use origami_enclave::{CoreConfig, EnclaveCore};
use origami_field::SealedPad;
use origami_model::Tensor;
use origami_plan::{EnclaveError, Plan, Reply, Step};
use origami_proto::evidence::Evidence;
use origami_proto::session::{SealedAnswer, SealedRequest};

use crate::handle::EnclaveHandle;
use crate::{drive, drive_head, field_layers, run_tails, Headed, HostError, PadPool, StageTimes};

/// One enclave core, one accelerator, one pad pool (no watermarks: the caller precomputes).
pub struct Engine {
    pub core: EnclaveCore,
    pub accel: Box<dyn Accelerator>,
    pub pads: PadPool,
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
            pads: PadPool::new(0, 0),
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
        self.pads.add(sealed, count);
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
            if self.core.needs_pads() {
                self.pads.consumed();
            }
            st.enclave += t.elapsed();
            let core = &mut self.core;
            match drive_head(
                self.accel.as_mut(),
                self.pads.store(),
                step,
                |r| core.resume(r),
                &mut st,
            )? {
                Headed::Done(out) => outs[i] = Some(out),
                Headed::Handoff(h) => {
                    // The head is done: park the request, finish it with its tail's output.
                    let parked = self.core.park()?;
                    handoffs.push((i, parked.ticket, h));
                }
            }
        }
        if !handoffs.is_empty() {
            let t = Instant::now();
            let refs: Vec<&origami_plan::Handoff> = handoffs.iter().map(|(_, _, h)| h).collect();
            let parts = run_tails(self.accel.as_mut(), &refs)?;
            st.tail += t.elapsed();
            let t = Instant::now();
            for ((i, ticket, _), o) in handoffs.iter().zip(parts) {
                self.core.finish(*ticket, &o)?;
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
        if self.core.needs_pads() {
            self.pads.consumed();
        }
        st.enclave += t.elapsed();
        let core = &mut self.core;
        let out = drive(
            self.accel.as_mut(),
            self.pads.store(),
            step,
            |r| core.resume(r),
            &mut st,
        )?;
        st.total = t0.elapsed();
        Ok((out, st))
    }
}

/// The attested service in this process, driven like the enclave process.
impl EnclaveHandle for EnclaveService {
    fn evidence(&mut self) -> Result<Evidence, EnclaveError> {
        Ok(EnclaveService::evidence(self).clone())
    }
    fn key_epoch(&mut self) -> Result<u64, EnclaveError> {
        Ok(EnclaveService::key_epoch(self))
    }
    fn precompute(&mut self, count: usize) -> Result<Vec<SealedPad>, EnclaveError> {
        self.core_mut().precompute(count)
    }
    fn begin(
        &mut self,
        req: &SealedRequest,
        pad: Option<u64>,
    ) -> Result<Step<SealedAnswer>, EnclaveError> {
        EnclaveService::begin_with_pad(self, req, pad)
    }
    fn resume(&mut self, reply: Reply) -> Result<Step<SealedAnswer>, EnclaveError> {
        EnclaveService::resume(self, reply)
    }
    fn abort(&mut self) {
        EnclaveService::abort(self)
    }
    fn park(&mut self) -> Result<u64, EnclaveError> {
        EnclaveService::park(self)
    }
    fn finish(&mut self, ticket: u64, output: Tensor) -> Result<SealedAnswer, EnclaveError> {
        EnclaveService::finish(self, ticket, output)
    }
}
