"""Training options users rely on, each run end to end on the tiny configuration (a few iterations).

EMA, bf16 autocast on the CPU, the fp16-on-CPU error, the l2 / charbonnier losses, the cosine schedule,
gradient clipping, ``path.pretrained_netG`` with ``pretrained_step``, ``--check`` and ``--resume FILE``.
Validation is off unless a test needs it; every run writes under its tmp folder (``path.root``).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch

import main_train_fbcnn
from models import read_state_dict, write_state_dict
from models.model_fbcnn import ModelFBCNN, image_loss
from tests.conftest import ROOT, make_tiny_fbcnn
from utils.training_log import parse_train_log

TINY_OPT = ROOT / "options" / "train_fbcnn_gray_tiny.json"
NO_VAL = "datasets.val.dataroot_H=null"


def train(root: Path, *overrides: str, extra_args: tuple[str, ...] = ()) -> int:
    """``main_train_fbcnn.main`` on the tiny options, outputs under ``root``; returns the exit status."""
    args = ["--opt", str(TINY_OPT), *extra_args]
    for override in (f"path.root={root}", "device=cpu", *overrides):
        args += ["--set", override]
    return main_train_fbcnn.main(args)


def steps(root: Path) -> dict[int, dict[str, float]]:
    """step -> lr, loss, l_img, l_qf from the run's train.log (the last occurrence of a step wins)."""
    return parse_train_log(root / "fbcnn_gray_tiny" / "train.log").train


@pytest.fixture
def record_steps(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, dict[str, torch.Tensor]]]:
    """Records the network's weights before the first step and after every step (float64 copies)."""
    snapshots: list[dict[str, dict[str, torch.Tensor]]] = []
    original = ModelFBCNN.optimize_parameters

    def recorded(self, batches):
        if not snapshots:
            snapshots.append({k: v.detach().double().clone() for k, v in self.net.state_dict().items()})
        losses = original(self, batches)
        snapshots.append({k: v.detach().double().clone() for k, v in self.net.state_dict().items()})
        return losses

    monkeypatch.setattr(ModelFBCNN, "optimize_parameters", recorded)
    return snapshots


def test_ema_weights_are_shipped_and_follow_the_documented_decay(tmp_path, datasets, record_steps) -> None:
    """train.E_decay: the saved *_G.pth hold the EMA, ema_k = d_k ema_(k-1) + (1 - d_k) w_k with the warm-up
    d_k = min(E_decay, (1 + k) / (10 + k)), starting from the initial weights; the raw weights are in the state."""
    decay, total = 0.9, 6
    assert (
        train(tmp_path, NO_VAL, f"train.E_decay={decay}", f"train.total_iter={total}", "train.checkpoint_save=6") == 0
    )
    exp = tmp_path / "fbcnn_gray_tiny"
    saved = read_state_dict(exp / "models" / "6_G.pth")
    state = torch.load(exp / "training_states" / "6.state", weights_only=False)
    assert len(record_steps) == total + 1
    ema = dict(record_steps[0])
    for k in range(1, total + 1):
        d = min(decay, (1 + k) / (10 + k))
        ema = {name: d * ema[name] + (1 - d) * record_steps[k][name] for name in ema}
    params = [name for name, v in saved.items() if v.is_floating_point() and "running" not in name]
    moved = 0
    for name in params:
        assert torch.allclose(saved[name].double(), ema[name], atol=1e-6), name
        assert torch.equal(state["net"][name].double(), record_steps[-1][name]), name  # raw weights resume
        moved += not torch.allclose(saved[name].double(), record_steps[-1][name], atol=1e-6)
    assert moved > len(params) // 2  # the EMA really differs from the raw weights
    assert set(state["ema"]) == set(saved)


