"""Metric definitions checked against independent references and hand computations."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from data.degradations import jpeg
from utils.utils_image import (
    blocking_effect_factor,
    calculate_psnr,
    calculate_psnrb,
    calculate_ssim,
    imread_uint,
    list_images,
    rgb2ycbcr,
    ycbcr2rgb,
)


def _bef_by_pairs(img: np.ndarray) -> float:
    """BEF straight from the definition, one pixel pair at a time (slow, for checking)."""
    x = img.astype(np.float64)
    h, w = x.shape
    d_b = d_bc = 0.0
    for i in range(h):
        for j in range(w - 1):
            d = (x[i, j] - x[i, j + 1]) ** 2
            if (j + 1) % 8 == 0:
                d_b += d
            else:
                d_bc += d
    for i in range(h - 1):
        for j in range(w):
            d = (x[i, j] - x[i + 1, j]) ** 2
            if (i + 1) % 8 == 0:
                d_b += d
            else:
                d_bc += d
    n_b = h * (w / 8 - 1) + w * (h / 8 - 1)
    n_bc = h * (w - 1) + w * (h - 1) - n_b
    d_b, d_bc = d_b / n_b, d_bc / n_bc
    return math.log2(8) / math.log2(min(h, w)) * (d_b - d_bc) if d_b > d_bc else 0.0


@pytest.fixture(scope="module")
def live1(datasets: Path) -> list[np.ndarray]:
    return [imread_uint(p, 3) for p in list_images(datasets / "testsets" / "LIVE1_color")[:3]]


def test_psnr_hand_computed() -> None:
    a = np.zeros((8, 8, 1), np.uint8)
    b = a.copy()
    b[0, 0] = 16  # MSE = 256 / 64 = 4
    assert calculate_psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 4))
    assert calculate_psnr(a, a) == math.inf
    b[:2] = 200  # only the border rows differ: border=2 ignores them
    assert calculate_psnr(a, b, border=2) == math.inf


def test_ssim_matches_scikit_image(live1: list[np.ndarray]) -> None:
    gt = live1[0]
    degraded = jpeg(gt, 10)
    ref = structural_similarity(
        gt, degraded, channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    assert calculate_ssim(gt, degraded) == pytest.approx(ref, abs=1e-6)
    assert calculate_ssim(gt, gt) == pytest.approx(1.0)


def test_bef_matches_pairwise_definition(live1: list[np.ndarray]) -> None:
    y = rgb2ycbcr(jpeg(live1[1], 10))[:61, :83]  # odd sizes: partial blocks at the edges
    assert blocking_effect_factor(y) == pytest.approx(_bef_by_pairs(y), rel=1e-9)
    assert blocking_effect_factor(y) > 0


def test_psnrb_uses_restored_luma_and_rgb_mse(live1: list[np.ndarray]) -> None:
    gt = live1[2]
    degraded = jpeg(gt, 10)
    mse = np.mean((gt.astype(float) - degraded.astype(float)) ** 2)
    expected = 10 * math.log10(255**2 / (mse + blocking_effect_factor(rgb2ycbcr(degraded))))
    assert calculate_psnrb(gt, degraded) == pytest.approx(expected)
    # BEF comes from the restored image only: swapping the arguments changes the score.
    assert calculate_psnrb(degraded, gt) != pytest.approx(calculate_psnrb(gt, degraded))
    # No blocking in the ground truth itself -> PSNR-B <= PSNR for the JPEG.
    assert calculate_psnrb(gt, degraded) < calculate_psnr(gt, degraded)


def test_rgb2ycbcr_matlab_values(datasets: Path) -> None:
    rgb = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0]]], np.uint8)
    assert rgb2ycbcr(rgb).tolist() == [[16, 235, 81]]
    ycc = rgb2ycbcr(rgb, only_y=False)
    assert ycc[0, 1].tolist() == [235, 128, 128]
    assert np.abs(ycbcr2rgb(ycc).astype(int) - rgb).max() <= 1
    # The LIVE1_gray set is the MATLAB Y of LIVE1_color (up to rounding of a handful of pixels).
    colour_dir, gray_dir = datasets / "testsets" / "LIVE1_color", datasets / "testsets" / "LIVE1_gray"
    for path in list_images(colour_dir)[:3]:
        y = imread_uint(path, 1)
        ref = imread_uint(gray_dir / path.name, 1)
        assert np.mean(y != ref) < 1e-4
        assert np.abs(y.astype(int) - ref).max() <= 1
