//! The trusted core as an I/O-free state machine.
//!
//! `begin(input)` and `resume(reply)` return a `Step`: `Offload` (a blinded linear layer for
//! the accelerator), `Handoff` (plain features for the tail, `origami`/`plain` only) or `Done`
//! (the answer). The core never calls the accelerator or does I/O; the host loop moves the
//! bytes. The same code runs in-process, behind a socket, or inside a TEE.
//!
//! Per offloaded layer the core (1) requantizes the input and blinds it, x̄ = x̃ + r mod p, with
//! r regenerated from the pad key; (2) on the reply, opens the sealed u = W·r (rejecting any
//! tampered, replayed or foreign pad), optionally runs two Freivalds checks, unblinds
//! y = W·x̄ − u, adds the bias and checks the field bound in one pass.

use std::collections::VecDeque;

use std::sync::Arc;
use zeroize::{Zeroize, Zeroizing};

use origami_field::{PadKey, Sealer, P};
use origami_model::exec;
use origami_model::linalg::LinearShape;
use origami_model::{NodeId, Op, Tensor, ValueId, INPUT};

use crate::probe::{Probe, TRIALS};
use pads::ReadyPad;

mod pads;
use origami_plan::plan::Plan;
use origami_plan::qops::{
    eval_nonlinear_on, finish_unblinded, finish_unblinded_pool2, linear_local, requantize,
    requantize_blind, QVal,
};
pub use origami_plan::step::{Handoff, Offload, Placement, Reply, Step};
use origami_plan::{EnclaveError, Misbehaviour};

/// Core settings.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    pub placement: Placement,
    /// Freivalds checks on every blinded layer.
    pub verify: bool,
    /// Threads the enclave itself uses (1 = a single enclave thread, as in SGX baselines).
    pub threads: usize,
}

/// Counters the host can report.
#[derive(Clone, Debug, Default)]
pub struct CoreStats {
    /// Bytes the core holds for its lifetime (head weights, Freivalds probes).
    pub static_bytes: usize,
    /// Largest bytes of request data held at once (values, messages in and out, the opened u,
    /// and the enclave's own arithmetic buffers in the `enclave` placement).
    pub peak_request_bytes: usize,
    /// Largest bytes held while precomputing one pad (r, u = W·r, the sealed copy).
    pub peak_precompute_bytes: usize,
    pub pads_precomputed: u64,
    pub pads_consumed: u64,
}

enum Await {
    Linear {
        li: usize,
        /// The requantized input x̃, kept for the Freivalds check (the enclave's own
        /// plaintext: wiped when dropped).
        xq: Option<Zeroizing<Vec<i32>>>,
    },
    Tail,
}

struct Session {
    next: NodeId,
    env: Vec<Option<QVal>>,
    pad_id: Option<u64>,
    /// The pad's Freivalds sums per linear layer (see [`ReadyPad`]).
    pad_sums: Zeroizing<Vec<[u32; TRIALS]>>,
    awaiting: Option<Await>,
}

impl Session {
    /// Bytes held by the live values (for the memory meter).
    fn env_bytes(&self) -> usize {
        self.env.iter().flatten().map(QVal::bytes).sum()
    }
}

/// The trusted core. Holds every secret: pad key, sealing key, Freivalds vectors.
pub struct EnclaveCore {
    plan: Arc<Plan>,
    cfg: CoreConfig,
    head_end: NodeId,
    offloaded: Vec<bool>,
    last_use: Vec<usize>,
    pad_key: PadKey,
    sealer: Sealer,
    next_pad: u64,
    ready: VecDeque<ReadyPad>,
    probes: Vec<Option<Probe>>,
    session: Option<Session>,
    /// Requests parked at their handoff, waiting for their tail (`park` / `finish`).
    parked: std::collections::BTreeSet<u64>,
    next_ticket: u64,
    stats: CoreStats,
}

/// Requests parked at their handoff, waiting for the tail (bounds the enclave's memory: the
/// attested service keeps one answer key per ticket). Beyond it the oldest is dropped (its
/// client gets no answer).
pub const MAX_PARKED: usize = 256;

/// A request parked at its handoff: finish it with its `ticket`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parked {
    pub ticket: u64,
    /// The oldest parked request, dropped to make room (`MAX_PARKED`): it can no longer finish.
    pub dropped: Option<u64>,
}

