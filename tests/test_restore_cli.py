"""main_restore_fbcnn end to end: files, folders, gray/colour models, alpha, EXIF and bad inputs (tiny networks)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import main_restore_fbcnn as cli
from data.degradations import jpeg
from models import write_state_dict
from tests.conftest import ROOT, make_tiny_fbcnn
from utils.tiling import restore_tiled
from utils.utils_image import imread_uint, rgb2ycbcr


@pytest.fixture(scope="module")
def crops(datasets) -> dict[str, np.ndarray]:
    """Small JPEG-compressed crops of real LIVE1 images (uint8 RGB)."""
    folder = datasets / "testsets" / "LIVE1_color"
    return {
        "bikes": jpeg(imread_uint(folder / "bikes.png", 3)[:72, :96], 20),
        "caps": jpeg(imread_uint(folder / "caps.png", 3)[100:164, 200:248], 40),
    }


def offset_fbcnn(in_nc: int, offset: float) -> dict:
    """State_dict of a tiny FBCNN whose output is its input plus ``offset`` gray levels.

    All weights are zero except an identity path through ``m_head`` and ``m_tail``: every other
    branch then adds exactly zero, so the expected output is known without a trained model.
    """
    state = {k: torch.zeros_like(v) for k, v in make_tiny_fbcnn(in_nc).state_dict().items()}
    for c in range(in_nc):
        state["m_head.weight"][c, c, 1, 1] = 1.0
        state["m_tail.weight"][c, c, 1, 1] = 1.0
    state["m_tail.bias"][:] = offset / 255.0
    return state


def save_jpeg(img: np.ndarray, path: Path, **kwargs) -> Path:
    Image.fromarray(img.squeeze()).save(path, quality=95, **kwargs)
    return path


def run(argv: list[str], caplog: pytest.LogCaptureFixture) -> int:
    with caplog.at_level(logging.INFO, logger="fbcnn-restore"):
        return cli.main([str(a) for a in argv])


def test_files_and_folder(tmp_path, crops, tiny_fbcnn_path, caplog) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name, img in crops.items():
        save_jpeg(img, folder / f"{name}.jpg")
    single = save_jpeg(crops["bikes"], tmp_path / "single.jpg")
    out = tmp_path / "out"
    assert (
        run([folder, single, "--model", tiny_fbcnn_path, "-o", out, "--tile", "32", "--tile-overlap", "16"], caplog)
        == 0
    )
    for name in ("bikes", "caps", "single"):
        written = imread_uint(out / f"{name}.png", 3)
        assert written.shape == crops["bikes" if name == "single" else name].shape
    assert caplog.text.count("(predicted)") == 3  # the predicted QF is logged per file


def test_output_matches_library_restore(tmp_path, crops, tiny_fbcnn_path, caplog) -> None:
    src = save_jpeg(crops["bikes"], tmp_path / "a.jpg")
    dst = tmp_path / "restored.png"
    assert run([src, "--model", tiny_fbcnn_path, "-o", dst, "--qf", "30", "--no-bf16"], caplog) == 0
    expected, _ = restore_tiled(make_tiny_fbcnn(3), np.asarray(Image.open(src)), 30.0)
    assert np.array_equal(imread_uint(dst, 3), expected)
    assert "QF 30 (set)" in caplog.text


def test_gray_model_on_colour_restores_y_and_keeps_chroma(tmp_path, crops, caplog) -> None:
    model = write_state_dict(offset_fbcnn(1, offset=10), tmp_path / "offset_gray.pth")
    src = tmp_path / "c.png"
    Image.fromarray(crops["caps"]).save(src)
    assert run([src, "--model", model, "-o", tmp_path / "o.png"], caplog) == 0
    out = imread_uint(tmp_path / "o.png", 3)
    unclipped = ((out > 0) & (out < 255)).all(axis=2)  # where YCbCr -> RGB did not saturate
    assert unclipped.mean() > 0.5
    before = rgb2ycbcr(crops["caps"], only_y=False).astype(int)[unclipped]
    after = rgb2ycbcr(out, only_y=False).astype(int)[unclipped]
    assert np.abs(after[:, 0] - (before[:, 0] + 10)).max() <= 1  # Y went through the network
    assert np.abs(after[:, 1:] - before[:, 1:]).max() <= 2  # Cb/Cr kept up to rounding


def test_colour_model_on_gray_returns_gray(tmp_path, crops, caplog) -> None:
    model = write_state_dict(offset_fbcnn(3, offset=0), tmp_path / "identity_color.pth")
    gray = crops["bikes"][:, :, 1]
    Image.fromarray(gray).save(tmp_path / "g.png")
    assert run([tmp_path / "g.png", "--model", model, "-o", tmp_path / "g_out.png"], caplog) == 0
    with Image.open(tmp_path / "g_out.png") as im:
        assert im.mode == "L"
        assert np.abs(np.asarray(im).astype(int) - gray).max() <= 1


def test_gray_default_model_on_gray_folder(tmp_path, datasets, monkeypatch, caplog) -> None:
    monkeypatch.setitem(cli.ZOO_MODELS, 1, write_state_dict(make_tiny_fbcnn(1).state_dict(), tmp_path / "g.pth"))
    folder = tmp_path / "gray"
    folder.mkdir()
    for name in ("bikes", "caps"):
        img = imread_uint(datasets / "testsets" / "LIVE1_gray" / f"{name}.png", 1)[:40, :56]
        save_jpeg(jpeg(img, 10), folder / f"{name}.jpg")
    assert run([folder, "--gray", "-o", tmp_path / "out", "--format", "tif"], caplog) == 0
    for name in ("bikes", "caps"):
        with Image.open(tmp_path / "out" / f"{name}.tif") as im:
            assert im.mode == "L" and im.size == (56, 40)
    assert "(fbcnn, gray)" in caplog.text


def test_gray_default_model_missing_is_a_clear_error(tmp_path, crops, monkeypatch, caplog) -> None:
    monkeypatch.setitem(cli.ZOO_MODELS, 1, tmp_path / "nowhere" / "fbcnn_gray_small.pth")
    src = save_jpeg(crops["bikes"], tmp_path / "a.jpg")
    assert run([src, "--gray", "-o", tmp_path / "o"], caplog) == 2
    assert "--model" in caplog.text and "fbcnn_gray_small.pth" in caplog.text


def test_alpha_exif_and_formats(tmp_path, crops, tiny_fbcnn_path, caplog) -> None:
    rgba = np.dstack([crops["caps"], np.tile(np.arange(48, dtype=np.uint8) * 5, (64, 1))])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    save_jpeg(crops["bikes"], tmp_path / "rotated.jpg", exif=exif)
    out = tmp_path / "out"
    assert run([tmp_path / "alpha.png", tmp_path / "rotated.jpg", "-o", out, "--model", tiny_fbcnn_path], caplog) == 0
    with Image.open(out / "alpha.png") as im:
        assert im.mode == "RGBA"
        assert np.array_equal(np.asarray(im)[:, :, 3], rgba[:, :, 3])  # alpha untouched
    with Image.open(out / "rotated.png") as im:
        assert im.size == (72, 96)  # upright: width and height swapped
    assert run([tmp_path / "alpha.png", "-o", out, "--format", "webp", "--model", tiny_fbcnn_path], caplog) == 0
    with Image.open(out / "alpha.webp") as im:
        assert im.format == "WEBP" and im.mode == "RGBA"
    assert run([tmp_path / "alpha.png", "-o", out / "x.jpg", "--model", tiny_fbcnn_path], caplog) == 0
    assert "alpha channel dropped" in caplog.text
    assert Image.open(out / "x.jpg").format == "JPEG"


def test_bad_inputs_are_reported_and_others_processed(tmp_path, crops, tiny_fbcnn_path, caplog) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = save_jpeg(crops["bikes"], folder / "good.jpg")
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (folder / "notes.png").write_text("not an image")
    sixteen = (crops["caps"].astype(np.uint16) * 257)[:, :, ::-1]
    cv2.imwrite(str(folder / "deep16.png"), np.ascontiguousarray(sixteen))  # 16-bit RGB PNG
    Image.fromarray(crops["caps"]).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    Image.fromarray(crops["caps"]).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    Image.fromarray(crops["caps"][:5, :3]).save(folder / "tiny.png")  # smaller than one 8x8 block
    out = tmp_path / "out"

    status = run([folder, tmp_path / "missing.jpg", "--model", tiny_fbcnn_path, "-o", out], caplog)
    assert status == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("truncated.jpg" in e for e in errors)
    assert any("notes.png" in e for e in errors)
    assert any("missing.jpg" in e and "does not exist" in e for e in errors)
    assert sorted(p.name for p in out.iterdir()) == ["cmyk.png", "deep16.png", "good.png", "palette.png", "tiny.png"]
    assert "16-bit image converted to 8 bits" in caplog.text
    assert "CMYK image converted to RGB" in caplog.text and "palette image converted" in caplog.text
    assert imread_uint(out / "tiny.png", 3).shape == (5, 3, 3)
    deep = imread_uint(out / "deep16.png", 3)
    assert deep.dtype == np.uint8 and deep.shape == crops["caps"].shape


def test_dominant_mode_falls_back_to_blind(tmp_path, crops, tiny_fbcnn_path, monkeypatch, caplog) -> None:
    src = save_jpeg(crops["bikes"], tmp_path / "a.jpg")
    results = iter([None, 35])
    fake = types.ModuleType("utils.dominant_qf")
    fake.estimate_dominant_qf = lambda img: types.SimpleNamespace(qf=next(results))
    monkeypatch.setitem(sys.modules, "utils.dominant_qf", fake)
    cli._dominant_qf_estimator.cache_clear()
    try:
        args = [src, "--model", tiny_fbcnn_path, "--qf-mode", "dominant", "-o", tmp_path / "o"]
        assert run(args, caplog) == 0
        assert "no dominant QF found; using blind mode" in caplog.text and "(predicted)" in caplog.text
        assert run(args, caplog) == 0
        assert "QF 35 (dominant)" in caplog.text
    finally:
        cli._dominant_qf_estimator.cache_clear()


def test_usage_errors_and_module_entry_point(tmp_path, crops, tiny_fbcnn_path) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["x.png", "--qf", "30", "--qf-mode", "blind"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        cli.main(["x.png", "--tile", "100"])
    Image.fromarray(crops["bikes"]).save(tmp_path / "a.png")
    save_jpeg(crops["caps"], tmp_path / "b.jpg")
    result = subprocess.run(
        [sys.executable, "-m", "main_restore_fbcnn", "a.png", "b.jpg", "--model", str(tiny_fbcnn_path), "-o", "."],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1, result.stderr
    assert "would overwrite the input" in result.stderr  # a.png -> ./a.png is refused ...
    assert (tmp_path / "b.png").is_file()  # ... and b.jpg is still restored
