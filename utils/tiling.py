"""Fast, memory-bounded inference: tiled restoration with ONE global QF.

Why not the usual tiling helper: FBCNN returns ``(restored, qf)``, and each tile would
predict its own QF from its own content, so neighbouring tiles could be restored at
different strengths. Here the image's QF is estimated once, as the mean prediction over 4
tiles of 256 x 256 spread over the image, and every tile is restored with that QF as
``qf_input``. Not from a downscaled view: resampling destroys the 8x8 blocking the QF depends
on (10 LIVE1 JPEGs, QF 10 -> 90: the blocking-effect factor falls 116 -> 2.3 on the whole
image and 134 -> 5.7 on the 4 tiles, but is flat, 6.9 -> 4.5, on a view downscaled to 256 px);
``benchmarks/inference.py --qf-check`` compares both with a trained model.

Tiles start on multiples of 8 (the JPEG grid and the network's /8 downsampling), overlap by
at least ``overlap`` pixels and are blended with separable ramps that ignore the outer quarter
of each overlap (edge pixels lack context). Measured against the untiled output with the same
QF on LIVE1 JPEGs (QF 10 and 30) with a partly trained small model: tile 512 / overlap 64 at
most 1 level apart, mean 0.0002 levels (overlap 32: max 1-2, mean 0.001; tile 128: max 4).
Network memory depends on the tile size only; the float accumulator is ``4 * C * H * W`` bytes.

Speed options (``benchmarks/inference.py``; full network, 512 x 512, vs a plain float32
forward): ``torch.inference_mode`` (always), channels_last (1.26x), skipping the QF predictor
when the QF is given (``FBCNN.forward(..., predict_qf=False)``, 1.1x) and ``torch.compile``
change the output by rounding only (max 1 level). Half-precision autocast (``half=True``) runs in
``half_dtype(device)``: bfloat16 where the hardware computes it natively (AVX512-BF16/AMX CPUs, CUDA
GPUs from Ampere on; 2.1-2.75x together with channels_last on such a CPU, at most 2 levels off, 0.17 on
average) and float16 on CUDA GPUs with tensor cores but no native bf16 (Volta, Turing: V100, T4,
RTX 20xx; the bundled colour model in float16 is at most 1 level off, 0.02 on average, and its
activations peak at about 42, far below float16's 65504).

Conventions: images are uint8 ``H x W x C`` in [0, 255] or uint16 in [0, 65535] (16-bit PNG/TIFF:
scaled to the same [0, 1] floats and never rounded to 8 bits on the way; the output has the input's
dtype); tensors float in [0, 1]; QFs at this module's interface are JPEG qualities (1..100),
converted to the network's (100 - QF) / 100 inside.
"""

from __future__ import annotations

import inspect
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from models.contract import label_to_qf, qf_to_label
from utils.utils_image import tensor2uint, uint2tensor4

_PIXEL_MAX = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}

GRID = 8  # tiles start on multiples of the JPEG block size / the network's total downsampling
DEFAULT_TILE = 512
DEFAULT_OVERLAP = 64
QF_TILE, QF_TILES = 256, 4  # the global QF is estimated from 4 tiles of 256 x 256 (costs one 512 x 512 tile)

__all__ = [
    "DEFAULT_OVERLAP",
    "DEFAULT_TILE",
    "GRID",
    "QF_TILE",
    "QF_TILES",
    "bf16_supported",
    "cpu_flags",
    "half_dtype",
    "half_supported",
    "estimate_qf",
    "forward",
    "prepare_model",
    "restore_tiled",
    "tile_starts",
]


