"""Network registry: ``net_type`` -> constructor, and architecture detection from a state_dict.

Each entry knows how to build its network from option keys (``define_G``) and how to read
those keys back from a state_dict's tensor shapes (``detect_network``). Adding a method to
the evaluation harness means adding one entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from models.network_deblock import Deblock
from models.network_dncnn import DnCNN, dncnn_kwargs_from_state_dict
from models.network_fbcnn import FBCNN


@dataclass(frozen=True)
class NetworkSpec:
    """How to build one architecture and how to recognise its checkpoints."""

    build: Callable[..., nn.Module]
    signature_keys: tuple[str, ...]  # keys whose presence identifies the architecture; () = no checkpoint
    infer_kwargs: Callable[[Mapping[str, torch.Tensor]], dict[str, Any]]


def _seq_len(state: Mapping[str, torch.Tensor], prefix: str, suffix: str) -> int:
    n = 0
    while f"{prefix}.{n}.{suffix}" in state:
        n += 1
    return n


def fbcnn_kwargs_from_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """FBCNN constructor arguments read from tensor shapes (in_nc, out_nc, nc, nb, qf_dim)."""
    nb = _seq_len(state, "m_down1", "res.0.weight")
    return {
        "in_nc": state["m_head.weight"].shape[1],
        "out_nc": state["m_tail.weight"].shape[0],
        "nc": [
            state["m_head.weight"].shape[0],
            state[f"m_down1.{nb}.weight"].shape[0],
            state[f"m_down2.{nb}.weight"].shape[0],
            state[f"m_down3.{nb}.weight"].shape[0],
        ],
        "nb": nb,
        "qf_dim": state["qf_embed.0.weight"].shape[0],
    }


NETWORKS: dict[str, NetworkSpec] = {
    "fbcnn": NetworkSpec(
        build=FBCNN,
        signature_keys=(
            "m_head.weight",
            "m_down1.0.res.0.weight",
            "qf_pred.0.res.0.weight",
            "qf_embed.0.weight",
            "m_tail.weight",
        ),
        infer_kwargs=fbcnn_kwargs_from_state_dict,
    ),
    # Baselines for the same harness.
    "dncnn": NetworkSpec(
        build=DnCNN,
        signature_keys=("model.0.weight", "model.0.bias", "model.2.weight", "model.2.bias"),
        infer_kwargs=dncnn_kwargs_from_state_dict,
    ),
    "deblock": NetworkSpec(  # parameter-free: built by define_G only, never detected from a file
        build=Deblock,
        signature_keys=(),
        infer_kwargs=lambda state: {},
    ),
}


def define_G(opt_net: Mapping[str, Any]) -> nn.Module:
    """Build the network described by an options ``netG`` section (``net_type`` plus constructor keys)."""
    opt_net = dict(opt_net)
    net_type = opt_net.pop("net_type", "fbcnn")
    if net_type not in NETWORKS:
        raise ValueError(f"netG.net_type {net_type!r} is unknown; known types: {sorted(NETWORKS)}")
    for key in ("init_type", "init_bn_type", "init_gain"):  # training-only keys, used by the trainer
        opt_net.pop(key, None)
    return NETWORKS[net_type].build(**opt_net)


def detect_network(state: Mapping[str, torch.Tensor]) -> tuple[str, dict[str, Any]]:
    """Return ``(net_type, constructor kwargs)`` for a state_dict; ValueError if no architecture matches."""
    loadable = {name: spec for name, spec in NETWORKS.items() if spec.signature_keys}
    for net_type, spec in loadable.items():
        if all(key in state for key in spec.signature_keys):
            return net_type, spec.infer_kwargs(state)
    expected = "; ".join(f"{name}: {', '.join(spec.signature_keys)}" for name, spec in loadable.items())
    found = list(state)[:6]
    raise ValueError(f"not a known network state_dict. Expected keys of one of [{expected}]; found keys {found}...")
