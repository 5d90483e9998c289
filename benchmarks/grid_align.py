"""Grid-aware inference (utils/grid_align.py): how often the JPEG grid phase is found, what it costs, what it buys.

    python benchmarks/grid_align.py                    # training-side images only (never a test set)
    python benchmarks/grid_align.py --images 10 --restore-images 5

On clean training-side images (``../shared/datasets/trainsets``: Urban100_half, IRCNN_Val20, Kodak5 PNGs):

1. detection: single JPEGs at QF 10..95 and non-aligned double JPEGs (QF1 < QF2 and QF1 > QF2), each cropped
   by a random offset after the last compression; the phase found must be the last grid's. Never-compressed
   images must give no phase (no padding). Prints the rates, the margins and the cost in ms;
2. restoration: PSNR gain of the bundled gray model at grid offsets (0,0), (1,1), (4,4), (3,6), (7,2) on the
   Y channel at QF 10, with and without grid-aware inference.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data.degradations import double_jpeg, jpeg  # noqa: E402
from models import ZOO_MODELS, load_model  # noqa: E402
from utils.grid_align import MIN_MARGIN, estimate_grid_phase, restore_grid_aligned  # noqa: E402
from utils.utils_eval import restore  # noqa: E402
from utils.utils_image import calculate_psnr, imread_uint, list_images  # noqa: E402

TRAIN = ROOT.parent / "shared" / "datasets" / "trainsets"
SETS = ("Urban100_half", "IRCNN_Val20", "Kodak5")
OFFSETS = ((0, 0), (1, 1), (4, 4), (3, 6), (7, 2))
SINGLE_QFS = (10, 20, 30, 50, 70, 90, 95)
DOUBLE_PAIRS = ((10, 30), (30, 50), (50, 90), (30, 10), (50, 30), (90, 50))


def phase_of(offset: tuple[int, int]) -> tuple[int, int]:
    """The phase of a grid after cropping ``offset`` rows/columns from the top-left of an aligned JPEG."""
    return (-offset[0] % 8, -offset[1] % 8)


def detection(paths: list[Path], rng: np.random.Generator) -> None:
    rows: dict[str, list[bool]] = {}
    first: dict[str, list[bool]] = {}
    margins: dict[str, list[float]] = {}
    times = []

    def record(key: str, img: np.ndarray, expected: tuple[int, int] | None, first_grid=None) -> None:
        start = time.perf_counter()
        found = estimate_grid_phase(img)
        times.append(time.perf_counter() - start)
        rows.setdefault(key, []).append(found.phase == expected)
        first.setdefault(key, []).append(first_grid is not None and found.phase == first_grid)
        margins.setdefault(key, []).append(found.margin)

    for path in paths:
        gt = imread_uint(path, 3)
        record("never compressed: no phase", gt, None)
        for qf in SINGLE_QFS:
            offset = tuple(int(v) for v in rng.integers(8, size=2))
            record(f"single QF {qf}", jpeg(gt, qf)[offset[0] :, offset[1] :], phase_of(offset))
        for qf1, qf2 in DOUBLE_PAIRS:
            shift = tuple(int(v) for v in rng.integers(1, 8, size=2))
            offset = tuple(int(v) for v in rng.integers(8, size=2))
            low, _ = double_jpeg(gt, qf1, qf2, shift)
            first_grid = phase_of((shift[0] + offset[0], shift[1] + offset[1]))
            record(f"double {qf1} -> {qf2}", low[offset[0] :, offset[1] :], phase_of(offset), first_grid)
    print(f"\n## Grid-phase detection ({len(paths)} images, margin threshold {MIN_MARGIN})\n")
    print("| input | right (last grid; none for never compressed) | found the first grid | margin min / median |")
    print("|---|---|---|---|")
    for key, hits in rows.items():
        m, f = margins[key], first[key]
        first_text = f"{100 * np.mean(f):.0f} %" if key.startswith("double") else "-"
        print(
            f"| {key} | {100 * np.mean(hits):.0f} % ({sum(hits)}/{len(hits)}) | {first_text} | "
            f"{min(m):.3f} / {np.median(m):.3f} |"
        )
    print(f"\ncost: {1000 * np.median(times):.0f} ms median, {1000 * max(times):.0f} ms max per image")


def restoration(paths: list[Path]) -> None:
    model = load_model(ZOO_MODELS[1])
    gains: dict[tuple[tuple[int, int], bool], list[float]] = {}
    for path in paths:
        gt_full = imread_uint(path, 1)
        low_full = jpeg(gt_full, 10)
        for offset in OFFSETS:
            gt, low = gt_full[offset[0] :, offset[1] :], low_full[offset[0] :, offset[1] :]
            base = calculate_psnr(gt, low)
            plain, _ = restore(model, low)
            phase = estimate_grid_phase(low).phase
            aligned, _ = restore_grid_aligned(lambda img: restore(model, img), low, phase)
            gains.setdefault((offset, False), []).append(calculate_psnr(gt, plain) - base)
            gains.setdefault((offset, True), []).append(calculate_psnr(gt, aligned) - base)
    ref = np.mean(gains[((0, 0), False)])
    print(f"\n## Gain of {ZOO_MODELS[1].name} on Y at QF 10 ({len(paths)} images), dB (share of the aligned gain)\n")
    print("| grid offset | plain | grid-aware |")
    print("|---|---|---|")
    for offset in OFFSETS:
        plain, aligned = np.mean(gains[(offset, False)]), np.mean(gains[(offset, True)])
        print(f"| {offset} | {plain:+.3f} ({100 * plain / ref:.0f} %) | {aligned:+.3f} ({100 * aligned / ref:.0f} %) |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=30, help="images for detection (spread over the sets)")
    parser.add_argument("--restore-images", type=int, default=10, help="images for the restoration gains")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    by_set = [list_images(TRAIN / name) for name in SETS]
    mixed = [p for group in zip(*by_set, strict=False) for p in group]  # round-robin over the sets
    mixed += [p for group in by_set for p in group if p not in mixed]
    detection(mixed[: args.images], np.random.default_rng(args.seed))
    if args.restore_images:
        restoration(list_images(TRAIN / "IRCNN_Val20")[: args.restore_images])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
