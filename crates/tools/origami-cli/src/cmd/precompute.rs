//! `origami precompute`: sealed pads from a running enclave into a file, with progress.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use origami_host::remote::{connect, Endpoint};

use crate::common::*;

#[derive(clap::Args)]
pub struct Args {
    /// The enclave: unix:PATH, a path, or tcp:HOST:PORT.
    #[arg(long)]
    pub enclave: String,
    /// The enclave's link token (tcp: endpoints).
    #[arg(long)]
    pub enclave_token_file: Option<PathBuf>,
    /// Pads to make (each covers every blinded layer of one request).
    #[arg(long, default_value_t = 256)]
    pub count: usize,
    #[arg(long)]
    pub out: PathBuf,
}

pub fn main(a: Args) -> Result<()> {
    let token = link_token(a.enclave_token_file.clone())?;
    let (enclave, token, count, out) = (
        a.enclave.as_str(),
        token.as_deref(),
        a.count,
        a.out.as_path(),
    );
    use origami_host::remote::RemoteEnclave;
    let endpoint: Endpoint = enclave.parse()?;
    if count == 0 {
        bail!("--count must be at least 1");
    }
    let conn = connect(&endpoint, token)
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
