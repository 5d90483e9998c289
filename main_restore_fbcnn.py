"""Restore JPEG-compressed images with FBCNN: files, folders or globs in, restored images out.

Examples::

    python main_restore_fbcnn.py photo.jpg                       # blind, colour model -> restored/photo.png
    python main_restore_fbcnn.py scans/ --gray -o scans_restored  # the grayscale model on a folder
    python main_restore_fbcnn.py 'shots/*.jpg' --qf 30            # flexible control: restore as for QF 30
    python main_restore_fbcnn.py big.jpg -o big_restored.png --tile 512 --model fbcnn_color.pth

Images are read with Pillow: EXIF orientation is applied, alpha is carried through untouched,
CMYK and palette images are converted to 8-bit RGB/gray with a warning. 16-bit PNG/TIFF images
(gray or colour, read with OpenCV, which keeps all 16 bits) are restored in float and written as
16-bit PNG/TIFF: nothing is rounded to 8 bits on the way. A gray model on
a colour image restores its Y channel (MATLAB YCbCr) and keeps Cb/Cr; a colour model on a gray
image restores the replicated RGB image and returns gray. Every output is written atomically.
Exit status: 0 when all files were restored, 1 when any failed, 2 for a usage or model error.
"""

from __future__ import annotations

import argparse
import functools
import glob
import io
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from models import ZOO_MODELS, CheckpointError, load_model
from utils.backends import BACKENDS, backend_for_model, runner
from utils.grid_align import estimate_grid_phase, restore_grid_aligned
from utils.tiling import DEFAULT_OVERLAP, DEFAULT_TILE, half_dtype, restore_tiled
from utils.utils_eval import model_channels, pick_device
from utils.utils_image import IMG_EXTENSIONS, ImageReadError, list_images, read_jpeg_luma, rgb2ycbcr, ycbcr2rgb
from utils.utils_io import atomic_write

log = logging.getLogger("fbcnn-restore")

# --format name -> (Pillow format, file suffix)
FORMATS = {"png": ("PNG", ".png"), "jpg": ("JPEG", ".jpg"), "webp": ("WEBP", ".webp"), "tif": ("TIFF", ".tif")}
SUFFIX_FORMATS = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".webp": "webp", ".tif": "tif", ".tiff": "tif"}


# --------------------------------------------------------------------------------------
# Reading and writing
# --------------------------------------------------------------------------------------
@dataclass
class LoadedImage:
    """An image as read: ``H x W x C`` pixels (C = 1 gray or 3 RGB) and what came with them.

    ``pixels`` are uint8 in [0, 255], or uint16 in [0, 65535] for 16-bit PNG/TIFF files.
    """

    pixels: np.ndarray
    alpha: np.ndarray | None = None  # H x W, the dtype of ``pixels``, carried through untouched
    icc_profile: bytes | None = None  # kept for the output when the pixels were not colour-converted
    notes: list[str] = field(default_factory=list)  # conversions made, logged as warnings
    source: Path | None = None  # the file read (its JPEG Y plane is decoded only when asked for)
    _analysis: np.ndarray | None = field(default=None, init=False, repr=False)

    def analysis_pixels(self) -> np.ndarray:
        """What FBCNN-D and the grid-phase search read: a JPEG file's own Y plane (``read_jpeg_luma``, upright),
        else the uint8 pixels. Decoded on the first call only."""
        if self._analysis is None:
            luma = read_jpeg_luma(self.source, upright=True) if self.source is not None else None
            ok = luma is not None and luma.shape[:2] == self.pixels.shape[:2]
            self._analysis = luma if ok else to_uint8(self.pixels)
        return self._analysis


# EXIF orientation (tag 274) -> how to make the pixels upright: (transpose first, then rotate k x 90 deg clockwise)
_ORIENTATIONS = {2: (False, 0, True), 3: (False, 2, False), 4: (False, 2, True), 5: (True, 0, False),
                 6: (False, 1, False), 7: (True, 2, False), 8: (False, 3, False)}  # fmt: skip


