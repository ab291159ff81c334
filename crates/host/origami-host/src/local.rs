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

use crate::batch::{run_batch, BatchHost};
use crate::handle::EnclaveHandle;
use crate::{drive, drive_head, field_layers, Headed, HostError, PadPool, StageTimes};

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
        let t0 = Instant::now();
        let mut b = EngineBatch {
            engine: self,
            inputs,
            outs: Vec::new(),
            error: None,
            st: StageTimes::default(),
        };
        b.outs.resize_with(inputs.len(), || None);
        run_batch(&mut b, 0..inputs.len(), true);
        let EngineBatch {
            outs,
            error,
            mut st,
            ..
        } = b;
        if let Some(e) = error {
            return Err(e);
        }
        st.total = t0.elapsed();
        let outs = outs
            .into_iter()
            .map(|o| {
                o.ok_or_else(|| {
                    HostError::Accel(AccelError::BadInput(
                        "an image of the batch got no answer".into(),
                    ))
                })
            })
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

/// `Engine::infer_batch` as a job source for the batch driver: jobs are indices into the
/// inputs; the first failure is kept and returned.
struct EngineBatch<'a> {
    engine: &'a mut Engine,
    inputs: &'a [Tensor],
    outs: Vec<Option<Tensor>>,
    error: Option<HostError>,
    st: StageTimes,
}

impl EngineBatch<'_> {
    fn fail(&mut self, e: HostError) {
        self.engine.core.abort();
        self.error.get_or_insert(e);
    }
}

impl BatchHost for EngineBatch<'_> {
    type Job = usize;
    type Answer = Tensor;
    type Fail = HostError;

    fn head(&mut self, &i: &usize) -> Result<Headed<Tensor>, HostError> {
        let e = &mut *self.engine;
        let t = Instant::now();
        let step = e.core.begin(self.inputs[i].clone())?;
        if e.core.needs_pads() {
            e.pads.consumed();
        }
        self.st.enclave += t.elapsed();
        let core = &mut e.core;
        drive_head(
            e.accel.as_mut(),
            e.pads.store(),
            step,
            |r| core.resume(r),
            &mut self.st,
        )
    }
    fn park(&mut self) -> Result<u64, HostError> {
        Ok(self.engine.core.park()?.ticket)
    }
    fn accelerator(&mut self) -> &mut dyn Accelerator {
        self.engine.accel.as_mut()
    }
    fn finish(&mut self, ticket: u64, output: Tensor) -> Result<Tensor, HostError> {
        let t = Instant::now();
        let r = self.engine.core.finish(ticket, &output);
        self.st.enclave += t.elapsed();
        r?;
        Ok(output)
    }
    fn answer(&mut self, i: usize, r: Result<Tensor, HostError>) {
        match r {
            Ok(out) => self.outs[i] = Some(out),
            Err(e) => self.fail(e),
        }
    }
    fn tails_failed(&mut self, _jobs: Vec<usize>, e: HostError) {
        self.fail(e);
    }
    fn tail_batch(&mut self, _size: usize, took: Duration) {
        self.st.tail += took;
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
