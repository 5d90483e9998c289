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
from models import ZOO_MODELS, load_model, write_state_dict
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


def test_files_and_folder(tmp_path, crops, caplog) -> None:
    """A folder and a file, tiled at 32 px: each output close to the untiled one (the bundled colour model)."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name, img in crops.items():
        save_jpeg(img, folder / f"{name}.jpg")
    single = save_jpeg(crops["bikes"], tmp_path / "single.jpg")
    model = ["--model", ZOO_MODELS[3], "--no-half"]
    assert run([folder, single, *model, "-o", tmp_path / "out", "--tile", "32", "--tile-overlap", "16"], caplog) == 0
    assert caplog.text.count("(predicted)") == 3  # the predicted QF is logged per file
    assert run([folder, single, *model, "-o", tmp_path / "whole", "--tile", "0"], caplog) == 0
    for name in ("bikes", "caps", "single"):
        decoded = np.asarray(Image.open(tmp_path / ("single.jpg" if name == "single" else f"in/{name}.jpg")))
        tiled = imread_uint(tmp_path / "out" / f"{name}.png", 3).astype(int)
        whole = imread_uint(tmp_path / "whole" / f"{name}.png", 3).astype(int)
        assert tiled.shape == whole.shape == decoded.shape
        change = np.abs(whole - decoded).mean()
        assert change > 2  # the network really restores
        diff = np.abs(tiled - whole)
        # Tiled at 32 px, the QF is also estimated on 32-px tiles, which reads bikes' QF as about 30
        # instead of the whole image's 22; with the same QF the tiles alone differ by 0.43 levels on
        # average. Measured with the bundled colour model (2-3 x 2-3 tiles, 16 overlap): max 7, mean
        # 0.70 of a 3.59-level restoration (bikes), max 3, mean 0.34 of 2.65 (caps). A misplaced tile
        # or a broken blend moves pixels by about the restoration itself.
        assert diff.max() <= 8 and diff.mean() < 0.25 * change, (name, diff.max(), diff.mean(), change)


def gray_jpeg(crops: dict[str, np.ndarray], path: Path) -> tuple[Path, np.ndarray]:
    """A gray JPEG crop written to ``path``, and its decoded pixels (H x W x 1)."""
    save_jpeg(np.ascontiguousarray(crops["bikes"][:, :, 1]), path)
    return path, np.asarray(Image.open(path))[:, :, None]


def test_fixed_qf_end_to_end(tmp_path, crops, caplog) -> None:
    """``--qf-mode fixed --qf 30`` restores exactly as the library does at QF 30, and the QF matters.

    The bundled gray model (its controller responds to the QF; the committed colour model's does not).
    """
    src, decoded = gray_jpeg(crops, tmp_path / "a.jpg")
    model = ["--model", ZOO_MODELS[1], "--no-half", "--no-channels-last"]
    assert run([src, *model, "-o", tmp_path / "qf30.png", "--qf-mode", "fixed", "--qf", "30"], caplog) == 0
    assert run([src, *model, "-o", tmp_path / "qf80.png", "--qf", "80"], caplog) == 0
    expected, used = restore_tiled(load_model(ZOO_MODELS[1]), decoded, 30.0)
    qf30 = imread_uint(tmp_path / "qf30.png", 1)
    assert used == 30.0 and np.array_equal(qf30, expected)
    assert np.abs(qf30.astype(int) - imread_uint(tmp_path / "qf80.png", 1)).mean() > 0.3  # the QF is used
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


@pytest.mark.parametrize(("orientation", "upright"), [(6, lambda a: np.rot90(a, -1)), (8, lambda a: np.rot90(a, 1))])
def test_exif_orientation_direction(tmp_path, crops, caplog, orientation: int, upright) -> None:
    """EXIF 6 = rotate 90 degrees clockwise to display, 8 = counter-clockwise: the output is the upright view.

    With an identity network, the output must equal the stored pixels rotated that way (up to rounding).
    """
    model = write_state_dict(offset_fbcnn(3, offset=0), tmp_path / "identity_color.pth")
    exif = Image.Exif()
    exif[0x0112] = orientation
    src = save_jpeg(crops["bikes"], tmp_path / "rotated.jpg", exif=exif)
    with Image.open(src) as im:
        stored = np.asarray(im)  # the pixels as stored, not transposed
    assert run([src, "--model", model, "-o", tmp_path / "out.png", "--no-half"], caplog) == 0
    out = imread_uint(tmp_path / "out.png", 3).astype(int)
    assert out.shape == (96, 72, 3)
    assert np.abs(out - upright(stored)).max() <= 1
    assert np.abs(out - np.rot90(upright(stored), 2)).mean() > 10  # the other direction is far off


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
    assert "16-bit image converted to 8 bits" not in caplog.text  # 16-bit stays 16-bit (tests/test_restore_16bit.py)
    assert "CMYK image converted to RGB" in caplog.text and "palette image converted" in caplog.text
    assert imread_uint(out / "tiny.png", 3).shape == (5, 3, 3)
    deep = cv2.imread(str(out / "deep16.png"), cv2.IMREAD_UNCHANGED)
    assert deep.dtype == np.uint16 and deep.shape == crops["caps"].shape


def test_dominant_mode_falls_back_to_blind(tmp_path, crops, monkeypatch, caplog) -> None:
    """No dominant QF: the pixels are the blind restoration's; a dominant QF of 35: those of ``--qf 35``."""
    src, _ = gray_jpeg(crops, tmp_path / "a.jpg")
    model = ["--model", ZOO_MODELS[1], "--no-half"]
    assert run([src, *model, "-o", tmp_path / "blind.png"], caplog) == 0
    assert run([src, *model, "-o", tmp_path / "qf35.png", "--qf", "35"], caplog) == 0
    blind, qf35 = imread_uint(tmp_path / "blind.png", 1), imread_uint(tmp_path / "qf35.png", 1)
    assert np.abs(blind.astype(int) - qf35).mean() > 0.2  # the two references differ

    results = iter([None, 35])
    fake = types.ModuleType("utils.dominant_qf")
    fake.estimate_dominant_qf = lambda img: types.SimpleNamespace(qf=next(results))
    monkeypatch.setitem(sys.modules, "utils.dominant_qf", fake)
    cli._dominant_qf_estimator.cache_clear()
    try:
        args = [src, *model, "--qf-mode", "dominant", "-o"]
        assert run([*args, tmp_path / "fallback.png"], caplog) == 0
        assert np.array_equal(imread_uint(tmp_path / "fallback.png", 1), blind)
        assert run([*args, tmp_path / "dominant.png"], caplog) == 0
        assert np.array_equal(imread_uint(tmp_path / "dominant.png", 1), qf35)
    finally:
        cli._dominant_qf_estimator.cache_clear()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--qf", "30", "--qf-mode", "blind"], "--qf sets the QF; it cannot be combined with --qf-mode blind"),
        (["--qf-mode", "fixed"], "--qf-mode fixed needs --qf N"),
        (["--qf", "0"], "--qf must be in 1..100, got 0"),
        (["--tile", "100"], "--tile must be 0 or a positive multiple of 8, got 100"),
        (["--tile", "64", "--tile-overlap", "60"], "--tile-overlap must be in [0, tile - 8], got 60"),
        (["--quality", "101"], "--quality must be in 1..100, got 101"),
        (["--qf-mode", "oracle"], "argument --qf-mode: invalid choice: 'oracle'"),
    ],
)
def test_usage_errors_exit_2_with_a_message(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["x.png", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: fbcnn-restore") and f"fbcnn-restore: error: {message}" in err, err


def test_module_entry_point(tmp_path, crops, tiny_fbcnn_path) -> None:
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


def test_glob_inputs_and_no_images(tmp_path, crops, tiny_fbcnn_path, caplog) -> None:
    folder = tmp_path / "shots"
    folder.mkdir()
    save_jpeg(crops["bikes"], folder / "a.jpg")
    Image.fromarray(crops["caps"]).save(folder / "b.png")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    assert run([str(folder / "*"), "--model", tiny_fbcnn_path, "-o", out], caplog) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]  # the pattern's images only

    caplog.clear()
    assert run([str(folder / "*.gif"), "--model", tiny_fbcnn_path, "-o", tmp_path / "none"], caplog) == 1
    assert "*.gif: pattern matches no images" in caplog.text and "no images to restore" in caplog.text
    empty = tmp_path / "empty"
    empty.mkdir()
    caplog.clear()
    assert run([empty, "--model", tiny_fbcnn_path, "-o", tmp_path / "none"], caplog) == 1
    assert "folder contains no images" in caplog.text and "no images to restore" in caplog.text
    assert not (tmp_path / "none").exists()


def test_file_output_with_several_inputs_is_refused(tmp_path, crops, tiny_fbcnn_path, caplog) -> None:
    a, b = save_jpeg(crops["bikes"], tmp_path / "a.jpg"), save_jpeg(crops["caps"], tmp_path / "b.jpg")
    assert run([a, b, "--model", tiny_fbcnn_path, "-o", tmp_path / "out.png"], caplog) == 2
    assert "--output" in caplog.text and "is a file name, but 2 inputs were given: pass a directory" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg", "b.jpg", "tiny_color.pth"]


def test_device_cuda_without_cuda_is_a_clear_error(tmp_path, crops, tiny_fbcnn_path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on a machine with a GPU
    src = save_jpeg(crops["bikes"], tmp_path / "a.jpg")
    assert run([src, "--model", tiny_fbcnn_path, "--device", "cuda", "-o", tmp_path / "o"], caplog) == 2
    assert "--device cuda: CUDA is not available" in caplog.text
    assert not (tmp_path / "o").exists()


def test_failed_write_leaves_no_temporary_file(tmp_path, crops, tiny_fbcnn_path, monkeypatch, caplog) -> None:
    """A write that fails half-way leaves the previous output intact and no temporary file behind."""
    src = save_jpeg(crops["bikes"], tmp_path / "a.jpg")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"previous output")

    write_bytes = Path.write_bytes

    def half_write(path: Path, data: bytes) -> None:
        write_bytes(path, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", half_write)
    assert run([src, "--model", tiny_fbcnn_path, "-o", out], caplog) == 1
    assert "No space left on device" in caplog.text and "a.jpg" in caplog.text
    assert [p.name for p in out.iterdir()] == ["a.png"]  # no .a.png.*.tmp left
    assert (out / "a.png").read_bytes() == b"previous output"
