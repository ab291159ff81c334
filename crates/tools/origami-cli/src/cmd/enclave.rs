//! `origami enclave`: runs the enclave process. The enclave is its own binary
//! (`origami-enclave`, what a TEE measures); this command resolves the audited default split
//! and hands over to it.

use anyhow::Result;
use std::path::PathBuf;

use crate::common::*;

#[derive(clap::Args)]
pub struct Args {
    /// Unix socket path to listen on (created with mode 0600; a stale socket is replaced).
    #[arg(long, conflicts_with = "tcp", required_unless_present = "tcp")]
    pub socket: Option<PathBuf>,
    /// TCP address to listen on instead (Gramine-SGX: its Unix sockets do not reach the
    /// host). Use loopback, e.g. 127.0.0.1:7000. Needs --token-file.
    #[arg(long, requires = "token_file")]
    pub tcp: Option<String>,
    /// The link token a TCP host must present first (a file of 16 to 1024 bytes, e.g.
    /// `openssl rand -hex 32 > token`; the host gets the same file with
    /// --enclave-token-file). Other local processes cannot drive the enclave without it.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// simulated (no TEE: development only; the evidence says so) | sgx-gramine (DCAP
    /// quotes from Gramine's /dev/attestation; see docs/SGX.md) | tdx (TDX quotes from
    /// configfs-tsm inside a TDX confidential VM; docs/CVM.md)
    #[arg(long, default_value = "simulated")]
    pub platform: String,
    /// Gramine's attestation interface (sgx-gramine).
    #[arg(long, default_value = "/dev/attestation")]
    pub attestation_dir: PathBuf,
    #[arg(long, default_value = "fashion")]
    pub model: String,
    /// enclave | slalom | origami
    #[arg(long, default_value = "origami")]
    pub mode: String,
    #[arg(long)]
    pub split: Option<usize>,
    #[command(flatten)]
    pub verify: VerifyFlags,
    #[arg(long, default_value_t = 4)]
    pub calib: usize,
    /// Threads for the enclave's own work (blinding, unblinding, checks, precompute).
    #[arg(long, default_value_t = 1)]
    pub enclave_threads: usize,
}

pub fn main(a: Args) -> Result<()> {
    let Args {
        socket,
        tcp,
        token_file,
        platform,
        attestation_dir,
        model,
        mode,
        split,
        verify,
        calib,
        enclave_threads,
    } = a;
    let no_verify = !verify.on();
    // The enclave runs as its own binary (`origami-enclave`, what a TEE measures);
    // this command resolves the audited default split and hands over.
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    let mut arg = |k: &str, v: std::ffi::OsString| {
        args.push(k.into());
        args.push(v);
    };
    if let Some(p) = socket {
        arg("--socket", p.into());
    }
    if let Some(t) = tcp {
        arg("--tcp", t.into());
    }
    if let Some(f) = token_file {
        arg("--token-file", f.into());
    }
    arg("--platform", platform.into());
    arg("--attestation-dir", attestation_dir.into());
    let split = match (mode.as_str(), split) {
        ("origami", None) => Some(default_split(&load_model(&model)?)),
        (_, k) => k,
    };
    arg("--model", model.into());
    arg("--mode", mode.into());
    arg("--calib", calib.to_string().into());
    arg("--threads", enclave_threads.to_string().into());
    if let Some(k) = split {
        arg("--split", k.to_string().into());
    }
    if no_verify {
        args.push("--no-verify".into());
    }
    let bin = enclave_binary()?;
    // Replaces this process (same pid, same stdout): only returns on failure.
    let err =
        std::os::unix::process::CommandExt::exec(std::process::Command::new(&bin).args(&args));
    Err(anyhow::Error::new(err).context(format!("starting {}", bin.display())))
}