def _upright(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to ``H x W (x C)`` pixels, as ``ImageOps.exif_transpose`` does."""
    if orientation not in _ORIENTATIONS:
        return arr
    transpose, quarter_turns, mirror = _ORIENTATIONS[orientation]
    if transpose:
        arr = arr.swapaxes(0, 1)
    arr = np.rot90(arr, -quarter_turns)  # clockwise
    if mirror:
        arr = arr[:, ::-1]
    return np.ascontiguousarray(arr)


def _read_16bit(path: Path, orientation: int) -> tuple[np.ndarray, np.ndarray | None]:
    """A 16-bit PNG/TIFF through OpenCV (Pillow keeps only 8 bits of 16-bit colour): uint16 gray/RGB + alpha."""
    arr = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16:
        raise ImageReadError(f"{path}: not a readable 16-bit image")
    arr = _upright(arr if arr.ndim == 3 else arr[:, :, None], orientation)
    channels = arr.shape[2]
    if channels in (3, 4):
        arr = np.concatenate([arr[:, :, 2::-1], arr[:, :, 3:]], axis=2)  # BGR(A) -> RGB(A)
    elif channels not in (1, 2):
        raise ImageReadError(f"{path}: 16-bit image with {channels} channels is not supported")
    alpha = arr[:, :, -1].copy() if channels in (2, 4) else None
    pixels = np.ascontiguousarray(arr[:, :, :-1] if alpha is not None else arr)
    return pixels, alpha


def read_image(path: str | Path) -> LoadedImage:
    """Read an image with Pillow, upright (EXIF orientation), as gray or RGB plus optional alpha.

    8-bit images (and palette, CMYK, ... converted) give uint8 pixels; 16-bit PNG/TIFF give uint16 pixels.

    Raises ``ImageReadError`` naming the file for unreadable, truncated or unsupported images.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            sixteen_bit = im.mode.startswith("I;16") or any(";16" in str(tile.args) for tile in im.tile)
            im.load()  # decode now, so truncated files fail here
            orientation = int(im.getexif().get(274, 1) or 1)
            im = ImageOps.exif_transpose(im)
    except FileNotFoundError as exc:
        raise ImageReadError(f"{path}: file does not exist") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageReadError(f"{path}: not a readable image ({exc})") from exc

    notes, icc = [], im.info.get("icc_profile")
    if sixteen_bit and im.mode not in ("I", "I;16", "I;16B", "I;16L", "I;16N", "L", "LA", "RGB", "RGBA"):
        raise ImageReadError(f"{path}: 16-bit {im.mode} images are not supported")
    if sixteen_bit:
        pixels, alpha = _read_16bit(path, orientation)
        return LoadedImage(pixels, alpha, icc, notes)
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        raise ImageReadError(f"{path}: 32-bit integer images are not supported")
    elif im.mode == "F":
        raise ImageReadError(f"{path}: floating-point images are not supported")
    elif im.mode in ("P", "PA"):
        has_alpha = im.mode == "PA" or "transparency" in im.info
        im = im.convert("RGBA" if has_alpha else "RGB")
        notes.append("palette image converted to RGB")
    elif im.mode == "CMYK":
        im, icc = im.convert("RGB"), None
        notes.append("CMYK image converted to RGB (without colour management)")
    elif im.mode == "1":
        im = im.convert("L")
    elif im.mode in ("La", "RGBa"):
        im = im.convert(im.mode.upper())
    elif im.mode not in ("L", "LA", "RGB", "RGBA"):  # YCbCr, LAB, HSV, ...
        notes.append(f"{im.mode} image converted to RGB")
        im, icc = im.convert("RGB"), None

    arr = np.asarray(im)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    alpha = arr[:, :, -1].copy() if im.mode in ("LA", "RGBA") else None
    pixels = np.ascontiguousarray(arr[:, :, :-1] if alpha is not None else arr)
    return LoadedImage(pixels, alpha, icc, notes, path)


def write_image(
    path: str | Path,
    pixels: np.ndarray,
    alpha: np.ndarray | None = None,
    fmt: str = "png",
    quality: int = 95,
    icc_profile: bytes | None = None,
) -> list[str]:
    """Write ``H x W x C`` pixels (+ alpha) atomically in ``fmt`` (a ``FORMATS`` key); returns warnings.

    uint8 pixels are written by Pillow; uint16 ones as 16-bit PNG/TIFF by OpenCV (without the ICC
    profile, which it cannot store), or rounded to 8 bits, with a warning, for JPEG/WebP.
    """
    notes = []
    if pixels.dtype == np.uint16 and fmt in ("png", "tif"):
        return notes + _write_16bit(path, pixels, alpha, fmt, icc_profile)
    if pixels.dtype == np.uint16:
        notes.append(f"16-bit result rounded to 8 bits: {fmt} stores 8 bits (use png or tif)")
        pixels = to_uint8(pixels)
        alpha = None if alpha is None else to_uint8(alpha)
    if alpha is not None and fmt == "jpg":
        alpha = None
        notes.append("alpha channel dropped: JPEG cannot store it")
    if fmt == "webp" and pixels.shape[2] == 1:  # WebP stores colour only
        pixels = np.repeat(pixels, 3, axis=2)
    planes = pixels if alpha is None else np.concatenate([pixels, alpha[:, :, None]], axis=2)
    im = Image.fromarray(planes[:, :, 0] if planes.shape[2] == 1 else planes)
    params: dict = {"icc_profile": icc_profile} if icc_profile else {}
    if fmt in ("jpg", "webp"):
        params["quality"] = quality
    pil_format = FORMATS[fmt][0]

    buffer = io.BytesIO()  # encode fully first: a failed encode leaves no partial file
    im.save(buffer, format=pil_format, **params)
    atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))
    return notes


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """uint16 in [0, 65535] -> uint8 in [0, 255] (x / 257, rounded); uint8 is returned as it is."""
    if pixels.dtype == np.uint8:
        return pixels
    return np.round(pixels.astype(np.float32) / np.float32(257.0)).astype(np.uint8)