# --------------------------------------------------------------------------------------
# Fast forward
# --------------------------------------------------------------------------------------
def cpu_flags() -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (x86 ``flags``, ARM ``Features``); empty where unknown."""
    try:
        return set(Path("/proc/cpuinfo").read_text().split())
    except OSError:  # not Linux
        return set()


def bf16_supported(device: torch.device | str) -> bool:
    """True when ``device`` computes bfloat16 natively, never when it would be emulated.

    CUDA: the device actually used (``cuda:N``, or the current one for ``cuda``) with native bf16
    (compute capability 8.0+, ``is_bf16_supported(including_emulation=False)``). CPU: AVX512-BF16, AMX-BF16 or
    ARM bf16 in the CPU flags (emulated bf16 is slower than float32; unknown CPUs count as without).
    """
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False
        index = device.index if device.index is not None else torch.cuda.current_device()
        with torch.cuda.device(index):
            try:
                return bool(torch.cuda.is_bf16_supported(including_emulation=False))
            except TypeError:  # torch < 2.3 has no including_emulation: decide by compute capability
                return torch.cuda.get_device_capability(index) >= (8, 0)
    if device.type == "cpu":
        capped = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper() not in _ONEDNN_BF16_ISAS
        return not capped and bool(cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})
    return False


def half_supported(device: torch.device | str) -> bool:
    """True when half-precision autocast makes ``device`` faster: native bf16 (``bf16_supported``), or a CUDA
    GPU with tensor cores (compute capability 7.0+), where float16 is native although bf16 may not be."""
    device = torch.device(device)
    if bf16_supported(device):
        return True
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.cuda.get_device_capability(index) >= (7, 0)
    return False


def half_dtype(device: torch.device | str) -> torch.dtype:
    """The autocast dtype of ``half=True`` on ``device``: float16 on CUDA GPUs without native bf16 (float16 keeps
    more mantissa than bf16 and FBCNN's activations stay far below its range), else bfloat16 (CPUs: float16
    autocast is not faster there)."""
    device = torch.device(device)
    if device.type == "cuda" and not bf16_supported(device):
        return torch.float16
    return torch.bfloat16


# ONEDNN_MAX_CPU_ISA values that keep oneDNN's native bf16 kernels (a lower cap, e.g. AVX2, emulates bf16)
_ONEDNN_BF16_ISAS = {
    "ALL", "DEFAULT", "", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16",
    "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2",
}  # fmt: skip


def prepare_model(model: nn.Module, channels_last: bool = False, compile: bool = False) -> nn.Module:
    """Eval mode, optional channels_last weights and ``torch.compile`` (slow first call, per input size)."""
    model = model.eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile:
        model = torch.compile(model, dynamic=True)
    return model


def _accepts_predict_qf(model: nn.Module) -> bool:
    module = getattr(model, "_orig_mod", model)  # a torch.compile wrapper
    return "predict_qf" in inspect.signature(module.forward).parameters


def forward(
    model: nn.Module,
    x: torch.Tensor,
    qf_input: torch.Tensor | None = None,
    *,
    half: bool = False,
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One network call under ``inference_mode``: ``x`` in [0, 1] ``[B, C, H, W]`` on the model's device.

    ``qf_input`` is (100 - QF) / 100, ``[B, 1]`` or ``[1, 1]``; when given, networks that can
    skip their QF predictor do. ``half``: autocast to ``half_dtype`` of ``x``'s device. Returns float32 ``(restored, qf)``, ``qf`` as the network gives it;
    they are inference tensors (clone them before in-place changes outside ``inference_mode``).
    """
    kwargs = {"predict_qf": False} if qf_input is not None and _accepts_predict_qf(model) else {}
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    dtype = half_dtype(x.device) if half else torch.bfloat16
    with torch.inference_mode(), torch.autocast(x.device.type, dtype=dtype, enabled=half):
        restored, qf = model(x, qf_input, **kwargs)
    return restored.float(), None if qf is None else qf.float()


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 or uint16 ``H x W x C`` -> float32 ``[1, C, H, W]`` in [0, 1] (16-bit: divided by 65535)."""
    if img.dtype == np.uint8:
        return uint2tensor4(img)
    if img.dtype not in _PIXEL_MAX:
        raise TypeError(f"expected a uint8 or uint16 image, got {img.dtype}")
    chw = np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32) / np.float32(65535.0)
    return torch.from_numpy(chw).unsqueeze(0)


def _from_tensor(tensor: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    """Float ``[1, C, H, W]`` in [0, 1] -> ``H x W x C`` of ``dtype`` (uint8 or uint16), clamped and rounded."""
    if np.dtype(dtype) == np.uint8:
        return tensor2uint(tensor)
    t = tensor.detach().float()[0].clamp(0, 1).mul(65535.0).round()
    return t.cpu().permute(1, 2, 0).numpy().astype(np.uint16)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters(), torch.empty(0)).device


# --------------------------------------------------------------------------------------
# Tiles
# --------------------------------------------------------------------------------------
def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile start positions along one axis: multiples of ``GRID``, evenly spread, overlapping >= ``overlap``.

    The fewest tiles that cover ``length``; the last one ends at ``length`` (it is shorter than
    ``tile`` when ``length`` is not a multiple of ``GRID``). ``tile`` must be a
    multiple of ``GRID`` larger than ``overlap``.
    """
    if tile % GRID or tile <= 0:
        raise ValueError(f"tile must be a positive multiple of {GRID}, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"tile overlap must be in [0, tile={tile}), got {overlap}")
    last = max(0, math.ceil((length - tile) / GRID) * GRID)  # first aligned start whose tile reaches the end
    step = max(GRID, (tile - overlap) // GRID * GRID)
    n = 1 + math.ceil(last / step)
    if n == 1:
        return [0]
    return [int(i * last / (n - 1)) // GRID * GRID for i in range(n)]  # evenly spread, gaps <= step


def _fade(dist: torch.Tensor, overlap: int) -> torch.Tensor:
    """Blending weight by distance from a tile edge: 0 in the outer quarter of the overlap, a ramp over its
    middle half, 1 beyond. Edge pixels, which lack context, are dropped (measured: max error 3 -> 1 level)."""
    return ((dist - overlap / 4) / (overlap / 2)).clamp(0, 1)


def _ramps(starts: list[int], tile: int, length: int, overlap: int) -> list[torch.Tensor]:
    """Per-tile 1-D blending weights along one axis, normalised so they sum to 1 at every position."""
    ramps, total = [], torch.zeros(length)
    for i, start in enumerate(starts):
        size = min(tile, length - start)
        pos = torch.arange(size, dtype=torch.float32) + 0.5
        weight = torch.ones(size)
        if overlap and i > 0:  # a neighbour before: fade in
            weight = torch.minimum(weight, _fade(pos, overlap))
        if overlap and i < len(starts) - 1:  # a neighbour after: fade out
            weight = torch.minimum(weight, _fade(size - pos, overlap))
        ramps.append(weight)
        total[start : start + size] += weight
    return [w / total[s : s + len(w)] for w, s in zip(ramps, starts, strict=True)]


def _spread_tiles(h: int, w: int, tile: int, n: int) -> list[tuple[int, int]]:
    """Up to ``n`` full-size tile positions (multiples of ``GRID``) spread evenly over an ``h x w`` image."""
    k = math.ceil(math.sqrt(n))

    def axis(length: int) -> list[int]:  # tiles centred in k equal parts of the axis
        centres = (np.arange(k) + 0.5) * length / k
        return sorted({int(np.clip(c - tile / 2, 0, max(length - tile, 0))) // GRID * GRID for c in centres})

    grid = [(y, x) for y in axis(h) for x in axis(w)]
    if len(grid) <= n:
        return grid
    return [grid[round(i)] for i in np.linspace(0, len(grid) - 1, n)]


# --------------------------------------------------------------------------------------
# Global QF and tiled restoration
# --------------------------------------------------------------------------------------
@torch.inference_mode()
def estimate_qf(
    model: nn.Module,
    img: np.ndarray,
    tile: int = QF_TILE,
    n_tiles: int = QF_TILES,
    *,
    half: bool = False,
    channels_last: bool = False,
) -> float | None:
    """The QF (1..100) predicted for a uint8 (or uint16) image as a whole: the mean label over ``n_tiles`` tiles.

    The tiles are ``tile x tile`` crops on the 8x8 grid spread evenly over the image (for 4:
    centred in the four quadrants); an image that fits in one tile is predicted whole. None for networks
    that predict no QF.
    """
    h, w = img.shape[:2]
    labels = []
    for y, x in _spread_tiles(h, w, tile, n_tiles):
        patch = _to_tensor(img[y : y + tile, x : x + tile]).to(_device(model))
        _, qf = forward(model, patch, half=half, channels_last=channels_last)
        if qf is None:
            return None
        labels.append(qf.mean().item())
    return label_to_qf(float(np.mean(labels)))


@torch.inference_mode()
def restore_tiled(
    model: nn.Module,
    img: np.ndarray,
    qf: float | None = None,
    *,
    tile: int | None = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    half: bool = False,
    channels_last: bool = False,
    progress: bool = False,
) -> tuple[np.ndarray, float | None]:
    """Restore a uint8 (or uint16) ``H x W x C`` image (C = the network's channels) tile by tile with one global QF.

    ``qf``: JPEG quality to restore for (flexible control), or None to predict it once for the
    whole image (``estimate_qf``). ``tile=None`` or an image that fits in one tile: a single
    forward pass. Returns the restored image (the input's dtype: uint16 stays 16-bit) and the QF used (predicted or given; None if
    the network predicts none).
    """
    h, w = img.shape[:2]
    device = _device(model)
    if tile is None or (h <= tile and w <= tile):
        x = _to_tensor(img).to(device)
        qf_input = None if qf is None else torch.tensor([[qf_to_label(qf)]], device=device)
        restored, qf_pred = forward(model, x, qf_input, half=half, channels_last=channels_last)
        used = qf if qf is not None else None if qf_pred is None else label_to_qf(qf_pred.mean().item())
        return _from_tensor(restored, img.dtype), used

    overlap = math.ceil(overlap / GRID) * GRID
    if qf is None:
        qf = estimate_qf(model, img, min(QF_TILE, tile), half=half, channels_last=channels_last)
    qf_input = None if qf is None else torch.tensor([[qf_to_label(qf)]], device=device)

    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    ramps_y, ramps_x = _ramps(ys, tile, h, overlap), _ramps(xs, tile, w, overlap)
    out: torch.Tensor | None = None
    # progress: a bar on a terminal only (disable=None), so that piped logs stay lines
    bar = tqdm(total=len(ys) * len(xs), desc="tiles", unit="tile", leave=False, disable=None if progress else True)
    for y, ramp_y in zip(ys, ramps_y, strict=True):
        for x, ramp_x in zip(xs, ramps_x, strict=True):
            patch = _to_tensor(img[y : y + tile, x : x + tile]).to(device)
            restored, _ = forward(model, patch, qf_input, half=half, channels_last=channels_last)
            restored = restored[0].cpu()
            if out is None:
                out = torch.zeros(restored.shape[0], h, w)
            th, tw = restored.shape[1:]
            out[:, y : y + th, x : x + tw] += restored * ramp_y[:, None] * ramp_x[None, :]
            bar.update()
    bar.close()
    return _from_tensor(out[None], img.dtype), qf