def test_bf16_autocast_on_cpu(tmp_path, datasets, monkeypatch) -> None:
    """train.amp=bf16 on the CPU: the forward runs in bfloat16, the loss stays finite, weights are saved float32."""
    dtypes = set()
    original = ModelFBCNN.optimize_parameters

    def hooked(self, batches):
        if not dtypes:
            self.net.m_head.register_forward_hook(lambda mod, inp, out: dtypes.add(out.dtype))
        return original(self, batches)

    monkeypatch.setattr(ModelFBCNN, "optimize_parameters", hooked)
    assert train(tmp_path, NO_VAL, "train.amp=bf16", "train.total_iter=4", "train.checkpoint_print=1") == 0
    assert dtypes == {torch.bfloat16}
    logged = steps(tmp_path)
    assert sorted(logged) == [1, 2, 3, 4] and all(math.isfinite(v["loss"]) for v in logged.values())
    assert "amp bf16" in (tmp_path / "fbcnn_gray_tiny" / "train.log").read_text()
    saved = read_state_dict(tmp_path / "fbcnn_gray_tiny" / "models" / "4_G.pth")
    assert {v.dtype for v in saved.values() if v.is_floating_point()} == {torch.float32}


def test_fp16_on_cpu_is_refused_with_a_clear_message(tmp_path, datasets, capsys) -> None:
    """fp16 needs CUDA's GradScaler: on the CPU the options are refused at start-up (exit 2), naming bf16."""
    assert train(tmp_path, NO_VAL, "train.amp=fp16", "train.total_iter=4") == 2
    assert "'train.amp' fp16 needs CUDA; use bf16 on the CPU" in capsys.readouterr().err
    assert not (tmp_path / "fbcnn_gray_tiny").exists()  # nothing was started


def test_image_losses_by_hand() -> None:
    pred, target = torch.full((1, 1, 4, 4), 0.5), torch.full((1, 1, 4, 4), 0.2)
    target[0, 0, 0, 0] = 0.9  # errors: fifteen 0.3 and one -0.4
    assert image_loss(pred, target, "l1").item() == pytest.approx((15 * 0.3 + 0.4) / 16)
    assert image_loss(pred, target, "l2").item() == pytest.approx((15 * 0.09 + 0.16) / 16)
    charbonnier = (15 * math.sqrt(0.09 + 1e-6) + math.sqrt(0.16 + 1e-6)) / 16
    assert image_loss(pred, target, "charbonnier").item() == pytest.approx(charbonnier, rel=1e-6)
    with pytest.raises(ValueError, match="l1, l2 or charbonnier"):
        image_loss(pred, target, "huber")


def test_losses_and_cosine_schedule_end_to_end(tmp_path, datasets) -> None:
    """G_lossfn_type reaches the step (same seed, same first batch: l2 < l1 <= charbonnier <= l1 + 1e-3 at
    step 1); CosineAnnealingLR logs lr_k = eta_min + (lr_0 - eta_min) (1 + cos(pi k / T)) / 2."""
    total, lr0, eta_min = 8, 1e-3, 1e-5
    common = (NO_VAL, f"train.total_iter={total}", "train.checkpoint_print=1", "train.deterministic=true")
    cosine = ("train.G_scheduler_type=CosineAnnealingLR", f"train.G_scheduler_eta_min={eta_min}")
    first = {}
    for loss in ("l1", "l2", "charbonnier"):
        root = tmp_path / loss
        assert train(root, *common, *cosine, f"train.G_lossfn_type={loss}") == 0
        logged = steps(root)
        assert sorted(logged) == list(range(1, total + 1))
        for k, values in logged.items():
            expected = eta_min + (lr0 - eta_min) * (1 + math.cos(math.pi * k / total)) / 2
            assert values["lr"] == pytest.approx(expected, rel=2e-3), (loss, k)  # the log prints 4 digits
        first[loss] = logged[1]["l_img"]
    assert first["l2"] < 0.5 * first["l1"]  # errors well below 1: squares are much smaller
    assert first["l1"] <= first["charbonnier"] <= first["l1"] + 1e-3 + 1e-5  # sqrt(d^2 + 1e-6) - |d| <= 1e-3


