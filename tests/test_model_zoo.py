"""The bundled models: official layout, strict loading, and real gains on LIVE1 at QF10."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from spandrel.architectures.FBCNN import FBCNN as SpandrelFBCNN

from data.degradations import jpeg
from models import ZOO_MODELS, load_model
from tests.conftest import ROOT
from utils.utils_eval import restore, score
from utils.utils_image import imread_uint, list_images

CHECKS = ROOT / "model_zoo" / "zoo_checks.json"  # written by benchmarks/model_card.py --write
# Floors any bundled model must clear (mean PSNR gain over the JPEG input, first three LIVE1 images, QF 10),
# whatever the recorded figures; the regression check is the comparison with zoo_checks.json below.
MIN_GAIN = {1: 1.1, 3: 0.9}
GAIN_TOLERANCE = 0.02  # dB, measured against recorded (float32 CPU kernels differ by far less)
QF_TOLERANCE = 0.5  # predicted QF against recorded
# The predicted QF of a QF-10 JPEG: the models read it as 6.5-7.1 (zoo_checks.json), a predictor that
# drifts further from the truth fails.
QF_ERROR = 4.0


def _official_prefixes() -> set[str]:
    return {key.split(".")[0] for key in SpandrelFBCNN().state_dict()}


@pytest.mark.parametrize("channels", [1, 3])
def test_zoo_model_layout(channels: int) -> None:
    path = ZOO_MODELS[channels]
    assert path.is_file(), f"{path} is missing: the project's first command needs it"
    assert path.stat().st_size < 15 * 2**20
    model = load_model(path)
    assert model.in_nc == channels and model.out_nc == channels
    keys = list(model.state_dict())
    assert {k.split(".")[0] for k in keys} == _official_prefixes()
    assert f"m_down1.{model.nb}.weight" in keys and f"m_up1.{model.nb}.res.2.weight" in keys


def recorded_checks(channels: int) -> dict:
    """The recorded quick checks of a bundled model, verified to belong to the committed file."""
    import benchmarks.model_card as card

    assert CHECKS.is_file(), f"{CHECKS} is missing: run python3 benchmarks/model_card.py --checks-only"
    checks = json.loads(CHECKS.read_text())[{1: "gray", 3: "color"}[channels]]
    path = ZOO_MODELS[channels]
    assert checks["model"] == path.name and checks["sha256"] == card.sha256(path), (
        f"{CHECKS} was recorded for another {path.name}: rerun benchmarks/model_card.py --write"
    )
    return checks


@pytest.mark.parametrize("channels", [1, 3])
def test_zoo_model_beats_jpeg_on_live1(channels: int, datasets: Path) -> None:
    """Re-measure the recorded gains and predicted QFs (first three LIVE1 images, JPEG QF 10)."""
    checks = recorded_checks(channels)
    model = load_model(ZOO_MODELS[channels])
    folder = datasets / "testsets" / checks["testset"]
    names = [p.name for p in list_images(folder)[:3]]
    assert names == sorted(checks["images"]), (names, sorted(checks["images"]))
    gains = []
    for name in names:
        gt = imread_uint(folder / name, channels)
        degraded = jpeg(gt, checks["jpeg_qf"])
        restored, qf = restore(model, degraded)
        gain = score(gt, restored)["psnr"] - score(gt, degraded)["psnr"]
        recorded = checks["images"][name]
        assert gain == pytest.approx(recorded["psnr_gain_db"], abs=GAIN_TOLERANCE), (name, gain, recorded)
        assert qf == pytest.approx(recorded["predicted_qf"], abs=QF_TOLERANCE), (name, qf, recorded)
        assert abs(qf - checks["jpeg_qf"]) <= QF_ERROR, (name, qf)
        gains.append(gain)
    assert np.mean(gains) == pytest.approx(checks["mean_psnr_gain_db"], abs=GAIN_TOLERANCE)
    assert np.mean(gains) >= MIN_GAIN[channels], f"mean gain {np.mean(gains):.2f} dB, per image {gains}"


@pytest.mark.parametrize("channels", [1, 3])
def test_zoo_model_on_cropped_jpegs_and_flexible_control(channels: int, datasets: Path) -> None:
    """Re-measure the recorded gains with the grid off the origin, and the flexible-control response."""
    import benchmarks.model_card as card

    checks = recorded_checks(channels)
    model = load_model(ZOO_MODELS[channels])
    folder = datasets / "testsets" / checks["testset"]
    images = list_images(folder)[:3]
    for dy, dx in card.CHECK_OFFSETS:
        for path in images:
            full = imread_uint(path, channels)
            gt, degraded = full[dy:, dx:], jpeg(full, checks["jpeg_qf"])[dy:, dx:]
            gain = score(gt, restore(model, degraded)[0])["psnr"] - score(gt, degraded)["psnr"]
            recorded = checks["images"][path.name][f"psnr_gain_db_offset{dy}-{dx}"]
            assert gain == pytest.approx(recorded, abs=GAIN_TOLERANCE), (path.name, (dy, dx), gain, recorded)
    control = card.control_response(model, folder, channels, images)
    assert control["mean_change_levels"] == pytest.approx(checks["control"]["mean_change_levels"], abs=0.02)
    for qf, value in checks["control"]["psnrb_db"].items():
        assert control["psnrb_db"][qf] == pytest.approx(value, abs=GAIN_TOLERANCE), qf


# The bars of the bundled models (issue "Bundled models v2"), checked on the recorded figures, which the test above
# re-measures: a live flexible control, and most of the gain kept when the JPEG was cropped after compression.
MIN_CONTROL_LEVELS = 1.0  # mean output change between set QF 10 and set QF 90
MIN_CROPPED_SHARE = 0.9  # mean gain at each grid offset / mean aligned gain (plain forward, no grid alignment)


@pytest.mark.parametrize("channels", [1, 3])
def test_zoo_model_meets_the_control_and_cropping_bars(channels: int) -> None:
    import benchmarks.model_card as card

    checks = recorded_checks(channels)
    control = checks["control"]
    assert control["mean_change_levels"] >= MIN_CONTROL_LEVELS, f"flexible control is (nearly) dead: {control}"
    low, high = (str(q) for q in card.CONTROL_QFS)
    assert control["psnrb_db"][low] > control["psnrb_db"][high], control  # set QF 10 deblocks a QF-10 JPEG more
    aligned = checks["mean_psnr_gain_db"]
    for dy, dx in card.CHECK_OFFSETS:
        cropped = np.mean([image[f"psnr_gain_db_offset{dy}-{dx}"] for image in checks["images"].values()])
        assert cropped >= MIN_CROPPED_SHARE * aligned, f"offset {(dy, dx)}: {cropped:.3f} of {aligned:.3f} dB"


def card_cell(model: str, dataset: str, qf: int) -> tuple[float, float, float]:
    """The 'ours' cell (PSNR, SSIM, PSNR-B) of a row in a model's generated section of the card."""
    import benchmarks.model_card as card

    text = card.CARD.read_text()
    begin, end = card.markers(model)
    for line in text[text.index(begin) : text.index(end)].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[:2] == [dataset, str(qf)]:
            psnr, ssim, psnrb = (float(v) for v in cells[3].split(" / "))
            return psnr, ssim, psnrb
    raise AssertionError(f"no row {dataset} QF {qf} in the {model} section of {card.CARD}")


