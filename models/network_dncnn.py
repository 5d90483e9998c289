"""DnCNN (Zhang, Zuo, Chen, Meng, Zhang, "Beyond a Gaussian Denoiser", IEEE TIP 2017) as a baseline.

DnCNN-3 is the single blind model of that paper for Gaussian denoising, super-resolution and
JPEG deblocking; it works on the Y channel. The module layout reproduces KAIR's ``DnCNN``, so
KAIR's released ``dncnn3.pth`` (in_nc=1, nc=64, nb=20, act_mode 'R': batch norm merged into
the convolutions) and KAIR-trained checkpoints with batch norm (act_mode 'BR') load with
``strict=True`` through ``models.load_model``.

State_dict layout: one ``nn.Sequential`` called ``model``, flat:

* act_mode 'R' / 'L': conv, act, conv, act, ..., conv -> conv weights at ``model.0``,
  ``model.2``, ..., ``model.{2 (nb - 1)}`` (``model.38`` for nb = 20);
* act_mode 'BR' / 'BL': conv, act, [conv, BN, act] x (nb - 2), conv -> convs at ``model.0``,
  ``model.2``, ``model.5``, ..., ``model.{3 nb - 4}``, batch norms at ``model.3``, ``model.6``, ...
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["DnCNN", "dncnn_kwargs_from_state_dict"]

ACT_MODES = ("R", "L", "BR", "BL")


def _activation(kind: str) -> nn.Module:
    return nn.ReLU(inplace=True) if kind == "R" else nn.LeakyReLU(0.2, inplace=True)


class DnCNN(nn.Module):
    """DnCNN with residual output: ``restored = x - model(x)``.

    Args:
        in_nc / out_nc: image channels (1 for Y / gray, as DnCNN-3; 3 for RGB). Must be equal.
        nc: feature channels (64 in the paper).
        nb: total number of conv layers (20 for DnCNN-3, 17 for the single-noise-level models).
        act_mode: 'R' ReLU (released, batch norm merged), 'BR' batch norm + ReLU (training form),
            'L' / 'BL' the same with LeakyReLU(0.2). Batch norm uses KAIR's eps = 1e-4.

    ``forward(x, qf_input=None)`` takes ``x`` in [0, 1], ``[B, in_nc, H, W]`` of any size and
    returns ``(restored, None)``: DnCNN is blind and predicts no QF; ``qf_input`` is ignored.
    """

    def __init__(self, in_nc: int = 1, out_nc: int = 1, nc: int = 64, nb: int = 20, act_mode: str = "R") -> None:
        super().__init__()
        if act_mode not in ACT_MODES:
            raise ValueError(f"act_mode must be one of {ACT_MODES}, got {act_mode!r}")
        if in_nc != out_nc:
            raise ValueError(
                f"DnCNN subtracts its output from its input, so in_nc must equal out_nc ({in_nc} != {out_nc})"
            )
        if nb < 2:
            raise ValueError(f"nb counts all conv layers and must be >= 2, got {nb}")
        self.in_nc, self.out_nc, self.nc, self.nb, self.act_mode = in_nc, out_nc, nc, nb, act_mode
        act, use_bn = act_mode[-1], act_mode.startswith("B")

        layers: list[nn.Module] = [nn.Conv2d(in_nc, nc, 3, padding=1), _activation(act)]
        for _ in range(nb - 2):
            layers.append(nn.Conv2d(nc, nc, 3, padding=1))
            if use_bn:
                layers.append(nn.BatchNorm2d(nc, eps=1e-4, momentum=0.9))  # KAIR's settings
            layers.append(_activation(act))
        layers.append(nn.Conv2d(nc, out_nc, 3, padding=1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, qf_input: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        return x - self.model(x), None


_CONV_KEY = re.compile(r"model\.(\d+)\.weight")


def dncnn_kwargs_from_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """DnCNN constructor arguments (in_nc, out_nc, nc, nb, act_mode) read from a KAIR-layout state_dict.

    Batch norm ('BR') is recognised by ``running_mean`` entries; the activation cannot be read
    from weights and is taken to be ReLU. Raises ValueError when the keys are not exactly a
    DnCNN's (for example another KAIR network that also keeps its layers in ``model``).
    """
    conv_idx = sorted(int(m.group(1)) for k, v in state.items() if (m := _CONV_KEY.fullmatch(k)) and v.dim() == 4)
    if len(conv_idx) < 2:
        raise ValueError(f"a DnCNN state_dict needs at least 2 conv weights 'model.N.weight', found {len(conv_idx)}")
    head, tail = state[f"model.{conv_idx[0]}.weight"], state[f"model.{conv_idx[-1]}.weight"]
    kwargs = {
        "in_nc": head.shape[1],
        "out_nc": tail.shape[0],
        "nc": head.shape[0],
        "nb": len(conv_idx),
        "act_mode": "BR" if any(k.endswith(".running_mean") for k in state) else "R",
    }
    if kwargs["in_nc"] != kwargs["out_nc"]:
        raise ValueError(
            f"model.N keys look like a KAIR Sequential network, but input channels ({kwargs['in_nc']}) != output "
            f"channels ({kwargs['out_nc']}): not a DnCNN (FDnCNN / FFDNet / SRMD have this layout too)"
        )
    with torch.device("meta"):  # key names only, no memory
        expected = set(DnCNN(**kwargs).state_dict())
    found = set(state)
    # Files saved before PyTorch 0.4.1 have no BN counters; load_state_dict fills them in.
    expected -= {k for k in expected if k.endswith(".num_batches_tracked") and k not in found}
    if found != expected:
        missing, unexpected = sorted(expected - found)[:4], sorted(found - expected)[:4]
        raise ValueError(
            f"model.N keys do not follow DnCNN's layout for {kwargs}: missing {missing}, unexpected {unexpected}"
        )
    return kwargs
