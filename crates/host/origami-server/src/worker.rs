//! The worker thread: owns the enclave handle, the accelerator and the pad pool; takes jobs
//! in batches, drives them with the host's batch driver (`origami_host::batch`: heads through
//! the enclave, one batched tail), and answers each job
//! with its sealed answer or a typed error. Restarts the enclave only when its link failed,
//! and follows the enclave's session-key rotations.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use tokio::sync::oneshot;

use origami_accel::Accelerator;
use origami_host::batch::{run_batch, BatchHost};
use origami_host::handle::EnclaveHandle;
use origami_host::{drive_head, Headed, PadPool};
use origami_model::Tensor;
use origami_plan::EnclaveError;
use origami_proto::evidence::Evidence;
use origami_proto::session::{SealedAnswer, SealedRequest};

use crate::{ErrorCode, Metrics, Restart, ServerConfig};

/// What a request gets back from the worker.
pub(crate) enum Outcome {
    /// A sealed answer: the output, or (`failed`) why the request failed inside the enclave,
    /// which only the client can read. Both go back the same way (200).
    Answer(SealedAnswer),
    /// An error the host itself can state, with a machine-readable code.
    Error {
        status: StatusCode,
        code: ErrorCode,
        message: String,
    },
}

/// Why a job failed.
pub(crate) enum Fail {
    /// The client's fault (its request cannot be opened): 400.
    Client(EnclaveError),
    /// The enclave opened the request and it failed there: the sealed answer says why to the
    /// client only.
    Sealed(SealedAnswer),
    /// The host's side failed this one request (accelerator fault, host bookkeeping); the
    /// enclave, its keys and pads are intact: 503.
    Request(String),
    /// The link to the enclave failed (EOF, I/O): restart it if we can.
    Link(EnclaveError),
    /// Plainly unavailable now (no pad in time): 503.
    Unavailable(String),
    /// Sealed to a session key the enclave no longer holds (unopened): 409, re-attest.
    KeyRetired,
}

/// How a failure of the enclave handle fails the job.
fn classify(e: EnclaveError) -> Fail {
    match e {
        EnclaveError::Failed(a) => Fail::Sealed(a),
        EnclaveError::Unavailable(_) => Fail::Link(e),
        EnclaveError::BadRequest(_) => Fail::Client(e),
        EnclaveError::KeyRetired => Fail::KeyRetired,
        EnclaveError::PadsExhausted => Fail::Unavailable(e.to_string()),
        other => Fail::Request(other.to_string()),
    }
}

pub(crate) struct Job {
    pub(crate) req: SealedRequest,
    pub(crate) arrived: Instant,
    pub(crate) reply: oneshot::Sender<Outcome>,
}

/// The evidence currently served; replaced when the enclave restarts.
pub(crate) type SharedEvidence = Arc<std::sync::RwLock<Arc<Evidence>>>;

/// The worker: owns the enclave service, the accelerator and the pads.
pub(crate) struct Worker {
    pub(crate) enclave: Box<dyn EnclaveHandle>,
    pub(crate) needs_pads: bool,
    pub(crate) restart: Option<Restart>,
    pub(crate) evidence: SharedEvidence,
    pub(crate) restarts: u64,
    /// The enclave's key epoch whose evidence is served.
    pub(crate) key_epoch: u64,
    pub(crate) accel: Box<dyn Accelerator>,
    pub(crate) pool: PadPool,
    pub(crate) cfg: ServerConfig,
    pub(crate) metrics: Arc<Metrics>,
}

impl Worker {
    pub(crate) fn precompute(&mut self, n: usize) -> Result<(), EnclaveError> {
        if !self.needs_pads || n == 0 {
            return Ok(());
        }
        let sealed = match self.enclave.precompute(n) {
            Ok(p) => p,
            Err(e) => {
                self.on_error(&e);
                return Err(e);
            }
        };
        self.pool.add(sealed, n);
        self.metrics
            .pads_made
            .fetch_add(n as u64, Ordering::Relaxed);
        self.publish_pads();
        Ok(())
    }

    /// The pool's count, for `/metrics`.
    pub(crate) fn publish_pads(&self) {
        self.metrics
            .pads_ready
            .store(self.pool.ready(), Ordering::Relaxed);
    }

