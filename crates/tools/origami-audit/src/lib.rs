//! The privacy audit: what the untrusted side sees at a split (`capture`), four attacks that
//! rebuild the input from it — white-box optimisation (`whitebox`), a learned decoder
//! (`decoder`), a pix2pix conditional GAN (`gan`) and the white-box optimisation started at the
//! decoder's output (combined), the learned ones on a small trainable graph
//! (`nn`) — their scores (`metrics`: SSIM, PSNR), the per-split audit with its policy and
//! recommendation (`audit`), the output files (`report`) and the split policy built on the
//! recorded audit (`split`). See docs/AUDIT.md.

pub mod audit;
pub mod capture;
pub mod decoder;
pub mod gan;
pub mod metrics;
pub mod nn;
pub mod report;
pub mod split;
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
    /// An audit of another model than the one it is asked about.
    #[error("{from} audits model {audited} ({audited_hash}…), not {model} ({hash}…): run `origami audit --model …` for this model first")]
    WrongModel {
        from: String,
        audited: String,
        audited_hash: String,
        model: String,
        hash: String,
    },
    /// The audit found no split within its policy.
    #[error("the audit in {from} found no split of {model} within its policy (max SSIM {max_ssim}, max accuracy {max_accuracy}); choose --split K yourself or audit with another policy")]
    NoSplit {
        from: String,
        model: String,
        max_ssim: f64,
        max_accuracy: f64,
    },
}
