"""Train FBCNN / FBCNN-A from a JSON option file, on CPU, one GPU, or many GPUs/nodes via torchrun.

    python main_train_fbcnn.py --opt options/train_fbcnn_color.json
    torchrun --nproc_per_node 4 main_train_fbcnn.py --opt options/train_fbcnn_color.json
    python main_train_fbcnn.py --opt options/train_fbcnn_gray_cpu_small.json --set train.total_iter=2000

The global batch is ``datasets.train.dataloader_batch_size x WORLD_SIZE`` (the option is per process).
Weights are saved in the official FBCNN layout under ``<path.root>/<task>/models/``; training states
(optimizer, scheduler, step, RNG, EMA) under ``training_states/``. A run resumes automatically from
its newest training state.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from data.dataset_jpeg import TRAIN_DATASET_DEFAULTS, DatasetError, DatasetJPEG, worker_init_fn
from data.degradations import jpeg
from models.contract import as_restorer
from models.model_fbcnn import TRAIN_DEFAULTS, ModelFBCNN
from models.network_fbcnn import controller_live_units
from models.select_network import NetworkOptionError, check_network_forward, network_options
from utils.utils_dist import DistInfo, all_ranks_true, barrier, broadcast_object, cleanup, init_dist, reduce_mean
from utils.utils_eval import restore, score
from utils.utils_image import imread_uint, list_images, uint2tensor4
from utils.utils_io import atomic_write
from utils.utils_logger import get_logger
from utils.utils_option import OptionError, parse_options

CONTROL_QFS = (10, 90)  # validation compares the output at these set QFs (flexible-control response)
CONTROL_WEAK_DELTA = 0.1  # uint8 levels: a smaller mean change between them is logged as a weak control

VAL_DEFAULTS: dict[str, Any] = {
    "name": "val",
    "dataroot_H": None,  # folder of clean images; null disables validation
    "qfs": [10, 30, 50],
    "max_images": 0,  # 0 = all images of the folder
    "n_channels": 3,
}

SCHEMA: dict[str, Any] = {
    "task": "fbcnn",  # experiment name: outputs go to <path.root>/<task>
    "n_channels": 3,  # broadcast to datasets.* and netG.in_nc / out_nc
    "seed": 0,
    "device": "auto",  # auto | cpu | cuda
    "dist_timeout_s": 1800,  # DDP: how long ranks wait in a collective, e.g. while rank 0 validates
    "path": {
        "root": "experiments",
        "pretrained_netG": None,  # start from these weights (fresh optimizer), e.g. a model_zoo file
        "pretrained_step": 0,  # step counter / lr schedule position for pretrained_netG
        "resume_state": None,  # a training_states/*.state file; null = the newest one of this task (auto_resume)
        "auto_resume": True,
    },
    "datasets": {"train": TRAIN_DATASET_DEFAULTS, "val": VAL_DEFAULTS},
    "netG": {},  # free-form: net_type, init_type, init_gain and the constructor's arguments (select_network)
    "train": TRAIN_DEFAULTS,
}


def load_train_options(path: str | None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Parse, validate and complete the options (n_channels broadcast, data folders checked)."""
    opt = parse_options(path, SCHEMA, overrides)
    n = opt["n_channels"]
    if n not in (1, 3):
        raise OptionError(f"{path}: option 'n_channels' must be 1 or 3, got {n}")
    for phase, ds in opt["datasets"].items():
        ds["n_channels"] = n
        roots = ds["dataroot_H"]
        if phase == "train" and not roots:
            raise OptionError(f"{path}: option 'datasets.train.dataroot_H' is required (a folder or a list of folders)")
        for root in [roots] if isinstance(roots, str) else roots or []:
            if not Path(root).is_dir():
                raise OptionError(f"{path}: option 'datasets.{phase}.dataroot_H': folder {root!r} does not exist")
    if opt["datasets"]["train"]["seed"] is None:  # one seed for everything unless the patches get their own
        opt["datasets"]["train"]["seed"] = opt["seed"]
    cpu_only = opt["device"] == "cpu" or (opt["device"] == "auto" and not torch.cuda.is_available())
    if opt["train"]["amp"] == "fp16" and cpu_only:
        raise OptionError(f"{path}: option 'train.amp' fp16 needs CUDA; use bf16 on the CPU")
    try:
        opt["netG"] = network_options(opt["netG"], n)
        check_network_forward(opt["netG"], n)
    except NetworkOptionError as exc:
        raise OptionError(f"{path}: {exc}") from None
    if opt["train"]["total_iter"] <= 0:
        raise OptionError(f"{path}: option 'train.total_iter' must be positive")
    pretrained = opt["path"]["pretrained_netG"]
    states = Path(opt["path"]["root"]) / opt["task"] / "training_states"
    resuming = opt["path"]["resume_state"] or (opt["path"]["auto_resume"] and any(states.glob("*.state")))
    rank0 = os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) == "0"  # only rank 0 reads it
    if pretrained and not resuming and rank0 and not Path(pretrained).is_file():
        raise OptionError(f"{path}: option 'path.pretrained_netG': checkpoint file {pretrained!r} does not exist")
    return opt


