"""FBCNN-D: estimate the dominant JPEG quality factor of a decoded image (paper Sec. 3.3).

A JPEG image is (nearly) a fixed point of JPEG at its own quality: recompressing it at QF q
gives an MSE-vs-q curve with a sharp dip at the image's QF. For a *non-aligned* double JPEG
(JPEG at QF1, crop, JPEG at QF2) the first compression lives on an 8x8 grid shifted by
``(i, j)``; removing the first ``i`` rows and ``j`` columns (``shift_crop``) aligns it again and
that shift's curve dips at QF1. The dominant QF is the smaller of the two, the one that
decides how strong the artifacts are, and the one FBCNN should be given.

Estimation (all encodes with ``data.degradations.jpeg``, the project's one JPEG):

1. Work on luma: gray images as they are, RGB through the JPEG (JFIF) luma, which is the
   channel JPEG quantises at full resolution. On LIVE1 colour JPEGs at QF 10..90 this finds
   the QF within +-1 for 100 % of the images, RGB for 82 % (the subsampled chroma blurs the
   dips) and MATLAB's Y (``rgb2ycbcr``, a rescaled luma off the JPEG lattice) for 9 %.
2. Grid search: every shift is recompressed at a few probe QFs on a centre crop. The last
   compression's grid is shift (0, 0); shifts near it recompress better just for being
   near it, which is symmetric under ``i -> 8 - i``. A first-compression grid shows as a
   shift that recompresses clearly better than its mirror images; the best ``candidates``
   such shifts are kept, each with a mirror image as its reference.
3. MSE curves at QF 1..100 for shift (0, 0), the candidates and their references.
   - The paper's rule: the first local minimum of the lowest curve (the minimum over the
     shifts at each QF). A local minimum must lie ``DIP_DEPTH`` (relative) below the highest
     of its ``DIP_WIDTH`` neighbours on each side, so that rounding wiggles do not count, and
     a dip with a much deeper one at most ``ECHO_WIDTH`` QFs above it is an echo of that one.
     The first such dip of shift (0, 0) alone is the last compression's QF (``qf_last``).
   - Weak first compressions (e.g. QF1 = 30 under QF2 = 50) leave no local minimum, only a
     wide basin in ``curve(candidate) / curve(reference)`` centred on QF1; a basin at least
     ``BASIN_DEPTH`` deep within ``BASIN_WIDTH`` QFs on each side, below the QF found by
     the paper's rule and with a ratio of at most ``ACCEPT_RATIO`` at its bottom, is taken
     as the dominant QF.
4. Accept (default) if the chosen shift recompresses at the chosen QF at most ``ACCEPT_RATIO`` times as
   badly as its reference (its mirror shift; for the image's own grid the median of the other shifts
   searched): a JPEG grid really is there. The paper's rule, MSE below ``threshold`` (T = 30), is kept
   as an option; it rejects about half of the non-aligned QF1 < QF2 doubles, whose MSE at the QF1
   dip is the noise of the second compression. Rejected: ``qf`` is None and the caller falls back to
   the network's blind prediction.

Speed: the naive search encodes 64 shifts x 100 QFs of the full image. Here the probes cost
64 x 6 encodes and the curves (1 + 2 x candidates) x 100 encodes, all on a ``crop`` x
``crop`` centre crop (~0.2 ms per 256 x 256 encode). ``exhaustive=True`` runs the same
estimator on every shift's full curve of the full image (``benchmarks/dominant_qf.py``
compares the two).

Command line: ``python -m utils.dominant_qf FILE [FILE ...] [--threshold T]``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

if __package__ in (None, ""):  # ``python utils/dominant_qf.py``: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.degradations import jpeg, shift_crop  # noqa: E402
from utils.utils_image import ImageReadError, imread_uint, read_jpeg_luma  # noqa: E402

__all__ = [
    "ACCEPT_RATIO",
    "ACCEPT_RATIO_LOW",
    "LOW_QF",
    "PAPER_THRESHOLD",
    "QFEstimate",
    "estimate_dominant_qf",
    "estimate_from_curves",
    "luma",
    "main",
    "mse_curve",
]

QFS = np.arange(1, 101)  # the QFs of a full curve; curve[k] is at QF k + 1
PROBE_QFS = (10, 25, 40, 55, 70, 85)  # grid search: few QFs spread over the useful range
SHIFTS = tuple((i, j) for i in range(8) for j in range(8))
DIP_DEPTH = 0.1  # a local minimum is >= 10 % below the highest of its 3 neighbours on each side
DIP_WIDTH = 3
ECHO_WIDTH = 5  # a dip followed within 5 QFs by one less than half as deep in MSE is an echo of that one
BASIN_DEPTH = 0.06  # a first-compression basin is >= 6 % below its surroundings ...
BASIN_WIDTH = 10  # ... within 10 QFs on each side
MIN_SIZE = 16  # smallest image side: 8 pixels of shift + one 8x8 block
# The default acceptance rule (``threshold=None``): the chosen shift must recompress at the chosen QF at most
# ACCEPT_RATIO times as badly as its reference shift (``QFEstimate.ratio``); dips below QF LOW_QF need
# ACCEPT_RATIO_LOW (flat graphics recompress badly at every shift there, and small differences between shifts
# mimic a grid). Calibrated on training-side images only (``benchmarks/dominant_calibration.py``; README table).
ACCEPT_RATIO = 0.75
ACCEPT_RATIO_LOW = 0.5
LOW_QF = 8
PAPER_THRESHOLD = 30.0  # the paper's rule: accept when the MSE at the dip is below T


@dataclass(frozen=True)
class QFEstimate:
    """Result of ``estimate_dominant_qf``.

    qf:       the dominant QF (1..100) if accepted, else None (use the network's blind prediction).
    mse:      MSE (uint8 units^2) between the shifted image and its recompression at the chosen
              QF; ``inf`` when the curves have no dip at all (no JPEG trace).
    qf_last:  the first dip of the image's own grid (shift (0, 0)): the QF of the last
              compression (of an aligned double JPEG: the lower QF of the two). None without
              a dip. (The global minimum is no good estimate: a JPEG at QF q dips about as
              deep again at harmonics such as 2q and 5q.)
    shift:    (rows, columns) removed from the top-left to align the grid of the chosen QF.
    accepted: the acceptance rule's verdict: ``ratio <= ACCEPT_RATIO`` (``ACCEPT_RATIO_LOW`` below QF
              ``LOW_QF``; the default) or ``mse < threshold`` (the paper's rule, when a threshold T is given).
    qf_found: the chosen QF whether accepted or not (None: no dip at all).
    ratio:    the chosen shift's MSE at the chosen QF over its reference's: the mirror shift for a
              first-compression grid, the median of the other searched shifts for the image's own grid
              (about 1 without a JPEG grid there; ``nan`` without a dip).
    depth:    how far (relative) the chosen curve dips below the lower of the highest points
              ``DIP_WIDTH`` QFs on each side (``nan`` without a dip).
    """

    qf: int | None
    mse: float
    qf_last: int | None
    shift: tuple[int, int]
    accepted: bool
    qf_found: int | None = None
    ratio: float = float("nan")
    depth: float = float("nan")


# --------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------
def luma(img: np.ndarray) -> np.ndarray:
    """uint8 ``H x W``, ``H x W x 1`` or RGB ``H x W x 3`` -> uint8 ``H x W x 1`` JPEG (JFIF) luma.

    Gray images (and RGB images whose three channels are equal) are returned as they are.
    """
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got {img.dtype}")
    if img.ndim == 2:
        return img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 3):
        raise ValueError(f"expected an H x W, H x W x 1 or H x W x 3 image, got shape {img.shape}")
    if img.shape[2] == 1 or (np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 0], img[..., 2])):
        return img[:, :, :1]
    return cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2YCrCb)[:, :, :1]


def mse_curve(img: np.ndarray, qfs: Sequence[int] = QFS) -> np.ndarray:
    """MSE between ``img`` (uint8 ``H x W x C``) and ``jpeg(img, q)`` for each q in ``qfs``."""
    return np.array([cv2.norm(img, jpeg(img, int(q)), cv2.NORM_L2SQR) / img.size for q in qfs])


def _windows(img: np.ndarray, crop: int | None) -> dict[tuple[int, int], np.ndarray]:
    """Every shift's view of one common window: a centre crop (``crop`` pixels a side, or the whole
    image) whose origin is a multiple of 8, so the image's own 8x8 grid stays at shift (0, 0)."""
    if min(img.shape[:2]) < MIN_SIZE:
        raise ValueError(f"image of {img.shape[0]}x{img.shape[1]} pixels is too small (needs >= {MIN_SIZE}x{MIN_SIZE})")
    h, w = img.shape[0] - 7, img.shape[1] - 7  # room for a shift of up to 7
    size = [h // 8 * 8, w // 8 * 8]
    if crop:
        size = [min(crop, size[0]), min(crop, size[1])]
    y0, x0 = (h - size[0]) // 2 // 8 * 8, (w - size[1]) // 2 // 8 * 8
    return {s: shift_crop(img, (y0 + s[0], x0 + s[1]))[: size[0], : size[1]] for s in SHIFTS}


def _mirrors(shift: tuple[int, int]) -> list[tuple[int, int]]:
    """Shifts equally far from the image's own grid (i -> 8 - i); phase 4, its own mirror, uses 3 and 5."""

    def phases(p: int) -> tuple[int, ...]:
        return (0,) if p == 0 else (3, 5) if p == 4 else (p, 8 - p)

    return [(i, j) for i in phases(shift[0]) for j in phases(shift[1]) if (i, j) != shift]


def _grid_candidates(
    probes: dict[tuple[int, int], np.ndarray], n: int
) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """The ``n`` shifts that recompress best relative to their mirrors, each with a reference mirror.

    ``probes[shift]`` is the MSE at ``PROBE_QFS``. A shift's score is its mean log-MSE minus the
    mean over its mirrors: about 0 without a grid there, clearly negative on a first-compression grid.
    """
    logs = {s: float(np.mean(np.log(p + 1e-3))) for s, p in probes.items()}
    scores = {s: logs[s] - np.mean([logs[m] for m in _mirrors(s)]) for s in SHIFTS if s != (0, 0)}
    best = sorted(scores, key=scores.__getitem__)[:n]
    return [(s, max(_mirrors(s), key=logs.__getitem__)) for s in best]


def _dips(curve: np.ndarray, depth: float, width: int) -> list[int]:
    """Indices of local minima at least ``depth`` (relative) below the highest point ``width`` either side.

    A run of equal values counts as one minimum, at its centre; the curve's ends never count. A minimum
    followed within ``ECHO_WIDTH`` by one with less than half its value is dropped: on smooth images a JPEG
    at QF q also dips a little at q - 2 (e.g. the QF 8 table is 5/4 of the QF 10 one), the real dip is ~0.
    """
    found, n, k = [], len(curve), 1
    while k < n - 1:
        end = k
        while end + 1 < n and curve[end + 1] == curve[k]:
            end += 1
        if curve[k] < curve[k - 1] and end < n - 1 and curve[k] < curve[end + 1]:
            rim = min(curve[max(0, k - width) : k].max(), curve[end + 1 : end + 1 + width].max())
            if curve[k] <= (1.0 - depth) * rim:
                found.append((k + end) // 2)
        k = end + 1
    return [k for k in found if not any(k < j <= k + ECHO_WIDTH and curve[j] < 0.5 * curve[k] for j in found)]


def _basin(ratio: np.ndarray, stop: int) -> int | None:
    """Index of the minimum of ``ratio[1:stop]`` if it is also the minimum of the ``BASIN_WIDTH``
    values on each side and at least ``BASIN_DEPTH`` below the highest of them on each side."""
    if stop < 2:
        return None
    k = 1 + int(np.argmin(ratio[1:stop]))
    left, right = ratio[max(0, k - BASIN_WIDTH) : k], ratio[k + 1 : k + 1 + BASIN_WIDTH]
    if right.size == 0 or ratio[k] > min(left.min(), right.min()):
        return None
    return k if ratio[k] <= (1.0 - BASIN_DEPTH) * min(left.max(), right.max()) else None


# --------------------------------------------------------------------------------------
# Estimation
# --------------------------------------------------------------------------------------
def estimate_from_curves(
    curves: dict[tuple[int, int], np.ndarray],
    candidates: Sequence[tuple[tuple[int, int], tuple[int, int]]],
    threshold: float | None = None,
) -> QFEstimate:
    """The decision of ``estimate_dominant_qf`` from MSE curves at QF 1..100 (``curves[(0, 0)]``
    and every shift named in ``candidates``, a list of (candidate, reference) shifts).

    ``threshold``: None for the default relative rule (``ACCEPT_RATIO``), or the paper's T (accept MSE < T)."""
    shifts = list(curves)
    stack = np.stack([curves[s] for s in shifts])
    lowest = stack.min(axis=0)
    dips = _dips(lowest, DIP_DEPTH, DIP_WIDTH)
    own = _dips(curves[(0, 0)], DIP_DEPTH, DIP_WIDTH)
    qf_last = own[0] + 1 if own else None

    best = (dips[0], shifts[int(np.argmin(stack[:, dips[0]]))]) if dips else None
    stop = best[0] if best else len(QFS) - 1
    for cand, ref in candidates:  # a first compression too weak to leave a local minimum
        ratio = curves[cand] / np.maximum(curves[ref], 1e-9)
        k = _basin(ratio, stop)
        # A basin counts only as clearly below its mirror as the acceptance rule asks: on periodic textures
        # (façades) a shift near the own grid's harmonics can show a shallow basin (ratio ~0.9) below a true dip.
        if k is not None and ratio[k] <= ACCEPT_RATIO and (best is None or k < best[0]):
            best = (k, cand)
    if best is None:
        return QFEstimate(None, float("inf"), qf_last, (0, 0), False, None)
    k, shift = best
    mse = float(curves[shift][k])
    ratio, depth = _evidence(curves, candidates, shift, k)
    if threshold is None:
        accepted = bool(ratio <= (ACCEPT_RATIO if k + 1 >= LOW_QF else ACCEPT_RATIO_LOW))
    else:
        accepted = mse < threshold
    return QFEstimate(k + 1 if accepted else None, mse, qf_last, shift, accepted, k + 1, ratio, depth)


def _evidence(
    curves: dict[tuple[int, int], np.ndarray],
    candidates: Sequence[tuple[tuple[int, int], tuple[int, int]]],
    shift: tuple[int, int],
    k: int,
) -> tuple[float, float]:
    """(ratio, depth) of ``QFEstimate`` for the dip at index ``k`` of ``curves[shift]``."""
    curve = curves[shift]
    partner = next((b if a == shift else a for a, b in candidates if shift in (a, b)), None)
    if partner is not None:
        ref = float(curves[partner][k])
    else:
        others = [float(c[k]) for s, c in curves.items() if s != shift]
        ref = float(np.median(others)) if others else float("nan")
    ratio = float(curve[k]) / max(ref, 1e-9)
    left, right = curve[max(0, k - DIP_WIDTH) : k], curve[k + 1 : k + 1 + DIP_WIDTH]
    rim = min(left.max(), right.max()) if left.size and right.size else float("nan")
    depth = 1.0 - float(curve[k]) / max(rim, 1e-9)
    return ratio, depth


def _estimate_channels(
    img: np.ndarray, threshold: float | None, crop: int | None, candidates: int, exhaustive: bool
) -> QFEstimate:
    """``estimate_dominant_qf`` on the channels given (luma normally; RGB for the benchmark)."""
    windows = _windows(img, None if exhaustive else crop)
    if exhaustive:
        curves = {s: mse_curve(windows[s]) for s in SHIFTS}
        probes = {s: c[np.asarray(PROBE_QFS) - 1] for s, c in curves.items()}
    else:
        probes = {s: mse_curve(windows[s], PROBE_QFS) for s in SHIFTS}
    pairs = _grid_candidates(probes, candidates)
    if not exhaustive:
        needed = dict.fromkeys([(0, 0)] + [s for pair in pairs for s in pair])
        curves = {s: mse_curve(windows[s]) for s in needed}
    return estimate_from_curves(curves, pairs, threshold)


def estimate_dominant_qf(
    img: np.ndarray,
    threshold: float | None = None,
    *,
    crop: int | None = 256,
    candidates: int = 3,
    exhaustive: bool = False,
) -> QFEstimate:
    """Estimate the dominant JPEG QF of a decoded uint8 image (``H x W``, ``H x W x 1`` or RGB ``H x W x 3``).

    ``threshold``: None (default) accepts when the chosen shift recompresses at most ``ACCEPT_RATIO`` times as
    badly as its reference shift at the chosen QF (calibrated on training-side images, README); a number T
    applies the paper's rule instead, MSE < T (the paper's T = ``PAPER_THRESHOLD`` = 30).
    ``crop``: side of the centre crop searched (None: the whole image). ``candidates``: how many
    possible first-compression grids get a full curve. ``exhaustive``: every shift's full curve on
    the whole image (64 x 100 encodes; slow, for comparison). See the module docstring.
    """
    return _estimate_channels(luma(img), threshold, crop, candidates, exhaustive)


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------
def _describe(est: QFEstimate, threshold: float | None) -> str:
    last = f"last QF {est.qf_last}" if est.qf_last is not None else "no dip on the image's own grid"
    evidence = f"mse {est.mse:.2f}, ratio {est.ratio:.2f} at shift {est.shift}"
    if est.accepted:
        return f"QF {est.qf}  ({evidence}; {last})"
    if np.isfinite(est.mse):
        rule = f"ratio > {ACCEPT_RATIO:g}" if threshold is None else f"mse >= {threshold:g}"
        return f"rejected  ({evidence}: {rule}; {last})"
    return "no JPEG trace  (no dip in any MSE curve)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m utils.dominant_qf",
        description="Estimate the dominant JPEG quality factor (FBCNN-D) of images: JPEG files or any decoded "
        "image (PNG, ...). Prints one line per file; exit status 1 if a file could not be processed.",
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="image files")
    parser.add_argument(
        "--threshold",
        type=float,
        help=f"the paper's rule: accept an estimate only if its MSE is below T (paper: {PAPER_THRESHOLD:g}); "
        f"default: the calibrated relative rule (ratio to the reference shift <= {ACCEPT_RATIO:g})",
    )
    parser.add_argument(
        "--crop", type=int, default=256, help="side of the centre crop searched (default 256; 0 = whole image)"
    )
    args = parser.parse_args(argv)

    failures = 0
    for path in tqdm(args.files, desc="dominant QF", unit="img", disable=None, file=sys.stderr):
        try:
            img = read_jpeg_luma(path, upright=True)  # a JPEG's own Y plane; other files as decoded
            img = imread_uint(path, 3) if img is None else img
            est = estimate_dominant_qf(img, args.threshold, crop=args.crop or None)
        except ImageReadError as exc:  # its message names the file
            failures += 1
            print(f"error: {exc}", file=sys.stderr)
            continue
        except ValueError as exc:
            failures += 1
            print(f"error: {path}: {exc}", file=sys.stderr)
            continue
        tqdm.write(f"{path}: {_describe(est, args.threshold)}", file=sys.stdout)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
