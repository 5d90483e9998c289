"""Image I/O, colour conversion and the quality metrics of the paper's tables.

Conventions: images are numpy ``uint8`` arrays in [0, 255], shaped ``H x W x C`` with
C = 3 (RGB order) or C = 1 (gray / Y). Tensors are float in [0, 1], ``[B, C, H, W]``.

Metric protocol (it reproduces the JPEG columns of the paper's Tables 1 and 2):

* PSNR and SSIM are computed over all channels of what is compared: RGB for colour
  models, the Y channel for gray models. ``border`` pixels are cut from each side first.
* SSIM is the MATLAB reference (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, valid
  region only, C1 = (0.01*255)^2, C2 = (0.03*255)^2, averaged over channels.
* PSNR-B (Yim & Bovik 2011) = 10 log10(255^2 / (MSE + BEF)). MSE is over all channels;
  BEF, the blocking-effect factor, is measured on the *restored* image only, on its Y
  channel (MATLAB rgb2ycbcr, rounded) when it is colour. With 8x8 blocks, D_B and D_Bc are
  the mean squared differences of horizontally and vertically adjacent pixel pairs that
  straddle / do not straddle a block boundary; the pair counts use true division, as in
  tables: N_B = H*(W/8 - 1) + W*(H/8 - 1) and N_Bc = H*(W-1) + W*(H-1) - N_B. (The
  sewar package's ``H*(W/8) - 1`` variant scores LIVE1 Y at QF10 0.04 dB higher, 25.37.)
  BEF = eta * (D_B - D_Bc) with eta = log2(8)/log2(min(H, W)) when D_B > D_Bc, else 0.
* Y is MATLAB's rgb2ycbcr: Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255, rounded.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
import torch

from utils.utils_io import atomic_write

IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

# MATLAB rgb2ycbcr for RGB in [0, 255]: ycbcr = rgb @ _RGB2YCBCR / 255 + _YCBCR_OFFSET.
_RGB2YCBCR = np.array(
    [[65.481, -37.797, 112.0], [128.553, -74.203, -93.786], [24.966, 112.0, -18.214]], dtype=np.float64
)
_YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])


class ImageReadError(OSError):
    """An image file cannot be read; the message names the file."""


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------
def list_images(folder: str | os.PathLike) -> list[Path]:
    """Sorted image files (PNG, JPEG, BMP, TIFF, WebP) directly inside ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: image folder does not exist")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)


def imread_uint(path: str | os.PathLike, n_channels: int = 3) -> np.ndarray:
    """Read an image as uint8 ``H x W x n_channels``.

    ``n_channels=3``: RGB (gray files are replicated). ``n_channels=1``: gray files as they
    are, colour files converted to their Y channel (MATLAB rgb2ycbcr), as the paper's gray
    protocol does. 16-bit files are scaled to 8 bits; an alpha channel is dropped.
    """
    path = Path(path)
    data = np.fromfile(path, dtype=np.uint8) if path.is_file() else None
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data is not None and data.size else None
    if img is None:
        reason = (
            "file does not exist"
            if not path.is_file()
            else "not a readable image (corrupt, truncated or unsupported format)"
        )
        raise ImageReadError(f"{path}: {reason}")
    if img.dtype == np.uint16:
        img = np.round(img / 257.0).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageReadError(f"{path}: unsupported pixel type {img.dtype}; expected 8- or 16-bit integers")
    if img.ndim == 2:
        img = img[:, :, None]
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    elif img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if img.shape[2] == 1 and n_channels == 3:
        return np.repeat(img, 3, axis=2)
    if img.shape[2] == 3 and n_channels == 1:
        return rgb2ycbcr(img, only_y=True)[:, :, None]
    if n_channels not in (1, 3):
        raise ValueError(f"n_channels must be 1 or 3, got {n_channels}")
    return img


