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

``--qf-check CHECKPOINT`` instead measures, for a trained model on LIVE1 JPEGs at QF 10..90, how
well each way of estimating one global QF for tiled restoration (k tiles of a given size, or a
downscaled view) tracks the true QF and the model's whole-image prediction.

    python benchmarks/inference.py                       # 512x512, full network, 1 round, 2000x1500 memory (< 5 min)
    python benchmarks/inference.py --rounds 3 --all-modes  # more modes, best of 3 rounds
    python benchmarks/inference.py --rounds 1 --large 0  # quick: speed only
    python benchmarks/inference.py --compile --large-nc 64,128,256,512
    python benchmarks/inference.py --qf-check model_zoo/fbcnn_color_small.pth
"""

from __future__ import annotations

import argparse
import copy
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
from utils.tiling import (  # noqa: E402
    DEFAULT_OVERLAP,
    DEFAULT_TILE,
    GRID,
    bf16_supported,
    estimate_qf,
    forward,
    prepare_model,
    restore_tiled,
)
from utils.utils_eval import model_channels  # noqa: E402
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
    ours_cl = prepare_model(copy.deepcopy(ours), channels_last=True)

    def ours_mode(channels_last: bool, half: bool, skip: bool, model: torch.nn.Module | None = None) -> Callable:
        if model is None:
            model = ours_cl if channels_last else ours
        return lambda: forward(model, x, qf_input if skip else None, half=half, channels_last=channels_last)[0]

    modes: dict[str, Callable[[], torch.Tensor]] = {}

    def plain() -> torch.Tensor:
        with torch.no_grad():
            return theirs(x)[0]

    modes["spandrel fp32 (baseline)"] = plain
    if args.all_modes:
        modes["ours fp32 (inference_mode)"] = ours_mode(False, False, False)
        modes["ours fp32 + skip QF pred"] = ours_mode(False, False, True)
    modes["ours fp32 + channels_last"] = ours_mode(True, False, False)
    native = bf16_supported("cpu")
    if native or args.emulated_bf16:  # emulated bf16 is slower than float32 and takes many minutes: left out
        note = "" if native else " (emulated)"
        if args.all_modes:
            modes["ours bf16" + note] = ours_mode(False, True, False)
        modes[f"ours bf16 + channels_last{note} (auto: blind)"] = ours_mode(True, True, False)
        modes[f"ours bf16 + channels_last + skip{note} (auto: QF set)"] = ours_mode(True, True, True)
    else:
        print("bf16 is not native on this CPU: bf16 modes left out (--emulated-bf16 times them anyway)")
    if not args.no_onnx:
        try:
            ort_model = onnx_model(ours)
        except ImportError as exc:
            print(f"onnxruntime modes left out: {exc}")
        else:
            auto = "" if native else " (auto)"
            modes[f"onnxruntime fp32{auto}: blind"] = lambda: ort_model(x)[0]
            modes[f"onnxruntime fp32{auto}: QF set"] = lambda: ort_model(x, qf_input)[0]
    if args.compile:
        compiled = prepare_model(copy.deepcopy(ours), channels_last=True, compile=True)
        start = time.perf_counter()
        forward(compiled, x, qf_input, half=True, channels_last=True)
        print(f"torch.compile warm-up: {time.perf_counter() - start:.1f} s")
        modes["ours bf16 + channels_last + skip + compile"] = ours_mode(True, True, True, compiled)

    warm = x
    x = uint2tensor4(img[: args.warmup_size, : args.warmup_size])  # the lambdas read x: warm up on a small crop
    for fn in modes.values():  # warm-up (libraries, allocator) on a small input: the full size costs minutes
        fn()
    x = warm
    wall: dict[str, list[float]] = {name: [] for name in modes}
    cpu: dict[str, list[float]] = {name: [] for name in modes}
    outputs: dict[str, np.ndarray] = {}
    for r in range(args.rounds):
        for name, fn in modes.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            out = fn()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
            outputs[name] = tensor2uint(out.clone())
        print(f"round {r + 1}/{args.rounds} done", flush=True)

    print(
        f"\nFBCNN nc={list(args.nc)} nb={args.nb}, {args.size}x{args.size} colour, {torch.get_num_threads()} threads, "
        f"best of {args.rounds} interleaved rounds"
    )
    print(
        f"{'mode':50s} {'wall s':>7s} {'speed-up':>8s} {'CPU s':>7s} {'speed-up':>8s} {'max dev':>7s} {'mean dev':>8s}"
    )
    base = "spandrel fp32 (baseline)"
    ref = outputs[base].astype(int)
    for name in modes:
        w, c = min(wall[name]), min(cpu[name])
        dev = np.abs(outputs[name].astype(int) - ref)
        print(
            f"{name:50s} {w:7.2f} {min(wall[base]) / w:7.2f}x {c:7.2f} {min(cpu[base]) / c:7.2f}x "
            f"{dev.max():7d} {dev.mean():8.4f}"
        )
    print("(CPU s: process CPU time over all threads; steadier than wall time when other jobs share the CPU)")
    print(f"peak RSS of this process: {peak_rss_mb():.0f} MB")


def onnx_model(ours: torch.nn.Module):
    """Our network exported to ONNX (the CLI's graphs, in a temporary folder) under onnxruntime."""
    import tempfile

    import onnxruntime  # noqa: F401 (ImportError: the caller leaves the modes out)

    from utils.backends import OrtFBCNN
    from utils.utils_export import export_onnx

    folder = Path(tempfile.mkdtemp(prefix="fbcnn-bench-"))
    start = time.perf_counter()
    export_onnx(copy.deepcopy(ours), folder / "fbcnn.onnx")
    print(f"ONNX export: {time.perf_counter() - start:.1f} s (the CLI caches it per checkpoint)")
    return OrtFBCNN(folder / "fbcnn.onnx", 3)


def child_large(args: argparse.Namespace) -> None:
    """Subprocess: restore one large image with tiling; print JSON with time and peak RSS."""
    h, w = args.child
    img = test_image(h, w)
    model = prepare_model(FBCNN(3, 3, nc=args.nc, nb=args.nb), channels_last=True)
    half = bf16_supported("cpu")
    rss_before = peak_rss_mb()
    start = time.perf_counter()
    out, qf = restore_tiled(model, img, None, tile=args.tile, overlap=DEFAULT_OVERLAP, half=half, channels_last=True)
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
    small, full = ",".join(map(str, args.large_nc)), ",".join(map(str, args.nc))
    print(f"\nMemory: tiled restoration in fresh subprocesses, nb={args.nb}, tile {args.tile}, bf16 where native")
    runs = {"large": ((h, w), small), "tile": ((args.tile, args.tile), small)}
    if small != full:
        runs["tile, full network"] = ((args.tile, args.tile), full)
    peaks = {}
    for name, ((rh, rw), nc) in runs.items():
        cmd = [
            sys.executable,
            __file__,
            "--child",
            f"{rw}x{rh}",
            "--nc",
            nc,
            "--nb",
            str(args.nb),
            "--tile",
            str(args.tile),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode:
            print(f"  {rw}x{rh} nc=[{nc}]: FAILED\n{result.stderr[-2000:]}")
            return
        info = json.loads(result.stdout.strip().splitlines()[-1])
        peaks[name] = info["peak_rss_mb"]
        print(
            f"  {info['size']:>10s} nc=[{nc}]: peak RSS {info['peak_rss_mb']:6d} MB "
            f"(before restoring: {info['rss_before_mb']} MB), {info['seconds']} s, output ok: {info['ok']}"
        )
    if small != full:
        estimate = peaks["large"] - peaks["tile"] + peaks["tile, full network"]
        print(
            f"  => full network at {w}x{h}: about {estimate} MB (image-size buffers from the first run, "
            "per-tile network memory from the last)"
        )


def qf_check(args: argparse.Namespace) -> None:
    """How well each global-QF estimate tracks the true QF and the whole-image prediction (LIVE1 JPEGs)."""
    import cv2

    from models import load_model
    from utils.utils_image import list_images

    model = load_model(args.qf_check)
    files = list_images(LIVE1)[: args.qf_images]
    qfs = (10, 20, 30, 40, 50, 60, 70, 80, 90)

    def downscaled(img: np.ndarray, side: int) -> float:
        scale = side / max(img.shape[:2])
        size = (round(img.shape[1] * scale), round(img.shape[0] * scale))
        return estimate_qf(model, cv2.resize(img, size, interpolation=cv2.INTER_AREA), tile=side)

    strategies = {"whole image": lambda img: estimate_qf(model, img, tile=max(img.shape[:2]) + GRID)}
    for side in (128, 256):
        for k in (1, 4, 9):
            strategies[f"{k} tile(s) of {side}"] = lambda img, side=side, k=k: estimate_qf(model, img, side, k)
        strategies[f"downscaled to {side}"] = lambda img, side=side: downscaled(img, side)
    predictions: dict[str, list[float]] = {name: [] for name in strategies}
    true = []
    for path in files:
        gt = imread_uint(path, model_channels(model))
        for qf in qfs:
            img = jpeg(gt, qf)
            true.append(qf)
            for name, estimate in strategies.items():
                predictions[name].append(estimate(img))
    true_arr = np.array(true)
    whole = np.array(predictions["whole image"])
    print(f"\nGlobal QF estimates, {args.qf_check}, {len(files)} LIVE1 images x QF {qfs}")
    print(f"{'estimate':22s} {'MAE vs true':>12s} {'MAE vs whole':>13s}   MAE vs true per QF")
    for name, values in predictions.items():
        pred = np.array(values)
        per_qf = " ".join(f"{np.abs(pred[true_arr == q] - q).mean():5.1f}" for q in qfs)
        print(f"{name:22s} {np.abs(pred - true_arr).mean():12.2f} {np.abs(pred - whole).mean():13.2f}   {per_qf}")


def parse_size(text: str) -> tuple[int, int]:
    """'WIDTHxHEIGHT' -> (height, width)."""
    w, h = (int(v) for v in text.lower().split("x"))
    return h, w


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="square input side for the speed part")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved timing rounds (best is reported)")
    parser.add_argument("--warmup-size", type=int, default=128, help="side of the warm-up input (default 128)")
    parser.add_argument("--all-modes", action="store_true", help="also time fp32 without channels_last and bf16 alone")
    parser.add_argument("--emulated-bf16", action="store_true", help="time bf16 modes even where bf16 is emulated")
    parser.add_argument("--no-onnx", action="store_true", help="leave out the onnxruntime modes")
    parser.add_argument("--nc", type=lambda s: tuple(int(v) for v in s.split(",")), default=FULL_NC)
    parser.add_argument("--nb", type=int, default=4)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow warm-up)")
    parser.add_argument(
        "--large", type=str, default="2000x1500", help="WxH for the memory part (README: 4000x3000); 0 skips it"
    )
    parser.add_argument(
        "--large-nc",
        type=lambda s: tuple(int(v) for v in s.split(",")),
        default=(16, 32, 64, 128),
        help="network widths for the memory part (default: a quarter of the full widths, for speed)",
    )
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--qf-check", metavar="CHECKPOINT", help="compare global-QF estimates of a trained model")
    parser.add_argument("--qf-images", type=int, default=10, help="LIVE1 images for --qf-check")
    parser.add_argument("--child", type=parse_size, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        child_large(args)
        return
    if args.qf_check:
        qf_check(args)
        return
    if not args.skip_speed:
        speed(args)
    if args.large != "0":
        args.large = parse_size(args.large)
        memory(args)


if __name__ == "__main__":
    main()
