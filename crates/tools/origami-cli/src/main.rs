//! `origami`: private split inference from the command line. Thin: one module per command
//! under `cmd/`, each with its clap `Args`; what several share is in `common`. Host-side
//! tooling only: the enclave is the `origami-enclave` binary, which `origami enclave` and
//! `origami serve` start.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

mod cmd;
mod common;

use common::Accel;

// Large tensors are allocated per layer; glibc returns them to the OS each time, and the kernel
// then zeroes fresh pages on every request (a sizeable share of a VGG-16 run in `perf`).
// mimalloc with purging disabled keeps them for reuse, which cut the enclave's time per request
// markedly (docs/BENCHMARKS.md, "Measurements behind design decisions").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h (v2 and v3): −1 = never return freed memory to the OS.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn keep_freed_memory() {
    // SAFETY: sets a plain integer option; mimalloc reads options atomically.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

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
    Demo(cmd::demo::Args),
    /// One inference with a chosen placement.
    Run(cmd::run::Args),
    /// The four placements and the tee-plain baseline side by side on one model and input.
    Bench(cmd::bench::Args),
    /// Privacy audit: per candidate split, four attacks rebuild the input from what the host
    /// receives; writes audit.json, grid.png and chart.png and recommends a split.
    Audit(cmd::audit::Args),
    /// Run the enclave as its own process: serve the host over a Unix socket or TCP
    /// (length-prefixed frames, bounded decoding), one connection at a time, for as long as it
    /// lives (pads and sessions stay valid across host reconnections). Every secret stays in
    /// this process.
    Enclave(cmd::enclave::Args),
    /// Serve private inference over HTTP: GET /v1/evidence, POST /v1/infer (sealed request →
    /// sealed answer), GET /metrics, GET /healthz. By default the enclave runs as a child
    /// process (`origami enclave`, simulated platform: its evidence says so), restarted if it
    /// dies; `--enclave` attaches to one started separately (e.g. under Gramine-SGX). Ctrl-C
    /// finishes requests in flight, then exits.
    Serve(cmd::serve::Args),
    /// Precompute sealed pads on a running `origami enclave` into a file (progress bar), for
    /// `origami serve --enclave … --pads FILE`. The pads are valid for that enclave instance
    /// only: a restarted enclave never accepts them.
    Precompute(cmd::precompute::Args),
    /// Private inference against a server: verify its evidence against a policy, send the image
    /// sealed to the enclave, print the answer.
    Infer(cmd::infer::Args),
    /// Load generator for a server: N concurrent clients (each attested under the policy) send
    /// seeded inputs; prints requests per second and latency percentiles.
    Loadtest(cmd::loadtest::Args),
    /// The code id a client policy pins for a confidential VM (sev-snp: computed from the
    /// firmware, kernel, initrd and command line it boots; tdx: from its registers).
    Measure {
        #[command(subcommand)]
        cmd: cmd::measure::MeasureCmd,
    },
    /// Print the quantization plan of a model.
    Plan(cmd::plan::Args),
    /// Train the built-in Fashion-MNIST classifier (seeded) and write it as ONNX.
    Train(cmd::train::Args),
    /// Built-in models.
    Zoo {
        #[command(subcommand)]
        cmd: cmd::zoo::ZooCmd,
    },
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
    if !matches!(cli.cmd, Cmd::Enclave(_)) {
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
    let accel = Accel::parse(&cli.accel, cli.tf32)?;
    match cli.cmd {
        Cmd::Demo(a) => cmd::demo::main(a, accel),
        Cmd::Run(a) => cmd::run::main(a, accel),
        Cmd::Bench(a) => cmd::bench::main(a, accel),
        Cmd::Audit(a) => cmd::audit::main(a),
        Cmd::Enclave(a) => cmd::enclave::main(a),
        Cmd::Serve(a) => cmd::serve::main(a, accel),
        Cmd::Precompute(a) => cmd::precompute::main(a),
        Cmd::Infer(a) => cmd::infer::main(a),
        Cmd::Loadtest(a) => cmd::loadtest::main(a),
        Cmd::Measure { cmd } => cmd::measure::main(cmd),
        Cmd::Plan(a) => cmd::plan::main(a),
        Cmd::Train(a) => cmd::train::main(a),
        Cmd::Zoo { cmd } => cmd::zoo::main(cmd),
    }
}
