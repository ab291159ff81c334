//! The bundled images' raw pixels (`assets/bundled-28x28.u8`, what the enclave binary
//! calibrates on without an image decoder) equal the decoding of the PNGs they come from, and
//! `bundled_calibration` equals `image_to_tensor` bit for bit, for 1- and 3-channel models.
//! `ORIGAMI_WRITE_ASSETS=1` rewrites the asset from the PNGs.

use std::path::Path;

use origami_model::input::{bundled_calibration, image_to_tensor, BUNDLED_28X28, SAMPLE_PNGS};
use origami_model::{zoo, Model};

/// The sample PNGs, read from `assets/samples` (every PNG there, in name order): the embedded
/// `SAMPLE_PNGS` must be exactly these files.
fn pngs() -> Vec<image::DynamicImage> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/samples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    files.sort();
    let embedded: Vec<_> = SAMPLE_PNGS
        .iter()
        .map(|(n, b)| (n.to_string(), b.to_vec()))
        .collect();
    let on_disk: Vec<_> = files
        .iter()
        .map(|f| {
            (
                f.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(f).unwrap(),
            )
        })
        .collect();
    assert_eq!(embedded, on_disk);
    files.iter().map(|f| image::open(f).unwrap()).collect()
}

#[test]
fn bundled_pixels_are_the_pngs_decoded() {
    let raw: Vec<u8> = pngs()
        .iter()
        .flat_map(|i| i.to_luma8().into_raw())
        .collect();
    if std::env::var("ORIGAMI_WRITE_ASSETS").as_deref() == Ok("1") {
        let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/bundled-28x28.u8");
        std::fs::write(out, &raw).unwrap();
        return;
    }
    assert_eq!(raw, BUNDLED_28X28);
    let fashion = zoo::fashion();
    let mut rgb: Model = fashion.clone();
    rgb.input_shape = vec![3, 28, 28];
    for model in [&fashion, &rgb] {
        let want: Vec<_> = pngs().iter().map(|i| image_to_tensor(i, model)).collect();
        let got = bundled_calibration(model);
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.shape, w.shape);
            assert!(g
                .data
                .iter()
                .zip(&w.data)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }
    let mut big = fashion.clone();
    big.input_shape = vec![1, 32, 32];
    assert!(bundled_calibration(&big).is_empty());
}