def _write_16bit(
    path: str | Path, pixels: np.ndarray, alpha: np.ndarray | None, fmt: str, icc: bytes | None
) -> list[str]:
    """uint16 gray/RGB (+ alpha) -> a 16-bit PNG or TIFF, atomically."""
    planes = pixels if alpha is None else np.concatenate([pixels, alpha[:, :, None].astype(np.uint16)], axis=2)
    if planes.shape[2] in (3, 4):
        planes = np.concatenate([planes[:, :, 2::-1], planes[:, :, 3:]], axis=2)  # RGB(A) -> BGR(A)
    elif planes.shape[2] == 2:  # gray + alpha: OpenCV writes no LA, store it as BGRA
        planes = np.concatenate([np.repeat(planes[:, :, :1], 3, axis=2), planes[:, :, 1:]], axis=2)
    ok, encoded = cv2.imencode(FORMATS[fmt][1], np.ascontiguousarray(planes))
    if not ok:
        raise OSError(f"{path}: could not encode a 16-bit {fmt}")
    atomic_write(path, lambda tmp: tmp.write_bytes(encoded.tobytes()))
    return ["ICC profile not kept (16-bit output)"] if icc else []


# --------------------------------------------------------------------------------------
# Inputs, outputs and the model
# --------------------------------------------------------------------------------------
def collect_inputs(inputs: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Expand files, folders (their images, not recursive) and glob patterns; returns (files, errors)."""
    files, errors = [], []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = list_images(path)
            if not found:
                errors.append(f"{path}: folder contains no images ({', '.join(IMG_EXTENSIONS)})")
            files += found
        elif path.exists():
            files.append(path)
        elif glob.has_magic(item):
            found = sorted(Path(p) for p in glob.glob(item) if Path(p).suffix.lower() in IMG_EXTENSIONS)
            if not found:
                errors.append(f"{item}: pattern matches no images")
            files += found
        else:
            errors.append(f"{path}: file does not exist")
    unique = list(dict.fromkeys(files))  # a file named twice is restored once
    return unique, errors


def output_paths(files: Sequence[Path], output: str, fmt: str | None) -> tuple[list[Path], str]:
    """Where each input goes, and the output format.

    ``output`` is a directory (outputs named ``<input stem>.<format>``) or, for a single input,
    a file whose suffix gives the format.
    """
    out = Path(output)
    suffix_fmt = SUFFIX_FORMATS.get(out.suffix.lower())
    if suffix_fmt and not out.is_dir():
        if len(files) != 1:
            raise ValueError(f"--output {out} is a file name, but {len(files)} inputs were given: pass a directory")
        if fmt and fmt != suffix_fmt:
            raise ValueError(f"--format {fmt} conflicts with the suffix of --output {out}")
        return [out], suffix_fmt
    fmt = fmt or "png"
    return [out / (f.stem + FORMATS[fmt][1]) for f in files], fmt


def resolve_model_path(model: str | None, gray: bool) -> Path:
    """``--model`` as given, or the model-zoo default for colour (or gray with ``--gray``)."""
    if model:
        return Path(model)
    path = ZOO_MODELS[1 if gray else 3]
    if not path.is_file():
        raise CheckpointError(
            f"the default {'gray' if gray else 'colour'} model {path} is not there yet (model_zoo/README.md); "
            "pass a checkpoint with --model PATH, e.g. the official fbcnn_color.pth or fbcnn_gray.pth"
        )
    return path


# --------------------------------------------------------------------------------------
# Restoring one image
# --------------------------------------------------------------------------------------
def to_model_channels(pixels: np.ndarray, channels: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The image the network sees (C = ``channels``) and, for colour input to a gray model, its YCbCr.

    uint8 pixels give uint8 YCbCr (MATLAB's, rounded); uint16 pixels give float64 YCbCr in [0, 1] (kept
    unrounded: the chroma stays at full precision) and the Y the network sees as uint16.
    """
    if pixels.shape[2] == channels:
        return pixels, None
    if channels == 3:  # gray image, colour model
        return np.repeat(pixels, 3, axis=2), None
    if pixels.dtype == np.uint16:  # colour image, gray model: restore Y, keep Cb/Cr, all in float
        ycbcr = rgb2ycbcr(pixels.astype(np.float64) / 65535.0, only_y=False)
        y = np.clip(np.round(ycbcr[:, :, :1] * 65535.0), 0, 65535).astype(np.uint16)
        return np.ascontiguousarray(y), ycbcr
    ycbcr = rgb2ycbcr(pixels, only_y=False)  # colour image, gray model: restore Y, keep Cb/Cr
    return np.ascontiguousarray(ycbcr[:, :, :1]), ycbcr


def from_model_channels(restored: np.ndarray, in_channels: int, ycbcr: np.ndarray | None) -> np.ndarray:
    """Back to the input's channels: Y merged with the kept Cb/Cr, or RGB averaged back to gray (same dtype)."""
    top = 65535.0 if restored.dtype == np.uint16 else 255.0
    if ycbcr is not None:
        ycbcr = ycbcr.copy()
        if restored.dtype == np.uint16:
            ycbcr[:, :, 0] = restored[:, :, 0] / 65535.0
            return np.clip(np.round(ycbcr2rgb(ycbcr) * 65535.0), 0, 65535).astype(np.uint16)
        ycbcr[:, :, 0] = restored[:, :, 0]
        return ycbcr2rgb(ycbcr)
    if restored.shape[2] == 3 and in_channels == 1:
        mean = np.round(restored.astype(np.float32).mean(axis=2, keepdims=True))
        return np.clip(mean, 0, top).astype(restored.dtype)
    return restored


@functools.cache
def _dominant_qf_estimator() -> Callable | None:
    """``utils.dominant_qf.estimate_dominant_qf``, imported on first use; None (logged once) if missing."""
    try:
        from utils.dominant_qf import estimate_dominant_qf
    except ImportError as exc:
        log.warning("dominant-QF estimation is not available (%s); using blind mode", exc)
        return None
    return estimate_dominant_qf


def choose_qf(mode: str, qf: int | None, pixels: np.ndarray, name: str) -> tuple[float | None, str]:
    """The QF to restore for (None = blind) and how it was chosen, for the log. ``pixels``: uint8 or uint16."""
    if mode == "fixed":
        return float(qf), "set"
    if mode == "dominant" and (estimate := _dominant_qf_estimator()) is not None:
        found = estimate(to_uint8(pixels)).qf
        if found is not None:
            return float(found), "dominant"
        log.info("%s: no dominant QF found; using blind mode", name)
    return None, "predicted"


def restore_pixels(
    model: nn.Module,
    pixels: np.ndarray,
    qf: float | None,
    *,
    phase: tuple[int, int] | None = None,
    tile: int | None = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    half: bool = False,
    channels_last: bool = False,
    progress: bool = False,
) -> tuple[np.ndarray, float | None]:
    """Restore gray or RGB ``H x W x C`` pixels (uint8, or uint16 kept 16-bit) with any model, as the CLI does.

    The image is brought to the model's channels (``to_model_channels``), its JPEG grid put at the origin when
    ``phase`` is given (``utils.grid_align``), restored in tiles with one global QF (``utils.tiling``; ``qf`` is a
    JPEG quality 1..100, None = predicted) and brought back. Returns (restored pixels of the input's dtype and
    channels, the QF used or None).
    """
    x, ycbcr = to_model_channels(pixels, model_channels(model))

    def run(img: np.ndarray) -> tuple[np.ndarray, float | None]:
        return restore_tiled(
            model, img, qf, tile=tile, overlap=overlap, half=half, channels_last=channels_last, progress=progress
        )

    restored, qf_used = restore_grid_aligned(run, x, phase)
    return from_model_channels(restored, pixels.shape[2], ycbcr), qf_used


def restore_file(
    model: nn.Module, src: Path, dst: Path, args: argparse.Namespace, fmt: str, half: bool
) -> tuple[float | None, str]:
    """Read, restore and write one image; returns (QF used, how it was chosen). Raises on bad input."""
    img = read_image(src)
    for note in img.notes:
        log.warning("%s: %s", src, note)
    if img.pixels.dtype == np.uint16 and half and args.half is None:
        half = False  # bf16 keeps 8 significant bits, fp16 11: 16-bit images run in float32 unless --half is given
        log.info("%s: 16-bit image: restored in float32 (--half to force half precision)", src)
    qf, how = choose_qf(args.qf_mode, args.qf, img.analysis_pixels(), str(src))
    phase = estimate_grid_phase(img.analysis_pixels()).phase if args.grid_align else None
    if phase not in (None, (0, 0)):
        log.info("%s: JPEG grid at phase %s: padded to put it at the origin", src, phase)
    pixels, qf_used = restore_pixels(
        model,
        img.pixels,
        qf,
        phase=phase,
        tile=args.tile or None,
        overlap=args.tile_overlap,
        half=half,
        channels_last=args.channels_last,
        progress=True,
    )
    for note in write_image(dst, pixels, img.alpha, fmt, args.quality, img.icc_profile):
        log.warning("%s: %s", dst, note)
    return qf_used, how


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fbcnn-restore",
        description="Remove JPEG artifacts with FBCNN (blind, or at a QF you set). "
        "Restores image files, folders (not recursive) and glob patterns.",
        epilog="examples:\n"
        "  fbcnn-restore photo.jpg                    # blind, colour model -> restored/photo.png\n"
        "  fbcnn-restore scans/ --gray -o out/        # the grayscale model on a folder\n"
        "  fbcnn-restore 'shots/*.jpg' --qf 30        # flexible control: restore as for QF 30\n"
        "  fbcnn-restore big.jpg -o big.png --model fbcnn_color.pth --qf-mode dominant\n"
        "(fbcnn-restore = python main_restore_fbcnn.py)\n\n"
        "Exit status: 0 all restored, 1 some files failed, 2 usage or model error.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    parser.add_argument(
        "--model",
        help="checkpoint (.pth/.safetensors, any FBCNN incl. the official ones); "
        f"default: {ZOO_MODELS[3].name}, or {ZOO_MODELS[1].name} with --gray",
    )
    parser.add_argument("--gray", action="store_true", help="use the default grayscale model (restores Y)")
    parser.add_argument(
        "-o",
        "--output",
        default="restored",
        help="output folder, or a file name for a single input (default: %(default)s)",
    )
    parser.add_argument(
        "--format", choices=sorted(FORMATS), help="output format (default: png, or the --output suffix)"
    )
    parser.add_argument("--quality", type=int, default=95, help="quality for jpg/webp outputs (default: %(default)s)")
    parser.add_argument("--qf", type=int, help="JPEG quality 1..100 to restore for (flexible control; implies fixed)")
    parser.add_argument(
        "--qf-mode",
        choices=("blind", "fixed", "dominant"),
        help="blind: the network predicts the QF (default); fixed: use --qf; "
        "dominant: the QF of the dominant compression in double-compressed images (FBCNN-D)",
    )
    parser.add_argument(
        "--tile",
        type=int,
        default=DEFAULT_TILE,
        help="restore in tiles of this size (multiple of 8) with one global QF; 0 = whole image (default: %(default)s)",
    )
    parser.add_argument(
        "--tile-overlap", type=int, default=DEFAULT_OVERLAP, help="tile overlap in pixels (default: %(default)s)"
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda[:N] (default: auto)")
    parser.add_argument(
        "--half",
        "--bf16",
        dest="half",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="half-precision autocast: bfloat16 (with channels_last 2-2.7x faster on an AVX512-BF16 CPU, output "
        "within 2 levels of float32, mean 0.17), float16 on CUDA GPUs without native bf16 (V100, T4, RTX 20xx); "
        "default: on where the hardware computes it natively (--bf16/--no-bf16: older names)",
    )
    parser.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="channels_last memory format (default: on; faster with --half)",
    )
    parser.add_argument(
        "--grid-align",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="find the JPEG 8x8 grid (cropped JPEGs have it anywhere) and pad the image so that it starts at the "
        "origin, as in training (default: on; --no-grid-align restores the image as it is)",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=os.environ.get("FBCNN_BACKEND") or "auto",
        help="torch, onnxruntime (CPU, float32; the exported graph is cached per checkpoint in ~/.cache/fbcnn) or "
        "auto: torch with half precision where the CPU/GPU computes it natively (bf16; fp16 on CUDA GPUs without bf16), "
        "onnxruntime on other CPUs when installed "
        "(default: %(default)s; $FBCNN_BACKEND sets it)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the network (slow first image)")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Validate option combinations; fills in ``args.qf_mode``."""
    if args.qf is not None and not 1 <= args.qf <= 100:
        parser.error(f"--qf must be in 1..100, got {args.qf}")
    if args.qf_mode is None:
        args.qf_mode = "fixed" if args.qf is not None else "blind"
    if args.qf_mode == "fixed" and args.qf is None:
        parser.error("--qf-mode fixed needs --qf N")
    if args.qf_mode != "fixed" and args.qf is not None:
        parser.error(f"--qf sets the QF; it cannot be combined with --qf-mode {args.qf_mode}")
    if args.tile < 0 or args.tile % 8:
        parser.error(f"--tile must be 0 or a positive multiple of 8, got {args.tile}")
    if args.tile and not 0 <= args.tile_overlap < args.tile - 7:
        parser.error(f"--tile-overlap must be in [0, tile - 8], got {args.tile_overlap}")
    if not 1 <= args.quality <= 100:
        parser.error(f"--quality must be in 1..100, got {args.quality}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    log.setLevel(logging.INFO)  # our messages; other libraries stay at WARNING

    files, errors = collect_inputs(args.inputs)
    for error in errors:
        log.error(error)
    if not files:
        log.error("no images to restore")
        return 1
    try:
        destinations, fmt = output_paths(files, args.output, args.format)
        device = pick_device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: CUDA is not available")
        model_path = resolve_model_path(args.model, args.gray)
        model = load_model(model_path, device)
    except (ValueError, RuntimeError) as exc:  # CheckpointError is a ValueError
        log.error("%s", exc)
        return 2
    channels = model_channels(model)
    if args.gray and channels != 1:
        log.error("--gray asks for a gray model, but %s has %d input channels", model_path, channels)
        return 2
    try:
        backend = backend_for_model(model, model_path, args.backend, device, args.half)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    if backend.name == "onnxruntime" and (args.compile or args.half):
        log.warning("--compile and --half apply to the torch backend only; onnxruntime runs float32")
    try:
        model = runner(model, model_path, backend, channels_last=args.channels_last, compile=args.compile)
    except Exception as exc:  # an export or runtime failure: name it, do not crash
        hint = " (try --backend torch)" if backend.name == "onnxruntime" else ""
        log.error("%s backend failed for %s: %s%s", backend.name, model_path, exc, hint)
        return 2
    half = backend.half
    if backend.name == "onnxruntime":
        args.channels_last = False
    log.info(
        "model %s (%s, %s) on %s; backend %s (%s); half precision %s; %s",
        model_path,
        getattr(model, "net_type", "network"),
        "gray" if channels == 1 else "colour",
        device,
        backend.name,
        backend.reason,
        f"on, {str(half_dtype(device)).removeprefix('torch.')} (--no-half for float32)" if half else "off",
        f"tiles {args.tile} px, overlap {args.tile_overlap}" if args.tile else "no tiling",
    )

    failed = len(errors)
    written: dict[Path, Path] = {}
    with logging_redirect_tqdm():
        pairs = list(zip(files, destinations, strict=True))
        for src, dst in tqdm(pairs, desc="restoring", unit="img", disable=None):  # no bar when not a terminal
            try:
                if dst.resolve() == src.resolve():
                    raise ValueError(f"output {dst} would overwrite the input; choose another --output")
                if dst.resolve() in written:
                    raise ValueError(f"output {dst} was already written for {written[dst.resolve()]}")
                start = time.perf_counter()
                qf, how = restore_file(model, src, dst, args, fmt, half)
                written[dst.resolve()] = src
                qf_text = "n/a (the network predicts none)" if qf is None else f"{qf:.0f} ({how})"
                log.info("%s -> %s: QF %s, %.1f s", src, dst, qf_text, time.perf_counter() - start)
            except (ImageReadError, OSError, ValueError, RuntimeError) as exc:
                failed += 1
                message = str(exc) if str(src) in str(exc) else f"{src}: {exc}"
                if isinstance(exc, torch.OutOfMemoryError):
                    message += " (out of memory: try a smaller --tile)"
                log.error("%s", message)
    if failed:
        log.error("%d of %d inputs failed", failed, len(files) + len(errors))
    return 1 if failed else 0


def cli() -> None:
    """Console-script entry point (``fbcnn-restore``)."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
