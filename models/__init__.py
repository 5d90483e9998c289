"""Networks, their registry and checkpoint loading.

``load_model(path)`` is the one way the test script, the CLI and the benchmarks open a
checkpoint: official FBCNN files, ours, `.pth` or `.safetensors`.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from models.checkpoint import CheckpointError, read_state_dict, write_state_dict
from models.network_fbcnn import FBCNN
from models.select_network import NETWORKS, define_G, detect_network


def _zoo_dir() -> Path:
    """The folder of the bundled models: the ``model_zoo`` package data (checkout, editable install or wheel).

    Falls back to ``model_zoo/`` beside the ``models`` folder when ``model_zoo`` is not importable.
    """
    try:
        return Path(str(resources.files("model_zoo")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[1] / "model_zoo"


ZOO_DIR = _zoo_dir()
# The small models we train and ship; the default of every script (see model_zoo/README.md).
ZOO_MODELS = {1: ZOO_DIR / "fbcnn_gray_small.pth", 3: ZOO_DIR / "fbcnn_color_small.pth"}

__all__ = [
    "ZOO_DIR",
    "ZOO_MODELS",
    "FBCNN",
    "NETWORKS",
    "CheckpointError",
    "define_G",
    "detect_network",
    "load_model",
    "read_state_dict",
    "write_state_dict",
]


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Build the network a checkpoint describes, load it strictly and return it in eval mode.

    The registry's architectures (FBCNN, DnCNN, ARCNN) and their sizes are inferred from tensor
    shapes; `.pth` files are read with ``weights_only=True``. Any other checkpoint is handed to
    spandrel (SwinIR, Swin2SR, SCUNet, DRUNet, ... restoration models at scale 1) and returned under
    the harness contract (``models.contract.Restorer``). ``model.net_type`` names the architecture
    (spandrel's name for its models). Raises ``CheckpointError`` naming the file when neither knows it.
    """
    state = read_state_dict(path)
    try:
        net_type, kwargs = detect_network(state)
    except ValueError as ours:
        model = _load_with_spandrel(path, state, ours)
    else:
        try:
            model = NETWORKS[net_type].build(**kwargs)
            model.load_state_dict(state, strict=True)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: {exc}") from exc
        model.net_type = net_type  # recorded for logs and results
    return model.to(device).eval()


def _load_with_spandrel(path: str | os.PathLike, state: dict[str, torch.Tensor], ours: Exception) -> nn.Module:
    """A checkpoint of an architecture outside our registry, through spandrel's loaders."""
    from spandrel import ImageModelDescriptor, ModelLoader

    from models.contract import Restorer

    try:
        descriptor = ModelLoader().load_from_state_dict(state)
    except Exception as exc:  # spandrel's UnsupportedModelError, or an error inside an architecture's loader
        raise CheckpointError(f"{path}: {ours}; spandrel does not recognise it either ({exc})") from exc
    name = descriptor.architecture.name
    if not isinstance(descriptor, ImageModelDescriptor) or descriptor.scale != 1:
        scale = getattr(descriptor, "scale", "?")
        raise CheckpointError(f"{path}: a {name} model at scale {scale}, not an image-restoration model at scale 1")
    model = Restorer(descriptor.model, call=descriptor)
    model.net_type = name
    model.in_nc = descriptor.input_channels
    return model
