//! `origami measure`: the code id a client policy pins for a confidential VM, computed by the
//! operator from what the VM boots, before any VM runs (docs/CVM.md, "What is measured").
//!
//! - `sev-snp`: the launch digest (MEASUREMENT) of a guest started with measured direct boot
//!   (firmware + kernel + initrd + command line), computed with the `sev` crate's port of AMD's
//!   algorithm (the same as `sev-snp-measure`), then SHA-256("origami/v1/snp-code" ‖
//!   MEASUREMENT ‖ HOST_DATA), as the client's verifier computes it from a report.
//! - `tdx`: the code id from MRTD and RTMR0–3, given as values (from the firmware vendor's
//!   tools, or from a quote of a reference boot of the same image).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sev::measurement::snp::{snp_calc_launch_digest, SnpMeasurementArgs};
use sev::measurement::vcpu_types::CpuType;
use sev::measurement::vmsa::{GuestFeatures, VMMType};

use origami_proto::evidence::{hex, Platform};
use origami_proto::{snp, tdx};

use crate::common::load_model;

#[derive(clap::Subcommand)]
pub enum MeasureCmd {
    /// An AMD SEV-SNP guest's launch digest (measured direct boot) and its code id.
    SevSnp(SnpArgs),
    /// An Intel TDX guest's code id from its MRTD and RTMR values.
    Tdx(TdxArgs),
}

#[derive(clap::Args)]
pub struct SnpArgs {
    /// The guest firmware as the VMM loads it (an OVMF `AmdSevX64` build, which measures the
    /// kernel, initrd and command line into the launch digest through its hashes table).
    #[arg(long)]
    pub ovmf: PathBuf,
    /// The kernel of a measured direct boot (QEMU `-kernel`). Without it, only the firmware
    /// is measured and nothing pins what it boots.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// The initrd (QEMU `-initrd`); with --kernel only.
    #[arg(long, requires = "kernel")]
    pub initrd: Option<PathBuf>,
    /// The kernel command line (QEMU `-append`), byte for byte; with --kernel only.
    #[arg(long, requires = "kernel")]
    pub cmdline: Option<String>,
    /// Virtual CPUs of the guest: one VMSA is measured per vCPU.
    #[arg(long, default_value_t = 1)]
    pub vcpus: u32,
    /// The vCPU model the VMM gives the guest (QEMU `-cpu`), e.g. EPYC-v4, EPYC-Milan,
    /// EPYC-Genoa, EPYC-Turin.
    #[arg(long, default_value = "EPYC-v4")]
    pub vcpu_type: String,
    /// SEV_FEATURES of the guest's VMSAs, hex (0x1: SNP active; QEMU with debug-swap: 0x21).
    #[arg(long, default_value = "0x1")]
    pub guest_features: String,
    /// The VMM: qemu | ec2 | krun (they lay out the CPUID page and VMSAs differently).
    #[arg(long, default_value = "qemu")]
    pub vmm: String,
    /// HOST_DATA fixed at launch, 64 hex digits (32 bytes); zeros when the launcher sets none.
    #[arg(long)]
    pub host_data: Option<String>,
    /// Also print the model hash of this model (a built-in name or an ONNX file), for a
    /// complete policy entry.
    #[arg(long)]
    pub model: Option<String>,
}

#[derive(clap::Args)]
pub struct TdxArgs {
    /// MRTD, 96 hex digits.
    #[arg(long)]
    pub mrtd: String,
    /// RTMR0 (the firmware's configuration), 96 hex digits.
    #[arg(long)]
    pub rtmr0: String,
    /// RTMR1 (the kernel / OS loader), 96 hex digits.
    #[arg(long)]
    pub rtmr1: String,
    /// RTMR2 (the command line and initrd), 96 hex digits.
    #[arg(long)]
    pub rtmr2: String,
    /// RTMR3 (extended by the guest at run time; zeros if nothing extends it), 96 hex digits.
    #[arg(long, default_value_t = "0".repeat(96))]
    pub rtmr3: String,
    /// Also print the model hash of this model, for a complete policy entry.
    #[arg(long)]
    pub model: Option<String>,
}

pub fn main(cmd: MeasureCmd) -> Result<()> {
    match cmd {
        MeasureCmd::SevSnp(a) => sev_snp(a),
        MeasureCmd::Tdx(a) => tdx(a),
    }
}

/// `N` bytes from exactly `2N` hex digits (an optional `0x` prefix allowed).
fn unhex<const N: usize>(what: &str, s: &str) -> Result<[u8; N]> {
    let s = s.trim();
    let s = s.strip_prefix("0x").unwrap_or(s);
    if s.len() != 2 * N || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!(
            "{what}: expected {} hex digits, got {} characters",
            2 * N,
            s.len()
        );
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("checked hex digits");
    }
    Ok(out)
}

fn must_exist(what: &str, p: &Path) -> Result<()> {
    if !p.exists() {
        bail!("{what} {}: no such file", p.display());
    }
    Ok(())
}

