//! Authenticating the host on a TCP link to the enclave process. Under Gramine-SGX the enclave
//! listens on loopback TCP (its Unix sockets do not reach the host), where any local process
//! could connect and drive it: spend its pads and session-key budget, or hold its one
//! connection. So a TCP link starts with a token the operator gives both sides at start (a file
//! of at least `MIN_TOKEN` bytes, e.g. `openssl rand -hex 32`): the host sends it as the first
//! frame; the enclave compares digests and answers an empty frame, or closes the connection.
//! The token is a secret between the operator's processes only: it protects the enclave's
//! availability from other local users, never a client's privacy (which does not depend on the
//! host at all), so it need not be part of the measurement.

use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::frame::{read_frame, write_frame};
use crate::ProtoError;

/// Where a long-lived enclave process listens and where the host connects: `unix:PATH` (or a
/// bare path) or `tcp:HOST:PORT`. TCP is for Gramine-SGX, whose Unix sockets do not reach the
/// host; bind it to loopback (everything on it is sealed or blinded) and give both sides the same
/// link token, so no other local process can drive the enclave. One type for both ends: the
/// enclave's accept loop binds it, the host's `origami_host::remote::connect` dials it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Unix(std::path::PathBuf),
    Tcp(String),
}

/// Why a string names no endpoint.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("{0}: expected tcp:HOST:PORT")]
    BadTcp(String),
    #[error("empty enclave socket path")]
    EmptyPath,
}

impl std::str::FromStr for Endpoint {
    type Err = EndpointError;
    fn from_str(s: &str) -> Result<Self, EndpointError> {
        if let Some(addr) = s.strip_prefix("tcp:") {
            if addr
                .rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            {
                return Err(EndpointError::BadTcp(s.into()));
            }
            return Ok(Endpoint::Tcp(addr.to_string()));
        }
        let path = s.strip_prefix("unix:").unwrap_or(s);
        if path.is_empty() {
            return Err(EndpointError::EmptyPath);
        }
        Ok(Endpoint::Unix(path.into()))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// Shortest accepted token (bytes of the file, surrounding whitespace trimmed).
pub const MIN_TOKEN: usize = 16;
/// Longest accepted token.
pub const MAX_TOKEN: usize = 1024;

/// A link token, wiped on drop.
pub struct LinkToken(Zeroizing<Vec<u8>>);

impl LinkToken {
    /// Reads a token file: its bytes with surrounding whitespace trimmed, `MIN_TOKEN` to
    /// `MAX_TOKEN` long. The token never appears in an error.
    pub fn read(path: &Path) -> Result<Self, ProtoError> {
        let bad =
            |why: String| ProtoError::Malformed(format!("token file {}: {why}", path.display()));
        let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
        if meta.len() > 4 * MAX_TOKEN as u64 {
            return Err(bad(format!(
                "{} bytes; a token has at most {MAX_TOKEN}",
                meta.len()
            )));
        }
        let raw = Zeroizing::new(std::fs::read(path).map_err(|e| bad(e.to_string()))?);
        let t = raw.trim_ascii();
        if t.len() < MIN_TOKEN || t.len() > MAX_TOKEN {
            return Err(bad(format!(
                "a token has {MIN_TOKEN} to {MAX_TOKEN} bytes (e.g. `openssl rand -hex 32`), this one {}",
                t.len()
            )));
        }
        Ok(Self(Zeroizing::new(t.to_vec())))
    }

    pub fn from_bytes(b: &[u8]) -> Result<Self, ProtoError> {
        if b.len() < MIN_TOKEN || b.len() > MAX_TOKEN {
            return Err(ProtoError::Malformed(format!(
                "a token has {MIN_TOKEN} to {MAX_TOKEN} bytes"
            )));
        }
        Ok(Self(Zeroizing::new(b.to_vec())))
    }

    fn digest(bytes: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"origami/v1/link-token");
        h.update(bytes);
        h.finalize().into()
    }
}

impl std::fmt::Debug for LinkToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkToken { .. }")
    }
}

/// The host's side: sends the token and waits for the enclave's acceptance.
pub fn present(stream: &mut (impl Read + Write), token: &LinkToken) -> Result<(), ProtoError> {
    write_frame(stream, &token.0, MAX_TOKEN)?;
    match read_frame(stream, 0) {
        Ok(Some(_)) => Ok(()),
        Ok(None) | Err(ProtoError::Truncated) => Err(ProtoError::TokenRefused),
        Err(ProtoError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            Err(ProtoError::TokenRefused)
        }
        Err(e) => Err(e),
    }
}

/// The enclave's side: reads the first frame and accepts the link if it is the token
/// (comparing digests, so the comparison's timing says nothing about the token).
pub fn accept(stream: &mut (impl Read + Write), token: &LinkToken) -> Result<bool, ProtoError> {
    let Some(got) = read_frame(stream, MAX_TOKEN)? else {
        return Ok(false);
    };
    let got = Zeroizing::new(got);
    if LinkToken::digest(&got) != LinkToken::digest(&token.0) {
        return Ok(false);
    }
    write_frame(stream, &[], 0)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn only_the_right_token_opens_the_link() {
        let token = LinkToken::from_bytes(b"0123456789abcdef0123").unwrap();
        for (sent, ok) in [
            (&b"0123456789abcdef0123"[..], true),
            (b"0123456789abcdef0124", false),
        ] {
            let (mut host, mut enclave) = UnixStream::pair().unwrap();
            let t = std::thread::spawn(move || {
                let expected = LinkToken::from_bytes(b"0123456789abcdef0123").unwrap();
                accept(&mut enclave, &expected).unwrap()
            });
            let r = present(&mut host, &LinkToken::from_bytes(sent).unwrap());
            let accepted = t.join().unwrap();
            assert_eq!(accepted, ok);
            assert_eq!(r.is_ok(), ok, "{r:?}");
            if !ok {
                assert!(matches!(r, Err(ProtoError::TokenRefused)));
            }
        }
        drop(token);
        // An oversized first frame is refused from its header.
        let (mut host, mut enclave) = UnixStream::pair().unwrap();
        write_frame(&mut host, &[0u8; MAX_TOKEN + 1], MAX_TOKEN + 1).unwrap();
        let expected = LinkToken::from_bytes(b"0123456789abcdef0123").unwrap();
        assert!(matches!(
            accept(&mut enclave, &expected),
            Err(ProtoError::TooLarge { .. })
        ));
        assert!(LinkToken::from_bytes(b"short").is_err());
    }

    #[test]
    fn token_files_are_checked_and_never_echoed() {
        let dir = std::env::temp_dir().join(format!("origami-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t");
        std::fs::write(&p, "secret-but-short\n").unwrap();
        assert!(LinkToken::read(&p).is_ok());
        std::fs::write(&p, "tiny-secret\n").unwrap();
        let e = LinkToken::read(&p).unwrap_err().to_string();
        assert!(!e.contains("tiny-secret"), "{e}");
        assert!(LinkToken::read(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
