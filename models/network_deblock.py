"""A non-learned deblocking baseline: the MPEG-4 Part 2 post-filter applied to JPEG's 8x8 grid.

The filter is the two-mode deblocking filter of ISO/IEC 14496-2 (informative Annex F), the
classic reference point for "what a hand-made filter buys" in artifact-removal tables. It is
a parameter-free ``nn.Module`` with the registry contract ``forward(x, qf_input=None) ->
(restored, None)`` so the harness evaluates it like any network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.contract import label_to_qf

__all__ = ["Deblock", "quantizer_step"]

BLOCK = 8
THR1 = 2.0  # |difference| (8-bit units) under which two neighbours count as "equal"
THR2 = 6  # equal neighbour pairs (of 9) that make a boundary region "flat"
DC_STEP_AT_QF50 = 16.0  # DC entry of the standard JPEG luminance table (Annex K), the step at QF 50
SMOOTH_TAPS = (1.0, 1.0, 2.0, 2.0, 4.0, 2.0, 2.0, 1.0, 1.0)  # /16, flat-mode low-pass


def quantizer_step(qf: torch.Tensor) -> torch.Tensor:
    """JPEG DC quantizer step (8-bit units) for quality ``qf`` (1..100), libjpeg's table scaling.

    QF 10 -> 80, QF 50 -> 16, QF 90 -> 3.2 (before libjpeg's integer rounding).
    """
    qf = qf.clamp(1.0, 100.0)
    scale = torch.where(qf < 50, 5000.0 / qf, 200.0 - 2.0 * qf) / 100.0
    return (DC_STEP_AT_QF50 * scale).clamp(min=1.0)


def _hf_energy(a: torch.Tensor) -> torch.Tensor:
    """Signed high-frequency content of 4 consecutive pixels (last dim): ``(2, -5, 5, -2) / 8``."""
    return (2.0 * a[..., 0] - 5.0 * a[..., 1] + 5.0 * a[..., 2] - 2.0 * a[..., 3]) / 8.0


def _filter_vertical_edges(x: torch.Tensor, qp: torch.Tensor) -> torch.Tensor:
    """Filter every vertical block boundary of ``x`` [B, C, H, W] (8-bit units) along its rows.

    Each boundary at column ``8k`` is seen through ten pixels ``v0..v9`` (columns ``8k-5 ..
    8k+4``); ``v1..v8`` are rewritten. The regions of neighbouring boundaries do not overlap in
    what they write, so all boundaries are filtered at once from the input values.
    """
    w = x.shape[-1]
    n_edges = -(-w // BLOCK) - 1  # boundaries strictly inside the image
    if n_edges < 1:
        return x
    pad = -w % BLOCK
    xp = F.pad(x, (0, pad, 0, 0), mode="replicate") if pad else x  # the last region may reach past w
    v = xp[..., 3 : 3 + BLOCK * n_edges + 2].unfold(-1, 10, BLOCK)  # [B, C, H, n_edges, 10]
    qp = qp.view(-1, 1, 1, 1, 1)

    # Mode decision: count near-equal neighbour pairs across the ten pixels.
    flat = ((v[..., 1:] - v[..., :-1]).abs() <= THR1).sum(-1, keepdim=True) >= THR2

    # Flat ("DC offset") mode: 9-tap low-pass over v1..v8, ends padded with v0 / v9 when they
    # are close to v1 / v8 (else with v1 / v8 themselves); only when v1..v8 span < 2 QP.
    inner = v[..., 1:9]
    left = torch.where((v[..., 1:2] - v[..., 0:1]).abs() < qp, v[..., 0:1], v[..., 1:2])
    right = torch.where((v[..., 8:9] - v[..., 9:10]).abs() < qp, v[..., 9:10], v[..., 8:9])
    padded = torch.cat([left.expand(*left.shape[:-1], 4), inner, right.expand(*right.shape[:-1], 4)], dim=-1)
    taps = torch.tensor(SMOOTH_TAPS, dtype=x.dtype, device=x.device) / 16.0
    smoothed = padded.unfold(-1, 9, 1) @ taps  # [..., 8]
    small_range = inner.amax(-1, keepdim=True) - inner.amin(-1, keepdim=True) < 2.0 * qp
    flat_out = torch.where(small_range, smoothed, inner)

    # Default mode: compare the high-frequency energy across the edge with the same measure
    # inside each block; remove only the excess, and only when the energy across the edge is
    # below QP (more is taken for a real edge). Rewrites v4 and v5.
    a_edge, a_left, a_right = _hf_energy(v[..., 3:7]), _hf_energy(v[..., 1:5]), _hf_energy(v[..., 5:9])
    a_target = a_edge.sign() * torch.minimum(a_edge.abs(), torch.minimum(a_left.abs(), a_right.abs()))
    half_step = (v[..., 4] - v[..., 5]) / 2.0
    d = torch.minimum(torch.maximum(5.0 * (a_target - a_edge) / 8.0, half_step.clamp(max=0)), half_step.clamp(min=0))
    d = torch.where(a_edge.abs() < qp[..., 0], d, torch.zeros_like(d))
    default_out = inner.clone()
    default_out[..., 3] = v[..., 4] - d
    default_out[..., 4] = v[..., 5] + d

    new = torch.where(flat, flat_out, default_out)  # [B, C, H, n_edges, 8]
    out = xp.clone()
    out[..., 4 : 4 + BLOCK * n_edges] = new.flatten(-2)
    return out[..., :w]


class Deblock(nn.Module):
    """Non-learned, parameter-free JPEG deblocking (MPEG-4 Part 2 Annex F post-filter on the 8x8 grid).

    Every 8x8 block boundary (rows, then columns; grid anchored at the top-left pixel, as JPEG's)
    is examined through five pixels on each side:

    * **flat regions** (at least 6 of the 9 neighbour differences are <= 2 grey levels, and the
      8 pixels around the edge span less than 2 QP) get a 9-tap low-pass ``[1 1 2 2 4 2 2 1 1]/16``
      over the 4 + 4 pixels next to the boundary, which removes the DC staircase of coarse
      quantisation;
    * **elsewhere** only the two pixels touching the boundary move: the high-frequency energy
      measured across the edge is reduced to the smaller of the two energies measured inside the
      blocks (closing at most half the step), and nothing moves when the energy across the edge
      is QP or more (a true edge).

    QP is half the JPEG DC quantizer step implied by the quality factor (QF 10 -> 40 grey levels,
    QF 50 -> 8). It comes from ``qf_input`` = (100 - QF) / 100 ([B, 1] or [1, 1]) when given, else
    from ``default_qf``. ``x`` is in [0, 1], ``[B, C, H, W]`` of any size and any channel count
    (channels are filtered independently); ``in_nc`` only tells the harness which images to feed.
    Returns ``(restored, None)``: the filter predicts no QF.

    The blind default (QF 10) suits heavily compressed input; on high-quality JPEGs it smooths
    real texture (QF 90: about -2.5 dB), while told QF 90 the filter leaves them nearly intact.
    """

    def __init__(self, in_nc: int = 1, default_qf: float = 10.0) -> None:
        super().__init__()
        if not 1 <= default_qf <= 100:
            raise ValueError(f"default_qf must be a JPEG quality in [1, 100], got {default_qf}")
        self.in_nc = in_nc
        self.default_qf = float(default_qf)

    def forward(self, x: torch.Tensor, qf_input: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        if x.dim() != 4:
            raise ValueError(f"Deblock expects [B, C, H, W], got shape {tuple(x.shape)}")
        if qf_input is None:
            qf = torch.full((x.shape[0],), self.default_qf, dtype=x.dtype, device=x.device)
        else:
            qf = label_to_qf(qf_input.to(device=x.device, dtype=x.dtype).reshape(-1)).expand(x.shape[0])
        qp = quantizer_step(qf) / 2.0

        rows_first = (x * 255.0).transpose(-1, -2).contiguous()  # horizontal boundaries become vertical
        y = _filter_vertical_edges(rows_first, qp).transpose(-1, -2).contiguous()
        y = _filter_vertical_edges(y, qp)  # then the vertical boundaries
        return y / 255.0, None
