"""Inference speed, output deviation and memory of our fast path, side by side with a plain float32 baseline.

The baseline is spandrel's independent FBCNN implementation with the same weights, called plainly
(float32, ``torch.no_grad``), on the same input in the same run. Our modes add, one at a time:
``inference_mode``, channels_last, bf16 autocast, skipping the QF predictor (the QF is set to the
baseline's prediction, so the result is the same restoration) and optionally ``torch.compile``.
Rounds are interleaved (every mode once per round, best of the rounds) so that load from other
processes hits all modes alike. Deviations are of the uint8 outputs, in 8-bit levels, against
the baseline.

The memory part restores a large colour image (default 4000x3000) with tiling in a fresh
subprocess and reports its peak RSS; ``--large-nc`` picks the network for it (the full one is
slow on a CPU) and a second subprocess measures the same network on one tile, so the image-size
part of the memory (input, accumulator, output) and the per-tile part can be told apart.

    python benchmarks/inference.py                       # 512x512, full network, 3 rounds, 4000x3000 memory
    python benchmarks/inference.py --rounds 1 --large 0  # quick: speed only
    python benchmarks/inference.py --compile --large-nc 64,128,256,512
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data.degradations import jpeg  # noqa: E402
from models import FBCNN  # noqa: E402
from utils.tiling import DEFAULT_OVERLAP, DEFAULT_TILE, bf16_supported, forward, prepare_model, restore_tiled  # noqa: E402
from utils.utils_image import imread_uint, tensor2uint, uint2tensor4  # noqa: E402

FULL_NC = (64, 128, 256, 512)
LIVE1 = ROOT.parent / "shared" / "datasets" / "testsets" / "LIVE1_color"


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB: VmHWM (ru_maxrss would carry the parent's over exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def test_image(height: int, width: int, qf: int = 30) -> np.ndarray:
    """A JPEG-compressed real photo (LIVE1 'bikes', mirrored to any size), or noise if the data is missing."""
    if (LIVE1 / "bikes.png").is_file():
        img = imread_uint(LIVE1 / "bikes.png", 3)
        pad = ((0, max(0, height - img.shape[0])), (0, max(0, width - img.shape[1])), (0, 0))
        img = np.pad(img, pad, mode="symmetric")[:height, :width]
    else:
        print("(LIVE1 not found: using noise)")
        img = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return jpeg(np.ascontiguousarray(img), qf)


def build_models(nc: tuple[int, ...], nb: int) -> tuple[FBCNN, torch.nn.Module]:
    """Our FBCNN with random weights (seed 0) and spandrel's FBCNN holding the same state_dict."""
    from spandrel.architectures.FBCNN import FBCNN as SpandrelFBCNN

    torch.manual_seed(0)
    ours = FBCNN(3, 3, nc=nc, nb=nb).eval()
    theirs = SpandrelFBCNN(in_nc=3, out_nc=3, nc=list(nc), nb=nb).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return ours, theirs


def speed(args: argparse.Namespace) -> None:
    ours, theirs = build_models(tuple(args.nc), args.nb)
    img = test_image(args.size, args.size)
    x = uint2tensor4(img)
    with torch.no_grad():
        baseline_qf = theirs(x)[1]
    qf_input = baseline_qf.detach().clone()
    fast = prepare_model(ours, channels_last=True)  # the same module: our modes share its weights

    def ours_mode(channels_last: bool, bf16: bool, skip: bool, model: torch.nn.Module = ours) -> Callable:
        return lambda: forward(model, x, qf_input if skip else None, bf16=bf16, channels_last=channels_last)[0]

    modes: dict[str, Callable[[], torch.Tensor]] = {}

    def plain() -> torch.Tensor:
        with torch.no_grad():
            return theirs(x)[0]

    modes["spandrel fp32 (baseline)"] = plain
    modes["ours fp32 inference_mode"] = ours_mode(False, False, False)
    modes["+ channels_last"] = ours_mode(True, False, False)
    modes["+ channels_last + skip QF pred"] = ours_mode(True, False, True)
    bf16_note = "" if bf16_supported("cpu") else " (no native bf16 here: emulated)"
    modes["+ channels_last + bf16" + bf16_note] = ours_mode(True, True, False)
    modes["+ channels_last + bf16 + skip (CLI with QF)"] = ours_mode(True, True, True)
    if args.compile:
        compiled = prepare_model(FBCNN(3, 3, nc=args.nc, nb=args.nb), channels_last=True, compile=True)
        compiled.load_state_dict(fast.state_dict())
        start = time.perf_counter()
        forward(compiled, x, qf_input, bf16=True, channels_last=True)
        print(f"torch.compile warm-up: {time.perf_counter() - start:.1f} s")
        modes["+ channels_last + bf16 + skip + compile"] = ours_mode(True, True, True, compiled)

    for fn in modes.values():  # warm-up (oneDNN primitive creation, allocator)
        fn()
    times: dict[str, list[float]] = {name: [] for name in modes}
    outputs: dict[str, np.ndarray] = {}
    for r in range(args.rounds):
        for name, fn in modes.items():
            start = time.perf_counter()
            out = fn()
            times[name].append(time.perf_counter() - start)
            outputs[name] = tensor2uint(out.clone())
        print(f"round {r + 1}/{args.rounds} done", flush=True)

    print(
        f"\nFBCNN nc={list(args.nc)} nb={args.nb}, {args.size}x{args.size} colour, {torch.get_num_threads()} threads, "
        f"best of {args.rounds} interleaved rounds"
    )
    print(f"{'mode':48s} {'time s':>8s} {'speed-up':>9s} {'max dev':>8s} {'mean dev':>9s}")
    ref_time, ref = min(times["spandrel fp32 (baseline)"]), outputs["spandrel fp32 (baseline)"].astype(int)
    for name in modes:
        best = min(times[name])
        dev = np.abs(outputs[name].astype(int) - ref)
        print(f"{name:48s} {best:8.2f} {ref_time / best:8.2f}x {dev.max():8d} {dev.mean():9.4f}")
    print(f"peak RSS of this process: {peak_rss_mb():.0f} MB")


