#!/usr/bin/env python3
"""Reference SSIM/PSNR values for tests/metrics.rs, computed with scikit-image (an independent
implementation): pip install scikit-image; python3 ssim_reference.py
The images are deterministic formulas that the Rust test rebuilds exactly."""
import math
import numpy as np
from skimage.metrics import structural_similarity as ssim, peak_signal_noise_ratio as psnr

n = 28 * 28
a = np.array([((i * 37) % 101) / 100.0 for i in range(n)]).reshape(28, 28)
b = np.clip(a + 0.1 * np.array([math.sin(i) for i in range(n)]).reshape(28, 28), 0, 1)
c = np.clip(a * 0.5 + 0.2, 0, 1)
g = (np.arange(n) / (n - 1)).reshape(28, 28)
for name, u, v in [("noisy", a, b), ("contrast", a, c), ("flip", g, g[::-1])]:
    s = ssim(u, v, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)
    p = psnr(u, v, data_range=1.0)
    print(f"{name}: ssim {s!r} psnr {p!r}")
