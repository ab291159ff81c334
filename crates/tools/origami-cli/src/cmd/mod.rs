//! One module per command: its clap `Args` and its `main`.

pub mod audit;
pub mod bench;
pub mod bench_chart;
pub mod demo;
pub mod enclave;
pub mod infer;
pub mod loadtest;
pub mod measure;
pub mod plan;
pub mod precompute;
pub mod run;
pub mod serve;
pub mod train;
pub mod zoo;
