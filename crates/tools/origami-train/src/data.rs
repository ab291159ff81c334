//! Fashion-MNIST in IDX format (Debian package `dataset-fashion-mnist`, files under
//! `/usr/share/datasets/fashion-mnist`), gzip-compressed or not, with validated headers.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::TrainError;

/// The Debian package's location.
pub const DEFAULT_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Images as floats in [0, 1] (the preprocessing `origami_model::input` applies to 1-channel
/// models), row-major 28×28, and their labels.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub images: Vec<f32>,
    pub labels: Vec<u8>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Image `i` as 784 floats.
    pub fn image(&self, i: usize) -> &[f32] {
        &self.images[i * 784..(i + 1) * 784]
    }
    /// The first `n` examples.
    pub fn truncate(mut self, n: usize) -> Self {
        let n = n.min(self.len());
        self.images.truncate(n * 784);
        self.labels.truncate(n);
        self
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

fn find(dir: &Path, stem: &str) -> Result<PathBuf, TrainError> {
    for name in [format!("{stem}.gz"), stem.to_string()] {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(TrainError::Data(format!(
        "{}: no {stem}[.gz] (install Debian's dataset-fashion-mnist, or pass a folder with the IDX files)",
        dir.display()
    )))
}

/// Largest IDX file read (bytes, decompressed): the training images are 47 MB.
const MAX_IDX_BYTES: u64 = 256 << 20;

fn read_idx(path: &Path) -> Result<Vec<u8>, TrainError> {
    let f = std::fs::File::open(path)
        .map_err(|e| TrainError::Data(format!("{}: {e}", path.display())))?;
    let mut bytes = Vec::new();
    let gz = path.extension().is_some_and(|e| e == "gz");
    let r: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(f))
    } else {
        Box::new(f)
    };
    r.take(MAX_IDX_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| TrainError::Data(format!("{}: {e}", path.display())))?;
    Ok(bytes)
}

fn be32(b: &[u8], at: usize) -> usize {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
}

/// Parses IDX image and label files into a dataset, checking magic numbers, sizes and labels.
pub fn parse_idx(images: &[u8], labels: &[u8]) -> Result<Dataset, TrainError> {
    let bad = |m: &str| TrainError::Data(format!("not a usable Fashion-MNIST IDX file: {m}"));
    if images.len() < 16 || be32(images, 0) != 2051 {
        return Err(bad("image file has no IDX3 header (magic 2051)"));
    }
    if labels.len() < 8 || be32(labels, 0) != 2049 {
        return Err(bad("label file has no IDX1 header (magic 2049)"));
    }
    let (n, rows, cols) = (be32(images, 4), be32(images, 8), be32(images, 12));
    if rows != 28 || cols != 28 {
        return Err(bad(&format!("images are {rows}×{cols}, expected 28×28")));
    }
    if n == 0 || images.len() != 16 + n * 784 {
        return Err(bad(&format!(
            "image file holds {} bytes for {n} images",
            images.len()
        )));
    }
    if be32(labels, 4) != n || labels.len() != 8 + n {
        return Err(bad("label count does not match the image count"));
    }
    let labels = labels[8..].to_vec();
    if let Some(l) = labels.iter().find(|&&l| l > 9) {
        return Err(bad(&format!("label {l} is not a class 0–9")));
    }
    let images = images[16..].iter().map(|&p| p as f32 / 255.0).collect();
    Ok(Dataset { images, labels })
}

/// Loads one split from a folder holding the four IDX files (optionally gzip-compressed).
pub fn load(dir: &Path, split: Split) -> Result<Dataset, TrainError> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let images = read_idx(&find(dir, &format!("{prefix}-images-idx3-ubyte"))?)?;
    let labels = read_idx(&find(dir, &format!("{prefix}-labels-idx1-ubyte"))?)?;
    parse_idx(&images, &labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(n: usize) -> (Vec<u8>, Vec<u8>) {
        let mut im = vec![0, 0, 8, 3];
        for v in [n, 28, 28] {
            im.extend_from_slice(&(v as u32).to_be_bytes());
        }
        im.extend((0..n * 784).map(|i| (i % 256) as u8));
        let mut lb = vec![0, 0, 8, 1];
        lb.extend_from_slice(&(n as u32).to_be_bytes());
        lb.extend((0..n).map(|i| (i % 10) as u8));
        (im, lb)
    }

    #[test]
    fn parses_and_rejects_bad_files() {
        let (im, lb) = idx(3);
        let d = parse_idx(&im, &lb).unwrap();
        assert_eq!(d.len(), 3);
        assert_eq!(d.image(0)[255], 1.0);
        assert!(parse_idx(&im[..im.len() - 1], &lb).is_err());
        assert!(parse_idx(&im, &lb[..10]).is_err());
        let mut wrong = im.clone();
        wrong[11] = 32; // 32 rows
        assert!(parse_idx(&wrong, &lb).is_err());
        let mut badlabel = lb.clone();
        badlabel[9] = 12;
        assert!(parse_idx(&im, &badlabel).is_err());
        assert!(parse_idx(&lb, &im).is_err());
        let e = load(Path::new("/nonexistent"), Split::Test).unwrap_err();
        assert!(e.to_string().contains("dataset-fashion-mnist"), "{e}");
    }
}
