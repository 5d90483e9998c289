"""benchmarks/gpu_session.py: the packed training sets are lossless and within budget, and ``run`` trains
each bundled model from its committed weights under a time budget (on the CPU here, tiny settings)."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from models import load_model
from tests.conftest import ROOT
from utils.utils_image import imread_uint, list_images

sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_session  # noqa: E402


def _small_sets(datasets: Path, dst: Path, size: int = 64) -> Path:
    """The packed layout with a few real images cut to size x size (PNG, and one JPEG kept as bytes)."""
    src = datasets / "trainsets"
    for folder in gpu_session.PACK_FOLDERS:
        (dst / folder).mkdir(parents=True)
        for i, path in enumerate(list_images(src / folder)[:3]):
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)[:size, :size]
            suffix = ".jpg" if folder == "BSDS500_trainval" and i == 0 else ".png"
            cv2.imwrite(str(dst / folder / f"{path.stem}{suffix}"), img)
    return dst


def test_pack_is_lossless_and_keeps_to_the_budget(datasets: Path, tmp_path: Path) -> None:
    src = _small_sets(datasets, tmp_path / "src", size=128)
    full = tmp_path / "full"
    lines = gpu_session.pack(src, full, budget_mib=50)
    assert all("left out" not in line for line in lines)
    for folder in gpu_session.PACK_FOLDERS:
        originals, packed = list_images(src / folder), list_images(full / folder)
        assert [p.stem for p in originals] == [p.stem for p in packed]
        for a, b in zip(originals, packed, strict=True):
            if a.suffix == ".jpg":
                assert b.read_bytes() == a.read_bytes()  # a JPEG's bytes are its ground truth
            else:
                assert b.suffix == ".webp" and b.stat().st_size < a.stat().st_size
                assert np.array_equal(imread_uint(a, 3), imread_uint(b, 3))
    # A budget that holds about half of it: the last folder (Urban100) is cut, and the report says so.
    size = sum(p.stat().st_size for p in full.rglob("*") if p.is_file())
    lines = gpu_session.pack(src, tmp_path / "cut", budget_mib=0.8 * size / 2**20)
    assert "Urban100_half" in lines[3] and "left out (budget)" in lines[3]
    assert sum(p.stat().st_size for p in (tmp_path / "cut").rglob("*") if p.is_file()) <= 0.8 * size


def test_run_trains_from_the_bundled_weights_within_the_budget(datasets: Path, tmp_path: Path) -> None:
    data = _small_sets(datasets, tmp_path / "sets")
    out = tmp_path / "out"
    argv = ["run", "--device", "cpu", "--skip-smoke", "--minutes", "5", "--models", "gray", "--batch", "2"]
    argv += ["--patch", "32", "--iters", "4", "--workers", "0", "--data", str(data), "--out", str(out)]
    assert gpu_session.main([*argv, "--root", str(tmp_path / "exp")]) == 0
    run = out / "fbcnn_gray_small_gpu"
    log = (run / "train.log").read_text()
    assert "initialised from" in log and "fbcnn_gray_small.pth" in log and "step       4" in log
    assert "validation step 4" in log
    assert sorted(p.name for p in run.iterdir()) == ["best_G.pth", "options.json", "train.log"]
    trained, shipped = load_model(run / "best_G.pth"), load_model(gpu_session.ZOO_MODELS[1])
    assert trained.state_dict().keys() == shipped.state_dict().keys()  # the bundled layout, loads strictly
    summary = (out / "summary.txt").read_text()
    assert "gray: batch 2; training exit 0; 4 iterations" in summary


def test_pick_batch_takes_a_larger_batch_only_for_a_clear_gain() -> None:
    assert gpu_session.pick_batch({32: 1000.0, 64: 1100.0, 128: 1140.0}) == 32
    assert gpu_session.pick_batch({32: 1000.0, 64: 1200.0, 128: 1300.0}) == 64
    assert gpu_session.pick_batch({32: 1000.0, 64: 2000.0, 128: 3900.0}) == 128
    assert gpu_session.pick_batch({32: 1000.0, 64: 900.0, 128: 1200.0}) == 128  # compared with 32, not 64


def test_auto_batch_probes_the_candidates_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    # Step times as a launch-bound network would show them: 64 patches nearly as fast as 32.
    step_s = {8: 1.0, 32: 0.020, 64: 0.022, 128: 0.040}
    probed = []

    def fake_probe(opt: dict, device: object, steps: int = 10) -> float:
        probed.append(opt["datasets"]["train"]["dataloader_batch_size"])
        return step_s[probed[-1]]

    monkeypatch.setattr(gpu_session, "probe_step_s", fake_probe)
    option_file = ROOT / "options" / "train_fbcnn_gray_small_v2.json"
    overrides = [f"path.pretrained_netG={gpu_session.ZOO_MODELS[1]}"]
    items, opt, seconds, line = gpu_session.sized_options(option_file, overrides, torch.device("cuda"), "auto")
    assert probed == list(gpu_session.AUTO_BATCHES)
    # 128 moves 3200 patches/s against 64's 2909: less than 15 % more, so 64 stays.
    assert opt["datasets"]["train"]["dataloader_batch_size"] == 64 and seconds == step_s[64]
    assert items[-1] == "datasets.train.dataloader_batch_size=64" and line.startswith("batch 64 (auto")
    probed.clear()
    _, opt, _, line = gpu_session.sized_options(option_file, overrides, torch.device("cpu"), "auto")
    assert probed == [8] and opt["datasets"]["train"]["dataloader_batch_size"] == 8 and "CPU" in line


@pytest.mark.parametrize("value", ["0", "-8", "big", "3.5"])
def test_bad_batch_is_named(value: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        gpu_session.main(["run", "--out", "o", "--batch", value])
    assert f"--batch: must be 'auto' or a positive whole number, got '{value}'" in capsys.readouterr().err


def test_run_names_missing_data(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert gpu_session.main(["run", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--skip-smoke"]) == 2
    assert "run 'gpu_session.py pack'" in capsys.readouterr().err
