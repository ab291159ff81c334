//! Where the server's enclave comes from and how it comes back after a failure: a child
//! process the server starts itself (`child`: the `origami-enclave` binary on a fresh socket in
//! a private directory, killed and started again on failure, with new keys) or an enclave
//! started and supervised elsewhere, e.g. under Gramine (`attach`: reconnect until it is back).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use origami_host::handle::EnclaveHandle;
use origami_host::remote::{connect, Conn, Endpoint, RemoteEnclave, REPLY_TIMEOUT};
use origami_proto::link::LinkToken;

use crate::Restart;

/// How long a started enclave process may take to listen (it calibrates the plan first).
pub const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `attach` keeps reconnecting before a restart fails.
pub const RECONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the enclave process could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SuperviseError {
    #[error("creating the private socket directory {path}: {source}")]
    SocketDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("starting the enclave process {bin}: {source}")]
    Spawn {
        bin: PathBuf,
        source: std::io::Error,
    },
    #[error("the enclave process exited at start ({0})")]
    ExitedAtStart(std::process::ExitStatus),
    #[error("the enclave process did not start listening within {} s", START_TIMEOUT.as_secs())]
    NotListening,
    #[error("the enclave process: {0}")]
    Io(#[from] std::io::Error),
}

/// An enclave ready to serve: its first handle, how to get a new one after a failure, and (for
/// a child process) what stops it when dropped.
pub struct Supervised {
    pub handle: Box<dyn EnclaveHandle>,
    pub restart: Restart,
    pub guard: Option<ChildGuard>,
}

/// Kills the enclave child and removes its private socket directory when dropped.
pub struct ChildGuard {
    child: Arc<Mutex<Child>>,
    dir: PathBuf,
}

impl ChildGuard {
    /// The running child's process id.
    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap_or_else(|p| p.into_inner()).0.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.child.lock().unwrap_or_else(|p| p.into_inner()).stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Child(std::process::Child);

impl Child {
    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the enclave binary `bin` with `args` (plus `--socket`) as a child process and
/// connects to it. The socket lives in a directory created here with mode 0700 (an existing
/// one, e.g. made by another user at a guessed path, is an error, never reused); each start
/// gets a new socket name, so nothing can reach an older instance by its path. The restart
/// stops the old child first (it may still run after a protocol failure).
pub fn child(bin: &Path, args: Vec<String>) -> Result<Supervised, SuperviseError> {
    let dir = std::env::temp_dir().join(format!(
        "origami-serve-{}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&dir)
        .map_err(|source| SuperviseError::SocketDir {
            path: dir.clone(),
            source,
        })?;
    let mut starter = Starter {
        bin: bin.to_path_buf(),
        dir: dir.clone(),
        args,
        starts: 0,
    };
    let (c, conn) = match starter.start() {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    let child = Arc::new(Mutex::new(c));
    let holder = child.clone();
    let restart: Restart = Box::new(move || {
        let mut old = holder.lock().unwrap_or_else(|p| p.into_inner());
        old.stop();
        let (c, conn) = starter.start().map_err(|e| e.to_string())?;
        *old = c;
        Ok(Box::new(RemoteEnclave::new(conn)) as Box<dyn EnclaveHandle>)
    });
    Ok(Supervised {
        handle: Box::new(RemoteEnclave::new(conn)),
        restart,
        guard: Some(ChildGuard { child, dir }),
    })
}

struct Starter {
    bin: PathBuf,
    dir: PathBuf,
    args: Vec<String>,
    starts: usize,
}

impl Starter {
    fn start(&mut self) -> Result<(Child, Conn), SuperviseError> {
        let sock = self.dir.join(format!("enclave-{}.sock", self.starts));
        self.starts += 1;
        let child = std::process::Command::new(&self.bin)
            .arg("--socket")
            .arg(&sock)
            .args(&self.args)
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|source| SuperviseError::Spawn {
                bin: self.bin.clone(),
                source,
            })?;
        let mut child = Child(child);
        let t = Instant::now();
        loop {
            if let Ok(s) = std::os::unix::net::UnixStream::connect(&sock) {
                let conn = Conn::Unix(s);
                conn.set_timeout(Some(REPLY_TIMEOUT))?;
                return Ok((child, conn));
            }
            if let Some(status) = child.0.try_wait()? {
                return Err(SuperviseError::ExitedAtStart(status));
            }
            if t.elapsed() > START_TIMEOUT {
                return Err(SuperviseError::NotListening);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// An enclave started elsewhere, at `endpoint`: connects now, and after a failure reconnects
/// for up to `RECONNECT_TIMEOUT` (new evidence; the old pads are discarded).
pub fn attach(
    endpoint: Endpoint,
    token: Option<Arc<LinkToken>>,
) -> Result<Supervised, std::io::Error> {
    let conn = connect(&endpoint, token.as_deref())?;
    let restart: Restart = Box::new(move || {
        let t = Instant::now();
        loop {
            match connect(&endpoint, token.as_deref()) {
                Ok(c) => return Ok(Box::new(RemoteEnclave::new(c)) as Box<dyn EnclaveHandle>),
                Err(e) if t.elapsed() > RECONNECT_TIMEOUT => {
                    return Err(format!("reconnecting to the enclave at {endpoint}: {e}"))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    });
    Ok(Supervised {
        handle: Box::new(RemoteEnclave::new(conn)),
        restart,
        guard: None,
    })
}
