"""Inference backends for the restore CLI: PyTorch or onnxruntime, and ``auto``, the fastest present.

``auto`` picks, for the device used:

* CUDA: PyTorch, channels_last, half-precision autocast where the GPU has tensor cores (``half_supported``):
  bf16 where it computes bf16 natively (Ampere on), else float16 (Volta, Turing: V100, T4);
* a CPU with native bf16 (AVX512-BF16, AMX, ARM bf16): PyTorch, bf16 autocast + channels_last
  (2.1-2.75x a plain float32 forward, ``benchmarks/inference.py``);
* any other CPU (e.g. AVX2 only, where bf16 is emulated and slower than float32): onnxruntime when it is
  installed (float32, the exported graph of ``utils.utils_export``), else PyTorch float32 + channels_last.

The ONNX graphs are cached per checkpoint under ``$FBCNN_CACHE`` (default ``~/.cache/fbcnn``, or
``$XDG_CACHE_HOME/fbcnn``), named by the SHA-256 of the checkpoint's bytes: a changed checkpoint gets a new
export, and the stale export of the same file name is removed. ``$FBCNN_BACKEND`` sets the default of
``--backend`` (the tests pin ``torch``).

Conventions: ``OrtFBCNN`` takes and returns what ``FBCNN.forward`` does: images float32 ``[B, C, H, W]`` in
[0, 1], ``qf_input`` and the predicted ``qf`` as (100 - QF) / 100, ``[B, 1]``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models import FBCNN
from utils.tiling import half_dtype, half_supported, prepare_model
from utils.utils_eval import model_channels

__all__ = [
    "BACKENDS",
    "Backend",
    "OrtFBCNN",
    "backend_for_model",
    "cache_dir",
    "cached_onnx",
    "choose_backend",
    "file_sha256",
    "runner",
]

BACKENDS = ("auto", "torch", "onnxruntime")
log = logging.getLogger("fbcnn-restore")


@dataclass(frozen=True)
class Backend:
    """What ``choose_backend`` decided: ``name`` ('torch' or 'onnxruntime'), the torch options, and why.

    ``half``: half-precision autocast (``utils.tiling.half_dtype`` of the device: bf16, or float16 on CUDA GPUs
    without native bf16).
    """

    name: str
    half: bool
    channels_last: bool
    reason: str


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def choose_backend(requested: str, device: torch.device | str, half: bool | None = None) -> Backend:
    """The backend for ``requested`` ('auto', 'torch' or 'onnxruntime') on ``device``.

    ``half``: the user's ``--half/--no-half`` (None: where the device computes it natively, ``half_supported``).
    Raises ValueError for onnxruntime on CUDA or without the package.
    """
    if requested not in BACKENDS:
        raise ValueError(f"unknown backend {requested!r}; choose from {', '.join(BACKENDS)}")
    device = torch.device(device)
    native = half_supported(device)
    if requested == "onnxruntime":
        if device.type != "cpu":
            raise ValueError("--backend onnxruntime runs on the CPU only (use --device cpu)")
        if not onnxruntime_available():
            raise ValueError("--backend onnxruntime: onnxruntime is not installed (pip install onnxruntime)")
        return Backend("onnxruntime", False, False, "asked for")
    use_half = native if half is None else half
    if requested == "torch":
        return Backend("torch", use_half, True, "asked for")
    if device.type == "cuda":
        dtype = "bf16" if half_dtype(device) == torch.bfloat16 else "fp16"
        return Backend("torch", use_half, True, "CUDA" + (f" with native {dtype}" if native else ""))
    if native or half:
        return Backend("torch", use_half, True, "the CPU computes bf16 natively" if native else "--half")
    if onnxruntime_available():
        return Backend("onnxruntime", False, False, "no native bf16 on this CPU; onnxruntime is faster than torch")
    return Backend("torch", False, True, "no native bf16 and no onnxruntime: torch float32")


def backend_for_model(
    model: nn.Module,
    model_path: str | os.PathLike,
    requested: str,
    device: torch.device | str,
    half: bool | None = None,
) -> Backend:
    """``choose_backend`` for one loaded network: only FBCNN networks are exported, so ``auto`` keeps others on
    torch. Raises ValueError (naming ``model_path``) when onnxruntime is asked for explicitly for another network."""
    backend = choose_backend(requested, device, half)
    if backend.name == "onnxruntime" and not isinstance(model, FBCNN):
        if requested == "onnxruntime":
            raise ValueError(f"--backend onnxruntime exports FBCNN networks only; {model_path} is not one")
        backend = choose_backend("torch", device, half)
    return backend


def runner(
    model: nn.Module,
    model_path: str | os.PathLike,
    backend: Backend,
    *,
    channels_last: bool = True,
    compile: bool = False,
) -> nn.Module:
    """What restores with ``backend``: the cached ONNX graphs of ``model_path`` under onnxruntime, or ``model``
    prepared for torch (eval, channels_last, optionally ``torch.compile``). Called like ``FBCNN.forward``."""
    if backend.name == "onnxruntime":
        return OrtFBCNN(cached_onnx(model_path), model_channels(model))
    return prepare_model(model, channels_last=channels_last, compile=compile)


def cache_dir() -> Path:
    """Where exported graphs are kept: ``$FBCNN_CACHE``, else ``$XDG_CACHE_HOME/fbcnn``, else ``~/.cache/fbcnn``."""
    if os.environ.get("FBCNN_CACHE"):
        return Path(os.environ["FBCNN_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fbcnn"


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_onnx(checkpoint: str | os.PathLike, directory: str | os.PathLike | None = None) -> Path:
    """The blind graph ``<stem>-<sha256[:16]>.onnx`` (and its ``_qf`` twin) of ``checkpoint``, exported if missing.

    The key is the checkpoint's content, so an edited or replaced checkpoint is exported again; exports of older
    contents of the same file name are deleted.
    """
    from utils.utils_export import export_onnx, graph_path

    checkpoint = Path(checkpoint)
    directory = Path(directory) if directory else cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{checkpoint.stem}-{file_sha256(checkpoint)[:16]}.onnx"
    if not (path.is_file() and graph_path(path, "flexible").is_file()):
        for stale in directory.glob(f"{checkpoint.stem}-" + "?" * 16 + "*.onnx"):
            stale.unlink(missing_ok=True)
        log.info("exporting %s to ONNX (once per checkpoint) -> %s", checkpoint, path)
        export_onnx(checkpoint, path)
    return path


class OrtFBCNN(nn.Module):
    """An exported FBCNN under onnxruntime, called like the network: ``forward(x, qf_input=None)``.

    The blind graph predicts the QF; the flexible graph (``_qf``) takes ``qf_input`` and skips the predictor.
    Sessions use ``threads`` intra-op threads (default: torch's thread count).
    """

    net_type = "fbcnn (onnxruntime)"

    def __init__(self, onnx_path: str | os.PathLike, in_nc: int, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        from utils.utils_export import graph_path

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CPUExecutionProvider"]
        self.in_nc = in_nc
        self.blind = ort.InferenceSession(str(onnx_path), options, providers=providers)
        self.flexible = ort.InferenceSession(str(graph_path(onnx_path, "flexible")), options, providers=providers)

    def forward(self, x: torch.Tensor, qf_input: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        image = np.ascontiguousarray(x.detach().float().cpu().numpy())
        if qf_input is None:
            restored, qf = self.blind.run(None, {"image": image})
        else:
            qf_np = np.ascontiguousarray(qf_input.detach().float().cpu().numpy().reshape(-1, 1))
            if qf_np.shape[0] != image.shape[0]:
                qf_np = np.repeat(qf_np[:1], image.shape[0], axis=0)
            restored, qf = self.flexible.run(None, {"image": image, "qf_input": qf_np})
        return torch.from_numpy(restored), torch.from_numpy(qf)
