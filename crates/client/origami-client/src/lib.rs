//! Client SDK: fetch the server's evidence, verify it against a policy (allowed measurements;
//! simulation refused unless `allow_simulated = true`; allowed placements), then seal each
//! input to the enclave's session key and open the answer only the enclave could seal.
//!
//! ```toml
//! # policy.toml
//! allow_simulated = false          # the default: refuse an enclave without a TEE
//! placements = ["slalom"]          # default ["slalom", "enclave"]; "origami" only if listed
//! allow_unverified = false         # the default: blinded placements must run Freivalds checks
//! [[measurements]]
//! platform = "sgx-gramine"         # simulated | sgx-gramine | tdx | sev-snp: the entry admits only this platform
//! code_id = "9f2c…"                # hex SHA-256 of the enclave code ("*": any, simulated only)
//! model_hash = "118b…"             # hex model hash
//! min_split = 4                    # origami: refuse splits earlier than this
//! ```

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use origami_model::Tensor;
use origami_proto::evidence::{verify, Evidence, Measurement, Policy};
use origami_proto::session::{seal_request, Answer, PendingAnswer, SealedAnswer};
use origami_proto::tensor::WireTensor;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("policy {path}: {msg}")]
    Policy { path: String, msg: String },
    #[error("server {url}: {msg}")]
    Http {
        url: String,
        /// The HTTP status (0 when no response arrived).
        status: u16,
        /// The server's machine-readable error code (`bad_request`, `queue_full`,
        /// `pads_exhausted`, `enclave_restarted`, `key_retired`, `request_failed`,
        /// `unavailable`), when it sent one.
        code: Option<String>,
        msg: String,
    },
    /// The request failed inside the enclave; the cause came sealed to this client (the host
    /// does not know it).
    #[error("the enclave could not answer: {0}")]
    Failed(origami_proto::session::Failure),
    /// The server's enclave restarted with new keys. This client re-attested: the new evidence
    /// passed the policy and carries the same measurement (code, model, placement, split,
    /// integrity checks). The input was not resent: call `infer` again to retry it.
    #[error("the server's enclave restarted; re-attested to the same measurement (new session key): retry the request")]
    Restarted,
    /// The server's enclave rotated its session key (same instance and measurement, fresh key
    /// and evidence). This client re-attested to the new key; the input was not resent: call
    /// `infer` again to retry it.
    #[error("the server's enclave rotated its session key; re-attested to the same measurement: retry the request")]
    KeyRotated,
    /// After a restart the server's enclave claims another measurement than the one this
    /// client verified first (for instance an earlier split): refused, nothing was sent.
    #[error("the server's enclave restarted with another measurement: was {was}, now {now}; refused (connect again to accept it under your policy)")]
    MeasurementChanged { was: String, now: String },
    /// Evidence refused (`Proto(ProtoError::Evidence(rejection))`), or the session crypto
    /// failed before anything was sent.
    #[error(transparent)]
    Proto(#[from] origami_proto::ProtoError),
    /// The answer did not open: it was not sealed by the enclave this client attested for this
    /// request (tampered, replayed, or another session's), or it is malformed. Nothing of it
    /// is used.
    #[error("the answer was rejected: {0}")]
    BadAnswer(origami_proto::ProtoError),
    #[error("answer: {0}")]
    Answer(String),
}