def read_jpeg_luma(path: str | os.PathLike | BinaryIO, *, upright: bool = False) -> np.ndarray | None:
    """The Y plane of a JPEG file (a path or a binary file object) as decoded, before any colour conversion:
    uint8 ``H x W x 1``.

    None when the file is not a gray or YCbCr JPEG (another format, CMYK, unreadable). FBCNN-D and the
    grid-phase search read this for JPEG files: decoded RGB is clipped to [0, 255] where colours are
    saturated, and the luma of clipped pixels is no longer the JPEG's, which blurs the recompression dips.
    ``upright``: apply the EXIF orientation, as the restore CLI's reader does (``imread_uint`` does not).
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            if im.format != "JPEG" or im.mode not in ("L", "RGB"):
                return None
            if im.mode == "RGB":
                im.draft("YCbCr", im.size)  # keep the decoder's YCbCr output
                if im.mode != "YCbCr":
                    return None
            im.load()
            if upright:
                im = ImageOps.exif_transpose(im)
            arr = np.asarray(im)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
    return np.ascontiguousarray(arr[:, :, :1] if arr.ndim == 3 else arr[:, :, None])


def imsave(img: np.ndarray, path: str | os.PathLike) -> None:
    """Write a uint8 ``H x W x C`` RGB/gray image atomically (format from the suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(path.suffix or ".png", img)
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode the image")
    atomic_write(path, lambda tmp: buf.tofile(tmp))


# --------------------------------------------------------------------------------------
# Conversions
# --------------------------------------------------------------------------------------
def rgb2ycbcr(img: np.ndarray, only_y: bool = True) -> np.ndarray:
    """MATLAB rgb2ycbcr. uint8 RGB ``H x W x 3`` in -> rounded uint8 out (Y: ``H x W``; else YCbCr).

    Float input is taken to be in [0, 1] and gives float output in [0, 1].
    """
    is_uint8 = img.dtype == np.uint8
    rgb = img.astype(np.float64) if is_uint8 else img.astype(np.float64) * 255.0
    if only_y:
        out = rgb @ _RGB2YCBCR[:, 0] / 255.0 + _YCBCR_OFFSET[0]
    else:
        out = rgb @ _RGB2YCBCR / 255.0 + _YCBCR_OFFSET
    if is_uint8:
        return np.clip(np.round(out), 0, 255).astype(np.uint8)
    return (out / 255.0).astype(img.dtype)


def ycbcr2rgb(img: np.ndarray) -> np.ndarray:
    """Inverse of ``rgb2ycbcr(only_y=False)``: uint8 YCbCr ``H x W x 3`` -> uint8 RGB.

    Float input is taken to be in [0, 1] (as ``rgb2ycbcr`` gives it) and gives float RGB in [0, 1], unclipped.
    """
    is_uint8 = img.dtype == np.uint8
    ycc = (img.astype(np.float64) if is_uint8 else img.astype(np.float64) * 255.0) - _YCBCR_OFFSET
    rgb = ycc @ np.linalg.inv(_RGB2YCBCR) * 255.0
    if is_uint8:
        return np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    return (rgb / 255.0).astype(img.dtype)


def uint2tensor4(img: np.ndarray) -> torch.Tensor:
    """uint8 ``H x W x C`` (or ``H x W``) -> float32 tensor ``[1, C, H, W]`` in [0, 1]."""
    if img.ndim == 2:
        img = img[:, :, None]
    # Scaling in numpy: cheap and free of torch's intra-op thread start-up on small patches.
    chw = np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)
    return torch.from_numpy(chw).unsqueeze(0)


def tensor2uint(tensor: torch.Tensor) -> np.ndarray:
    """Tensor ``[1, C, H, W]`` or ``[C, H, W]`` in [0, 1] -> uint8 ``H x W x C`` (clamped, rounded)."""
    t = tensor.detach().float()
    if t.ndim == 4:
        if t.shape[0] != 1:
            raise ValueError(f"tensor2uint takes one image, got a batch of {t.shape[0]}")
        t = t[0]
    return t.clamp(0, 1).mul(255.0).round().byte().cpu().permute(1, 2, 0).numpy()


