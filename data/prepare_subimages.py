"""Cut large training images into overlapping PNG sub-images (lossless), for ``cache: none`` training.

With ``cache: none`` every patch decodes its whole source file; cutting 2K images into
``size x size`` tiles first makes each decode several times cheaper. The tiles cover the whole
image (the last row/column of tiles is aligned to the border); images smaller than ``size`` are
copied whole. Output names: ``<stem>_s<row>_<col>.png`` (tile position in pixels).

    python -m data.prepare_subimages --input trainsets/DIV2K_HR --output trainsets/DIV2K_sub --size 480 --step 240
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from utils.utils_image import imread_uint, imsave, list_images


def tile_starts(length: int, size: int, step: int) -> list[int]:
    """Start offsets of tiles of ``size`` every ``step`` pixels; the last tile ends at ``length``."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, step))
    if starts[-1] + size < length:
        starts.append(length - size)
    return starts


def subimages(img: np.ndarray, size: int, step: int) -> list[tuple[int, int, np.ndarray]]:
    """``(top, left, tile)`` for every tile of a uint8 ``H x W x C`` image (tiles are views)."""
    h, w = img.shape[:2]
    return [
        (top, left, img[top : top + size, left : left + size])
        for top in tile_starts(h, size, step)
        for left in tile_starts(w, size, step)
    ]


def read_as_stored(path: Path) -> np.ndarray:
    """A file's pixels with its own channel count: gray files ``H x W x 1``, colour files RGB.

    (``imread_uint`` replicates gray files to RGB; a gray file is recognised because its 1-channel
    read is not the Y of its RGB read, which it would be for a colour file.)
    """
    rgb = imread_uint(path, 3)
    if np.array_equal(rgb[:, :, 0], rgb[:, :, 1]) and np.array_equal(rgb[:, :, 0], rgb[:, :, 2]):
        gray = imread_uint(path, 1)
        if np.array_equal(gray[:, :, 0], rgb[:, :, 0]):
            return gray
    return rgb


def prepare_subimages(
    inputs: Sequence[str | os.PathLike], output: str | os.PathLike, size: int = 480, step: int = 240
) -> tuple[int, list[str]]:
    """Write the sub-images of every image in ``inputs`` to ``output``; returns (tiles written, errors).

    Unreadable images are reported (one message each, naming the file) and the others still processed.
    Gray files stay gray, colour files stay RGB.
    """
    if size < 8 or step < 1:
        raise ValueError(f"size must be >= 8 and step >= 1, got size {size}, step {step}")
    paths = [p for folder in inputs for p in list_images(folder)]
    seen: dict[str, Path] = {}
    for p in paths:
        if p.stem in seen:
            raise ValueError(f"two input images share the name '{p.stem}': {seen[p.stem]} and {p}")
        seen[p.stem] = p
    output = Path(output)
    written, errors = 0, []
    for path in tqdm(paths, desc="sub-images"):
        try:
            img = read_as_stored(path)
        except OSError as exc:
            errors.append(str(exc))
            continue
        for top, left, tile in subimages(img, size, step):
            imsave(tile, output / f"{path.stem}_s{top:04d}_{left:04d}.png")
            written += 1
    return written, errors


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data.prepare_subimages",
        description="Cut training images into overlapping PNG sub-images (lossless) for faster cache-none loading.",
    )
    parser.add_argument("--input", nargs="+", required=True, help="folder(s) of training images")
    parser.add_argument("--output", required=True, help="folder for the sub-images (created)")
    parser.add_argument("--size", type=int, default=480, help="tile size in pixels (default 480)")
    parser.add_argument("--step", type=int, default=240, help="distance between tiles in pixels (default 240)")
    args = parser.parse_args(argv)
    try:
        written, errors = prepare_subimages(args.input, args.output, args.size, args.step)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    print(f"wrote {written} sub-images to {args.output}; {len(errors)} image(s) failed")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
