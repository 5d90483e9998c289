"""main_test_fbcnn.py end to end with tiny networks on a few real-image crops."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch

import main_test_fbcnn
from data import dataset_test
from data.dataset_test import merge_chroma
from data.degradations import double_jpeg, jpeg
from models import ZOO_MODELS, define_G, load_model, write_state_dict
from tests.conftest import ROOT, make_tiny_fbcnn
from utils.utils_eval import restore, score
from utils.utils_image import imread_uint, imsave, rgb2ycbcr


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test in its tmp folder: a relative default (results/, testsets/) never lands in the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def tiny_gray_path(tmp_path: Path) -> Path:
    return write_state_dict(make_tiny_fbcnn(1, seed=1).state_dict(), tmp_path / "tiny_gray.pth")


@pytest.fixture
def mini_set(tmp_path: Path, datasets: Path) -> Path:
    """Two real crops (a gray PNG and a colour BMP) and one corrupt file."""
    folder = tmp_path / "mini"
    imsave(imread_uint(datasets / "testsets" / "Classic5" / "1.png", 1)[:72, :88], folder / "baboon.png")
    colour = imread_uint(sorted((datasets / "testsets" / "LIVE1_color").iterdir())[0], 3)
    imsave(colour[:80, :64], folder / "live.bmp")
    (folder / "broken.png").write_bytes(b"this is not an image")
    return folder


def run_main(*args: str) -> int:
    return main_test_fbcnn.main([*map(str, args), "--device", "cpu"])


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_end_to_end_results_consistent(tmp_path: Path, tiny_gray_path: Path, mini_set: Path) -> None:
    status = run_main(
        "--opt", ROOT / "options/test_fbcnn_gray.json", "--model", tiny_gray_path,
        "--testset", f"mini={mini_set}", "--qf", "10", "30", "--results", tmp_path / "res",
    )  # fmt: skip
    assert status == 1, "a corrupt file must make the exit status non-zero"
    out = tmp_path / "res" / "tiny_gray_single"
    results = json.loads((out / "results.json").read_text())

    # The bad file is reported once, by name; the others are all scored at both QFs.
    assert [Path(f["file"]).name for f in results["failures"]] == ["broken.png"]
    assert "broken.png" in results["failures"][0]["error"]
    assert sorted((r["image"], r["qf"]) for r in results["images"]) == [
        ("baboon", 10), ("baboon", 30), ("live", 10), ("live", 30)
    ]  # fmt: skip
    assert results["channels"] == 1 and results["net_type"] == "fbcnn" and results["qf_mode"] == "blind"

    # Each row is recomputable from the files: Y ground truth -> OpenCV JPEG -> restore -> score.
    model = load_model(tiny_gray_path)
    for row in results["images"]:
        gt = imread_uint(row["file"], 1)
        low = jpeg(gt, row["qf"])
        restored, predicted = restore(model, low)
        saved = imread_uint(out / row["output"], 1)
        assert (saved == restored).all()
        assert row["jpeg_psnr"] == pytest.approx(score(gt, low)["psnr"])
        assert row["psnrb"] == pytest.approx(score(gt, restored)["psnrb"])
        assert row["predicted_qf"] == pytest.approx(predicted, abs=1e-4)

    # Averages are the means of the per-image rows; the CSV holds the same numbers.
    for avg in results["averages"]:
        members = [r for r in results["images"] if r["degradation"] == avg["degradation"]]
        assert avg["n_images"] == len(members) == 2
        for key in ("jpeg_psnr", "psnr", "ssim", "psnrb", "predicted_qf"):
            assert avg[key] == pytest.approx(np.mean([r[key] for r in members]))
    csv_rows = read_csv(out / "results.csv")
    assert len(csv_rows) == len(results["images"]) + len(results["averages"])
    by_key = {(r["image"], r["degradation"]): r for r in csv_rows}
    for row in results["images"] + [{**a, "image": "AVERAGE"} for a in results["averages"]]:
        assert float(by_key[(row["image"], row["degradation"])]["psnr"]) == pytest.approx(row["psnr"], abs=1e-4)

    md = (out / "results.md").read_text()
    assert "| mini | qf10 | 2 |" in md and "broken.png" in md
    assert (out / "comparison_mini.png").is_file() and (out / "test.log").is_file()
    assert "broken.png" in (out / "test.log").read_text()


def test_all_good_files_exit_zero_and_paper_row(tmp_path: Path, tiny_fbcnn_path: Path, datasets: Path) -> None:
    """A set named like a paper set gets the paper's figures beside ours; a clean run exits 0."""
    folder = tmp_path / "crops"
    imsave(imread_uint(datasets / "testsets" / "Classic5" / "4.png", 3)[:64, :64], folder / "4.tif")
    status = run_main(
        "--opt", ROOT / "options/test_fbcnn_color.json", "--model", tiny_fbcnn_path, "--testset", f"LIVE1_color={folder}",
        "--qf", "10", "--results", tmp_path / "res", "--set", "comparison_images=0",
    )  # fmt: skip
    assert status == 0
    out = tmp_path / "res" / "tiny_color_single"
    md = (out / "results.md").read_text()
    assert "25.69 / 0.743 / 24.20" in md and "27.77 / 0.803 / 27.51" in md  # Table 2 LIVE1 QF10: JPEG, FBCNN-C
    assert not list(out.glob("comparison_*.png"))
    assert json.loads((out / "results.json").read_text())["channels"] == 3


