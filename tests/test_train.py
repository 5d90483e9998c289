"""The trainer end to end on a tiny configuration: learning, checkpoints, logs, resume, DDP, options."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import main_train_fbcnn
from models import load_model
from models.model_fbcnn import masked_qf_loss
from tests.conftest import ROOT
from utils.training_log import chain_logs, parse_train_log
from utils.training_log import main as training_log_main
from utils.utils_option import OptionError

TINY_OPT = ROOT / "options" / "train_fbcnn_gray_tiny.json"


def _overrides(root: Path, *extra: str) -> list[str]:
    return [f"path.root={root}", *extra]


def _run(root: Path, *extra: str) -> int:
    return main_train_fbcnn.main(["--opt", str(TINY_OPT), *sum((["--set", o] for o in _overrides(root, *extra)), [])])


def _log_steps(exp: Path) -> dict[int, tuple[float, float]]:
    """step -> (lr, loss) from the text log (the last occurrence wins, as after a resume); {} before any."""
    try:
        log = parse_train_log(exp / "train.log")
    except ValueError:
        return {}
    return {step: (values["lr"], values["loss"]) for step, values in log.train.items()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, datasets: Path) -> Path:
    root = tmp_path_factory.mktemp("train")
    assert _run(root, "train.checkpoint_print=5") == 0
    return root / "fbcnn_gray_tiny"


def test_loss_decreases(trained: Path) -> None:
    steps = _log_steps(trained)
    assert sorted(steps) == [5, 10, 15, 20, 25, 30, 35, 40]
    assert steps[40][1] < 0.7 * steps[5][1]


def test_checkpoints_load_strictly_in_official_layout(trained: Path) -> None:
    models = trained / "models"
    assert {p.name for p in models.glob("[0-9]*_G.pth")} == {"20_G.pth", "40_G.pth"}  # keep_last 2
    net = load_model(models / "40_G.pth")
    assert (net.in_nc, net.nc, net.nb) == (1, [8, 16, 32, 64], 1)
    assert f"qf_pred.{net.nb + 2}.weight" in net.state_dict()  # blocks, pool, flatten, then the first Linear
    assert load_model(models / "best_G.pth").in_nc == 1
    states = sorted(p.name for p in (trained / "training_states").glob("*.state"))
    assert states == ["20.state", "40.state"]
    state = torch.load(trained / "training_states" / "40.state", weights_only=False)
    assert state["step"] == 40 and {"optimizer", "scheduler", "rng", "net"} <= set(state)


def test_validation_in_log_and_tensorboard(trained: Path) -> None:
    log = (trained / "train.log").read_text()
    assert re.search(r"validation step 40 \| PSNR/SSIM/PSNR-B \| QF10: [0-9.]+ dB", log)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(trained / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"val/psnr_qf10", "val/psnrb_qf30", "val/qf_mae", "train/loss", "train/lr", "val/control_delta"} <= set(
        scalars
    )
    control = re.findall(
        r"flexible control step (\d+) \| set QF 10 vs 90: mean change ([0-9.]+) levels \| "
        r"live QF-embedding units (\d+)/32",
        log,
    )
    assert [int(c[0]) for c in control] == [20, 40]
    assert all(int(c[2]) > 0 for c in control) and "FLEXIBLE CONTROL DEAD" not in log
    tb_delta = [e.value for e in events.Scalars("val/control_delta")]
    assert tb_delta == pytest.approx([float(c[1]) for c in control], abs=1e-3)
    assert [e.step for e in events.Scalars("val/psnr")] == [20, 40]
    assert events.Tags()["images"]
    best = json.loads((trained / "models" / "best_G.json").read_text())
    assert best["psnr"] == pytest.approx(max(e.value for e in events.Scalars("val/psnr")), rel=1e-6)


def test_training_log_parser_agrees_with_tensorboard(trained: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = parse_train_log(trained / "train.log")
    events = EventAccumulator(str(trained / "tensorboard"))
    events.Reload()
    tb_loss = {e.step: e.value for e in events.Scalars("train/l_qf")}
    assert sorted(log.train) == sorted(tb_loss)
    for step, value in tb_loss.items():
        assert log.train[step]["l_qf"] == pytest.approx(value, abs=1e-5)  # the log prints 5 decimals
    tb_psnr = {e.step: e.value for e in events.Scalars("val/psnr_qf10")}
    assert {step: by_qf[10]["psnr"] for step, by_qf in log.val.items()} == pytest.approx(tb_psnr, abs=0.006)
    assert log.hours() > 0 and log.last_step == 40
    best = json.loads((trained / "models" / "best_G.json").read_text())
    assert log.best_step() == (best["step"], pytest.approx(best["psnr"], abs=5e-4))

    # A resumed run repeats iterations: the later lines win, and each iteration is counted once.
    lines = (trained / "train.log").read_text().splitlines()
    slower = [re.sub(r"([0-9.]+) s/it", lambda m: f"{2 * float(m[1]):.3f} s/it", x) for x in lines if "| step" in x]
    resumed = tmp_path / "resumed.train.log"
    resumed.write_text("\n".join(lines + slower))
    assert parse_train_log(resumed).hours() == pytest.approx(2 * log.hours(), rel=0.01)

    # A fine-tune initialised from the run continues its iteration count when chained.
    chained = chain_logs([log, parse_train_log(resumed)])
    assert chained.last_step == 80 and sorted(chained.val) == [20, 40, 60, 80]
    assert chained.hours() == pytest.approx(3 * log.hours(), rel=0.01)
    assert chained.name == "fbcnn_gray_tiny + resumed"

    # A run initialised from weights with pretrained_step 20 continues the numbering: its iterations replace the
    # first run's after 20, and a later fresh stage follows its last iteration.
    steps = [x for x in lines if "| step" in x or "| validation step" in x]
    shifted = [re.sub(r"step(\s+)(\d+)", lambda m: f"step{m[1]}{int(m[2]) + 20}", x) for x in steps]
    slow = [re.sub(r"([0-9.]+) s/it", lambda m: f"{3 * float(m[1]):.3f} s/it", x) for x in shifted]
    continued = tmp_path / "continued.train.log"
    continued.write_text("\n".join(["2026-01-01 00:00:00 | initialised from w.pth: step 20, epoch 0, lr 1e-4", *slow]))
    assert parse_train_log(continued).start_step == 20 and parse_train_log(resumed).start_step == 0
    chained = chain_logs([log, parse_train_log(continued), log])
    assert sorted(chained.val) == [20, 40, 60, 80, 100]  # 20 from the first run, 40 and 60 continued, then + 40
    assert chained.train[40]["s_per_it"] == pytest.approx(3 * log.train[20]["s_per_it"], rel=0.01)
    assert chained.last_step == 100

    # best_G holds the weights of the last 'new best' line: 3-decimal ties go to the later save, and a chain's
    # weights come from its last stage even where an earlier stage validated higher.
    step_line = next(x for x in lines if "| step" in x)
    val_line = next(x for x in lines if "| validation step" in x)

    def stage(name: str, bests: dict[int, float]) -> Path:
        text = []
        for step, psnr in bests.items():
            text += [re.sub(r"step(\s+)\d+", f"step {step}", x) for x in (step_line, val_line)]
            text.append(f"2026-01-01 00:00:00 | new best validation PSNR {psnr:.3f} dB -> best_G.pth")
        (tmp_path / name).write_text("\n".join(text))
        return tmp_path / name

    tied = parse_train_log(stage("tied.train.log", {10: 25.0147, 20: 25.0142, 30: 25.0151}))
    assert tied.best_step() == (30, pytest.approx(25.015))
    lower = parse_train_log(stage("lower.train.log", {10: 24.9}))
    assert chain_logs([tied, lower]).best_step() == (40, pytest.approx(24.9))

    plot = tmp_path / "curves.png"
    assert training_log_main([str(trained / "train.log"), str(resumed), "--chain", "--plot", str(plot)]) == 0
    assert plot.stat().st_size > 10_000
    (tmp_path / "empty.log").write_text("not a training log\n")
    with pytest.raises(ValueError, match="empty.log"):
        parse_train_log(tmp_path / "empty.log")


def test_dead_controller_is_reported_loudly(tmp_path: Path, datasets: Path) -> None:
    """A controller whose last ReLU is dead for every QF (as our v1 colour model's was) is named in the log."""
    from models import write_state_dict
    from tests.conftest import make_tiny_fbcnn

    net = make_tiny_fbcnn(1)
    with torch.no_grad():
        net.qf_embed[4].weight.zero_()
        net.qf_embed[4].bias.fill_(-1.0)
    dead = write_state_dict(net.state_dict(), tmp_path / "dead.pth")
    assert _run(tmp_path, f"path.pretrained_netG={dead}", "train.total_iter=20") == 0
    log = (tmp_path / "fbcnn_gray_tiny" / "train.log").read_text()
    assert "FLEXIBLE CONTROL DEAD at step 20: no unit of qf_embed's last ReLU" in log
    assert "mean change 0.000 levels | live QF-embedding units 0/32" in log


def test_masked_qf_loss_ignores_nan_labels() -> None:
    pred = torch.tensor([[0.5], [0.2], [0.9]], requires_grad=True)
    label = torch.tensor([[0.4], [float("nan")], [0.9]])
    loss = masked_qf_loss(pred, label)
    assert loss.item() == pytest.approx(0.05)
    loss.backward()
    assert pred.grad[1].item() == 0.0 and torch.isfinite(pred.grad).all()
    all_nan = masked_qf_loss(pred, torch.full((3, 1), float("nan")))
    assert all_nan.item() == 0.0


def test_kill_and_resume_continues_exactly(tmp_path: Path, datasets: Path) -> None:
    """SIGKILL mid-run, resume: same steps, same lr schedule and (deterministic mode) the same losses."""
    common = ("train.checkpoint_print=1", "train.deterministic=true", "datasets.val.dataroot_H=null")
    assert _run(tmp_path / "ref", *common) == 0
    reference = _log_steps(tmp_path / "ref" / "fbcnn_gray_tiny")

    cmd = [sys.executable, str(ROOT / "main_train_fbcnn.py"), "--opt", str(TINY_OPT)]
    for o in _overrides(tmp_path / "killed", *common):
        cmd += ["--set", o]
    exp = tmp_path / "killed" / "fbcnn_gray_tiny"
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (exp / "train.log").exists() and max(_log_steps(exp), default=0) >= 25:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert max(_log_steps(exp)) < 40

    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resumed from" in (exp / "train.log").read_text()
    resumed = _log_steps(exp)
    assert sorted(resumed) == list(range(1, 41))
    for step in range(1, 41):
        assert resumed[step][0] == pytest.approx(reference[step][0], rel=1e-9), f"lr differs at step {step}"
        assert resumed[step][1] == reference[step][1], f"loss differs at step {step}"


def test_time_budget_stops_with_a_state_and_the_same_command_continues(tmp_path: Path, datasets: Path) -> None:
    common = ("train.checkpoint_print=10", "datasets.val.dataroot_H=null")
    assert _run(tmp_path, *common, "train.max_minutes=1e-6") == 0  # past the budget at the first log line
    exp = tmp_path / "fbcnn_gray_tiny"
    log = (exp / "train.log").read_text()
    assert "time budget train.max_minutes=1e-06 reached at step 10 of 40" in log
    assert max(_log_steps(exp)) == 10 and (exp / "models" / "10_G.pth").is_file()
    assert _run(tmp_path, *common) == 0  # no budget: resumes from step 10 and finishes
    assert "resumed from" in (exp / "train.log").read_text() and max(_log_steps(exp)) == 40
    # Past the budget at the last step: the run is done, not stopped.
    assert _run(tmp_path / "last", *common, "train.max_minutes=1e-6", "train.total_iter=10") == 0
    log = (tmp_path / "last" / "fbcnn_gray_tiny" / "train.log").read_text()
    assert "done: 10 iterations" in log and "time budget" not in log


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path, datasets: Path, monkeypatch) -> None:
    original = main_train_fbcnn.ModelFBCNN.optimize_parameters

    def poisoned(self, batch):
        losses = original(self, batch)
        if self.step == 25:
            losses["loss"] = torch.tensor(float("nan"))
        return losses

    monkeypatch.setattr(main_train_fbcnn.ModelFBCNN, "optimize_parameters", poisoned)
    assert _run(tmp_path, "datasets.val.dataroot_H=null") == 1
    exp = tmp_path / "fbcnn_gray_tiny"
    assert "non-finite loss" in (exp / "train.log").read_text()
    assert sorted(p.name for p in (exp / "models").glob("[0-9]*_G.pth")) == ["20_G.pth"]
    load_model(exp / "models" / "20_G.pth")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.G_optimizer_lrr=1e-4", "did you mean 'train.G_optimizer_lr'"),
        ('train.total_iter="many"', "'train.total_iter' must be an integer"),
        ("datasets.train.dataroot_H=/no/such/folder", "datasets.train.dataroot_H': folder '/no/such/folder'"),
        ("netG.in_nc=3", "netG.in_nc is 3 but n_channels is 1"),
        ("netG.ncc=8", "netG.ncc: fbcnn(in_nc=3, out_nc=3, nc=(64, 128, 256, 512), nb=4"),
        ("netG.net_type=dncnn", "netG.qf_dim: dncnn(in_nc=1, out_nc=1, nc=64, nb=20, act_mode='R') takes no argument"),
        ("netG.net_type=no_such_module:Net", "cannot import module 'no_such_module'"),
        ("netG.net_type=torch.nn:NoSuchClass", "module 'torch.nn' has no class 'NoSuchClass'"),
        ("netG.net_type=torch.nn:Flatten", "netG.nc: torch.nn:Flatten(start_dim=1, end_dim=-1) takes no argument"),
        ("train.amp=fp16", "'train.amp' fp16 needs CUDA"),
    ],
)
def test_bad_options_are_named(override: str, message: str, capsys) -> None:
    with pytest.raises(OptionError, match=re.escape(message)):
        main_train_fbcnn.load_train_options(str(TINY_OPT), [override])
    assert main_train_fbcnn.main(["--opt", str(TINY_OPT), "--set", override]) == 2
    assert message in capsys.readouterr().err


