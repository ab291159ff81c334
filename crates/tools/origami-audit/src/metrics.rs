//! Reconstruction scores for grayscale images in [0, 1].
//!
//! SSIM follows Wang et al. (2004) as scikit-image computes it with `gaussian_weights=True,
//! sigma=1.5, use_sample_covariance=False, data_range=1`: Gaussian window of radius 5
//! (truncate 3.5σ), reflected borders, K1 = 0.01, K2 = 0.03, mean over the map with the 5-pixel
//! border cropped. Checked against scikit-image in tests (tests/ssim_reference.py).

/// Peak signal-to-noise ratio in dB for data range 1 (∞ for identical images).
pub fn psnr(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "psnr: images differ in size"); // callers compare same-shape images
    let mse = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum::<f64>()
        / a.len().max(1) as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (1.0 / mse).log10()
    }
}

const SIGMA: f64 = 1.5;
const RADIUS: usize = 5; // int(3.5 · 1.5 + 0.5)

fn kernel() -> [f64; 2 * RADIUS + 1] {
    let mut k = [0f64; 2 * RADIUS + 1];
    for (i, v) in k.iter_mut().enumerate() {
        let x = i as f64 - RADIUS as f64;
        *v = (-0.5 * x * x / (SIGMA * SIGMA)).exp();
    }
    let s: f64 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= s);
    k
}

/// scipy's "reflect" border: (d c b a | a b c d | d c b a).
fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    let mut i = i;
    loop {
        if i < 0 {
            i = -i - 1;
        } else if i >= n {
            i = 2 * n - i - 1;
        } else {
            return i as usize;
        }
    }
}

fn gaussian(img: &[f64], h: usize, w: usize) -> Vec<f64> {
    let k = kernel();
    let mut tmp = vec![0f64; h * w];
    for y in 0..h {
        for x in 0..w {
            tmp[y * w + x] = (0..k.len())
                .map(|t| k[t] * img[y * w + reflect(x as isize + t as isize - RADIUS as isize, w)])
                .sum();
        }
    }
    let mut out = vec![0f64; h * w];
    for y in 0..h {
        for x in 0..w {
            out[y * w + x] = (0..k.len())
                .map(|t| k[t] * tmp[reflect(y as isize + t as isize - RADIUS as isize, h) * w + x])
                .sum();
        }
    }
    out
}

/// Mean structural similarity of two `[C, H, W]` images in [0, 1]: the mean over channels of
/// each plane's SSIM (as scikit-image's `channel_axis`).
pub fn ssim_image(a: &[f32], b: &[f32], shape: [usize; 3]) -> f64 {
    let [c, h, w] = shape;
    assert!(
        a.len() == c * h * w && b.len() == c * h * w,
        "ssim: bad image size"
    );
    let plane = h * w;
    (0..c)
        .map(|k| {
            ssim(
                &a[k * plane..(k + 1) * plane],
                &b[k * plane..(k + 1) * plane],
                h,
                w,
            )
        })
        .sum::<f64>()
        / c.max(1) as f64
}

/// Mean structural similarity of two `h × w` images in [0, 1].
pub fn ssim(a: &[f32], b: &[f32], h: usize, w: usize) -> f64 {
    assert!(
        a.len() == h * w && b.len() == h * w && h > 2 * RADIUS && w > 2 * RADIUS,
        "ssim: bad image size"
    );
    let x: Vec<f64> = a.iter().map(|&v| v as f64).collect();
    let y: Vec<f64> = b.iter().map(|&v| v as f64).collect();
    let prod = |p: &[f64], q: &[f64]| -> Vec<f64> { p.iter().zip(q).map(|(u, v)| u * v).collect() };
    let (ux, uy) = (gaussian(&x, h, w), gaussian(&y, h, w));
    let (uxx, uyy, uxy) = (
        gaussian(&prod(&x, &x), h, w),
        gaussian(&prod(&y, &y), h, w),
        gaussian(&prod(&x, &y), h, w),
    );
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    let mut sum = 0.0;
    let mut count = 0usize;
    for r in RADIUS..h - RADIUS {
        for c in RADIUS..w - RADIUS {
            let i = r * w + c;
            let (mx, my) = (ux[i], uy[i]);
            let (vx, vy, vxy) = (uxx[i] - mx * mx, uyy[i] - my * my, uxy[i] - mx * my);
            sum += ((2.0 * mx * my + c1) * (2.0 * vxy + c2))
                / ((mx * mx + my * my + c1) * (vx + vy + c2));
            count += 1;
        }
    }
    sum / count as f64
}
