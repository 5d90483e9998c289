"""Training-data throughput: patches/s of DatasetJPEG per cache mode and DataLoader worker count, and how
many workers keep one GPU fed.

The default is the full recipe: patches of 128, batch 32 per GPU, the grid-phase re-crop, single JPEG and
double JPEG (FBCNN-A) measured separately. Modes, measured side by side in one run on the same images:
  memory     decode every image once at start-up, crop from the cached arrays (the default)
  none       decode the whole source file for every patch (what the official loader does)
  none+sub   like none, on PNG sub-images cut first by data.prepare_subimages (in a temp folder)

patches/s is the steady state after the first batch (which includes forking the workers);
the time to the first batch and the start-up time (image scan / cache build) are printed apart.

The GPU's appetite is derived, not measured: FLOPs per training patch (3x the forward FLOPs of the
full FBCNN, counted with torch.utils.flop_counter on the meta device) against a stated sustained GPU
throughput (``--gpu-tflops``). Workers per GPU = patches/s the GPU consumes / patches/s of one worker.

    python benchmarks/data_throughput.py
    python benchmarks/data_throughput.py --roots ../shared/datasets/trainsets/Urban100_half --patches 480
    python benchmarks/data_throughput.py --gpu-tflops 250      # e.g. an H100 in bf16 at ~25 % of its peak
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data.dataset_jpeg import DatasetJPEG, worker_init_fn  # noqa: E402
from data.prepare_subimages import prepare_subimages  # noqa: E402

TRAINSETS = ROOT.parent / "shared" / "datasets" / "trainsets"
DEFAULT_ROOTS = [TRAINSETS / name for name in ("BSDS500_trainval", "Urban100_half", "IRCNN_Val20", "Kodak5")]


def measure(ds: DatasetJPEG, workers: int, patches: int, batch_size: int) -> tuple[float, float]:
    """(seconds to the first batch, patches/s after it) for about ``patches`` patches."""
    loader = DataLoader(
        ds, batch_size=batch_size, shuffle=True, num_workers=workers, worker_init_fn=worker_init_fn, drop_last=True
    )
    start = time.perf_counter()
    seen, first, t_first = 0, 0, 0.0
    for batch in loader:
        n = batch["L"].shape[0]
        if not first:
            first, t_first = n, time.perf_counter()
        seen += n
        if seen >= patches:
            break
    end = time.perf_counter()
    return t_first - start, (seen - first) / (end - t_first)


def training_flops_per_patch(h_size: int, n_channels: int) -> float:
    """FLOPs of one training step per patch of the full FBCNN: 3 x forward (forward + backward), counted
    on one forward pass on the CPU."""
    from torch.utils.flop_counter import FlopCounterMode

    from models import FBCNN

    net = FBCNN(n_channels, n_channels)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.zeros(1, n_channels, h_size, h_size))
    return 3.0 * counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--roots", nargs="+", default=[str(p) for p in DEFAULT_ROOTS], help="training folders")
    parser.add_argument("--patches", type=int, default=320, help="patches per measurement (default 320)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1], help="DataLoader workers (default 0 1)")
    parser.add_argument("--batch-size", type=int, default=32, help="per GPU (default 32: 256 global on 8 GPUs)")
    parser.add_argument("--H-size", type=int, default=128, help="patch size (default 128)")
    parser.add_argument("--n-channels", type=int, default=3, choices=(1, 3))
    parser.add_argument(
        "--double-jpeg-prob", type=float, nargs="+", default=[0.0, 1.0], help="recipes to measure (default 0 1)"
    )
    parser.add_argument("--grid-recrop-prob", type=float, default=0.5, help="the re-crop (default: official 0.5)")
    parser.add_argument(
        "--gpu-tflops",
        type=float,
        default=100.0,
        help="sustained training throughput of one GPU, TFLOP/s (default 100: about a third of an A100's "
        "bf16 peak, a typical conv-net utilisation)",
    )
    parser.add_argument("--sub-size", type=int, default=480, help="sub-image size for none+sub (default 480)")
    parser.add_argument("--no-sub", action="store_true", help="skip the none+sub mode")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch threads of this process, i.e. of the 0-worker loader (default 1; workers always use 1)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)

    flops = training_flops_per_patch(args.H_size, args.n_channels)
    gpu_rate = args.gpu_tflops * 1e12 / flops
    print(f"roots: {', '.join(args.roots)}")
    print(
        f"CPU: {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"GPU appetite (assumed): full FBCNN, {flops / 1e9:.0f} GFLOP per {args.H_size}x{args.H_size} training patch "
        f"(3 x forward, counted) at {args.gpu_tflops:g} TFLOP/s sustained = {gpu_rate:.0f} patches/s per GPU"
    )
    for double in args.double_jpeg_prob:
        opt = {
            "H_size": args.H_size,
            "n_channels": args.n_channels,
            "double_jpeg_prob": double,
            "grid_recrop_prob": args.grid_recrop_prob,
            "samples_per_epoch": 100 * args.patches,  # shuffled indices spread over all images
        }
        print(f"\n## double_jpeg_prob {double:g}: {opt}, batch {args.batch_size}, {args.patches} patches each")
        measure_recipe(args, opt, gpu_rate)
    print(f"\nload average at end {os.getloadavg()[0]:.1f} (the CPU may be shared: compare rows, not runs)")


def measure_recipe(args: argparse.Namespace, opt: dict, gpu_rate: float) -> None:
    with tempfile.TemporaryDirectory(prefix="subimages_") as tmp:
        modes = [("memory", args.roots, "memory"), ("none", args.roots, "none")]
        if not args.no_sub:
            t0 = time.perf_counter()
            n_tiles, errors = prepare_subimages(args.roots, tmp, size=args.sub_size, step=args.sub_size // 2)
            print(f"prepared {n_tiles} sub-images of {args.sub_size} in {time.perf_counter() - t0:.1f} s")
            if errors:
                print("\n".join(errors))
            modes.append(("none+sub", [tmp], "none"))

        rows = []
        for label, roots, cache in modes:
            t0 = time.perf_counter()
            ds = DatasetJPEG({**opt, "dataroot_H": roots, "cache": cache})
            startup = time.perf_counter() - t0
            results = [measure(ds, w, args.patches, args.batch_size) for w in args.workers]
            rows.append((label, len(ds.paths), ds.cache_bytes() / 2**20, startup, results))

    header = f"{'mode':<10} {'images':>6} {'cache MB':>8} {'start-up s':>10}"
    for w in args.workers:
        header += f" | {f'{w} workers: 1st batch s':>22} {'patches/s':>9}"
    header += " | workers per GPU"
    print(header)
    print("-" * len(header))
    for label, n_images, mb, startup, results in rows:
        line = f"{label:<10} {n_images:>6} {mb:>8.0f} {startup:>10.1f}"
        for first, rate in results:
            line += f" | {first:>22.2f} {rate:>9.0f}"
        per_worker = max(rate / max(w, 1) for w, (_, rate) in zip(args.workers, results, strict=True))
        line += f" | {math.ceil(gpu_rate / per_worker)} (per core: {per_worker:.0f} patches/s)"
        print(line)
    base = {w: r for w, (_, r) in zip(args.workers, rows[1][4], strict=True)}
    for label, _, _, _, results in rows:
        ratios = ", ".join(f"{w} workers x{r / base[w]:.1f}" for w, (_, r) in zip(args.workers, results, strict=True))
        print(f"{label:<10} speed relative to none: {ratios}")


if __name__ == "__main__":
    main()
