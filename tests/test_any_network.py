"""Any network in the same harness: train DnCNN, ARCNN and a researcher's own class, score them beside FBCNN,
SwinIR through spandrel, one model per QF as one method, and bad netG sections named at start-up."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import main_test_fbcnn
import main_train_fbcnn
from data.degradations import jpeg
from models import ZOO_MODELS, load_model, write_state_dict
from models.network_arcnn import ARCNN
from tests.conftest import ROOT
from utils import utils_report
from utils.utils_eval import restore
from utils.utils_image import calculate_psnr, imread_uint, imsave, list_images

TINY_OPT = ROOT / "options" / "train_fbcnn_gray_tiny.json"

OWN_NETWORK = '''
import torch
from torch import nn


class TinyResidualNet(nn.Module):
    """A researcher's network: a plain tensor out, no QF, its own argument names."""

    def __init__(self, channels: int = 1, width: int = 8):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Broken(nn.Module):
    def __init__(self, in_nc: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_nc, in_nc, 3, padding=1)

    def forward(self, x):
        raise RuntimeError("this forward is broken")
'''


@pytest.fixture
def own_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module outside the repository, importable as ``my_restorers``."""
    folder = tmp_path / "research"
    folder.mkdir()
    (folder / "my_restorers.py").write_text(textwrap.dedent(OWN_NETWORK))
    monkeypatch.syspath_prepend(str(folder))
    return "my_restorers"


@pytest.fixture
def live1_crops(tmp_path: Path, datasets: Path) -> Path:
    """Three LIVE1 Y crops in a folder named LIVE1, so that the report puts the paper's row beside ours."""
    folder = tmp_path / "LIVE1"
    for path in list_images(datasets / "testsets" / "LIVE1_gray")[:3]:
        imsave(imread_uint(path, 1)[:96, :96], folder / path.name)
    return folder


def train(root: Path, net: dict, *overrides: str) -> Path:
    args = ["--opt", str(TINY_OPT), "--set", f"path.root={root}", "--set", f"netG={json.dumps(net)}"]
    for o in ("train.total_iter=24", "datasets.val.dataroot_H=null", *overrides):
        args += ["--set", o]
    assert main_train_fbcnn.main(args) == 0
    return root / "fbcnn_gray_tiny" / "models" / "24_G.pth"


def score(results: Path, method: str, model: Path | str, testset: Path, *sets: str) -> dict:
    args = ["--opt", str(ROOT / "options" / "test_fbcnn_gray.json"), "--model", str(model), "--qf", "10"]
    args += ["--testset", f"LIVE1={testset}", "--results", str(results), "--device", "cpu"]
    args += ["--set", f"method={method}", "--set", f"task={method}", "--set", "comparison_images=0"]
    for s in sets:
        args += ["--set", s]
    assert main_test_fbcnn.main(args) == 0
    return json.loads((results / method / "results.json").read_text())


def test_train_and_score_dncnn_arcnn_and_own_network_beside_fbcnn(
    tmp_path: Path, own_module: str, live1_crops: Path
) -> None:
    dncnn = train(tmp_path / "dncnn", {"net_type": "dncnn", "nc": 8, "nb": 4, "act_mode": "BR"})
    arcnn = train(tmp_path / "arcnn", {"net_type": "arcnn", "nc": [8, 8, 4]})
    own_type = f"{own_module}:TinyResidualNet"
    own = train(tmp_path / "own", {"net_type": own_type, "channels": 1})
    for run in ("dncnn", "arcnn", "own"):  # networks without a QF head: the image loss alone
        log = (tmp_path / run / "fbcnn_gray_tiny" / "train.log").read_text()
        assert "qf 0.00000)" in log and "network " in log

    results = tmp_path / "results"
    runs = {
        "dncnn_short": score(results, "dncnn_short", dncnn, live1_crops),
        "arcnn_short": score(results, "arcnn_short", arcnn, live1_crops),
        "my_net": score(results, "my_net", own, live1_crops, f"netG.net_type={own_type}", "netG.channels=1"),
        "fbcnn_bundled": score(results, "fbcnn_bundled", ZOO_MODELS[1], live1_crops),
    }
    assert runs["dncnn_short"]["net_type"] == "dncnn" and runs["arcnn_short"]["net_type"] == "arcnn"
    assert runs["my_net"]["net_type"] == own_type
    assert all(r["images"][0]["predicted_qf"] is None for k, r in runs.items() if k != "fbcnn_bundled")
    # The harness scored what the checkpoint computes: recompute one image with the module itself.
    import my_restorers

    net = my_restorers.TinyResidualNet(channels=1)
    net.load_state_dict(torch.load(own, weights_only=True))
    first = list_images(live1_crops)[0]
    gt = imread_uint(first, 1)
    with torch.no_grad():
        x = torch.from_numpy(jpeg(gt, 10)).permute(2, 0, 1)[None].float() / 255
        expected = (net(x).clamp(0, 1) * 255).round().byte()[0].permute(1, 2, 0).numpy()
    saved = imread_uint(results / "my_net" / "LIVE1" / "qf10" / f"{first.stem}.png", 1)
    assert np.abs(saved.astype(int) - expected).max() <= 1

    report = utils_report.write_report(results)
    text = report.read_text()
    table1 = text[text.index("Table 1") :]
    header = next(line for line in table1.splitlines() if line.startswith("| dataset"))
    for column in ("JPEG", "dncnn_short", "arcnn_short", "my_net", "fbcnn_bundled", "paper FBCNN", "paper ARCNN*"):
        assert f" {column} |" in header, column
    row = next(line for line in table1.splitlines() if line.startswith("| LIVE1 | 10"))
    assert row.count("/") >= 3 * 6  # every column has a PSNR / SSIM / PSNR-B cell


def test_swinir_checkpoint_scored_through_spandrel(tmp_path: Path, live1_crops: Path) -> None:
    """A small SwinIR in its JPEG configuration (window 7, scale 1), built with spandrel's own class."""
    from spandrel.architectures.SwinIR import SwinIR

    torch.manual_seed(0)
    net = SwinIR(
        img_size=28, in_chans=1, embed_dim=12, depths=[1], num_heads=[2], window_size=7, mlp_ratio=2.0,
        upscale=1, img_range=255.0, upsampler="", resi_connection="1conv",
    )  # fmt: skip
    path = write_state_dict(net.state_dict(), tmp_path / "swinir_jpeg_tiny.pth")
    loaded = load_model(path)
    assert loaded.net_type == "SwinIR"
    results = score(tmp_path / "results", "swinir_tiny", path, live1_crops)
    assert results["net_type"] == "SwinIR" and len(results["images"]) == 3
    low = jpeg(imread_uint(list_images(live1_crops)[0], 1), 10)
    with torch.no_grad():
        expected, _ = restore(loaded, low)
    gt = imread_uint(list_images(live1_crops)[0], 1)
    assert results["images"][0]["psnr"] == pytest.approx(calculate_psnr(gt, expected), abs=1e-6)


def test_one_model_per_qf_is_one_method(tmp_path: Path, live1_crops: Path, capsys) -> None:
    models = {}
    for qf, seed in ((10, 1), (30, 2)):
        torch.manual_seed(seed)
        models[qf] = write_state_dict(ARCNN(nc=(8, 8, 4), residual=True).state_dict(), tmp_path / f"arcnn_q{qf}.pth")
    mapping = json.dumps({str(q): str(p) for q, p in models.items()})
    args = ["--opt", str(ROOT / "options" / "test_fbcnn_gray.json"), "--qf", "10", "30", "--device", "cpu"]
    args += ["--testset", f"LIVE1={live1_crops}", "--results", str(tmp_path / "r"), "--set", f"model_path={mapping}"]
    args += ["--set", "method=arcnn_per_qf", "--set", "task=per_qf", "--set", "comparison_images=0"]
    assert main_test_fbcnn.main(args) == 0
    results = json.loads((tmp_path / "r" / "per_qf" / "results.json").read_text())
    assert results["method"] == "arcnn_per_qf" and results["qf_mode"] == "oracle"
    assert {a["degradation"] for a in results["averages"]} == {"qf10", "qf30"}
    first = list_images(live1_crops)[0]
    gt = imread_uint(first, 1)
    for qf in (10, 30):  # each QF restored by its own model
        expected, _ = restore(load_model(models[qf]), jpeg(gt, qf))
        saved = imread_uint(tmp_path / "r" / "per_qf" / "LIVE1" / f"qf{qf}" / f"{first.stem}.png", 1)
        assert np.array_equal(saved, expected), qf
    table1 = utils_report.write_report(tmp_path / "r").read_text()
    header = next(line for line in table1.splitlines() if line.startswith("| dataset"))
    assert header.count("arcnn_per_qf") == 1  # one column for the method

    bad = json.dumps({"10": str(models[10])})  # a QF without a model is named before anything runs
    args[args.index(f"model_path={mapping}")] = f"model_path={bad}"
    assert main_test_fbcnn.main([*args, "--set", "task=per_qf_missing"]) == 2
    assert "has no checkpoint for QF [30] (it has QFs [10])" in capsys.readouterr().err


def test_bad_netG_is_named_before_any_data_is_decoded(tmp_path: Path, own_module: str, capsys) -> None:
    cases = {
        f"{own_module}:Broken": "my_restorers:Broken.forward fails on a 1x1x16x16 input: RuntimeError: this forward",
        f"{own_module}:Missing": "module 'my_restorers' has no class 'Missing'",
        "not_a_module_anywhere:Net": "cannot import module 'not_a_module_anywhere'",
    }
    for net_type, message in cases.items():
        args = ["--opt", str(TINY_OPT), "--set", f"path.root={tmp_path}", "--set", f'netG={{"net_type": "{net_type}"}}']
        assert main_train_fbcnn.main(args) == 2
        err = capsys.readouterr().err
        assert message in err and "decoding images" not in err, err
    args = ["--opt", str(TINY_OPT), "--set", f"path.root={tmp_path}"]
    args += ["--set", f'netG={{"net_type": "{own_module}:TinyResidualNet", "width": 4, "depth": 3}}']
    assert main_train_fbcnn.main(args) == 2
    assert "netG.depth: my_restorers:TinyResidualNet(channels=1, width=8) takes no argument 'depth'" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "fbcnn_gray_tiny").exists()