    /// After a failure of the enclave itself: start a new one (new keys and instance), serve
    /// its evidence, and discard every pad of the old one.
    fn on_error(&mut self, e: &EnclaveError) -> bool {
        if !matches!(e, EnclaveError::Unavailable(_)) {
            return false;
        }
        let Some(restart) = self.restart.as_mut() else {
            return false;
        };
        let fresh = restart().and_then(|mut h| {
            let ev = h.evidence().map_err(|e| e.to_string())?;
            let epoch = h.key_epoch().map_err(|e| e.to_string())?;
            Ok((h, ev, epoch))
        });
        match fresh {
            Ok((h, ev, epoch)) => {
                self.enclave = h;
                *self.evidence.write().unwrap_or_else(|p| p.into_inner()) =
                    Arc::new(with_collateral(ev, &self.cfg));
                self.key_epoch = epoch;
                self.pool.reset();
                self.restarts += 1;
                self.metrics.restarts.fetch_add(1, Ordering::Relaxed);
                self.publish_pads();
                eprintln!("origami serve: the enclave failed ({e}); restarted it with new keys (restart {})", self.restarts);
                true
            }
            Err(re) => {
                eprintln!(
                    "origami serve: the enclave failed ({e}) and could not be restarted: {re}"
                );
                false
            }
        }
    }

    /// Serves the enclave's new evidence once it has rotated its session key. Called between
    /// batches: requests sealed to the old key are still opened in its grace window.
    fn follow_key_rotation(&mut self) {
        let epoch = match self.enclave.key_epoch() {
            Ok(e) => e,
            Err(e) => {
                self.on_error(&e);
                return;
            }
        };
        if epoch == self.key_epoch {
            return;
        }
        match self.enclave.evidence() {
            Ok(ev) => {
                *self.evidence.write().unwrap_or_else(|p| p.into_inner()) =
                    Arc::new(with_collateral(ev, &self.cfg));
                self.key_epoch = epoch;
                self.metrics.key_rotations.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.on_error(&e);
            }
        }
    }

    /// Starts a job: waits (within the bound) for a pad, begins it on the host's oldest pad and
    /// serves its offloads until the enclave answers or hands off.
    fn start(&mut self, job: &Job) -> Result<Headed<SealedAnswer>, Fail> {
        let needs = self.needs_pads;
        if needs && self.pool.ready() == 0 {
            // Wait for a pad, within the bound.
            if job.arrived.elapsed() >= self.cfg.pad_wait {
                return Err(Fail::Unavailable(format!(
                    "pads exhausted: no pad became ready within {:?}",
                    self.cfg.pad_wait
                )));
            }
            if let Err(e) = self.precompute(1) {
                // (`precompute` has already restarted a dead enclave.)
                return Err(Fail::Unavailable(e.to_string()));
            }
        }
        let first = loop {
            let pad = if needs { self.pool.next_pad() } else { None };
            match self.enclave.begin(&job.req, pad) {
                Err(EnclaveError::PadNotReady { pad: id }) if pad == Some(id) => {
                    // The store holds a pad the enclave does not (e.g. from a pad file of an
                    // earlier precompute): drop it — a pad is never offered twice — and offer
                    // the next. The request was not opened, so it is not spent.
                    self.pool.discard(id);
                    self.publish_pads();
                    if self.pool.ready() == 0 {
                        self.precompute(1)
                            .map_err(|e| Fail::Unavailable(e.to_string()))?;
                    }
                }
                r => break r,
            }
        }
        .map_err(|e| {
            // The pool count is the host's estimate; the enclave's word wins.
            if matches!(e, EnclaveError::PadsExhausted) {
                self.pool.exhausted();
                self.publish_pads();
            }
            classify(e)
        })?;
        if needs {
            // `begin` took a pad.
            self.pool.consumed();
            self.publish_pads();
        }
        let enclave = &mut self.enclave;
        drive_head(
            self.accel.as_mut(),
            self.pool.store(),
            first,
            |r| enclave.resume(r),
            &mut Default::default(),
        )
        .map_err(|e| match e {
            origami_host::HostError::Enclave(e) => classify(e),
            // The accelerator (or the host's pad store) failed this request: the enclave is
            // fine, so it keeps its keys and pads.
            other => Fail::Request(other.to_string()),
        })
    }