impl EnclaveCore {
    /// A core with fresh keys from the operating system.
    pub fn new(plan: Arc<Plan>, cfg: CoreConfig) -> Result<Self, EnclaveError> {
        let pad_key = PadKey::from_os()?;
        let sealer = Sealer::from_os(plan.hash)?;
        let probe_key = PadKey::from_os()?;
        Self::with_keys(plan, cfg, pad_key, sealer, probe_key)
    }

    fn with_keys(
        plan: Arc<Plan>,
        cfg: CoreConfig,
        pad_key: PadKey,
        sealer: Sealer,
        probe_key: PadKey,
    ) -> Result<Self, EnclaveError> {
        let head_end = plan.head_end(cfg.placement)?;
        if let Some(h) = plan.head_only {
            if head_end > h {
                return Err(EnclaveError::Plan(format!(
                    "this plan keeps weights only for nodes before {h}, but the {} placement runs nodes up to {head_end} in the enclave",
                    cfg.placement.name()
                )));
            }
        }
        if let Placement::Origami { split } = cfg.placement {
            if split == 0 {
                return Err(EnclaveError::Plan("origami --split 0 would hand the raw input to the host; use --mode plain to say so".into()));
            }
            if exec::live_across(&plan.model, head_end).contains(&INPUT) {
                return Err(EnclaveError::Plan(format!(
                    "split {split} is not private: the tail reads the model input directly"
                )));
            }
        }
        let blinded = matches!(cfg.placement, Placement::Slalom | Placement::Origami { .. });
        let offloaded: Vec<bool> = plan
            .linears
            .iter()
            .map(|l| blinded && l.node < head_end)
            .collect();
        let mut probes = Vec::with_capacity(plan.linears.len());
        let mut static_bytes = 0;
        for (l, &off) in plan.linears.iter().zip(&offloaded) {
            if l.node < head_end {
                static_bytes += l.wq.len() * 8;
            }
            if off && cfg.verify {
                let p = Probe::new(&probe_key, l.layer, &l.shape, &l.wq, plan.act_clamp)?;
                static_bytes += p.bytes();
                probes.push(Some(p));
            } else {
                probes.push(None);
            }
        }
        Ok(Self {
            last_use: exec::last_uses(&plan.model),
            plan,
            cfg,
            head_end,
            offloaded,
            pad_key,
            sealer,
            next_pad: 0,
            ready: VecDeque::new(),
            probes,
            session: None,
            parked: Default::default(),
            next_ticket: 0,
            stats: CoreStats {
                static_bytes,
                ..Default::default()
            },
        })
    }