@pytest.mark.slow
def test_model_card_cell_from_the_full_command(datasets: Path, tmp_path: Path) -> None:
    """main_test_fbcnn.py, run as a user would, reproduces the card's gray Classic5 QF-10 cell to its precision."""
    psnr, ssim, psnrb = card_cell("gray", "Classic5", 10)
    cmd = [sys.executable, str(ROOT / "main_test_fbcnn.py"), "--opt", str(ROOT / "options/test_fbcnn_gray.json")]
    cmd += ["--model", str(ZOO_MODELS[1]), "--testset", f"Classic5={datasets / 'testsets' / 'Classic5'}"]
    cmd += ["--qf", "10", "--results", str(tmp_path), "--set", "save_images=false"]
    cmd += ["--set", "comparison_images=0", "--set", "task=card_cell"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    (row,) = json.loads((tmp_path / "card_cell" / "results.json").read_text())["averages"]
    assert (row["dataset"], row["qf"]) == ("Classic5", 10)
    assert abs(row["psnr"] - psnr) <= 0.005 + 1e-9, (row["psnr"], psnr)
    assert abs(row["ssim"] - ssim) <= 0.0005 + 1e-9, (row["ssim"], ssim)
    assert abs(row["psnrb"] - psnrb) <= 0.005 + 1e-9, (row["psnrb"], psnrb)


@pytest.mark.parametrize("model", ["gray", "color"])
def test_zoo_model_card_sections_and_training_logs(model: str) -> None:
    """The card's generated section of each model states what its committed training logs say."""
    import benchmarks.model_card as card

    text = card.CARD.read_text()
    begin, end = card.markers(model)
    assert text.index(begin) < text.index(end)
    log = card.chained_log(model)
    assert log is not None and log.val and log.last_step >= max(log.val) >= 30000
    assert card.training_summary(model) in text[text.index(begin) : text.index(end)]
