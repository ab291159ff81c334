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
//! platform = "sgx-gramine"         # simulated | sgx-gramine: the entry admits only this platform
//! code_id = "9f2c…"                # hex SHA-256 of the enclave code ("*": any, simulated only)
//! model_hash = "118b…"             # hex model hash
//! min_split = 4                    # origami: refuse splits earlier than this
//! ```

use std::path::Path;

use origami_model::Tensor;
use origami_proto::evidence::{verify, Evidence, Policy};
use origami_proto::session::{seal_request, Answer, SealedAnswer};
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
    #[error(transparent)]
    Proto(#[from] origami_proto::ProtoError),
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

/// A verified connection to one enclave instance.
pub struct Client {
    base: String,
    agent: ureq::Agent,
    evidence: Evidence,
    binding: [u8; 32],
    policy: Policy,
    reattested: usize,
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
        let base = base.trim_end_matches('/').to_string();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let (evidence, binding) = attest(&agent, &base, policy)?;
        Ok(Self {
            base,
            agent,
            evidence,
            binding,
            policy: policy.clone(),
            reattested: 0,
        })
    }

    /// Times this client re-attested after the server's enclave restarted or rotated its key.
    pub fn reattested(&self) -> usize {
        self.reattested
    }

    pub fn evidence(&self) -> &Evidence {
        &self.evidence
    }

    /// One private inference: `input` is `[1, C, H, W]`; returns the model's output. When the
    /// server says its enclave restarted or rotated its session key, re-attests — the new
    /// evidence must pass the same policy, carry the same measurement and a new key — and
    /// returns `ClientError::Restarted` or `ClientError::KeyRotated` without resending the
    /// input (the caller decides whether to retry; a host's words never make this client send
    /// an input twice).
    pub fn infer(&mut self, input: &Tensor) -> Result<Tensor, ClientError> {
        let err = match self.infer_once(input) {
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
        let (was, now) = (&self.evidence.measurement, &evidence.measurement);
        if was != now {
            return Err(ClientError::MeasurementChanged {
                was: describe(was),
                now: describe(now),
            });
        }
        if evidence.enclave_key == self.evidence.enclave_key {
            // The evidence names the key this request was sealed to: whatever the host said,
            // nothing changed, and the error stands as it came.
            return Err(err);
        }
        self.evidence = evidence;
        self.binding = binding;
        self.reattested += 1;
        Err(if rotated {
            ClientError::KeyRotated
        } else {
            ClientError::Restarted
        })
    }

    fn infer_once(&self, input: &Tensor) -> Result<Tensor, ClientError> {
        let mut wire = WireTensor {
            shape: input.shape.iter().map(|&d| d as u32).collect(),
            data: input.data.clone(),
        };
        let bytes = zeroize::Zeroizing::new(origami_proto::encode(&wire));
        zeroize::Zeroize::zeroize(&mut wire.data);
        let (req, pending) = seal_request(&self.evidence.enclave_key, &self.binding, &bytes)?;
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
            .send(&origami_proto::encode(&req)[..])
            .map_err(|e| http(0, None, e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
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
        let answer: SealedAnswer = origami_proto::decode(&body)?;
        let plain = pending.open(&answer)?;
        match origami_proto::decode::<Answer>(&plain)? {
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
