//! The untrusted host as an HTTP service (axum):
//! - `GET /v1/evidence` — the enclave's evidence (JSON): platform, measurement (code, model,
//!   placement, split), what the host sees in this placement, the session key;
//! - `POST /v1/infer` — a sealed request (postcard `SealedRequest`) → a sealed answer (postcard
//!   `SealedAnswer`); the host never holds a key that opens either;
//! - `GET /metrics` — Prometheus text: requests by outcome, latency histogram, batch sizes, pad
//!   pool level; `GET /healthz`.
//!
//! One worker thread owns the enclave service, the accelerator and the pad pool. Requests queue
//! (bounded; a full queue is 503); the worker takes up to `max_batch` of them per wake-up,
//! waiting at most `max_wait` for more after the first, and runs them one after another (the
//! enclave core takes batch 1). Between batches it tops the pool up to `pad_high` sealed pads
//! whenever it falls below `pad_low`. A request that finds no pad waits while one is
//! precomputed, at most `pad_wait`, then fails with a clear error; a pad is never reused.
//! Shutdown stops accepting connections and finishes the requests in flight.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::oneshot;

use origami_accel::{Accelerator, CpuAccelerator};
use origami_enclave::core::Handoff;
use origami_enclave::{EnclaveError, Placement, Plan};
use origami_host::handle::EnclaveHandle;
use origami_host::{drive_head, field_layers, Headed, PadStore};
use origami_proto::evidence::Evidence;
use origami_proto::session::{SealedAnswer, SealedRequest};

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Most requests taken per worker wake-up.
    pub max_batch: usize,
    /// How long the worker waits for more requests after the first of a batch.
    pub max_wait: Duration,
    /// Requests waiting beyond the batch in progress; more are refused (503).
    pub queue: usize,
    /// Pad pool watermarks (pads, each covering every blinded layer of one request).
    pub pad_low: usize,
    pub pad_high: usize,
    /// How long a request may wait (from its arrival) before a pad is ready for it; past that
    /// it fails with a clear error instead of waiting longer.
    pub pad_wait: Duration,
    /// Largest accepted request body.
    pub max_body: usize,
    /// `sgx-gramine`: DCAP collateral (JSON) attached to the served evidence (Intel-signed:
    /// the host may carry it). Empty: none.
    pub sgx_collateral: String,
    /// Sealed pads to start with (`origami precompute --out`), made for this very enclave
    /// instance; a file of another instance is refused.
    pub pad_file: Option<std::path::PathBuf>,
    /// Run the tails of a wake-up's requests as one accelerator call (origami placement). Pays
    /// where the accelerator gains from batches (a GPU); on a CPU it only delays the first
    /// answers of a batch until the last head is done.
    pub batch_tails: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_batch: 8,
            max_wait: Duration::from_millis(2),
            queue: 256,
            pad_low: 8,
            pad_high: 32,
            pad_wait: Duration::from_secs(30),
            max_body: 64 << 20,
            sgx_collateral: String::new(),
            pad_file: None,
            batch_tails: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Enclave(#[from] origami_enclave::EnclaveError),
    #[error(transparent)]
    Accel(#[from] origami_accel::AccelError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    PadFile(#[from] origami_host::padfile::PadFileError),
}

mod metrics;
pub use metrics::Metrics;

/// What a request gets back from the worker.
enum Outcome {
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

/// The `code` of an HTTP error body (`{"code": …, "message": …}`), for clients to match on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request could not be opened (tampered, replayed, for another session or enclave
    /// instance) or is malformed: 400.
    BadRequest,
    /// The request queue is full: 503, retry later.
    QueueFull,
    /// No pad became ready in time: 503, retry later.
    PadsExhausted,
    /// The enclave failed and was restarted with new keys: fetch the evidence again. 503.
    EnclaveRestarted,
    /// The request failed on the host's side (e.g. the accelerator), the enclave is intact:
    /// 503, retry.
    RequestFailed,
    /// The enclave cannot be reached: 503.
    Unavailable,
    /// The request is sealed to a session key the enclave has rotated out: fetch the evidence
    /// again (same instance and measurement, new key) and seal to the new key. 409.
    KeyRetired,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::QueueFull => "queue_full",
            ErrorCode::PadsExhausted => "pads_exhausted",
            ErrorCode::EnclaveRestarted => "enclave_restarted",
            ErrorCode::RequestFailed => "request_failed",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::KeyRetired => "key_retired",
        }
    }
}