class ResumableSampler(DistributedSampler):
    """DistributedSampler (also for one process) that can skip the first batches of an epoch on resume."""

    def __init__(self, dataset: DatasetJPEG, dist: DistInfo, seed: int, shuffle: bool) -> None:
        super().__init__(
            dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=shuffle, seed=seed, drop_last=True
        )
        self.skip = 0

    def __iter__(self):
        """``(epoch, index)`` pairs: the epoch reaches the dataset in persistent DataLoader workers too."""
        indices = list(super().__iter__())
        return iter([(self.epoch, i) for i in indices[self.skip :]])

    def __len__(self) -> int:
        return self.num_samples - self.skip


class Validator:
    """Validation on a folder at a few QFs, with the test script's JPEG, restore and metrics."""

    def __init__(self, opt_val: dict[str, Any]) -> None:
        self.qfs = list(opt_val["qfs"])
        paths = list_images(opt_val["dataroot_H"])
        if opt_val["max_images"]:
            paths = paths[: opt_val["max_images"]]
        if not paths:
            raise OptionError(f"option 'datasets.val.dataroot_H': no images in {opt_val['dataroot_H']}")
        self.gts = {p.stem: imread_uint(p, opt_val["n_channels"]) for p in paths}
        self.inputs = {(name, qf): jpeg(gt, qf) for name, gt in self.gts.items() for qf in self.qfs}

    def __call__(self, model: torch.nn.Module) -> tuple[dict[str, float], list[np.ndarray]]:
        """Mean metrics per QF (keys like 'psnr_qf10', 'qf_mae_qf10', 'psnr') and one (L, E, H) triplet.

        For FBCNN also the flexible-control response: ``control_delta``, the mean absolute change
        (uint8 levels) of the output between set QF 10 and set QF 90 on the inputs at the lowest
        validation QF, and ``control_live`` / ``control_units``, the live units of the QF embedding.
        """
        results: dict[str, float] = {}
        triplet: list[np.ndarray] = []
        net = as_restorer(model)
        for qf in self.qfs:
            rows = []
            for name, gt in self.gts.items():
                low = self.inputs[(name, qf)]
                restored, predicted = restore(net, low)
                row = score(gt, restored)
                row["qf_mae"] = abs(predicted - qf) if predicted is not None else math.nan
                rows.append(row)
                if not triplet:
                    triplet = [low, restored, gt]
            for key in rows[0]:
                results[f"{key}_qf{qf}"] = float(np.mean([r[key] for r in rows]))
        for key in ("psnr", "ssim", "psnrb", "qf_mae"):
            results[key] = float(np.mean([results[f"{key}_qf{qf}"] for qf in self.qfs]))
        if hasattr(model, "qf_embed"):
            results.update(self.control_response(model))
        return results, triplet

    def control_response(self, model: torch.nn.Module) -> dict[str, float]:
        """How much the flexible control moves the output: see ``__call__``."""
        qf = min(self.qfs)
        deltas = []
        for name in self.gts:
            low = self.inputs[(name, qf)]
            at_10, _ = restore(model, low, qf=CONTROL_QFS[0])
            at_90, _ = restore(model, low, qf=CONTROL_QFS[1])
            deltas.append(np.abs(at_10.astype(np.float64) - at_90).mean())
        live, units = controller_live_units(model)
        return {"control_delta": float(np.mean(deltas)), "control_live": float(live), "control_units": float(units)}


