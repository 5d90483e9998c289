"""Test-set pairs for the evaluation protocols: single JPEG, non-aligned double JPEG, real JPEGs.

A ``DatasetTest`` reads the images of one folder with the channels of the network under test
(1: the Y channel, as the paper's gray protocol; 3: RGB) and degrades each ground truth by one
``Degradation``. Items are KAIR-style dicts of uint8 ``H x W x C`` arrays:
``{"name", "path", "L" (network input), "H" (ground truth or None), "chroma" (see below)}``.

Real JPEGs have no ground truth: ``L`` is the file itself. When a gray network meets a colour
real image, ``L`` is its Y channel and ``chroma`` its original CbCr (MATLAB YCbCr), to be put
back after restoration with ``merge_chroma``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.degradations import double_jpeg, jpeg
from utils.utils_image import imread_uint, imsave, list_images, rgb2ycbcr, ycbcr2rgb

PROTOCOLS = ("single", "double", "real")

# Natural photographs that scikit-image ships (no download): the default test set of the
# project's first command when the benchmark sets are not under testsets/.
SKIMAGE_SET = "skimage"
SKIMAGE_NATURAL = ("astronaut", "camera", "chelsea", "coffee", "coins", "rocket")


@dataclass(frozen=True)
class Degradation:
    """What is done to a ground-truth image before restoration.

    ``kind``: ``"single"`` (JPEG at ``qf``), ``"double"`` (JPEG at ``qf``, drop ``shift`` =
    (rows, columns) from the top-left, JPEG at ``qf2``; the ground truth is cropped the same
    way; ``(0, 0)`` is aligned double JPEG) or ``"real"`` (nothing: the file is the input).
    ``crop``: (rows, columns) dropped from the top-left of the JPEG and the ground truth after
    the (last) compression, as in a JPEG cropped after saving: its 8x8 grid then starts at
    ``(-crop) % 8``. ``(0, 0)``, the paper's protocol, keeps the grid at the origin.
    """

    kind: str
    qf: int | None = None
    qf2: int | None = None
    shift: tuple[int, int] = (4, 4)
    crop: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        if self.kind not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.kind!r}")
        if self.kind == "single" and self.qf is None:
            raise ValueError("single JPEG needs a quality factor")
        if self.kind == "double" and (self.qf is None or self.qf2 is None):
            raise ValueError("double JPEG needs two quality factors (qf1, qf2)")
        if len(self.crop) != 2 or min(self.crop) < 0 or (self.kind == "real" and any(self.crop)):
            raise ValueError(
                f"crop must be two non-negative numbers of rows and columns (not for real), got {self.crop}"
            )

    @property
    def name(self) -> str:
        """Folder and table label: ``qf10``, ``qf10-30`` (``_shift0-0`` when not the paper's 4, 4), ``real``;
        ``_crop1-1`` when ``crop`` is not (0, 0)."""
        crop = "" if not any(self.crop) else f"_crop{self.crop[0]}-{self.crop[1]}"
        if self.kind == "single":
            return f"qf{self.qf}{crop}"
        if self.kind == "double":
            suffix = "" if tuple(self.shift) == (4, 4) else f"_shift{self.shift[0]}-{self.shift[1]}"
            return f"qf{self.qf}-{self.qf2}{suffix}{crop}"
        return "real"

    @property
    def true_qf(self) -> int | None:
        """The quality of the last compression (what a blind network should predict), None for real images."""
        return self.qf2 if self.kind == "double" else self.qf

    def apply(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 ground truth -> ``(degraded input, ground truth aligned with it)``; real: ``(img, None)``."""
        if self.kind == "real":
            return img, None
        if self.kind == "single":
            low, gt = jpeg(img, self.qf), img
        else:
            low, gt = double_jpeg(img, self.qf, self.qf2, tuple(self.shift))
        dy, dx = self.crop
        return low[dy:, dx:], gt[dy:, dx:]


def make_degradations(
    protocol: str,
    qfs: list[int],
    qf_pairs: list[list[int]],
    shift: list[int] | tuple[int, int] = (4, 4),
    crop: list[int] | tuple[int, int] = (0, 0),
) -> list[Degradation]:
    """The degradations of a protocol: one per QF (single), per (QF1, QF2) pair (double), or one (real)."""
    crop = (int(crop[0]), int(crop[1]))
    if protocol == "single":
        return [Degradation("single", int(qf), crop=crop) for qf in qfs]
    if protocol == "double":
        for pair in qf_pairs:
            if len(pair) != 2:
                raise ValueError(f"qf_pairs entries must be [qf1, qf2], got {pair}")
        return [Degradation("double", int(a), int(b), (int(shift[0]), int(shift[1])), crop) for a, b in qf_pairs]
    if protocol == "real":
        return [Degradation("real")]
    raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")


def is_gray(img: np.ndarray) -> bool:
    """True when a uint8 ``H x W x C`` image has one channel or three identical ones."""
    return img.shape[2] == 1 or (np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 0], img[..., 2]))


def merge_chroma(y: np.ndarray, chroma: np.ndarray) -> np.ndarray:
    """Restored Y ``H x W x 1`` + original CbCr ``H x W x 2`` -> uint8 RGB (MATLAB YCbCr)."""
    return ycbcr2rgb(np.concatenate([y, chroma], axis=2))


def export_skimage_set(folder: str | os.PathLike, names: tuple[str, ...] | None = None) -> Path:
    """Write scikit-image's bundled natural photographs (default ``SKIMAGE_NATURAL``) into ``folder`` as PNG."""
    from skimage import data as skdata

    folder = Path(folder)
    for name in SKIMAGE_NATURAL if names is None else names:
        path = folder / f"{name}.png"
        if not path.is_file():
            imsave(getattr(skdata, name)(), path)
    return folder


def default_cache_dir() -> Path:
    """Where the embedded scikit-image set is written: ``$XDG_CACHE_HOME/fbcnn`` (``~/.cache/fbcnn``)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fbcnn" / "skimage_natural"


class DatasetTest:
    """The images of one folder, read with ``n_channels`` and degraded by ``degradation``.

    ``folder`` may be the word ``"skimage"``: scikit-image's natural photographs, exported once
    to ``cache_dir`` (default ``default_cache_dir()``). Indexing raises ``ImageReadError``
    (naming the file) for an unreadable image; the other items stay usable.
    """

    def __init__(
        self,
        name: str,
        folder: str | os.PathLike,
        n_channels: int,
        degradation: Degradation,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        if str(folder) == SKIMAGE_SET:
            folder = export_skimage_set(cache_dir or default_cache_dir())
        self.name = name
        self.folder = Path(folder)
        self.n_channels = n_channels
        self.degradation = degradation
        self.paths = list_images(self.folder)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        item = {"name": path.stem, "path": path, "chroma": None}
        if self.degradation.kind == "real" and self.n_channels == 1:
            rgb = imread_uint(path, 3)
            if is_gray(rgb):
                item["L"] = rgb[:, :, :1]
            else:
                ycbcr = rgb2ycbcr(rgb, only_y=False)
                item["L"], item["chroma"] = ycbcr[:, :, :1], ycbcr[:, :, 1:]
            item["H"] = None
            return item
        item["L"], item["H"] = self.degradation.apply(imread_uint(path, self.n_channels))
        return item
