"""Benchmark FBCNN-D dominant-QF estimation (utils/dominant_qf.py): speed and accuracy on LIVE1.

Speed: seconds per image of the fast search (probes + centre crop + candidate grids) side by
side with the naive search (every one of the 64 shifts x 100 QFs on the whole image), measured
in the same run on the same images, with whether both give the same answer.

Accuracy on LIVE1 gray (the paper's Y protocol):
  * single JPEG at QF 10..90: share of images estimated within +-1;
  * non-aligned double JPEG (shift (4, 4)) for every pair of the paper's Table 3: for QF1 < QF2
    the share within +-5 of QF1, found at all, accepted by the default (relative) rule and by the
    paper's rule at several thresholds T; for QF1 >= QF2 the share near QF2 (+-5) or rejected, which
    is what FBCNN-D should do there;
  * never-compressed images: the share rejected.
Single JPEGs, QF1 >= QF2 and never-compressed images are judged by the default rule.
``--colour`` adds LIVE1_color single JPEG, estimated on JPEG luma, on RGB and on MATLAB Y.

    python benchmarks/dominant_qf.py                 # full LIVE1, about 5 minutes on 2 cores
    python benchmarks/dominant_qf.py --images 5 --naive-images 1
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data.degradations import double_jpeg, jpeg  # noqa: E402
from utils.dominant_qf import (  # noqa: E402
    ACCEPT_RATIO,
    ACCEPT_RATIO_LOW,
    LOW_QF,
    QFEstimate,
    _estimate_channels,
    estimate_dominant_qf,
    luma,
)
from utils.utils_image import imread_uint, list_images, rgb2ycbcr  # noqa: E402

DATASETS = ROOT.parent / "shared" / "datasets" / "testsets"
PAPER = ROOT.parent / "shared" / "paper" / "table3_gray_double.csv"
SINGLE_QFS = tuple(range(10, 100, 10))
THRESHOLDS = (30.0, 60.0, 100.0, float("inf"))
INF = float("inf")


def table3_pairs(path: Path) -> list[tuple[int, int]]:
    """The (QF1, QF2) pairs of the paper's Table 3, in file order."""
    with open(path, newline="") as f:
        rows = csv.DictReader(line for line in f if not line.startswith("#"))
        return list(dict.fromkeys((int(r["qf1"]), int(r["qf2"])) for r in rows))


def share(hits: int, total: int) -> str:
    return f"{hits}/{total} ({100.0 * hits / max(total, 1):.0f}%)"


def speed(images: list[np.ndarray], naive_images: int, crop: int) -> None:
    cases = {"single QF 50": lambda im: jpeg(im, 50), "double 30->50": lambda im: double_jpeg(im, 30, 50)[0]}
    rows, fast_t, naive_t = [], [], []
    for img in tqdm(images[:naive_images], desc="naive vs fast", unit="img"):
        for name, degrade in cases.items():
            x = degrade(img)
            t0 = time.perf_counter()
            fast = estimate_dominant_qf(x, INF, crop=crop)
            t1 = time.perf_counter()
            naive = estimate_dominant_qf(x, INF, exhaustive=True)
            t2 = time.perf_counter()
            fast_t.append(t1 - t0)
            naive_t.append(t2 - t1)
            rows.append((name, fast, naive))
    print(f"\nSpeed, seconds per image ({len(fast_t)} estimates on {naive_images} LIVE1 images, same run)")
    print(f"  {'case':16s} {'fast QF/shift':>16s} {'naive QF/shift':>16s}")
    for name, fast, naive in rows:
        print(f"  {name:16s} {str((fast.qf_found, fast.shift)):>16s} {str((naive.qf_found, naive.shift)):>16s}")
    same = sum(f.qf_found == n.qf_found for _, f, n in rows)
    print(
        f"  fast {np.mean(fast_t):.2f} s | naive 64x100 full image {np.mean(naive_t):.2f} s | "
        f"speed-up {np.mean(naive_t) / np.mean(fast_t):.0f}x | same QF {same}/{len(rows)}"
    )


def default_accepts(est: QFEstimate) -> bool:
    """The default acceptance rule (``threshold=None``) applied to an estimate made with T = inf."""
    if est.qf_found is None:
        return False
    return bool(est.ratio <= (ACCEPT_RATIO if est.qf_found >= LOW_QF else ACCEPT_RATIO_LOW))


