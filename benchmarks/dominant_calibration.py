"""Calibrate FBCNN-D's acceptance rule on TRAINING-SIDE images only (never the test sets).

For each image (a 384 x 384 centre crop, Y/luma as the estimator sees it) the estimator runs once with no
threshold on: single JPEGs (QF 10, 30, 50, 90), non-aligned double JPEGs QF1 < QF2 ((10, 30), (10, 50),
(30, 50), (20, 60); shift (4, 4) as in the paper's Table 3), QF1 > QF2 ((30, 10), (50, 30)), the
never-compressed image itself (PNG sets only: BSDS500's files are JPEGs) and synthetic PNG-native graphics
(flat colours, shapes, lines, text drawn with PIL). It records the found QF, the MSE at it, the ratio to the
reference shift and the dip depth (``utils.dominant_qf.QFEstimate``), then prints the acceptance table of the
paper's rule (MSE < T) and of the relative rule (ratio <= R; R' below QF 8) over a grid of R.
Never-compressed photos are the Kodak PhotoCD scans and 2x area-downscaled crops of the PNG sets (the
Urban100_half and IRCNN_Val20 PNGs as distributed carry a QF ~96 JPEG trace on their own grid, ratio ~0.03:
they were JPEGs once; they are listed apart).

The JPEG cases are read as the restore CLI reads a JPEG file: its own Y plane (``read_jpeg_luma``);
``--decoded`` gives the estimator the decoded RGB pixels instead (what a caller with only pixels has; saturated
colours clip there and can move a dip). The images used are the EVEN-numbered files of each training set
(sorted); the odd-numbered ones are left for ``tests/test_dominant_qf.py`` (images not used for calibration).

    python benchmarks/dominant_calibration.py [--per-set 8] [--json out.json] [--parity 1] [--decoded]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data.degradations import jpeg, jpeg_encode, shift_crop  # noqa: E402
from utils.dominant_qf import estimate_dominant_qf  # noqa: E402
from utils.utils_image import imread_uint, list_images, read_jpeg_luma  # noqa: E402

TRAIN = ROOT.parent / "shared" / "datasets" / "trainsets"
SETS = {"BSDS500_trainval": False, "Urban100_half": True, "IRCNN_Val20": True, "Kodak5": True}  # name: lossless
SINGLE = (10, 30, 50, 90)
DOUBLE_UP = ((10, 30), (10, 50), (30, 50), (20, 60))
DOUBLE_DOWN = ((30, 10), (50, 30))
CROP = 384
LOW_QF = 8


def crop(img: np.ndarray, side: int = CROP) -> np.ndarray:
    h, w = img.shape[:2]
    y, x = max(0, (h - side) // 2) // 8 * 8, max(0, (w - side) // 2) // 8 * 8
    return np.ascontiguousarray(img[y : y + side, x : x + side])


def double_jpeg(img: np.ndarray, qf1: int, qf2: int, shift: tuple[int, int] = (4, 4)) -> np.ndarray:
    return jpeg(shift_crop(jpeg(img, qf1), shift), qf2)


def graphic(seed: int, side: int = CROP) -> np.ndarray:
    """A PNG-native RGB graphic: a flat background with flat shapes, lines and text (deterministic per seed)."""
    rng = np.random.default_rng(seed)

    def colour() -> tuple[int, int, int]:
        return tuple(int(v) for v in rng.integers(0, 256, 3))

    im = Image.new("RGB", (side, side), colour())
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(3, 12))):
        x0, y0 = (int(v) for v in rng.integers(0, side, 2))
        x1, y1 = x0 + int(rng.integers(10, side // 2)), y0 + int(rng.integers(10, side // 2))
        kind = rng.integers(0, 4)
        if kind == 0:
            draw.rectangle((x0, y0, x1, y1), fill=colour())
        elif kind == 1:
            draw.ellipse((x0, y0, x1, y1), fill=colour(), outline=colour())
        elif kind == 2:
            draw.line((x0, y0, x1, y1), fill=colour(), width=int(rng.integers(1, 6)))
        else:
            draw.polygon([tuple(int(v) for v in rng.integers(0, side, 2)) for _ in range(3)], fill=colour())
    for line in range(int(rng.integers(2, 10))):
        size = int(rng.integers(10, 40))
        text = "".join(chr(int(c)) for c in rng.integers(33, 127, int(rng.integers(5, 30))))
        draw.text((int(rng.integers(0, side // 2)), 10 + line * size), text, fill=colour(), font_size=size)
    return np.asarray(im)


def training_images(per_set: int, parity: int) -> list[tuple[str, np.ndarray, bool]]:
    """(name, RGB crop, lossless) of the files at even (parity 0) or odd (1) positions, ``per_set`` per set."""
    out = []
    for name, lossless in SETS.items():
        files = list_images(TRAIN / name)[parity::2][:per_set]
        out += [(f"{name}/{f.name}", crop(imread_uint(f, 3)), lossless) for f in files]
    return out


def record(kind: str, case: str, truth: int | None, img: np.ndarray) -> dict:
    est = estimate_dominant_qf(img, threshold=float("inf"))
    return {
        "kind": kind,
        "case": case,
        "truth": truth,
        "qf": est.qf_found,
        "mse": est.mse,
        "ratio": est.ratio,
        "depth": est.depth,
        "shift": list(est.shift),
    }


def last_jpeg(img: np.ndarray, qf: int, decoded: bool) -> np.ndarray:
    """``img`` compressed at ``qf`` as the estimator sees it: the file's Y plane, or (``decoded``) the RGB pixels."""
    return jpeg(img, qf) if decoded else read_jpeg_luma(io.BytesIO(jpeg_encode(img, qf)))


