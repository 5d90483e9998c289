"""Evaluate JPEG artifact removal the way the FBCNN paper does, and write results, images and reports.

    python main_test_fbcnn.py                                    # bundled models, testsets/ or built-in photos
    python main_test_fbcnn.py --opt options/test_fbcnn_gray.json # Table 1 protocol (Y channel)
    python main_test_fbcnn.py --opt options/test_fbcnn_color.json --model my.pth --qf 10 20
    python main_test_fbcnn.py --opt options/test_fbcnn_double.json          # Table 3 (non-aligned double JPEG)
    python main_test_fbcnn.py --opt options/test_fbcnn_real.json --testset Real=path/to/jpegs
    python main_test_fbcnn.py --opt options/test_fbcnn_flexible.json        # Fig. 4 (flexible control)

For each test set and degradation, every ground truth is read (gray models: its Y channel,
colour: RGB), compressed with ``data.degradations`` (OpenCV JPEG), restored with
``utils.utils_eval.restore`` (blind, at a fixed QF, or at the dominant QF of FBCNN-D) and scored
with PSNR / SSIM / PSNR-B against the ground truth, the JPEG input too. Outputs go to
``<path.results>/<task>/``: restored PNGs, ``results.json`` / ``results.csv`` (per image and
averages), ``results.md`` (with the paper's numbers beside ours), ``comparison_<set>.png``,
``test.log``. The exit status is 1 when any file failed (the others are still scored), 2 for
bad options or a missing model.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from data.dataset_test import PROTOCOLS, SKIMAGE_SET, DatasetTest, Degradation, make_degradations, merge_chroma
from models import ZOO_MODELS, CheckpointError, define_G, load_model, read_state_dict
from models.contract import PerQFModels, as_restorer
from models.select_network import NetworkOptionError, network_options
from utils.grid_align import estimate_grid_phase, restore_grid_aligned
from utils.tiling import restore_tiled
from utils.utils_eval import model_channels, pick_device, restore, score
from utils.utils_image import ImageReadError, imread_uint, imsave, read_jpeg_luma
from utils.utils_logger import get_logger
from utils.utils_option import OptionError, parse_options
from utils.utils_report import (
    METRICS,
    average_rows,
    plot_flexible_control,
    run_summary,
    side_by_side,
    write_csv,
    write_json,
    write_text,
)

ROOT = Path(__file__).resolve().parent
# The project's first command (no --opt) runs these, each when its bundled model exists.
DEFAULT_OPTIONS = (ROOT / "options" / "test_fbcnn_gray.json", ROOT / "options" / "test_fbcnn_color.json")
QF_MODES = ("blind", "fixed", "dominant", "oracle")

# Every key a test option file may use, with its default (see options/test_fbcnn_gray.json).
SCHEMA: dict[str, Any] = {
    "task": "",  # results sub-folder; "" -> <method>_<protocol>[_<qf_mode>]
    "method": "",  # name in results and reports; "" -> checkpoint file name, or netG.net_type
    "model_path": None,  # checkpoint, or {"10": a.pth, "20": b.pth}: one model per QF, one method (qf_mode oracle)
    "n_channels": 1,  # which bundled model when model_path is None: 1 gray, 3 colour
    "netG": None,  # a network to build (models.define_G), e.g. {"net_type": "deblock"} or {"net_type": "my.mod:Net"},
    # loading model_path into it when given; without netG, load_model detects the architecture (spandrel too)
    "tile": 0,  # restore in tiles of this size with one global QF (as the restore CLI); 0 = whole images
    "tile_overlap": 64,
    "half": False,  # half-precision autocast for large networks: bf16 (CPUs with native bf16, Ampere+ GPUs), fp16 on
    # older CUDA GPUs (utils.tiling.half_dtype)
    "device": "auto",  # auto (CUDA when available) | cpu | cuda | cuda:1 ...
    "protocol": "single",  # single | double | real
    "qfs": [10, 20, 30, 40],  # single JPEG qualities
    "qf_pairs": [[30, 10], [50, 10], [50, 30], [10, 10], [30, 30], [50, 50], [10, 30], [10, 50], [30, 50]],
    "shift": [4, 4],  # double JPEG: rows and columns dropped between the two compressions; [0, 0] aligned
    "grid_offset": [0, 0],  # rows, columns cropped after the (last) JPEG: its grid off the origin (paper: [0, 0])
    "grid_align": False,  # grid-aware inference (utils/grid_align.py): off for the paper's protocol
    "qf_mode": "blind",  # blind | fixed (qf_input) | dominant (FBCNN-D: utils.dominant_qf) | oracle (the true QF)
    "qf_input": None,  # the QF set in fixed mode (1..100)
    "dominant_threshold": None,  # FBCNN-D: null = the calibrated acceptance rule (utils/dominant_qf.py); 30 = the paper's T
    "qf_sweep": [],  # flexible control: also restore at each of these set QFs
    "testsets": {},  # name -> folder (or "skimage": scikit-image's natural photographs)
    "missing_testsets": "skip",  # skip (warn) | fail (counts as a failed file)
    "fallback_testsets": {},  # used when no folder of "testsets" exists
    "border": 0,  # pixels cut from each side before scoring (the paper: 0)
    "save_images": True,
    "comparison_images": 3,  # images per set in comparison_<set>.png (0: none)
    "comparison_crop": 128,  # side of the centred crop shown, in pixels
    "path": {"results": "results", "cache": ""},  # cache: where the "skimage" set is exported ("" = ~/.cache)
}


class ModelMissingError(FileNotFoundError):
    """The checkpoint to evaluate does not exist."""


# --------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Evaluate JPEG artifact removal (FBCNN and the registry's baselines) on benchmark sets with "
        "the paper's protocol: PSNR / SSIM / PSNR-B of the JPEG input and of the restored image, the predicted "
        "QF per image, restored PNGs, results.json / .csv / .md and comparison crops. Without --opt: the bundled "
        "gray and colour models on testsets/Classic5, LIVE1_gray, LIVE1_color, BSDS500 when present, else on "
        "scikit-image's built-in photographs.",
        epilog="Exit status: 0 all files scored, 1 some file failed (named in the log and results), 2 bad options "
        "or missing model. Regenerate the paper-style report of a results folder with "
        "'python -m utils.utils_report results'.",
    )
    parser.add_argument("--opt", help="test option file (JSON with // comments), e.g. options/test_fbcnn_gray.json")
    parser.add_argument("--model", help="checkpoint to evaluate (.pth / .safetensors; FBCNN, DnCNN, ...)")
    parser.add_argument(
        "--testset",
        action="append",
        metavar="NAME=FOLDER",
        help="test set to use instead of the option file's (repeatable); FOLDER holds PNG/BMP/TIFF/JPEG files, "
        "or is 'skimage' for the built-in photographs",
    )
    parser.add_argument("--qf", type=int, nargs="+", metavar="QF", help="single-JPEG qualities, e.g. --qf 10 20")
    parser.add_argument(
        "--qf-pair", type=int, nargs=2, action="append", metavar=("QF1", "QF2"), help="double-JPEG pair (repeatable)"
    )
    parser.add_argument("--protocol", choices=PROTOCOLS, help="single JPEG, double JPEG, or real JPEGs without GT")
    parser.add_argument(
        "--qf-mode",
        choices=QF_MODES,
        help="blind (default), fixed (--qf-input), dominant (FBCNN-D estimate) or oracle (the true JPEG quality)",
    )
    parser.add_argument("--qf-input", type=int, metavar="QF", help="restore at this set QF (implies --qf-mode fixed)")
    parser.add_argument(
        "--sweep", type=int, nargs="+", metavar="QF", help="flexible control: also restore at these QFs"
    )
    parser.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    parser.add_argument("--results", metavar="DIR", help="results root; outputs go to DIR/<task> (default: results)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="any option, e.g. --set comparison_images=0"
    )
    return parser


def cli_overrides(args: argparse.Namespace) -> list[str]:
    """The command line as ``key=JSON`` overrides, applied after the option file and --set."""
    pairs: dict[str, Any] = {}
    if args.model:
        pairs["model_path"] = args.model  # with the option file's netG, if any, that network loads the file
    if args.testset:
        sets = {}
        for item in args.testset:
            name, sep, folder = item.partition("=")
            if not sep or not name or not folder:
                raise OptionError(f"--testset {item!r} must look like NAME=FOLDER")
            sets[name] = folder
        pairs["testsets"], pairs["fallback_testsets"], pairs["missing_testsets"] = sets, {}, "fail"
    if args.qf:
        pairs["qfs"] = args.qf
    if args.qf_pair:
        pairs["qf_pairs"] = args.qf_pair
    if args.protocol:
        pairs["protocol"] = args.protocol
    if args.qf_mode:
        pairs["qf_mode"] = args.qf_mode
    if args.qf_input is not None:
        pairs["qf_mode"], pairs["qf_input"] = "fixed", args.qf_input
    if args.sweep:
        pairs["qf_sweep"] = args.sweep
    if args.device:
        pairs["device"] = args.device
    if args.results:
        pairs["path.results"] = args.results
    return list(args.set) + [f"{key}={json.dumps(value)}" for key, value in pairs.items()]


def load_options(path: str | Path | None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Parse a test option file against ``SCHEMA`` and check values; OptionError names the key."""
    opt = parse_options(path, SCHEMA, overrides)
    where = f"{path or 'options'}: option"

    def check(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise OptionError(f"{where} '{key}' {what}, got {json.dumps(opt.get(key))}")

    check(opt["protocol"] in PROTOCOLS, "protocol", f"must be one of {list(PROTOCOLS)}")
    check(opt["qf_mode"] in QF_MODES, "qf_mode", f"must be one of {list(QF_MODES)}")
    check(opt["missing_testsets"] in ("skip", "fail"), "missing_testsets", "must be 'skip' or 'fail'")
    check(opt["n_channels"] in (1, 3), "n_channels", "must be 1 or 3")

    def is_qf(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 100

    check(all(is_qf(q) for q in opt["qfs"]), "qfs", "must be JPEG qualities in 1..100")
    check(all(is_qf(q) for q in opt["qf_sweep"]), "qf_sweep", "must be JPEG qualities in 1..100")
    check(
        all(isinstance(p, list) and len(p) == 2 and all(is_qf(q) for q in p) for p in opt["qf_pairs"]),
        "qf_pairs",
        "must be [qf1, qf2] pairs of qualities in 1..100",
    )
    check(
        len(opt["shift"]) == 2 and all(isinstance(s, int) and s >= 0 for s in opt["shift"]),
        "shift",
        "must be [rows, cols]",
    )
    check(
        len(opt["grid_offset"]) == 2 and all(isinstance(s, int) and s >= 0 for s in opt["grid_offset"]),
        "grid_offset",
        "must be [rows, cols] of non-negative integers",
    )
    check(opt["protocol"] != "real" or not any(opt["grid_offset"]), "grid_offset", "does not apply to real JPEGs")
    check(isinstance(opt["grid_align"], bool), "grid_align", "must be true or false")
    check(opt["qf_mode"] != "fixed" or is_qf(opt["qf_input"]), "qf_input", "must be a QF in 1..100 in fixed mode")
    for key in ("testsets", "fallback_testsets"):
        check(all(isinstance(v, str) for v in opt[key].values()), key, "must map names to folder paths")
    check(opt["netG"] is None or isinstance(opt["netG"], dict), "netG", 'must be an object like {"net_type": ...}')
    per_qf = isinstance(opt["model_path"], dict)
    check(
        not per_qf or (opt["model_path"] and all(k.isdigit() and is_qf(int(k)) for k in opt["model_path"])),
        "model_path",
        'must be a checkpoint path or a {"QF": path} map of JPEG qualities to checkpoints',
    )
    check(opt["model_path"] is None or per_qf or isinstance(opt["model_path"], str), "model_path", "must be a path")
    if per_qf and opt["qf_mode"] == "blind":  # a non-blind method: each image goes to the model of its QF
        opt["qf_mode"] = "oracle"
    check(not per_qf or opt["qf_mode"] in ("oracle", "fixed"), "qf_mode", "must be oracle or fixed for a per-QF map")
    if per_qf:
        needed = {opt["qf_input"]} if opt["qf_mode"] == "fixed" else set(opt["qfs"])
        if opt["protocol"] == "double":
            needed = {opt["qf_input"]} if opt["qf_mode"] == "fixed" else {p[1] for p in opt["qf_pairs"]}
        missing = sorted(q for q in needed if str(q) not in opt["model_path"])
        have = sorted(int(q) for q in opt["model_path"])
        check(not missing, "model_path", f"has no checkpoint for QF {missing} (it has QFs {have})")
    check(opt["tile"] == 0 or (opt["tile"] > 0 and opt["tile"] % 8 == 0), "tile", "must be 0 or a multiple of 8")
    return opt


# --------------------------------------------------------------------------------------
# The method under test
# --------------------------------------------------------------------------------------
def build_method(opt: dict[str, Any], device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """The network to evaluate, under the harness contract (``models.contract``), and what to record about it.

    ``netG`` builds a network (registry name or ``"module:Class"``) and loads ``model_path`` into it;
    otherwise ``load_model`` reads the checkpoint (our registry, then spandrel); a ``{QF: path}`` map makes
    one method of one model per QF. Returns ``(model in eval mode on device, info)`` with info = method,
    net_type (spandrel's architecture name for its models), model_path, netG.
    """
    path = opt["model_path"]
    if isinstance(path, dict):
        single = [build_method({**opt, "model_path": p}, device) for p in path.values()]
        model = PerQFModels({int(q): m for q, (m, _) in zip(path, single, strict=True)}).to(device).eval()
        net_types = sorted({i["net_type"] for _, i in single})
        method = opt["method"] or "per_qf_" + "_".join(net_types)
        return model, {"method": method, "net_type": "+".join(net_types), "model_path": path, "netG": opt["netG"]}
    if opt["netG"]:
        try:
            channels = opt["netG"].get("in_nc") or opt["n_channels"]  # netG's own channels win here
            net_opt = network_options(opt["netG"], channels)
            model = define_G(net_opt)
        except NetworkOptionError as exc:
            raise OptionError(f"option {exc}") from None
        net_type = net_opt["net_type"]
        if path:
            if not Path(path).is_file():
                raise ModelMissingError(f"{path}: checkpoint for netG does not exist")
            try:
                model.load_state_dict(read_state_dict(path), strict=True)
            except RuntimeError as exc:
                raise CheckpointError(f"{path}: does not fit netG {net_type}: {exc}") from exc
        model = as_restorer(model).to(device).eval()
    else:
        path = path or ZOO_MODELS[opt["n_channels"]]
        if not Path(path).is_file():
            bundled = "" if opt["model_path"] else " (the bundled model: see model_zoo/README.md, or pass --model)"
            raise ModelMissingError(f"{path}: model file does not exist{bundled}")
        model = as_restorer(load_model(path, device))
        net_type = getattr(model, "net_type", type(model).__name__.lower())
    method = opt["method"] or (Path(path).stem if path else net_type.rsplit(":", 1)[-1])
    return model, {
        "method": method,
        "net_type": net_type,
        "model_path": str(path) if path else None,
        "netG": opt["netG"],
    }


def task_name(opt: dict[str, Any], method: str) -> str:
    """``opt.task``, else ``<method>_<protocol>`` plus the QF mode when not blind (``..._fixed30``)."""
    if opt["task"]:
        return opt["task"]
    mode = "" if opt["qf_mode"] == "blind" else f"_{opt['qf_mode']}"
    mode += f"{opt['qf_input']}" if opt["qf_mode"] == "fixed" else ""
    return f"{method}_{opt['protocol']}{mode}"


def dominant_estimator() -> Callable[[np.ndarray], Any]:
    """``utils.dominant_qf.estimate_dominant_qf``, imported only when the dominant mode is used."""
    try:
        from utils.dominant_qf import estimate_dominant_qf
    except ImportError as exc:
        raise OptionError(
            f"qf_mode 'dominant' needs utils/dominant_qf.py (FBCNN-D), which cannot be imported: {exc}"
        ) from exc
    return estimate_dominant_qf


def select_qf(
    opt: dict[str, Any], img: np.ndarray, deg: Degradation, estimator: Callable | None
) -> tuple[float | None, dict[str, Any]]:
    """The QF to set for one input (None = blind) and what to record about the choice."""
    if opt["qf_mode"] == "fixed":
        return opt["qf_input"], {}
    if opt["qf_mode"] == "oracle":  # the known quality of the (last) compression; real images: blind
        return deg.true_qf, {}
    if opt["qf_mode"] == "dominant":
        est = estimator(img, threshold=opt["dominant_threshold"])
        return est.qf, {"dominant_qf": est.qf, "dominant_accepted": bool(est.accepted)}
    return None, {}


# --------------------------------------------------------------------------------------
# Test sets
# --------------------------------------------------------------------------------------
def resolve_testsets(opt: dict[str, Any], log: Any) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Existing test-set folders (name -> folder), and failures for missing ones when ``missing_testsets`` is fail."""
    found, failures = {}, []
    for name, folder in opt["testsets"].items():
        if folder == SKIMAGE_SET or Path(folder).is_dir():
            found[name] = folder
        elif opt["missing_testsets"] == "fail":
            failures.append({"dataset": name, "file": folder, "error": "test-set folder does not exist"})
            log.error(f"{name}: {folder}: test-set folder does not exist")
        else:
            log.warning(f"{name}: {folder} not found, skipped (see testsets/README.md for where to get it)")
    if not found and not failures and opt["fallback_testsets"]:
        log.warning(f"no test-set folder found; using {sorted(opt['fallback_testsets'])} instead")
        found = {n: f for n, f in opt["fallback_testsets"].items() if f == SKIMAGE_SET or Path(f).is_dir()}
    if not found and not failures:
        raise FileNotFoundError(f"none of the test-set folders exists: {sorted(opt['testsets'].values())}")
    return found, failures


# --------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------
def prefixed(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {prefix + k: v for k, v in metrics.items()}


def evaluate(opt: dict[str, Any], model: nn.Module, info: dict[str, Any], out: Path, log: Any) -> dict[str, Any]:
    """Run every test set x degradation; save images and figures; return the results dict (results.json)."""
    channels = model_channels(model)
    estimator = dominant_estimator() if opt["qf_mode"] == "dominant" else None
    degradations = make_degradations(opt["protocol"], opt["qfs"], opt["qf_pairs"], opt["shift"], opt["grid_offset"])
    testsets, failures = resolve_testsets(opt, log)
    cache = opt["path"]["cache"] or None
    datasets = [DatasetTest(n, f, channels, d, cache) for n, f in testsets.items() for d in degradations]
    for name in dict.fromkeys(ds.name for ds in datasets if not len(ds)):
        failures.append(
            {"dataset": name, "file": testsets[name], "error": "no images (PNG, JPEG, BMP, TIFF) in folder"}
        )
        log.error(f"{name}: {testsets[name]}: no images (PNG, JPEG, BMP, TIFF) in folder")
    rows: list[dict[str, Any]] = []
    sweep_rows: list[dict[str, Any]] = []
    failed_paths: set[Path] = set()
    label = info["method"]
    log.info(
        f"{label} ({info['net_type']}, {channels} channel(s)) | protocol {opt['protocol']} | qf_mode {opt['qf_mode']}"
        f" | sets {list(testsets)} | degradations {[d.name for d in degradations]}"
    )
    total = sum(len(d) for d in datasets)
    with logging_redirect_tqdm(loggers=[log]), tqdm(total=total, desc=label, disable=None) as bar:
        for ds in datasets:
            deg = ds.degradation
            shown: list[list[tuple[str, np.ndarray]]] = []
            sweep_shown: list[list[tuple[str, np.ndarray]]] = []
            for index, path in enumerate(ds.paths):
                if path in failed_paths:  # reported once, at its first degradation
                    bar.update(1)
                    continue
                try:
                    item = ds[index]
                except (ImageReadError, ValueError) as exc:
                    failed_paths.add(path)
                    failures.append({"dataset": ds.name, "file": str(path), "error": str(exc)})
                    log.error(f"{ds.name}: {exc}")
                    bar.update(1)
                    continue
                row, panels = evaluate_item(opt, model, label, ds, item, estimator, out, log)
                sweeps, restored_at = flexible_control(opt, model, ds, item, row, out)
                rows.append(row)
                sweep_rows += sweeps
                if len(shown) < opt["comparison_images"]:
                    shown.append(panels)
                    if sweeps:  # input | each set QF | the qf_mode result | ground truth
                        sweep_shown.append(panels[:1] + restored_at + panels[1:])
                bar.update(1)
            if shown and deg == degradations[0]:
                imsave(side_by_side(shown, opt["comparison_crop"]), out / f"comparison_{ds.name}.png")
            if sweep_shown:
                imsave(
                    side_by_side(sweep_shown, opt["comparison_crop"]), out / f"flexible_crops_{ds.name}_{deg.name}.png"
                )
            plot_sweep(
                ds, [r for r in rows if r["dataset"] == ds.name and r["degradation"] == deg.name], sweep_rows, out
            )

    keys = [*(f"jpeg_{m}" for m in METRICS), *METRICS, "predicted_qf"]
    averages = average_rows(rows, ("dataset", "degradation", "qf", "qf1", "shift"), keys)
    return {
        **info,
        "channels": channels,
        "protocol": opt["protocol"],
        "shift": opt["shift"] if opt["protocol"] == "double" else None,
        "grid_offset": opt["grid_offset"],
        "grid_align": opt["grid_align"],
        "qf_mode": opt["qf_mode"],
        "qf_input": opt["qf_input"] if opt["qf_mode"] == "fixed" else None,
        "qf_sweep": opt["qf_sweep"],
        "device": str(next(model.parameters(), torch.empty(0)).device),
        "testsets": testsets,
        "averages": averages,
        "images": rows,
        "sweep": sweep_rows,
        "failures": failures,
        "options": opt,
    }


def evaluate_item(
    opt: dict[str, Any],
    model: nn.Module,
    label: str,
    ds: DatasetTest,
    item: dict[str, Any],
    estimator: Callable | None,
    out: Path,
    log: Any,
) -> tuple[dict[str, Any], list[tuple[str, np.ndarray]]]:
    """Restore (in the ``qf_mode``) and score one item; returns its results row and comparison panels."""
    deg: Degradation = ds.degradation
    low, gt, chroma = item["L"], item["H"], item["chroma"]
    # FBCNN-D and the grid search read the image as the restore CLI does: a real JPEG's own Y plane, else the
    # decoded colour file (never MATLAB's Y of it)
    seen = read_jpeg_luma(item["path"]) if deg.kind == "real" else None
    if seen is None or seen.shape[:2] != low.shape[:2]:
        seen = low if chroma is None else imread_uint(item["path"], 3)
    qf_used, qf_info = select_qf(opt, seen, deg, estimator)

    def run_model(img: np.ndarray) -> tuple[np.ndarray, float | None]:
        if opt["tile"] or opt["half"]:  # the restore CLI's path: tiles with one global QF, half precision
            return restore_tiled(
                model, img, qf_used, tile=opt["tile"] or None, overlap=opt["tile_overlap"], half=opt["half"]
            )
        return restore(model, img, qf_used)

    if opt["grid_align"]:
        phase = estimate_grid_phase(seen).phase
        restored, predicted = restore_grid_aligned(run_model, low, phase)
        qf_info["grid_phase"] = list(phase) if phase is not None else None
    else:
        restored, predicted = run_model(low)
    note = ""
    if chroma is not None:
        note = "colour image, gray model: restored Y, kept the original CbCr"
        low, restored = merge_chroma(low, chroma), merge_chroma(restored, chroma)
    folder = out / ds.name / deg.name
    output = folder / f"{item['name']}.png"
    if opt["save_images"]:
        imsave(restored, output)
    row: dict[str, Any] = {
        "dataset": ds.name,
        "degradation": deg.name,
        "qf": deg.true_qf,
        "qf1": deg.qf if deg.kind == "double" else None,
        "shift": list(deg.shift) if deg.kind == "double" else None,
        "grid_offset": list(deg.crop),
        "image": item["name"],
        "file": str(item["path"]),
        "output": str(output.relative_to(out)) if opt["save_images"] else None,
        "predicted_qf": predicted,
        "qf_mode": opt["qf_mode"],
        "qf_used": qf_used,
        **qf_info,
        "note": note,
    }
    pred_text = "-" if predicted is None else f"{predicted:.1f}"
    if gt is not None:
        row |= prefixed(score(gt, low, opt["border"]), "jpeg_") | score(gt, restored, opt["border"])
        log.info(
            f"{ds.name} {deg.name} {item['name']}: JPEG {row['jpeg_psnr']:.2f} dB -> {row['psnr']:.2f} dB, "
            f"SSIM {row['ssim']:.4f}, PSNR-B {row['psnrb']:.2f} dB; predicted QF {pred_text}"
            + ("" if qf_used is None else f", set QF {qf_used}")
            + ("" if "dominant_qf" not in qf_info or qf_used is not None else ", no dominant QF: blind")
        )
        panels = [
            (f"JPEG {deg.name} {row['jpeg_psnr']:.2f}dB", low),
            (f"{label} {row['psnr']:.2f}dB", restored),
            ("ground truth", gt),
        ]
    else:
        log.info(f"{ds.name} {item['name']}: predicted QF {pred_text}" + (f" ({note})" if note else ""))
        panels = [(f"input (pred. QF {pred_text})", low), ("restored", restored)]
    return row, panels


def flexible_control(
    opt: dict[str, Any], model: nn.Module, ds: DatasetTest, item: dict[str, Any], row: dict[str, Any], out: Path
) -> tuple[list[dict[str, Any]], list[tuple[str, np.ndarray]]]:
    """Restore one input at every QF of ``qf_sweep``: score when there is a ground truth, else save the outputs.

    Returns the sweep rows and labelled restored images (for the crops figure).
    """
    rows, panels = [], []
    for qf_set in opt["qf_sweep"]:
        restored, _ = restore(model, item["L"], qf_set)
        if item["chroma"] is not None:
            restored = merge_chroma(restored, item["chroma"])
        sweep = {"dataset": ds.name, "degradation": row["degradation"], "qf": row["qf"], "image": item["name"]}
        sweep |= {"qf_set": qf_set, "predicted_qf": row["predicted_qf"], "output": None}
        if item["H"] is not None:
            sweep |= score(item["H"], restored, opt["border"])
        elif opt["save_images"]:
            output = out / ds.name / row["degradation"] / f"{item['name']}_qf{qf_set}.png"
            imsave(restored, output)
            sweep["output"] = str(output.relative_to(out))
        rows.append(sweep)
        panels.append((f"set QF {qf_set}" + (f" {sweep['psnr']:.2f}dB" if "psnr" in sweep else ""), restored))
    return rows, panels


def plot_sweep(ds: DatasetTest, rows: list[dict[str, Any]], sweep_rows: list[dict[str, Any]], out: Path) -> None:
    """The flexible-control curves of one set x degradation (averaged over its images), paper Fig. 4."""
    mine = [s for s in sweep_rows if s["dataset"] == ds.name and s["degradation"] == ds.degradation.name]
    if not mine or mine[0].get("psnr") is None:
        return
    avgs = average_rows(mine, ("qf_set",), METRICS)
    predicted = [r["predicted_qf"] for r in rows if r.get("predicted_qf") is not None]
    blind_rows = [r for r in rows if r["qf_mode"] == "blind"]
    blind = average_rows(blind_rows, ("dataset",), METRICS)[0] if blind_rows else None
    plot_flexible_control(
        [a["qf_set"] for a in avgs],
        {m: [a[m] for a in avgs] for m in METRICS},
        out / f"flexible_{ds.name}_{ds.degradation.name}.png",
        true_qf=ds.degradation.true_qf,
        predicted_qf=float(np.mean(predicted)) if predicted else None,
        blind=blind,
        title=f"{ds.name}, JPEG {ds.degradation.name}: {len(rows)} image(s)",
    )


# --------------------------------------------------------------------------------------
# Writing results
# --------------------------------------------------------------------------------------
ROW_COLUMNS = [
    "dataset",
    "degradation",
    "qf",
    "qf1",
    "image",
    "jpeg_psnr",
    "jpeg_ssim",
    "jpeg_psnrb",
    "psnr",
    "ssim",
    "psnrb",
    "predicted_qf",
    "qf_mode",
    "qf_used",
    "dominant_qf",
    "output",
    "note",
]


def write_results(results: dict[str, Any], out: Path) -> None:
    """results.json, results.csv (per image, then one AVERAGE row per set x degradation), results.md."""
    write_json(out / "results.json", results)
    averages = [{**a, "image": "AVERAGE", "qf_mode": results["qf_mode"]} for a in results["averages"]]
    write_csv(out / "results.csv", results["images"] + averages, ["method", *ROW_COLUMNS])
    if results["sweep"]:
        sweep_columns = ["dataset", "degradation", "qf", "image", "qf_set", *METRICS, "predicted_qf", "output"]
        write_csv(out / "flexible_control.csv", results["sweep"], sweep_columns)
    write_text(out / "results.md", run_summary(results))


def run(opt: dict[str, Any]) -> int:
    """Evaluate one option set; returns the number of failed files."""
    device = pick_device(opt["device"])
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OptionError(f"device: {opt['device']!r} asks for CUDA, which is not available here; use cpu or auto")
    model, info = build_method(opt, device)
    out = Path(opt["path"]["results"]) / task_name(opt, info["method"])
    out.mkdir(parents=True, exist_ok=True)
    log = get_logger(f"test.{out.name}", out / "test.log")
    results = evaluate(opt, model, info, out, log)
    for row in results["images"] + results["averages"]:
        row.setdefault("method", info["method"])
    write_results(results, out)
    print(run_summary(results))
    if results["failures"]:
        log.error(f"{len(results['failures'])} file(s) failed: " + "; ".join(f["file"] for f in results["failures"]))
    log.info(f"results written to {out}")
    return len(results["failures"])


def default_option_files(overrides: Sequence[str]) -> list[Path]:
    """Option files of the no-argument run: gray and colour, each only if its bundled model exists."""
    chosen = []
    for path in DEFAULT_OPTIONS:
        opt = load_options(path, overrides)
        if opt["netG"] or opt["model_path"] or ZOO_MODELS[opt["n_channels"]].is_file():
            chosen.append(path)
    if not chosen:
        missing = ", ".join(str(p) for p in ZOO_MODELS.values())
        raise ModelMissingError(
            f"no bundled model found ({missing}); train them (see model_zoo/README.md) or evaluate a checkpoint "
            "with --model PATH"
        )
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        overrides = cli_overrides(args)
        if args.opt:
            option_files = [Path(args.opt)]
        elif args.model and not any(o.startswith("netG") for o in args.set):
            # pick the gray or colour defaults by the checkpoint's channels
            option_files = [DEFAULT_OPTIONS[0] if model_channels(load_model(args.model)) == 1 else DEFAULT_OPTIONS[1]]
        elif args.model:  # a network of the user's (--set netG.net_type=...): gray unless --set n_channels=3
            option_files = [DEFAULT_OPTIONS[0]]
        else:
            option_files = default_option_files(overrides)
        options = [load_options(path, overrides) for path in option_files]
        failed = sum(run(opt) for opt in options)
    except (OptionError, ModelMissingError, CheckpointError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