def accuracy(images: list[np.ndarray], pairs: list[tuple[int, int]], crop: int) -> None:
    """Estimates with T = inf once; each threshold then only decides acceptance (mse < T)."""
    times = []

    def estimate(x: np.ndarray):
        t0 = time.perf_counter()
        est = estimate_dominant_qf(x, INF, crop=crop)
        times.append(time.perf_counter() - t0)
        return est

    single = {qf: [] for qf in SINGLE_QFS}
    double = {pair: [] for pair in pairs}
    original = []
    for img in tqdm(images, desc="accuracy", unit="img"):
        for qf in SINGLE_QFS:
            single[qf].append(estimate(jpeg(img, qf)))
        for pair in pairs:
            double[pair].append(estimate(double_jpeg(img, *pair, shift=(4, 4))[0]))
        original.append(estimate(img))
    n = len(images)
    print(
        f"\nTime per image, fast search (crop {crop}): mean {np.mean(times):.2f} s, max {np.max(times):.2f} s ({len(times)} estimates)"
    )

    print(f"\nSingle JPEG, LIVE1 gray ({n} images): accepted (default rule) within +-1 of the QF")
    print("  QF        " + " ".join(f"{q:>6d}" for q in SINGLE_QFS) + "    all")
    hits = [sum(default_accepts(e) and abs(e.qf_found - q) <= 1 for e in single[q]) for q in SINGLE_QFS]
    print("  within 1  " + " ".join(f"{h:>6d}" for h in hits) + f"  {share(sum(hits), n * len(SINGLE_QFS))}")

    print(f"\nNon-aligned double JPEG (shift 4,4), LIVE1 gray ({n} images), paper Table 3 pairs")
    print("  QF1 < QF2: estimate within +-5 of QF1 (found = before any rule; default = accepted by the default")
    print("  rule; T = accepted by the paper's rule, MSE < T)")
    header = f"  {'QF1 QF2':9s} {'found':>12s} {'default':>12s} "
    print(header + " ".join(f"{'T=' + format(t, 'g'):>12s}" for t in THRESHOLDS[:-1]))
    for pair in [p for p in pairs if p[0] < p[1]]:
        near = [e.qf_found is not None and abs(e.qf_found - pair[0]) <= 5 for e in double[pair]]
        cells = [share(sum(near), n)]
        cells.append(share(sum(ok and default_accepts(e) for ok, e in zip(near, double[pair], strict=True)), n))
        cells += [
            share(sum(ok and e.mse < t for ok, e in zip(near, double[pair], strict=True)), n) for t in THRESHOLDS[:-1]
        ]
        print(f"  {pair[0]:3d} {pair[1]:3d}   " + " ".join(f"{c:>12s}" for c in cells))
    print("  QF1 >= QF2: accepted estimate within +-5 of QF2, or rejected (default rule)")
    for pair in [p for p in pairs if p[0] >= p[1]]:
        good = [not default_accepts(e) or abs(e.qf_found - pair[1]) <= 5 for e in double[pair]]
        rejected = sum(not default_accepts(e) for e in double[pair])
        print(f"  {pair[0]:3d} {pair[1]:3d}   {share(sum(good), n):>12s}   (rejected {rejected})")
    none = sum(not default_accepts(e) for e in original)
    print(f"\nNever-compressed LIVE1 images: rejected (default rule) {share(none, n)}")


def colour(folder: Path, count: int, crop: int) -> None:
    modes = {
        "JPEG luma": luma,
        "RGB": lambda x: x,
        "MATLAB Y": lambda x: rgb2ycbcr(x, only_y=True)[:, :, None],
    }
    hits = {m: {q: 0 for q in SINGLE_QFS} for m in modes}
    times = {m: [] for m in modes}
    files = list_images(folder)[:count]
    for path in tqdm(files, desc="colour", unit="img"):
        img = imread_uint(path, 3)
        for qf in SINGLE_QFS:
            x = jpeg(img, qf)
            for mode, channels in modes.items():
                t0 = time.perf_counter()
                est = _estimate_channels(channels(x), INF, crop, 3, False)
                times[mode].append(time.perf_counter() - t0)
                hits[mode][qf] += est.qf_found is not None and abs(est.qf_found - qf) <= 1
    print(f"\nColour single JPEG, LIVE1 colour ({len(files)} images): within +-1 of the QF, by channel searched")
    print(f"  {'channel':10s} " + " ".join(f"{q:>5d}" for q in SINGLE_QFS) + "   all          s/img")
    for mode in modes:
        h = hits[mode]
        print(
            f"  {mode:10s} "
            + " ".join(f"{h[q]:>5d}" for q in SINGLE_QFS)
            + f"   {share(sum(h.values()), len(files) * len(SINGLE_QFS)):12s} {np.mean(times[mode]):.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=DATASETS / "LIVE1_gray", help="gray test images (LIVE1_gray)")
    parser.add_argument("--pairs", type=Path, default=PAPER, help="paper Table 3 CSV with qf1,qf2 columns")
    parser.add_argument("--images", type=int, default=0, help="use only the first N images (default: all)")
    parser.add_argument("--naive-images", type=int, default=2, help="images timed with the naive search (default 2)")
    parser.add_argument("--crop", type=int, default=256, help="centre crop of the fast search (default 256)")
    parser.add_argument(
        "--colour",
        type=Path,
        nargs="?",
        const=DATASETS / "LIVE1_color",
        default=None,
        help="also compare luma / RGB / MATLAB Y on colour JPEGs (default folder LIVE1_color)",
    )
    args = parser.parse_args()

    files = list_images(args.folder)[: args.images or None]
    images = [imread_uint(p, 1) for p in files]
    pairs = table3_pairs(args.pairs)
    print(f"{len(images)} images from {args.folder}; Table 3 pairs {pairs}")
    speed(images, args.naive_images, args.crop)
    accuracy(images, pairs, args.crop)
    if args.colour:
        colour(args.colour, args.images or 29, args.crop)


if __name__ == "__main__":
    main()
