"""Paper-style reports (utils/utils_report.py) built from real runs of main_test_fbcnn.py."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import main_test_fbcnn
from models import write_state_dict
from tests.conftest import ROOT, make_tiny_fbcnn
from utils import utils_report
from utils.utils_image import imread_uint, imsave


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory: pytest.TempPathFactory, datasets: Path) -> Path:
    """Five runs on small real crops: gray single (Table 1), colour single (Table 2), gray double (Table 3),
    the deblocking filter on Table 1 (a second method column) and colour double (no paper counterpart)."""
    tmp = tmp_path_factory.mktemp("report")
    crops = tmp / "crops"
    imsave(imread_uint(datasets / "testsets" / "Classic5" / "3.png", 1)[:64, :80], crops / "boats.png")
    imsave(imread_uint(datasets / "testsets" / "LIVE1_color" / "caps.png", 3)[120:200, 200:296], crops / "caps.png")
    gray = write_state_dict(make_tiny_fbcnn(1, seed=2).state_dict(), tmp / "tiny_gray.pth")
    colour = write_state_dict(make_tiny_fbcnn(3, seed=3).state_dict(), tmp / "tiny_color.pth")
    common = ["--results", str(tmp / "results"), "--device", "cpu", "--set", "comparison_images=0"]
    runs = [
        ["--opt", "test_fbcnn_gray.json", "--model", gray, "--testset", f"Classic5={crops}", "--qf", "10", "20"],
        ["--opt", "test_deblock_gray.json", "--testset", f"Classic5={crops}", "--qf", "10", "20"],
        ["--opt", "test_fbcnn_color.json", "--model", colour, "--testset", f"LIVE1_color={crops}", "--qf", "10"],
        [
            "--opt",
            "test_fbcnn_double.json",
            "--model",
            gray,
            "--testset",
            f"LIVE1_gray={crops}",
            "--qf-pair",
            "10",
            "30",
        ],
        ["--opt", "test_fbcnn_double.json", "--model", colour, "--testset", f"LIVE1={crops}", "--qf-pair", "10", "30"],
    ]
    for args in runs:
        args[1] = str(ROOT / "options" / args[1])
        assert main_test_fbcnn.main([*map(str, args), *common]) == 0
    return tmp / "results"


def test_report_command(results_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "utils.utils_report", str(results_dir)], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    report = (results_dir / "report.md").read_text()
    for title in (utils_report.TABLE_TITLES[t] for t in (1, 2, 3, "other")):
        assert f"## {title}" in report
    assert utils_report.TABLE3_NOTE in report
    assert report.count("| Classic5 |") == 2 and "| LIVE1 (RGB) | 10, 30 | 2 |" in report

    # Table 1: our two methods and the paper's methods, one row per (set, QF); numbers from results.json.
    table1 = read_csv(results_dir / "table1.csv")
    assert [(r["dataset"], r["qf"]) for r in table1] == [("Classic5", "10"), ("Classic5", "20")]
    gray = json.loads((results_dir / "tiny_gray_single" / "results.json").read_text())
    deblock = json.loads((results_dir / "deblock_single_oracle" / "results.json").read_text())
    for row, ours, filt in zip(table1, gray["averages"], deblock["averages"], strict=True):
        assert float(row["tiny_gray PSNR"]) == pytest.approx(ours["psnr"], abs=1e-4)
        assert float(row["deblock (oracle) SSIM"]) == pytest.approx(filt["ssim"], abs=1e-4)
        assert float(row["JPEG PSNR-B"]) == pytest.approx(ours["jpeg_psnrb"], abs=1e-4)
        assert ours["jpeg_psnr"] == pytest.approx(filt["jpeg_psnr"])  # same JPEG input for every method
        paper = utils_report.load_paper_table(1)[("Classic5", ours["qf"])]
        assert float(row["paper FBCNN PSNR"]) == paper["FBCNN"]["psnr"]
        assert float(row["paper ARCNN* PSNR-B"]) == paper["ARCNN*"]["psnrb"]
    assert table1[0]["paper FBCNN PSNR"] == "30.1200" and table1[0]["paper JPEG SSIM"] == "0.7600"

    table2 = read_csv(results_dir / "table2.csv")
    assert [(r["dataset"], r["qf"]) for r in table2] == [("LIVE1_color", "10")]
    assert table2[0]["paper FBCNN-C PSNR-B"] == "27.5100" and table2[0]["paper QGAC SSIM"] == "0.8040"

    table3 = read_csv(results_dir / "table3.csv")
    assert [(r["dataset"], r["qf1"], r["qf"]) for r in table3] == [("LIVE1_gray", "10", "30")]
    assert table3[0]["paper JPEG PSNR"] == "27.5500" and table3[0]["paper FBCNN-D PSNR"] == "28.9400"
    assert "| LIVE1_gray | 10, 30 | 2 |" in report

    other = read_csv(results_dir / "other.csv")
    assert [r["dataset"] for r in other] == ["LIVE1 (RGB)"] and not any(k.startswith("paper") for k in other[0])


def test_report_out_folder_and_errors(results_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert utils_report.main([str(results_dir), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "report.md").is_file() and (tmp_path / "rep" / "table3.csv").is_file()
    capsys.readouterr()
    assert utils_report.main([str(tmp_path / "empty")]) == 1
    assert "no results.json" in capsys.readouterr().err
    bad = tmp_path / "bad" / "run"
    bad.mkdir(parents=True)
    (bad / "results.json").write_text("{not json")
    assert utils_report.main([str(tmp_path / "bad")]) == 1
    assert str(bad / "results.json") in capsys.readouterr().err


def test_paper_tables_are_the_shared_csvs(paper_dir: Path) -> None:
    for name in utils_report.PAPER_FILES.values():
        assert (utils_report.PAPER_DIR / name).read_bytes() == (paper_dir / name).read_bytes()
    t1, t3 = utils_report.load_paper_table(1), utils_report.load_paper_table(3)
    assert t1[("LIVE1", 10)]["JPEG"] == {"psnr": 27.77, "ssim": 0.773, "psnrb": 25.33}
    assert t3[("LIVE1", 30, 10)]["FBCNN-D"]["psnr"] == 29.46
    assert utils_report.paper_methods(2) == ["JPEG", "QGAC", "FBCNN-C"]


@pytest.mark.parametrize(
    ("name", "paper"),
    [
        ("LIVE1_gray", "LIVE1"),
        ("LIVE1_color", "LIVE1"),
        ("classic5", "Classic5"),
        ("BSDS500", "BSDS500"),
        ("Set12", None),
    ],
)
def test_paper_dataset_mapping(name: str, paper: str | None) -> None:
    assert utils_report.paper_dataset(name) == paper


def test_paper_table_choice() -> None:
    assert utils_report.paper_table(1, "single") == 1
    assert utils_report.paper_table(3, "single") == 2
    assert utils_report.paper_table(1, "double", [4, 4]) == 3
    assert utils_report.paper_table(1, "double", [0, 0]) is None  # aligned: not the paper's protocol
    assert utils_report.paper_table(3, "double", [4, 4]) is None
    assert utils_report.paper_table(1, "real") is None


def test_side_by_side_layout() -> None:
    a = np.zeros((50, 70, 1), np.uint8)
    b = np.full((50, 70, 3), 200, np.uint8)
    grid = utils_report.side_by_side([[("a", a), ("b", b)], [("c", b)]], crop=32, zoom=2)
    assert grid.dtype == np.uint8 and grid.shape[2] == 3
    assert grid.shape[1] == 2 * 64 + 4 and grid.shape[0] == 2 * (24 + 64) + 4
    assert (grid[30:80, 70:120] == 200).all()  # the second crop, enlarged, below its label
