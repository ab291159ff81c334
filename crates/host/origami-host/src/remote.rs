//! The host's handle on an enclave process (`origami enclave`): the same `begin`/`resume`
//! steps as the in-process service, carried as frames over a stream (a Unix socket). A dead or
//! misbehaving peer becomes `EnclaveError::Unavailable`, never a hang on a half-read frame.

use std::io::{Read, Write};

use origami_field::SealedPad;
use origami_model::{NodeId, Tensor, ValueId};
use origami_plan::convert::{pad_from_wire, pad_to_wire, tensor_from_wire, tensor_to_wire};
use origami_plan::{EnclaveError, Reply, Step};
use origami_plan::{Handoff, Offload};
use origami_proto::evidence::Evidence;
use origami_proto::frame::{read_frame, write_frame, DEFAULT_MAX_FRAME};
use origami_proto::session::{SealedAnswer, SealedRequest};
use origami_proto::wire::{ErrorKind, FromEnclave, ToEnclave};
use origami_proto::ProtoError;

/// How long the host waits for each reply of an enclave process (and for each write to it)
/// before treating it as failed (`EnclaveError::Unavailable`, which restarts it): the longest
/// single message is one pad's precompute, seconds even for VGG-16.
pub const REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

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
        .map_err(|e| match e {
            // Refused before anything is written: the link is intact, the message (a client's
            // oversized request) is at fault.
            ProtoError::TooLarge { .. } => EnclaveError::BadRequest(e.to_string()),
            other => unavailable(other),
        })?;
        let frame = read_frame(&mut self.stream, self.max_frame)
            .map_err(unavailable)?
            .ok_or_else(|| unavailable("the enclave process closed the connection"))?;
        match origami_proto::decode::<FromEnclave>(&frame).map_err(unavailable)? {
            FromEnclave::Error { kind, detail } => Err(match kind {
                ErrorKind::BadRequest => EnclaveError::BadRequest(detail),
                ErrorKind::PadsExhausted => EnclaveError::PadsExhausted,
                ErrorKind::KeyRetired => EnclaveError::KeyRetired,
                ErrorKind::PadNotReady { pad } => EnclaveError::PadNotReady { pad },
                ErrorKind::Misuse | ErrorKind::Malformed => EnclaveError::Misuse(detail),
                _ => EnclaveError::Crypto(detail),
            }),
            FromEnclave::Failed(sealed) => Err(EnclaveError::Failed(sealed)),
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
                start: NodeId::new(start as usize),
                values: values
                    .into_iter()
                    .map(|(v, t)| Ok((ValueId::new(v as usize), tensor_from_wire(t)?)))
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

    pub fn key_epoch(&mut self) -> Result<u64, EnclaveError> {
        match self.call(&ToEnclave::KeyEpoch)? {
            FromEnclave::KeyEpoch { epoch } => Ok(epoch),
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
        self.begin_with_pad(req, None)
    }

    pub fn begin_with_pad(
        &mut self,
        req: &SealedRequest,
        pad: Option<u64>,
    ) -> Result<Step<SealedAnswer>, EnclaveError> {
        self.step(&ToEnclave::Begin {
            request: req.clone(),
            pad,
        })
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

    pub fn park(&mut self) -> Result<u64, EnclaveError> {
        match self.call(&ToEnclave::Park)? {
            FromEnclave::Parked { ticket } => Ok(ticket),
            other => Err(unavailable(format!("unexpected reply {}", kind(&other)))),
        }
    }

    pub fn finish(&mut self, ticket: u64, output: Tensor) -> Result<SealedAnswer, EnclaveError> {
        match self.call(&ToEnclave::Finish {
            ticket,
            output: tensor_to_wire(output),
        })? {
            FromEnclave::Done(a) => Ok(a),
            other => Err(unavailable(format!("unexpected reply {}", kind(&other)))),
        }
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
        FromEnclave::Parked { .. } => "parked",
        FromEnclave::Error { .. } => "error",
        FromEnclave::Failed(_) => "failed",
        FromEnclave::KeyEpoch { .. } => "key epoch",
    }
}

pub use origami_proto::link::{Endpoint, EndpointError};

/// A connection to an enclave process over either kind of endpoint.
pub enum Conn {
    Unix(std::os::unix::net::UnixStream),
    Tcp(std::net::TcpStream),
}

/// Connects to `endpoint`, with `REPLY_TIMEOUT` on every read and write. A TCP link is opened
/// with the link token (`origami_proto::link`), which it requires; a Unix socket is guarded by
/// its file permissions and takes none.
pub fn connect(
    endpoint: &Endpoint,
    token: Option<&origami_proto::link::LinkToken>,
) -> std::io::Result<Conn> {
    let conn = match endpoint {
        Endpoint::Unix(p) => Conn::Unix(std::os::unix::net::UnixStream::connect(p)?),
        Endpoint::Tcp(a) => {
            let token = token.ok_or_else(|| {
                std::io::Error::other(
                    "a TCP enclave link needs the link token (--enclave-token-file)",
                )
            })?;
            let s = std::net::TcpStream::connect(a)?;
            // Frames are request/response: no Nagle delay.
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(REPLY_TIMEOUT))?;
            s.set_write_timeout(Some(REPLY_TIMEOUT))?;
            let mut s = Conn::Tcp(s);
            origami_proto::link::present(&mut s, token).map_err(|e| match e {
                ProtoError::Io(e) => e,
                other => std::io::Error::other(other.to_string()),
            })?;
            s
        }
    };
    conn.set_timeout(Some(REPLY_TIMEOUT))?;
    Ok(conn)
}

impl Conn {
    /// Bounds every read and write: a hung enclave becomes an error, not a stuck host.
    pub fn set_timeout(&self, t: Option<std::time::Duration>) -> std::io::Result<()> {
        match self {
            Conn::Unix(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
            Conn::Tcp(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Unix(s) => s.flush(),
            Conn::Tcp(s) => s.flush(),
        }
    }
}

#[cfg(test)]
mod endpoint_tests {
    use super::Endpoint;

    #[test]
    fn endpoints_parse_with_clear_errors() {
        assert_eq!(
            "tcp:127.0.0.1:7000".parse::<Endpoint>().unwrap(),
            Endpoint::Tcp("127.0.0.1:7000".into())
        );
        assert_eq!(
            "unix:/run/e.sock".parse::<Endpoint>().unwrap(),
            Endpoint::Unix("/run/e.sock".into())
        );
        assert_eq!(
            "/run/e.sock".parse::<Endpoint>().unwrap(),
            Endpoint::Unix("/run/e.sock".into())
        );
        for bad in ["tcp:7000", "tcp:host:port", "tcp::80", "", "unix:"] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
        }
        assert_eq!(
            "tcp:[::1]:9".parse::<Endpoint>().unwrap().to_string(),
            "tcp:[::1]:9"
        );
    }
}
