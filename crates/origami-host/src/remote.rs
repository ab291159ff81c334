//! The host's handle on an enclave process (`origami enclave`): the same `begin`/`resume`
//! steps as the in-process service, carried as frames over a stream (a Unix socket). A dead or
//! misbehaving peer becomes `EnclaveError::Unavailable`, never a hang on a half-read frame.

use std::io::{Read, Write};

use origami_enclave::core::{Handoff, Offload};
use origami_enclave::process::{pad_from_wire, pad_to_wire, tensor_from_wire, tensor_to_wire};
use origami_enclave::{EnclaveError, Reply, Step};
use origami_field::SealedPad;
use origami_proto::evidence::Evidence;
use origami_proto::frame::{read_frame, write_frame, DEFAULT_MAX_FRAME};
use origami_proto::session::{SealedAnswer, SealedRequest};
use origami_proto::wire::{FromEnclave, ToEnclave};

pub struct RemoteEnclave<S: Read + Write> {
    stream: S,
    max_frame: usize,
}

fn unavailable(e: impl std::fmt::Display) -> EnclaveError {
    EnclaveError::Unavailable(e.to_string())
}

impl<S: Read + Write> RemoteEnclave<S> {
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            max_frame: DEFAULT_MAX_FRAME,
        }
    }

    fn call(&mut self, msg: &ToEnclave) -> Result<FromEnclave, EnclaveError> {
        write_frame(
            &mut self.stream,
            &origami_proto::encode(msg),
            self.max_frame,
        )
        .map_err(unavailable)?;
        let frame = read_frame(&mut self.stream, self.max_frame)
            .map_err(unavailable)?
            .ok_or_else(|| unavailable("the enclave process closed the connection"))?;
        match origami_proto::decode::<FromEnclave>(&frame).map_err(unavailable)? {
            FromEnclave::Error(e) => Err(EnclaveError::BadRequest(e)),
            reply => Ok(reply),
        }
    }

    fn step(&mut self, msg: &ToEnclave) -> Result<Step<SealedAnswer>, EnclaveError> {
        Ok(match self.call(msg)? {
            FromEnclave::Offload {
                layer,
                pad_id,
                blinded,
            } => Step::Offload(Offload {
                layer,
                pad_id,
                blinded,
            }),
            FromEnclave::Handoff { start, values } => Step::Handoff(Handoff {
                start: start as usize,
                values: values
                    .into_iter()
                    .map(|(v, t)| Ok((v as usize, tensor_from_wire(t)?)))
                    .collect::<Result<_, EnclaveError>>()?,
            }),
            FromEnclave::Done(a) => Step::Done(a),
            other => return Err(unavailable(format!("unexpected reply {}", kind(&other)))),
        })
    }

    pub fn evidence(&mut self) -> Result<Evidence, EnclaveError> {
        match self.call(&ToEnclave::Evidence)? {
            FromEnclave::Evidence(e) => Ok(*e),
            other => Err(unavailable(format!("unexpected reply {}", kind(&other)))),
        }
    }

    pub fn precompute(&mut self, count: u32) -> Result<Vec<SealedPad>, EnclaveError> {
        match self.call(&ToEnclave::Precompute { count })? {
            FromEnclave::Pads(p) => Ok(p.into_iter().map(pad_from_wire).collect()),
            other => Err(unavailable(format!("unexpected reply {}", kind(&other)))),
        }
    }

    pub fn begin(&mut self, req: &SealedRequest) -> Result<Step<SealedAnswer>, EnclaveError> {
        self.step(&ToEnclave::Begin(req.clone()))
    }

    pub fn resume(&mut self, reply: Reply) -> Result<Step<SealedAnswer>, EnclaveError> {
        let msg = match reply {
            Reply::Linear { result, sealed_u } => ToEnclave::Linear {
                result,
                sealed_u: pad_to_wire(sealed_u),
            },
            Reply::Tail(t) => ToEnclave::Tail(tensor_to_wire(t)),
        };
        self.step(&msg)
    }

    pub fn abort(&mut self) -> Result<(), EnclaveError> {
        self.call(&ToEnclave::Abort).map(|_| ())
    }

    /// The raw stream (tests use it to send malformed frames).
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }
}

fn kind(m: &FromEnclave) -> &'static str {
    match m {
        FromEnclave::Evidence(_) => "evidence",
        FromEnclave::Pads(_) => "pads",
        FromEnclave::Offload { .. } => "offload",
        FromEnclave::Handoff { .. } => "handoff",
        FromEnclave::Done(_) => "done",
        FromEnclave::Aborted => "aborted",
        FromEnclave::Error(_) => "error",
    }
}
