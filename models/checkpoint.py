"""Reading and writing network weights: `.pth` (pickle-free load) and `.safetensors`.

Weights are always plain state_dicts in the network's own layout (for FBCNN: the
official one), so the official code, spandrel and `load_model` all read them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from utils.utils_io import atomic_write

# Containers other projects wrap a state_dict in (BasicSR, KAIR's training states, Lightning).
_WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model", "netG")


class CheckpointError(ValueError):
    """A file is not a readable network checkpoint; the message names the file and the problem."""


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state_dict from `.pth`/`.pt` (``weights_only=True``) or `.safetensors`.

    Unwraps the usual containers (``params``, ``params_ema``, ``state_dict``, ...), strips a DDP
    ``module.`` prefix and converts floating tensors to float32 (fp16 storage is allowed).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch/safetensors raise many types for corrupt or foreign files
        raise CheckpointError(
            f"{path}: cannot be read as a weights-only PyTorch or safetensors file ({type(exc).__name__}: {exc})"
        ) from exc

    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(
            f"{path}: expected a state_dict (a mapping of parameter names to tensors), found {_describe(obj)}"
        )
    non_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if non_tensors:
        raise CheckpointError(
            f"{path}: expected a state_dict of tensors, but {len(non_tensors)} entries are not tensors "
            f"(e.g. {non_tensors[:3]})"
        )
    state = {}
    for key, value in obj.items():
        key = key[len("module.") :] if key.startswith("module.") else key
        state[key] = value.float() if value.is_floating_point() else value
    return state


def write_state_dict(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike, half: bool = False) -> Path:
    """Write a state_dict atomically as `.pth` or `.safetensors` (by suffix); ``half`` stores fp16."""
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))
    else:
        atomic_write(path, lambda tmp: torch.save(tensors, tmp))
    return path


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        return "an empty mapping" if not obj else f"a mapping with keys {list(obj)[:5]}"
    if isinstance(obj, torch.Tensor):
        return f"a single tensor of shape {tuple(obj.shape)}"
    return f"an object of type {type(obj).__name__}"
