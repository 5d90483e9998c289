"""The evaluation pipeline reproduces the paper's JPEG columns and the official model's scores.

Runs the test script's own steps (``DatasetTest`` reading + ``data.degradations`` JPEG,
``utils_eval.score``, ``utils_report.average_rows``) on the real test sets and compares the
averages with the paper's tables (``utils/paper_results``) at printed precision (PSNR and
PSNR-B 2 decimals, SSIM 3). Measured exceptions, which these tests leave out:

* colour PSNR-B comes out 0.01 dB below the printed value on BSDS500 at QF 10-40 and on
  LIVE1 at QF 40 (PSNR and SSIM match there);
* Table 3 (double JPEG) PSNR-B does not follow from the PSNR-B definition on the cropped
  images (0.2-0.5 dB off); PSNR and SSIM match. The report states it (``TABLE3_NOTE``).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest

from data.dataset_test import DatasetTest, Degradation
from tests.conftest import DATASETS
from utils.utils_eval import score
from utils.utils_image import imread_uint
from utils.utils_report import METRICS, TABLE3_NOTE, average_rows, load_paper_table

PRINTED = {"psnr": "{:.2f}", "ssim": "{:.3f}", "psnrb": "{:.2f}"}
ALL = ("psnr", "ssim", "psnrb")


@functools.cache
def jpeg_column(folder: str, channels: int, degradation: Degradation) -> dict:
    """Average PSNR / SSIM / PSNR-B of the degraded input against its ground truth over a test set."""
    ds = DatasetTest(folder, DATASETS / "testsets" / folder, channels, degradation)
    rows = []
    for index in range(len(ds)):
        item = ds[index]
        rows.append(score(item["H"], item["L"]))
    assert len(rows) == len(ds) > 0
    return average_rows(rows, (), METRICS)[0]


def assert_printed(measured: dict, paper: dict, metrics: tuple[str, ...], what: str) -> None:
    for m in metrics:
        ours, theirs = PRINTED[m].format(measured[m]), PRINTED[m].format(paper[m])
        assert ours == theirs, f"{what} {m}: measured {measured[m]:.4f} prints as {ours}, the paper prints {theirs}"


# (folder, channels, paper table, paper row, QF, metrics that match at printed precision)
FAST = [
    ("Classic5", 1, 1, "Classic5", 10, ALL),
    ("Classic5", 1, 1, "Classic5", 20, ALL),
    ("Classic5", 1, 1, "Classic5", 30, ALL),
    ("Classic5", 1, 1, "Classic5", 40, ALL),
    ("LIVE1_gray", 1, 1, "LIVE1", 10, ALL),
    ("LIVE1_color", 3, 2, "LIVE1", 10, ALL),
]
SLOW = [
    *[("LIVE1_gray", 1, 1, "LIVE1", qf, ALL) for qf in (20, 30, 40)],
    *[("LIVE1_color", 3, 2, "LIVE1", qf, ALL) for qf in (20, 30)],
    ("LIVE1_color", 3, 2, "LIVE1", 40, ("psnr", "ssim")),
    *[("BSDS500", 1, 1, "BSDS500", qf, ALL) for qf in (10, 20, 30, 40)],
    *[("BSDS500", 3, 2, "BSDS500", qf, ("psnr", "ssim")) for qf in (10, 40)],
]


def _case_id(case: tuple) -> str:
    return f"{case[0]}-{'Y' if case[1] == 1 else 'RGB'}-qf{case[4]}"


@pytest.mark.parametrize("case", FAST + [pytest.param(c, marks=pytest.mark.slow) for c in SLOW], ids=_case_id)
def test_single_jpeg_column_matches_paper(datasets: Path, case: tuple) -> None:
    folder, channels, table, row, qf, metrics = case
    measured = jpeg_column(folder, channels, Degradation("single", qf))
    assert_printed(measured, load_paper_table(table)[(row, qf)]["JPEG"], metrics, f"{folder} QF{qf}")


def test_gray_set_is_y_of_colour_set(datasets: Path) -> None:
    """Gray evaluation reads colour files as their Y channel: LIVE1_color read as Y equals LIVE1_gray."""
    name = "bikes"
    gray = imread_uint(next((datasets / "testsets" / "LIVE1_gray").glob(f"{name}.*")), 1)
    from_colour = imread_uint(next((datasets / "testsets" / "LIVE1_color").glob(f"{name}.*")), 1)
    assert gray.shape == from_colour.shape and (gray == from_colour).all()


@pytest.mark.parametrize(
    "pair", [(10, 30), pytest.param((30, 10), marks=pytest.mark.slow), pytest.param((50, 50), marks=pytest.mark.slow)]
)
def test_double_jpeg_column_matches_paper_psnr_ssim(datasets: Path, pair: tuple[int, int]) -> None:
    measured = jpeg_column("LIVE1_gray", 1, Degradation("double", pair[0], pair[1], (4, 4)))
    paper = load_paper_table(3)[("LIVE1", *pair)]["JPEG"]
    assert_printed(measured, paper, ("psnr", "ssim"), f"double JPEG {pair}")
    # PSNR-B: the documented discrepancy, stated in the Table 3 report with the value measured here.
    assert abs(measured["psnrb"] - paper["psnrb"]) > 0.1
    assert f"{measured['psnrb']:.2f}" in TABLE3_NOTE and f"{paper['psnrb']:.2f}" in TABLE3_NOTE


def test_double_jpeg_crops_ground_truth(datasets: Path) -> None:
    ds = DatasetTest("LIVE1_gray", datasets / "testsets" / "LIVE1_gray", 1, Degradation("double", 10, 30, (4, 4)))
    item = ds[0]
    full = imread_uint(ds.paths[0], 1)
    assert item["H"].shape == item["L"].shape == (full.shape[0] - 4, full.shape[1] - 4, 1)
    assert (item["H"] == full[4:, 4:]).all()


OFFICIAL = "official_fbcnn_color_LIVE1_qf10"
LOG_LINE = re.compile(r"(\w+)\.bmp - PSNR: ([\d.]+) dB; SSIM: ([\d.]+); PSNRB: ([\d.]+) dB\.")


def official_log(datasets: Path) -> dict[str, dict[str, float]]:
    """Per-image PSNR / SSIM / PSNR-B printed by the official FBCNN test script (its own metric code)."""
    (log,) = (datasets / "reference" / OFFICIAL).glob("*.log")
    rows = {m[1]: dict(zip(ALL, map(float, m.groups()[1:]), strict=True)) for m in LOG_LINE.finditer(log.read_text())}
    assert rows, f"no score lines in {log}"
    return rows


def test_official_outputs_score_as_published(datasets: Path) -> None:
    """The official FBCNN colour outputs at QF10 score its log's PSNR, SSIM and PSNR-B (RGB, border 0)."""
    ref = datasets / "reference" / OFFICIAL
    gt_dir = datasets / "testsets" / "LIVE1_color"
    published = official_log(datasets)
    names = sorted(p.stem for p in ref.glob("*.png"))
    assert names == ["bikes", "building2", "buildings", "caps", "carnivaldolls"] and set(names) <= set(published)
    for name in names:
        gt = imread_uint(next(gt_dir.glob(f"{name}.*")), 3)
        restored = imread_uint(ref / f"{name}.png", 3)
        measured = score(gt, restored)
        # The log prints 2 / 3 / 2 decimals: within half a printed unit (plus float noise at a tie).
        for metric, unit in (("psnr", 0.01), ("ssim", 0.001), ("psnrb", 0.01)):
            error = abs(measured[metric] - published[name][metric])
            assert error <= unit / 2 + 1e-4 * unit, f"{name} {metric}: {measured[metric]:.4f}, log {published[name]}"
        # Restoration must beat the JPEG input it came from (same protocol: OpenCV JPEG at QF10).
        jpeg_input, _ = Degradation("single", 10).apply(gt)
        assert measured["psnr"] > score(gt, jpeg_input)["psnr"]


@pytest.mark.slow
@pytest.mark.parametrize("qf", [20, 30])
def test_bsds500_colour_jpeg_column(datasets: Path, qf: int) -> None:
    """Table 2, BSDS500 RGB: PSNR and SSIM as printed; PSNR-B the documented 0.01 dB below the print."""
    measured = jpeg_column("BSDS500", 3, Degradation("single", qf))
    paper = load_paper_table(2)[("BSDS500", qf)]["JPEG"]
    assert_printed(measured, paper, ("psnr", "ssim"), f"BSDS500 RGB QF{qf}")
    assert 0 <= paper["psnrb"] - measured["psnrb"] <= 0.015, (measured["psnrb"], paper["psnrb"])