    /// Sends a job its outcome and counts it.
    fn answer(&mut self, job: Job, r: Result<SealedAnswer, Fail>) {
        let m = &self.metrics;
        let error = |status, code, message: String| Outcome::Error {
            status,
            code,
            message,
        };
        let outcome = match r {
            Ok(a) => {
                m.ok.fetch_add(1, Ordering::Relaxed);
                m.observe(job.arrived.elapsed().as_secs_f64());
                Outcome::Answer(a)
            }
            Err(Fail::Sealed(a)) => {
                // One counter for every cause: the host does not know the cause.
                m.failed.fetch_add(1, Ordering::Relaxed);
                Outcome::Answer(a)
            }
            Err(Fail::Unavailable(msg)) => {
                m.unavailable.fetch_add(1, Ordering::Relaxed);
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::PadsExhausted,
                    msg,
                )
            }
            Err(Fail::KeyRetired) => {
                // Serve the current evidence before the client, told to, fetches it again.
                self.follow_key_rotation();
                let m = &self.metrics;
                m.bad_request.fetch_add(1, Ordering::Relaxed);
                error(
                    StatusCode::CONFLICT,
                    ErrorCode::KeyRetired,
                    "the request is sealed to a session key the enclave has rotated out: fetch /v1/evidence again (re-attest)".into(),
                )
            }
            Err(Fail::Client(e)) => {
                self.enclave.abort();
                m.bad_request.fetch_add(1, Ordering::Relaxed);
                error(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::BadRequest,
                    e.to_string(),
                )
            }
            Err(Fail::Request(msg)) => {
                self.enclave.abort();
                m.failed.fetch_add(1, Ordering::Relaxed);
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::RequestFailed,
                    msg,
                )
            }
            Err(Fail::Link(e)) => {
                self.enclave.abort();
                m.failed.fetch_add(1, Ordering::Relaxed);
                let restarted = self.on_error(&e);
                if restarted {
                    error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        ErrorCode::EnclaveRestarted,
                        format!("{e}; the enclave was restarted with new keys: fetch /v1/evidence again (re-attest)"),
                    )
                } else {
                    error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        ErrorCode::Unavailable,
                        e.to_string(),
                    )
                }
            }
        };
        let _ = job.reply.send(outcome);
    }

    pub(crate) fn run(mut self, jobs: mpsc::Receiver<Job>) {
        loop {
            // Idle: top the pool up between watermarks, one pad at a time so requests are
            // not kept waiting behind a long refill.
            let first = loop {
                match jobs.try_recv() {
                    Ok(j) => break j,
                    Err(mpsc::TryRecvError::Disconnected) => return,
                    Err(mpsc::TryRecvError::Empty) => {}
                }
                if self.needs_pads && self.pool.wants_refill() {
                    if let Err(e) = self.precompute(1) {
                        eprintln!("origami serve: precompute failed: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    continue;
                }
                match jobs.recv_timeout(Duration::from_millis(50)) {
                    Ok(j) => break j,
                    Err(RecvTimeoutError::Disconnected) => return,
                    Err(RecvTimeoutError::Timeout) => {}
                }
            };
            let mut batch = vec![first];
            let deadline = Instant::now() + self.cfg.max_wait;
            while batch.len() < self.cfg.max_batch {
                let left = deadline.saturating_duration_since(Instant::now());
                match jobs.recv_timeout(left) {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            let m = &self.metrics;
            m.batch_count.fetch_add(1, Ordering::Relaxed);
            m.batch_sum.fetch_add(batch.len() as u64, Ordering::Relaxed);
            m.batch_max.fetch_max(batch.len(), Ordering::Relaxed);
            let batch_tails = self.cfg.batch_tails;
            run_batch(&mut self, batch, batch_tails);
            self.follow_key_rotation();
        }
    }
}

/// The worker as a job source for the batch driver (`origami_host::batch`, the same driver
/// as `Engine::infer_batch`).
impl BatchHost for Worker {
    type Job = Job;
    type Answer = SealedAnswer;
    type Fail = Fail;

    fn head(&mut self, job: &Job) -> Result<Headed<SealedAnswer>, Fail> {
        self.start(job)
    }
    fn park(&mut self) -> Result<u64, Fail> {
        self.enclave.park().map_err(classify)
    }
    fn accelerator(&mut self) -> &mut dyn Accelerator {
        self.accel.as_mut()
    }
    fn finish(&mut self, ticket: u64, output: Tensor) -> Result<SealedAnswer, Fail> {
        self.enclave.finish(ticket, output).map_err(classify)
    }
    fn answer(&mut self, job: Job, r: Result<SealedAnswer, Fail>) {
        Worker::answer(self, job, r)
    }
    fn tails_failed(&mut self, jobs: Vec<Job>, e: origami_host::HostError) {
        let msg = format!("the accelerator's tail failed: {e}");
        for job in jobs {
            Worker::answer(self, job, Err(Fail::Request(msg.clone())));
        }
    }
    fn tail_batch(&mut self, size: usize, _took: Duration) {
        let m = &self.metrics;
        m.tail_batch_count.fetch_add(1, Ordering::Relaxed);
        m.tail_batch_sum.fetch_add(size as u64, Ordering::Relaxed);
        m.tail_batch_max.fetch_max(size, Ordering::Relaxed);
    }
}

/// The evidence as served: the enclave's, with the configured DCAP collateral (not covered by
/// the evidence digest).
pub(crate) fn with_collateral(mut ev: Evidence, cfg: &ServerConfig) -> Evidence {
    if !cfg.sgx_collateral.is_empty() {
        ev.collateral = cfg.sgx_collateral.clone();
    }
    ev
}
