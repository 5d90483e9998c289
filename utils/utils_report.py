"""Results files and reports: per-run summaries, the paper's Tables 1-3, comparison crops, flexible-control plots.

``main_test_fbcnn.py`` writes one ``results.json`` per run (a method on some test sets under one
protocol). This module turns those into tables, with the paper's published numbers beside ours
(copied in ``utils/paper_results/``). To regenerate a full report from a results folder::

    python -m utils.utils_report results            # -> results/report.md, table1.csv, ...

Table cells read ``PSNR / SSIM / PSNR-B`` (dB, -, dB), averaged over a test set, as in the paper.
Mapping of our test sets to the paper's rows: gray (Y) single JPEG on Classic5, LIVE1 (LIVE1_gray,
or LIVE1_color read as Y) and BSDS500 -> Table 1; colour single JPEG on LIVE1 / BSDS500 / ICB ->
Table 2; gray non-aligned double JPEG (shift 4, 4) on LIVE1 -> Table 3. Anything else goes to
"Other results".
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import json
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from utils.utils_io import atomic_write

METRICS = ("psnr", "ssim", "psnrb")
METRIC_TITLES = {"psnr": "PSNR (dB)", "ssim": "SSIM", "psnrb": "PSNR-B (dB)"}
# Package data (shipped in the wheel): found through importlib.resources, from a checkout or an install.
PAPER_DIR = Path(str(resources.files("utils").joinpath("paper_results")))
PAPER_FILES = {1: "table1_gray_single.csv", 2: "table2_color_single.csv", 3: "table3_gray_double.csv"}
TABLE_TITLES = {
    1: "Table 1: grayscale (Y channel) single JPEG",
    2: "Table 2: colour (RGB) single JPEG",
    3: "Table 3: grayscale non-aligned double JPEG on LIVE1 (JPEG(QF1), crop 4 rows and 4 columns, JPEG(QF2))",
    "other": "Other results (no counterpart in the paper)",
}
# The paper's FBCNN column for each table (FBCNN-D for the dominant-QF mode of Table 3).
PAPER_FBCNN = {1: "FBCNN", 2: "FBCNN-C", 3: "FBCNN"}
_PAPER_DATASETS = {"classic5": "Classic5", "live1": "LIVE1", "bsds500": "BSDS500", "icb": "ICB"}
TABLE3_NOTE = (
    "Note on PSNR-B in Table 3: our JPEG column reproduces the paper's PSNR and SSIM for double JPEG, but "
    "not its PSNR-B (we measure e.g. 26.74 / 25.12 / 29.77 dB for (QF1, QF2) = (10, 30) / (30, 10) / (50, 50) "
    "where the paper prints 26.94 / 25.62 / 30.18). The paper's PSNR-B values for this table do not follow "
    "from the PSNR-B definition on the cropped (H-4) x (W-4) images that we apply everywhere, and we do not "
    "change the metric to match: compare PSNR-B here only among columns measured by this code."
)


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------
def fmt_cell(metrics: Mapping[str, Any] | None, prefix: str = "") -> str:
    """``{psnr, ssim, psnrb}`` -> ``'27.82 / 0.760 / 25.21'`` (the paper's precision); '-' when missing."""
    if not metrics or metrics.get(prefix + "psnr") is None:
        return "-"
    psnr, ssim, psnrb = (metrics.get(prefix + k) for k in METRICS)
    return f"{psnr:.2f} / {ssim:.3f} / {psnrb:.2f}"


def mean_metrics(rows: Sequence[Mapping[str, Any]], keys: Iterable[str]) -> dict[str, float | None]:
    """Mean of each key over the rows that have a finite value for it (None when none do)."""
    out: dict[str, float | None] = {}
    for key in keys:
        values = [r[key] for r in rows if r.get(key) is not None and math.isfinite(r[key])]
        out[key] = float(np.mean(values)) if values else None
    return out


def average_rows(rows: Sequence[Mapping[str, Any]], group: Sequence[str], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Average ``keys`` over the rows of each ``group`` (in first-seen order); adds ``n_images``."""
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(_hashable(row.get(g)) for g in group), []).append(row)
    out = []
    for members in groups.values():
        first = members[0]
        out.append({**{g: first.get(g) for g in group}, "n_images": len(members), **mean_metrics(members, keys)})
    return out


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write JSON atomically (NaN/inf become null)."""
    text = json.dumps(_json_safe(data), indent=2)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"))


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Write rows (dicts) as CSV with the given columns, atomically; floats keep 4 decimals."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_value(row.get(c)) for c in columns])
    atomic_write(path, lambda tmp: Path(tmp).write_text(buf.getvalue(), encoding="utf-8"))


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.4f}"
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return value


def write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# The paper's numbers
# --------------------------------------------------------------------------------------
@functools.cache
def load_paper_table(table: int) -> dict[tuple, dict[str, dict[str, float]]]:
    """The paper's Table 1/2/3 as ``{row key: {method: {psnr, ssim, psnrb}}}``, methods in printed order.

    Row keys: ``(dataset, qf)`` for Tables 1 and 2; ``("LIVE1", qf1, qf2)`` for Table 3.
    """
    text = (PAPER_DIR / PAPER_FILES[table]).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    out: dict[tuple, dict[str, dict[str, float]]] = {}
    for rec in csv.DictReader(lines):
        key = ("LIVE1", int(rec["qf1"]), int(rec["qf2"])) if table == 3 else (rec["dataset"], int(rec["qf"]))
        out.setdefault(key, {})[rec["method"]] = {m: float(rec[m]) for m in METRICS}
    return out


def paper_methods(table: int) -> list[str]:
    """The paper's method columns of a table, in printed order."""
    methods: list[str] = []
    for row in load_paper_table(table).values():
        methods += [m for m in row if m not in methods]
    return methods


def paper_dataset(name: str) -> str | None:
    """Our test-set name -> the paper's row name: 'LIVE1_gray' / 'LIVE1_color' -> 'LIVE1', 'classic5' -> 'Classic5'."""
    key = name.lower()
    for suffix in ("_gray", "_grey", "_color", "_colour", "_y", "_rgb"):
        key = key.removesuffix(suffix)
    return _PAPER_DATASETS.get(key)


def paper_table(channels: int, protocol: str, shift: Sequence[int] | None = None) -> int | None:
    """Which paper table a run belongs to (1, 2, 3) or None."""
    if protocol == "single":
        return 1 if channels == 1 else 2
    if protocol == "double" and channels == 1 and list(shift or ()) == [4, 4]:
        return 3
    return None


def paper_row(table: int | None, row: Mapping[str, Any]) -> dict[str, dict[str, float]] | None:
    """The paper's numbers for one of our average rows (``dataset``, ``qf``, ``qf1``), or None."""
    if table is None:
        return None
    dataset = paper_dataset(str(row.get("dataset", "")))
    key = ("LIVE1", row.get("qf1"), row.get("qf")) if table == 3 and dataset == "LIVE1" else (dataset, row.get("qf"))
    return load_paper_table(table).get(key)


def run_label(run: Mapping[str, Any]) -> str:
    """Column name of a run: its method, plus the QF mode when not blind (``fbcnn (fixed QF 30)``)."""
    mode = run.get("qf_mode", "blind")
    if mode == "fixed":
        return f"{run['method']} (fixed QF {run.get('qf_input')})"
    return run["method"] if mode == "blind" else f"{run['method']} ({mode})"


# --------------------------------------------------------------------------------------
# One run: results.md
# --------------------------------------------------------------------------------------
def run_summary(results: Mapping[str, Any]) -> str:
    """Markdown summary of one run: dataset x degradation, JPEG vs the method, the paper's numbers beside."""
    method = results["method"]
    table = paper_table(results["channels"], results["protocol"], results.get("shift"))
    channels = "Y channel" if results["channels"] == 1 else "RGB"
    lines = [
        f"# {method}: {results['protocol']} JPEG, {channels}, QF mode {results['qf_mode']}\n",
        f"Method `{method}` (net_type `{results.get('net_type')}`, "
        + (f"checkpoint `{results['model_path']}`" if results.get("model_path") else f"netG {results.get('netG')}")
        + f"), device {results.get('device')}.\n",
    ]
    if results["protocol"] == "real":
        lines.append(_real_summary(results))
    else:
        lines.append(
            "Cells: PSNR (dB) / SSIM / PSNR-B (dB), averaged over each test set"
            + (f"; paper: {TABLE_TITLES[table].split(':')[0]}" if table else "")
            + ".\n"
        )
        fbcnn = PAPER_FBCNN.get(table, "FBCNN")
        if table == 3 and results["qf_mode"] == "dominant":
            fbcnn = "FBCNN-D"
        header = ["dataset", "degradation", "images", "JPEG", method, "PSNR gain", "predicted QF"]
        header += ["paper JPEG", f"paper {fbcnn}"]
        body = []
        for avg in results["averages"]:
            paper = paper_row(table, avg) or {}
            gain = (
                f"{avg['psnr'] - avg['jpeg_psnr']:+.2f}"
                if avg.get("psnr") is not None and avg.get("jpeg_psnr")
                else "-"
            )
            pred = "-" if avg.get("predicted_qf") is None else f"{avg['predicted_qf']:.1f}"
            body.append(
                [avg["dataset"], avg["degradation"], avg["n_images"], fmt_cell(avg, "jpeg_"), fmt_cell(avg)]
                + [gain, pred, fmt_cell(paper.get("JPEG")), fmt_cell(paper.get(fbcnn))]
            )
        lines.append(markdown_table(header, body))
        if table == 3:
            lines.append("\n" + TABLE3_NOTE + "\n")
    if results.get("sweep"):
        lines.append(_sweep_summary(results))
    if results.get("failures"):
        lines.append("\n## Files that failed\n")
        lines += [f"- {f['dataset']}: `{f['file']}`: {f['error']}" for f in results["failures"]]
        lines.append("")
    return "\n".join(lines)


def _real_summary(results: Mapping[str, Any]) -> str:
    header = ["dataset", "image", "predicted QF", "QF used", "output", "outputs at set QFs", "note"]
    body = []
    for row in results["images"]:
        pred = "-" if row.get("predicted_qf") is None else f"{row['predicted_qf']:.1f}"
        used = "blind" if row.get("qf_used") is None else row["qf_used"]
        swept = [
            s["output"]
            for s in results.get("sweep", [])
            if s["dataset"] == row["dataset"] and s["image"] == row["image"] and s.get("output")
        ]
        body.append(
            [row["dataset"], row["image"], pred, used, row.get("output") or "-", ", ".join(swept) or "-", row["note"]]
        )
    return "Real JPEGs without ground truth: no scores, the network's predicted QF per image.\n\n" + markdown_table(
        header, body
    )


def _sweep_summary(results: Mapping[str, Any]) -> str:
    rows = [r for r in results["sweep"] if r.get("psnr") is not None]
    if not rows:
        return ""
    avgs = average_rows(rows, ("dataset", "degradation", "qf_set"), METRICS)
    body = [[a["dataset"], a["degradation"], a["qf_set"], a["n_images"], fmt_cell(a)] for a in avgs]
    return "\n## Flexible control: the same input restored at set QFs\n\n" + markdown_table(
        ["dataset", "degradation", "set QF", "images", "PSNR / SSIM / PSNR-B"], body
    )


# --------------------------------------------------------------------------------------
# Several runs: the paper-style report
# --------------------------------------------------------------------------------------
def collect_results(results_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every ``results.json`` under ``results_dir`` (sorted by path); unreadable files raise naming them."""
    runs = []
    for path in sorted(Path(results_dir).rglob("results.json")):
        try:
            run = json.loads(path.read_text(encoding="utf-8"))
            run["method"], run["averages"]  # noqa: B018 - required keys
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a results.json written by main_test_fbcnn.py ({exc})") from exc
        run["_path"] = str(path)
        runs.append(run)
    return runs


def build_tables(runs: Sequence[Mapping[str, Any]]) -> dict[Any, dict[str, Any]]:
    """Group average rows of all runs into paper tables: ``{1|2|3|'other': {rows, columns, cells}}``.

    Rows are (dataset, degradation) in first-seen order; columns are ``JPEG`` (measured), one per
    run label, then ``paper <method>`` for each of the paper's methods (Tables 1-3 only).
    """
    tables: dict[Any, dict[str, Any]] = {}
    for run in runs:
        if run.get("protocol") == "real":
            continue
        table = paper_table(run["channels"], run["protocol"], run.get("shift"))
        tid = table if table is not None else "other"
        t = tables.setdefault(tid, {"rows": {}, "columns": ["JPEG"], "cells": {}})
        label = run_label(run)
        if label not in t["columns"]:
            t["columns"].append(label)
        for avg in run["averages"]:
            name = (
                avg["dataset"] if table is not None else f"{avg['dataset']} ({'Y' if run['channels'] == 1 else 'RGB'})"
            )
            key = (name, avg["degradation"])
            t["rows"].setdefault(
                key,
                {"dataset": name, "degradation": avg["degradation"], "qf1": avg.get("qf1"), "qf": avg.get("qf")}
                | {"images": avg.get("n_images")},
            )
            t["cells"].setdefault((key, "JPEG"), {m: avg.get("jpeg_" + m) for m in METRICS})
            t["cells"][(key, label)] = {m: avg.get(m) for m in METRICS}
            for method, values in (paper_row(table, avg) or {}).items():
                t["cells"][(key, f"paper {method}")] = values
    for tid, t in tables.items():
        if tid != "other":
            t["columns"] += [f"paper {m}" for m in paper_methods(tid)]
    return tables


def table_markdown(tid: Any, t: Mapping[str, Any]) -> str:
    header = ["dataset", "QF1, QF2" if tid == 3 else "QF", "images", *t["columns"]]
    body = []
    for key, row in t["rows"].items():
        qf = f"{row['qf1']}, {row['qf']}" if row.get("qf1") is not None else (row["qf"] or row["degradation"])
        cells = [fmt_cell(t["cells"].get((key, c))) for c in t["columns"]]
        body.append([row["dataset"], qf, row["images"], *cells])
    text = f"## {TABLE_TITLES[tid]}\n\nCells: PSNR (dB) / SSIM / PSNR-B (dB).\n\n" + markdown_table(header, body)
    return text + ("\n" + TABLE3_NOTE + "\n" if tid == 3 else "")


def table_csv_rows(t: Mapping[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    columns = ["dataset", "degradation", "qf1", "qf", "images"]
    columns += [f"{c} {METRIC_TITLES[m].split(' ')[0]}" for c in t["columns"] for m in METRICS]
    rows = []
    for key, row in t["rows"].items():
        out = {k: row.get(k) for k in columns[:5]}
        for c in t["columns"]:
            cell = t["cells"].get((key, c)) or {}
            for m in METRICS:
                out[f"{c} {METRIC_TITLES[m].split(' ')[0]}"] = cell.get(m)
        rows.append(out)
    return columns, rows


def write_report(results_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> Path:
    """Regenerate ``report.md`` and ``table1.csv`` / ``table2.csv`` / ``table3.csv`` / ``other.csv``."""
    runs = collect_results(results_dir)
    if not runs:
        raise FileNotFoundError(f"{results_dir}: no results.json found (run main_test_fbcnn.py first)")
    out_dir = Path(out_dir or results_dir)
    tables = build_tables(runs)
    parts = ["# JPEG artifact removal: results\n", f"From {len(runs)} run(s) under `{results_dir}`:\n"]
    parts += [f"- `{run_label(r)}`: {r['protocol']}, {r['channels']} channel(s), `{r['_path']}`" for r in runs]
    parts.append("")
    for tid in sorted(tables, key=lambda k: (isinstance(k, str), str(k))):
        parts.append(table_markdown(tid, tables[tid]))
        columns, rows = table_csv_rows(tables[tid])
        write_csv(out_dir / (f"table{tid}.csv" if tid != "other" else "other.csv"), rows, columns)
    real = [r for r in runs if r.get("protocol") == "real"]
    for run in real:
        parts.append(f"## Real JPEGs: {run_label(run)}\n\n" + _real_summary(run))
    path = out_dir / "report.md"
    write_text(path, "\n".join(parts))
    return path


# --------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------
def side_by_side(rows: Sequence[Sequence[tuple[str, np.ndarray]]], crop: int = 160, zoom: int = 2) -> np.ndarray:
    """A grid of labelled crops: each row is ``[(label, uint8 HxWxC image), ...]`` of equally sized images.

    The same ``crop x crop`` window (centred) is cut from every image of a row and enlarged
    ``zoom`` times (nearest neighbour, so artifacts stay visible). Returns uint8 RGB.
    """
    bar, gap = 24, 4
    size = crop * zoom
    grid = []
    for row in rows:
        tiles = []
        for label, img in row:
            img = np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img
            h, w = img.shape[:2]
            top, left = max((h - crop) // 2, 0), max((w - crop) // 2, 0)
            patch = img[top : top + crop, left : left + crop]
            patch = cv2.resize(patch, (patch.shape[1] * zoom, patch.shape[0] * zoom), interpolation=cv2.INTER_NEAREST)
            tile = np.zeros((bar + size, size, 3), np.uint8)
            tile[bar : bar + patch.shape[0], : patch.shape[1]] = patch
            cv2.putText(tile, label[:40], (4, bar - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
            tiles.append(tile)
            tiles.append(np.full((bar + size, gap, 3), 255, np.uint8))
        grid.append(np.concatenate(tiles[:-1], axis=1))
    width = max(r.shape[1] for r in grid)
    padded = []
    for r in grid:
        padded.append(np.pad(r, ((0, gap), (0, width - r.shape[1]), (0, 0)), constant_values=255))
    return np.concatenate(padded, axis=0)[:-gap]


def plot_flexible_control(
    set_qfs: Sequence[float],
    metrics: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    true_qf: float | None = None,
    predicted_qf: float | None = None,
    blind: Mapping[str, float] | None = None,
    title: str = "",
) -> None:
    """Plot PSNR / SSIM / PSNR-B against the set QF (paper Fig. 4) and save a PNG atomically.

    ``true_qf`` (the JPEG quality) and ``predicted_qf`` (the blind estimate) are marked with
    vertical lines; ``blind`` (the blind result's metrics) is drawn as a star at the prediction.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.4))
    for ax, m in zip(axes, METRICS, strict=True):
        ax.plot(list(set_qfs), list(metrics[m]), "o-", color="tab:blue", label="set QF")
        if true_qf is not None:
            ax.axvline(true_qf, color="tab:green", linestyle=":", label=f"true QF {true_qf:g}")
        if predicted_qf is not None:
            ax.axvline(predicted_qf, color="tab:red", linestyle="--", label=f"blind prediction {predicted_qf:.1f}")
            if blind and blind.get(m) is not None:
                ax.plot([predicted_qf], [blind[m]], "*", color="tab:red", markersize=12)
        ax.set_xlabel("QF set as qf_input")
        ax.set_ylabel(METRIC_TITLES[m])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m utils.utils_report",
        description="Regenerate the paper-style report (report.md, table1.csv, table2.csv, table3.csv, other.csv) "
        "from every results.json that main_test_fbcnn.py wrote under RESULTS_DIR.",
    )
    parser.add_argument("results_dir", metavar="RESULTS_DIR", help="folder searched recursively for results.json")
    parser.add_argument("--out", default=None, help="where to write the report (default: RESULTS_DIR)")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.results_dir, args.out)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path.read_text(encoding="utf-8"))
    print(f"Report written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