def _numbered(folder: Path, suffix: str) -> list[tuple[int, Path]]:
    found = []
    for p in folder.glob(f"*{suffix}"):
        m = re.fullmatch(rf"(\d+){re.escape(suffix)}", p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def _prune(folder: Path, suffix: str, keep: int) -> None:
    for _, path in _numbered(folder, suffix)[:-keep] if keep > 0 else []:
        path.unlink(missing_ok=True)


def accumulation(opt: dict[str, Any], world_size: int) -> tuple[int, int]:
    """``(micro-batches per step, global batch)`` from train.accumulate or train.global_batch.

    global batch = datasets.train.dataloader_batch_size x processes x accumulate. Setting ``global_batch``
    keeps it, and with it the meaning of the lr, whatever the number of GPUs (the paper: 256).
    """
    batch = opt["datasets"]["train"]["dataloader_batch_size"]
    accumulate, wanted = opt["train"]["accumulate"], opt["train"]["global_batch"]
    if not isinstance(accumulate, int) or accumulate < 1:
        raise OptionError(f"option 'train.accumulate' must be a positive integer, got {accumulate!r}")
    if wanted is None:
        return accumulate, batch * world_size * accumulate
    per_step = batch * world_size
    if not isinstance(wanted, int) or wanted < per_step or wanted % per_step:
        raise OptionError(
            f"option 'train.global_batch' ({wanted!r}) must be a multiple of dataloader_batch_size x processes "
            f"= {batch} x {world_size} = {per_step}"
        )
    return wanted // per_step, wanted


class Trainer:
    def __init__(self, opt: dict[str, Any], dist: DistInfo) -> None:
        self.opt, self.dist = opt, dist
        self.exp_dir = Path(opt["path"]["root"]) / opt["task"]
        self.models_dir = self.exp_dir / "models"
        self.states_dir = self.exp_dir / "training_states"
        if dist.is_main:
            self.models_dir.mkdir(parents=True, exist_ok=True)
            self.states_dir.mkdir(parents=True, exist_ok=True)
            (self.exp_dir / "options.json").write_text(json.dumps(opt, indent=2))
        barrier()
        self.log = get_logger("train", self.exp_dir / "train.log", enabled=dist.is_main)
        torch.manual_seed(opt["seed"] + dist.rank)
        np.random.seed(opt["seed"] + dist.rank)
        if opt["train"]["deterministic"]:
            torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = not opt["train"]["deterministic"]  # fastest conv kernels for fixed shapes

        self.train_set = DatasetJPEG(opt["datasets"]["train"])
        ds_opt = opt["datasets"]["train"]
        self.accumulate, self.global_batch = accumulation(opt, dist.world_size)
        self.sampler = ResumableSampler(self.train_set, dist, seed=opt["seed"], shuffle=ds_opt["dataloader_shuffle"])
        workers = ds_opt["dataloader_num_workers"]
        self.loader = DataLoader(
            self.train_set,
            batch_size=ds_opt["dataloader_batch_size"],
            sampler=self.sampler,
            num_workers=workers,
            worker_init_fn=worker_init_fn,
            drop_last=True,
            pin_memory=dist.device.type == "cuda",
            persistent_workers=workers > 0,  # the epoch travels with each index (ResumableSampler)
            prefetch_factor=4 if workers > 0 else None,
        )
        if len(self.sampler) < ds_opt["dataloader_batch_size"]:
            raise OptionError(
                f"datasets.train: an epoch has {len(self.sampler)} samples per process, fewer than one batch "
                f"({ds_opt['dataloader_batch_size']}); raise samples_per_epoch"
            )
        val_opt = opt["datasets"]["val"]
        self.validator = Validator(val_opt) if dist.is_main and val_opt["dataroot_H"] else None

        self.model = ModelFBCNN(opt["netG"], opt["train"], dist.device, ddp=dist.enabled)
        self.best_psnr = -math.inf
        self._resume_or_init()
        self.tb = None
        if dist.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.exp_dir / "tensorboard"))

    # ------------------------------------------------------------------ set-up
    def _load_newest_state(self) -> tuple[Path | None, dict[str, Any]]:
        """Rank 0: load the state to resume from (``resume_state``, or the newest readable one of the task).

        A state that cannot be read (truncated, corrupt) is skipped with a warning naming it; the previous
        one is used. Returns (path or None, the state's extra entries).
        """
        path_opt = self.opt["path"]
        if path_opt["resume_state"] is not None:
            candidates = [Path(path_opt["resume_state"])]
        elif path_opt["auto_resume"]:
            candidates = [p for _, p in reversed(_numbered(self.states_dir, ".state"))]
        else:
            candidates = []
        for path in candidates:
            try:
                return path, self.model.load_training_state(path)
            except Exception as exc:  # torch.load raises many types for truncated or foreign files
                if path_opt["resume_state"] is not None:
                    raise OptionError(f"path.resume_state: cannot read training state {path}: {exc}") from exc
                self.log.warning(
                    f"training state {path} cannot be read ({type(exc).__name__}: {exc}); "
                    "falling back to the previous one"
                )
        if candidates:
            raise OptionError(
                f"no readable training state in {self.states_dir} (tried {[str(p) for p in candidates]}); "
                "remove them to start afresh, or set path.resume_state"
            )
        return None, {}

    def _resume_or_init(self) -> None:
        """Rank 0 resumes or loads the pretrained weights; every other rank receives that state from it.

        Only rank 0 writes checkpoints, so on node-local disks the other nodes have none: they must
        not start afresh (or from an older state of their own) while rank 0 resumes.
        """
        path_opt = self.opt["path"]
        source = "initialised"
        if self.dist.is_main:
            path, extra = self._load_newest_state()
            if path is not None:
                source = f"resumed from {path}"
                best = extra.get("best_psnr")
                self.best_psnr = float(best) if best is not None else self._best_from_json()
            elif path_opt["pretrained_netG"]:
                self.model.load_pretrained(path_opt["pretrained_netG"], path_opt["pretrained_step"])
                source = f"initialised from {path_opt['pretrained_netG']}"
            self.log.info(f"{source}: step {self.model.step}, epoch {self.model.epoch}, lr {self.model.lr:.3g}")
        if self.dist.enabled:
            state, self.best_psnr, source = broadcast_object(
                (self.model.training_state(rng=False), self.best_psnr, source) if self.dist.is_main else None
            )
            if not self.dist.is_main:
                self.model.apply_training_state(state)
        self._record_start(source)
        n_params = sum(p.numel() for p in self.model.net.parameters())
        self.log.info(f"network {self.opt['netG']['net_type']}: {n_params / 1e6:.2f}M parameters; {self.train_set!r}")
        batch = self.opt["datasets"]["train"]["dataloader_batch_size"]
        self.log.info(
            f"world size {self.dist.world_size} on {self.dist.device}: batch {batch} per process x "
            f"{self.dist.world_size} process(es) x {self.accumulate} accumulated = {self.global_batch} global; "
            f"amp {self.opt['train']['amp']}"
        )

    def _best_from_json(self) -> float:
        """The best validation PSNR recorded beside best_G.pth (training states older than this field)."""
        path = self.models_dir / "best_G.json"
        try:
            return float(json.loads(path.read_text())["psnr"])
        except (OSError, ValueError, KeyError):
            return -math.inf

    def _record_start(self, source: str) -> None:
        """Each rank writes ``<root>/<task>/ranks/rank<r>.json``: host, step and a checksum of its weights,
        so that a multi-node restart can be checked (every rank must show the same step and checksum)."""
        import socket

        net = self.model.net
        checksum = float(sum(p.detach().double().sum() * (i + 1) for i, p in enumerate(net.parameters())))
        record = {
            "rank": self.dist.rank,
            "host": socket.gethostname(),
            "node_rank": int(os.environ.get("GROUP_RANK", os.environ.get("SLURM_NODEID", "0"))),
            "step": self.model.step,
            "params_checksum": checksum,
            "source": source,
        }
        path = self.exp_dir / "ranks" / f"rank{self.dist.rank}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(record, indent=2)))

    # ------------------------------------------------------------------ loop
    def train(self) -> int:
        """Run until train.total_iter (log lines printed above the progress bar). Returns 0, or 1 on NaN/Inf."""
        from tqdm.contrib.logging import logging_redirect_tqdm

        with logging_redirect_tqdm(loggers=[self.log]):
            return self._train()

    def _train(self) -> int:
        """The loop of ``train``. Returns 0, or 1 when the loss became NaN/Inf.

        The loss terms stay on the device between log lines: the host waits for the device only when
        it logs, validates or saves (and checks then that no loss since the last check was NaN/Inf).
        """
        opt_train = self.opt["train"]
        total = opt_train["total_iter"]
        model = self.model
        patches_per_step = self.global_batch
        bar = None
        if self.dist.is_main:
            from tqdm import tqdm

            bar = tqdm(  # disable=None: no bar when stderr is not a terminal (the log lines say it all)
                total=total, initial=model.step, desc=self.opt["task"], unit="it", dynamic_ncols=True, disable=None
            )
        sums: dict[str, torch.Tensor] = {}
        finite = torch.ones((), dtype=torch.bool, device=self.dist.device)
        group: list[dict[str, Any]] = []
        tick, last_print = time.perf_counter(), model.step
        deadline = time.perf_counter() + 60 * opt_train["max_minutes"] if opt_train["max_minutes"] > 0 else math.inf
        while model.step < total:
            self.sampler.set_epoch(model.epoch)
            self.sampler.skip = model.epoch_batches * self.loader.batch_size
            for batch in self.loader:
                model.epoch_batches += 1
                group.append(batch)
                if len(group) < self.accumulate:
                    continue
                losses = model.optimize_parameters(group)
                group = []
                finite &= torch.isfinite(losses["loss"])
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + v
                step = model.step
                if bar is not None:
                    bar.update(1)
                checks = [step % opt_train[k] == 0 for k in ("checkpoint_print", "checkpoint_test", "checkpoint_save")]
                if any(checks) or step == total:
                    if not all_ranks_true(finite):
                        self.log.error(
                            f"non-finite loss between steps {last_print} and {step}: stopping. The last good weights "
                            f"and training state are in {self.models_dir} and {self.states_dir}; lower the lr or "
                            "enable train.G_optimizer_clipgrad"
                        )
                        return 1
                out_of_time = False
                if checks[0] and deadline < math.inf and step < total:  # every rank takes part: all stop together
                    past = torch.tensor(time.perf_counter() > deadline, device=self.dist.device)
                    out_of_time = all_ranks_true(past)
                if checks[0] or step == total:
                    n = max(step - last_print, 1)
                    elapsed = time.perf_counter() - tick
                    means = {k: reduce_mean(float(v), self.dist.device) / n for k, v in sums.items()}
                    self._log_train(step, means, n * patches_per_step / elapsed, elapsed / n, bar)
                    sums, tick, last_print = {}, time.perf_counter(), step
                if checks[1] or step == total or out_of_time:
                    self.validate(step)
                if checks[2] or step == total or out_of_time:
                    self.save(step)
                if out_of_time:
                    self.log.info(
                        f"time budget train.max_minutes={opt_train['max_minutes']:g} reached at step {step} of "
                        f"{total}: stopped; the same command continues from the saved state"
                    )
                    if bar is not None:
                        bar.close()
                    return 0
                if step >= total:
                    break
            else:
                model.epoch += 1
                model.epoch_batches = 0
        if bar is not None:
            bar.close()
        self.log.info(f"done: {model.step} iterations; weights in {self.models_dir}")
        return 0

    def _log_train(self, step: int, means: dict[str, float], patches_per_s: float, s_per_it: float, bar) -> None:
        if not self.dist.is_main:
            return
        lr = self.model.lr
        self.log.info(
            f"step {step:>7d} | epoch {self.model.epoch} | lr {lr:.3e} | loss {means['loss']:.5f} "
            f"(img {means['l_img']:.5f}, qf {means['l_qf']:.5f}) | {patches_per_s:.1f} patches/s, {s_per_it:.3f} s/it"
        )
        if bar is not None:
            bar.set_postfix(loss=f"{means['loss']:.4f}", lr=f"{lr:.2e}", pps=f"{patches_per_s:.0f}")
        for key in ("loss", "l_img", "l_qf"):
            self.tb.add_scalar(f"train/{key}", means[key], step)
        self.tb.add_scalar("train/lr", lr, step)
        self.tb.add_scalar("train/patches_per_s", patches_per_s, step)

    def validate(self, step: int) -> None:
        if self.validator is not None:
            start = time.perf_counter()
            metrics, triplet = self.validator(self.model.eval_net())
            seconds = time.perf_counter() - start
            if self.dist.enabled and seconds > 0.5 * self.opt["dist_timeout_s"]:
                self.log.warning(
                    f"validation took {seconds:.0f} s while the other ranks wait at most dist_timeout_s = "
                    f"{self.opt['dist_timeout_s']} s: raise dist_timeout_s or lower datasets.val.max_images"
                )
            parts = [
                f"QF{qf}: {metrics[f'psnr_qf{qf}']:.2f} dB / {metrics[f'ssim_qf{qf}']:.4f} / "
                f"{metrics[f'psnrb_qf{qf}']:.2f}, QF MAE {metrics[f'qf_mae_qf{qf}']:.1f}"
                for qf in self.validator.qfs
            ]
            self.log.info(f"validation step {step} | PSNR/SSIM/PSNR-B | " + " | ".join(parts))
            if "control_delta" in metrics:
                self._log_control(step, metrics)
            for key, value in metrics.items():
                self.tb.add_scalar(f"val/{key}", value, step)
            crops = [uint2tensor4(img[:256, :256])[0] for img in triplet]
            self.tb.add_images("val/jpeg_restored_gt", torch.stack(crops), step)
            self.tb.flush()
            if metrics["psnr"] > self.best_psnr:
                self.best_psnr = metrics["psnr"]
                self.model.save_network(self.models_dir / "best_G.pth")
                (self.models_dir / "best_G.json").write_text(json.dumps({"step": step, **metrics}, indent=2))
                self.log.info(f"new best validation PSNR {self.best_psnr:.3f} dB -> {self.models_dir / 'best_G.pth'}")
        barrier()

    def _log_control(self, step: int, metrics: dict[str, float]) -> None:
        delta, live, units = metrics["control_delta"], int(metrics["control_live"]), int(metrics["control_units"])
        self.log.info(
            f"flexible control step {step} | set QF {CONTROL_QFS[0]} vs {CONTROL_QFS[1]}: mean change {delta:.3f} "
            f"levels | live QF-embedding units {live}/{units}"
        )
        if live == 0:
            self.log.warning(
                f"FLEXIBLE CONTROL DEAD at step {step}: no unit of qf_embed's last ReLU is active for any QF, so "
                "qf_input cannot change the output and gradients cannot revive it. Restart from an earlier "
                "checkpoint or re-initialise the controller (see models/model_fbcnn.init_weights)"
            )
        elif delta < CONTROL_WEAK_DELTA:
            self.log.warning(
                f"flexible control weak at step {step}: set QF {CONTROL_QFS[0]} vs {CONTROL_QFS[1]} changes the "
                f"output by {delta:.3f} levels on average (< {CONTROL_WEAK_DELTA}); {live}/{units} units live"
            )

    def save(self, step: int) -> None:
        if self.dist.is_main:
            self.model.save_network(self.models_dir / f"{step}_G.pth")
            self.model.save_training_state(self.states_dir / f"{step}.state", {"best_psnr": self.best_psnr})
            keep = self.opt["train"]["keep_last"]
            _prune(self.models_dir, "_G.pth", keep)
            _prune(self.states_dir, ".state", keep)
            self.log.info(f"saved {self.models_dir / f'{step}_G.pth'} and training state")
        barrier()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--opt", required=True, help="training option file (JSON with // comments), see options/")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one option, e.g. --set train.G_optimizer_lr=2e-4 --set datasets.train.H_size=64 (repeatable)",
    )
    parser.add_argument(
        "--resume", metavar="STATE", help="resume from this training state file (default: newest of the task)"
    )
    parser.add_argument("--check", action="store_true", help="validate the options and the training images, then exit")
    args = parser.parse_args(argv)

    overrides = list(args.overrides) + ([f"path.resume_state={args.resume}"] if args.resume else [])
    try:
        opt = load_train_options(args.opt, overrides)
    except OptionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    dist = init_dist(opt["device"], opt["dist_timeout_s"])
    try:
        if args.check:
            DatasetJPEG(opt["datasets"]["train"])
            print("options and training images are valid")
            return 0
        return Trainer(opt, dist).train()
    except (OptionError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(main())