    pub fn plan(&self) -> &Arc<Plan> {
        &self.plan
    }
    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }
    pub fn head_end(&self) -> NodeId {
        self.head_end
    }
    pub fn stats(&self) -> &CoreStats {
        &self.stats
    }
    /// Pads precomputed and not yet consumed.
    pub fn pads_ready(&self) -> usize {
        self.ready.len()
    }
    /// Whether requests need pads (some layer is offloaded).
    pub fn needs_pads(&self) -> bool {
        self.offloaded.iter().any(|&o| o)
    }

    /// Starts a request on one input `[1, C, H, W]`, on the oldest ready pad.
    pub fn begin(&mut self, input: Tensor) -> Result<Step, EnclaveError> {
        self.begin_with_pad(input, None)
    }

    /// Starts a request on the pad the host offers (`Some`: it must be a ready pad of this
    /// instance, never used; it is consumed here) or on the oldest ready pad (`None`).
    pub fn begin_with_pad(
        &mut self,
        input: Tensor,
        pad: Option<u64>,
    ) -> Result<Step, EnclaveError> {
        if self.session.is_some() {
            return Err(EnclaveError::Misuse(
                "a request is already in flight".into(),
            ));
        }
        let r = self.begin_inner(input, pad);
        if r.is_err() {
            self.session = None;
        }
        r
    }

    /// Continues the request with the host's reply.
    pub fn resume(&mut self, reply: Reply) -> Result<Step, EnclaveError> {
        let r = self.resume_inner(reply);
        if r.is_err() {
            // A failed request is abandoned; its pad stays consumed.
            self.session = None;
        }
        r
    }

    /// Abandons the request in flight, if any (its pad stays consumed).
    pub fn abort(&mut self) {
        self.session = None;
    }

    /// Whether the request in flight has handed off and waits only for the tail's output.
    pub fn awaiting_tail(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| matches!(s.awaiting, Some(Await::Tail)))
    }

    /// Parks the request in flight at its handoff, so that the next request can begin while
    /// this one's tail runs (the host batches tails across requests). Only a request waiting
    /// for its tail can be parked; `finish` with the ticket then checks its tail output.
    pub fn park(&mut self) -> Result<Parked, EnclaveError> {
        if !self.awaiting_tail() {
            return Err(EnclaveError::Misuse(
                "only a request waiting for its tail can be parked".into(),
            ));
        }
        self.session = None;
        let dropped = if self.parked.len() >= MAX_PARKED {
            self.parked.pop_first()
        } else {
            None
        };
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.parked.insert(ticket);
        Ok(Parked { ticket, dropped })
    }

    /// Finishes a parked request: checks its tail output (one image). A ticket is used once,
    /// whether the output passes or not.
    pub fn finish(&mut self, ticket: u64, output: &Tensor) -> Result<(), EnclaveError> {
        if !self.parked.remove(&ticket) {
            return Err(EnclaveError::Misuse(format!(
                "no parked request {ticket} (finished or dropped)"
            )));
        }
        self.check_tail_output(output)
    }

    /// How many requests are parked.
    pub fn parked(&self) -> usize {
        self.parked.len()
    }

    /// Checks a tail output (one image) against the model's output shape.
    fn check_tail_output(&self, t: &Tensor) -> Result<(), EnclaveError> {
        let want = &self.plan.shapes[self.plan.model.output.index()];
        if &t.shape != want || t.data.len() != want.iter().product::<usize>() {
            return Err(EnclaveError::AcceleratorMisbehaved {
                layer: None,
                what: Misbehaviour::TailShape {
                    got: t.shape.clone(),
                    expected: want.clone(),
                },
            });
        }
        Ok(())
    }

    fn begin_inner(&mut self, input: Tensor, pad: Option<u64>) -> Result<Step, EnclaveError> {
        exec::check_input(&self.plan.model, &input)
            .map_err(|e| EnclaveError::BadRequest(e.to_string()))?;
        if input.shape[0] != 1 {
            return Err(EnclaveError::BadRequest(format!(
                "one image per request, got a batch of {}",
                input.shape[0]
            )));
        }
        let mut env = vec![None; self.plan.model.num_values()];
        if self.head_end.index() == 0 {
            self.session = Some(Session {
                next: NodeId::new(0),
                env,
                pad_id: None,
                pad_sums: Zeroizing::new(Vec::new()),
                awaiting: Some(Await::Tail),
            });
            return Ok(Step::Handoff(Handoff {
                start: NodeId::new(0),
                values: vec![(INPUT, input)],
            }));
        }
        let (pad_id, pad_sums) = if self.needs_pads() {
            let ready = match pad {
                None => self.ready.pop_front().ok_or(EnclaveError::PadsExhausted)?,
                Some(id) => {
                    let at = self
                        .ready
                        .iter()
                        .position(|r| r.id == id)
                        .ok_or(EnclaveError::PadNotReady { pad: id })?;
                    self.ready.remove(at).expect("position is in range")
                }
            };
            self.stats.pads_consumed += 1;
            (Some(ready.id), ready.sums)
        } else {
            (None, Zeroizing::new(Vec::new()))
        };
        env[INPUT.index()] = Some(QVal::Float(input));
        self.session = Some(Session {
            next: NodeId::new(0),
            env,
            pad_id,
            pad_sums,
            awaiting: None,
        });
        self.advance()
    }

    fn resume_inner(&mut self, reply: Reply) -> Result<Step, EnclaveError> {
        let s = self
            .session
            .as_mut()
            .ok_or_else(|| EnclaveError::Misuse("no request in flight".into()))?;
        match (s.awaiting.take(), reply) {
            (
                Some(Await::Linear { li, xq }),
                Reply::Linear {
                    mut result,
                    sealed_u,
                },
            ) => {
                let l = &self.plan.linears[li];
                let node = &self.plan.model.nodes[l.node.index()];
                let out_len = l.shape.out_len();
                let misbehaved = |what: Misbehaviour| EnclaveError::AcceleratorMisbehaved {
                    layer: Some(l.layer),
                    what,
                };
                if result.len() != out_len {
                    return Err(misbehaved(Misbehaviour::WrongLength {
                        got: result.len(),
                        expected: out_len,
                    }));
                }
                // A branch-free maximum (vectorized) rather than an early-exit scan, on the
                // enclave's threads: this runs over every output of every blinded layer. With
                // a probe, the reply side of the Freivalds check comes out of the same pass.
                let probe = self.probes[li].as_ref();
                let (top, reply_sums) = match probe {
                    Some(p) => p.scan_reply(&result, self.cfg.threads),
                    None => {
                        let top = std::sync::atomic::AtomicU32::new(0);
                        let t = self.cfg.threads;
                        origami_field::pad::par_parts(&mut result, 1 << 16, t, |_, r| {
                            let m = r.iter().fold(0u32, |m, &v| m.max(v));
                            top.fetch_max(m, std::sync::atomic::Ordering::Relaxed);
                        });
                        (top.into_inner(), [0; TRIALS])
                    }
                };
                if top >= P {
                    return Err(misbehaved(Misbehaviour::NotReduced));
                }
                let pad_id = s
                    .pad_id
                    .ok_or_else(|| EnclaveError::Misuse("no pad".into()))?;
                let u = self.sealer.open_in_place(
                    pad_id,
                    l.layer,
                    out_len,
                    sealed_u,
                    self.cfg.threads,
                )?;
                if let (Some(probe), Some(xq)) = (probe, &xq) {
                    let pad = s.pad_sums[li];
                    if !probe.check(xq, reply_sums, pad, self.cfg.threads) {
                        return Err(misbehaved(Misbehaviour::FreivaldsFailed));
                    }
                }
                let held =
                    s.env_bytes() + result.len() * 8 + xq.as_ref().map_or(0, |b| b.len() * 4);
                let (value, next) = l.produces();
                // A 2×2 max-pool that is this value's only consumer is done in the same pass.
                let pool = self.plan.model.nodes.get(next.index()).filter(|p| {
                    next < self.head_end
                        && matches!(&p.op, Op::MaxPool(q) if exec::is_pool_2x2(q))
                        && p.inputs.len() == 1
                        && p.inputs[0] == value
                        && self.last_use[value.index()] <= next.index()
                        && match l.shape {
                            LinearShape::Conv(g) => {
                                self.plan.shapes[p.output.index()]
                                    == [1, g.out_c, g.oh / 2, g.ow / 2]
                            }
                            LinearShape::Dense { .. } => false,
                        }
                });
                let (out, y, next) = match pool {
                    Some(p) => {
                        let y = finish_unblinded_pool2(
                            l,
                            &node.name,
                            (&result, &u),
                            &self.plan.shapes[p.output.index()],
                            l.fused_relu,
                            self.cfg.threads,
                        )?;
                        (p.output, y, NodeId::new(next.index() + 1))
                    }
                    None => {
                        let y = finish_unblinded(
                            l,
                            &node.name,
                            (&result, &u),
                            &self.plan.shapes[value.index()],
                            l.fused_relu,
                            self.cfg.threads,
                        )?;
                        (value, y, next)
                    }
                };
                self.stats.peak_request_bytes = self.stats.peak_request_bytes.max(held + y.bytes());
                s.env[out.index()] = Some(y);
                s.next = next;
                self.advance()
            }
            (Some(Await::Tail), Reply::Tail(t)) => {
                self.check_tail_output(&t)?;
                self.session = None;
                Ok(Step::Done(t))
            }
            (None, _) => Err(EnclaveError::Misuse(
                "the request is not waiting for a reply".into(),
            )),
            _ => Err(EnclaveError::Misuse(
                "reply of the wrong kind for this step".into(),
            )),
        }
    }

    /// Runs head nodes until an offload or the end of the head.
    fn advance(&mut self) -> Result<Step, EnclaveError> {
        let plan = self.plan.clone();
        let model = &plan.model;
        let s = self
            .session
            .as_mut()
            .ok_or_else(|| EnclaveError::Misuse("no request in flight".into()))?;
        while s.next < self.head_end {
            let i = s.next.index();
            let n = &model.nodes[i];
            if let Some(li) = plan.by_node[i] {
                let l = &plan.linears[li];
                let x = s.env[n.inputs[0].index()]
                    .as_ref()
                    .ok_or_else(|| EnclaveError::Misuse("missing value".into()))?;
                if self.offloaded[li] {
                    let pad_id = s
                        .pad_id
                        .ok_or_else(|| EnclaveError::Misuse("no pad".into()))?;
                    // Requantize and blind in one pass on the enclave's threads: x̄ = x̃ + r
                    // mod p, with r regenerated from the pad key segment by segment; r is never
                    // held whole (1024-element chunks, wiped). x̃ comes out of the same pass
                    // only for the Freivalds check (src/probe.rs), and is wiped after it.
                    let key = &self.pad_key;
                    let segment = |k: usize| key.mask_segment(pad_id, l.layer, k);
                    let (blinded, keep) = requantize_blind(
                        x,
                        l.in_exp,
                        plan.act_clamp,
                        &segment,
                        self.cfg.threads,
                        self.probes[li].is_some(),
                    );
                    let keep = keep.map(Zeroizing::new);
                    drop_dead(s, &n.inputs, i, &self.last_use);
                    let held = s.env_bytes()
                        + blinded.len() * 4
                        + keep.as_ref().map_or(0, |k| k.len() * 4);
                    self.stats.peak_request_bytes = self.stats.peak_request_bytes.max(held);
                    s.awaiting = Some(Await::Linear { li, xq: keep });
                    return Ok(Step::Offload(Offload {
                        layer: l.layer,
                        pad_id,
                        blinded,
                    }));
                }
                let mut xq = requantize(x, l.in_exp, plan.act_clamp);
                let (value, next) = l.produces();
                // f64 copies of the input and output and one im2col tile, besides the values.
                let held =
                    s.env_bytes() + xq.len() * 12 + l.shape.out_len() * 12 + tile_bytes(&l.shape);
                self.stats.peak_request_bytes = self.stats.peak_request_bytes.max(held);
                let y = linear_local(
                    l,
                    &n.name,
                    &xq,
                    &plan.shapes[value.index()],
                    l.fused_relu,
                    self.cfg.threads,
                )?;
                xq.zeroize();
                s.env[value.index()] = Some(y);
                drop_dead(s, &n.inputs, i, &self.last_use);
                s.next = next;
                continue;
            } else {
                let ins: Vec<&QVal> = n
                    .inputs
                    .iter()
                    .map(|&v| {
                        s.env[v.index()]
                            .as_ref()
                            .ok_or_else(|| EnclaveError::Misuse("missing value".into()))
                    })
                    .collect::<Result<_, _>>()?;
                let y = eval_nonlinear_on(n, &ins, self.cfg.threads)?;
                s.env[n.output.index()] = Some(y);
            }
            drop_dead(s, &n.inputs, i, &self.last_use);
            let held = s.env_bytes();
            self.stats.peak_request_bytes = self.stats.peak_request_bytes.max(held);
            s.next = NodeId::new(i + 1);
        }
        if self.head_end >= model.end() {
            let out = s.env[model.output.index()]
                .take()
                .ok_or_else(|| EnclaveError::Misuse("no output".into()))?;
            self.session = None;
            return Ok(Step::Done(out.to_float()));
        }
        let values = exec::live_across(model, self.head_end)
            .into_iter()
            .map(|v| {
                s.env[v.index()]
                    .as_ref()
                    .map(|q| (v, q.to_float()))
                    .ok_or_else(|| EnclaveError::Misuse("missing value".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        s.env.iter_mut().for_each(|v| *v = None);
        s.awaiting = Some(Await::Tail);
        Ok(Step::Handoff(Handoff {
            start: self.head_end,
            values,
        }))
    }
}

/// Bytes of one f64 im2col tile (see `origami_model::linalg`: about 256 columns of K rows).
fn tile_bytes(shape: &LinearShape) -> usize {
    match shape {
        LinearShape::Conv(g) => g.k() * 256.min(g.oh * g.ow) * 8,
        LinearShape::Dense { .. } => 0,
    }
}

fn drop_dead(s: &mut Session, inputs: &[ValueId], node: usize, last_use: &[usize]) {
    for &v in inputs {
        if last_use[v.index()] <= node {
            s.env[v.index()] = None;
        }
    }
}
