"""Restore-and-score primitives shared by the test script, training validation, CLI and benchmarks.

Every network is called through one contract (``models.contract``): ``forward(x, qf_input=None) ->
(restored, qf)`` with ``x`` in [0, 1] ``[B, C, H, W]`` and ``qf`` the predicted (100 - QF) / 100
``[B, 1]``, or ``None`` for methods that do not predict one; others are adapted by ``as_restorer``.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import nn

from models.contract import as_restorer, label_to_qf, qf_to_label
from utils.utils_image import calculate_psnr, calculate_psnrb, calculate_ssim, tensor2uint, uint2tensor4


def pick_device(device: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def model_device(model: nn.Module) -> torch.device:
    """Device of a network's parameters or buffers (CPU for parameter-free filters)."""
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def model_channels(model: nn.Module) -> int:
    """Image channels a network expects (1 gray/Y, 3 RGB)."""
    if hasattr(model, "in_nc"):
        return int(model.in_nc)
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return int(first.in_channels) if first is not None else 3


@torch.inference_mode()
def restore(model: nn.Module, img: np.ndarray, qf: float | None = None) -> tuple[np.ndarray, float | None]:
    """Restore one uint8 ``H x W x C`` image; ``qf`` is a JPEG quality to set (flexible control) or None (blind).

    Returns the restored uint8 image and the network's predicted QF (in 1..100 units) or None.
    """
    device = model_device(model)
    model = as_restorer(model)  # any network under the (restored, qf) contract
    x = uint2tensor4(img).to(device)
    qf_input = None if qf is None else torch.tensor([[qf_to_label(qf)]], device=device)
    restored, qf_pred = model(x, qf_input)
    predicted = None if qf_pred is None else float(label_to_qf(qf_pred.float().mean().item()))
    return tensor2uint(restored), predicted


def score(gt: np.ndarray, img: np.ndarray, border: int = 0) -> dict[str, float]:
    """PSNR / SSIM / PSNR-B of ``img`` against ``gt`` (both uint8, same shape), the paper's protocol."""
    return {
        "psnr": calculate_psnr(gt, img, border),
        "ssim": calculate_ssim(gt, img, border),
        "psnrb": calculate_psnrb(gt, img, border),
    }
