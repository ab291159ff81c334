//! `origami serve`: private inference over HTTP, the enclave in its own process (started and
//! supervised here, or attached), in this process only for development.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use origami_host::remote::Endpoint;
use origami_plan::Placement;
use origami_server::supervise;

use crate::common::*;

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on (port 0: a free port, printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    #[arg(long, default_value = "fashion")]
    pub model: String,
    /// enclave | slalom | origami
    #[arg(long, default_value = "slalom")]
    pub mode: String,
    #[arg(long)]
    pub split: Option<usize>,
    #[command(flatten)]
    pub verify: VerifyFlags,
    /// Threads for the enclave's own work (blinding, unblinding, checks, pad precompute) in
    /// the enclave child or --in-process; an attached enclave (--enclave) chose its own.
    #[arg(long, default_value_t = 1)]
    pub enclave_threads: usize,
    /// Most requests taken per worker wake-up.
    #[arg(long, default_value_t = 8)]
    pub max_batch: usize,
    /// Wait for more requests after the first of a batch (ms).
    #[arg(long, default_value_t = 2)]
    pub max_wait_ms: u64,
    /// Pad pool watermarks.
    #[arg(long, default_value_t = 8)]
    pub pad_low: usize,
    #[arg(long, default_value_t = 32)]
    pub pad_high: usize,
    /// Longest a request waits (from arrival) for a pad before failing (ms).
    #[arg(long, default_value_t = 30_000)]
    pub pad_wait_ms: u64,
    /// Run the enclave inside this process (development): by default it runs as its own
    /// process (`origami enclave`) that holds every secret, restarted if it dies.
    #[arg(long, conflicts_with = "enclave")]
    pub in_process: bool,
    /// Attach to a running `origami enclave` (unix:PATH, a path, or tcp:HOST:PORT) instead
    /// of starting one; if the connection fails the server reconnects (new evidence, old
    /// pads discarded). The enclave must serve the same --model/--mode/--split.
    #[arg(long)]
    pub enclave: Option<String>,
    /// The enclave's link token (tcp: endpoints; the file given to `origami enclave
    /// --token-file`).
    #[arg(long, requires = "enclave")]
    pub enclave_token_file: Option<PathBuf>,
    /// Start with the sealed pads of this file (`origami precompute --out`); it must have
    /// been made by the attached enclave instance.
    #[arg(long, requires = "enclave")]
    pub pads: Option<PathBuf>,
    /// Collateral attached to the evidence: DCAP collateral (JSON, dcap-qvl's
    /// QuoteCollateralV3) for sgx-gramine and tdx, verified by clients against Intel's root CA;
    /// for sev-snp, `{"vcek": PEM}` when the guest's certificate table has no VCEK.
    #[arg(long)]
    pub sgx_collateral: Option<PathBuf>,
    /// The attestation platform of the enclave child this server starts: simulated (no TEE:
    /// development only) | tdx | sev-snp (inside a TDX or SEV-SNP confidential VM, through
    /// configfs-tsm; docs/CVM.md). sgx-gramine enclaves are started by Gramine and attached
    /// with --enclave.
    #[arg(long, default_value = "simulated")]
    pub platform: String,
    /// Run the tails of a batch's requests (origami placement) as one accelerator call:
    /// auto (on with --accel cuda, off with cpu, where it only adds latency) | on | off.
    #[arg(long, default_value = "auto")]
    pub tail_batching: String,
    #[arg(long, default_value_t = 4)]
    pub calib: usize,
}

