//! The enclave process's accept loop: one host connection at a time, over a private Unix
//! socket or loopback TCP opened by the link token (`origami_proto::link`). Pads and sessions
//! stay valid across host reconnections, for as long as the process lives.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;

use origami_proto::link::LinkToken;

use crate::service::EnclaveService;

/// Where the enclave listens.
pub enum Listen {
    /// A Unix socket, created with mode 0600 (a stale socket at the path is replaced; any
    /// other file there is an error).
    Unix(PathBuf),
    /// Loopback TCP: a host must present the link token first.
    Tcp(String, LinkToken),
}

/// Binds `listen`, calls `ready` with where it listens (`PATH` or `tcp:ADDR`), then serves
/// host connections one after another, forever. Errors only when it cannot bind.
pub fn run(
    listen: &Listen,
    service: &mut EnclaveService,
    ready: impl FnOnce(String),
) -> std::io::Result<()> {
    match listen {
        Listen::Unix(socket) => {
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
            ready(socket.display().to_string());
            for conn in listener.incoming() {
                match conn {
                    Ok(mut s) => serve_one(service, &mut s),
                    Err(e) => eprintln!("enclave: accept failed: {e}"),
                }
            }
        }
        Listen::Tcp(addr, token) => {
            let listener = std::net::TcpListener::bind(addr)?;
            ready(format!("tcp:{}", listener.local_addr()?));
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
