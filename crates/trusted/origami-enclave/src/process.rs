//! The enclave as its own process: serves `ToEnclave` frames from one host connection at a
//! time with an `EnclaveService`. Every secret (pad key, sealing key, session key, the client's
//! input and answer in plain) stays in this process; the host gets evidence, sealed pads,
//! blinded tensors, the handoff (origami placement only) and sealed answers.

use std::io::{Read, Write};

use origami_proto::frame::{read_frame, write_frame};
use origami_proto::wire::{ErrorKind, FromEnclave, ToEnclave, MAX_PRECOMPUTE};
use origami_proto::ProtoError;

use crate::service::EnclaveService;
pub use origami_plan::convert::{pad_from_wire, pad_to_wire, tensor_from_wire, tensor_to_wire};
use origami_plan::step::{Reply, Step};
use origami_plan::EnclaveError;

fn step_to_wire(step: Step<origami_proto::session::SealedAnswer>) -> FromEnclave {
    match step {
        Step::Offload(o) => FromEnclave::Offload {
            layer: o.layer,
            pad_id: o.pad_id,
            blinded: o.blinded,
        },
        Step::Handoff(h) => FromEnclave::Handoff {
            start: h.start.index() as u64,
            values: h
                .values
                .into_iter()
                .map(|(v, t)| (v.index() as u64, tensor_to_wire(t)))
                .collect(),
        },
        Step::Done(a) => FromEnclave::Done(a),
    }
}

fn handle(service: &mut EnclaveService, msg: ToEnclave) -> Result<FromEnclave, EnclaveError> {
    Ok(match msg {
        ToEnclave::Evidence => FromEnclave::Evidence(Box::new(service.evidence().clone())),
        ToEnclave::Precompute { count } => {
            if count > MAX_PRECOMPUTE {
                return Err(EnclaveError::Misuse(format!(
                    "precompute of {count} pads at once; at most {MAX_PRECOMPUTE}"
                )));
            }
            let pads = service.core_mut().precompute(count as usize)?;
            FromEnclave::Pads(pads.into_iter().map(pad_to_wire).collect())
        }
        ToEnclave::Begin { request, pad } => step_to_wire(service.begin_with_pad(&request, pad)?),
        ToEnclave::Linear { result, sealed_u } => step_to_wire(service.resume(Reply::Linear {
            result,
            sealed_u: pad_from_wire(sealed_u),
        })?),
        ToEnclave::Tail(t) => step_to_wire(service.resume(Reply::Tail(tensor_from_wire(t)?))?),
        ToEnclave::Abort => {
            service.abort();
            FromEnclave::Aborted
        }
        ToEnclave::Park => FromEnclave::Parked {
            ticket: service.park()?,
        },
        ToEnclave::Finish { ticket, output } => {
            FromEnclave::Done(service.finish(ticket, tensor_from_wire(output)?)?)
        }
        ToEnclave::KeyEpoch => FromEnclave::KeyEpoch {
            epoch: service.key_epoch(),
        },
    })
}

/// The frame the host gets for a failed message: a sealed failure for a request the service
/// had opened (no cause), otherwise the kind and a detail about the host's own message.
pub fn error_to_wire(e: EnclaveError) -> FromEnclave {
    let kind = match &e {
        EnclaveError::Failed(sealed) => return FromEnclave::Failed(sealed.clone()),
        EnclaveError::BadRequest(_) => ErrorKind::BadRequest,
        EnclaveError::PadsExhausted => ErrorKind::PadsExhausted,
        EnclaveError::KeyRetired => ErrorKind::KeyRetired,
        EnclaveError::PadNotReady { pad } => ErrorKind::PadNotReady { pad: *pad },
        EnclaveError::Misuse(_) => ErrorKind::Misuse,
        _ => ErrorKind::Internal,
    };
    let detail = match &e {
        // Raised only inside an opened request, where they are sealed instead; never let one
        // reach the host in clear should a path forget to seal it.
        EnclaveError::Saturation { .. } | EnclaveError::AcceleratorMisbehaved { .. } => {
            "the request failed".to_string()
        }
        other => other.to_string(),
    };
    FromEnclave::Error { kind, detail }
}

/// Serves one host connection until it closes. A malformed or failing message is answered
/// with `FromEnclave::Error` (the request in flight is abandoned) and serving goes on; an
/// oversized or truncated frame ends the connection (the stream cannot be trusted to resync).
pub fn serve(
    stream: &mut (impl Read + Write),
    service: &mut EnclaveService,
    max_frame: usize,
) -> Result<(), ProtoError> {
    loop {
        let frame = match read_frame(stream, max_frame) {
            Ok(Some(f)) => f,
            Ok(None) => {
                service.abort();
                return Ok(());
            }
            Err(e) => {
                service.abort();
                let msg = FromEnclave::Error {
                    kind: ErrorKind::Malformed,
                    detail: format!("frame rejected: {e}"),
                };
                let _ = write_frame(stream, &origami_proto::encode(&msg), max_frame);
                return Err(e);
            }
        };
        let reply = match origami_proto::decode::<ToEnclave>(&frame) {
            Ok(msg) => handle(service, msg).unwrap_or_else(|e| {
                service.abort();
                error_to_wire(e)
            }),
            Err(e) => {
                service.abort();
                FromEnclave::Error {
                    kind: ErrorKind::Malformed,
                    detail: format!("message rejected: {e}"),
                }
            }
        };
        write_frame(stream, &origami_proto::encode(&reply), max_frame)?;
    }
}
