"""The training step of FBCNN and of any other restoration network: losses, optimizer, scheduler,
AMP, EMA and training-state I/O.

Loss = image loss (L1, L2 or Charbonnier) + lambda * L1(predicted qf, qf label), where the QF term is
averaged only over samples whose label is known: double-JPEG samples carry a NaN label and are
masked per sample (the official code looked at the first sample of a batch only). A network that
returns a plain tensor (no ``(restored, qf)`` tuple) trains with the image loss alone.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import random
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from models.checkpoint import write_state_dict
from models.contract import qf_to_label, split_output, takes_qf_input
from models.select_network import define_G
from utils.utils_io import atomic_write

# Schema of the `train` option section (see utils/utils_option.py). Values are the paper's.
TRAIN_DEFAULTS: dict[str, Any] = {
    "total_iter": 160000,
    "G_lossfn_type": "l1",  # image loss: l1 | l2 | charbonnier
    "G_lossfn_weight": 1.0,
    "QF_lossfn_weight": 0.1,  # lambda of the QF loss (paper 0.1; official option files 0.001)
    "G_optimizer_type": "adam",  # adam | adamw (decoupled weight decay G_optimizer_wd)
    "G_optimizer_lr": 1e-4,
    "G_optimizer_betas": [0.9, 0.999],
    "G_optimizer_wd": 0.0,
    "G_optimizer_clipgrad": 0.0,  # max gradient norm; 0 disables clipping
    "G_scheduler_type": "MultiStepLR",  # MultiStepLR | CosineAnnealingLR
    "G_scheduler_milestones": [40000, 80000, 120000],
    "G_scheduler_gamma": 0.5,
    "G_scheduler_eta_min": 1.25e-5,  # CosineAnnealingLR only: final lr
    "E_decay": 0.0,  # EMA decay of the weights (e.g. 0.999); 0 disables EMA
    "amp": "none",  # none | bf16 (CPU or CUDA) | fp16 (CUDA)
    "channels_last": False,
    "deterministic": False,  # deterministic kernels: bit-identical reruns and resumes
    "find_unused_parameters": False,  # DDP: for networks with parameters some steps do not use
    # FBCNN: fraction of steps whose flexible controller gets the true QF (a double JPEG: the lower, dominant one)
    # instead of the predicted one; the QF predictor trains as usual. 0 = the official training (always predicted).
    "qf_control_true_prob": 0.0,
    "checkpoint_print": 100,  # log every N iterations
    "checkpoint_save": 5000,  # save weights and training state every N iterations
    "checkpoint_test": 5000,  # validate every N iterations
    "keep_last": 3,  # number of saved checkpoints/states kept
    # Wall-clock budget of this run in minutes (0 = none), e.g. a job's time limit: at the first log line
    # (checkpoint_print) past it the run validates, saves its state and exits 0; the same command continues it.
    "max_minutes": 0.0,
    "save_half": False,  # store the saved weights (*_G.pth, best_G.pth) in float16: half the size
    # Gradient accumulation: micro-batches per optimisation step; or set global_batch (patches per step over all
    # processes), from which it is derived: global_batch = dataloader_batch_size x processes x accumulate.
    "accumulate": 1,
    "global_batch": None,
}


def init_controller(net: nn.Module) -> None:
    """Initialise FBCNN's QF embedding (``qf_embed``) so that it depends on the QF from the start.

    Weights He-uniform for ReLU (variance kept through the three layers), biases uniform in
    +-1/sqrt(fan_in) (PyTorch's default). The official orthogonal init with gain 0.2 and zero
    biases starts this 1-input MLP with outputs near 1e-4, 200 times less QF-dependent; Adam then
    moves every bias by about the learning rate per step whatever its tiny gradient, the biases
    drift below zero and the ReLU units die for good. Our v1 colour model ended with 0 of 128
    live units at the last ReLU, and ``qf_input`` changed nothing (see ``controller_live_units``).
    """
    for module in getattr(net, "qf_embed", ()):
        if isinstance(module, nn.Linear):
            module.reset_parameters()
            nn.init.kaiming_uniform_(module.weight, nonlinearity="relu")


def init_weights(net: nn.Module, init_type: str = "orthogonal", gain: float = 0.2) -> None:
    """Initialise conv and linear weights (biases to zero); 'default' keeps PyTorch's init.

    FBCNN's QF embedding always gets ``init_controller`` instead, whatever ``init_type`` says.
    """
    if init_type not in ("default", "orthogonal", "kaiming_normal"):
        raise ValueError(f"train.init_type {init_type!r} must be default, orthogonal or kaiming_normal")
    for module in net.modules() if init_type != "default" else ():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if init_type == "orthogonal":
                nn.init.orthogonal_(module.weight, gain=gain)
            else:
                nn.init.kaiming_normal_(module.weight, a=0, mode="fan_in")
                module.weight.data.mul_(gain)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    init_controller(net)


def image_loss(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "l1":
        return F.l1_loss(pred, target)
    if kind == "l2":
        return F.mse_loss(pred, target)
    if kind == "charbonnier":
        return torch.sqrt((pred - target) ** 2 + 1e-6).mean()
    raise ValueError(f"train.G_lossfn_type {kind!r} must be l1, l2 or charbonnier")


def masked_qf_loss(qf_pred: torch.Tensor, qf_label: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """L1 between predicted and true (100-QF)/100 over samples with a known (non-NaN) label; 0 if none.

    ``reduction``: "mean" over the known labels, or "sum" (for accumulation over micro-batches).
    No host synchronisation: the mask is applied arithmetically.
    """
    known = ~torch.isnan(qf_label)
    errors = torch.where(known, (qf_pred - torch.nan_to_num(qf_label)).abs(), torch.zeros_like(qf_pred))
    if reduction == "sum":
        return errors.sum()
    return errors.sum() / known.sum().clamp(min=1)


class ModelFBCNN:
    """Owns the network (FBCNN or any other, optionally DDP-wrapped), its optimizer, scheduler, EMA and AMP."""

    def __init__(
        self, opt_net: Mapping[str, Any], opt_train: Mapping[str, Any], device: torch.device, ddp: bool
    ) -> None:
        self.opt = dict(opt_train)
        self.device = device
        self.net = define_G(opt_net)
        init_weights(self.net, opt_net.get("init_type", "default"), opt_net.get("init_gain", 1.0))
        self.net.to(device)
        self.memory_format = torch.channels_last if self.opt["channels_last"] else torch.contiguous_format
        self.net.to(memory_format=self.memory_format)
        self.ema = copy.deepcopy(self.net).eval().requires_grad_(False) if self.opt["E_decay"] > 0 else None
        self.net_ddp: nn.Module = (
            DistributedDataParallel(
                self.net,
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=self.opt["find_unused_parameters"],
            )
            if ddp
            else self.net
        )
        optimizers = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
        kind = self.opt["G_optimizer_type"].lower()
        if kind not in optimizers:
            raise ValueError(
                f"train.G_optimizer_type {self.opt['G_optimizer_type']!r} must be one of {sorted(optimizers)}"
            )
        self.optimizer = optimizers[kind](
            [p for p in self.net.parameters() if p.requires_grad],
            lr=self.opt["G_optimizer_lr"],
            betas=tuple(self.opt["G_optimizer_betas"]),
            weight_decay=self.opt["G_optimizer_wd"],
        )
        self.scheduler = self._make_scheduler()
        self.takes_qf = takes_qf_input(self.net)
        amp = self.opt["amp"]
        if amp not in ("none", "bf16", "fp16"):
            raise ValueError(f"train.amp {amp!r} must be none, bf16 or fp16")
        if amp == "fp16" and device.type != "cuda":
            raise ValueError("train.amp 'fp16' needs CUDA; use 'bf16' on CPU")
        self.amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
        self.step = 0  # optimisation steps done
        self.epoch = 0  # current epoch
        self.epoch_batches = 0  # batches of the current epoch already consumed (for exact resume)

    def _make_scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        kind = self.opt["G_scheduler_type"]
        if kind == "MultiStepLR":
            return torch.optim.lr_scheduler.MultiStepLR(
                self.optimizer, milestones=list(self.opt["G_scheduler_milestones"]), gamma=self.opt["G_scheduler_gamma"]
            )
        if kind == "CosineAnnealingLR":
            return torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizer, T_max=self.opt["total_iter"], eta_min=self.opt["G_scheduler_eta_min"]
            )
        raise ValueError(f"train.G_scheduler_type {kind!r} must be MultiStepLR or CosineAnnealingLR")

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def optimize_parameters(
        self, batches: Mapping[str, torch.Tensor] | Sequence[Mapping[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """One optimisation step on one batch, or on several accumulated (keys L, H, qf_label each).

        With ``k`` micro-batches of equal size the update is the one of their union: the image loss
        is the mean of the micro-batch means, the QF loss the mean over every known label of the
        group, and DDP all-reduces the gradients once, on the last micro-batch. Returns the loss terms
        as detached tensors on the device (no host synchronisation; call ``.item()`` when logging).
        """
        batches = [batches] if isinstance(batches, Mapping) else list(batches)
        self.net_ddp.train()
        labels = [b["qf_label"].to(self.device, non_blocking=True).view(-1, 1) for b in batches]
        n_known = sum((~torch.isnan(label)).sum() for label in labels).clamp(min=1)
        self.optimizer.zero_grad(set_to_none=True)
        total = {"loss": 0.0, "l_img": 0.0, "l_qf": 0.0}
        # Teacher-forced control: this step the controller gets the known QF instead of the prediction.
        forced = self.takes_qf and np.random.default_rng([7, self.step]).random() < self.opt["qf_control_true_prob"]
        for i, (batch, qf_label) in enumerate(zip(batches, labels, strict=True)):
            low = batch["L"].to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
            high = batch["H"].to(self.device, non_blocking=True)
            last = i == len(batches) - 1
            sync = contextlib.nullcontext() if last or not isinstance(self.net_ddp, DistributedDataParallel) else None
            with sync or self.net_ddp.no_sync():
                with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                    args = (low, control_label(batch).to(self.device)) if forced else (low,)
                    restored, qf_pred = split_output(self.net_ddp(*args))
                l_img = image_loss(restored.float(), high, self.opt["G_lossfn_type"]) / len(batches)
                if qf_pred is None:  # a network without a QF head trains with the image loss alone
                    l_qf = torch.zeros((), device=self.device)
                else:
                    l_qf = masked_qf_loss(qf_pred.float(), qf_label, reduction="sum") / n_known
                loss = self.opt["G_lossfn_weight"] * l_img + self.opt["QF_lossfn_weight"] * l_qf
                self.scaler.scale(loss).backward()
            for key, value in (("loss", loss), ("l_img", l_img), ("l_qf", l_qf)):
                total[key] = total[key] + value.detach()
        if self.opt["G_optimizer_clipgrad"] > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.opt["G_optimizer_clipgrad"])
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        if self.ema is not None:
            self._update_ema()
        n_qf = sum((~torch.isnan(label)).sum() for label in labels)
        return {**total, "n_qf": n_qf.detach()}

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.opt["E_decay"], (1 + self.step) / (10 + self.step))  # warm-up for early steps
        for ema_p, p in zip(self.ema.parameters(), self.net.parameters(), strict=True):
            ema_p.lerp_(p.detach(), 1 - decay)

    def eval_net(self) -> nn.Module:
        """The network to validate and ship: the EMA copy when EMA is on."""
        return self.ema if self.ema is not None else self.net

    # ------------------------------------------------------------------ checkpoints
    def save_network(self, path: str | os.PathLike, half: bool | None = None) -> Path:
        """Write the (EMA if on) weights as a plain state_dict in the official layout (fp16 if ``half``,
        default ``train.save_half``)."""
        half = self.opt["save_half"] if half is None else half
        return write_state_dict(self.eval_net().state_dict(), path, half=half)

    def training_state(self, rng: bool = True) -> dict[str, Any]:
        """Everything needed to continue exactly: weights, optimizer, scheduler, scaler, counters, EMA, RNG."""
        state: dict[str, Any] = {
            "step": self.step,
            "epoch": self.epoch,
            "epoch_batches": self.epoch_batches,
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }
        if rng:
            state["rng"] = {
                "torch": torch.get_rng_state(),
                "numpy": np.random.get_state(),
                "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def save_training_state(self, path: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> None:
        """Write ``training_state()`` (plus ``extra`` entries, e.g. the best validation PSNR) atomically."""
        atomic_write(path, lambda tmp: torch.save({**self.training_state(), **(extra or {})}, tmp))

    def load_training_state(self, path: str | os.PathLike) -> dict[str, Any]:
        """Restore a file written by ``save_training_state`` (our own files: full unpickling is allowed).

        Returns the state read (its extra entries included). Raises on an unreadable or truncated file.
        """
        state = torch.load(path, map_location="cpu", weights_only=False)
        self.apply_training_state(state)
        return state

    def apply_training_state(self, state: Mapping[str, Any]) -> None:
        """Restore a ``training_state()`` dict; its RNG part, when present, too."""
        self.net.load_state_dict(state["net"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(state.get("ema", state["net"]))
        self.step, self.epoch, self.epoch_batches = int(state["step"]), int(state["epoch"]), int(state["epoch_batches"])
        rng = state.get("rng")
        if rng is None:
            return
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        if rng["cuda"] and torch.cuda.is_available():  # a state saved with more GPUs than visible now
            for index, cuda_state in enumerate(rng["cuda"][: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(cuda_state, index)

    def load_pretrained(self, path: str | os.PathLike, start_step: int = 0) -> None:
        """Start from saved weights (e.g. a committed model), with a fresh optimizer positioned at ``start_step``."""
        from models.checkpoint import read_state_dict

        state = read_state_dict(path)
        self.net.load_state_dict(state, strict=True)
        if self.ema is not None:
            self.ema.load_state_dict(state)
        with warnings.catch_warnings():  # stepping the schedule without optimizer steps is intended here
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(start_step):
                self.scheduler.step()
        self.step = start_step


def control_label(batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``[B, 1]`` (100 - QF) / 100 of the QF a batch's samples should be restored for: the JPEG's QF, or for a
    double JPEG the lower of its two QFs (the dominant compression, as FBCNN-D)."""
    qf1, qf2 = batch["qf1"].view(-1).float(), batch["qf2"].view(-1).float()
    dominant = torch.where(qf2 > 0, torch.minimum(qf1, qf2), qf1)
    return qf_to_label(dominant).view(-1, 1)


def loss_is_finite(losses: Mapping[str, float]) -> bool:
    return all(math.isfinite(float(v)) for v in losses.values())
