"""One prepared job for a short GPU lease: the smoke check, then the bundled models trained further.

A lent GPU is counted in minutes, so everything it runs is decided here first::

    # on a CPU machine with ../shared: the training images as one folder that can travel with the
    # working tree (trainsets/, git-ignored): lossless, within what the device tool carries
    python3 benchmarks/gpu_session.py pack
    # on the GPU machine, with trainsets/ carried; everything worth keeping goes to --out
    python3 benchmarks/gpu_session.py run --minutes 7 --out "$OUT"

``run``:

1. ``benchmarks/gpu_smoke.py`` (full-network training steps per precision, fp16/bf16 deviation, kill and
   resume, the restore CLI), at most a quarter of the minutes; ``--skip-smoke`` leaves it out;
2. each model of ``--models`` (default gray, colour) in turn continues from its committed weights in
   ``model_zoo/`` (``path.pretrained_netG``) with its ``options/train_fbcnn_<model>_small_v2.json`` recipe,
   on the GPU with half precision (bf16, or fp16 without native bf16) and all CPU cores but one as data
   workers, for an equal share of the minutes left. The batch is probed (``--batch auto``: at small batches the
   small network leaves a large GPU idle), and the cosine schedule (``train.total_iter``) is sized
   from the probed step time on random patches; ``train.max_minutes`` stops a run that would overrun;
3. copies each run's ``best_G.pth`` (EMA weights, chosen on IRCNN_Val20), ``train.log`` and
   ``options.json`` to ``--out/<task>/`` and prints a summary (iterations, patches/s,
   best mean validation PSNR against the shipped model's).

Back here: score the result on LIVE1 (``main_test_fbcnn.py --model``) and ship it only with
``benchmarks/model_card.py --write``. ``run`` works on a CPU too (``--device cpu``, for testing).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from main_train_fbcnn import load_train_options  # noqa: E402
from models import ZOO_MODELS  # noqa: E402
from models.model_fbcnn import ModelFBCNN  # noqa: E402
from utils.tiling import half_dtype  # noqa: E402
from utils.training_log import parse_train_log  # noqa: E402
from utils.utils_image import list_images  # noqa: E402

SHARED_TRAINSETS = ROOT.parent / "shared" / "datasets" / "trainsets"
PACKED = ROOT / "trainsets"  # git-ignored
# Packing order and image limits: validation first, the large Urban100 PNGs last (cut to the budget).
PACK_FOLDERS: dict[str, int | None] = {
    "IRCNN_Val20": 10,
    "BSDS500_trainval": None,
    "Kodak5": None,
    "Urban100_half": None,
}
TRAIN_FOLDERS = ("BSDS500_trainval", "Urban100_half", "Kodak5")
MODELS = {"gray": 1, "color": 3}
AUTO_BATCHES = (32, 64, 128)  # --batch auto on a GPU: candidates, probed for patches per second
TREE_LIMIT_MIB = 64.0  # the device tool's limit on the working tree plus carried paths


# --------------------------------------------------------------------------------------
# pack
# --------------------------------------------------------------------------------------
def lossless_bytes(path: Path) -> tuple[bytes, str]:
    """The file's image as the smallest lossless encoding: JPEG files as they are (their bytes are the
    ground truth), others as lossless WebP when that decodes to identical pixels, else unchanged."""
    data = path.read_bytes()
    if path.suffix.lower() in (".jpg", ".jpeg"):
        return data, path.suffix.lower()
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is not None and img.dtype == np.uint8:
        ok, buf = cv2.imencode(".webp", img, [cv2.IMWRITE_WEBP_QUALITY, 101])  # > 100: lossless
        if ok and len(buf) < len(data):
            back = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
            if back is not None and back.shape == img.shape and np.array_equal(back, img):
                return buf.tobytes(), ".webp"
    return data, path.suffix.lower()


def tracked_mib() -> float:
    """Size of the files git tracks (they travel to the device machine with what is carried)."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    return sum((ROOT / n.decode()).stat().st_size for n in names if n and (ROOT / n.decode()).is_file()) / 2**20


