//! The untrusted host as an HTTP service (axum):
//! - `GET /v1/evidence` — the enclave's evidence (JSON): platform, measurement (code, model,
//!   placement, split), what the host sees in this placement, the session key;
//! - `POST /v1/infer` — a sealed request (postcard `SealedRequest`) → a sealed answer (postcard
//!   `SealedAnswer`); the host never holds a key that opens either;
//! - `GET /metrics` — Prometheus text: requests by outcome, latency histogram, batch sizes, pad
//!   pool level; `GET /healthz`;
//! - the Open Inference Protocol (KServe v2) routes over the same sealed requests (`v2`).
//!
//! One worker thread owns the enclave service, the accelerator and the pad pool. Requests queue
//! (bounded; a full queue is 503); the worker takes up to `max_batch` of them per wake-up,
//! waiting at most `max_wait` for more after the first, and runs them one after another (the
//! enclave core takes batch 1). Between batches it tops the pool up to `pad_high` sealed pads
//! whenever it falls below `pad_low`. A request that finds no pad waits while one is
//! precomputed, at most `pad_wait`, then fails with a clear error; a pad is never reused.
//! Shutdown stops accepting connections and finishes the requests in flight.
//!
//! Bounds facing the network (`ServerConfig`): at most `max_connections` connections (one
//! more is closed at accept), a deadline for each request's headers (`header_timeout`, also
//! for idle keep-alive connections) and body (`body_timeout`: 408), at most `queue + max_batch`
//! inference requests in flight, each taking its slot before its body is read (none free:
//! 503), and a body limit that follows from the served model's input size (413).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt;
use tokio::sync::oneshot;

use origami_accel::{Accelerator, CpuAccelerator};
use origami_host::handle::EnclaveHandle;
use origami_host::{field_layers, PadPool};
use origami_plan::{Placement, Plan};
use origami_proto::evidence::Evidence;
use origami_proto::session::SealedRequest;

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
    /// Largest accepted request body (also bounded by the served model's input size).
    pub max_body: usize,
    /// Most connections open at once; one more is closed at accept.
    pub max_connections: usize,
    /// Deadline for a request's headers (and for an idle keep-alive connection's next one).
    pub header_timeout: Duration,
    /// Deadline for a request's body, counted once it holds one of the in-flight slots.
    pub body_timeout: Duration,
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
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            sgx_collateral: String::new(),
            pad_file: None,
            batch_tails: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Enclave(#[from] origami_plan::EnclaveError),
    #[error(transparent)]
    Accel(#[from] origami_accel::AccelError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    PadFile(#[from] origami_host::padfile::PadFileError),
    /// The enclave attached to this server was started for another model, quantization plan
    /// or placement than the host's: refused at attach (its pads and answers would not fit).
    #[error("the enclave serves another {0} than the host planned: start both with the same model, calibration and --mode/--split")]
    Mismatch(Mismatch),
}

/// What differs between an attached enclave's measurement and the host's plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mismatch {
    Model,
    /// The quantization (calibration, scales) differs: the enclave's pads and fixed-point
    /// bounds do not match the host's.
    Plan,
    Placement,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mismatch::Model => "model",
            Mismatch::Plan => "quantization plan",
            Mismatch::Placement => "placement",
        })
    }
}

mod listen;
mod metrics;
pub mod supervise;
pub mod v2;
mod worker;
pub use metrics::Metrics;
use worker::{with_collateral, Job, Outcome, SharedEvidence, Worker};

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
    /// No such model or version (the v2 routes): 404.
    NotFound,
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
            ErrorCode::NotFound => "not_found",
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

/// Starts a fresh enclave after the current one failed (new keys, new instance).
pub type Restart = Box<dyn FnMut() -> Result<Box<dyn EnclaveHandle>, String> + Send>;

