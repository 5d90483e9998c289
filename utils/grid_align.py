"""Grid-aware inference: find the input's JPEG 8x8 grid and put it at the origin before restoring.

A JPEG cropped after compression (most real JPEGs: re-framed, cut out of a page, a screenshot
of a part) has its 8x8 grid anywhere, not at the image's top-left corner. A network trained on
aligned patches, or mostly aligned ones, restores such an image worse. Here the grid phase is
found from the pixels, the image is reflect-padded at the top and left so that the grid starts
at the origin, restored, and cropped back.

Finding the grid (the grid search of FBCNN-D, ``utils.dominant_qf``): a decoded JPEG is nearly
a fixed point of JPEG on its own grid. Every one of the 64 shifts of a centre crop of the luma
is recompressed at the probe QFs (``PROBE_QFS``); the shift with the lowest mean log-MSE is the
grid's phase. It is accepted when it lies at least ``MIN_MARGIN`` below the median shift;
otherwise the image shows no JPEG trace and is restored as it is (no padding). Measured on
training-side images by ``benchmarks/grid_align.py`` (the README gives the figures).

Convention: a phase ``(i, j)`` is the number of rows and columns to drop from the top-left so
that the last compression's grid starts at the origin, as ``data.degradations.shift_crop`` and
``utils.dominant_qf`` use it; aligning pads ``(8 - i) % 8`` rows and ``(8 - j) % 8`` columns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from utils.dominant_qf import PROBE_QFS, SHIFTS, _windows, luma, mse_curve

__all__ = ["MIN_MARGIN", "GridPhase", "align_padding", "estimate_grid_phase", "restore_grid_aligned"]

GRID = 8
MIN_MARGIN = 0.045  # mean log-MSE below the median shift; calibrated in benchmarks/grid_align.py
CROP = 256  # side of the centre crop searched (64 shifts x 6 probe QFs, about 0.1-0.3 s)

T = TypeVar("T")


@dataclass(frozen=True)
class GridPhase:
    """Result of ``estimate_grid_phase``.

    phase:  (rows, columns) to drop so that the JPEG grid starts at the origin, or None when
            the image shows no JPEG trace (``margin < MIN_MARGIN``).
    best:   the best-scoring shift, accepted or not.
    margin: how far (mean log-MSE) the best shift lies below the median of the 64 shifts.
    """

    phase: tuple[int, int] | None
    best: tuple[int, int]
    margin: float


def estimate_grid_phase(img: np.ndarray, *, crop: int | None = CROP, min_margin: float = MIN_MARGIN) -> GridPhase:
    """The 8x8 JPEG grid phase of a decoded uint8 image (``H x W``, ``H x W x 1`` or RGB ``H x W x 3``).

    Images smaller than 16 x 16 pixels cannot be searched: they get ``phase=None``.
    """
    y = luma(img)
    if min(y.shape[:2]) < 16:
        return GridPhase(None, (0, 0), 0.0)
    windows = _windows(y, crop)
    scores = {s: float(np.mean(np.log(mse_curve(windows[s], PROBE_QFS) + 1e-3))) for s in SHIFTS}
    best = min(scores, key=scores.__getitem__)
    margin = float(np.median(list(scores.values())) - scores[best])
    return GridPhase(best if margin >= min_margin else None, best, margin)


def align_padding(phase: tuple[int, int] | None) -> tuple[int, int]:
    """Rows and columns to add at the top and left so that a grid at ``phase`` starts at the origin."""
    if phase is None:
        return 0, 0
    return (GRID - phase[0]) % GRID, (GRID - phase[1]) % GRID


def restore_grid_aligned(
    restore: Callable[[np.ndarray], tuple[np.ndarray, T]], img: np.ndarray, phase: tuple[int, int] | None
) -> tuple[np.ndarray, T]:
    """``restore(padded)`` with the grid at the origin, cropped back to ``img``'s size.

    ``restore`` takes and returns a uint8 ``H x W x C`` image (plus anything, e.g. the QF used,
    passed through); ``img`` is padded by reflection at the top and left (``align_padding``).
    """
    top, left = align_padding(phase)
    if not (top or left):
        return restore(img)
    padded = np.pad(img, ((top, 0), (left, 0), (0, 0)), mode="reflect")
    restored, extra = restore(padded)
    return restored[top:, left:], extra
