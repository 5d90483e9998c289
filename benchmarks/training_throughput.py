"""Training throughput: our trainer (data pipeline + ModelFBCNN step) against a plain PyTorch loop.

Both sides train the same network on the same batch shape in the same run. The plain loop is the
textbook ``forward / L1 / backward / Adam.step`` on a fixed random batch (no data loading, float32);
our trainer adds real JPEG patches from the DataLoader, the masked QF loss, the scheduler and,
per row, bf16 autocast and channels_last.

    python benchmarks/training_throughput.py                      # the small model_zoo network
    python benchmarks/training_throughput.py --nc 64 128 256 512 --nb 4 --batch 8 --patch 96 --iters 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data.dataset_jpeg import DatasetJPEG, worker_init_fn  # noqa: E402
from models.model_fbcnn import TRAIN_DEFAULTS, ModelFBCNN  # noqa: E402
from models.network_fbcnn import FBCNN  # noqa: E402


def plain_loop(net_kwargs: dict, batch: int, patch: int, channels: int, iters: int) -> float:
    """Seconds per iteration of a bare float32 training loop on a fixed random batch."""
    torch.manual_seed(0)
    net = FBCNN(in_nc=channels, out_nc=channels, **net_kwargs).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x, y = torch.rand(batch, channels, patch, patch), torch.rand(batch, channels, patch, patch)
    times = []
    for _ in range(iters + 1):
        t = time.perf_counter()
        out, qf = net(x)
        loss = F.l1_loss(out, y) + 0.1 * qf.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return sorted(times[1:])[len(times[1:]) // 2]


def trainer_loop(
    net_kwargs: dict,
    batch: int,
    patch: int,
    channels: int,
    iters: int,
    amp: str,
    cl: bool,
    data: list[str],
    workers: int,
) -> float:
    """Seconds per iteration of ModelFBCNN.optimize_parameters fed by DatasetJPEG (data time included)."""
    torch.manual_seed(0)
    dataset = DatasetJPEG(
        {
            "dataroot_H": data,
            "H_size": patch,
            "n_channels": channels,
            "double_jpeg_prob": 0.25,
            "samples_per_epoch": batch * (iters + 2),
            "dataloader_batch_size": batch,
        }
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, num_workers=workers, worker_init_fn=worker_init_fn, drop_last=True
    )
    opt_net = {"net_type": "fbcnn", "in_nc": channels, "out_nc": channels, **net_kwargs}
    model = ModelFBCNN(opt_net, {**TRAIN_DEFAULTS, "amp": amp, "channels_last": cl}, torch.device("cpu"), ddp=False)
    times, it = [], iter(loader)
    for _ in range(iters + 1):
        t = time.perf_counter()
        model.optimize_parameters(next(it))
        times.append(time.perf_counter() - t)
    return sorted(times[1:])[len(times[1:]) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nc", type=int, nargs=4, default=[16, 32, 64, 128])
    parser.add_argument("--nb", type=int, default=2)
    parser.add_argument("--qf-dim", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--channels", type=int, default=1, choices=[1, 3])
    parser.add_argument("--iters", type=int, default=10, help="timed iterations per row (median reported)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--data", nargs="+", default=[str(ROOT.parent / "shared/datasets/trainsets/BSDS500_trainval")])
    args = parser.parse_args()
    net_kwargs = {"nc": args.nc, "nb": args.nb, "qf_dim": args.qf_dim}
    n_params = sum(p.numel() for p in FBCNN(args.channels, args.channels, **net_kwargs).parameters())
    print(
        f"network nc={args.nc} nb={args.nb}: {n_params / 1e6:.2f}M params; batch {args.batch}x{args.channels}x{args.patch}x{args.patch}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    base = plain_loop(net_kwargs, args.batch, args.patch, args.channels, args.iters)
    rows = [("plain loop, float32, random batch", base)]
    for amp, cl in (("none", False), ("bf16", False), ("bf16", True)):
        label = f"our trainer + data, {amp if amp != 'none' else 'float32'}{', channels_last' if cl else ''}"
        rows.append(
            (
                label,
                trainer_loop(
                    net_kwargs, args.batch, args.patch, args.channels, args.iters, amp, cl, args.data, args.workers
                ),
            )
        )
    print(
        f"\n| {'configuration':<48} | s/iteration | patches/s | speed vs plain |\n|{'-' * 50}|-------------|-----------|---------------|"
    )
    for label, sec in rows:
        print(f"| {label:<48} | {sec:11.3f} | {args.batch / sec:9.1f} | {base / sec:12.2f}x |")


if __name__ == "__main__":
    main()
