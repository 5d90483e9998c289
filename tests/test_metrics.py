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


def four_blocks(texture: bool = False) -> np.ndarray:
    """16 x 16 gray image of four flat 8 x 8 blocks, 0 | 8 over 4 | 12; ``texture`` adds 1 on odd columns."""
    img = np.zeros((16, 16), np.uint8)
    img[:8, 8:], img[8:, :8], img[8:, 8:] = 8, 4, 12
    if texture:
        img[:, 1::2] += 1
    return img


def test_bef_hand_computed() -> None:
    """BEF (Yim & Bovik 2011, Tadala) worked out by hand on 16 x 16 images with known block steps.

    N_B = H (W/8 - 1) + W (H/8 - 1) = 16 + 16 = 32 boundary pairs; N_Bc = 16*15 + 16*15 - 32 = 448;
    eta = log2(8) / log2(16) = 3/4.
    Flat blocks: the boundary pairs differ by 8 (16 rows across the vertical edge) and by 4 (16 columns
    across the horizontal edge): D_B = (16*64 + 16*16) / 32 = 40, D_Bc = 0, BEF = 0.75 * 40 = 30.
    With +1 on odd columns: across the vertical edge column 7 (odd, +1) meets column 8 (even): steps 7,
    D_B = (16*49 + 16*16) / 32 = 32.5; inside the blocks 14 row pairs per row differ by 1:
    D_Bc = 16*14 / 448 = 0.5; BEF = 0.75 * (32.5 - 0.5) = 24.
    The texture alone (no blocks) has D_B = 16 / 32 = 0.5 = D_Bc: not blocky, BEF = 0.
    """
    assert blocking_effect_factor(four_blocks()) == pytest.approx(30.0)
    assert blocking_effect_factor(four_blocks(texture=True)) == pytest.approx(24.0)
    texture_only = np.zeros((16, 16), np.uint8)
    texture_only[:, 1::2] = 1
    assert blocking_effect_factor(texture_only) == 0.0
    # Not square: eta uses min(H, W). 8 x 16 (two blocks 0 | 8): N_B = 8*1 + 16*0 = 8, D_B = 8*64/8 = 64,
    # eta = log2(8) / log2(8) = 1, BEF = 64.
    assert blocking_effect_factor(four_blocks()[:8]) == pytest.approx(64.0)


def test_psnrb_hand_computed() -> None:
    """PSNR-B = 10 log10(255^2 / (MSE + BEF of the restored image)), by hand on the four-block image.

    Ground truth flat 6: MSE = (6^2 + 2^2 + 2^2 + 6^2) / 4 = 20; BEF of the restored image = 30;
    PSNR-B = 10 log10(65025 / 50). The flat ground truth has no blocking, so swapping the two gives
    MSE 20 + BEF 0: the PSNR.
    """
    gt = np.full((16, 16, 1), 6, np.uint8)
    blocky = four_blocks()[:, :, None]
    assert calculate_psnrb(gt, blocky) == pytest.approx(10 * math.log10(65025 / 50))
    assert calculate_psnrb(blocky, gt) == pytest.approx(10 * math.log10(65025 / 20))
    assert calculate_psnr(gt, blocky) == pytest.approx(10 * math.log10(65025 / 20))


def test_psnrb_published_value(datasets: Path) -> None:
    """The official FBCNN log's PSNR-B of its restored LIVE1 'building2' (QF 10), where BEF weighs most:
    PSNR 23.38 dB, PSNR-B 22.88 dB as printed by the official code (its own metric implementation)."""
    ref = datasets / "reference" / "official_fbcnn_color_LIVE1_qf10"
    assert "building2.bmp - PSNR: 23.38 dB; SSIM: 0.759; PSNRB: 22.88 dB." in next(ref.glob("*.log")).read_text()
    gt = imread_uint(datasets / "testsets" / "LIVE1_color" / "building2.png", 3)
    restored = imread_uint(ref / "building2.png", 3)
    assert f"{calculate_psnrb(gt, restored):.2f}" == "22.88"
    assert f"{calculate_psnr(gt, restored):.2f}" == "23.38"


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
