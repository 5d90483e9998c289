"""Training at scale, checked on a CPU: accumulation, multi-node resume, corrupt states, best_G across resumes,
epochs in persistent workers, SLURM's environment."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import main_train_fbcnn
from data.dataset_jpeg import DatasetJPEG
from models.model_fbcnn import TRAIN_DEFAULTS, ModelFBCNN
from tests.conftest import ROOT, TINY_FBCNN
from utils.utils_dist import DistInfo, first_host, torchrun_env_from_slurm

TINY_OPT = ROOT / "options" / "train_fbcnn_gray_tiny.json"


def _run(root: Path, *overrides: str) -> int:
    args = ["--opt", str(TINY_OPT), "--set", f"path.root={root}"]
    for o in overrides:
        args += ["--set", o]
    return main_train_fbcnn.main(args)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_accumulated_micro_batches_give_the_update_of_one_big_batch(datasets: Path) -> None:
    """k micro-batches of b (double JPEG included: masked QF labels) = one batch of k*b, in deterministic mode."""
    torch.use_deterministic_algorithms(True)
    try:
        ds = DatasetJPEG(
            {
                "dataroot_H": str(datasets / "trainsets" / "Kodak5"),
                "n_channels": 1,
                "H_size": 32,
                "double_jpeg_prob": 0.5,
                "samples_per_epoch": 8,
                "cache": "none",
            }
        )
        big = next(iter(DataLoader(ds, batch_size=8)))
        assert torch.isnan(big["qf_label"]).any() and not torch.isnan(big["qf_label"]).all()
        micro = [{k: v[i : i + 2] for k, v in big.items() if k in ("L", "H", "qf_label")} for i in range(0, 8, 2)]
        net = {"net_type": "fbcnn", "in_nc": 1, "out_nc": 1, **TINY_FBCNN}
        grads, losses = [], []
        for batches in ([big], micro):
            torch.manual_seed(0)
            model = ModelFBCNN(net, dict(TRAIN_DEFAULTS), torch.device("cpu"), ddp=False)
            out = model.optimize_parameters(batches)
            grads.append(torch.cat([p.grad.flatten() for p in model.net.parameters()]))
            losses.append(out)
        assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-7), (grads[0] - grads[1]).abs().max()
        for key in ("loss", "l_img", "l_qf"):
            assert float(losses[0][key]) == pytest.approx(float(losses[1][key]), rel=1e-5), key
        assert int(losses[1]["n_qf"]) == int((~torch.isnan(big["qf_label"])).sum())
    finally:
        torch.use_deterministic_algorithms(False)


def test_global_batch_sets_the_accumulation(tmp_path: Path, datasets: Path) -> None:
    opt = main_train_fbcnn.load_train_options(str(TINY_OPT), [f"path.root={tmp_path}", "train.global_batch=16"])
    assert main_train_fbcnn.accumulation(opt, world_size=1) == (4, 16)  # batch 4 per process
    assert main_train_fbcnn.accumulation(opt, world_size=2) == (2, 16)
    opt["train"]["global_batch"] = 12
    with pytest.raises(main_train_fbcnn.OptionError, match="global_batch.*multiple of dataloader_batch_size"):
        main_train_fbcnn.accumulation(opt, world_size=2)
    assert _run(tmp_path, "train.accumulate=2", "train.total_iter=4", "datasets.val.dataroot_H=null") == 0
    log = (tmp_path / "fbcnn_gray_tiny" / "train.log").read_text()
    assert "batch 4 per process x 1 process(es) x 2 accumulated = 8 global" in log


def test_epoch_reaches_persistent_workers(datasets: Path) -> None:
    ds = DatasetJPEG({"dataroot_H": str(datasets / "trainsets" / "Kodak5"), "H_size": 32, "samples_per_epoch": 8})
    sampler = main_train_fbcnn.ResumableSampler(ds, DistInfo(0, 1, 0, torch.device("cpu")), seed=0, shuffle=True)
    loader = DataLoader(ds, batch_size=4, sampler=sampler, num_workers=1, persistent_workers=True)
    crops = {}
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        crops[epoch] = sorted(tuple(c.tolist()) for batch in loader for c in batch["crop"])
        assert crops[epoch] == sorted(ds.draw(i, epoch)["crop"] for i in range(len(ds)))
    assert crops[0] != crops[1]


def test_corrupt_newest_state_falls_back_to_the_previous_one(tmp_path: Path, datasets: Path) -> None:
    common = ("datasets.val.dataroot_H=null", "train.checkpoint_save=10")
    assert _run(tmp_path, *common, "train.total_iter=20") == 0
    states = tmp_path / "fbcnn_gray_tiny" / "training_states"
    newest = states / "20.state"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as by a full disk or a partial copy
    assert _run(tmp_path, *common, "train.total_iter=30") == 0
    log = (tmp_path / "fbcnn_gray_tiny" / "train.log").read_text()
    assert f"training state {newest} cannot be read" in log and "falling back to the previous one" in log
    assert f"resumed from {states / '10.state'}: step 10" in log
    bad = tmp_path / "bad.state"
    bad.write_bytes(b"not a training state")
    code = _run(tmp_path, *common, "train.total_iter=40", f"path.resume_state={bad}")
    assert code == 2  # an explicitly named state that cannot be read is an error, not a silent fallback


def test_best_checkpoint_survives_a_resume(tmp_path: Path, datasets: Path, monkeypatch) -> None:
    """The first validation after a resume must not replace a better best_G.pth."""
    scores = {10: 30.0, 20: 31.0, 30: 25.0}
    calls = []

    def fake_validate(self, model):
        step = [10, 20, 30][len(calls)]
        calls.append(step)
        metrics = {"psnr": scores[step], "ssim": 0.9, "psnrb": 29.0, "qf_mae": 1.0}
        for qf in self.qfs:
            metrics |= {f"psnr_qf{qf}": scores[step], f"ssim_qf{qf}": 0.9, f"psnrb_qf{qf}": 29.0, f"qf_mae_qf{qf}": 1}
        return metrics, [np.zeros((8, 8, 1), np.uint8)] * 3

    monkeypatch.setattr(main_train_fbcnn.Validator, "__call__", fake_validate)
    common = ("train.checkpoint_save=10", "train.checkpoint_test=10")
    assert _run(tmp_path, *common, "train.total_iter=20") == 0
    assert _run(tmp_path, *common, "train.total_iter=30") == 0
    assert calls == [10, 20, 30]
    best = json.loads((tmp_path / "fbcnn_gray_tiny" / "models" / "best_G.json").read_text())
    assert best["step"] == 20 and best["psnr"] == 31.0


def test_torchrun_env_from_slurm() -> None:
    assert first_host("gpu[03-05,07],cpu1") == "gpu03" and first_host("n7,n8") == "n7" and first_host("a") == "a"
    env = {"SLURM_PROCID": "3", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_JOB_NODELIST": "node[12-15]"}
    assert torchrun_env_from_slurm(env) == {
        "RANK": "3",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "node12",
        "MASTER_PORT": "29500",
    }
    assert torchrun_env_from_slurm({**env, "WORLD_SIZE": "8"}) == {}  # torchrun inside srun: torchrun's wins
    assert torchrun_env_from_slurm({**env, "SLURM_NTASKS": "1"}) == {}


def _launch_node(node_rank: int, root: Path, port: int, *extra: str) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "2",
        "--node_rank",
        str(node_rank),
        "--nproc_per_node",
        "1",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(port),
        str(ROOT / "main_train_fbcnn.py"),
        "--opt",
        str(TINY_OPT),
        "--set",
        f"path.root={root}",
        "--set",
        "device=cpu",
        "--set",
        "datasets.val.dataroot_H=null",
        "--set",
        "train.checkpoint_save=10",
        "--set",
        "train.checkpoint_print=1",
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


@pytest.mark.slow
def test_two_nodes_killed_and_relaunched_resume_the_same_state(tmp_path: Path, datasets: Path) -> None:
    """Two torchrun 'nodes' on localhost (gloo), each with its own path.root as on node-local disks: SIGKILL both
    after a checkpoint, relaunch both; both ranks resume rank 0's newest state with identical weights."""
    roots = [tmp_path / "node0", tmp_path / "node1"]
    port = _free_port()
    procs = [_launch_node(r, roots[r], port) for r in (0, 1)]
    states = roots[0] / "fbcnn_gray_tiny" / "training_states"
    deadline = time.time() + 400
    while time.time() < deadline and not (states / "20.state").exists():
        assert all(p.poll() is None for p in procs), procs[0].communicate()[0][-3000:]
        time.sleep(0.2)
    assert (states / "20.state").exists(), "no checkpoint in time"
    for p in procs:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    assert not (roots[1] / "fbcnn_gray_tiny" / "training_states").exists()  # only rank 0 writes states

    port = _free_port()
    procs = [_launch_node(r, roots[r], port) for r in (0, 1)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    records = [json.loads((roots[r] / "fbcnn_gray_tiny" / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert records[0]["step"] == records[1]["step"] >= 20
    assert records[0]["params_checksum"] == records[1]["params_checksum"]
    assert records[1]["source"].startswith("resumed from") and records[1]["node_rank"] == 1
    log = (roots[0] / "fbcnn_gray_tiny" / "train.log").read_text()
    assert f"resumed from {states}" in log and "world size 2" in log


def test_gpu_smoke_without_cuda_says_so() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: run benchmarks/gpu_smoke.py itself")
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_smoke.py")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "no CUDA device here" in result.stdout


@pytest.mark.parametrize("prob", [0.0, 1.0, 0.5])
def test_controller_teacher_forcing_feeds_the_dominant_qf(prob: float) -> None:
    """train.qf_control_true_prob: the controller gets the true QF (a double JPEG's lower one) on that share of
    steps, the prediction otherwise; the QF predictor keeps its loss either way."""
    from models.model_fbcnn import control_label

    net = {"net_type": "fbcnn", "in_nc": 1, "out_nc": 1, **TINY_FBCNN}
    model = ModelFBCNN(net, {**TRAIN_DEFAULTS, "qf_control_true_prob": prob}, torch.device("cpu"), ddp=False)
    seen = []
    forward = model.net.forward
    model.net.forward = lambda x, qf_input=None: seen.append(qf_input) or forward(x, qf_input)
    batch = {
        "L": torch.rand(3, 1, 32, 32),
        "H": torch.rand(3, 1, 32, 32),
        "qf_label": torch.tensor([[0.9], [float("nan")], [0.5]]),
        "qf1": torch.tensor([10, 30, 50]),
        "qf2": torch.tensor([-1, 10, -1]),
    }
    steps = 40
    for _ in range(steps):
        losses = model.optimize_parameters(batch)
        assert float(losses["l_qf"]) > 0
    forced = [q for q in seen if q is not None]
    assert all(torch.equal(q, torch.tensor([[0.9], [0.9], [0.5]])) for q in forced)
    assert torch.equal(control_label(batch), torch.tensor([[0.9], [0.9], [0.5]]))
    if prob in (0.0, 1.0):
        assert len(forced) == prob * steps
    else:
        assert 8 <= len(forced) <= 32
