//! The enclave process's accept loop: one host connection at a time, over a private Unix
//! socket or loopback TCP opened by the link token (`origami_proto::link`). Pads and sessions
//! stay valid across host reconnections, for as long as the process lives.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};

pub use origami_proto::link::Endpoint;
use origami_proto::link::LinkToken;

use crate::service::EnclaveService;

/// Binds `at`, calls `ready` with where it listens (for TCP the bound address, so port 0
/// works), then serves host connections one after another, forever. A Unix socket is created
/// with mode 0600 (a stale socket at the path is replaced; any other file there is an error);
/// on TCP a host must present `token` first, so TCP requires one. Errors only when it cannot
/// bind.
pub fn run(
    at: &Endpoint,
    token: Option<&LinkToken>,
    service: &mut EnclaveService,
    ready: impl FnOnce(Endpoint),
) -> std::io::Result<()> {
    match at {
        Endpoint::Unix(socket) => {
            if let Ok(meta) = std::fs::symlink_metadata(socket) {
                if !meta.file_type().is_socket() {
                    return Err(std::io::Error::other(format!(
                        "{} exists and is not a socket",
                        socket.display()
                    )));
                }
                std::fs::remove_file(socket)?;
            }
            let listener = std::os::unix::net::UnixListener::bind(socket)?;
            std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
            ready(at.clone());
            for conn in listener.incoming() {
                match conn {
                    Ok(mut s) => serve_one(service, &mut s),
                    Err(e) => eprintln!("enclave: accept failed: {e}"),
                }
            }
        }
        Endpoint::Tcp(addr) => {
            let token = token.ok_or_else(|| {
                std::io::Error::other("a TCP enclave endpoint needs a link token (--token-file)")
            })?;
            let listener = std::net::TcpListener::bind(addr)?;
            ready(Endpoint::Tcp(listener.local_addr()?.to_string()));
            for conn in listener.incoming() {
                match conn {
                    Ok(mut s) => {
                        let _ = s.set_nodelay(true);
                        // The token must come promptly: one connection is served at a time.
                        let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                        match origami_proto::link::accept(&mut s, token) {
                            Ok(true) => {
                                let _ = s.set_read_timeout(None);
                                serve_one(service, &mut s)
                            }
                            Ok(false) => {
                                eprintln!("enclave: refused a connection: wrong link token")
                            }
                            Err(e) => eprintln!("enclave: refused a connection: {e}"),
                        }
                    }
                    Err(e) => eprintln!("enclave: accept failed: {e}"),
                }
            }
        }
    }
    Ok(())
}

fn serve_one(service: &mut EnclaveService, stream: &mut (impl std::io::Read + std::io::Write)) {
    if let Err(e) = crate::process::serve(stream, service, origami_proto::frame::DEFAULT_MAX_FRAME)
    {
        eprintln!("enclave: connection ended: {e}");
    }
}
