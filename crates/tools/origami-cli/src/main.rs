//! `origami`: private split inference from the command line. Thin: parsing, loading, printing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use origami_accel::CpuAccelerator;
use origami_audit::audit::{AuditConfig, AuditData, AuditReport};
use origami_enclave::{CoreConfig, Placement, Plan, QuantConfig};
use origami_host::bench::{self, BenchConfig, PlacementResult};
use origami_host::local::Engine;
use origami_host::remote::Endpoint;
use origami_host::StageTimes;
use origami_model::{exec, input, npy, onnx, zoo, Model, Op, Tensor};

// Large tensors are allocated per layer; glibc returns them to the OS each time, and the kernel
// then zeroes fresh pages on every request (15–20 % of a VGG-16 run in `perf`). mimalloc with
// purging disabled keeps them for reuse (VGG-16 origami: enclave time −30 %).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h (v2 and v3): −1 = never return freed memory to the OS.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn keep_freed_memory() {
    // SAFETY: sets a plain integer option; mimalloc reads options atomically.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// Bundled Fashion-MNIST test images, the first ten of the test set.
const BUNDLED: [(&str, &[u8]); 10] = origami_model::input::SAMPLE_PNGS;

#[derive(Parser)]
#[command(
    name = "origami",
    version,
    about = "Private split inference: enclave head under one-time pads, plain tail on the accelerator"
)]
struct Cli {
    /// Worker threads for the accelerator (default: RAYON_NUM_THREADS or all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// The untrusted accelerator: cpu | cuda (an NVIDIA GPU through CUDA, loaded at run time;
    /// see docs/GPU.md).
    #[arg(long, global = true, default_value = "cpu")]
    accel: String,
    /// With --accel cuda: let the plain tail's float GEMMs use TF32 tensor cores (faster, ~10
    /// bits of mantissa; field layers are exact int8 whatever this says).
    #[arg(long, global = true)]
    tf32: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// A private inference end to end on a built-in model and a bundled image.
    Demo {
        /// Built-in model: fashion (trained), small, resnet-small, vgg16, vgg19 (or vgg16@N).
        #[arg(long, default_value = "fashion")]
        model: String,
        /// Which bundled Fashion-MNIST test image (0–9) for 28×28 models.
        #[arg(long, default_value_t = 0)]
        image: usize,
    },
    /// One inference with a chosen placement.
    Run {
        /// A .onnx file or a built-in model (small, resnet-small, vgg16, vgg19, vgg16@N).
        #[arg(long)]
        model: String,
        /// enclave | slalom | origami | plain
        #[arg(long, default_value = "origami")]
        mode: String,
        /// For origami: the head holds the first K linear layers (Conv/Gemm), or `auto`: the
        /// split the privacy audit recommended for this model (see --audit).
        #[arg(long)]
        split: Option<String>,
        /// The audit.json that `--split auto` reads (default: ./audit/audit.json, else the
        /// recorded audit of the built-in model).
        #[arg(long)]
        audit: Option<PathBuf>,
        /// Freivalds integrity checks on every blinded layer: on by default (accepted for
        /// compatibility; `--no-verify` turns them off).
        #[arg(long, overrides_with = "no_verify")]
        verify: bool,
        /// Turn the Freivalds checks off (benchmarks only: the evidence says so and clients'
        /// default policy refuses such an enclave).
        #[arg(long)]
        no_verify: bool,
        /// Input: .png, .jpg or .npy (NCHW float32, used as is).
        #[arg(long)]
        input: PathBuf,
        /// Write the output tensor as float32 .npy.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Seeded calibration inputs for the fixed-point scales.
        #[arg(long, default_value_t = 4)]
        calib: usize,
    },
    /// The four placements side by side on one model and input.
    Bench {
        #[arg(long, default_value = "vgg16")]
        model: String,
        /// Input file (default: a seeded random input).
        #[arg(long)]
        input: Option<PathBuf>,
        /// Split for the origami placement (default: after block 2 for VGG, else half the linear layers).
        #[arg(long)]
        split: Option<usize>,
        #[arg(long, default_value_t = 5)]
        iters: usize,
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        /// Freivalds integrity checks on every blinded layer: on by default (accepted for
        /// compatibility; `--no-verify` turns them off).
        #[arg(long, overrides_with = "no_verify")]
        verify: bool,
        /// Turn the Freivalds checks off (benchmarks only: the evidence says so and clients'
        /// default policy refuses such an enclave).
        #[arg(long)]
        no_verify: bool,
        /// Threads of the enclave core.
        #[arg(long, default_value_t = 1)]
        enclave_threads: usize,
        /// Enclave threads for the offline pad precompute before the timed runs (default: the
        /// --enclave-threads); more makes large --batch runs start sooner, timings unchanged.
        #[arg(long)]
        precompute_threads: Option<usize>,
        /// Only these placements (comma-separated: enclave,slalom,origami,plain).
        #[arg(long, default_value = "enclave,slalom,origami,plain")]
        placements: String,
        /// Images per run: heads one by one through the enclave, then one batched tail call
        /// (as the server batches); times are per run and per image.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Write results as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        #[arg(long, default_value_t = 4)]
        calib: usize,
    },
    /// Privacy audit: per candidate split, three attacks rebuild the input from what the host
    /// receives; writes audit.json, grid.png and chart.png and recommends a split.
    Audit {
        /// A .onnx file or a built-in model (single-channel 28×28, sequential).
        #[arg(long, default_value = "fashion")]
        model: String,
        /// `fashion-mnist` (Debian's dataset-fashion-mnist) or a folder of PNG/JPEG images of
        /// the model's input size.
        #[arg(long, default_value = "fashion-mnist")]
        data: String,
        /// `all` or a comma-separated list of splits (linear layers in the enclave).
        #[arg(long, default_value = "all")]
        layers: String,
        #[arg(long, default_value = "audit")]
        out: PathBuf,
        /// A small budget (1 500 training images, 20 scored, 2 epochs): a first look.
        #[arg(long)]
        quick: bool,
        /// Attacker's training images (default: 10 000; --quick: 1 500).
        #[arg(long)]
        train_images: Option<usize>,
        /// Images scored, never used for training (default: 100; --quick: 20).
        #[arg(long)]
        eval_images: Option<usize>,
        /// Training epochs of the decoder and the cGAN (default: 3; --quick: 2).
        #[arg(long)]
        epochs: Option<usize>,
        /// Policy: highest mean SSIM of the strongest attack at a recommended split.
        #[arg(long)]
        max_ssim: Option<f64>,
        /// Policy: highest accuracy of the model on the strongest reconstructions.
        #[arg(long)]
        max_accuracy: Option<f64>,
        #[arg(long, default_value_t = 4)]
        calib: usize,
    },
    /// Run the enclave as its own process: serve the host over a Unix socket or TCP
    /// (length-prefixed frames, bounded decoding), one connection at a time, for as long as it
    /// lives (pads and sessions stay valid across host reconnections). Every secret stays in
    /// this process.
    Enclave {
        /// Unix socket path to listen on (created with mode 0600; a stale socket is replaced).
        #[arg(long, conflicts_with = "tcp", required_unless_present = "tcp")]
        socket: Option<PathBuf>,
        /// TCP address to listen on instead (Gramine-SGX: its Unix sockets do not reach the
        /// host). Use loopback, e.g. 127.0.0.1:7000. Needs --token-file.
        #[arg(long, requires = "token_file")]
        tcp: Option<String>,
        /// The link token a TCP host must present first (a file of 16 to 1024 bytes, e.g.
        /// `openssl rand -hex 32 > token`; the host gets the same file with
        /// --enclave-token-file). Other local processes cannot drive the enclave without it.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// simulated (no TEE: development only; the evidence says so) | sgx-gramine (DCAP
        /// quotes from Gramine's /dev/attestation; see docs/SGX.md)
        #[arg(long, default_value = "simulated")]
        platform: String,
        /// Gramine's attestation interface (sgx-gramine).
        #[arg(long, default_value = "/dev/attestation")]
        attestation_dir: PathBuf,
        #[arg(long, default_value = "fashion")]
        model: String,
        /// enclave | slalom | origami
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
        #[arg(long, default_value_t = 4)]
        calib: usize,
    },
    /// Serve private inference over HTTP: GET /v1/evidence, POST /v1/infer (sealed request →
    /// sealed answer), GET /metrics, GET /healthz. By default the enclave runs as a child
    /// process (`origami enclave`, simulated platform: its evidence says so), restarted if it
    /// dies; `--enclave` attaches to one started separately (e.g. under Gramine-SGX). Ctrl-C
    /// finishes requests in flight, then exits.
    Serve {
        /// Address to listen on (port 0: a free port, printed).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        #[arg(long, default_value = "fashion")]
        model: String,
        /// enclave | slalom | origami
        #[arg(long, default_value = "slalom")]
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
        /// Most requests taken per worker wake-up.
        #[arg(long, default_value_t = 8)]
        max_batch: usize,
        /// Wait for more requests after the first of a batch (ms).
        #[arg(long, default_value_t = 2)]
        max_wait_ms: u64,
        /// Pad pool watermarks.
        #[arg(long, default_value_t = 8)]
        pad_low: usize,
        #[arg(long, default_value_t = 32)]
        pad_high: usize,
        /// Longest a request waits (from arrival) for a pad before failing (ms).
        #[arg(long, default_value_t = 30_000)]
        pad_wait_ms: u64,
        /// Run the enclave inside this process (development): by default it runs as its own
        /// process (`origami enclave`) that holds every secret, restarted if it dies.
        #[arg(long, conflicts_with = "enclave")]
        in_process: bool,
        /// Attach to a running `origami enclave` (unix:PATH, a path, or tcp:HOST:PORT) instead
        /// of starting one; if the connection fails the server reconnects (new evidence, old
        /// pads discarded). The enclave must serve the same --model/--mode/--split.
        #[arg(long)]
        enclave: Option<String>,
        /// The enclave's link token (tcp: endpoints; the file given to `origami enclave
        /// --token-file`).
        #[arg(long, requires = "enclave")]
        enclave_token_file: Option<PathBuf>,
        /// Start with the sealed pads of this file (`origami precompute --out`); it must have
        /// been made by the attached enclave instance.
        #[arg(long, requires = "enclave")]
        pads: Option<PathBuf>,
        /// DCAP collateral (JSON, dcap-qvl's QuoteCollateralV3) attached to sgx-gramine
        /// evidence; clients verify it against Intel's root CA.
        #[arg(long)]
        sgx_collateral: Option<PathBuf>,
        /// Run the tails of a batch's requests (origami placement) as one accelerator call:
        /// auto (on with --accel cuda, off with cpu, where it only adds latency) | on | off.
        #[arg(long, default_value = "auto")]
        tail_batching: String,
        #[arg(long, default_value_t = 4)]
        calib: usize,
    },
    /// Precompute sealed pads on a running `origami enclave` into a file (progress bar), for
    /// `origami serve --enclave … --pads FILE`. The pads are valid for that enclave instance
    /// only: a restarted enclave never accepts them.
    Precompute {
        /// The enclave: unix:PATH, a path, or tcp:HOST:PORT.
        #[arg(long)]
        enclave: String,
        /// The enclave's link token (tcp: endpoints).
        #[arg(long)]
        enclave_token_file: Option<PathBuf>,
        /// Pads to make (each covers every blinded layer of one request).
        #[arg(long, default_value_t = 256)]
        count: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// Private inference against a server: verify its evidence against a policy, send the image
    /// sealed to the enclave, print the answer.
    Infer {
        /// Base URL, e.g. http://127.0.0.1:8080
        #[arg(long)]
        server: String,
        #[arg(long)]
        image: PathBuf,
        /// Policy (TOML): allow_simulated, placements, [[measurements]] code_id / model_hash.
        #[arg(long)]
        policy: PathBuf,
        /// The model the image is prepared for (its input size and normalization).
        #[arg(long, default_value = "fashion")]
        model: String,
    },
    /// Load generator for a server: N concurrent clients (each attested under the policy) send
    /// seeded inputs; prints requests per second and latency percentiles.
    Loadtest {
        #[arg(long)]
        server: String,
        #[arg(long)]
        policy: PathBuf,
        #[arg(long, default_value = "fashion")]
        model: String,
        /// Concurrent clients (comma-separated list: one run each).
        #[arg(long, default_value = "1,8,32")]
        clients: String,
        /// Requests per client.
        #[arg(long, default_value_t = 20)]
        requests: usize,
    },
    /// Print the quantization plan of a model.
    Plan {
        #[arg(long, default_value = "fashion")]
        model: String,
        #[arg(long, default_value_t = 4)]
        calib: usize,
    },
    /// Train the built-in Fashion-MNIST classifier (seeded) and write it as ONNX.
    Train {
        /// Folder with the Fashion-MNIST IDX files (Debian: dataset-fashion-mnist).
        #[arg(long, default_value = origami_train::data::DEFAULT_DIR)]
        data: PathBuf,
        #[arg(long, default_value_t = 8)]
        epochs: usize,
        #[arg(long, default_value_t = 64)]
        batch: usize,
        #[arg(long, default_value_t = 2026)]
        seed: u64,
        /// A small budget: 1 epoch on 6 000 training images, tested on 1 000.
        #[arg(long)]
        quick: bool,
        #[arg(long, default_value = "fashion-small.onnx")]
        out: PathBuf,
    },
    /// Built-in models.
    Zoo {
        #[command(subcommand)]
        cmd: ZooCmd,
    },
}

#[derive(Subcommand)]
enum ZooCmd {
    /// List the built-in models.
    List,
    /// Write a built-in model as ONNX (opset 18).
    Export { name: String, out: PathBuf },
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Exit quietly when stdout is closed early (`origami bench | head`) instead of panicking in
/// `println!`: restore the default SIGPIPE action, which Rust's runtime sets to ignore.
fn default_sigpipe() {
    // SAFETY: installs the default handler for one signal before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn real_main() -> Result<()> {
    default_sigpipe();
    let cli = Cli::parse();
    // Benchmarks keep freed pages (no purge stalls); the enclave process gives back what it
    // frees (the head-only plan drops the tail's weights after calibration).
    if !matches!(cli.cmd, Cmd::Enclave { .. }) {
        keep_freed_memory();
    }
    if let Some(n) = cli.threads {
        if n == 0 {
            bail!("--threads must be at least 1");
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("setting up the thread pool")?;
    }
    let accel = match (cli.accel.as_str(), cli.tf32) {
        ("cpu", false) => AccelChoice::Cpu,
        ("cpu", true) => bail!("--tf32 needs --accel cuda (the CPU tail is always f32)"),
        ("cuda", tf32_tail) => AccelChoice::Cuda { tf32_tail },
        (other, _) => bail!("unknown accelerator {other:?}: cpu | cuda"),
    };
    let _ = ACCEL.set(accel);
    match cli.cmd {
        Cmd::Demo { model, image } => demo(&model, image),
        Cmd::Run {
            model,
            mode,
            split,
            audit,
            verify: _,
            no_verify,
            input,
            output,
            calib,
        } => run(
            &model,
            &mode,
            split.as_deref(),
            audit.as_deref(),
            !no_verify,
            &input,
            output.as_deref(),
            calib,
        ),
        Cmd::Bench {
            model,
            input,
            split,
            iters,
            warmup,
            verify: _,
            no_verify,
            enclave_threads,
            precompute_threads,
            placements,
            batch,
            json,
            calib,
        } => run_bench(
            &model,
            input.as_deref(),
            split,
            iters,
            warmup,
            !no_verify,
            enclave_threads,
            precompute_threads.unwrap_or(enclave_threads),
            &placements,
            batch,
            json.as_deref(),
            calib,
        ),
        Cmd::Audit {
            model,
            data,
            layers,
            out,
            quick,
            train_images,
            eval_images,
            epochs,
            max_ssim,
            max_accuracy,
            calib,
        } => {
            let mut cfg = if quick {
                AuditConfig::quick()
            } else {
                AuditConfig::full()
            };
            cfg.layers = parse_layers(&layers)?;
            if let Some(n) = train_images {
                cfg.n_train = n;
            }
            if let Some(n) = eval_images {
                cfg.n_eval = n;
            }
            if let Some(e) = epochs {
                cfg.decoder.epochs = e;
                cfg.gan.epochs = e;
            }
            if let Some(v) = max_ssim {
                cfg.policy.max_ssim = v;
            }
            if let Some(v) = max_accuracy {
                cfg.policy.max_accuracy = v;
            }
            audit(&model, &data, &out, &cfg, calib)
        }
        Cmd::Enclave {
            socket,
            tcp,
            token_file,
            platform,
            attestation_dir,
            model,
            mode,
            split,
            verify: _,
            no_verify,
            calib,
        } => {
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
            if let Some(k) = split {
                arg("--split", k.to_string().into());
            }
            if no_verify {
                args.push("--no-verify".into());
            }
            let bin = enclave_binary()?;
            // Replaces this process (same pid, same stdout): only returns on failure.
            let err = std::os::unix::process::CommandExt::exec(
                std::process::Command::new(&bin).args(&args),
            );
            Err(anyhow::Error::new(err).context(format!("starting {}", bin.display())))
        }
        Cmd::Precompute {
            enclave,
            enclave_token_file,
            count,
            out,
        } => precompute(
            &enclave,
            link_token(enclave_token_file)?.as_deref(),
            count,
            &out,
        ),
        Cmd::Serve {
            listen,
            model,
            mode,
            split,
            verify: _,
            no_verify,
            max_batch,
            max_wait_ms,
            pad_low,
            pad_high,
            pad_wait_ms,
            in_process,
            enclave,
            enclave_token_file,
            pads,
            sgx_collateral,
            tail_batching,
            calib,
        } => {
            let batch_tails = match tail_batching.as_str() {
                "auto" => matches!(ACCEL.get(), Some(AccelChoice::Cuda { .. })),
                "on" => true,
                "off" => false,
                other => bail!("--tail-batching {other:?}: auto | on | off"),
            };
            if max_batch == 0 || pad_high < pad_low || pad_high == 0 {
                bail!(
                    "--max-batch must be ≥ 1 and --pad-high ≥ --pad-low ≥ 0, with --pad-high ≥ 1"
                );
            }
            let cfg = origami_server::ServerConfig {
                max_batch,
                max_wait: std::time::Duration::from_millis(max_wait_ms),
                pad_low,
                pad_high,
                pad_wait: std::time::Duration::from_millis(pad_wait_ms),
                pad_file: pads,
                batch_tails,
                sgx_collateral: match &sgx_collateral {
                    Some(p) => read_collateral(p)?,
                    None => String::new(),
                },
                ..Default::default()
            };
            let attach = enclave
                .map(|e| e.parse::<Endpoint>().map_err(anyhow::Error::msg))
                .transpose()?;
            let token = link_token(enclave_token_file)?;
            serve(
                &listen, &model, &mode, split, !no_verify, cfg, in_process, attach, token, calib,
            )
        }
        Cmd::Infer {
            server,
            image,
            policy,
            model,
        } => infer_remote(&server, &image, &policy, &model),
        Cmd::Loadtest {
            server,
            policy,
            model,
            clients,
            requests,
        } => loadtest(&server, &policy, &model, &clients, requests),
        Cmd::Plan { model, calib } => {
            let m = load_model(&model)?;
            let plan = build_plan(&m, calib)?;
            println!(
                "model {} ({} linear layers), plan hash {}",
                m.name,
                plan.linears.len(),
                hex(&plan.hash[..8])
            );
            print!("{}", plan.summary());
            Ok(())
        }
        Cmd::Train {
            data,
            epochs,
            batch,
            seed,
            quick,
            out,
        } => train(&data, epochs, batch, seed, quick, &out),
        Cmd::Zoo { cmd: ZooCmd::List } => {
            for n in zoo::NAMES {
                let m = zoo::by_name(n).context("zoo")?;
                println!(
                    "{n:<14} input {:?}  {} linear layers  {:.3} GMAC",
                    m.input_shape,
                    m.linear_nodes().len(),
                    m.macs()? as f64 / 1e9
                );
            }
            println!("(vgg16@N / vgg19@N: the same network at N×N input, N a multiple of 32)");
            Ok(())
        }
        Cmd::Zoo {
            cmd: ZooCmd::Export { name, out },
        } => {
            let m = load_model(&name)?;
            onnx::save(&m, &out)?;
            println!(
                "wrote {} ({}) to {}",
                m.name,
                hex(&m.hash()[..8]),
                out.display()
            );
            Ok(())
        }
    }
}

/// The accelerator chosen with `--accel`.
static ACCEL: std::sync::OnceLock<AccelChoice> = std::sync::OnceLock::new();

/// `--accel` (and `--tf32`).
#[derive(Clone, Copy, Debug)]
enum AccelChoice {
    Cpu,
    Cuda { tf32_tail: bool },
}

/// A new accelerator of the chosen kind; `cuda` says clearly why it cannot start.
fn accelerator() -> Result<Box<dyn origami_accel::Accelerator>> {
    match ACCEL.get().copied().unwrap_or(AccelChoice::Cpu) {
        AccelChoice::Cuda { tf32_tail } => Ok(Box::new(
            origami_cuda::CudaAccelerator::with_options(0, origami_cuda::CudaOptions { tf32_tail })
                .context("--accel cuda: no usable NVIDIA GPU (use --accel cpu, the default)")?,
        )),
        AccelChoice::Cpu => Ok(Box::new(CpuAccelerator::new())),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn load_model(spec: &str) -> Result<Model> {
    zoo::load(spec).with_context(|| format!("loading {spec}"))
}

/// Calibration inputs (`zoo::calibration`: seeded inputs, plus the bundled images for 28×28
/// models), shared with the enclave binary.
fn calibration(model: &Model, n: usize) -> Result<Vec<Tensor>> {
    let v = zoo::calibration(model, n);
    if v.is_empty() {
        bail!("--calib must be at least 1");
    }
    Ok(v)
}

fn build_plan(model: &Model, calib: usize) -> Result<Arc<Plan>> {
    let c = calibration(model, calib)?;
    Ok(Arc::new(Plan::build(model, &c, QuantConfig::default())?))
}

/// The recorded audit of the built-in model (`origami audit` with its defaults).
const RECORDED_AUDIT: &str = include_str!("../../../../docs/audit/audit.json");

fn recorded_audit() -> Result<AuditReport> {
    serde_json::from_str(RECORDED_AUDIT).context("the recorded audit (docs/audit/audit.json)")
}

/// The split the audit recommended for `model`: from `path` (default ./audit/audit.json when it
/// exists), else from the recorded audit of the built-in model.
fn audited_split(model: &Model, path: Option<&Path>) -> Result<(usize, String)> {
    let default = Path::new("audit/audit.json");
    let (report, from) = match path {
        Some(p) => (origami_audit::report::load(p)?, p.display().to_string()),
        None if default.exists() => (
            origami_audit::report::load(default)?,
            default.display().to_string(),
        ),
        None => (recorded_audit()?, "docs/audit/audit.json (recorded)".into()),
    };
    Ok((recommended(&report, model, &from)?, from))
}

/// The recommended split of `report`, checked to be an audit of `model`.
fn recommended(report: &AuditReport, model: &Model, from: &str) -> Result<usize> {
    let hash = origami_audit::audit::hex(&model.hash());
    if report.model_hash != hash {
        bail!(
            "{from} audits model {} ({}…), not {} ({}…): run `origami audit --model …` for this model first",
            report.model,
            report.model_hash.get(..16).unwrap_or(&report.model_hash),
            model.name,
            &hash[..16]
        );
    }
    match report.recommended_split {
        Some(k) => Ok(k),
        None => bail!(
            "the audit in {from} found no split of {} within its policy (max SSIM {}, max accuracy {}); \
             choose --split K yourself or audit with another policy",
            model.name,
            report.policy.max_ssim,
            report.policy.max_accuracy
        ),
    }
}

/// What the recorded audit says about `split` of `model`.
fn audit_verdict(model: &Model, split: usize) -> String {
    let report = match recorded_audit() {
        Ok(r) if r.model_hash == origami_audit::audit::hex(&model.hash()) => r,
        _ => {
            return format!(
                "privacy: {} has no recorded audit; run `origami audit --model …` before trusting a split",
                model.name
            )
        }
    };
    let at = report
        .layers
        .iter()
        .find(|l| l.split == split)
        .map(|l| {
            let s = l.strongest();
            format!(
                "at split {split} the strongest attack ({}) rebuilds the input with SSIM {:.2}",
                s.attack, s.ssim
            )
        })
        .unwrap_or_else(|| format!("split {split} was not audited"));
    let verdict = match report.recommended_split {
        Some(k) => format!("recommended split {k}"),
        None => format!(
            "no split passes the default policy (SSIM ≤ {}); for full privacy use --mode slalom",
            report.policy.max_ssim
        ),
    };
    format!("privacy (audit, docs/AUDIT.md): {at}; {verdict}")
}

fn default_split(model: &Model) -> usize {
    // The audit's recommendation when the recorded audit covers this model and found one; else
    // after the second pooling block (VGG-16: block 2, split 4). That fallback shows the
    // mechanism and is not a privacy claim: on the built-in model the audit finds no private
    // split (docs/AUDIT.md), and the demo prints that verdict.
    if let Some(k) = recorded_audit()
        .ok()
        .and_then(|r| recommended(&r, model, "").ok())
    {
        return k;
    }
    let pools: Vec<usize> = model
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| matches!(n.op, Op::MaxPool(_) | Op::AvgPool(_) | Op::GlobalAvgPool))
        .map(|(i, _)| i)
        .collect();
    let lin = model.linear_nodes().len();
    let before = |i: usize| model.nodes[..i].iter().filter(|n| n.op.is_linear()).count();
    match pools.get(1).or(pools.first()) {
        Some(&i) if before(i) > 0 && before(i) < lin => before(i),
        _ => (lin / 2).max(1),
    }
}

fn print_answer(model: &Model, out: &Tensor) {
    let probs = if model
        .nodes
        .get(model.output - 1)
        .is_some_and(|n| matches!(n.op, Op::Softmax))
    {
        out.clone()
    } else {
        let mut p = out.clone();
        let last = *p.shape.last().unwrap_or(&1);
        for row in p.data.chunks_mut(last.max(1)) {
            exec::softmax_in_place(row);
        }
        p
    };
    println!("top-5:");
    for (i, (c, prob)) in probs.top_k(5)[0].iter().enumerate() {
        let label = model
            .labels
            .as_ref()
            .and_then(|l| l.get(*c))
            .map(String::as_str)
            .unwrap_or("");
        println!("  {}. class {c:>4} {label:<14} p = {prob:.4}", i + 1);
    }
}

fn print_times(st: &StageTimes, precompute_ms: f64) {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    println!("time (ms): total {:.2} | enclave {:.2} | blinded layers on accelerator {:.2} ({} offloads, {:.1} MiB out) | plain tail {:.2}", ms(st.total), ms(st.enclave), ms(st.field), st.offloads, st.bytes_out as f64 / (1 << 20) as f64, ms(st.tail));
    println!(
        "offline precompute (u = W·r in the enclave, sealed): {precompute_ms:.2} ms per image"
    );
}

fn infer_once(
    model: &Model,
    plan: Arc<Plan>,
    placement: Placement,
    verify: bool,
    x: Tensor,
) -> Result<(Tensor, StageTimes, f64, Engine)> {
    let cfg = CoreConfig {
        placement,
        verify,
        threads: 1,
    };
    let mut engine = Engine::new(plan, cfg, accelerator()?)?;
    let pre = engine.precompute(1)?;
    let (out, st) = engine
        .infer(x)
        .with_context(|| format!("private inference on {}", model.name))?;
    Ok((out, st, pre.as_secs_f64() * 1e3, engine))
}

fn demo(name: &str, image_index: usize) -> Result<()> {
    let model = load_model(name)?;
    if image_index >= BUNDLED.len() {
        bail!("--image must be 0–{}", BUNDLED.len() - 1);
    }
    let (img_name, x) = if model.input_shape[1..] == [28, 28] {
        let (n, bytes) = BUNDLED[image_index];
        (
            n.to_string(),
            input::image_to_tensor(&image::load_from_memory(bytes)?, &model),
        )
    } else {
        (
            "seeded random image".to_string(),
            zoo::seeded_input(&model, 1),
        )
    };
    let split = default_split(&model);
    let placement = Placement::Origami { split };
    println!(
        "origami demo: model {} ({} linear layers, {:.3} GMAC), input {img_name}",
        model.name,
        model.linear_nodes().len(),
        model.macs()? as f64 / 1e9
    );
    if name == "fashion" {
        println!("weights: trained on Fashion-MNIST by `origami train` (the image's true class is in its file name)");
    } else {
        println!("weights: seeded, untrained (labels are not meaningful)");
    }
    let t = Instant::now();
    let plan = build_plan(&model, 4)?;
    println!(
        "plan: calibrated and quantized in {:.1} ms (hash {})",
        t.elapsed().as_secs_f64() * 1e3,
        hex(&plan.hash[..8])
    );
    let head_end = placement.head_end(&plan)?;
    println!(
        "placement: {} — enclave runs nodes 0..{head_end} ({}), accelerator runs the rest in plain; blinded layers verified (Freivalds)",
        placement.name(),
        plan.model.nodes[..head_end].iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ")
    );
    println!("enclave platform: in-process, NO TEE (simulation for development)");
    println!("{}", audit_verdict(&model, split));
    let (out, st, pre, engine) = infer_once(&model, plan.clone(), placement, true, x.clone())?;
    print_answer(&model, &out);
    print_times(&st, pre);
    let s = engine.core.stats();
    println!(
        "enclave core memory: {:.2} MiB resident + {:.2} MiB peak per request ({:.2} MiB peak while precomputing)",
        s.static_bytes as f64 / 1048576.0,
        s.peak_request_bytes as f64 / 1048576.0,
        s.peak_precompute_bytes as f64 / 1048576.0
    );
    let want = origami_enclave::reference(&plan, &x, head_end, 1)?;
    println!(
        "check: result is bit-identical to the quantized reference: {}",
        if want == out { "yes" } else { "NO" }
    );
    if want != out {
        bail!("the private result differs from the reference");
    }
    if let Some(labels) = &model.labels {
        if let Some(&(c, _)) = out.top_k(1)[0].first() {
            println!(
                "answer: {}",
                labels.get(c).map(String::as_str).unwrap_or("?")
            );
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn run(
    model: &str,
    mode: &str,
    split: Option<&str>,
    audit_path: Option<&Path>,
    verify: bool,
    input_path: &Path,
    output: Option<&Path>,
    calib: usize,
) -> Result<()> {
    let m = load_model(model)?;
    let split = match split {
        None => None,
        Some("auto") => {
            let (k, from) = audited_split(&m, audit_path)?;
            println!("--split auto: split {k}, recommended by the audit in {from}");
            Some(k)
        }
        Some(s) => Some(
            s.parse()
                .with_context(|| format!("--split takes a number or `auto`, got '{s}'"))?,
        ),
    };
    let placement = Placement::parse(mode, split)?;
    if let Placement::Origami { split } = placement {
        println!("{}", audit_verdict(&m, split));
    }
    let x = input::load_input(input_path, &m)?;
    let t = Instant::now();
    let plan = build_plan(&m, calib)?;
    let plan_ms = t.elapsed().as_secs_f64() * 1e3;
    println!(
        "model {} | placement {} | verify {} | plan {:.1} ms",
        m.name,
        placement.name(),
        if verify { "on" } else { "off" },
        plan_ms
    );
    let (out, st, pre, _) = infer_once(&m, plan, placement, verify, x)?;
    print_answer(&m, &out);
    print_times(&st, pre);
    if let Some(p) = output {
        npy::write_npy(p, &out)?;
        println!("wrote output {:?} to {}", out.shape, p.display());
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn run_bench(
    model: &str,
    input_path: Option<&Path>,
    split: Option<usize>,
    iters: usize,
    warmup: usize,
    verify: bool,
    enclave_threads: usize,
    precompute_threads: usize,
    placements: &str,
    batch: usize,
    json: Option<&Path>,
    calib: usize,
) -> Result<()> {
    if iters == 0 || enclave_threads == 0 || precompute_threads == 0 || batch == 0 {
        bail!("--iters, --enclave-threads, --precompute-threads and --batch must be at least 1");
    }
    if batch > 1024 {
        bail!("--batch {batch}: at most 1024 images per run");
    }
    let m = load_model(model)?;
    let x = match input_path {
        Some(p) => input::load_input(p, &m)?,
        None => zoo::seeded_input(&m, 42),
    };
    let split = split.unwrap_or_else(|| default_split(&m));
    let mut list = Vec::new();
    for p in placements.split(',').map(str::trim) {
        list.push(match p {
            "origami" => Placement::Origami { split },
            other => Placement::parse(other, None)?,
        });
    }
    let accel_name = accelerator()?.name();
    println!("bench: model {} ({:.2} GMAC), accelerator {accel_name}, enclave {enclave_threads} thread(s) (precompute {precompute_threads}), verify {verify}, batch {batch}, {warmup} warm-up + {iters} runs", m.name, m.macs()? as f64 / 1e9);
    let t = Instant::now();
    let plan = build_plan(&m, calib)?;
    println!("plan built in {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
    let cfg = BenchConfig {
        placements: list,
        warmup,
        iters,
        verify,
        enclave_threads,
        precompute_threads,
        batch,
    };
    let bar = ProgressBar::new((cfg.placements.len() * (warmup + iters)) as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let make =
        || accelerator().map_err(|e| origami_accel::AccelError::Unavailable(format!("{e:#}")));
    let results = bench::run(plan, &x, &cfg, &make, |name, _, _| {
        bar.set_message(name.to_string());
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    println!(
        "{:<20} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12} {:>14}",
        "placement",
        "median ms",
        "per image",
        "enclave",
        "blinded",
        "tail",
        "precompute",
        "enclave MiB*"
    );
    for r in &results {
        println!(
            "{:<20} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>12.2} {:>14.2}",
            r.placement,
            r.median_ms,
            r.per_image_ms,
            r.enclave_ms,
            r.field_ms,
            r.tail_ms,
            r.precompute_ms_per_image,
            (r.enclave_static_bytes
                + r.enclave_peak_request_bytes
                    .max(r.enclave_peak_precompute_bytes)) as f64
                / 1048576.0
        );
    }
    println!("* enclave core peak: resident weights and probes + the larger of per-request and precompute buffers");
    let find = |p: &str| results.iter().find(|r| r.placement.starts_with(p));
    let mut ratios = serde_json::Map::new();
    if let Some(e) = find("enclave") {
        for r in &results {
            if r.placement != e.placement {
                ratios.insert(
                    format!("enclave/{}", r.placement),
                    (e.median_ms / r.median_ms).into(),
                );
            }
        }
    }
    if let (Some(o), Some(p)) = (find("origami"), find("plain")) {
        ratios.insert("origami/plain".into(), (o.median_ms / p.median_ms).into());
    }
    if let (Some(s), Some(o)) = (find("slalom"), find("origami")) {
        ratios.insert("slalom/origami".into(), (s.median_ms / o.median_ms).into());
    }
    for (k, v) in &ratios {
        println!("ratio {k}: {:.2}x", v.as_f64().unwrap_or(0.0));
    }
    if let Some(path) = json {
        let doc = serde_json::json!({
            "model": m.name,
            "gmac": m.macs()? as f64 / 1e9,
            "input": input_path.map(|p| p.display().to_string()).unwrap_or_else(|| "seeded".into()),
            "accelerator": accel_name,
            "enclave_threads": enclave_threads,
            "precompute_threads": precompute_threads,
            "batch": batch,
            "verify": verify,
            "warmup": warmup,
            "iters": iters,
            "results": results.iter().collect::<Vec<&PlacementResult>>(),
            "ratios": ratios,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn train(
    data: &Path,
    epochs: usize,
    batch: usize,
    seed: u64,
    quick: bool,
    out: &Path,
) -> Result<()> {
    use origami_train::{data as fm, TrainConfig};
    let mut train_set = fm::load(data, fm::Split::Train)?;
    let mut test_set = fm::load(data, fm::Split::Test)?;
    let epochs = if quick { 1 } else { epochs };
    if quick {
        train_set = train_set.truncate(6000);
        test_set = test_set.truncate(1000);
    }
    let cfg = TrainConfig {
        epochs,
        batch,
        seed,
        ..TrainConfig::default()
    };
    let mut model = zoo::small();
    model.name = "fashion-small".into();
    println!(
        "training {} on {} images ({} test), {epochs} epoch(s), batch {batch}, seed {seed}, {} threads",
        model.name,
        train_set.len(),
        test_set.len(),
        rayon::current_num_threads()
    );
    let bar = ProgressBar::new((train_set.len().div_ceil(batch) * epochs) as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed} < {eta}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let t = Instant::now();
    let reports = origami_train::train(&mut model, &train_set, &test_set, &cfg, |p| {
        bar.set_message(format!(
            "epoch {} loss {:.3} acc {:.3}",
            p.epoch + 1,
            p.loss,
            p.accuracy
        ));
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    for r in &reports {
        println!(
            "epoch {}: train loss {:.4}, train accuracy {:.4}, test accuracy {:.4}",
            r.epoch + 1,
            r.train_loss,
            r.train_accuracy,
            r.test_accuracy
        );
    }
    onnx::save(&model, out)?;
    println!(
        "trained in {:.0} s; wrote {} ({})",
        t.elapsed().as_secs_f64(),
        out.display(),
        hex(&model.hash()[..8])
    );
    Ok(())
}

fn parse_layers(s: &str) -> Result<Option<Vec<usize>>> {
    if s == "all" {
        return Ok(None);
    }
    let v = s
        .split(',')
        .map(|k| {
            k.trim()
                .parse::<usize>()
                .with_context(|| format!("--layers takes `all` or numbers like 1,2,4; got '{k}'"))
        })
        .collect::<Result<Vec<_>>>()?;
    if v.is_empty() {
        bail!("--layers is empty");
    }
    Ok(Some(v))
}

/// Progress bars for the audit: one per stage.
struct AuditBars {
    bar: std::sync::Mutex<Option<ProgressBar>>,
}

impl origami_audit::audit::Progress for AuditBars {
    fn stage(&self, name: &str, total: usize) {
        let mut b = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = b.take() {
            old.finish();
        }
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:<20} {bar:30} {pos}/{len} {msg} [{elapsed} < {eta}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(name.to_string());
        *b = Some(bar);
    }
    fn advance(&self, done: usize, message: &str) {
        let b = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bar) = b.as_ref() {
            bar.set_position(done as u64);
            if !message.is_empty() {
                bar.set_message(message.to_string());
            }
        }
    }
}

fn audit(model: &str, data: &str, out: &Path, cfg: &AuditConfig, calib: usize) -> Result<()> {
    let m = load_model(model)?;
    let ds = if data == "fashion-mnist" {
        AuditData::fashion_mnist(
            Path::new(origami_train::data::DEFAULT_DIR),
            cfg.n_train,
            cfg.n_eval,
        )
        .context("Fashion-MNIST (apt-get install dataset-fashion-mnist, or --data DIR)")?
    } else {
        AuditData::folder(Path::new(data), &m, cfg.n_train, cfg.n_eval)?
    };
    let plan = build_plan(&m, calib)?;
    println!(
        "auditing {} on {}: {} training images, {} scored, {} threads",
        m.name,
        ds.source,
        ds.n_train(),
        ds.n_eval(),
        rayon::current_num_threads()
    );
    let bars = AuditBars {
        bar: std::sync::Mutex::new(None),
    };
    let (report, gallery) = origami_audit::audit::run(&plan, &ds, cfg, &bars)?;
    if let Some(b) = bars.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
        b.finish();
    }
    println!(
        "baselines: blank image SSIM {:.3}, class-mean image (label only) SSIM {:.3}",
        report.baselines.blank_ssim, report.baselines.class_mean_ssim
    );
    println!("split  last node    strongest   ssim   psnr dB  accuracy  (decoder / cgan / white-box ssim)  policy");
    for l in &report.layers {
        let s = l.strongest();
        let per: Vec<String> = l.attacks.iter().map(|a| format!("{:.3}", a.ssim)).collect();
        println!(
            "{:>5}  {:<11}  {:<9}  {:.3}  {:>7.1}  {:>8.2}  ({})  {}",
            l.split,
            l.last_node,
            s.attack,
            s.ssim,
            s.psnr,
            s.accuracy,
            per.join(" / "),
            if l.split == 0 {
                "sanity row"
            } else if l.passes {
                "passes"
            } else {
                "fails"
            }
        );
    }
    match report.recommended_split {
        Some(k) => println!(
            "recommended split: {k} (max SSIM {}, max accuracy {})",
            report.policy.max_ssim, report.policy.max_accuracy
        ),
        None => println!(
            "no split passes the policy (max SSIM {}, max accuracy {}): keep the whole network in the enclave (--mode slalom)",
            report.policy.max_ssim, report.policy.max_accuracy
        ),
    }
    let paths = origami_audit::report::write(&report, &gallery, out)?;
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    println!(
        "audit took {:.0} s; wrote {}",
        report.seconds,
        names.join(", ")
    );
    Ok(())
}

/// The model, placement (origami's split defaults as in `demo`) and plan an enclave serves.
fn served(
    model: &str,
    mode: &str,
    split: Option<usize>,
    calib: usize,
) -> Result<(Model, Placement, Arc<Plan>)> {
    let m = load_model(model)?;
    let placement = served_placement(&m, mode, split)?;
    let plan = build_plan(&m, calib)?;
    Ok((m, placement, plan))
}

/// The placement `serve`/`enclave` run: `origami` without `--split` takes the model's default.
fn served_placement(m: &Model, mode: &str, split: Option<usize>) -> Result<Placement> {
    let split = match (mode, split) {
        ("origami", None) => Some(default_split(m)),
        _ => split,
    };
    Ok(Placement::parse(mode, split)?)
}

/// The enclave binary (`origami-enclave`), installed next to this one.
fn enclave_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the origami binary")?;
    let bin = exe.with_file_name("origami-enclave");
    if !bin.is_file() {
        bail!(
            "the enclave binary {} is missing: build it next to origami (cargo build --release -p origami-cli -p origami-enclave-bin)",
            bin.display()
        );
    }
    Ok(bin)
}

/// The link token of `--enclave-token-file`, if given.
fn link_token(path: Option<PathBuf>) -> Result<Option<Arc<origami_proto::link::LinkToken>>> {
    Ok(match path {
        Some(p) => Some(Arc::new(origami_proto::link::LinkToken::read(&p)?)),
        None => None,
    })
}

/// Reads DCAP collateral (JSON) for sgx-gramine evidence, checking it parses.
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
        .with_context(|| format!("{}: not JSON DCAP collateral", path.display()))?;
    Ok(text)
}

/// `origami precompute`: sealed pads from a running enclave into a file, with progress.
fn precompute(
    enclave: &str,
    token: Option<&origami_proto::link::LinkToken>,
    count: usize,
    out: &Path,
) -> Result<()> {
    use origami_host::remote::RemoteEnclave;
    let endpoint: Endpoint = enclave.parse().map_err(anyhow::Error::msg)?;
    if count == 0 {
        bail!("--count must be at least 1");
    }
    let conn = endpoint
        .connect(token)
        .with_context(|| format!("connecting to the enclave at {endpoint}"))?;
    let mut remote = RemoteEnclave::new(conn);
    let ev = remote.evidence()?;
    println!(
        "enclave at {endpoint}: platform {} | placement {} | instance {}",
        ev.platform.name(),
        ev.measurement.placement,
        hex(&ev.instance)
    );
    let bar = ProgressBar::new(count as u64).with_style(
        ProgressStyle::with_template("precompute {bar:40} {pos}/{len} pads  {per_sec}  eta {eta}")
            .expect("valid template"),
    );
    let t = Instant::now();
    let mut err = None;
    let mut made = 0usize;
    let pads = (0..count)
        .map_while(|_| match remote.precompute(1) {
            Ok(p) => {
                bar.inc(1);
                made += 1;
                Some(p)
            }
            Err(e) => {
                err = Some(e);
                None
            }
        })
        .flatten()
        .map(Ok);
    let entries = origami_host::padfile::write(out, &ev, pads)?;
    bar.finish();
    if let Some(e) = err {
        // The file was written with the pads made before the failure.
        bail!(
            "precompute stopped after {made} of {count} pads: {e} ({} kept in {})",
            made,
            out.display()
        );
    }
    if entries == 0 {
        println!(
            "this placement needs no pads (nothing is offloaded blinded); wrote an empty file"
        );
    }
    let bytes = std::fs::metadata(out)?.len();
    println!(
        "wrote {made} pads ({entries} sealed layer entries, {:.1} MiB) to {} in {:.1} s; serve them with: origami serve --enclave {endpoint} --pads {}",
        bytes as f64 / (1u64 << 20) as f64,
        out.display(),
        t.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

/// The enclave as a child process (`origami enclave`) on a private socket.
struct EnclaveChild {
    child: std::process::Child,
}

impl Drop for EnclaveChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `origami enclave` on a fresh socket in `dir` (a new name per start, so a client can
/// never reach an older instance by its path) and connects to it.
fn spawn_enclave(
    dir: &Path,
    args: &[String],
) -> Result<(EnclaveChild, origami_host::remote::Conn)> {
    static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let sock = dir.join(format!("enclave-{n}.sock"));
    let child = std::process::Command::new(enclave_binary()?)
        .arg("--socket")
        .arg(&sock)
        .args(args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting the enclave process")?;
    let mut child = EnclaveChild { child };
    let t = Instant::now();
    loop {
        if let Ok(s) = std::os::unix::net::UnixStream::connect(&sock) {
            println!("enclave process: pid {}", child.child.id());
            let conn = origami_host::remote::Conn::Unix(s);
            conn.set_timeout(Some(origami_host::remote::REPLY_TIMEOUT))?;
            return Ok((child, conn));
        }
        if let Some(status) = child.child.try_wait()? {
            bail!("the enclave process exited at start ({status})");
        }
        if t.elapsed() > std::time::Duration::from_secs(120) {
            bail!("the enclave process did not start listening within 120 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[allow(clippy::too_many_arguments)]
fn serve(
    listen: &str,
    model: &str,
    mode: &str,
    split: Option<usize>,
    verify: bool,
    cfg: origami_server::ServerConfig,
    in_process: bool,
    attach: Option<Endpoint>,
    token: Option<Arc<origami_proto::link::LinkToken>>,
    calib: usize,
) -> Result<()> {
    use origami_enclave::service::{self_code_id, EnclaveService};
    use origami_host::handle::EnclaveHandle;
    use origami_host::remote::RemoteEnclave;
    let (m, placement, plan) = served(model, mode, split, calib)?;
    let sock_dir = std::env::temp_dir().join(format!(
        "origami-serve-{}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    type Child = Option<Arc<std::sync::Mutex<EnclaveChild>>>;
    let (enclave, restart, child): (
        Box<dyn EnclaveHandle>,
        Option<origami_server::Restart>,
        Child,
    ) = if let Some(endpoint) = attach.clone() {
        let conn = endpoint
            .connect(token.as_deref())
            .with_context(|| format!("connecting to the enclave at {endpoint}"))?;
        let restart: origami_server::Restart = Box::new(move || {
            // The enclave is supervised elsewhere (systemd, Gramine): wait for it to come back.
            let t = Instant::now();
            loop {
                match endpoint.connect(token.as_deref()) {
                    Ok(c) => return Ok(Box::new(RemoteEnclave::new(c)) as Box<dyn EnclaveHandle>),
                    Err(e) if t.elapsed() > std::time::Duration::from_secs(30) => {
                        return Err(format!("reconnecting to the enclave at {endpoint}: {e}"))
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
                }
            }
        });
        (Box::new(RemoteEnclave::new(conn)), Some(restart), None)
    } else if in_process {
        let core = CoreConfig {
            placement,
            verify,
            threads: 1,
        };
        let service = EnclaveService::simulated(plan.clone(), core, self_code_id()?)?;
        (Box::new(service), None, None)
    } else {
        let dir = sock_dir.clone();
        // Created here, private from the start: an existing directory (e.g. one another user
        // made at a guessed path) is an error, never reused.
        std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
            .create(&dir)
            .with_context(|| format!("creating the private socket directory {}", dir.display()))?;
        let mut args = vec![
            "--model".to_string(),
            model.to_string(),
            "--mode".into(),
            mode.into(),
            "--calib".into(),
            calib.to_string(),
        ];
        // The resolved split (the audited default when none was given).
        if let Placement::Origami { split } = placement {
            args.extend(["--split".into(), split.to_string()]);
        }
        if !verify {
            args.push("--no-verify".into());
        }
        let (c, stream) = spawn_enclave(&dir, &args)?;
        let child = Arc::new(std::sync::Mutex::new(c));
        let holder = child.clone();
        let restart: origami_server::Restart = Box::new(move || {
            let mut old = holder.lock().unwrap_or_else(|p| p.into_inner());
            // Stop the old instance first (it may still run after a protocol failure).
            let _ = old.child.kill();
            let _ = old.child.wait();
            let (c, stream) = spawn_enclave(&dir, &args).map_err(|e| format!("{e:#}"))?;
            *old = c;
            Ok(Box::new(RemoteEnclave::new(stream)) as Box<dyn EnclaveHandle>)
        });
        (
            Box::new(RemoteEnclave::new(stream)),
            Some(restart),
            Some(child),
        )
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
            accelerator()?,
            cfg,
            restart,
        )
        .await?;
        let ev = running.evidence.clone();
        println!("listening on http://{}", running.addr);
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
            .until(async {
                let _ = tokio::signal::ctrl_c().await;
                println!("shutting down: finishing requests in flight");
            })
            .await?;
        Ok::<(), anyhow::Error>(())
    })?;
    drop(child);
    if !in_process && attach.is_none() {
        let _ = std::fs::remove_dir_all(&sock_dir);
    }
    Ok(())
}

fn infer_remote(server: &str, image_path: &Path, policy: &Path, model: &str) -> Result<()> {
    let m = load_model(model)?;
    let policy = origami_client::load_policy(policy)?;
    let x = input::load_input(image_path, &m)?;
    let mut client = origami_client::Client::connect(server, &policy)?;
    let ev = client.evidence();
    println!(
        "verified evidence: platform {} | placement {}{} | host sees: {}",
        ev.platform.name(),
        ev.measurement.placement,
        ev.measurement
            .split
            .map(|k| format!(" --split {k}"))
            .unwrap_or_default(),
        ev.host_sees
    );
    let t = Instant::now();
    let out = match client.infer(&x) {
        // The SDK re-attested and found the same measurement; this command chooses to resend.
        Err(
            e @ (origami_client::ClientError::Restarted | origami_client::ClientError::KeyRotated),
        ) => {
            let why = if matches!(e, origami_client::ClientError::Restarted) {
                "restarted"
            } else {
                "rotated its session key"
            };
            println!(
                "the server's enclave {why}: re-attested to the same measurement (new session key {}…); retrying",
                &hex(&client.evidence().enclave_key)[..16]
            );
            client.infer(&x)?
        }
        r => r?,
    };
    println!(
        "answer decrypted by this client in {:.1} ms (round trip)",
        t.elapsed().as_secs_f64() * 1e3
    );
    print_answer(&m, &out);
    Ok(())
}

fn loadtest(
    server: &str,
    policy: &Path,
    model: &str,
    clients: &str,
    requests: usize,
) -> Result<()> {
    let m = Arc::new(load_model(model)?);
    let policy = origami_client::load_policy(policy)?;
    let counts: Vec<usize> = clients
        .split(',')
        .map(|c| {
            c.trim()
                .parse::<usize>()
                .with_context(|| format!("--clients: bad count '{c}'"))
        })
        .collect::<Result<_>>()?;
    if counts.contains(&0) || requests == 0 {
        bail!("--clients and --requests must be at least 1");
    }
    println!("clients  requests  seconds  req/s    p50 ms   p99 ms   max ms");
    for &n in &counts {
        let t = Instant::now();
        let handles: Vec<_> = (0..n)
            .map(|c| {
                let m = m.clone();
                let policy = policy.clone();
                let server = server.to_string();
                std::thread::spawn(move || -> Result<Vec<f64>> {
                    let mut client = origami_client::Client::connect(&server, &policy)?;
                    let mut lat = Vec::with_capacity(requests);
                    for i in 0..requests {
                        let x = zoo::seeded_input(&m, (c * 1_000_000 + i) as u64);
                        let t = Instant::now();
                        match client.infer(&x) {
                            // Re-attested to the same measurement: resend once.
                            Err(
                                origami_client::ClientError::Restarted
                                | origami_client::ClientError::KeyRotated,
                            ) => client.infer(&x)?,
                            r => r?,
                        };
                        lat.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    Ok(lat)
                })
            })
            .collect();
        let mut lat = Vec::new();
        for h in handles {
            lat.extend(
                h.join()
                    .map_err(|_| anyhow::anyhow!("a client thread panicked"))??,
            );
        }
        let secs = t.elapsed().as_secs_f64();
        lat.sort_by(f64::total_cmp);
        let q = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
        println!(
            "{n:>7}  {:>8}  {secs:>7.2}  {:>6.1}  {:>7.1}  {:>7.1}  {:>7.1}",
            lat.len(),
            lat.len() as f64 / secs,
            q(0.5),
            q(0.99),
            lat[lat.len() - 1]
        );
    }
    Ok(())
}
