//! Loading model inputs: images (PNG, JPEG) resized to the model's input and normalized, or
//! `.npy` tensors taken as they are.

use std::path::Path;

use crate::{Model, ModelError, Tensor};

/// How images are turned into input tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocess {
    /// Per-channel mean subtracted after scaling pixels to [0, 1].
    pub mean: Vec<f32>,
    /// Per-channel standard deviation divided by.
    pub std: Vec<f32>,
}

impl Preprocess {
    /// ImageNet normalization for 3-channel models; identity scaling to [0, 1] otherwise.
    pub fn for_model(model: &Model) -> Self {
        if model.input_shape[0] == 3 {
            Self {
                mean: vec![0.485, 0.456, 0.406],
                std: vec![0.229, 0.224, 0.225],
            }
        } else {
            let c = model.input_shape[0];
            Self {
                mean: vec![0.0; c],
                std: vec![1.0; c],
            }
        }
    }
}

/// Largest image file accepted (bytes).
const MAX_IMAGE_BYTES: u64 = 64 << 20;

/// Loads an input for `model` from a `.npy` (used as is: NCHW float32) or an image file.
pub fn load_input(path: &Path, model: &Model) -> Result<Tensor, ModelError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let t = if ext == "npy" {
        let mut t = crate::npy::read_npy(path)?;
        if t.shape.len() == 3 {
            t.shape.insert(0, 1);
        }
        t
    } else {
        let meta = std::fs::metadata(path).map_err(|source| ModelError::Io {
            path: path.display().to_string(),
            source,
        })?;
        if meta.len() > MAX_IMAGE_BYTES {
            return Err(ModelError::Input(format!(
                "{}: image larger than 64 MiB",
                path.display()
            )));
        }
        #[cfg(not(feature = "images"))]
        return Err(ModelError::Input(format!(
            "{}: this build reads .npy inputs only (origami-model without the `images` feature)",
            path.display()
        )));
        #[cfg(feature = "images")]
        let img = image::ImageReader::open(path)
            .map_err(|source| ModelError::Io {
                path: path.display().to_string(),
                source,
            })?
            .with_guessed_format()
            .map_err(|source| ModelError::Io {
                path: path.display().to_string(),
                source,
            })?
            .decode()
            .map_err(|e| {
                ModelError::Input(format!("{}: cannot decode image: {e}", path.display()))
            })?;
        #[cfg(feature = "images")]
        image_to_tensor(&img, model)
    };
    crate::exec::check_input(model, &t)?;
    Ok(t)
}

/// Resizes (bilinear) and normalizes an image into a `[1, C, H, W]` tensor for `model`.
#[cfg(feature = "images")]
pub fn image_to_tensor(img: &image::DynamicImage, model: &Model) -> Tensor {
    let (c, h, w) = (
        model.input_shape[0],
        model.input_shape[1],
        model.input_shape[2],
    );
    let pre = Preprocess::for_model(model);
    let resized = img.resize_exact(w as u32, h as u32, image::imageops::FilterType::Triangle);
    let mut data = vec![0f32; c * h * w];
    if c == 1 {
        let g = resized.to_luma8();
        for (i, p) in g.pixels().enumerate() {
            data[i] = (p.0[0] as f32 / 255.0 - pre.mean[0]) / pre.std[0];
        }
    } else {
        let rgb = resized.to_rgb8();
        for (i, p) in rgb.pixels().enumerate() {
            for ch in 0..c.min(3) {
                data[ch * h * w + i] = (p.0[ch] as f32 / 255.0 - pre.mean[ch]) / pre.std[ch];
            }
        }
    }
    Tensor {
        shape: vec![1, c, h, w],
        data,
    }
}

/// The first ten Fashion-MNIST test images as 8-bit grayscale PNGs (`assets/samples`, written by
/// its `extract_fashion.py`), named `<index>_<label>.png`: the CLI's demo inputs, and test data.
pub const SAMPLE_PNGS: [(&str, &[u8]); 10] = [
    (
        "0_ankle_boot.png",
        include_bytes!("../assets/samples/0_ankle_boot.png"),
    ),
    (
        "1_pullover.png",
        include_bytes!("../assets/samples/1_pullover.png"),
    ),
    (
        "2_trouser.png",
        include_bytes!("../assets/samples/2_trouser.png"),
    ),
    (
        "3_trouser.png",
        include_bytes!("../assets/samples/3_trouser.png"),
    ),
    (
        "4_shirt.png",
        include_bytes!("../assets/samples/4_shirt.png"),
    ),
    (
        "5_trouser.png",
        include_bytes!("../assets/samples/5_trouser.png"),
    ),
    ("6_coat.png", include_bytes!("../assets/samples/6_coat.png")),
    (
        "7_shirt.png",
        include_bytes!("../assets/samples/7_shirt.png"),
    ),
    (
        "8_sandal.png",
        include_bytes!("../assets/samples/8_sandal.png"),
    ),
    (
        "9_sneaker.png",
        include_bytes!("../assets/samples/9_sneaker.png"),
    ),
];

/// The ten sample images (`SAMPLE_PNGS`, in that order), decoded to raw pixels so that code without an image decoder
/// (the enclave binary) calibrates on exactly what the host does. A test checks it equals the
/// PNGs' decoding.
pub const BUNDLED_28X28: &[u8] = include_bytes!("../assets/bundled-28x28.u8");

/// Calibration inputs from the bundled images, for a model that takes 28×28 inputs (none
/// otherwise), normalized as `image_to_tensor` would (gray replicated over up to 3 channels).
pub fn bundled_calibration(model: &Model) -> Vec<Tensor> {
    let (c, h, w) = match model.input_shape[..] {
        [c, 28, 28] => (c, 28, 28),
        _ => return Vec::new(),
    };
    let pre = Preprocess::for_model(model);
    BUNDLED_28X28
        .chunks_exact(h * w)
        .map(|px| {
            let mut data = vec![0f32; c * h * w];
            for (i, &p) in px.iter().enumerate() {
                for ch in 0..c.min(3) {
                    data[ch * h * w + i] = (p as f32 / 255.0 - pre.mean[ch]) / pre.std[ch];
                }
            }
            Tensor {
                shape: vec![1, c, h, w],
                data,
            }
        })
        .collect()
}
