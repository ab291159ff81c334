//! One interface to the enclave wherever it runs: as its own process behind a socket
//! (`RemoteEnclave`, what the server serves) or in-process (`crate::local`, tests and
//! development). The server drives either the same way.

use std::io::{Read, Write};

use origami_field::SealedPad;
use origami_model::Tensor;
use origami_plan::{EnclaveError, Reply, Step};
use origami_proto::evidence::Evidence;
use origami_proto::session::{SealedAnswer, SealedRequest};

use crate::remote::RemoteEnclave;

/// What the host asks of an enclave, wherever it runs (`local`: in this process; `remote`: its
/// own process).
pub trait EnclaveHandle: Send {
    fn evidence(&mut self) -> Result<Evidence, EnclaveError>;
    /// Rotations of the enclave's session key so far (`EnclaveService::key_epoch`): when it
    /// changes, fetch the evidence again.
    fn key_epoch(&mut self) -> Result<u64, EnclaveError>;
    fn precompute(&mut self, count: usize) -> Result<Vec<SealedPad>, EnclaveError>;
    /// Starts a request on the offered pad (`None`: the enclave's oldest ready pad).
    fn begin(
        &mut self,
        req: &SealedRequest,
        pad: Option<u64>,
    ) -> Result<Step<SealedAnswer>, EnclaveError>;
    fn resume(&mut self, reply: Reply) -> Result<Step<SealedAnswer>, EnclaveError>;
    /// Abandons the request in flight, if any.
    fn abort(&mut self);
    /// Parks the request in flight at its handoff; returns its ticket.
    fn park(&mut self) -> Result<u64, EnclaveError>;
    /// Seals the tail output of a parked request.
    fn finish(&mut self, ticket: u64, output: Tensor) -> Result<SealedAnswer, EnclaveError>;
}

impl<S: Read + Write + Send> EnclaveHandle for RemoteEnclave<S> {
    fn evidence(&mut self) -> Result<Evidence, EnclaveError> {
        RemoteEnclave::evidence(self)
    }
    fn key_epoch(&mut self) -> Result<u64, EnclaveError> {
        RemoteEnclave::key_epoch(self)
    }
    fn precompute(&mut self, count: usize) -> Result<Vec<SealedPad>, EnclaveError> {
        // One pad per message: a VGG-16 pad is tens of MiB, and frames are bounded.
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.extend(RemoteEnclave::precompute(self, 1)?);
        }
        Ok(out)
    }
    fn begin(
        &mut self,
        req: &SealedRequest,
        pad: Option<u64>,
    ) -> Result<Step<SealedAnswer>, EnclaveError> {
        RemoteEnclave::begin_with_pad(self, req, pad)
    }
    fn resume(&mut self, reply: Reply) -> Result<Step<SealedAnswer>, EnclaveError> {
        RemoteEnclave::resume(self, reply)
    }
    fn abort(&mut self) {
        let _ = RemoteEnclave::abort(self);
    }
    fn park(&mut self) -> Result<u64, EnclaveError> {
        RemoteEnclave::park(self)
    }
    fn finish(&mut self, ticket: u64, output: Tensor) -> Result<SealedAnswer, EnclaveError> {
        RemoteEnclave::finish(self, ticket, output)
    }
}
