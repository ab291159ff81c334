//! `origami zoo`: the built-in models (list, export as ONNX).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use origami_model::{onnx, zoo};

use crate::common::*;

#[derive(Subcommand)]
pub enum ZooCmd {
    /// List the built-in models.
    List,
    /// Write a built-in model as ONNX (opset 18).
    Export { name: String, out: PathBuf },
}

pub fn main(cmd: ZooCmd) -> Result<()> {
    match cmd {
        ZooCmd::List => {
            for n in zoo::NAMES {
                let m = zoo::by_name(n).context("zoo")?;
                println!(
                    "{n:<16} input {:?}  {} linear layers  {:.3} GMAC",
                    m.input_shape,
                    m.linear_nodes().len(),
                    m.macs()? as f64 / 1e9
                );
            }
            println!(
                "(NAME@N for the 224×224 models, e.g. resnet50@96: the same network at N×N input, \
                 N a multiple of 32)"
            );
            Ok(())
        }
        ZooCmd::Export { name, out } => {
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
