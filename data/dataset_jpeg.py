"""The training dataset: patches with single or non-aligned double JPEG, colour or gray.

One class covers KAIR's ``dataset_jpeg`` / ``dataset_jpeggray`` / ``dataset_jpeggraydouble``;
the options (``TRAIN_DATASET_DEFAULTS``) decide. A sample is made in this order:

1. the image: sample ``i`` of epoch ``e`` uses image ``(i + e * len(dataset)) % n_images``,
   so every image is used equally often over the epochs;
2. a random crop of ``H_size`` plus margins (8 for a double-JPEG sample, ``grid_recrop_max_offset``
   when ``grid_recrop_prob > 0``), then one of the 8 flips/rotations (``augment``);
3. single JPEG: ``L = jpeg(patch, qf1)``, ``H = patch``, label ``(100 - qf1) / 100``;
   double JPEG: ``L, H = double_jpeg(patch, qf1, qf2, shift)`` (the shift drops the first
   ``i`` rows and ``j`` columns, ``i, j`` uniform in 0..7), so the first JPEG grid is not aligned
   with the second; the label is NaN (the QF of a double JPEG is undefined; the trainer masks it);
4. the grid-phase re-crop: with probability ``grid_recrop_prob`` the ``H_size`` square of both
   starts at a random offset ``(dy, dx)``, each uniform on ``0..grid_recrop_max_offset``; otherwise
   at the top left. As in the official loaders (crop ``H_size + 8``, compress, re-crop half of the
   samples at an offset in 0..8), the last JPEG's 8x8 grid then lies anywhere in the patch, as in a
   real JPEG that was cropped after compression. The sample's ``grid_phase`` ``(-dy % 8, -dx % 8)``
   is the number of rows / columns to drop so that the last grid starts at the origin (the
   ``shift_crop`` convention of ``utils.dominant_qf``).

All randomness of sample ``i`` comes from ``np.random.default_rng([seed, epoch, i])``: a
sample does not depend on the number of DataLoader workers or on their order.

Gray (``n_channels: 1``): colour files give their Y channel (MATLAB rgb2ycbcr, as the test
protocol), or with probability ``gray_cv2_prob`` OpenCV's ``COLOR_RGB2GRAY``; gray files are
used as they are (OpenCV's gray of a gray file is the file itself).
"""

from __future__ import annotations

import math
import os
import random
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from data.degradations import double_jpeg, jpeg
from models.contract import qf_to_label
from utils.utils_image import imread_uint, list_images, uint2tensor4
from utils.utils_option import OptionError, merge_with_schema

__all__ = ["TRAIN_DATASET_DEFAULTS", "DatasetError", "DatasetJPEG", "augment", "draw_qf", "worker_init_fn"]

# Schema of the `datasets.train` option section (see utils/utils_option.py). Comments for users
# are in the README's training section and in options/train_*.json.
TRAIN_DATASET_DEFAULTS: dict[str, Any] = {
    "name": "train",
    "dataroot_H": None,  # required: a folder or a list of folders of clean images
    "H_size": 128,  # patch size (pixels); a multiple of 8
    "n_channels": 3,  # 3 = RGB, 1 = gray (Y of colour files)
    "double_jpeg_prob": 0.0,  # fraction of non-aligned double-JPEG samples (FBCNN-A)
    "qf_choices": [10, 20, 30, 40, 50, 60],  # QF distribution: with prob qf_choice_prob one of these,
    "qf_choice_prob": 0.75,
    "qf_uniform_range": [8, 96],  # else uniform on this inclusive range
    "qf2_choice_prob": None,  # double JPEG, second QF: qf_choice_prob for it (null = the same as the first)
    "grid_recrop_prob": 0.5,  # fraction of patches re-cropped after JPEG, so the 8x8 grid is off the origin
    "grid_recrop_max_offset": 8,  # re-crop offset uniform on 0..this, rows and columns (official: 8)
    "gray_cv2_prob": 0.0,  # gray only: fraction of samples whose gray is OpenCV's RGB2GRAY instead of Y
    "cache": "memory",  # "memory": decode every image once at start-up; "none": decode per sample
    "samples_per_epoch": 8000,  # dataset length (patches per epoch); 0 = one patch per image
    "seed": None,  # sample i of epoch e is a function of (seed, e, i) only; null: the trainer's top-level seed (0 alone)
    "skip_bad_images": False,  # unreadable / too small images: error listing them all, or skip with a warning
    "dataloader_shuffle": True,
    "dataloader_num_workers": 2,
    "dataloader_batch_size": 16,
}

DOUBLE_MARGIN = 8  # extra pixels a double-JPEG crop needs for its shift (0..7 rows/columns)
CACHE_MODES = ("memory", "none")