def pack(src: Path, dst: Path, budget_mib: float) -> list[str]:
    """Copy ``PACK_FOLDERS`` of ``src`` into ``dst`` (replaced), losslessly, within ``budget_mib``.

    Returns report lines; images past the budget are left out, and the report says how many.
    """
    budget = int(budget_mib * 2**20)
    staging = dst.with_name(dst.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    total, lines = 0, []
    for folder, limit in PACK_FOLDERS.items():
        images = list_images(src / folder)[:limit]
        (staging / folder).mkdir(parents=True)
        kept = 0
        for path in images:
            data, suffix = lossless_bytes(path)
            if total + len(data) > budget:
                break
            (staging / folder / (path.stem + suffix)).write_bytes(data)
            total, kept = total + len(data), kept + 1
        left = f", {len(images) - kept} left out (budget)" if kept < len(images) else ""
        lines.append(f"{folder}: {kept} of {len(images)} images{left}")
    shutil.rmtree(dst, ignore_errors=True)
    staging.rename(dst)
    lines.append(f"{dst}: {total / 2**20:.1f} MiB (budget {budget_mib:.1f} MiB)")
    return lines


# --------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------
def smoke(data: Path, timeout_s: float, out: Path) -> str:
    """Run gpu_smoke.py (one GPU: no DDP check); its output goes to out/gpu_smoke.txt. Returns its last line."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_smoke.py"), "--steps", "20", "--data", str(data)]
    try:
        result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
        text, last = result.stdout + result.stderr, f"exit {result.returncode}"
    except subprocess.TimeoutExpired as exc:
        text, last = f"{exc.stdout or ''}{exc.stderr or ''}", f"stopped after {timeout_s:.0f} s"
    text = text if isinstance(text, str) else text.decode(errors="replace")
    (out / "gpu_smoke.txt").write_text(text)
    print(text, flush=True)
    lines = [line for line in text.splitlines() if line.strip()]
    return f"gpu_smoke: {lines[-1] if lines else 'no output'} ({last})"


def recipe(model: str, args: argparse.Namespace, device: str, amp: str, root: Path) -> list[str]:
    """The ``--set`` overrides of one model's run (total_iter added later)."""
    data = args.data
    train_roots = "[" + ",".join(f'"{data / f}"' for f in TRAIN_FOLDERS) + "]"
    workers = max(1, (os.cpu_count() or 2) - 1) if args.workers is None else args.workers
    return [
        f"task=fbcnn_{model}_small_gpu",
        f"device={device}",
        f"path.root={root}",
        f"path.pretrained_netG={ZOO_MODELS[MODELS[model]]}",
        "path.pretrained_step=0",
        f"datasets.train.dataroot_H={train_roots}",
        f"datasets.train.H_size={args.patch}",
        f"datasets.train.dataloader_num_workers={workers}",
        f"datasets.val.dataroot_H={data / 'IRCNN_Val20'}",
        f"train.G_optimizer_lr={args.lr}",
        f"train.amp={amp}",
        f"seed={args.seed}",
    ]


def probe_step_s(opt: dict, device: torch.device, steps: int = 10) -> float:
    """Median seconds of one training step on random patches (the network alone, no data loading)."""
    opt_train = {**opt["train"], "total_iter": 10**6}
    model = ModelFBCNN(opt["netG"], opt_train, device, ddp=False)
    size, batch = opt["datasets"]["train"]["H_size"], opt["datasets"]["train"]["dataloader_batch_size"]
    channels = opt["n_channels"]
    batch_data = {
        "L": torch.rand(batch, channels, size, size, device=device),
        "H": torch.rand(batch, channels, size, size, device=device),
        "qf_label": torch.rand(batch, 1, device=device),
    }
    times = []
    for i in range(steps + 3):  # 3 warm-up steps (cuDNN autotuning, allocator)
        start = time.perf_counter()
        float(model.optimize_parameters(batch_data)["loss"])  # the float() waits for the device
        if i >= 3:
            times.append(time.perf_counter() - start)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return float(np.median(times))


def pick_batch(patches_per_s: dict[int, float], min_gain: float = 1.15) -> int:
    """The batch size to train with, from probed patches per second: going up from the smallest, a larger
    batch is taken only where it moves ``min_gain`` times the patches of the one taken so far (fewer, larger
    steps cost updates)."""
    best = min(patches_per_s)
    for batch in sorted(patches_per_s):
        if patches_per_s[batch] >= min_gain * patches_per_s[best]:
            best = batch
    return best


def sized_options(
    option_file: Path, overrides: list[str], device: torch.device, batch: str
) -> tuple[list[str], dict, float, str]:
    """Resolve ``--batch`` (a number, or 'auto': probe AUTO_BATCHES on a GPU, the CPU recipe's 8 on a CPU).

    Returns the overrides with the batch added, the options, the probed step time (s) and a report line.
    """

    def probe(size: int) -> tuple[list[str], dict, float]:
        items = [*overrides, f"datasets.train.dataloader_batch_size={size}"]
        opt = load_train_options(str(option_file), items)
        return items, opt, probe_step_s(opt, device)

    if batch != "auto":
        items, opt, step_s = probe(int(batch))
        return items, opt, step_s, f"batch {batch}"
    if device.type != "cuda":
        items, opt, step_s = probe(8)
        return items, opt, step_s, "batch 8 (auto on a CPU)"
    probed = {size: probe(size) for size in AUTO_BATCHES}
    rates = {size: size / step_s for size, (_, _, step_s) in probed.items()}
    chosen = pick_batch(rates)
    report = ", ".join(f"{size}: {rate:.0f}" for size, rate in rates.items())
    return (*probed[chosen], f"batch {chosen} (auto; patches/s {report})")


def train_one(model: str, args: argparse.Namespace, minutes: float, device: torch.device, amp: str) -> list[str]:
    """Continue one bundled model for ``minutes``; copy its results to args.out. Returns summary lines."""
    option_file = ROOT / "options" / f"train_fbcnn_{model}_small_v2.json"
    overrides, opt, step_s, batch_line = sized_options(
        option_file, recipe(model, args, device.type, amp, args.root), device, args.batch
    )
    step_s *= args.overhead
    # Leave a tenth of the share for start-up, validation and saving.
    total = args.iters or max(50, int(0.9 * minutes * 60 / step_s))
    every = max(1, total // 40)  # log lines: where the time budget is checked
    overrides += [
        f"train.total_iter={total}",
        f"train.max_minutes={minutes:.3f}",
        f"train.checkpoint_print={every}",
        f"train.checkpoint_test={max(every, total // 4)}",
        f"train.checkpoint_save={max(every, total // 4)}",
    ]
    print(
        f"{model}: {batch_line}; probe {step_s:.3f} s per step -> total_iter {total} in {minutes:.1f} min", flush=True
    )
    cmd = [sys.executable, str(ROOT / "main_train_fbcnn.py"), "--opt", str(option_file)]
    for item in overrides:
        cmd += ["--set", item]
    result = subprocess.run(cmd, cwd=ROOT, timeout=minutes * 60 + 300)
    exp = args.root / f"fbcnn_{model}_small_gpu"
    dest = args.out / exp.name
    dest.mkdir(parents=True, exist_ok=True)
    for path in (exp / "train.log", exp / "options.json", exp / "models" / "best_G.pth"):  # 8 files come back
        if path.is_file():
            shutil.copy2(path, dest / path.name)
    line = f"{model}: {batch_line}; training exit {result.returncode}"
    if (exp / "train.log").is_file():
        log = parse_train_log(exp / "train.log")
        best = log.best_step()
        speed = np.mean([v["s_per_it"] for v in log.train.values()]) if log.train else float("nan")
        patches = opt["datasets"]["train"]["dataloader_batch_size"] / speed
        line += f"; {log.last_step} iterations, {speed:.3f} s/it ({patches:.0f} patches/s)"
        line += f"; best mean validation PSNR {best[1]:.3f} dB at {best[0]}" if best else "; no validation"
    return [line + f"; files in {dest}"]


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        dtype = half_dtype(device)
        amp = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "none")
    else:
        amp = "none"
    missing = [f for f in (*TRAIN_FOLDERS, "IRCNN_Val20") if not (args.data / f).is_dir()]
    if missing:
        print(
            f"gpu_session: {args.data} lacks {missing}: run 'gpu_session.py pack' and carry trainsets/", file=sys.stderr
        )
        return 2
    summary = []
    if not args.skip_smoke:
        summary.append(smoke(args.data / "Kodak5", args.minutes * 60 / 4, args.out))
    for i, model in enumerate(args.models):
        share = (args.minutes * 60 - (time.perf_counter() - start)) / (len(args.models) - i)
        summary += train_one(model, args, share / 60, device, amp)
    print(f"\n== gpu_session ({device}, amp {amp}): {time.perf_counter() - start:.0f} s of {args.minutes * 60:.0f} ==")
    for line in summary:
        print(line)
    (args.out / "summary.txt").write_text("\n".join(summary) + "\n")
    return 0


def batch_arg(value: str) -> str:
    """``--batch``: 'auto' or a positive whole number (kept as text)."""
    if value == "auto" or (value.isdigit() and int(value) > 0):
        return value
    raise argparse.ArgumentTypeError(f"must be 'auto' or a positive whole number, got {value!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="build trainsets/ (lossless, within a size budget) from ../shared")
    p.add_argument("--src", type=Path, default=SHARED_TRAINSETS)
    p.add_argument("--dst", type=Path, default=PACKED)
    p.add_argument(
        "--budget-mib",
        type=float,
        default=None,
        help=f"default: {TREE_LIMIT_MIB:g} MiB (what travels in all) less the tracked files, less 2 MiB",
    )
    r = sub.add_parser("run", help="smoke check, then train the bundled models (on the GPU machine)")
    r.add_argument(
        "--minutes",
        type=float,
        default=7.0,
        help="wall-clock budget of the whole run (default 7: a 15-minute lease less the start, with room to rerun)",
    )
    r.add_argument("--out", type=Path, required=True, help="where results go (the device tool's $OUT)")
    r.add_argument("--data", type=Path, default=PACKED, help="folder with the packed training sets")
    r.add_argument("--root", type=Path, default=ROOT / "experiments", help="experiments folder")
    r.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    r.add_argument(
        "--batch",
        default="auto",
        type=batch_arg,
        help=f"patches per step, or 'auto' (default): on a GPU the fastest of {AUTO_BATCHES} in patches/s, "
        "a larger one only for at least 15 %% more; 8 (the CPU recipe) on a CPU",
    )
    r.add_argument("--patch", type=int, default=96)
    r.add_argument("--lr", type=float, default=2e-4, help="start of the cosine schedule")
    r.add_argument(
        "--seed", type=int, default=101, help="patch seed; one no CPU stage used, so the patches are new ones"
    )
    r.add_argument("--workers", type=int, default=None, help="data workers (default: CPU cores - 1)")
    r.add_argument("--iters", type=int, default=0, help="total_iter per model (default: sized by the probe)")
    r.add_argument("--overhead", type=float, default=1.3, help="step time / probed step time (data, EMA, logs)")
    r.add_argument("--device", choices=("cuda", "cpu"), default=None)
    r.add_argument("--skip-smoke", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "pack":
        budget = args.budget_mib if args.budget_mib is not None else TREE_LIMIT_MIB - tracked_mib() - 2
        for line in pack(args.src, args.dst, budget):
            print(line)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
