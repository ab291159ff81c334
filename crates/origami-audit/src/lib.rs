//! The privacy audit (in progress): what the untrusted side sees at a split (`capture`), the
//! scores of a reconstruction (`metrics`: SSIM, PSNR), the white-box attack (`whitebox`) and a
//! learned decoder (`decoder`). The conditional-GAN attack, the report and `origami audit` are
//! not built yet.

pub mod capture;
pub mod decoder;
pub mod gan;
pub mod metrics;
pub mod nn;
pub mod whitebox;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    #[error("engine: {0}")]
    Engine(String),
    #[error("attack: {0}")]
    Attack(String),
}