pub fn main(a: Args, accel: Accel) -> Result<()> {
    let batch_tails = match a.tail_batching.as_str() {
        "auto" => accel.is_gpu(),
        "on" => true,
        "off" => false,
        other => bail!("--tail-batching {other:?}: auto | on | off"),
    };
    if a.max_batch == 0 || a.pad_high < a.pad_low || a.pad_high == 0 {
        bail!("--max-batch must be ≥ 1 and --pad-high ≥ --pad-low ≥ 0, with --pad-high ≥ 1");
    }
    let cfg = origami_server::ServerConfig {
        max_batch: a.max_batch,
        max_wait: std::time::Duration::from_millis(a.max_wait_ms),
        pad_low: a.pad_low,
        pad_high: a.pad_high,
        pad_wait: std::time::Duration::from_millis(a.pad_wait_ms),
        pad_file: a.pads.clone(),
        batch_tails,
        sgx_collateral: match &a.sgx_collateral {
            Some(p) => read_collateral(p)?,
            None => String::new(),
        },
        ..Default::default()
    };
    let attach = a
        .enclave
        .as_ref()
        .map(|e| e.parse::<Endpoint>())
        .transpose()?;
    let token = link_token(a.enclave_token_file.clone())?;
    let (listen, model, mode, split, verify, in_process, calib) = (
        a.listen.as_str(),
        a.model.as_str(),
        a.mode.as_str(),
        a.split,
        a.verify.on(),
        a.in_process,
        a.calib,
    );
    use origami_enclave::service::{self_code_id, EnclaveService};
    use origami_host::handle::EnclaveHandle;
    if a.enclave_threads == 0 || a.enclave_threads > 1024 {
        bail!(
            "--enclave-threads must be 1 to 1024, got {}",
            a.enclave_threads
        );
    }
    let platform = a.platform.as_str();
    if !["simulated", "tdx", "sev-snp"].contains(&platform) {
        bail!("--platform {platform:?}: simulated | tdx | sev-snp (sgx-gramine enclaves run under Gramine: attach with --enclave)");
    }
    if platform != "simulated" && (attach.is_some() || in_process) {
        bail!("--platform sets the platform of the enclave child `origami serve` starts; an attached enclave (--enclave) chose its own, and --in-process is simulated only");
    }
    let (m, placement, plan) = served(model, mode, split, calib)?;
    let supervised = if let Some(endpoint) = attach.clone() {
        // The enclave is supervised elsewhere (systemd, Gramine): reconnect when it comes back.
        Some(
            supervise::attach(endpoint.clone(), token)
                .with_context(|| format!("connecting to the enclave at {endpoint}"))?,
        )
    } else if in_process {
        None
    } else {
        let mut args = vec![
            "--model".to_string(),
            model.to_string(),
            "--mode".into(),
            mode.into(),
            "--calib".into(),
            calib.to_string(),
            "--threads".into(),
            a.enclave_threads.to_string(),
            "--platform".into(),
            platform.into(),
        ];
        // The resolved split (the audited default when none was given).
        if let Placement::Origami { split } = placement {
            args.extend(["--split".into(), split.to_string()]);
        }
        if !verify {
            args.push("--no-verify".into());
        }
        let s = supervise::child(&enclave_binary()?, args)?;
        if let Some(g) = &s.guard {
            println!("enclave process: pid {}", g.pid());
        }
        Some(s)
    };
    let (enclave, restart, guard): (Box<dyn EnclaveHandle>, _, _) = match supervised {
        Some(s) => (s.handle, Some(s.restart), s.guard),
        None => {
            let core = origami_enclave::CoreConfig {
                placement,
                verify,
                threads: a.enclave_threads,
            };
            let service = EnclaveService::simulated(plan.clone(), core, self_code_id()?)?;
            // Nothing to restart: the keys die with this process.
            (Box::new(service), None, None)
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let runs_where: String = match (&attach, in_process) {
        (Some(e), _) => format!("attached at {e}"),
        (None, true) => "in this process (development)".into(),
        (None, false) => "own process".into(),
    };
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let running = origami_server::start(
            listener,
            enclave,
            plan,
            placement,
            accel.make()?,
            cfg,
            restart,
        )
        .await?;
        // Ctrl-C, or SIGTERM (what Kubernetes, systemd and `docker stop` send): the same
        // graceful stop, and the enclave child is stopped with the server. Both handlers are
        // in place before the address is printed, so a signal sent as soon as the server says
        // it listens is never the default (fatal) action.
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
        let ev = running.evidence.clone();
        println!("listening on http://{}", running.addr);
        println!(
            "KServe v2: http://{}/v2/models/{} (docs/SERVING.md)",
            running.addr,
            origami_server::v2::url_name(&m.name)
        );
        println!(
            "enclave: platform {} | {} | model {} ({}…) | placement {} | host sees: {}",
            ev.platform.name(),
            runs_where,
            m.name,
            &hex(&ev.measurement.model_hash)[..16],
            placement.name(),
            ev.host_sees
        );
        println!(
            "policy for clients: platform = \"{}\", code_id = \"{}\", model_hash = \"{}\"",
            ev.platform.id(),
            hex(&ev.measurement.code_id),
            hex(&ev.measurement.model_hash)
        );
        running
            .until(async move {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                println!("shutting down: finishing requests in flight");
            })
            .await?;
        Ok::<(), anyhow::Error>(())
    })?;
    drop(guard);
    Ok(())
}

/// Reads the evidence collateral (JSON: DCAP collateral for sgx-gramine and tdx, the VCEK for
/// sev-snp), checking it parses.
fn read_collateral(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
    if meta.len() > origami_proto::sgx::MAX_COLLATERAL as u64 {
        bail!(
            "{}: {} bytes, more than DCAP collateral can be ({} bytes)",
            path.display(),
            meta.len(),
            origami_proto::sgx::MAX_COLLATERAL
        );
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    serde_json::from_str::<serde_json::Value>(&text)
        .with_context(|| format!("{}: not JSON collateral", path.display()))?;
    Ok(text)
}
