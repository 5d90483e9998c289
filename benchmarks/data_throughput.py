"""Training-data throughput: patches/s of DatasetJPEG per cache mode and DataLoader worker count.

Modes, measured side by side in one run on the same images and options:
  memory     decode every image once at start-up, crop from the cached arrays (the default)
  none       decode the whole source file for every patch (what the official loader does)
  none+sub   like none, on PNG sub-images cut first by data.prepare_subimages (in a temp folder)

patches/s is the steady state after the first batch (which includes forking the workers);
the time to the first batch and the start-up time (image scan / cache build) are printed apart.

    python benchmarks/data_throughput.py
    python benchmarks/data_throughput.py --roots ../shared/datasets/trainsets/Urban100_half --patches 480
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--roots", nargs="+", default=[str(p) for p in DEFAULT_ROOTS], help="training folders")
    parser.add_argument("--patches", type=int, default=320, help="patches per measurement (default 320)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers (default 0 2)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--H-size", type=int, default=128, help="patch size (default 128)")
    parser.add_argument("--n-channels", type=int, default=3, choices=(1, 3))
    parser.add_argument("--double-jpeg-prob", type=float, default=0.0)
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

    opt = {
        "H_size": args.H_size,
        "n_channels": args.n_channels,
        "double_jpeg_prob": args.double_jpeg_prob,
        "samples_per_epoch": 100 * args.patches,  # shuffled indices spread over all images
    }
    print(f"roots: {', '.join(args.roots)}")
    print(f"options: {opt}, batch {args.batch_size}, {args.patches} patches per measurement")
    print(
        f"CPU: {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}"
    )

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

    print()
    header = f"{'mode':<10} {'images':>6} {'cache MB':>8} {'start-up s':>10}"
    for w in args.workers:
        header += f" | {f'{w} workers: 1st batch s':>22} {'patches/s':>9}"
    print(header)
    print("-" * len(header))
    for label, n_images, mb, startup, results in rows:
        line = f"{label:<10} {n_images:>6} {mb:>8.0f} {startup:>10.1f}"
        for first, rate in results:
            line += f" | {first:>22.2f} {rate:>9.0f}"
        print(line)
    base = {w: r for w, (_, r) in zip(args.workers, rows[1][4], strict=True)}
    for label, _, _, _, results in rows:
        ratios = ", ".join(f"{w} workers x{r / base[w]:.1f}" for w, (_, r) in zip(args.workers, results, strict=True))
        print(f"{label:<10} speed relative to none: {ratios}")
    print(f"load average at end {os.getloadavg()[0]:.1f} (the CPU may be shared: compare rows, not runs)")


if __name__ == "__main__":
    main()