def test_double_jpeg_protocol(tmp_path: Path, tiny_gray_path: Path, mini_set: Path) -> None:
    (mini_set / "broken.png").unlink()
    status = run_main(
        "--opt", ROOT / "options/test_fbcnn_double.json", "--model", tiny_gray_path, "--testset", f"LIVE1_gray={mini_set}",
        "--qf-pair", "10", "30", "--results", tmp_path / "res",
    )  # fmt: skip
    assert status == 0
    out = tmp_path / "res" / "tiny_gray_double"
    results = json.loads((out / "results.json").read_text())
    row = next(r for r in results["images"] if r["image"] == "baboon")
    assert (row["qf1"], row["qf"], row["degradation"]) == (10, 30, "qf10-30")
    gt = imread_uint(row["file"], 1)
    low, gt_crop = double_jpeg(gt, 10, 30, (4, 4))
    assert row["jpeg_psnr"] == pytest.approx(score(gt_crop, low)["psnr"])
    assert imread_uint(out / row["output"], 1).shape == gt_crop.shape
    md = (out / "results.md").read_text()
    assert "27.55 / 0.760 / 26.94" in md and "PSNR-B" in md and "do not follow" in md  # Table 3 + the note


def test_missing_model_and_bad_option_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "nope.pth"
    assert run_main("--opt", ROOT / "options/test_fbcnn_gray.json", "--model", missing) == 2
    assert str(missing) in capsys.readouterr().err
    assert run_main("--opt", ROOT / "options/test_fbcnn_gray.json", "--set", "qf_mod=fixed") == 2
    assert "did you mean 'qf_mode'" in capsys.readouterr().err
    assert run_main("--opt", ROOT / "options/test_fbcnn_gray.json", "--set", "bf16=true") == 2
    assert "'bf16' was renamed to 'half'" in capsys.readouterr().err  # an old option file
    assert run_main("--opt", ROOT / "options/test_fbcnn_gray.json", "--qf", "0") == 2
    assert "'qfs'" in capsys.readouterr().err