fn error_response(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    let body = serde_json::json!({ "code": code.as_str(), "message": message });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{body}\n"),
    )
        .into_response()
}

/// Why a job failed.
enum Fail {
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

struct Job {
    req: SealedRequest,
    arrived: Instant,
    reply: oneshot::Sender<Outcome>,
}

/// Starts a fresh enclave after the current one failed (new keys, new instance).
pub type Restart = Box<dyn FnMut() -> Result<Box<dyn EnclaveHandle>, String> + Send>;

/// The evidence currently served; replaced when the enclave restarts.
type SharedEvidence = Arc<std::sync::RwLock<Arc<Evidence>>>;

#[derive(Clone)]
struct AppState {
    evidence: SharedEvidence,
    jobs: SyncSender<Job>,
    metrics: Arc<Metrics>,
}

/// The worker: owns the enclave service, the accelerator and the pads.
struct Worker {
    enclave: Box<dyn EnclaveHandle>,
    needs_pads: bool,
    restart: Option<Restart>,
    evidence: SharedEvidence,
    restarts: u64,
    /// The enclave's key epoch whose evidence is served.
    key_epoch: u64,
    accel: Box<dyn Accelerator>,
    pads: PadStore,
    ready: usize,
    cfg: ServerConfig,
    metrics: Arc<Metrics>,
}

impl Worker {
    fn precompute(&mut self, n: usize) -> Result<(), EnclaveError> {
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
        self.pads.insert_all(sealed);
        self.ready += n;
        self.metrics
            .pads_made
            .fetch_add(n as u64, Ordering::Relaxed);
        self.metrics.pads_ready.store(self.ready, Ordering::Relaxed);
        Ok(())
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
                self.pads = PadStore::default();
                self.ready = 0;
                self.restarts += 1;
                self.metrics.restarts.fetch_add(1, Ordering::Relaxed);
                self.metrics.pads_ready.store(0, Ordering::Relaxed);
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
        if needs && self.ready == 0 {
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
            let pad = if needs { self.pads.next_pad() } else { None };
            match self.enclave.begin(&job.req, pad) {
                Err(EnclaveError::PadNotReady { pad: id }) if pad == Some(id) => {
                    // The store holds a pad the enclave does not (e.g. from a pad file of an
                    // earlier precompute): drop it — a pad is never offered twice — and offer
                    // the next. The request was not opened, so it is not spent.
                    self.pads.discard(id);
                    self.ready = self.pads.pad_count();
                    self.metrics.pads_ready.store(self.ready, Ordering::Relaxed);
                    if self.ready == 0 {
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
                self.ready = 0;
                self.metrics.pads_ready.store(0, Ordering::Relaxed);
            }
            classify(e)
        })?;
        if needs {
            // `begin` took a pad.
            self.ready = self.ready.saturating_sub(1);
            self.metrics.pads_ready.store(self.ready, Ordering::Relaxed);
        }
        let enclave = &mut self.enclave;
        drive_head(
            self.accel.as_mut(),
            &mut self.pads,
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

    /// Serves a batch of jobs: each runs its head through the enclave (one at a time: the
    /// enclave is one thread) and parks at its handoff; then the accelerator runs ONE tail for
    /// all of them (the batch stacked along the batch axis), and the enclave seals each output
    /// to its own client. Placements without a tail (enclave, slalom) answer at once.
    fn run_batch(&mut self, batch: Vec<Job>) {
        let mut parked: Vec<(Job, u64, Handoff)> = Vec::new();
        for job in batch {
            match self.start(&job) {
                Ok(Headed::Done(a)) => self.answer(job, Ok(a)),
                Ok(Headed::Handoff(h)) => match self.enclave.park() {
                    Ok(ticket) => {
                        parked.push((job, ticket, h));
                        if !self.cfg.batch_tails {
                            self.run_tails(std::mem::take(&mut parked));
                        }
                    }
                    Err(e) => self.answer(job, Err(classify(e))),
                },
                Err(f) => self.answer(job, Err(f)),
            }
        }
        if !parked.is_empty() {
            self.run_tails(parked);
        }
    }

    /// One accelerator call for the tails of `parked` (stacked along the batch axis); each
    /// output is sealed by the enclave to its own client.
    fn run_tails(&mut self, parked: Vec<(Job, u64, Handoff)>) {
        let m = &self.metrics;
        m.tail_batch_count.fetch_add(1, Ordering::Relaxed);
        m.tail_batch_sum
            .fetch_add(parked.len() as u64, Ordering::Relaxed);
        m.tail_batch_max.fetch_max(parked.len(), Ordering::Relaxed);
        let handoffs: Vec<&Handoff> = parked.iter().map(|p| &p.2).collect();
        let outputs = origami_host::run_tails(self.accel.as_mut(), &handoffs)
            .map_err(|e| format!("the accelerator's tail failed: {e}"));
        match outputs {
            Ok(outs) => {
                for ((job, ticket, _), out) in parked.into_iter().zip(outs) {
                    let r = self.enclave.finish(ticket, out).map_err(classify);
                    self.answer(job, r);
                }
            }
            Err(e) => {
                for (job, _, _) in parked {
                    self.answer(job, Err(Fail::Request(e.clone())));
                }
            }
        }
    }

    fn run(mut self, jobs: mpsc::Receiver<Job>) {
        let mut refilling = true;
        loop {
            // Idle: top the pool up between watermarks, one pad at a time so requests are
            // not kept waiting behind a long refill.
            let first = loop {
                match jobs.try_recv() {
                    Ok(j) => break j,
                    Err(mpsc::TryRecvError::Disconnected) => return,
                    Err(mpsc::TryRecvError::Empty) => {}
                }
                // Hysteresis: start refilling below the low watermark, stop at the high one.
                if self.ready < self.cfg.pad_low {
                    refilling = true;
                }
                if self.ready >= self.cfg.pad_high {
                    refilling = false;
                }
                if refilling && self.needs_pads {
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
            self.run_batch(batch);
            self.follow_key_rotation();
        }
    }
}

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    pub evidence: Arc<Evidence>,
    pub metrics: Arc<Metrics>,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting connections, finishes the requests in flight, stops the worker.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        let r = (&mut self.task)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        if let Some(w) = self.worker.take() {
            let _ = tokio::task::spawn_blocking(move || w.join()).await;
        }
        r
    }

    /// Waits until the server stops (after `signal` resolves, requests in flight finish).
    pub async fn until(
        mut self,
        signal: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        signal.await;
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        self.shutdown().await
    }
}

/// The evidence as served: the enclave's, with the configured DCAP collateral (not covered by
/// the evidence digest).
fn with_collateral(mut ev: Evidence, cfg: &ServerConfig) -> Evidence {
    if !cfg.sgx_collateral.is_empty() {
        ev.collateral = cfg.sgx_collateral.clone();
    }
    ev
}

/// Starts serving on `listener` (bind port 0 for a free port) with `enclave` (in-process or a
/// process behind a socket, built for `plan` and `placement`) and `accel` (prepared here with
/// the public plan). With `restart`, a failed enclave is replaced by a fresh one. Pads are
/// precomputed to the low watermark before the first request.
pub async fn start(
    listener: tokio::net::TcpListener,
    mut enclave: Box<dyn EnclaveHandle>,
    plan: Arc<Plan>,
    placement: Placement,
    mut accel: Box<dyn Accelerator>,
    cfg: ServerConfig,
    restart: Option<Restart>,
) -> Result<Running, ServerError> {
    let head_end = placement.head_end(&plan)?;
    accel.prepare(plan.model.clone(), &field_layers(&plan, head_end))?;
    let metrics = Arc::new(Metrics::default());
    let evidence = Arc::new(with_collateral(enclave.evidence()?, &cfg));
    let key_epoch = enclave.key_epoch()?;
    if evidence.measurement.model_hash != plan.model_hash {
        return Err(ServerError::Enclave(EnclaveError::Plan(
            "the enclave serves another model than the host's plan".into(),
        )));
    }
    // A sealed request for this model is its input's f32s plus fixed overhead: the body limit
    // follows from the model, so an oversized POST is refused (413) before it is read, and
    // never reaches the enclave link's frame bound.
    let max_body = cfg.max_body.min(request_bound(&plan.model.input_shape));
    let shared: SharedEvidence = Arc::new(std::sync::RwLock::new(evidence.clone()));
    let (tx, rx) = mpsc::sync_channel::<Job>(cfg.queue);
    let mut worker = Worker {
        enclave,
        needs_pads: matches!(placement, Placement::Slalom | Placement::Origami { .. }),
        restart,
        evidence: shared.clone(),
        restarts: 0,
        key_epoch,
        accel,
        pads: PadStore::default(),
        ready: 0,
        cfg: cfg.clone(),
        metrics: metrics.clone(),
    };
    if let Some(path) = &cfg.pad_file {
        if worker.needs_pads {
            worker.pads = origami_host::padfile::read(path, &evidence)?;
            worker.ready = worker.pads.pad_count();
            worker
                .metrics
                .pads_ready
                .store(worker.ready, Ordering::Relaxed);
        }
    }
    worker.precompute(cfg.pad_low.saturating_sub(worker.ready))?;
    let worker = std::thread::Builder::new()
        .name("origami-enclave-worker".into())
        .spawn(move || worker.run(rx))?;
    let state = AppState {
        evidence: shared,
        jobs: tx,
        metrics: metrics.clone(),
    };
    let app = Router::new()
        .route("/v1/evidence", get(get_evidence))
        .route("/v1/infer", post(post_infer))
        .route("/metrics", get(get_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state);
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.await;
            })
            .await
    });
    Ok(Running {
        addr,
        evidence,
        metrics,
        shutdown: Some(stop_tx),
        task,
        worker: Some(worker),
    })
}

/// The largest body a sealed request for input shape `[C, H, W]` (batch 1) can have:
/// `SealedRequest` = 32-byte client key + length-prefixed ciphertext of
/// postcard(`WireTensor`) + 16-byte tag; varints take at most 5 bytes each.
pub fn request_bound(input_shape: &[usize]) -> usize {
    let elems: usize = input_shape.iter().product();
    let tensor = 5 + 5 * (input_shape.len() + 1) + 5 + 4 * elems;
    32 + 5 + tensor + 16 + 64
}

/// A default CPU accelerator (what `origami serve` uses).
pub fn cpu_accelerator() -> Box<dyn Accelerator> {
    Box::new(CpuAccelerator::new())
}

async fn get_evidence(State(s): State<AppState>) -> Response {
    let ev = s.evidence.read().unwrap_or_else(|p| p.into_inner()).clone();
    match serde_json::to_string_pretty(&*ev) {
        Ok(j) => ([(header::CONTENT_TYPE, "application/json")], j).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn get_metrics(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

async fn post_infer(State(s): State<AppState>, body: Bytes) -> Response {
    s.metrics.received.fetch_add(1, Ordering::Relaxed);
    let req: SealedRequest = match origami_proto::decode(&body) {
        Ok(r) => r,
        Err(e) => {
            s.metrics.bad_request.fetch_add(1, Ordering::Relaxed);
            return error_response(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                &format!("request rejected: {e}"),
            );
        }
    };
    let (tx, rx) = oneshot::channel();
    let job = Job {
        req,
        arrived: Instant::now(),
        reply: tx,
    };
    match s.jobs.try_send(job) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            s.metrics.unavailable.fetch_add(1, Ordering::Relaxed);
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::QueueFull,
                "queue full, retry later",
            );
        }
        Err(TrySendError::Disconnected(_)) => {
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "the enclave worker stopped",
            );
        }
    }
    match rx.await {
        Ok(Outcome::Answer(a)) => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            origami_proto::encode(&a),
        )
            .into_response(),
        Ok(Outcome::Error {
            status,
            code,
            message,
        }) => error_response(status, code, &message),
        Err(_) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "the enclave worker stopped",
        ),
    }
}
