//! The privacy audit: what the untrusted side sees at a split (`capture`), three attacks that
//! rebuild the input from it — white-box optimisation (`whitebox`), a learned decoder
//! (`decoder`) and a pix2pix conditional GAN (`gan`), the learned ones on a small trainable graph
//! (`nn`) — their scores (`metrics`: SSIM, PSNR), the per-split audit with its policy and
//! recommendation (`audit`) and the output files (`report`). See docs/AUDIT.md.

pub mod audit;
pub mod capture;
pub mod decoder;
pub mod gan;
pub mod metrics;
pub mod nn;
pub mod report;
pub mod whitebox;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    #[error("engine: {0}")]
    Engine(String),
    #[error("attack: {0}")]
    Attack(String),
    #[error("data: {0}")]
    Data(String),
    #[error("report: {0}")]
    Report(String),
}