# --------------------------------------------------------------------------------------
# Metrics (the paper's protocol; see the module docstring)
# --------------------------------------------------------------------------------------
def _as_float_pair(img1: np.ndarray, img2: np.ndarray, border: int) -> tuple[np.ndarray, np.ndarray]:
    if img1.shape != img2.shape:
        raise ValueError(f"images must have the same shape, got {img1.shape} and {img2.shape}")
    a = img1.astype(np.float64)
    b = img2.astype(np.float64)
    if a.ndim == 2:
        a, b = a[:, :, None], b[:, :, None]
    h, w = a.shape[:2]
    return a[border : h - border, border : w - border], b[border : h - border, border : w - border]


def calculate_psnr(img1: np.ndarray, img2: np.ndarray, border: int = 0) -> float:
    """PSNR in dB between two uint8 images, over all channels (inf when identical)."""
    a, b = _as_float_pair(img1, img2, border)
    mse = np.mean((a - b) ** 2)
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def _ssim_channel(a: np.ndarray, b: np.ndarray) -> float:
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    g = cv2.getGaussianKernel(11, 1.5)
    window = g @ g.T

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.filter2D(x, -1, window)[5:-5, 5:-5]  # valid region

    mu1, mu2 = blur(a), blur(b)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma1_sq = blur(a * a) - mu1_sq
    sigma2_sq = blur(b * b) - mu2_sq
    sigma12 = blur(a * b) - mu12
    ssim_map = ((2 * mu12 + c1) * (2 * sigma12 + c2)) / ((mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2))
    return float(ssim_map.mean())


def calculate_ssim(img1: np.ndarray, img2: np.ndarray, border: int = 0) -> float:
    """MATLAB-style SSIM between two uint8 images, averaged over channels."""
    a, b = _as_float_pair(img1, img2, border)
    if min(a.shape[:2]) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {a.shape[1]}x{a.shape[0]}")
    return float(np.mean([_ssim_channel(a[:, :, c], b[:, :, c]) for c in range(a.shape[2])]))


def blocking_effect_factor(img: np.ndarray, block: int = 8) -> float:
    """BEF of a single-channel image ``H x W`` (float or uint8), in squared 8-bit units."""
    x = img.astype(np.float64)
    h, w = x.shape
    dh = (x[:, :-1] - x[:, 1:]) ** 2  # horizontal neighbours, pair between columns j and j+1
    dv = (x[:-1, :] - x[1:, :]) ** 2
    on_h = (np.arange(w - 1) % block) == block - 1
    on_v = (np.arange(h - 1) % block) == block - 1
    n_boundary = h * (w / block - 1) + w * (h / block - 1)
    n_inner = (h * (w - 1) + w * (h - 1)) - n_boundary
    d_b = (dh[:, on_h].sum() + dv[on_v, :].sum()) / n_boundary
    d_bc = (dh[:, ~on_h].sum() + dv[~on_v, :].sum()) / n_inner
    if d_b <= d_bc:
        return 0.0
    return float(math.log2(block) / math.log2(min(h, w)) * (d_b - d_bc))


def calculate_psnrb(img_gt: np.ndarray, img_restored: np.ndarray, border: int = 0) -> float:
    """PSNR-B in dB: MSE over all channels plus the BEF of the restored image (its Y if colour)."""
    a, b = _as_float_pair(img_gt, img_restored, border)
    mse = np.mean((a - b) ** 2)
    restored = b.astype(np.uint8)
    luma = rgb2ycbcr(restored, only_y=True) if restored.shape[2] == 3 else restored[:, :, 0]
    denom = mse + blocking_effect_factor(luma)
    return math.inf if denom == 0 else 10.0 * math.log10(255.0**2 / denom)
