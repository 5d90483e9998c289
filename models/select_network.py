"""Network registry: ``net_type`` -> constructor, and architecture detection from a state_dict.

Each entry knows how to build its network from option keys (``define_G``) and how to read
those keys back from a state_dict's tensor shapes (``detect_network``). Adding a method to
the evaluation harness means adding one entry here, or none at all: ``net_type`` may also name
any class importable from the Python path as ``"package.module:ClassName"``, the researcher's
own network in their own file. The other ``netG`` keys are that constructor's arguments,
checked against its signature.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from models.contract import split_output
from models.network_arcnn import ARCNN
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
    "arcnn": NetworkSpec(
        build=ARCNN,
        signature_keys=("body.0.weight", "body.2.weight", "body.4.weight", "body.6.weight"),
        infer_kwargs=lambda state: {
            "in_nc": state["body.0.weight"].shape[1],
            "out_nc": state["body.6.weight"].shape[0],
            "nc": [state[f"body.{i}.weight"].shape[0] for i in (0, 2, 4)],
        },
    ),
    "deblock": NetworkSpec(  # parameter-free: built by define_G only, never detected from a file
        build=Deblock,
        signature_keys=(),
        infer_kwargs=lambda state: {},
    ),
}


TRAINING_KEYS = ("init_type", "init_gain")  # netG keys the trainer uses, not the constructor
NET_TYPE_DEFAULT = "fbcnn"
INIT_DEFAULTS = {  # the official FBCNN code and KAIR's DnCNN: orthogonal, gain 0.2; others: PyTorch's init
    "fbcnn": ("orthogonal", 0.2),
    "dncnn": ("orthogonal", 0.2),
}
INIT_TYPES = ("default", "orthogonal", "kaiming_normal")
PROBE_SIZE = 16  # the start-up forward check runs the network on a 1 x n_channels x 16 x 16 input


class NetworkOptionError(ValueError):
    """A ``netG`` section that cannot build a network; the message names the key or the class."""


def resolve_network(net_type: str) -> tuple[Callable[..., nn.Module], str]:
    """``(constructor, display name)`` for a registry name or an importable ``"module:Class"``."""
    if net_type in NETWORKS:
        return NETWORKS[net_type].build, net_type
    if ":" not in net_type:
        raise NetworkOptionError(
            f"netG.net_type {net_type!r} is unknown; known types: {sorted(NETWORKS)}, "
            "or a class importable from the Python path as 'package.module:ClassName'"
        )
    module_name, _, class_name = net_type.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or an error inside the user's module
        raise NetworkOptionError(f"netG.net_type {net_type!r}: cannot import module {module_name!r}: {exc}") from exc
    cls = getattr(module, class_name, None)
    if cls is None or not callable(cls):
        raise NetworkOptionError(f"netG.net_type {net_type!r}: module {module_name!r} has no class {class_name!r}")
    return cls, net_type


def constructor_arguments(build: Callable[..., nn.Module]) -> tuple[dict[str, Any], bool]:
    """``({argument: default or inspect.Parameter.empty}, accepts **kwargs)`` of a network constructor."""
    params = list(inspect.signature(build).parameters.values())
    named = {
        p.name: p.default
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return named, any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params)


def check_network_kwargs(build: Callable[..., nn.Module], name: str, kwargs: Mapping[str, Any]) -> None:
    """NetworkOptionError for a key the constructor does not take, or a required argument left out."""
    named, open_kwargs = constructor_arguments(build)
    listing = ", ".join(k if v is inspect.Parameter.empty else f"{k}={v!r}" for k, v in named.items())
    unknown = [k for k in kwargs if k not in named]
    if unknown and not open_kwargs:
        raise NetworkOptionError(f"netG.{unknown[0]}: {name}({listing}) takes no argument {unknown[0]!r}")
    missing = [k for k, v in named.items() if v is inspect.Parameter.empty and k not in kwargs]
    if missing:
        raise NetworkOptionError(f"netG: {name}({listing}) needs netG.{missing[0]}")


def define_G(opt_net: Mapping[str, Any]) -> nn.Module:
    """Build the network described by an options ``netG`` section (``net_type`` plus constructor keys).

    ``net_type`` is a registry name (default ``fbcnn``) or ``"module:Class"``; ``init_type`` and
    ``init_gain`` are the trainer's and are not passed on.
    """
    opt_net = dict(opt_net)
    build, name = resolve_network(opt_net.pop("net_type", "fbcnn"))
    for key in TRAINING_KEYS:
        opt_net.pop(key, None)
    check_network_kwargs(build, name, opt_net)
    try:
        net = build(**opt_net)
    except Exception as exc:  # the constructor's own checks (ValueError, TypeError, ...)
        raise NetworkOptionError(f"netG: {name}(**{opt_net}) failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(net, nn.Module):
        raise NetworkOptionError(f"netG: {name} built a {type(net).__name__}, not a torch.nn.Module")
    return net


def network_options(opt_net: dict[str, Any], n_channels: int) -> dict[str, Any]:
    """The ``netG`` section completed and checked: net_type, init keys, in_nc / out_nc from n_channels.

    Raises NetworkOptionError naming the key: an argument the constructor does not take (with its valid
    arguments), a missing required one, an unimportable class, channels that contradict n_channels.
    """
    net = dict(opt_net)
    net_type = net.setdefault("net_type", NET_TYPE_DEFAULT)
    if not isinstance(net_type, str):
        raise NetworkOptionError(f"netG.net_type must be a string, got {net_type!r}")
    build, name = resolve_network(net_type)
    init_type, init_gain = INIT_DEFAULTS.get(net_type, ("default", 1.0))
    net.setdefault("init_type", init_type)
    net.setdefault("init_gain", init_gain)
    if net["init_type"] not in INIT_TYPES:
        raise NetworkOptionError(f"netG.init_type {net['init_type']!r} must be one of {list(INIT_TYPES)}")
    named, _ = constructor_arguments(build)
    for key in ("in_nc", "out_nc"):
        if key not in named:
            continue
        if net.get(key) is None:
            net[key] = n_channels
        elif net[key] != n_channels:
            raise NetworkOptionError(f"netG.{key} is {net[key]} but n_channels is {n_channels}")
    check_network_kwargs(build, name, {k: v for k, v in net.items() if k not in ("net_type", *TRAINING_KEYS)})
    return net


def check_network_forward(opt_net: dict[str, Any], n_channels: int) -> None:
    """Build the network and run it on a ``1 x n_channels x 16 x 16`` input: a network that cannot restore a
    small image is an error at start-up, before any data is decoded."""
    net = define_G(opt_net).eval()
    name = opt_net["net_type"]
    try:
        with torch.no_grad():
            restored, _ = split_output(net(torch.rand(1, n_channels, PROBE_SIZE, PROBE_SIZE)))
    except Exception as exc:  # whatever the user's forward raises
        raise NetworkOptionError(
            f"netG: {name}.forward fails on a 1x{n_channels}x{PROBE_SIZE}x{PROBE_SIZE} input: {type(exc).__name__}: {exc}"
        ) from exc
    expected = (1, n_channels, PROBE_SIZE, PROBE_SIZE)
    if tuple(restored.shape) != expected:
        raise NetworkOptionError(
            f"netG: {name} maps a {expected} input to {tuple(restored.shape)}; a restoration network must return an "
            "image of the input's size and channels"
        )


def detect_network(state: Mapping[str, torch.Tensor]) -> tuple[str, dict[str, Any]]:
    """Return ``(net_type, constructor kwargs)`` for a state_dict; ValueError if no architecture matches."""
    loadable = {name: spec for name, spec in NETWORKS.items() if spec.signature_keys}
    for net_type, spec in loadable.items():
        if all(key in state for key in spec.signature_keys):
            return net_type, spec.infer_kwargs(state)
    expected = "; ".join(f"{name}: {', '.join(spec.signature_keys)}" for name, spec in loadable.items())
    found = list(state)[:6]
    raise ValueError(f"not a known network state_dict. Expected keys of one of [{expected}]; found keys {found}...")
