"""Widen a trained FBCNN without changing what it computes (Net2WiderNet, Chen et al. 2016).

Growing a trained small model is cheaper than training the wide one from scratch: the wide
network starts where the small one ended and only has to learn what the extra channels add.

Each U-Net level ``k`` grows from ``nc_old[k]`` to ``nc_new[k]`` channels. New channel ``c`` is a
copy of old channel ``g[c]`` (the old channels first, then copies of random ones). Every layer
that *writes* a level takes the rows of ``g``; every layer that *reads* it takes the columns of
``g``, each scaled by a split weight, and the split weights of all copies of one old channel sum
to 1. The copies therefore hold equal values and their weighted sum is the old value: the wide
network computes exactly the old function (up to float rounding), while unequal split weights
(``split_noise``) give the copies different gradients, so they do not stay identical.

The QF MLPs (``qf_pred``'s head, ``qf_embed``) keep their width ``qf_dim``. ``reset_controller``
re-initialises ``qf_embed`` (``models.model_fbcnn.init_controller``) and zeroes the weights of
``to_gamma_k`` / ``to_beta_k`` that read it, which keeps the output unchanged while giving a dead
controller live units again.

Command line::

    python -m models.widen_fbcnn model_zoo/fbcnn_color_small.pth wide.pth --nc 24 48 96 192 --reset-controller
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

if __package__ in (None, ""):  # ``python models/widen_fbcnn.py``: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.checkpoint import read_state_dict, write_state_dict  # noqa: E402
from models.model_fbcnn import init_controller, init_weights  # noqa: E402
from models.network_fbcnn import FBCNN  # noqa: E402
from models.select_network import fbcnn_kwargs_from_state_dict  # noqa: E402

__all__ = ["level_axes", "widen_fbcnn_state_dict", "reset_controller", "main"]


def level_axes(name: str, nb: int) -> tuple[int | None, int | None]:
    """U-Net levels ``(written, read)`` by a parameter, or None where that axis is not a level.

    ``written`` indexes the output channels (axis 0; axis 1 for a transposed conv's weight,
    and axis 0 of every bias), ``read`` the input channels.
    """
    stage_level = {"m_down1": 0, "m_down2": 1, "m_down3": 2, "m_body_encoder": 3, "m_body_decoder": 3, "qf_pred": 3}
    up_level = {"m_up3": (3, 2), "m_up2": (2, 1), "m_up1": (1, 0)}
    head, index, *_ = name.split(".") + [""]
    if head == "m_head":
        return 0, None
    if head == "m_tail":
        return None, 0
    if head in stage_level:
        k = stage_level[head]
        i = int(index)
        if head.startswith("m_down") and i == nb:  # the strided conv into the next level
            return k + 1, k
        if head == "qf_pred" and i >= nb:  # the MLP head: its first Linear reads level 3
            return (None, 3) if i == nb + 2 else (None, None)
        return k, k
    if head in up_level:
        src, dst = up_level[head]
        return (dst, src) if index == "0" else (dst, dst)
    match = re.fullmatch(r"to_(gamma|beta)_([123])", head)
    if match:
        return int(match.group(2)) - 1, None
    return None, None  # qf_embed


def _select(t: torch.Tensor, axis: int, index: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    out = t.index_select(axis, index)
    if scale is not None:
        shape = [1] * out.ndim
        shape[axis] = -1
        out = out * scale.view(shape).to(out.dtype)
    return out


def widen_fbcnn_state_dict(
    state: Mapping[str, torch.Tensor],
    nc: Sequence[int],
    split_noise: float = 0.1,
    seed: int = 0,
    new_units: str = "copy",
) -> dict[str, torch.Tensor]:
    """The state_dict of an FBCNN with level widths ``nc`` that computes what ``state`` computes.

    ``new_units``: ``"copy"`` (Net2WiderNet) makes each new channel a copy of an old one, and
    ``split_noise`` spreads the split weights of the copies of one channel (0 = equal shares, which
    keeps copies identical during training). ``"random"`` gives the new channels fresh weights
    (``init_weights``: orthogonal, gain 0.2) and makes every weight that *reads* a new channel zero,
    so they start as free units that do not share their old twin's gradient.
    Raises ValueError if a width would shrink.
    """
    old = fbcnn_kwargs_from_state_dict(state)
    nc_old, nc = list(old["nc"]), list(nc)
    if len(nc) != 4 or any(n < o for n, o in zip(nc, nc_old, strict=True)):
        raise ValueError(f"new widths {nc} must be 4 values, each at least the old width ({nc_old})")
    if new_units == "random":
        return _widen_with_fresh_units(state, old, nc, seed)
    if new_units != "copy":
        raise ValueError(f"new_units must be 'copy' or 'random', got {new_units!r}")
    gen = torch.Generator().manual_seed(seed)
    maps, shares = [], []
    for o, n in zip(nc_old, nc, strict=True):
        g = torch.cat([torch.arange(o), torch.randint(o, (n - o,), generator=gen)])
        weight = 1.0 + split_noise * (2 * torch.rand(n, generator=gen) - 1)
        total = torch.zeros(o).index_add_(0, g, weight)
        maps.append(g)
        shares.append(weight / total[g])  # the shares of the copies of each old channel sum to 1
    wide = {}
    for name, t in state.items():
        written, read = level_axes(name, old["nb"])
        transposed = name.split(".")[0].startswith("m_up") and name.split(".")[1] == "0" and name.endswith("weight")
        out_axis, in_axis = (1, 0) if transposed else (0, 1)
        if written is not None:
            t = _select(t, out_axis if t.ndim > 1 else 0, maps[written])
        if read is not None and t.ndim > 1:
            t = _select(t, in_axis, maps[read], shares[read])
        wide[name] = t.contiguous()
    return wide


def _widen_with_fresh_units(
    state: Mapping[str, torch.Tensor], old: Mapping, nc: list[int], seed: int
) -> dict[str, torch.Tensor]:
    """``widen_fbcnn_state_dict(..., new_units="random")``: the old weights are the leading block of
    each wide tensor (old channels first), the rest fresh, and the weights reading new channels zero."""
    torch.manual_seed(seed)
    fresh_net = FBCNN(**{**old, "nc": nc})
    init_weights(fresh_net)
    fresh = fresh_net.state_dict()
    wide = {}
    for name, t in state.items():
        w = fresh[name].clone().to(t.dtype)
        _, read = level_axes(name, old["nb"])
        if read is not None and t.ndim > 1:
            transposed = name.split(".")[0].startswith("m_up") and name.split(".")[1] == "0"
            w.narrow(0 if transposed else 1, old["nc"][read], nc[read] - old["nc"][read]).zero_()
        w[tuple(slice(0, size) for size in t.shape)] = t
        wide[name] = w.contiguous()
    return wide


def reset_controller(state: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """Fresh ``qf_embed`` (``init_controller``) and zero weights into ``to_gamma_k`` / ``to_beta_k``.

    The output is unchanged (gamma and beta keep their biases' values); the controller learns anew.
    """
    torch.manual_seed(seed)
    net = FBCNN(**fbcnn_kwargs_from_state_dict(state))
    init_controller(net)
    fresh = net.state_dict()
    out = dict(state)
    for name in state:
        if name.startswith("qf_embed."):
            out[name] = fresh[name]
        elif re.fullmatch(r"to_(gamma|beta)_[123]\.0\.weight", name):
            out[name] = torch.zeros_like(state[name])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="FBCNN checkpoint to widen")
    parser.add_argument("dst", help="output state_dict (.pth or .safetensors)")
    parser.add_argument("--nc", type=int, nargs=4, required=True, metavar="C", help="new widths of the 4 levels")
    parser.add_argument(
        "--new-units", choices=("copy", "random"), default="copy", help="copies of old channels, or fresh ones"
    )
    parser.add_argument("--split-noise", type=float, default=0.1, help="spread of the copies' split weights")
    parser.add_argument("--reset-controller", action="store_true", help="re-initialise qf_embed (dead controllers)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    state = widen_fbcnn_state_dict(read_state_dict(args.src), args.nc, args.split_noise, args.seed, args.new_units)
    if args.reset_controller:
        state = reset_controller(state, args.seed)
    write_state_dict(state, args.dst)
    n = sum(t.numel() for t in state.values())
    print(f"{args.src} -> {args.dst}: nc {args.nc}, {n / 1e6:.2f}M parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
