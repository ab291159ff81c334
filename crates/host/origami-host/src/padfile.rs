//! Sealed pads in a file (`origami precompute --out`, `origami serve --pads`).
//!
//! A pad file holds sealed unblinding factors of ONE enclave instance: they are AEAD-sealed
//! under that instance's key, so the host cannot read or alter them, and any other instance
//! (a restarted enclave has new keys) fails to open them. The header names the instance and the
//! digest of its evidence; loading checks both against the enclave being served and refuses a
//! file of another instance outright.
//!
//! Format: the 16-byte magic `ORIGAMI-PADS/v1\n`, the evidence digest (32 bytes), the instance
//! id (16), then one length-prefixed frame per sealed pad layer (postcard `WirePad`, bounded like
//! every frame). The file is written atomically (`origami_model::atomic`: a temporary file
//! next to it, synced, then renamed): a crash never leaves a half-written file under the final
//! name.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use origami_field::SealedPad;
use origami_plan::convert::{pad_from_wire, pad_to_wire};
use origami_proto::evidence::{hex, Evidence};
use origami_proto::frame::{read_frame, write_frame, DEFAULT_MAX_FRAME};
use origami_proto::wire::WirePad;

use crate::PadStore;

const MAGIC: &[u8; 16] = b"ORIGAMI-PADS/v1\n";

#[derive(Debug, thiserror::Error)]
pub enum PadFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: not an origami pad file")]
    NotAPadFile(PathBuf),
    #[error("{path}: the pads belong to enclave instance {file_instance}, not to the running instance {instance} (restarted enclave?): they can never be used and are not loaded")]
    OtherInstance {
        path: PathBuf,
        file_instance: String,
        instance: String,
    },
    #[error("{path}: malformed pad file: {detail}")]
    Malformed { path: PathBuf, detail: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PadFileError + '_ {
    move |source| PadFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes pads for the enclave that gave `evidence`, atomically; `pads` yields sealed
/// entries (it may be fed while the enclave precomputes). Returns the entries written.
pub fn write(
    path: &Path,
    evidence: &Evidence,
    pads: impl IntoIterator<Item = Result<SealedPad, PadFileError>>,
) -> Result<usize, PadFileError> {
    origami_model::atomic::write_with(
        path,
        |tmp| {
            let f = std::fs::File::create(tmp).map_err(io(tmp))?;
            let mut w = BufWriter::new(f);
            w.write_all(MAGIC).map_err(io(tmp))?;
            w.write_all(&evidence.digest()).map_err(io(tmp))?;
            w.write_all(&evidence.instance).map_err(io(tmp))?;
            let mut n = 0;
            for p in pads {
                let bytes = origami_proto::encode(&pad_to_wire(p?));
                write_frame(&mut w, &bytes, DEFAULT_MAX_FRAME).map_err(|e| {
                    PadFileError::Malformed {
                        path: tmp.to_path_buf(),
                        detail: e.to_string(),
                    }
                })?;
                n += 1;
            }
            w.into_inner().map_err(|e| io(tmp)(e.into_error()))?;
            Ok(n)
        },
        |p, e| io(p)(e),
    )
}

/// Reads a pad file made for the enclave that gave `evidence`.
pub fn read(path: &Path, evidence: &Evidence) -> Result<PadStore, PadFileError> {
    let f = std::fs::File::open(path).map_err(io(path))?;
    let mut r = BufReader::new(f);
    let mut head = [0u8; 64];
    r.read_exact(&mut head)
        .map_err(|_| PadFileError::NotAPadFile(path.to_path_buf()))?;
    if &head[..16] != MAGIC {
        return Err(PadFileError::NotAPadFile(path.to_path_buf()));
    }
    if head[16..48] != evidence.digest() || head[48..64] != evidence.instance {
        return Err(PadFileError::OtherInstance {
            path: path.to_path_buf(),
            file_instance: hex(&head[48..64]),
            instance: hex(&evidence.instance),
        });
    }
    let malformed = |detail: String| PadFileError::Malformed {
        path: path.to_path_buf(),
        detail,
    };
    let mut store = PadStore::default();
    while let Some(frame) =
        read_frame(&mut r, DEFAULT_MAX_FRAME).map_err(|e| malformed(e.to_string()))?
    {
        let p: WirePad = origami_proto::decode(&frame).map_err(|e| malformed(e.to_string()))?;
        store.insert_all(vec![pad_from_wire(p)]);
    }
    Ok(store)
}