def test_no_arguments_uses_bundled_models_and_builtin_photos(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_fbcnn_path: Path, tiny_gray_path: Path
) -> None:
    """The project's first command: bundled models (here tiny stand-ins), no testsets/ -> scikit-image photos."""
    monkeypatch.chdir(tmp_path)  # no testsets/ folder here
    monkeypatch.setattr(main_test_fbcnn, "ZOO_MODELS", {1: tiny_gray_path, 3: tiny_fbcnn_path})
    monkeypatch.setattr(dataset_test, "SKIMAGE_NATURAL", ("camera",))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert main_test_fbcnn.main(["--qf", "10", "--device", "cpu"]) == 0
    for task, channels in (("tiny_gray_single", 1), ("tiny_color_single", 3)):
        out = tmp_path / "results" / task
        results = json.loads((out / "results.json").read_text())
        assert results["testsets"] == {"skimage_natural": "skimage"} and results["channels"] == channels
        assert [r["image"] for r in results["images"]] == ["camera"]
        assert (out / "skimage_natural" / "qf10" / "camera.png").is_file()
        assert (out / "comparison_skimage_natural.png").is_file()
    assert (tmp_path / "cache" / "fbcnn" / "skimage_natural" / "camera.png").is_file()


def test_no_arguments_without_models_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(main_test_fbcnn, "ZOO_MODELS", {1: tmp_path / "g.pth", 3: tmp_path / "c.pth"})
    assert main_test_fbcnn.main([]) == 2
    err = capsys.readouterr().err
    assert "no bundled model" in err and "--model" in err


def test_help() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "main_test_fbcnn.py"), "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0
    for flag in ("--opt", "--model", "--testset", "--qf", "--qf-input", "--device", "--results", "--set"):
        assert flag in result.stdout
    assert "Exit status" in result.stdout


# --------------------------------------------------------------------------------------
# Issue 5: real JPEGs, flexible control, QF modes, methods built from options
# --------------------------------------------------------------------------------------
def test_real_jpegs_gray_model_keeps_chroma(tmp_path: Path, tiny_gray_path: Path, datasets: Path) -> None:
    folder = tmp_path / "Real"
    folder.mkdir()
    for name in ("1.jpg", "2.jpg"):  # 1: colour photo, 2: gray photo
        shutil.copy(datasets / "testsets" / "Real" / name, folder / name)
    status = run_main(
        "--opt", ROOT / "options/test_fbcnn_real.json", "--model", tiny_gray_path, "--testset", f"Real={folder}",
        "--sweep", "20", "60", "--results", tmp_path / "res",
    )  # fmt: skip
    assert status == 0
    out = tmp_path / "res" / "tiny_gray_real"
    results = json.loads((out / "results.json").read_text())
    rows = {r["image"]: r for r in results["images"]}
    assert results["protocol"] == "real" and set(rows) == {"1", "2"}
    assert all(r["predicted_qf"] is not None and r.get("psnr") is None for r in rows.values())
    assert "CbCr" in rows["1"]["note"] and rows["2"]["note"] == ""
    assert "kept the original CbCr" in (out / "test.log").read_text()

    model = load_model(tiny_gray_path)
    rgb = imread_uint(folder / "1.jpg", 3)
    ycbcr = rgb2ycbcr(rgb, only_y=False)
    for qf, suffix in ((None, ""), (20, "_qf20"), (60, "_qf60")):
        saved = imread_uint(out / "Real" / "real" / f"1{suffix}.png", 3)
        y, _ = restore(model, ycbcr[:, :, :1], qf)
        assert (saved == merge_chroma(y, ycbcr[:, :, 1:])).all()
    gray_out = imread_uint(out / "Real" / "real" / "2_qf60.png", 3)
    assert dataset_test.is_gray(gray_out)
    assert "real/1_qf20.png" in (out / "results.md").read_text()

    # With a Y that stays in range (the untrained tiny net outputs near-black), the colour is the input's.
    status = run_main(
        "--opt", ROOT / "options/test_fbcnn_real.json", "--set", 'netG={"net_type": "deblock", "in_nc": 1}',
        "--testset", f"Real={folder}", "--results", tmp_path / "res", "--set", "method=deblock",
    )  # fmt: skip
    assert status == 0
    saved = imread_uint(tmp_path / "res" / "deblock_real" / "Real" / "real" / "1.png", 3)
    chroma_drift = np.abs(rgb2ycbcr(saved, only_y=False)[:, :, 1:].astype(int) - ycbcr[:, :, 1:]).mean()
    assert chroma_drift < 1.0  # CbCr kept (up to YCbCr round trips)


