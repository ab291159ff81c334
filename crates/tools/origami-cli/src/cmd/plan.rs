//! `origami plan`: prints the quantization plan of a model (exponents, margins, bounds).

use anyhow::Result;

use origami_plan::Placement;

use crate::common::*;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = "fashion")]
    pub model: String,
    #[arg(long, default_value_t = 4)]
    pub calib: usize,
}

pub fn main(a: Args) -> Result<()> {
    let m = load_model(&a.model)?;
    let plan = build_plan(&m, a.calib)?;
    println!(
        "model {} ({} linear layers), plan hash {}",
        m.name,
        plan.linears.len(),
        hex(&plan.hash[..8])
    );
    print!("{}", plan.summary());
    // Splits that fall inside a branch (residual, concatenation, gate) and where they end.
    for split in 1..plan.linears.len() {
        if let Some(note) = head_extension(&plan, Placement::Origami { split })? {
            println!("{note}");
        }
    }
    Ok(())
}
