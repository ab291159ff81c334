//! The attested service around the core: what the enclave exposes to the outside. It holds the
//! session key (X25519) and the platform's evidence binding that key to the measurement (code
//! identity, model hash, placement and split); it opens a client's sealed request (rejecting
//! tampering and replays), runs the core, and seals the answer to that client — so the answer
//! always leaves through the enclave, encrypted. Like the core it does no I/O: the host drives it
//! with the same loop (`origami_host::drive`).
//!
//! Session keys rotate inside the service: once the current key has served half of its limit
//! (`MAX_REQUESTS_PER_KEY`), a fresh key from the OS with fresh evidence (same measurement and
//! instance) replaces it, and the old key keeps opening requests sealed to it until it too
//! reaches the limit or the next rotation drops it. A request names the key it was sealed to;
//! one for a dropped key is refused unopened (`EnclaveError::KeyRetired`: re-attest).

use std::sync::Arc;

use origami_model::Tensor;
use origami_proto::evidence::{Attester, Evidence, Measurement, SimulatedPlatform};
use origami_proto::session::{Answer, AnswerSealer, EnclaveSession, SealedAnswer, SealedRequest};
use origami_proto::tensor::WireTensor;
use origami_proto::ProtoError;
use sha2::{Digest, Sha256};

use crate::core::{CoreConfig, EnclaveCore, Placement, Reply, Step};
use crate::{EnclaveError, Plan};

/// Requests one session key serves at most (bounds the replay set: 32 bytes per accepted
/// request). The service rotates to a fresh key, with fresh evidence, once the current key has
/// served half of it; the old key stays valid for the other half (a grace window for clients
/// that attested it), then is dropped. So the service never runs out of keys, whoever sends
/// the requests.
pub const MAX_REQUESTS_PER_KEY: usize = 1 << 20;

pub use crate::core::MAX_PARKED;

/// SHA-256 of the running executable: the code identity a simulated platform reports.
pub fn self_code_id() -> Result<[u8; 32], EnclaveError> {
    let exe = std::env::current_exe().map_err(|e| EnclaveError::Crypto(e.to_string()))?;
    let bytes =
        std::fs::read(&exe).map_err(|e| EnclaveError::Crypto(format!("{}: {e}", exe.display())))?;
    Ok(Sha256::digest(&bytes).into())
}

fn proto(e: ProtoError) -> EnclaveError {
    match e {
        ProtoError::Io(e) => EnclaveError::Crypto(e.to_string()),
        ProtoError::UnknownKey | ProtoError::KeyExhausted => EnclaveError::KeyRetired,
        other => EnclaveError::BadRequest(other.to_string()),
    }
}

/// One session key with the evidence that binds it.
struct KeyEpoch {
    session: EnclaveSession,
    evidence: Evidence,
}

/// The enclave as clients see it.
pub struct EnclaveService {
    core: EnclaveCore,
    platform: Box<dyn Attester>,
    measurement: Measurement,
    instance: [u8; 16],
    /// The key new evidence names.
    current: KeyEpoch,
    /// The previous key, in its grace window.
    retiring: Option<KeyEpoch>,
    key_limit: usize,
    /// Rotations so far.
    epoch: u64,
    sealer: Option<AnswerSealer>,
    /// Requests parked at their handoff (`park`), by ticket.
    parked: std::collections::BTreeMap<u64, AnswerSealer>,
}

impl EnclaveService {
    /// A service on the simulated platform (no TEE: the evidence says so).
    pub fn simulated(
        plan: Arc<Plan>,
        cfg: CoreConfig,
        code_id: [u8; 32],
    ) -> Result<Self, EnclaveError> {
        let platform = SimulatedPlatform::new(code_id).map_err(proto)?;
        Self::new(plan, cfg, Box::new(platform))
    }

    /// A service attested by `platform`. Fresh keys from the OS: pads and sessions of any
    /// earlier instance are never accepted.
    pub fn new(
        plan: Arc<Plan>,
        cfg: CoreConfig,
        platform: Box<dyn Attester>,
    ) -> Result<Self, EnclaveError> {
        if cfg.placement == Placement::Plain {
            return Err(EnclaveError::Plan(
                "the plain placement hands the input to the host: it cannot be attested as private"
                    .into(),
            ));
        }
        let measurement = Measurement {
            code_id: platform.code_id(),
            model_hash: plan.model_hash,
            plan_hash: plan.hash,
            placement: cfg.placement,
            verify: cfg.verify,
        };
        let core = EnclaveCore::new(plan, cfg)?;
        let mut instance = [0u8; 16];
        rand_core::TryRngCore::try_fill_bytes(&mut rand_core::OsRng, &mut instance)
            .map_err(|e| EnclaveError::Crypto(e.to_string()))?;
        let current = new_key(
            platform.as_ref(),
            &measurement,
            instance,
            MAX_REQUESTS_PER_KEY,
        )?;
        Ok(Self {
            core,
            platform,
            measurement,
            instance,
            current,
            retiring: None,
            key_limit: MAX_REQUESTS_PER_KEY,
            epoch: 0,
            sealer: None,
            parked: Default::default(),
        })
    }