def test_flexible_control_sweep_plot_and_rows(tmp_path: Path, tiny_fbcnn_path: Path, mini_set: Path) -> None:
    (mini_set / "broken.png").unlink()
    status = run_main(
        "--opt", ROOT / "options/test_fbcnn_flexible.json", "--model", tiny_fbcnn_path, "--testset", f"mine={mini_set}",
        "--qf", "20", "--sweep", "10", "50", "--results", tmp_path / "res",
    )  # fmt: skip
    assert status == 0
    out = tmp_path / "res" / "tiny_color_single"
    plot = imread_uint(out / "flexible_mine_qf20.png", 3)
    assert plot.shape[0] > 200 and plot.shape[1] > 600 and not dataset_test.is_gray(plot)
    assert imread_uint(out / "flexible_crops_mine_qf20.png", 3).shape[1] > 4 * 96  # input, 2 set QFs, blind, GT
    sweep = read_csv(out / "flexible_control.csv")
    assert sorted((r["image"], int(r["qf_set"])) for r in sweep) == [
        ("baboon", 10), ("baboon", 50), ("live", 10), ("live", 50)
    ]  # fmt: skip
    model = load_model(tiny_fbcnn_path)
    row = next(r for r in sweep if r["image"] == "live" and r["qf_set"] == "50")
    gt = imread_uint(mini_set / "live.bmp", 3)
    restored, _ = restore(model, jpeg(gt, 20), 50)
    assert float(row["psnr"]) == pytest.approx(score(gt, restored)["psnr"], abs=1e-4)


