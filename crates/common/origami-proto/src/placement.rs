//! Where a model's layers run, defined once for every crate: the enclave core acts on it, the
//! host plans with it, and the evidence's `Measurement` carries it, signed, to the client.

use serde::{Deserialize, Serialize};

/// Where the layers run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Placement {
    /// Every layer inside the enclave: the secure baseline.
    Enclave,
    /// Every linear layer blinded and offloaded; non-linear layers in the enclave.
    Slalom,
    /// The first `split` linear layers as in slalom, the rest in plain on the accelerator.
    Origami { split: usize },
    /// Everything in plain on the accelerator: no privacy (never attested).
    Plain,
}

/// Why `--mode` and `--split` do not name a placement.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlacementError {
    #[error("--mode origami needs --split K")]
    MissingSplit,
    #[error("--split only applies to --mode origami, not {0}")]
    SplitWithoutOrigami(&'static str),
    #[error("unknown mode '{0}' (enclave, slalom, origami, plain)")]
    UnknownMode(String),
}

impl Placement {
    /// The modes, as `--mode` and policies name them.
    pub const MODES: [&'static str; 4] = ["enclave", "slalom", "origami", "plain"];

    /// Parses `--mode` and `--split`.
    pub fn parse(mode: &str, split: Option<usize>) -> Result<Self, PlacementError> {
        let p = match mode {
            "enclave" => Self::Enclave,
            "slalom" => Self::Slalom,
            "plain" => Self::Plain,
            "origami" => {
                return split
                    .map(|split| Self::Origami { split })
                    .ok_or(PlacementError::MissingSplit)
            }
            _ => return Err(PlacementError::UnknownMode(mode.into())),
        };
        match split {
            None => Ok(p),
            Some(_) => Err(PlacementError::SplitWithoutOrigami(p.mode())),
        }
    }

    /// The mode's name (`enclave`, `slalom`, `origami`, `plain`), without the split.
    pub fn mode(&self) -> &'static str {
        match self {
            Self::Enclave => "enclave",
            Self::Slalom => "slalom",
            Self::Origami { .. } => "origami",
            Self::Plain => "plain",
        }
    }

    /// The split of `origami`.
    pub fn split(&self) -> Option<usize> {
        match self {
            Self::Origami { split } => Some(*split),
            _ => None,
        }
    }

    /// The mode with its split, as the CLI prints it (`origami --split 4`).
    pub fn name(&self) -> String {
        match self {
            Self::Origami { split } => format!("origami --split {split}"),
            other => other.mode().into(),
        }
    }

    /// Whether linear layers are blinded and offloaded, so requests consume precomputed pads.
    pub fn needs_pads(&self) -> bool {
        matches!(self, Self::Slalom | Self::Origami { .. })
    }

    /// What the untrusted host sees in this placement; part of the signed evidence.
    pub fn host_sees(&self) -> String {
        match self {
            Self::Slalom => {
                "ciphertext and blinded tensors only: not the input, not the features, not the answer".into()
            }
            Self::Enclave => "ciphertext only".into(),
            Self::Origami { split: k } => format!(
                "blinded tensors of the first {k} linear layers, then by design the plain features at split {k}, the rest of the network and the answer"
            ),
            Self::Plain => "everything, in plain (no privacy)".into(),
        }
    }
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_splits_parse_and_print_back() {
        for p in [
            Placement::Enclave,
            Placement::Slalom,
            Placement::Origami { split: 4 },
            Placement::Plain,
        ] {
            assert_eq!(Placement::parse(p.mode(), p.split()), Ok(p));
            assert!(Placement::MODES.contains(&p.mode()));
        }
        assert_eq!(Placement::Origami { split: 4 }.name(), "origami --split 4");
        assert_eq!(
            Placement::parse("origami", None),
            Err(PlacementError::MissingSplit)
        );
        assert_eq!(
            Placement::parse("slalom", Some(2)),
            Err(PlacementError::SplitWithoutOrigami("slalom"))
        );
        assert!(matches!(
            Placement::parse("fast", None),
            Err(PlacementError::UnknownMode(m)) if m == "fast"
        ));
    }

    #[test]
    fn only_the_blinded_placements_need_pads() {
        assert!(Placement::Slalom.needs_pads());
        assert!(Placement::Origami { split: 1 }.needs_pads());
        assert!(!Placement::Enclave.needs_pads());
        assert!(!Placement::Plain.needs_pads());
    }
}