    /// The evidence of the current session key (the one new clients should seal to).
    pub fn evidence(&self) -> &Evidence {
        &self.current.evidence
    }

    /// Sets how many requests one session key serves at most (at least 2; the default is
    /// `MAX_REQUESTS_PER_KEY`). The key rotates at half of it. Applies to keys made from now
    /// on: call it before serving (tests use small limits).
    pub fn set_key_limit(&mut self, limit: usize) -> Result<(), EnclaveError> {
        if limit < 2 {
            return Err(EnclaveError::Plan(format!(
                "a session key limit of {limit}: at least 2 (it rotates at half)"
            )));
        }
        self.key_limit = limit;
        self.current = new_key(
            self.platform.as_ref(),
            &self.measurement,
            self.instance,
            limit,
        )?;
        self.retiring = None;
        Ok(())
    }

    /// Rotations of the session key so far: when it changes, the evidence has changed.
    pub fn key_epoch(&self) -> u64 {
        self.epoch
    }

    /// Opens a request with the session key it names (the current one, or the retiring one in
    /// its grace window). Rotates first when the current key has served half its limit.
    fn open(
        &mut self,
        req: &SealedRequest,
    ) -> Result<(zeroize::Zeroizing<Vec<u8>>, AnswerSealer), EnclaveError> {
        if self.current.session.accepted() >= self.key_limit / 2 {
            let fresh = new_key(
                self.platform.as_ref(),
                &self.measurement,
                self.instance,
                self.key_limit,
            )?;
            // The key before the retiring one is dropped with its secret: requests to it can
            // no longer be opened, so its replay set is no longer needed.
            self.retiring = Some(std::mem::replace(&mut self.current, fresh));
            self.epoch += 1;
        }
        let epoch = if req.enclave_key == self.current.session.public_key() {
            &mut self.current
        } else {
            match self.retiring.as_mut() {
                Some(r) if r.session.public_key() == req.enclave_key => r,
                _ => return Err(EnclaveError::KeyRetired),
            }
        };
        epoch.session.open(req).map_err(proto)
    }

    /// The core, for precompute and statistics.
    pub fn core_mut(&mut self) -> &mut EnclaveCore {
        &mut self.core
    }

    pub fn core(&self) -> &EnclaveCore {
        &self.core
    }

    /// Opens a client's request and starts it on the oldest ready pad.
    pub fn begin(&mut self, req: &SealedRequest) -> Result<Step<SealedAnswer>, EnclaveError> {
        self.begin_with_pad(req, None)
    }

    /// Opens a client's request and starts it on the pad the host offers (see
    /// `EnclaveCore::begin_with_pad`). The pad is checked before the request is opened, so a
    /// refused pad does not spend the request (the client's key is not yet remembered). Once
    /// the request is opened, every failure is sealed to its client
    /// (`EnclaveError::Failed`): the host learns that it failed, never why.
    pub fn begin_with_pad(
        &mut self,
        req: &SealedRequest,
        pad: Option<u64>,
    ) -> Result<Step<SealedAnswer>, EnclaveError> {
        if let Some(id) = pad {
            if !self.core.pad_is_ready(id) {
                return Err(EnclaveError::PadNotReady { pad: id });
            }
        } else if self.core.needs_pads() && self.core.pads_ready() == 0 {
            return Err(EnclaveError::PadsExhausted);
        }
        if self.sealer.is_some() {
            return Err(EnclaveError::Misuse(
                "a request is already in flight".into(),
            ));
        }
        let (plain, sealer) = self.open(req)?;
        let mut shape = vec![1usize];
        shape.extend(&self.core_plan_input());
        let started = WireTensor::decode_exact(&plain, &shape)
            .map_err(proto)
            .and_then(|t| {
                Tensor::new(shape, t.data).map_err(|e| EnclaveError::BadRequest(e.to_string()))
            })
            .and_then(|input| self.core.begin_with_pad(input, pad));
        drop(plain);
        match started {
            Ok(step) => {
                self.sealer = Some(sealer);
                self.wrap(step)
            }
            Err(e) => Err(sealed_failure(sealer, &e)),
        }
    }

