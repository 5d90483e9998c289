"""16-bit PNG/TIFF through the restore CLI: 16 bits in, 16 bits out, never rounded to 8 bits on the way.

Inputs are real LIVE1 crops JPEG-compressed at QF 20 and lifted to 16 bits with sub-8-bit detail
(``x * 257 + noise < 257``), so an 8-bit detour anywhere would show. The expected outputs are the
bundled network's float32 forward of ``x / 65535`` rounded to 16 bits (``--no-half --no-grid-align``).
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
import torch

import main_restore_fbcnn as cli
import utils.backends as backends
from data.degradations import jpeg
from models import ZOO_MODELS, load_model
from utils.utils_image import imread_uint, rgb2ycbcr


@pytest.fixture(scope="module")
def deep_rgb(datasets) -> np.ndarray:
    """uint16 RGB 72x96: a JPEG (QF 20) crop of LIVE1 bikes at 16 bits with detail below one 8-bit level."""
    crop = jpeg(imread_uint(datasets / "testsets" / "LIVE1_color" / "bikes.png", 3)[:72, :96], 20)
    fine = np.random.default_rng(0).integers(0, 257, crop.shape)
    return (crop.astype(np.uint16) * 257 + fine).astype(np.uint16)


def write16(path, rgb_or_gray: np.ndarray) -> None:
    img = rgb_or_gray[:, :, ::-1] if rgb_or_gray.shape[2] == 3 else rgb_or_gray[:, :, 0]
    assert cv2.imwrite(str(path), np.ascontiguousarray(img))


def read16(path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img.dtype == np.uint16
    return img[:, :, ::-1] if img.ndim == 3 else img[:, :, None]


def float_forward(model_path, x: np.ndarray) -> np.ndarray:
    """The network in float32 on uint16 ``x`` / 65535, output rounded to 16 bits (the reference)."""
    model = load_model(model_path).eval()
    t = torch.from_numpy(x.transpose(2, 0, 1).astype(np.float32) / 65535.0)[None]
    with torch.inference_mode():
        out, _ = model(t)
    return np.round(out[0].clamp(0, 1).numpy().transpose(1, 2, 0) * 65535.0).astype(np.uint16)


def restore(src, dst, *extra, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="fbcnn-restore"):
        argv = [str(src), "-o", str(dst), "--no-half", "--no-grid-align", "--tile", "0", *map(str, extra)]
        assert cli.main(argv) == 0
    assert "converted to 8 bits" not in caplog.text and "rounded to 8 bits" not in caplog.text


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_colour_16bit_round_trip(tmp_path, deep_rgb, suffix, caplog) -> None:
    src, dst = tmp_path / f"in{suffix}", tmp_path / f"out{suffix}"
    write16(src, deep_rgb)
    restore(src, dst, "--model", ZOO_MODELS[3], caplog=caplog)
    out = read16(dst)
    assert out.shape == deep_rgb.shape
    assert (out % 257 != 0).mean() > 0.9  # values between the 8-bit levels: not an 8-bit image scaled up
    expected = float_forward(ZOO_MODELS[3], deep_rgb)
    assert np.abs(out.astype(int) - expected).max() <= 1  # float32 forward, 16-bit rounding only
    assert np.abs(out.astype(int) - deep_rgb).mean() > 257  # it did restore (moved by > 1 8-bit level)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_gray_16bit_round_trip(tmp_path, deep_rgb, suffix, caplog) -> None:
    gray = deep_rgb[:, :, 1:2].copy()
    src, dst = tmp_path / f"in{suffix}", tmp_path / f"out{suffix}"
    write16(src, gray)
    restore(src, dst, "--gray", caplog=caplog)
    out = read16(dst)
    assert out.shape == gray.shape and (out % 257 != 0).mean() > 0.9
    assert np.abs(out.astype(int) - float_forward(ZOO_MODELS[1], gray)).max() <= 1


def test_gray_model_on_16bit_colour_restores_y_keeps_16bit_chroma(tmp_path, deep_rgb, caplog) -> None:
    src, dst = tmp_path / "in.png", tmp_path / "out.png"
    write16(src, deep_rgb)
    restore(src, dst, "--gray", caplog=caplog)
    out = read16(dst)
    assert out.shape == deep_rgb.shape and (out % 257 != 0).mean() > 0.9
    ycc_in = rgb2ycbcr(deep_rgb / 65535.0, only_y=False)
    ycc_out = rgb2ycbcr(out / 65535.0, only_y=False)
    # Cb/Cr kept to 16-bit precision (one 16-bit level is 1.5e-5; one 8-bit level would be 3.9e-3), except where
    # the new Y pushed RGB out of gamut and it was clipped
    inside = ((out > 0) & (out < 65535)).all(axis=2)
    assert inside.mean() > 0.9
    assert np.abs(ycc_out[:, :, 1:] - ycc_in[:, :, 1:])[inside].max() < 1e-4
    y16 = np.round(ycc_in[:, :, :1] * 65535.0).astype(np.uint16)
    expected_y = float_forward(ZOO_MODELS[1], y16) / 65535.0
    assert np.abs(ycc_out[:, :, :1] - expected_y)[inside].max() < 1e-4  # Y is the gray network's float output
    assert np.abs(ycc_out[:, :, 0] - ycc_in[:, :, 0]).mean() > 1 / 255  # and it did change


def test_16bit_to_jpeg_output_warns(tmp_path, deep_rgb, caplog, monkeypatch) -> None:
    # as on hardware with native half precision (e.g. an AVX512-BF16 CPU), where the default would be on
    monkeypatch.setattr(backends, "half_supported", lambda device: True)
    src = tmp_path / "in.png"
    write16(src, deep_rgb)
    with caplog.at_level(logging.INFO, logger="fbcnn-restore"):
        assert cli.main([str(src), "-o", str(tmp_path / "out.jpg"), "--model", str(ZOO_MODELS[3])]) == 0
    assert "16-bit result rounded to 8 bits" in caplog.text
    assert "half precision on" in caplog.text
    assert "restored in float32" in caplog.text  # half precision is not used for 16-bit images unless asked
