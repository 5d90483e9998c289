"""ONNX export of any FBCNN checkpoint: dynamic batch, height and width, both outputs.

ONNX graphs have no optional inputs, so two graphs are written:

* ``OUT.onnx`` (blind): input ``image`` ``[B, C, H, W]`` float32 in [0, 1]; outputs ``restored``
  ``[B, C, H, W]`` and ``qf`` ``[B, 1]``, the predicted (100 - QF) / 100.
* ``OUT_qf.onnx`` (flexible control): inputs ``image`` and ``qf_input`` ``[B, 1]`` = (100 - QF) / 100;
  the QF predictor is skipped, so ``qf`` repeats ``qf_input``.

H and W may be anything (not only multiples of 8). Command::

    python -m utils.utils_export CHECKPOINT OUT.onnx [--graphs blind flexible] [--opset N]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from models import FBCNN, load_model
from utils.utils_io import atomic_write

GRAPHS = ("blind", "flexible")
log = logging.getLogger("fbcnn-export")


class OnnxGraph(nn.Module):
    """The network as exported: explicit padding to multiples of 8, then crop back.

    The network pads inside an ``if`` that tracing would freeze at the example's size, so the
    padding is done here unconditionally (a zero-width pad is a no-op) and the network always
    sees multiples of 8.
    """

    def __init__(self, model: nn.Module, flexible: bool) -> None:
        super().__init__()
        self.model, self.flexible = model, flexible

    def forward(self, image: torch.Tensor, qf_input: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = image.shape[-2:]
        x = F.pad(image, (0, (8 - w % 8) % 8, 0, (8 - h % 8) % 8), mode="replicate")
        if self.flexible:
            restored, qf = self.model(x, qf_input, predict_qf=False)
        else:
            restored, qf = self.model(x)
        return restored[..., :h, :w], qf


def graph_path(out: str | os.PathLike, graph: str) -> Path:
    """File of one graph: ``OUT.onnx`` for blind, ``OUT_qf.onnx`` for flexible."""
    out = Path(out)
    return out if graph == "blind" else out.with_name(f"{out.stem}_qf{out.suffix or '.onnx'}")


def export_onnx(
    model: nn.Module | str | os.PathLike,
    out: str | os.PathLike,
    graphs: Sequence[str] = GRAPHS,
    opset: int | None = None,
) -> list[Path]:
    """Export a network (or a checkpoint path) to ONNX; returns the files written (atomically, one file each)."""
    name = "the model"
    if not isinstance(model, nn.Module):
        name, model = str(model), load_model(model, "cpu")
    if not isinstance(model, FBCNN):
        raise ValueError(f"{name}: ONNX export supports FBCNN networks, got {type(model).__name__}")
    model = model.float().cpu().eval()
    example = torch.rand(2, model.in_nc, 64, 48)
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height"), 3: torch.export.Dim("width")}
    written = []
    for graph in graphs:
        if graph not in GRAPHS:
            raise ValueError(f"unknown graph {graph!r}; choose from {GRAPHS}")
        flexible = graph == "flexible"
        args = (example, torch.full((2, 1), 0.5)) if flexible else (example,)
        shapes = {"image": dims, "qf_input": {0: dims[0]}} if flexible else {"image": dims}
        path = graph_path(out, graph)

        def write(tmp: Path, args: tuple = args, shapes: dict = shapes, flexible: bool = flexible) -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # exporter chatter about internal deprecations
                torch.onnx.export(
                    OnnxGraph(model, flexible),
                    args,
                    str(tmp),
                    input_names=["image", "qf_input"] if flexible else ["image"],
                    output_names=["restored", "qf"],
                    dynamic_shapes=shapes,
                    opset_version=opset,
                    external_data=False,
                    dynamo=True,
                    verbose=False,
                )

        atomic_write(path, write)
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m utils.utils_export",
        description="Export an FBCNN checkpoint to ONNX (dynamic batch/height/width): OUT.onnx takes `image` "
        "and predicts the QF (blind); OUT_qf.onnx also takes `qf_input` = (100 - QF) / 100 (flexible control). "
        "Both output `restored` and `qf`.",
    )
    parser.add_argument("checkpoint", help="FBCNN checkpoint (.pth or .safetensors, ours or official)")
    parser.add_argument("out", help="output file of the blind graph, e.g. fbcnn.onnx")
    parser.add_argument("--graphs", nargs="+", choices=GRAPHS, default=list(GRAPHS), help="graphs to write")
    parser.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    log.setLevel(logging.INFO)  # our messages; other libraries stay at WARNING
    try:
        paths = export_onnx(args.checkpoint, args.out, args.graphs, args.opset)
    except ValueError as exc:  # CheckpointError, not an FBCNN
        log.error("%s", exc)
        return 2
    for path in paths:
        log.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