def test_dominant_mode_uses_estimator_and_falls_back_to_blind(
    tmp_path: Path, tiny_gray_path: Path, mini_set: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (mini_set / "broken.png").unlink()
    estimate = namedtuple("QFEstimate", "qf mse qf_last shift accepted")
    seen = []

    def fake_estimator(img: np.ndarray, threshold: float | None) -> tuple:
        assert threshold is None  # the default of dominant_threshold: the calibrated rule (30 = the paper's T)
        seen.append(img.shape)
        return estimate(25, 1.0, 10, (0, 0), True) if img.shape[0] == 72 - 4 else estimate(None, 9.0, 10, (0, 0), False)

    monkeypatch.setattr(main_test_fbcnn, "dominant_estimator", lambda: fake_estimator)
    status = run_main(
        "--opt", ROOT / "options/test_fbcnn_double.json", "--model", tiny_gray_path, "--testset", f"d={mini_set}",
        "--qf-pair", "30", "10", "--qf-mode", "dominant", "--results", tmp_path / "res",
    )  # fmt: skip
    assert status == 0 and len(seen) == 2
    out = tmp_path / "res" / "tiny_gray_double_dominant"
    results = json.loads((out / "results.json").read_text())
    assert results["qf_mode"] == "dominant"
    rows = {r["image"]: r for r in results["images"]}
    assert (rows["baboon"]["qf_used"], rows["baboon"]["dominant_qf"]) == (25, 25)  # estimate accepted
    assert (rows["live"]["qf_used"], rows["live"]["dominant_accepted"]) == (None, False)  # blind fallback
    model = load_model(tiny_gray_path)
    low, _ = double_jpeg(imread_uint(mini_set / "baboon.png", 1), 30, 10)
    assert (imread_uint(out / rows["baboon"]["output"], 1) == restore(model, low, 25)[0]).all()


def test_dominant_mode_with_the_real_estimator(tmp_path: Path, tiny_gray_path: Path, datasets: Path) -> None:
    """FBCNN-D end to end: a non-aligned (10, 30) double JPEG is restored at an estimate near QF1 = 10."""
    folder = tmp_path / "one"
    imsave(imread_uint(sorted((datasets / "testsets" / "LIVE1_gray").iterdir())[0], 1)[:260, :260], folder / "a.png")
    status = run_main(
        "--opt", ROOT / "options/test_fbcnn_double.json", "--model", tiny_gray_path, "--testset", f"one={folder}",
        "--qf-pair", "10", "30", "--qf-mode", "dominant", "--set", "dominant_threshold=100",
        "--results", tmp_path / "res", "--set", "comparison_images=0",
    )  # fmt: skip
    assert status == 0
    (row,) = json.loads((tmp_path / "res" / "tiny_gray_double_dominant" / "results.json").read_text())["images"]
    assert row["dominant_accepted"] and abs(row["qf_used"] - 10) <= 5


def test_dominant_mode_reads_real_jpegs_own_luma(tmp_path: Path, tiny_gray_path: Path, datasets: Path) -> None:
    """A gray model on a colour real JPEG: FBCNN-D reads the file's own Y plane (as the restore CLI does), not
    MATLAB's Y, nor the luma of the decoded RGB, whose saturated colours are clipped (that one finds QF 32 here)."""
    from PIL import Image

    from utils.dominant_qf import estimate_dominant_qf

    folder = tmp_path / "real"
    folder.mkdir()
    rgb = imread_uint(datasets / "trainsets" / "IRCNN_Val20" / "006.png", 3)[:256, :256]
    Image.fromarray(rgb).save(folder / "photo.jpg", quality=30)
    status = run_main(
        "--opt", ROOT / "options/test_fbcnn_real.json", "--model", tiny_gray_path, "--testset", f"Real={folder}",
        "--qf-mode", "dominant", "--results", tmp_path / "res", "--set", "qf_sweep=[]",
    )  # fmt: skip
    assert status == 0
    (row,) = json.loads((tmp_path / "res" / "tiny_gray_real_dominant" / "results.json").read_text())["images"]
    assert row["dominant_accepted"] and row["dominant_qf"] == 30
    assert estimate_dominant_qf(imread_uint(folder / "photo.jpg", 1)).qf != 30  # MATLAB's Y would miss it


def test_dominant_mode_without_module_is_a_clear_error(
    tmp_path: Path, tiny_gray_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "utils.dominant_qf", None)  # import fails
    status = run_main(
        "--opt", ROOT / "options/test_fbcnn_gray.json", "--model", tiny_gray_path, "--qf-mode", "dominant",
        "--results", tmp_path / "res",
    )  # fmt: skip
    assert status == 2 and "dominant_qf" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()  # nothing written to the default results/ folder


def test_method_from_netG_options(tmp_path: Path, mini_set: Path) -> None:
    """The parameter-free deblocking filter runs through the same script from its netG options (oracle QF)."""
    (mini_set / "broken.png").unlink()
    status = run_main(
        "--opt", ROOT / "options/test_deblock_gray.json", "--testset", f"mini={mini_set}", "--qf", "10", "40",
        "--results", tmp_path / "res",
    )  # fmt: skip
    assert status == 0
    results = json.loads((tmp_path / "res" / "deblock_single_oracle" / "results.json").read_text())
    assert (results["method"], results["net_type"], results["model_path"]) == ("deblock", "deblock", None)
    assert {r["qf_used"] for r in results["images"]} == {10, 40}  # the true QF of each degradation
    assert all(r["predicted_qf"] is None for r in results["images"])
    model = define_G({"net_type": "deblock", "in_nc": 1})
    row = next(r for r in results["images"] if r["image"] == "baboon" and r["qf"] == 10)
    gt = imread_uint(mini_set / "baboon.png", 1)
    restored, _ = restore(model, jpeg(gt, 10), 10)
    assert row["psnr"] == pytest.approx(score(gt, restored)["psnr"])


def test_model_without_opt_picks_the_defaults_by_channels(
    tmp_path: Path, tiny_gray_path: Path, tiny_fbcnn_path: Path, mini_set: Path, capsys: pytest.CaptureFixture
) -> None:
    """``--model`` alone: the gray options for a 1-channel checkpoint, the colour ones for a 3-channel one."""
    (mini_set / "broken.png").unlink()
    for path, channels, task in ((tiny_gray_path, 1, "tiny_gray_single"), (tiny_fbcnn_path, 3, "tiny_color_single")):
        status = run_main("--model", path, "--testset", f"mini={mini_set}", "--qf", "10", "--results", tmp_path / "r")
        assert status == 0
        results = json.loads((tmp_path / "r" / task / "results.json").read_text())
        assert results["channels"] == channels and results["model_path"] == str(path)
        assert sorted(r["image"] for r in results["images"]) == ["baboon", "live"]
    missing = tmp_path / "nope.pth"
    assert run_main("--model", missing, "--results", tmp_path / "r") == 2
    assert str(missing) in capsys.readouterr().err


def test_fixed_qf_input_end_to_end(tmp_path: Path, mini_set: Path) -> None:
    """``--qf-input 30``: every image restored at QF 30 (the bundled gray model), pixel for pixel."""
    (mini_set / "broken.png").unlink()
    common = ["--model", ZOO_MODELS[1], "--testset", f"mini={mini_set}", "--qf", "10"]
    assert run_main(*common, "--qf-input", "30", "--results", tmp_path / "fixed") == 0
    assert run_main(*common, "--results", tmp_path / "blind") == 0
    out = tmp_path / "fixed" / "fbcnn_gray_small_single_fixed30"
    results = json.loads((out / "results.json").read_text())
    assert results["qf_mode"] == "fixed" and {r["qf_used"] for r in results["images"]} == {30}
    model = load_model(ZOO_MODELS[1])
    blind_rows = json.loads((tmp_path / "blind" / "fbcnn_gray_small_single" / "results.json").read_text())["images"]
    for row in results["images"]:
        gt = imread_uint(next(mini_set.glob(f"{row['image']}.*")), 1)
        saved = imread_uint(out / row["output"], 1)
        assert (saved == restore(model, jpeg(gt, 10), 30)[0]).all()
        blind_row = next(r for r in blind_rows if r["image"] == row["image"])
        blind = imread_uint(tmp_path / "blind" / "fbcnn_gray_small_single" / blind_row["output"], 1)
        assert np.abs(saved.astype(int) - blind).mean() > 0.3  # the set QF changed the restoration
        assert row["psnr"] == pytest.approx(score(gt, saved)["psnr"], abs=1e-6)


def test_empty_and_missing_testset_folders(tmp_path: Path, tiny_gray_path: Path, capsys: pytest.CaptureFixture) -> None:
    empty, missing = tmp_path / "empty", tmp_path / "missing"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    opt = ["--opt", ROOT / "options/test_fbcnn_gray.json", "--model", tiny_gray_path, "--qf", "10"]
    status = run_main(*opt, "--testset", f"e={empty}", "--testset", f"m={missing}", "--results", tmp_path / "r")
    assert status == 1  # named failures, not a crash
    results = json.loads((tmp_path / "r" / "tiny_gray_single" / "results.json").read_text())
    failures = {f["dataset"]: f for f in results["failures"]}
    assert failures["m"]["error"] == "test-set folder does not exist" and failures["m"]["file"] == str(missing)
    assert "no images" in failures["e"]["error"] and failures["e"]["file"] == str(empty)
    assert results["images"] == []
    # Every folder of an option file missing, nothing to fall back to: a usage error naming them.
    sets = ["--set", f'testsets={{"a": "{missing}"}}', "--set", "fallback_testsets={}"]
    assert run_main(*opt, *sets, "--results", tmp_path / "r2") == 2
    assert "none of the test-set folders exists" in capsys.readouterr().err


def test_device_cuda_without_cuda_is_a_clear_error(
    tmp_path: Path, tiny_gray_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on a machine with a GPU
    args = ["--opt", ROOT / "options/test_fbcnn_gray.json", "--model", tiny_gray_path, "--results", tmp_path / "r"]
    assert main_test_fbcnn.main([*map(str, args), "--device", "cuda"]) == 2
    assert "asks for CUDA, which is not available" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