def child_large(args: argparse.Namespace) -> None:
    """Subprocess: restore one large image with tiling; print JSON with time and peak RSS."""
    h, w = args.child
    img = test_image(h, w)
    model = prepare_model(FBCNN(3, 3, nc=args.nc, nb=args.nb), channels_last=True)
    bf16 = bf16_supported("cpu")
    rss_before = peak_rss_mb()
    start = time.perf_counter()
    out, qf = restore_tiled(model, img, None, tile=args.tile, overlap=DEFAULT_OVERLAP, bf16=bf16, channels_last=True)
    result = {
        "size": f"{w}x{h}",
        "tile": args.tile,
        "seconds": round(time.perf_counter() - start, 1),
        "peak_rss_mb": round(peak_rss_mb()),
        "rss_before_mb": round(rss_before),
        "qf": qf,
        "ok": out.shape == img.shape,
    }
    print(json.dumps(result))


def memory(args: argparse.Namespace) -> None:
    h, w = args.large
    nc = ",".join(map(str, args.large_nc))
    print(f"\nMemory: tiled restoration in subprocesses, FBCNN nc=[{nc}] nb={args.nb}, tile {args.tile}, bf16 auto")
    for size in ((h, w), (args.tile, args.tile)):
        cmd = [sys.executable, __file__, "--child", f"{size[1]}x{size[0]}", "--nc", nc, "--nb", str(args.nb)]
        result = subprocess.run([*cmd, "--tile", str(args.tile)], capture_output=True, text=True)
        if result.returncode:
            print(f"  {size[1]}x{size[0]}: FAILED\n{result.stderr[-2000:]}")
            continue
        info = json.loads(result.stdout.strip().splitlines()[-1])
        print(
            f"  {info['size']:>10s}: peak RSS {info['peak_rss_mb']:6d} MB (after imports and the input image "
            f"{info['rss_before_mb']} MB), {info['seconds']} s, output ok: {info['ok']}"
        )


def parse_size(text: str) -> tuple[int, int]:
    """'WIDTHxHEIGHT' -> (height, width)."""
    w, h = (int(v) for v in text.lower().split("x"))
    return h, w


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="square input side for the speed part")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (best is reported)")
    parser.add_argument("--nc", type=lambda s: tuple(int(v) for v in s.split(",")), default=FULL_NC)
    parser.add_argument("--nb", type=int, default=4)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow warm-up)")
    parser.add_argument("--large", type=str, default="4000x3000", help="WxH for the memory part; 0 skips it")
    parser.add_argument(
        "--large-nc",
        type=lambda s: tuple(int(v) for v in s.split(",")),
        default=(16, 32, 64, 128),
        help="network widths for the memory part (default: a quarter of the full widths, for speed)",
    )
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--child", type=parse_size, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_large(args)
        return
    if not args.skip_speed:
        speed(args)
    if args.large != "0":
        args.large = parse_size(args.large)
        memory(args)


if __name__ == "__main__":
    main()