class DatasetError(ValueError):
    """Unusable training images; the message lists every file and the reason."""


# --------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------
def augment(img: np.ndarray, mode: int) -> np.ndarray:
    """One of the 8 flips/rotations of an ``H x W x C`` array: rotate by ``90 * (mode % 4)`` degrees
    counter-clockwise, then flip upside down when ``mode >= 4``. Mode 0 is the identity."""
    if not 0 <= mode < 8:
        raise ValueError(f"augmentation mode must be in 0..7, got {mode}")
    out = np.rot90(img, k=mode % 4)
    if mode >= 4:
        out = out[::-1]
    return np.ascontiguousarray(out)


def draw_qf(rng: np.random.Generator, choices: Sequence[int], choice_prob: float, uniform_range: Sequence[int]) -> int:
    """A JPEG quality factor: with probability ``choice_prob`` one of ``choices`` (equally likely),
    otherwise uniform on the inclusive ``uniform_range``."""
    if rng.random() < choice_prob:
        return int(choices[rng.integers(len(choices))])
    return int(rng.integers(uniform_range[0], uniform_range[1] + 1))


def worker_init_fn(worker_id: int) -> None:
    """DataLoader worker set-up: seed torch / numpy / random from the worker's torch seed (the samples
    themselves are seeded per index), one thread for OpenCV and torch inside each worker."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    cv2.setNumThreads(0)
    torch.set_num_threads(1)


def _read(path: Path, variant: str) -> np.ndarray:
    """Decode one file as uint8 ``H x W x C``: 'rgb', 'y' (gray files as is) or 'cv2gray'."""
    if variant == "rgb":
        return imread_uint(path, 3)
    if variant == "y":
        return imread_uint(path, 1)
    return cv2.cvtColor(imread_uint(path, 3), cv2.COLOR_RGB2GRAY)[:, :, None]


# --------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------
class DatasetJPEG(Dataset):
    """Random JPEG training patches; see the module docstring for what a sample is.

    ``opt`` is the ``datasets.train`` section (missing keys take ``TRAIN_DATASET_DEFAULTS``). A sample
    is a dict: ``L`` (JPEG input) and ``H`` (ground truth), float32 ``[C, H_size, H_size]`` in [0, 1];
    ``qf_label`` float32 ``[1]`` = (100 - QF) / 100, NaN for double JPEG; ``qf1``, ``qf2`` (-1 for
    single), ``shift`` ``[2]`` (rows, columns; (0, 0) for single), ``crop`` ``[2]`` (top, left of the
    crop in the image), ``aug`` (``augment`` mode), ``recrop`` ``[2]`` (re-crop offset, rows and
    columns), ``grid_phase`` ``[2]`` (rows, columns to drop to align the last JPEG grid), ``gray_cv2``
    (bool) as int tensors; ``path``.
    """

    def __init__(self, opt: dict[str, Any]) -> None:
        super().__init__()
        self.where = "datasets.train."  # where the trainer nests this section (for error messages)
        self.opt = merge_with_schema(opt, TRAIN_DATASET_DEFAULTS, self.where)
        self._check_options()
        o = self.opt
        self.H_size = o["H_size"]
        self.n_channels = o["n_channels"]
        self.epoch = 0
        self.recrop_margin = o["grid_recrop_max_offset"] if o["grid_recrop_prob"] > 0 else 0
        self.min_size = self.H_size + (DOUBLE_MARGIN if o["double_jpeg_prob"] > 0 else 0) + self.recrop_margin
        # Decoded forms of each image: RGB, or Y (+ OpenCV gray when gray_cv2_prob > 0).
        if self.n_channels == 3:
            self.variants = ("rgb",)
        else:
            self.variants = ("y", "cv2gray") if o["gray_cv2_prob"] > 0 else ("y",)
        self.paths = self._list_images()
        self.paths, self.shapes, self.cache = self._scan(self.paths)
        self.length = o["samples_per_epoch"] or len(self.paths)

    # ------------------------------------------------------------------ options and files
    def _fail(self, key: str, message: str) -> NoReturn:
        raise OptionError(f"option '{self.where}{key}' {message}")

    def _check_options(self) -> None:
        o = self.opt
        roots = o["dataroot_H"]
        if isinstance(roots, (str, os.PathLike)):
            roots = [roots]
        if (
            not roots
            or not isinstance(roots, list)
            or not all(isinstance(r, (str, os.PathLike)) and str(r) for r in roots)
        ):
            self._fail("dataroot_H", f"must be a folder or a non-empty list of folders, got {roots!r}")
        o["dataroot_H"] = [str(r) for r in roots]
        if o["H_size"] < 8 or o["H_size"] % 8:
            self._fail("H_size", f"must be a positive multiple of 8 (FBCNN downsamples 3 times), got {o['H_size']}")
        if o["n_channels"] not in (1, 3):
            self._fail("n_channels", f"must be 1 (gray) or 3 (RGB), got {o['n_channels']}")
        if o["qf2_choice_prob"] is None:
            o["qf2_choice_prob"] = o["qf_choice_prob"]
        for key in ("double_jpeg_prob", "qf_choice_prob", "qf2_choice_prob", "gray_cv2_prob", "grid_recrop_prob"):
            if not isinstance(o[key], (int, float)) or isinstance(o[key], bool) or not 0.0 <= o[key] <= 1.0:
                self._fail(key, f"must be a probability in [0, 1], got {o[key]}")
        if o["gray_cv2_prob"] > 0 and o["n_channels"] != 1:
            self._fail("gray_cv2_prob", "applies to gray data only (n_channels 1)")
        offset = o["grid_recrop_max_offset"]
        if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= 64:
            self._fail("grid_recrop_max_offset", f"must be an integer number of pixels in 0..64, got {offset!r}")
        choices = o["qf_choices"]
        if max(o["qf_choice_prob"], o["qf2_choice_prob"]) > 0 and (
            not choices or not all(isinstance(q, int) and not isinstance(q, bool) and 1 <= q <= 100 for q in choices)
        ):
            self._fail("qf_choices", f"must be a non-empty list of integer QFs in 1..100, got {choices}")
        lo_hi = o["qf_uniform_range"]
        if min(o["qf_choice_prob"], o["qf2_choice_prob"]) < 1 and not (
            len(lo_hi) == 2 and all(isinstance(q, int) for q in lo_hi) and 1 <= lo_hi[0] <= lo_hi[1] <= 100
        ):
            self._fail("qf_uniform_range", f"must be [low, high] integers with 1 <= low <= high <= 100, got {lo_hi}")
        if o["cache"] not in CACHE_MODES:
            self._fail("cache", f"must be one of {CACHE_MODES}, got {o['cache']!r}")
        if o["samples_per_epoch"] < 0:
            self._fail("samples_per_epoch", f"must be >= 0 (0 = one patch per image), got {o['samples_per_epoch']}")
        if o["seed"] is None:
            o["seed"] = 0
        if not isinstance(o["seed"], int) or o["seed"] < 0:
            self._fail("seed", f"must be >= 0, got {o['seed']}")

    def _list_images(self) -> list[Path]:
        paths: list[Path] = []
        for root in self.opt["dataroot_H"]:
            if not Path(root).is_dir():
                self._fail("dataroot_H", f"names a folder that does not exist: {root}")
            found = list_images(root)
            if not found:
                self._fail("dataroot_H", f"names a folder without images: {root}")
            paths += found
        return paths

    def _scan(self, paths: list[Path]) -> tuple[list[Path], list[tuple[int, int]], dict[str, list[np.ndarray]]]:
        """Decode every image once: find unreadable and too-small files, keep arrays when caching."""
        keep = self.opt["cache"] == "memory"
        variants = self.variants if keep else self.variants[:1]

        def load(path: Path) -> tuple[tuple[int, int], list[np.ndarray]] | str:
            try:
                arrays = [_read(path, v) for v in variants]
            except OSError as exc:  # ImageReadError names the file; other OS errors may not
                return str(exc) if str(path) in str(exc) else f"{path}: {exc}"
            return arrays[0].shape[:2], arrays if keep else []

        good, shapes, cache, problems = [], [], {v: [] for v in self.variants}, []
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            results = pool.map(load, paths)
            desc = "decoding images" if keep else "checking images"
            for path, result in tqdm(zip(paths, results, strict=True), total=len(paths), desc=desc, leave=False):
                if isinstance(result, str):
                    problems.append(result)
                    continue
                (h, w), arrays = result
                if min(h, w) < self.min_size:
                    problems.append(f"{path}: {w}x{h} is smaller than the {self.min_size}x{self.min_size} crop")
                    continue
                good.append(path)
                shapes.append((h, w))
                if keep:
                    for v, a in zip(variants, arrays, strict=True):
                        cache[v].append(a)
        if problems:
            listing = "\n  ".join(problems)
            if not self.opt["skip_bad_images"]:
                raise DatasetError(
                    f"{self.where}dataroot_H: {len(problems)} unusable image(s) "
                    f"(set {self.where}skip_bad_images to skip them):\n  {listing}"
                )
            warnings.warn(
                f"{self.where}dataroot_H: skipping {len(problems)} unusable image(s):\n  {listing}", stacklevel=3
            )
        if not good:
            raise DatasetError(f"{self.where}dataroot_H: no usable images in {self.opt['dataroot_H']}")
        return good, shapes, cache if keep else {}

    # ------------------------------------------------------------------ sampling
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose samples ``__getitem__`` returns (call before each epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def cache_bytes(self) -> int:
        """Memory held by the decoded-image cache (0 for ``cache: none``)."""
        return sum(a.nbytes for arrays in self.cache.values() for a in arrays)

    def __repr__(self) -> str:
        o = self.opt
        return (
            f"DatasetJPEG('{o['name']}': {len(self.paths)} images from {len(o['dataroot_H'])} folder(s), "
            f"{len(self)} patches/epoch of {self.H_size}x{self.H_size}x{self.n_channels}, "
            f"double JPEG {o['double_jpeg_prob']:g}, patch seed {o['seed']}, cache {o['cache']} ({self.cache_bytes() / 2**20:.0f} MB))"
        )

    def draw(self, index: int, epoch: int | None = None) -> dict[str, Any]:
        """The random choices of sample ``index`` of ``epoch`` (default: the current one); a pure function of
        seed, epoch and index."""
        if not 0 <= index < self.length:
            raise IndexError(f"sample index {index} out of range for {self.length} samples")
        o = self.opt
        epoch = self.epoch if epoch is None else int(epoch)
        rng = np.random.default_rng([o["seed"], epoch, index])
        image = (index + epoch * self.length) % len(self.paths)
        double = bool(rng.random() < o["double_jpeg_prob"])
        gray_cv2 = bool(rng.random() < o["gray_cv2_prob"])
        qfs = [
            draw_qf(rng, o["qf_choices"], o[key], o["qf_uniform_range"])
            for key in ("qf_choice_prob", "qf2_choice_prob")
        ]
        shift = (int(rng.integers(8)), int(rng.integers(8))) if double else (0, 0)
        size = self.H_size + (DOUBLE_MARGIN if double else 0) + self.recrop_margin
        h, w = self.shapes[image]
        crop = (int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1)))
        aug = int(rng.integers(8))
        recrop = (0, 0)
        if self.recrop_margin and rng.random() < o["grid_recrop_prob"]:
            recrop = (int(rng.integers(self.recrop_margin + 1)), int(rng.integers(self.recrop_margin + 1)))
        return {
            "image": image,
            "double": double,
            "gray_cv2": gray_cv2,
            "qf1": qfs[0],
            "qf2": qfs[1] if double else -1,
            "shift": shift,
            "crop": crop,
            "size": size,
            "aug": aug,
            "recrop": recrop,
            "grid_phase": (-recrop[0] % 8, -recrop[1] % 8),
        }

    def source_patch(self, params: dict[str, Any]) -> np.ndarray:
        """The clean uint8 patch (cropped and augmented, before any JPEG) for ``draw(index)``'s choices."""
        variant = self.variants[-1] if params["gray_cv2"] else self.variants[0]
        k = params["image"]
        img = self.cache[variant][k] if self.cache else _read(self.paths[k], variant)
        top, left = params["crop"]
        size = params["size"]
        return augment(img[top : top + size, left : left + size], params["aug"])

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        """Sample ``index`` of the current epoch, or ``(epoch, index)`` (what the trainer's sampler yields)."""
        epoch, index = (None, index) if isinstance(index, (int, np.integer)) else index
        p = self.draw(int(index), epoch)
        patch = self.source_patch(p)
        s = self.H_size
        if p["double"]:
            img_l, img_h = double_jpeg(patch, p["qf1"], p["qf2"], p["shift"])
            label = math.nan
        else:
            img_l, img_h = jpeg(patch, p["qf1"]), patch
            label = qf_to_label(p["qf1"])
        dy, dx = p["recrop"]
        img_l, img_h = img_l[dy : dy + s, dx : dx + s], img_h[dy : dy + s, dx : dx + s]
        return {
            "L": uint2tensor4(img_l)[0],
            "H": uint2tensor4(img_h)[0],
            "qf_label": torch.tensor([label], dtype=torch.float32),
            "qf1": torch.tensor(p["qf1"]),
            "qf2": torch.tensor(p["qf2"]),
            "shift": torch.tensor(p["shift"]),
            "crop": torch.tensor(p["crop"]),
            "aug": torch.tensor(p["aug"]),
            "recrop": torch.tensor(p["recrop"]),
            "grid_phase": torch.tensor(p["grid_phase"]),
            "gray_cv2": torch.tensor(int(p["gray_cv2"])),
            "path": str(self.paths[p["image"]]),
        }
