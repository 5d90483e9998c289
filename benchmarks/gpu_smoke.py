"""GPU smoke check: the CUDA paths that a CPU machine cannot exercise, in a few minutes, with figures.

    python benchmarks/gpu_smoke.py                 # everything; prints a table, exit 1 if a check failed
    python benchmarks/gpu_smoke.py --steps 20 --skip cli

Checks (each prints its figures; a failure is reported and the others still run):

1. train  the full FBCNN (72M parameters), batch 32 x 128 x 128 colour, channels_last, with float32, fp16 +
          GradScaler and bf16 autocast: it/s, patches/s, peak GPU memory, finite losses;
2. dev    the fp16 and bf16 inference outputs against float32 on a real image: max / mean deviation (levels);
3. resume main_train_fbcnn.py on CUDA (tiny config, validation on): SIGKILL after a checkpoint, relaunch, and
          check that it resumed from that state and finished;
4. ddp    two GPUs (where two exist): torchrun --nproc_per_node 2 with NCCL, tiny config;
5. cli    the restore CLI on CUDA with --compile (half precision by default: bf16, or fp16 without native bf16),
          against the eager output.

Without CUDA it says so and exits 0. Data: ``../shared/datasets`` (trainsets/Kodak5), or ``--data``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data.degradations import jpeg  # noqa: E402
from models import FBCNN  # noqa: E402
from models.model_fbcnn import TRAIN_DEFAULTS, ModelFBCNN  # noqa: E402
from utils.utils_image import imread_uint, list_images, uint2tensor4  # noqa: E402

TINY_OPT = ROOT / "options" / "train_fbcnn_gray_tiny.json"
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "trainsets" / "Kodak5"


def check_training(steps: int, batch: int, size: int) -> list[str]:
    """Training steps of the full network per precision; returns report lines."""
    lines = []
    net_opt = {"net_type": "fbcnn", "in_nc": 3, "out_nc": 3}
    device = torch.device("cuda")
    for amp in ("none", "fp16", "bf16"):
        if amp == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
            lines.append("train bf16: skipped (no native bf16 on this GPU)")
            continue
        torch.manual_seed(0)
        model = ModelFBCNN(net_opt, {**TRAIN_DEFAULTS, "amp": amp, "channels_last": True}, device, ddp=False)
        batch_data = {
            "L": torch.rand(batch, 3, size, size, device=device),
            "H": torch.rand(batch, 3, size, size, device=device),
            "qf_label": torch.rand(batch, 1, device=device),
        }
        for _ in range(3):  # warm-up: cuDNN autotuning, allocator
            model.optimize_parameters(batch_data)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        losses = [model.optimize_parameters(batch_data)["loss"] for _ in range(steps)]
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        finite = bool(torch.isfinite(torch.stack(losses)).all())
        peak = torch.cuda.max_memory_allocated() / 2**30
        lines.append(
            f"train {amp:>4}: {steps / seconds:.2f} it/s, {steps * batch / seconds:.0f} patches/s "
            f"(batch {batch}x{size}x{size}), peak {peak:.1f} GiB, losses finite: {finite}"
        )
        if not finite:
            raise RuntimeError(f"non-finite loss with amp {amp}")
        del model
        torch.cuda.empty_cache()
    return lines


def check_deviation(image: np.ndarray) -> list[str]:
    """fp16 / bf16 inference against float32, in uint8 levels."""
    torch.manual_seed(0)
    net = FBCNN().cuda().eval().to(memory_format=torch.channels_last)
    x = uint2tensor4(jpeg(image, 10)).cuda()
    lines = []
    with torch.inference_mode():
        ref = net(x)[0].float().clamp(0, 1)
        for dtype in (torch.float16, torch.bfloat16):
            with torch.autocast("cuda", dtype=dtype):
                out = net(x)[0].float().clamp(0, 1)
            diff = (out - ref).abs() * 255
            lines.append(f"dev {str(dtype)[6:]}: max {diff.max():.2f}, mean {diff.mean():.3f} levels vs float32")
    return lines


def _train_cmd(root: Path, *extra: str) -> list[str]:
    cmd = [sys.executable, str(ROOT / "main_train_fbcnn.py"), "--opt", str(TINY_OPT), "--set", f"path.root={root}"]
    for override in (
        "device=cuda",
        "train.total_iter=300",
        "train.checkpoint_save=100",
        "train.checkpoint_test=100",
        *extra,
    ):
        cmd += ["--set", override]
    return cmd


def check_resume(data: Path) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="gpu_smoke_") as tmp:
        root = Path(tmp)
        data_sets = [f"datasets.train.dataroot_H={data}", f"datasets.val.dataroot_H={data}"]
        cmd = _train_cmd(root, *data_sets)
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        state = root / "fbcnn_gray_tiny" / "training_states" / "100.state"
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and not state.exists():
            time.sleep(0.2)
        if proc.poll() is not None:
            raise RuntimeError(f"training ended early: {proc.stderr.read()[-2000:]}")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        start = time.perf_counter()
        result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
        log = (root / "fbcnn_gray_tiny" / "train.log").read_text()
        if result.returncode != 0 or "resumed from" not in log or "validation step 300" not in log:
            raise RuntimeError(f"resume failed (exit {result.returncode}): {result.stderr[-2000:]}")
        resumed = [line for line in log.splitlines() if "resumed from" in line][-1]
        return [
            f"resume: killed after step 100's checkpoint, {resumed.split('| ')[-1]}; finished 300 steps "
            f"with validation in {time.perf_counter() - start:.0f} s"
        ]


def check_ddp(data: Path) -> list[str]:
    if torch.cuda.device_count() < 2:
        return ["ddp: skipped (one GPU)"]
    with tempfile.TemporaryDirectory(prefix="gpu_smoke_ddp_") as tmp:
        train = _train_cmd(Path(tmp), f"datasets.train.dataroot_H={data}", "datasets.val.dataroot_H=null")
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29533",
            *train[1:],
        ]
        start = time.perf_counter()
        result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
        log = (Path(tmp) / "fbcnn_gray_tiny" / "train.log").read_text() if result.returncode == 0 else ""
        if result.returncode != 0 or "world size 2" not in log:
            raise RuntimeError(f"2-GPU run failed (exit {result.returncode}): {result.stderr[-2000:]}")
        return [f"ddp: 2 GPUs, NCCL, 300 steps in {time.perf_counter() - start:.0f} s"]


def check_cli(image: np.ndarray) -> list[str]:
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="gpu_smoke_cli_") as tmp:
        src = Path(tmp) / "input.jpg"
        Image.fromarray(image).save(src, quality=20)
        outputs, lines = {}, []
        for label, extra in (("eager", []), ("compiled", ["--compile"])):
            dst = Path(tmp) / f"{label}.png"
            cmd = [sys.executable, str(ROOT / "main_restore_fbcnn.py"), str(src), "-o", str(dst), "--device", "cuda"]
            start = time.perf_counter()
            result = subprocess.run(cmd + extra, cwd=ROOT, capture_output=True, text=True, timeout=600)
            if result.returncode != 0:
                raise RuntimeError(f"restore CLI ({label}) failed: {result.stderr[-2000:]}")
            outputs[label] = np.asarray(Image.open(dst), dtype=np.int16)
            lines.append(f"cli {label}: {time.perf_counter() - start:.1f} s for the whole command")
        diff = np.abs(outputs["eager"] - outputs["compiled"])
        lines.append(f"cli compiled vs eager: max {diff.max()}, mean {diff.mean():.3f} levels")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per precision (default 30)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a folder of clean training images")
    parser.add_argument("--skip", nargs="*", default=[], choices=("train", "dev", "resume", "ddp", "cli"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_smoke: no CUDA device here, nothing to check (run this on a machine with a GPU)")
        return 0
    props = torch.cuda.get_device_properties(0)
    print(
        f"{torch.cuda.device_count()} x {props.name}, {props.total_memory / 2**30:.0f} GiB; torch {torch.__version__}, "
        f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}; native bf16: "
        f"{torch.cuda.is_bf16_supported(including_emulation=False)}"
    )
    torch.backends.cudnn.benchmark = True
    image = imread_uint(list_images(args.data)[0], 3)[:512, :512]
    checks: dict[str, Callable[[], list[str]]] = {
        "train": lambda: check_training(args.steps, args.batch, args.size),
        "dev": lambda: check_deviation(image),
        "resume": lambda: check_resume(args.data),
        "ddp": lambda: check_ddp(args.data),
        "cli": lambda: check_cli(image),
    }
    failed = []
    for name, check in checks.items():
        if name in args.skip:
            continue
        start = time.perf_counter()
        try:
            for line in check():
                print(line, flush=True)
        except Exception as exc:  # report and go on with the other checks
            failed.append(name)
            print(f"{name}: FAILED: {type(exc).__name__}: {exc}", flush=True)
        print(f"  ({name}: {time.perf_counter() - start:.0f} s)", flush=True)
    print("all checks passed" if not failed else f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
