//! `origami loadtest`: N concurrent attested clients send seeded inputs to a server; prints
//! requests per second and latency percentiles.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use origami_model::zoo;

use crate::common::*;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    pub server: String,
    #[arg(long)]
    pub policy: PathBuf,
    #[arg(long, default_value = "fashion")]
    pub model: String,
    /// Concurrent clients (comma-separated list: one run each).
    #[arg(long, default_value = "1,8,32")]
    pub clients: String,
    /// Requests per client.
    #[arg(long, default_value_t = 20)]
    pub requests: usize,
}

pub fn main(a: Args) -> Result<()> {
    let (server, policy, model, clients, requests) = (
        a.server.as_str(),
        a.policy.as_path(),
        a.model.as_str(),
        a.clients.as_str(),
        a.requests,
    );
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
                    let client = origami_client::Client::connect(&server, &policy)?;
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