def collect(per_set: int, graphics: int, parity: int = 0, decoded: bool = False) -> list[dict]:
    rows = []
    images = training_images(per_set, parity)
    start = time.perf_counter()
    for i, (name, img, lossless) in enumerate(images):
        for qf in SINGLE:
            rows.append(record("single", f"QF {qf}", qf, last_jpeg(img, qf, decoded)))
        for q1, q2 in DOUBLE_UP:
            first = shift_crop(jpeg(img, q1), (4, 4))
            rows.append(record("double_up", f"{q1}->{q2}", q1, last_jpeg(first, q2, decoded)))
        for q1, q2 in DOUBLE_DOWN:
            first = shift_crop(jpeg(img, q1), (4, 4))
            rows.append(record("double_down", f"{q1}->{q2}", q2, last_jpeg(first, q2, decoded)))
        if name.startswith("Kodak5"):  # PhotoCD scans, never JPEG-compressed
            rows.append(record("clean", "never compressed (Kodak)", None, img))
        elif lossless:  # Urban100/IRCNN PNGs carry a QF ~96 JPEG trace on their own grid: record it apart
            rows.append(record("png_source", "PNG file as distributed", None, img))
        if lossless:  # a 2x area downscale erases any JPEG grid: a never-compressed photo
            small = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
            rows.append(record("clean", "never compressed (2x downscaled)", None, small))
        print(f"  {i + 1}/{len(images)} {name} ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    for seed in range(graphics):
        rows.append(record("graphic", "PNG graphic", None, graphic(seed + 1000 * parity)))
    return rows


def accepted(row: dict, rule: tuple) -> bool:
    if row["qf"] is None or not np.isfinite(row["mse"]):
        return False
    if rule[0] == "paper":
        return row["mse"] < rule[1]
    _, ratio_max, low_ratio_max = rule  # low_ratio_max: for dips below QF 8
    return row["ratio"] <= (ratio_max if row["qf"] >= LOW_QF else low_ratio_max)


def correct(row: dict, rule: tuple) -> bool:
    """Accepted within the tolerance of its kind, or (for images without a usable JPEG QF) rejected."""
    ok = accepted(row, rule)
    if row["kind"] == "single":
        return ok and abs(row["qf"] - row["truth"]) <= 1
    if row["kind"] == "double_up":
        return ok and abs(row["qf"] - row["truth"]) <= 5
    if row["kind"] == "double_down":  # the last, stronger QF, or a fall-back to blind
        return not ok or abs(row["qf"] - row["truth"]) <= 5
    return not ok


def table(rows: list[dict], rules: dict[str, tuple]) -> str:
    kinds = {
        "single": "single JPEG accepted within +-1",
        "double_up": "QF1 < QF2 accepted with QF1 within +-5",
        "double_down": "QF1 > QF2: QF2 within +-5 or rejected",
        "clean": "never-compressed photos rejected",
        "png_source": "Urban100/IRCNN PNGs (QF~96 trace) rejected",
        "graphic": "PNG-native graphics rejected",
    }
    head = f"| {'case':42s} | " + " | ".join(f"{name:>12s}" for name in rules) + " |"
    lines = [head, "|" + "---|" * (len(rules) + 1)]
    for kind, label in kinds.items():
        sub = [r for r in rows if r["kind"] == kind]
        if not sub:
            continue
        cells = [f"{100 * np.mean([correct(r, rule) for r in sub]):11.1f}%" for rule in rules.values()]
        lines.append(f"| {label + f' ({len(sub)})':42s} | " + " | ".join(cells) + " |")
        for case in dict.fromkeys(r["case"] for r in sub) if kind in ("double_up", "single") else []:
            cs = [r for r in sub if r["case"] == case]
            cells = [f"{100 * np.mean([correct(r, rule) for r in cs]):11.1f}%" for rule in rules.values()]
            lines.append(f"| {'  ' + case:42s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-set", type=int, default=8, help="images per training set (even positions)")
    parser.add_argument("--graphics", type=int, default=40, help="synthetic PNG graphics")
    parser.add_argument("--json", type=Path, help="write the raw rows here")
    parser.add_argument("--parity", type=int, default=0, help="0: even files (calibration), 1: odd (held out)")
    parser.add_argument("--load", type=Path, help="read rows written by --json instead of computing them")
    parser.add_argument("--decoded", action="store_true", help="JPEG cases as decoded RGB, not the file's Y plane")
    args = parser.parse_args()
    if args.load:
        rows = json.loads(args.load.read_text())
    else:
        rows = collect(args.per_set, args.graphics, args.parity, args.decoded)
    if args.json:
        args.json.write_text(json.dumps(rows))
    rules = {"T=30 (paper)": ("paper", 30.0), "T=100": ("paper", 100.0)}
    for r in (0.6, 0.7, 0.75, 0.8):
        rules[f"R<={r:g}"] = ("relative", r, r)
    rules["R<=0.75/0.5"] = ("relative", 0.75, 0.5)  # the default: R <= 0.5 for dips below QF 8
    print(table(rows, rules))


if __name__ == "__main__":
    main()
