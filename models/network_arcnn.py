"""ARCNN (Dong, Deng, Loy, Tang, "Compression Artifacts Reduction by a Deep Convolutional Network", ICCV 2015).

The baseline of the FBCNN paper's Table 1: four convolutions, feature extraction 9x9 -> 64,
feature enhancement 7x7 -> 32, mapping 1x1 -> 16, reconstruction 5x5 -> the image, ReLU after
the first three, trained on the Y channel with one model per QF in the paper. Padding keeps the
image size ("same" convolutions, as common reimplementations do; the original cropped borders).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ARCNN"]


class ARCNN(nn.Module):
    """ARCNN: ``in_nc`` -> 64 (9x9) -> 32 (7x7) -> 16 (1x1) -> ``out_nc`` (5x5).

    Args:
        in_nc / out_nc: image channels (1 for Y, as the paper).
        nc: widths of the three hidden layers (paper: 64, 32, 16).
        residual: predict ``x + net(x)`` instead of the image itself (the paper: False).

    ``forward(x)`` takes ``x`` in [0, 1] ``[B, in_nc, H, W]`` and returns the restored image: a plain
    tensor (ARCNN is non-blind and predicts no QF; the harness wraps it, see ``models.contract``).
    """

    def __init__(
        self, in_nc: int = 1, out_nc: int = 1, nc: tuple[int, int, int] = (64, 32, 16), residual: bool = False
    ) -> None:
        super().__init__()
        if len(nc) != 3:
            raise ValueError(f"nc must list the 3 hidden widths, got {nc}")
        if residual and in_nc != out_nc:
            raise ValueError(f"residual ARCNN needs in_nc == out_nc, got {in_nc} and {out_nc}")
        self.in_nc, self.out_nc, self.residual = in_nc, out_nc, residual
        c1, c2, c3 = nc
        self.body = nn.Sequential(
            nn.Conv2d(in_nc, c1, 9, padding=4),
            nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 7, padding=3),
            nn.ReLU(inplace=True),
            nn.Conv2d(c2, c3, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c3, out_nc, 5, padding=2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.residual else out