#[derive(Clone)]
struct AppState {
    evidence: SharedEvidence,
    jobs: SyncSender<Job>,
    metrics: Arc<Metrics>,
    /// Requests in flight (reading their body, queued, or in the worker): `queue + max_batch`
    /// slots, taken before the body is read, so memory is bounded by slots × `max_body`.
    inflight: Arc<tokio::sync::Semaphore>,
    max_body: usize,
    body_timeout: Duration,
    /// What the v2 routes say about the model.
    v2: Arc<v2::ModelInfo>,
    needs_pads: bool,
    /// The enclave worker thread runs (cleared when it stops).
    worker_up: Arc<std::sync::atomic::AtomicBool>,
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
    let head_end = plan.head_end(placement)?;
    accel.prepare(plan.model.clone(), &field_layers(&plan, head_end))?;
    let metrics = Arc::new(Metrics::default());
    let evidence = Arc::new(with_collateral(enclave.evidence()?, &cfg));
    let key_epoch = enclave.key_epoch()?;
    let m = &evidence.measurement;
    if m.model_hash != plan.model_hash {
        return Err(ServerError::Mismatch(Mismatch::Model));
    }
    if m.plan_hash != plan.hash {
        return Err(ServerError::Mismatch(Mismatch::Plan));
    }
    if m.placement != placement {
        return Err(ServerError::Mismatch(Mismatch::Placement));
    }
    // A sealed request for this model is its input's f32s plus fixed overhead: the body limit
    // follows from the model, so an oversized POST is refused (413) before it is read, and
    // never reaches the enclave link's frame bound.
    let max_body = cfg.max_body.min(request_bound(&plan.model.input_shape));
    let shared: SharedEvidence = Arc::new(std::sync::RwLock::new(evidence.clone()));
    let (tx, rx) = mpsc::sync_channel::<Job>(cfg.queue);
    let mut worker = Worker {
        enclave,
        needs_pads: placement.needs_pads(),
        restart,
        evidence: shared.clone(),
        restarts: 0,
        key_epoch,
        accel,
        pool: PadPool::new(cfg.pad_low, cfg.pad_high),
        cfg: cfg.clone(),
        metrics: metrics.clone(),
    };
    if let Some(path) = &cfg.pad_file {
        if worker.needs_pads {
            let store = origami_host::padfile::read(path, &evidence)?;
            worker.pool = PadPool::from_store(store, cfg.pad_low, cfg.pad_high);
            worker.publish_pads();
        }
    }
    worker.precompute(worker.pool.shortfall())?;
    let needs_pads = worker.needs_pads;
    let worker_up = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let up = worker_up.clone();
    let worker = std::thread::Builder::new()
        .name("origami-enclave-worker".into())
        .spawn(move || {
            // Cleared however the worker ends (a panic included): /v2/health/ready says so.
            struct Down(Arc<std::sync::atomic::AtomicBool>);
            impl Drop for Down {
                fn drop(&mut self) {
                    self.0.store(false, Ordering::Relaxed);
                }
            }
            let _down = Down(up);
            worker.run(rx)
        })?;
    // The plan was built from this model, so its shapes are valid. They carry the batch axis
    // (1); the v2 metadata adds it back, as for the input.
    let output_shape = plan
        .model
        .validate()
        .ok()
        .and_then(|mut shapes| shapes.pop())
        .map(|s| s.get(1..).unwrap_or_default().to_vec())
        .unwrap_or_default();
    let state = AppState {
        evidence: shared,
        jobs: tx,
        metrics: metrics.clone(),
        inflight: Arc::new(tokio::sync::Semaphore::new(
            cfg.queue + cfg.max_batch.max(1),
        )),
        max_body,
        body_timeout: cfg.body_timeout,
        v2: Arc::new(v2::ModelInfo {
            name: v2::url_name(&plan.model.name),
            input_shape: plan.model.input_shape.clone(),
            output_shape,
        }),
        needs_pads,
        worker_up,
    };
    let app = Router::new()
        .route("/v1/evidence", get(get_evidence))
        .route("/v1/infer", post(post_infer))
        .route("/metrics", get(get_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(v2::routes())
        .with_state(state);
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let limits = listen::Limits {
        max_connections: cfg.max_connections.max(1),
        header_timeout: cfg.header_timeout,
    };
    let task = tokio::spawn(listen::serve(
        listener,
        app,
        limits,
        metrics.clone(),
        stop_rx,
    ));
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
/// `SealedRequest` = 32-byte enclave key + 32-byte client key + length-prefixed ciphertext of
/// postcard(`WireTensor`) + 16-byte tag; varints take at most 5 bytes each.
pub fn request_bound(input_shape: &[usize]) -> usize {
    let elems = input_shape.iter().product::<usize>().saturating_mul(4);
    let tensor = (5 + 5 * (input_shape.len() + 1) + 5usize).saturating_add(elems);
    (32 + 32 + 5 + 16 + 64usize).saturating_add(tensor)
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

async fn post_infer(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    s.metrics.received.fetch_add(1, Ordering::Relaxed);
    // A slot first: a request that finds none is refused before its body is read.
    let Some(_slot) = take_slot(&s) else {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::QueueFull,
            "too many requests in flight, retry later",
        );
    };
    let body = match read_body(&s, &headers, body, s.max_body).await {
        Ok(b) => b,
        Err(f) => return error_response(f.status, f.code, &f.message),
    };
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
    match run_job(&s, req).await {
        Ok(a) => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            origami_proto::encode(&a),
        )
            .into_response(),
        Err(f) => error_response(f.status, f.code, &f.message),
    }
}

/// Why a request was not answered: the HTTP status, the matchable code and the message (none
/// of it derived from the request's content, which the host cannot read anyway).
pub(crate) struct Failure {
    pub(crate) status: StatusCode,
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn bad(status: StatusCode, message: String) -> Self {
        Failure {
            status,
            code: ErrorCode::BadRequest,
            message,
        }
    }
}

/// One of the in-flight slots, or None (counted as refused).
pub(crate) fn take_slot(s: &AppState) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let slot = s.inflight.clone().try_acquire_owned().ok();
    if slot.is_none() {
        s.metrics.unavailable.fetch_add(1, Ordering::Relaxed);
    }
    slot
}

/// The request body, at most `limit` bytes (413 beyond, checked on the declared length
/// before reading), within the body deadline (408).
pub(crate) async fn read_body(
    s: &AppState,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<axum::body::Bytes, Failure> {
    let too_large = || {
        s.metrics.bad_request.fetch_add(1, Ordering::Relaxed);
        Failure::bad(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body larger than {limit} bytes (a sealed input of this model is smaller)"
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let limited = http_body_util::Limited::new(body, limit);
    match tokio::time::timeout(s.body_timeout, limited.collect()).await {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => {
            s.metrics.bad_request.fetch_add(1, Ordering::Relaxed);
            Err(Failure::bad(
                StatusCode::BAD_REQUEST,
                format!("reading the request body: {e}"),
            ))
        }
        Err(_) => {
            s.metrics.bad_request.fetch_add(1, Ordering::Relaxed);
            Err(Failure::bad(
                StatusCode::REQUEST_TIMEOUT,
                format!("request body not received within {:?}", s.body_timeout),
            ))
        }
    }
}

/// Queues a sealed request for the enclave worker and waits for its sealed answer.
pub(crate) async fn run_job(
    s: &AppState,
    req: SealedRequest,
) -> Result<origami_proto::session::SealedAnswer, Failure> {
    let stopped = || Failure {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: ErrorCode::Unavailable,
        message: "the enclave worker stopped".into(),
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
            return Err(Failure {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: ErrorCode::QueueFull,
                message: "queue full, retry later".into(),
            });
        }
        Err(TrySendError::Disconnected(_)) => return Err(stopped()),
    }
    match rx.await {
        Ok(Outcome::Answer(a)) => Ok(a),
        Ok(Outcome::Error {
            status,
            code,
            message,
        }) => Err(Failure {
            status,
            code,
            message,
        }),
        Err(_) => Err(stopped()),
    }
}
