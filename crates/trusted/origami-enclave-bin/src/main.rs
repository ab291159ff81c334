//! `origami-enclave`: the enclave as its own process, and the binary a TEE measures (the
//! Gramine manifest runs it; `origami enclave` and `origami serve` start it). It loads the
//! model, calibrates the plan the host also builds, draws every key from the OS, and serves the
//! host over a private Unix socket or token-opened loopback TCP, one connection at a time.
//! Everything secret stays in this process. Its dependency closure holds no HTTP, async
//! runtime, GPU loader, image decoder, plotting or training code (`tests/closure.rs`).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Parser;
use origami_enclave::listen::{run, Endpoint};
use origami_enclave::service::{self_code_id, EnclaveService};
use origami_enclave::{CoreConfig, Placement, Plan};
use origami_proto::evidence::{hex, Attester, SimulatedPlatform};

/// The enclave process: serves one host connection at a time over a Unix socket or TCP
/// (length-prefixed frames, bounded decoding), for as long as it lives (pads and sessions stay
/// valid across host reconnections).
#[derive(Parser, Debug)]
#[command(name = "origami-enclave", version)]
struct Args {
    /// Unix socket path to listen on (created with mode 0600; a stale socket is replaced).
    #[arg(long, conflicts_with = "tcp", required_unless_present = "tcp")]
    socket: Option<PathBuf>,
    /// TCP address to listen on instead (Gramine-SGX: its Unix sockets do not reach the host).
    /// Use loopback, e.g. 127.0.0.1:7000. Needs --token-file.
    #[arg(long, requires = "token_file")]
    tcp: Option<String>,
    /// The link token a TCP host must present first (a file of 16 to 1024 bytes, e.g.
    /// `openssl rand -hex 32 > token`).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// simulated (no TEE: development only; the evidence says so) | sgx-gramine (DCAP quotes
    /// from Gramine's /dev/attestation) | tdx (TDX quotes from configfs-tsm, inside a TDX
    /// confidential VM) | sev-snp (SNP reports from configfs-tsm, inside an SEV-SNP VM)
    #[arg(long, default_value = "simulated")]
    platform: String,
    /// Gramine's attestation interface (sgx-gramine).
    #[arg(long, default_value = "/dev/attestation")]
    attestation_dir: PathBuf,
    /// A built-in model name, vgg16@N / vgg19@N, or an ONNX file.
    #[arg(long, default_value = "fashion")]
    model: String,
    /// enclave | slalom | origami (origami needs --split)
    #[arg(long, default_value = "origami")]
    mode: String,
    #[arg(long)]
    split: Option<usize>,
    /// Freivalds integrity checks on every blinded layer: on by default (accepted for
    /// compatibility; `--no-verify` turns them off).
    #[arg(long, overrides_with = "no_verify")]
    verify: bool,
    /// Turn the Freivalds checks off (benchmarks only: the evidence says so and clients'
    /// default policy refuses such an enclave).
    #[arg(long)]
    no_verify: bool,
    /// Seeded calibration inputs (the bundled images are added for 28×28 models).
    #[arg(long, default_value_t = 4)]
    calib: usize,
    /// Threads for the enclave's own work: blinding, unblinding, the Freivalds checks and pad
    /// precompute (SGX enclaves and confidential VMs have many cores). Same results whatever
    /// the count.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn attester(platform: &str, attestation_dir: &std::path::Path) -> Result<Box<dyn Attester>> {
    Ok(match platform {
        "simulated" => Box::new(SimulatedPlatform::new(self_code_id()?)?),
        "sgx-gramine" => Box::new(origami_proto::sgx::GraminePlatform::open(attestation_dir)?),
        "tdx" => Box::new(origami_proto::tdx::TdxPlatform::open()?),
        "sev-snp" => Box::new(origami_proto::snp::SnpPlatform::open()?),
        other => bail!("unknown platform {other:?}: simulated | sgx-gramine | tdx | sev-snp"),
    })
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let a = Args::parse();
    let (listen, token) = match (a.socket, a.tcp) {
        (Some(p), None) => (Endpoint::Unix(p), None),
        (None, Some(addr)) => {
            let path = a.token_file.context("--tcp needs --token-file")?;
            let token = origami_proto::link::LinkToken::read(&path)?;
            (Endpoint::Tcp(addr), Some(token))
        }
        _ => bail!("give exactly one of --socket PATH and --tcp ADDR"),
    };
    let attester = attester(&a.platform, &a.attestation_dir)?;
    if a.mode == "origami" && a.split.is_none() {
        bail!("--mode origami needs --split K (`origami enclave` fills in the audited default)");
    }
    let placement = Placement::parse(&a.mode, a.split)?;
    let model =
        origami_model::zoo::load(&a.model).with_context(|| format!("loading {}", a.model))?;
    if a.calib == 0 {
        bail!("--calib must be at least 1");
    }
    if a.threads == 0 || a.threads > 1024 {
        bail!("--threads must be 1 to 1024, got {}", a.threads);
    }
    let plan = std::sync::Arc::new(Plan::served(model, placement, a.calib)?);
    let (name, model_hash) = (plan.model.name.clone(), plan.model_hash);
    let cfg = CoreConfig {
        placement,
        verify: !a.no_verify,
        threads: a.threads,
    };
    let mut service = EnclaveService::new(plan, cfg, attester)?;
    let ev = service.evidence().clone();
    let banner = |at: Endpoint| {
        println!(
            "enclave process: platform {}; model {} ({}…), placement {}; code id {}…; session key {}…; listening on {at}",
            ev.platform.name(),
            name,
            &hex(&model_hash)[..16],
            placement.name(),
            &hex(&ev.measurement.code_id)[..16],
            &hex(&ev.enclave_key)[..16],
        )
    };
    run(&listen, token.as_ref(), &mut service, banner)
        .with_context(|| format!("listening on {listen}"))
}