    /// Continues the request in flight with the host's reply. A failure ends the request and
    /// is sealed to its client.
    pub fn resume(&mut self, reply: Reply) -> Result<Step<SealedAnswer>, EnclaveError> {
        if self.sealer.is_none() {
            return Err(EnclaveError::Misuse("no request in flight".into()));
        }
        match self.core.resume(reply) {
            Ok(step) => self.wrap(step),
            Err(e) => match self.sealer.take() {
                Some(sealer) => Err(sealed_failure(sealer, &e)),
                None => Err(e),
            },
        }
    }

    /// Abandons the request in flight (its pad stays consumed).
    pub fn abort(&mut self) {
        self.core.abort();
        self.sealer = None;
    }

    /// Parks the request in flight, which must have handed off (origami placement): the
    /// enclave's part is done but sealing its answer, so the next request can begin while the
    /// host batches the tails of several. Returns the ticket `finish` takes.
    pub fn park(&mut self) -> Result<u64, EnclaveError> {
        if self.sealer.is_none() {
            return Err(EnclaveError::Misuse("no request in flight".into()));
        }
        let parked = self.core.park()?;
        let sealer = self
            .sealer
            .take()
            .ok_or_else(|| EnclaveError::Misuse("no request in flight".into()))?;
        if let Some(old) = parked.dropped {
            self.parked.remove(&old);
        }
        self.parked.insert(parked.ticket, sealer);
        Ok(parked.ticket)
    }

    /// Seals the tail's output (one image) to the client of a parked request. A ticket is
    /// used once.
    pub fn finish(&mut self, ticket: u64, out: Tensor) -> Result<SealedAnswer, EnclaveError> {
        let sealer = self.parked.remove(&ticket).ok_or_else(|| {
            EnclaveError::Misuse(format!("no parked request {ticket} (finished or dropped)"))
        })?;
        if let Err(e) = self.core.finish(ticket, &out) {
            return Err(sealed_failure(sealer, &e));
        }
        Ok(seal_answer(sealer, out))
    }

    fn core_plan_input(&self) -> Vec<usize> {
        self.core.plan().model.input_shape.clone()
    }

    fn wrap(&mut self, step: Step) -> Result<Step<SealedAnswer>, EnclaveError> {
        Ok(match step {
            Step::Offload(o) => Step::Offload(o),
            Step::Handoff(h) => Step::Handoff(h),
            Step::Done(out) => {
                let sealer = self
                    .sealer
                    .take()
                    .ok_or_else(|| EnclaveError::Misuse("answer without a request".into()))?;
                Step::Done(seal_answer(sealer, out))
            }
        })
    }
}

/// A fresh session key from the OS and the evidence binding it to the measurement.
fn new_key(
    platform: &dyn Attester,
    measurement: &Measurement,
    instance: [u8; 16],
    limit: usize,
) -> Result<KeyEpoch, EnclaveError> {
    let mut session = EnclaveSession::new(limit).map_err(proto)?;
    let evidence = platform
        .attest(measurement.clone(), session.public_key(), instance)
        .map_err(|e| EnclaveError::Crypto(format!("attestation: {e}")))?;
    session.bind(evidence.digest());
    Ok(KeyEpoch { session, evidence })
}

/// Seals an answer tensor to its client; the plain copy is cleared.
fn seal_answer(sealer: AnswerSealer, out: Tensor) -> SealedAnswer {
    let mut answer = Answer::Output(WireTensor {
        shape: out.shape.iter().map(|&d| d as u32).collect(),
        data: out.data,
    });
    let bytes = zeroize::Zeroizing::new(origami_proto::encode(&answer));
    if let Answer::Output(w) = &mut answer {
        zeroize::Zeroize::zeroize(&mut w.data);
    }
    sealer.seal(&bytes)
}

/// Ends an opened request with `e`: its client gets the cause, sealed; the host gets
/// `EnclaveError::Failed` with that sealed answer, the same for every cause (every `Failure` is
/// a unit variant, so the ciphertext has one length).
fn sealed_failure(sealer: AnswerSealer, e: &EnclaveError) -> EnclaveError {
    EnclaveError::Failed(sealer.seal(&origami_proto::encode(&Answer::Failed(e.failure()))))
}
