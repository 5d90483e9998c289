"""The network contract of the harness, and the adapter that puts any network under it.

Every network the test script, the restore CLI, the trainer's validation and the benchmarks call
follows one contract: ``forward(x, qf_input=None) -> (restored, qf)``, ``x`` in [0, 1] ``[B, C, H, W]``,
``qf_input`` and ``qf`` as **(100 - QF) / 100** of shape ``[B, 1]`` (``qf`` None for methods that
predict none). The registry's networks (FBCNN, DnCNN, the deblocking filter) follow it as they are;
``as_restorer`` wraps anything else: a network returning a plain tensor, one without a ``qf_input``
argument (it then gets no QF), a spandrel model.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

__all__ = [
    "PerQFModels",
    "Restorer",
    "as_restorer",
    "label_to_qf",
    "qf_to_label",
    "split_output",
    "takes_qf_input",
]


def qf_to_label(qf: int | float) -> float:
    """JPEG quality factor -> the network's normalised compression level (100 - QF) / 100."""
    return (100.0 - qf) / 100.0


def label_to_qf(label: float) -> float:
    """Inverse of ``qf_to_label``: (100 - QF) / 100 -> QF."""
    return 100.0 * (1.0 - label)


def takes_qf_input(net: nn.Module) -> bool:
    """Whether ``net.forward`` has a ``qf_input`` parameter (FBCNN-style flexible control)."""
    module = getattr(net, "_orig_mod", net)  # a torch.compile wrapper
    try:
        return "qf_input" in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False


def split_output(out: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A network's output as ``(restored, qf or None)``: a tensor, or a tuple/list whose first item is one."""
    if isinstance(out, torch.Tensor):
        return out, None
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        qf = out[1] if len(out) > 1 and isinstance(out[1], torch.Tensor) else None
        return out[0], qf
    raise TypeError(f"a network must return a tensor or a (restored, qf) tuple, got {type(out).__name__}")


class Restorer(nn.Module):
    """Any image-to-image network under the contract (see the module docstring).

    ``qf_input`` is passed on only if the network's forward takes it; attributes the wrapper does not
    have (``in_nc``, ``net_type``, ...) are looked up on the network.
    """

    def __init__(self, net: nn.Module, call: Any = None) -> None:
        super().__init__()
        self.net = net
        self._call = call  # e.g. a spandrel descriptor, which pads to the model's size requirements
        self._takes_qf = takes_qf_input(net)

    def forward(
        self, x: torch.Tensor, qf_input: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self._call is not None:
            return split_output(self._call(x))
        if self._takes_qf:
            return split_output(self.net(x, qf_input))
        return split_output(self.net(x))

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("net"), name)


def as_restorer(net: nn.Module) -> nn.Module:
    """``net`` itself when it follows the contract (the registry's networks), else wrapped in ``Restorer``."""
    from models.select_network import NETWORKS

    contract_types = tuple(spec.build for spec in NETWORKS.values() if isinstance(spec.build, type))
    if isinstance(net, Restorer) or (isinstance(net, contract_types) and takes_qf_input(net)):
        return net
    return Restorer(net)


class PerQFModels(nn.Module):
    """One method made of one model per JPEG quality (non-blind methods such as ARCNN, SwinIR, ART).

    ``forward(x, qf_input)`` restores with the model trained for QF ``round(100 * (1 - qf_input))``;
    the harness gives it the true QF (``qf_mode`` oracle). It predicts no QF. A QF without a model is
    an error naming the QFs it has.
    """

    def __init__(self, models: dict[int, nn.Module]) -> None:
        super().__init__()
        if not models:
            raise ValueError("a per-QF method needs at least one model")
        self.by_qf = nn.ModuleDict({str(int(qf)): as_restorer(m) for qf, m in sorted(models.items())})
        self.qfs = sorted(int(q) for q in models)
        channels = getattr(next(iter(self.by_qf.values())), "in_nc", None)
        if channels is not None:
            self.in_nc = int(channels)

    def forward(self, x: torch.Tensor, qf_input: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        if qf_input is None:
            raise ValueError(f"a per-QF method needs the JPEG quality (qf_mode oracle or fixed); it has QFs {self.qfs}")
        qf = round(label_to_qf(float(qf_input.flatten()[0])))
        if qf not in self.qfs:
            raise ValueError(f"this per-QF method has no model for QF {qf}; it has QFs {self.qfs}")
        restored, _ = self.by_qf[str(qf)](x)
        return restored, None
