//! White-box inversion (He, Zhang, Lee, ACSAC'19): the host knows the weights, so it searches
//! for an input whose features match the observed ones, by gradient descent (Adam) on
//! mean((f(x) − observed)²) + λ·TV²(x), with x kept in [0, 1].
//!
//! The combined attack ([`invert_from`] started at a learned decoder's output) is the
//! published refinement: the decoder gives a prior-shaped guess, the optimisation then makes
//! it consistent with the observed features.

use origami_model::Model;

use crate::AuditError;

/// Attack settings.
#[derive(Clone, Debug)]
pub struct WhiteboxConfig {
    pub steps: usize,
    pub lr: f32,
    /// Weight of the smoothness prior (sum of squared neighbour differences, per pixel).
    pub tv: f32,
}

impl Default for WhiteboxConfig {
    fn default() -> Self {
        Self {
            steps: 300,
            lr: 0.05,
            tv: 0.01,
        }
    }
}

/// Rebuilds a 28×28 image in [0, 1] from the features after node `end − 1` of `model`,
/// starting from a flat grey image.
pub fn invert(
    model: &Model,
    end: usize,
    observed: &[f32],
    cfg: &WhiteboxConfig,
) -> Result<Vec<f32>, AuditError> {
    invert_from(model, end, observed, &[0.5; 28 * 28], cfg)
}

/// [`invert`] starting from `init` (28×28, clamped to [0, 1]), e.g. a decoder's output.
pub fn invert_from(
    model: &Model,
    end: usize,
    observed: &[f32],
    init: &[f32],
    cfg: &WhiteboxConfig,
) -> Result<Vec<f32>, AuditError> {
    let (h, w) = (28usize, 28usize);
    if init.len() != h * w {
        return Err(AuditError::Attack(format!(
            "white-box start of {} values, expected {}",
            init.len(),
            h * w
        )));
    }
    let mut x: Vec<f32> = init.iter().map(|v| v.clamp(0.0, 1.0)).collect();
    let (mut m1, mut m2) = (vec![0f32; h * w], vec![0f32; h * w]);
    let (b1, b2) = (0.9f32, 0.999f32);
    let n = (h * w) as f32;
    for step in 1..=cfg.steps {
        let (_, mut g) = origami_train::feature_gradient(model, end, &x, observed)
            .map_err(|e| AuditError::Attack(e.to_string()))?;
        // Gradient of (tv / n) · Σ (neighbour differences)².
        for y in 0..h {
            for xx in 0..w {
                let i = y * w + xx;
                if xx + 1 < w {
                    let d = 2.0 * cfg.tv / n * (x[i] - x[i + 1]);
                    g[i] += d;
                    g[i + 1] -= d;
                }
                if y + 1 < h {
                    let d = 2.0 * cfg.tv / n * (x[i] - x[i + w]);
                    g[i] += d;
                    g[i + w] -= d;
                }
            }
        }
        let (c1, c2) = (1.0 - b1.powi(step as i32), 1.0 - b2.powi(step as i32));
        for i in 0..h * w {
            m1[i] = b1 * m1[i] + (1.0 - b1) * g[i];
            m2[i] = b2 * m2[i] + (1.0 - b2) * g[i] * g[i];
            x[i] = (x[i] - cfg.lr * (m1[i] / c1) / ((m2[i] / c2).sqrt() + 1e-8)).clamp(0.0, 1.0);
        }
    }
    Ok(x)
}