/// Firmware images are whole 4 KiB pages; OVMF builds are a few MiB.
const MAX_FIRMWARE: u64 = 64 << 20;

fn sev_snp(a: SnpArgs) -> Result<()> {
    must_exist("--ovmf", &a.ovmf)?;
    let len = std::fs::metadata(&a.ovmf)
        .with_context(|| format!("reading {}", a.ovmf.display()))?
        .len();
    if len == 0 || len % 4096 != 0 || len > MAX_FIRMWARE {
        bail!(
            "--ovmf {}: {len} bytes; a firmware image is a whole number of 4 KiB pages, at most {} MiB",
            a.ovmf.display(),
            MAX_FIRMWARE >> 20
        );
    }
    for (what, p) in [("--kernel", &a.kernel), ("--initrd", &a.initrd)] {
        if let Some(p) = p {
            must_exist(what, p)?;
        }
    }
    if a.vcpus == 0 || a.vcpus > 512 {
        bail!("--vcpus must be 1 to 512, got {}", a.vcpus);
    }
    let vcpu_type = CpuType::try_from(a.vcpu_type.as_str())
        .map_err(|_| anyhow::anyhow!("--vcpu-type {}: not a vCPU model the SEV measurement knows (EPYC, EPYC-v1..v4, EPYC-Rome, EPYC-Milan, EPYC-Genoa, EPYC-Turin and their -vN)", a.vcpu_type))?;
    let vmm: VMMType = a
        .vmm
        .parse()
        .map_err(|_| anyhow::anyhow!("--vmm {}: expected qemu, ec2 or krun", a.vmm))?;
    let gf = a.guest_features.trim();
    let features = u64::from_str_radix(gf.strip_prefix("0x").unwrap_or(gf), 16)
        .with_context(|| format!("--guest-features {gf}: not a hex number"))?;
    let host_data: [u8; 32] = match &a.host_data {
        Some(h) => unhex("--host-data", h)?,
        None => [0; 32],
    };
    let args = SnpMeasurementArgs {
        vcpus: a.vcpus,
        vcpu_type,
        ovmf_file: a.ovmf.clone(),
        guest_features: GuestFeatures(features),
        kernel_file: a.kernel.clone(),
        initrd_file: a.initrd.clone(),
        append: a.cmdline.as_deref(),
        ovmf_hash_str: None,
        vmm_type: Some(vmm),
    };
    // The crate's firmware parser can panic on a file that is not an SEV build (an
    // out-of-range offset in its footer table): report that as bad input.
    let not_sev = || {
        anyhow::anyhow!(
            "computing the launch digest: {} is not an OVMF build with SEV metadata",
            a.ovmf.display()
        )
    };
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let digest = std::panic::catch_unwind(|| snp_calc_launch_digest(args));
    std::panic::set_hook(hook);
    let digest = digest
        .map_err(|_| not_sev())?
        .map_err(|e| anyhow::anyhow!("computing the launch digest: {e}"))?;
    let measurement: [u8; 48] = unhex("the launch digest", &digest.get_hex_ld())?;
    println!("MEASUREMENT {}", hex(&measurement));
    println!("HOST_DATA   {}", hex(&host_data));
    if a.kernel.is_none() {
        eprintln!(
            "warning: no --kernel: this digest measures the firmware only; whatever it boots \
             is not pinned"
        );
    }
    policy_entry(
        Platform::SevSnp,
        &snp::snp_code_id_of(&measurement, &host_data),
        a.model.as_deref(),
    )
}

fn tdx(a: TdxArgs) -> Result<()> {
    let mrtd: [u8; 48] = unhex("--mrtd", &a.mrtd)?;
    let r0: [u8; 48] = unhex("--rtmr0", &a.rtmr0)?;
    let r1: [u8; 48] = unhex("--rtmr1", &a.rtmr1)?;
    let r2: [u8; 48] = unhex("--rtmr2", &a.rtmr2)?;
    let r3: [u8; 48] = unhex("--rtmr3", &a.rtmr3)?;
    policy_entry(
        Platform::Tdx,
        &tdx::tdx_code_id_of(&mrtd, [&r0, &r1, &r2, &r3]),
        a.model.as_deref(),
    )
}

/// Prints the code id and the client-policy entry that admits it.
fn policy_entry(platform: Platform, code_id: &[u8; 32], model: Option<&str>) -> Result<()> {
    println!("code_id     {}", hex(code_id));
    let model_hash = match model {
        Some(m) => hex(&load_model(m)?.hash()),
        None => "<the model's hash: origami measure … --model M, or the server's log>".into(),
    };
    println!();
    println!("# client policy entry (policy.toml)");
    println!("[[measurements]]");
    println!("platform = \"{}\"", platform.id());
    println!("code_id = \"{}\"", hex(code_id));
    println!("model_hash = \"{model_hash}\"");
    Ok(())
}
