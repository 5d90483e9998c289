"""FBCNN: Flexible Blind Convolutional Neural Network for JPEG artifact removal.

Jiang, Zhang, Timofte, "Towards Flexible Blind JPEG Artifacts Removal", ICCV 2021.

The network has the four parts the paper names:

* **decoupler** (``m_head``, ``m_down1..3``, ``m_body_encoder``): a U-Net encoder that
  splits the input into image content and a latent quality factor (QF) representation;
* **QF predictor** (``qf_pred``): residual blocks, global pooling and an MLP giving the
  normalised compression level in [0, 1];
* **flexible controller** (``qf_embed``, ``to_gamma_k``, ``to_beta_k``): embeds a QF,
  predicted or user-set, into per-channel scale/shift pairs;
* **image reconstructor** (``m_body_decoder``, ``m_up3..1``, ``m_tail``): a U-Net decoder
  whose QF-attention blocks are modulated by the controller.

Convention used everywhere in this project: a QF is passed to and returned from the
network as ``qf = (100 - QF) / 100`` (0 = pristine, 0.9 = QF 10), shape ``[B, 1]``.

The module names, their order and all tensor shapes reproduce the released checkpoints
``fbcnn_color.pth``, ``fbcnn_gray.pth`` and ``fbcnn_gray_double.pth`` exactly, so those
files load with ``strict=True``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FBCNN", "ResBlock", "QFAttention", "controller_live_units"]


def _conv3x3(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=1, padding=1, bias=True)


def _activation(act_mode: str) -> nn.Module:
    if act_mode == "R":
        return nn.ReLU(inplace=True)
    if act_mode == "L":
        return nn.LeakyReLU(0.2, inplace=True)
    raise ValueError(f"act_mode must be 'R' (ReLU) or 'L' (LeakyReLU), got {act_mode!r}")


class ResBlock(nn.Module):
    """Residual block: ``x + conv(act(conv(x)))`` with 3x3 convs (keys ``res.0``, ``res.2``)."""

    def __init__(self, channels: int, act_mode: str = "R") -> None:
        super().__init__()
        self.res = nn.Sequential(_conv3x3(channels, channels), _activation(act_mode), _conv3x3(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res(x)


class QFAttention(nn.Module):
    """QF-attention block: ``x + gamma * conv(act(conv(x))) + beta``.

    ``gamma`` and ``beta`` are ``[B, C]`` and come from the flexible controller. The
    released weights were trained with this form, not with the ``(1 + gamma)`` of the
    paper's Eq. 2.
    """

    def __init__(self, channels: int, act_mode: str = "R") -> None:
        super().__init__()
        self.res = nn.Sequential(_conv3x3(channels, channels), _activation(act_mode), _conv3x3(channels, channels))

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        return x + gamma[:, :, None, None] * self.res(x) + beta[:, :, None, None]


def _downsample(in_ch: int, out_ch: int, mode: str) -> nn.Module:
    if mode == "strideconv":
        return nn.Conv2d(in_ch, out_ch, kernel_size=2, stride=2, padding=0, bias=True)
    raise ValueError(f"downsample_mode {mode!r} is not supported; the released models use 'strideconv'")


def _upsample(in_ch: int, out_ch: int, mode: str) -> nn.Module:
    if mode == "convtranspose":
        return nn.ConvTranspose2d(in_ch, out_ch, kernel_size=2, stride=2, padding=0, bias=True)
    raise ValueError(f"upsample_mode {mode!r} is not supported; the released models use 'convtranspose'")


class FBCNN(nn.Module):
    """FBCNN with the official constructor and state_dict layout.

    Args:
        in_nc / out_nc: image channels (3 colour RGB, 1 gray / Y).
        nc: channel widths of the four U-Net levels (released: 64, 128, 256, 512).
        nb: residual / QF-attention blocks per level (released: 4).
        act_mode: 'R' (ReLU, released) or 'L' (LeakyReLU 0.2).
        downsample_mode / upsample_mode: only the released 'strideconv' / 'convtranspose'.
        qf_dim: width of the QF-predictor MLP and of the QF embedding (released: 512). The
            official code ties the predictor's input to 512; here it is ``nc[3]``, which is
            512 in the released configuration, so small models (nc[3] < 512) are possible.

    ``forward(x, qf_input=None)`` takes ``x`` in [0, 1], shape ``[B, in_nc, H, W]`` (any H, W:
    sides that are not multiples of 8 are replicate-padded right/bottom and cropped back),
    and ``qf_input`` = (100 - QF) / 100 of shape ``[B, 1]`` or ``[1, 1]`` (broadcast over
    the batch), or None for blind restoration. It returns ``(restored, qf)`` where ``qf``
    is the predicted (100 - QF) / 100, ``[B, 1]``. With ``predict_qf=False`` and a
    ``qf_input``, the QF predictor is skipped (about 11% less work) and ``qf`` is
    ``qf_input`` broadcast to ``[B, 1]``; without a ``qf_input`` the flag has no effect.
    """

    def __init__(
        self,
        in_nc: int = 3,
        out_nc: int = 3,
        nc: Sequence[int] = (64, 128, 256, 512),
        nb: int = 4,
        act_mode: str = "R",
        downsample_mode: str = "strideconv",
        upsample_mode: str = "convtranspose",
        qf_dim: int = 512,
    ) -> None:
        super().__init__()
        nc = list(nc)
        if len(nc) != 4:
            raise ValueError(f"nc must list 4 channel widths, got {nc}")
        self.in_nc, self.out_nc, self.nc, self.nb, self.qf_dim = in_nc, out_nc, nc, nb, qf_dim

        def res_blocks(ch: int) -> list[nn.Module]:
            return [ResBlock(ch, act_mode) for _ in range(nb)]

        def qf_blocks(ch: int) -> list[nn.Module]:
            return [QFAttention(ch, act_mode) for _ in range(nb)]

        # Decoupler (encoder).
        self.m_head = _conv3x3(in_nc, nc[0])
        self.m_down1 = nn.Sequential(*res_blocks(nc[0]), _downsample(nc[0], nc[1], downsample_mode))
        self.m_down2 = nn.Sequential(*res_blocks(nc[1]), _downsample(nc[1], nc[2], downsample_mode))
        self.m_down3 = nn.Sequential(*res_blocks(nc[2]), _downsample(nc[2], nc[3], downsample_mode))
        self.m_body_encoder = nn.Sequential(*res_blocks(nc[3]))

        # Image reconstructor (decoder).
        self.m_body_decoder = nn.Sequential(*res_blocks(nc[3]))
        self.m_up3 = nn.ModuleList([_upsample(nc[3], nc[2], upsample_mode), *qf_blocks(nc[2])])
        self.m_up2 = nn.ModuleList([_upsample(nc[2], nc[1], upsample_mode), *qf_blocks(nc[1])])
        self.m_up1 = nn.ModuleList([_upsample(nc[1], nc[0], upsample_mode), *qf_blocks(nc[0])])
        self.m_tail = _conv3x3(nc[0], out_nc)

        # QF predictor. Indices: 0..nb-1 blocks, pool, flatten, Linear, ReLU, Linear, ReLU, Linear, Sigmoid.
        self.qf_pred = nn.Sequential(
            *res_blocks(nc[3]),
            nn.AdaptiveAvgPool2d((1, 1)),
            nn.Flatten(),
            nn.Linear(nc[3], qf_dim),
            nn.ReLU(),
            nn.Linear(qf_dim, qf_dim),
            nn.ReLU(),
            nn.Linear(qf_dim, 1),
            nn.Sigmoid(),
        )

        # Flexible controller.
        self.qf_embed = nn.Sequential(
            nn.Linear(1, qf_dim), nn.ReLU(), nn.Linear(qf_dim, qf_dim), nn.ReLU(), nn.Linear(qf_dim, qf_dim), nn.ReLU()
        )
        self.to_gamma_3 = nn.Sequential(nn.Linear(qf_dim, nc[2]), nn.Sigmoid())
        self.to_beta_3 = nn.Sequential(nn.Linear(qf_dim, nc[2]), nn.Tanh())
        self.to_gamma_2 = nn.Sequential(nn.Linear(qf_dim, nc[1]), nn.Sigmoid())
        self.to_beta_2 = nn.Sequential(nn.Linear(qf_dim, nc[1]), nn.Tanh())
        self.to_gamma_1 = nn.Sequential(nn.Linear(qf_dim, nc[0]), nn.Sigmoid())
        self.to_beta_1 = nn.Sequential(nn.Linear(qf_dim, nc[0]), nn.Tanh())

    def forward(
        self, x: torch.Tensor, qf_input: torch.Tensor | None = None, *, predict_qf: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = x.shape[-2:]
        pad_bottom, pad_right = -h % 8, -w % 8
        if pad_bottom or pad_right:
            x = F.pad(x, (0, pad_right, 0, pad_bottom), mode="replicate")

        x1 = self.m_head(x)
        x2 = self.m_down1(x1)
        x3 = self.m_down2(x2)
        x4 = self.m_down3(x3)
        latent = self.m_body_encoder(x4)

        # The QF predictor and the controller run in float32 even under autocast: the QF shows up
        # in the pooled latent as variations smaller than bfloat16's resolution (about 0.4%).
        dtype = self.qf_embed[0].weight.dtype  # float32 unless the whole model was cast
        with torch.autocast(x.device.type, enabled=False):
            # Computed by default, so callers get the network's estimate even when they set the QF.
            qf = None if qf_input is not None and not predict_qf else self.qf_pred(latent.to(dtype))
            if qf_input is None:
                qf_control = qf
            else:
                qf_control = qf_input.to(dtype).reshape(-1, 1).expand(x.shape[0], 1)
            if qf is None:  # predictor skipped: report the QF that was set
                qf = qf_control
            embedding = self.qf_embed(qf_control)

        x = self.m_body_decoder(latent)
        x = self._up(self.m_up3, x + x4, embedding, self.to_gamma_3, self.to_beta_3)
        x = self._up(self.m_up2, x + x3, embedding, self.to_gamma_2, self.to_beta_2)
        x = self._up(self.m_up1, x + x2, embedding, self.to_gamma_1, self.to_beta_1)
        x = self.m_tail(x + x1)
        return x[..., :h, :w], qf

    @staticmethod
    def _up(
        stage: nn.ModuleList, x: torch.Tensor, embedding: torch.Tensor, to_gamma: nn.Module, to_beta: nn.Module
    ) -> torch.Tensor:
        gamma, beta = to_gamma(embedding), to_beta(embedding)
        x = stage[0](x)
        for block in stage[1:]:
            x = block(x, gamma, beta)
        return x


@torch.no_grad()
def controller_live_units(model: FBCNN, steps: int = 101) -> tuple[int, int]:
    """``(live, total)`` units of the QF embedding's last ReLU that are active for some QF.

    The embedding is evaluated at ``steps`` values of (100 - QF) / 100 evenly spaced in [0, 1].
    ``live == 0`` means the flexible control is dead: ``qf_input`` cannot change the output.
    """
    layer = model.qf_embed[0]
    q = torch.linspace(0.0, 1.0, steps, device=layer.weight.device, dtype=layer.weight.dtype)[:, None]
    embedding = model.qf_embed(q)
    return int((embedding > 0).any(dim=0).sum()), int(embedding.shape[1])