def test_shipped_option_files_are_valid(datasets: Path) -> None:
    """Every train_*.json parses and validates (data folders pointed at the shared training set)."""
    files = sorted((ROOT / "options").glob("train_*.json"))
    assert len(files) >= 6
    here = str(datasets / "trainsets" / "Kodak5")
    for path in files:
        overrides = [f"datasets.train.dataroot_H={here}"]
        if "pretrained_netG" in path.read_text():  # stage-2 files start from a stage-1 run's weights
            overrides.append(f"path.pretrained_netG={ROOT / 'model_zoo' / 'fbcnn_gray_small.pth'}")
        opt = main_train_fbcnn.load_train_options(str(path), overrides)
        assert opt["netG"]["in_nc"] == opt["n_channels"], path.name
        assert opt["datasets"]["train"]["n_channels"] == opt["n_channels"], path.name
    with pytest.raises(OptionError, match="path.pretrained_netG.*does not exist"):
        main_train_fbcnn.load_train_options(
            str(ROOT / "options" / "train_fbcnn_gray_small_ft.json"),
            [f"datasets.train.dataroot_H={here}", "path.pretrained_netG=missing.pth", "path.root=/nonexistent"],
        )
    paper = main_train_fbcnn.load_train_options(
        str(ROOT / "options" / "train_fbcnn_color.json"), [f"datasets.train.dataroot_H={here}"]
    )
    assert paper["train"]["QF_lossfn_weight"] == 0.1 and paper["datasets"]["train"]["H_size"] == 128
    assert paper["train"]["G_scheduler_milestones"] == [40000, 80000, 120000]


def test_ddp_two_processes_keep_identical_parameters(tmp_path: Path, datasets: Path) -> None:
    """torchrun --nproc_per_node 2 (gloo): ranks end with bit-identical weights."""
    script = ROOT / "tests" / "ddp_train_worker.py"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        str(script),
        str(TINY_OPT),
        str(tmp_path),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pth", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pth", weights_only=True)
    initial = torch.load(tmp_path / "initial.pth", weights_only=True)
    assert set(rank0) == set(rank1)
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    assert any(not torch.equal(rank0[k], initial[k]) for k in rank0), "training did not change the weights"
    log = (tmp_path / "fbcnn_gray_tiny" / "train.log").read_text()
    assert "world size 2" in log and "8 global" in log
