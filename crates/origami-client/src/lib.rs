//! Client SDK: fetch the server's evidence, verify it against a policy (allowed measurements;
//! simulation refused unless `allow_simulated = true`; allowed placements), then seal each
//! input to the enclave's session key and open the answer only the enclave could seal.
//!
//! ```toml
//! # policy.toml
//! allow_simulated = false          # the default: refuse an enclave without a TEE
//! placements = ["slalom"]          # full privacy: the host sees neither features nor answer
//! [[measurements]]
//! code_id = "9f2c…"                # hex SHA-256 of the enclave code ("*": any, development only)
//! model_hash = "118b…"             # hex model hash
//! ```

use std::path::Path;

use origami_model::Tensor;
use origami_proto::evidence::{verify, Evidence, Policy};
use origami_proto::session::{seal_request, SealedAnswer};
use origami_proto::tensor::WireTensor;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("policy {path}: {msg}")]
    Policy { path: String, msg: String },
    #[error("server {url}: {msg}")]
    Http { url: String, msg: String },
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

    /// Times this client re-attested after the server's enclave restarted.
    pub fn reattested(&self) -> usize {
        self.reattested
    }

    pub fn evidence(&self) -> &Evidence {
        &self.evidence
    }

    /// One private inference: `input` is `[1, C, H, W]`; returns the model's output. When the
    /// server's enclave was restarted (new keys), re-attests — the new evidence must pass the
    /// same policy — and retries once.
    pub fn infer(&mut self, input: &Tensor) -> Result<Tensor, ClientError> {
        match self.infer_once(input) {
            Err(ClientError::Http { msg, .. }) if msg.contains("re-attest") => {
                let (evidence, binding) = attest(&self.agent, &self.base, &self.policy)?;
                self.evidence = evidence;
                self.binding = binding;
                self.reattested += 1;
                self.infer_once(input)
            }
            r => r,
        }
    }

    fn infer_once(&self, input: &Tensor) -> Result<Tensor, ClientError> {
        let bytes = origami_proto::encode(&WireTensor {
            shape: input.shape.iter().map(|&d| d as u32).collect(),
            data: input.data.clone(),
        });
        let (req, pending) = seal_request(&self.evidence.enclave_key, &self.binding, &bytes)?;
        let url = format!("{}/v1/infer", self.base);
        let http = |msg: String| ClientError::Http {
            url: url.clone(),
            msg,
        };
        let mut resp = self
            .agent
            .post(&url)
            .header("content-type", "application/octet-stream")
            .send(&origami_proto::encode(&req)[..])
            .map_err(|e| http(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .map_err(|e| http(e.to_string()))?;
        if status != 200 {
            return Err(http(format!(
                "status {status}: {}",
                String::from_utf8_lossy(&body).trim()
            )));
        }
        let answer: SealedAnswer = origami_proto::decode(&body)?;
        let plain = pending.open(&answer)?;
        let t: WireTensor = origami_proto::decode(&plain)?;
        let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
        Tensor::new(shape, t.data).map_err(|e| ClientError::Answer(e.to_string()))
    }
}