def test_gradient_clipping_bounds_the_gradient_norm(tmp_path, datasets, monkeypatch) -> None:
    """train.G_optimizer_clipgrad: the gradient the optimizer steps with has at most that total norm."""
    norms: list[float] = []
    original_step = torch.optim.Adam.step

    def step(self, *args, **kwargs):
        grads = [
            p.grad.detach().flatten() for group in self.param_groups for p in group["params"] if p.grad is not None
        ]
        norms.append(torch.cat(grads).norm().item())
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    common = (NO_VAL, "train.total_iter=4")
    assert train(tmp_path / "free", *common) == 0
    free, norms[:] = list(norms), []
    clip = 0.5 * min(free)
    assert train(tmp_path / "clipped", *common, f"train.G_optimizer_clipgrad={clip}") == 0
    assert len(free) == len(norms) == 4
    assert all(n <= clip * (1 + 1e-4) for n in norms), (clip, norms)
    assert all(n >= clip * (1 - 1e-3) for n in norms)  # clipped to the bound, not zeroed


def test_pretrained_weights_and_step(tmp_path, datasets, record_steps) -> None:
    """path.pretrained_netG + pretrained_step (how the zoo's stage 2 started): the first step starts from those
    weights, the iteration count and the lr schedule continue at that step (MultiStepLR milestone 30, gamma 0.5)."""
    pretrained = write_state_dict(make_tiny_fbcnn(1, seed=3).state_dict(), tmp_path / "stage1.pth")
    status = train(
        tmp_path,
        NO_VAL,
        f"path.pretrained_netG={pretrained}",
        "path.pretrained_step=28",
        "train.total_iter=32",
        "train.checkpoint_print=1",
        "train.checkpoint_save=32",
    )
    assert status == 0
    start = read_state_dict(pretrained)
    assert all(torch.equal(record_steps[0][k], v.double()) for k, v in start.items())
    logged = steps(tmp_path)
    assert sorted(logged) == [29, 30, 31, 32]  # the count continues at 28
    assert [logged[k]["lr"] for k in (29, 30, 31, 32)] == pytest.approx([1e-3, 5e-4, 5e-4, 5e-4])
    log = (tmp_path / "fbcnn_gray_tiny" / "train.log").read_text()
    assert f"initialised from {pretrained}: step 28" in log
    assert [p.name for p in (tmp_path / "fbcnn_gray_tiny" / "models").glob("*_G.pth")] == ["32_G.pth"]


def test_check_validates_without_training(tmp_path, datasets, capsys) -> None:
    assert train(tmp_path, extra_args=("--check",)) == 0
    assert "options and training images are valid" in capsys.readouterr().out
    assert not (tmp_path / "fbcnn_gray_tiny").exists()  # nothing trained, nothing written

    bad = tmp_path / "bad_train"
    shutil.copytree(datasets / "trainsets" / "Kodak5", bad)
    (bad / "kodim99.png").write_bytes(b"not a png")
    assert train(tmp_path, f"datasets.train.dataroot_H={bad}", extra_args=("--check",)) == 2
    err = capsys.readouterr().err
    assert "1 unusable image(s)" in err and "kodim99.png" in err and "skip_bad_images" in err


def test_resume_from_a_named_state_continues_exactly(tmp_path, datasets, capsys) -> None:
    """--resume FILE: a fresh task continues another run's state at its step; deterministic, so the losses
    after the resume are those of the original run. A missing file is an option error."""
    common = (NO_VAL, "train.checkpoint_print=1", "train.deterministic=true", "train.checkpoint_save=10")
    assert train(tmp_path / "a", *common, "train.total_iter=14") == 0
    state = tmp_path / "a" / "fbcnn_gray_tiny" / "training_states" / "10.state"
    assert state.is_file()
    assert train(tmp_path / "b", *common, "train.total_iter=14", extra_args=("--resume", str(state))) == 0
    original, resumed = steps(tmp_path / "a"), steps(tmp_path / "b")
    assert sorted(resumed) == [11, 12, 13, 14]
    for k in resumed:
        assert resumed[k]["loss"] == original[k]["loss"] and resumed[k]["lr"] == original[k]["lr"], k
    assert f"resumed from {state}: step 10" in (tmp_path / "b" / "fbcnn_gray_tiny" / "train.log").read_text()

    missing = tmp_path / "nowhere.state"
    assert train(tmp_path / "c", *common, extra_args=("--resume", str(missing))) == 2
    assert f"path.resume_state: cannot read training state {missing}" in capsys.readouterr().err
