//! `origami infer`: private inference against a server, as a client: verify its evidence
//! against a policy, send the image sealed to the enclave, print the answer.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use origami_model::input;

use crate::common::*;

#[derive(clap::Args)]
pub struct Args {
    /// Base URL, e.g. http://127.0.0.1:8080
    #[arg(long)]
    pub server: String,
    #[arg(long)]
    pub image: PathBuf,
    /// Policy (TOML): allow_simulated, placements, [[measurements]] code_id / model_hash.
    #[arg(long)]
    pub policy: PathBuf,
    /// The model the image is prepared for (its input size and normalization).
    #[arg(long, default_value = "fashion")]
    pub model: String,
}

pub fn main(a: Args) -> Result<()> {
    let (server, image_path, policy, model) = (
        a.server.as_str(),
        a.image.as_path(),
        a.policy.as_path(),
        a.model.as_str(),
    );
    let m = load_model(model)?;
    let policy = origami_client::load_policy(policy)?;
    let x = input::load_input(image_path, &m)?;
    let client = origami_client::Client::connect(server, &policy)?;
    let ev = client.evidence();
    println!(
        "verified evidence: platform {} | placement {} | host sees: {}",
        ev.platform.name(),
        ev.measurement.placement,
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