/// Reads a policy file (TOML; unknown keys are errors).
pub fn load_policy(path: &Path) -> Result<Policy, ClientError> {
    let err = |msg: String| ClientError::Policy {
        path: path.display().to_string(),
        msg,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    toml::from_str(&text).map_err(|e| err(e.to_string()))
}

/// A verified connection to one enclave instance. `infer` takes `&self`: one client may be
/// shared by threads (requests run concurrently; a re-attestation replaces the session for
/// all of them).
pub struct Client {
    base: String,
    agent: ureq::Agent,
    policy: Policy,
    /// The measurement verified at `connect`: every re-attestation must show the same.
    measurement: Measurement,
    session: RwLock<Session>,
    reattested: AtomicUsize,
}

/// The verified evidence requests are sealed to, and the digest sessions bind to.
#[derive(Clone)]
struct Session {
    evidence: Arc<Evidence>,
    binding: [u8; 32],
}

/// Fetches and verifies the evidence.
fn attest(
    agent: &ureq::Agent,
    base: &str,
    policy: &Policy,
) -> Result<(Evidence, [u8; 32]), ClientError> {
    let url = format!("{base}/v1/evidence");
    let http = |msg: String| ClientError::Http {
        url: url.clone(),
        status: 0,
        code: None,
        msg,
    };
    let mut resp = agent.get(&url).call().map_err(|e| http(e.to_string()))?;
    let body = resp
        .body_mut()
        .with_config()
        .limit(1 << 20)
        .read_to_string()
        .map_err(|e| http(e.to_string()))?;
    if resp.status() != 200 {
        return Err(http(format!("status {}: {body}", resp.status())));
    }
    let evidence: Evidence =
        serde_json::from_str(&body).map_err(|e| http(format!("malformed evidence: {e}")))?;
    let binding = verify(&evidence, policy)?;
    Ok((evidence, binding))
}

impl Client {
    /// Fetches `GET {base}/v1/evidence` and verifies it against `policy`.
    pub fn connect(base: &str, policy: &Policy) -> Result<Self, ClientError> {
        Self::connect_with(base, policy, None)
    }

    /// `connect`, with a limit on each HTTP exchange of this client (None: no limit).
    pub fn connect_with(
        base: &str,
        policy: &Policy,
        timeout: Option<std::time::Duration>,
    ) -> Result<Self, ClientError> {
        let base = base.trim_end_matches('/').to_string();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(timeout)
            .build()
            .into();
        let (evidence, binding) = attest(&agent, &base, policy)?;
        Ok(Self {
            base,
            agent,
            policy: policy.clone(),
            measurement: evidence.measurement.clone(),
            session: RwLock::new(Session {
                evidence: Arc::new(evidence),
                binding,
            }),
            reattested: AtomicUsize::new(0),
        })
    }

    /// Times this client re-attested after the server's enclave restarted or rotated its key.
    pub fn reattested(&self) -> usize {
        self.reattested.load(Ordering::Relaxed)
    }

    /// The evidence requests are sealed to now (it changes when the client re-attests).
    pub fn evidence(&self) -> Arc<Evidence> {
        self.session().evidence
    }

    fn session(&self) -> Session {
        // A panic elsewhere cannot leave a half-written session: it is replaced whole.
        self.session
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// One private inference: `input` is `[1, C, H, W]`; returns the model's output. When the
    /// server says its enclave restarted or rotated its session key, re-attests — the new
    /// evidence must pass the same policy, carry the same measurement and a new key — and
    /// returns `ClientError::Restarted` or `ClientError::KeyRotated` without resending the
    /// input (the caller decides whether to retry; a host's words never make this client send
    /// an input twice).
    pub fn infer(&self, input: &Tensor) -> Result<Tensor, ClientError> {
        let session = self.session();
        let err = match self.infer_once(&session, input) {
            Err(e @ ClientError::Http { code: Some(_), .. }) => e,
            r => return r,
        };
        let ClientError::Http {
            code: Some(code), ..
        } = &err
        else {
            return Err(err);
        };
        let rotated = match code.as_str() {
            "enclave_restarted" => false,
            "key_retired" => true,
            _ => return Err(err),
        };
        let (evidence, binding) = attest(&self.agent, &self.base, &self.policy)?;
        let (was, now) = (&self.measurement, &evidence.measurement);
        if was != now {
            return Err(ClientError::MeasurementChanged {
                was: describe(was),
                now: describe(now),
            });
        }
        if evidence.enclave_key == session.evidence.enclave_key {
            // The evidence names the key this request was sealed to: whatever the host said,
            // nothing changed, and the error stands as it came.
            return Err(err);
        }
        // Freshly verified: it replaces whatever session is stored (another thread may have
        // re-attested meanwhile; a stale choice only costs one more re-attestation).
        *self.session.write().unwrap_or_else(|e| e.into_inner()) = Session {
            evidence: Arc::new(evidence),
            binding,
        };
        self.reattested.fetch_add(1, Ordering::Relaxed);
        Err(if rotated {
            ClientError::KeyRotated
        } else {
            ClientError::Restarted
        })
    }

    /// Seals `input` (`[1, C, H, W]`) to the enclave this client attested, for carrying it over
    /// another transport (a stock KServe v2 client): `Sealed::body` is what `POST /v1/infer`
    /// takes and what the v2 `sealed_request` BYTES element holds; `Sealed::open` reads the
    /// answer's bytes. `infer` does both over HTTP and re-attests when told to; this does not.
    pub fn seal(&self, input: &Tensor) -> Result<Sealed, ClientError> {
        Self::seal_to(&self.session(), input)
    }

    fn seal_to(session: &Session, input: &Tensor) -> Result<Sealed, ClientError> {
        let mut wire = WireTensor {
            shape: input.shape.iter().map(|&d| d as u32).collect(),
            data: input.data.clone(),
        };
        let bytes = zeroize::Zeroizing::new(origami_proto::encode(&wire));
        zeroize::Zeroize::zeroize(&mut wire.data);
        let (req, pending) = seal_request(&session.evidence.enclave_key, &session.binding, &bytes)?;
        Ok(Sealed {
            body: origami_proto::encode(&req),
            pending,
        })
    }

    fn infer_once(&self, session: &Session, input: &Tensor) -> Result<Tensor, ClientError> {
        let sealed = Self::seal_to(session, input)?;
        let url = format!("{}/v1/infer", self.base);
        let http = |status: u16, code: Option<String>, msg: String| ClientError::Http {
            url: url.clone(),
            status,
            code,
            msg,
        };
        let mut resp = self
            .agent
            .post(&url)
            .header("content-type", "application/octet-stream")
            .send(&sealed.body[..])
            .map_err(|e| http(0, None, e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES as u64)
            .read_to_vec()
            .map_err(|e| http(status, None, e.to_string()))?;
        if status != 200 {
            let text = String::from_utf8_lossy(&body);
            let code = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("code")?.as_str().map(str::to_string));
            return Err(http(
                status,
                code,
                format!("status {status}: {}", text.trim()),
            ));
        }
        sealed.open(&body)
    }
}

/// The largest answer read from a server.
const MAX_ANSWER_BYTES: usize = 64 << 20;

/// One request sealed to the attested enclave, and the key to its answer (used once).
pub struct Sealed {
    /// The postcard `SealedRequest`.
    pub body: Vec<u8>,
    pending: PendingAnswer,
}

impl Sealed {
    /// Opens the answer's bytes (a postcard `SealedAnswer`): the model's output, or why the
    /// enclave failed. `BadAnswer` when the enclave did not seal it for this request.
    pub fn open(self, answer: &[u8]) -> Result<Tensor, ClientError> {
        if answer.len() > MAX_ANSWER_BYTES {
            return Err(ClientError::BadAnswer(
                origami_proto::ProtoError::TooLarge {
                    len: answer.len(),
                    max: MAX_ANSWER_BYTES,
                },
            ));
        }
        let answer: SealedAnswer = origami_proto::decode(answer).map_err(ClientError::BadAnswer)?;
        let plain = self.pending.open(&answer).map_err(ClientError::BadAnswer)?;
        match origami_proto::decode::<Answer>(&plain).map_err(ClientError::BadAnswer)? {
            Answer::Output(t) => {
                let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
                Tensor::new(shape, t.data).map_err(|e| ClientError::Answer(e.to_string()))
            }
            Answer::Failed(f) => Err(ClientError::Failed(f)),
        }
    }
}

/// A measurement in words, for errors.
fn describe(m: &origami_proto::evidence::Measurement) -> String {
    format!(
        "{}{} (code {}…, model {}…)",
        m.placement,
        if m.verify { "" } else { " --no-verify" },
        &origami_proto::evidence::hex(&m.code_id)[..16],
        &origami_proto::evidence::hex(&m.model_hash)[..16],
    )
}
