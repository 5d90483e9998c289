"""Regenerate the measured numbers of the model card (model_zoo/README.md) with the test script.

    python benchmarks/model_card.py [--models gray color] [--testsets ../shared/datasets/testsets] [--write]

Runs ``main_test_fbcnn.py``'s evaluation for the bundled models: gray on Classic5, LIVE1 (Y) and
BSDS500 (Y) at QF 10/20/30/40 and on the Table 3 double-JPEG pairs (LIVE1 Y); colour on LIVE1 and
BSDS500 (RGB) at QF 10/20/30/40. Prints, per model, its training summary (read from the training log
committed in model_zoo/logs/) and one table per evaluation with the JPEG input and the paper's FBCNN
beside each figure (PSNR / SSIM / PSNR-B). ``--write`` also replaces that model's generated section of
model_zoo/README.md with exactly what is printed, redraws model_zoo/training_curves.png and writes
model_zoo/zoo_checks.json: the quick figures tests/test_model_zoo.py re-measures (PSNR gain over the
JPEG input and predicted QF on the first three LIVE1 images at QF 10, per model, with the model file's
SHA-256, plus the gain at two grid offsets and the flexible-control response). ``--checks-only`` writes
that file alone, without the full evaluation.

Besides the paper's tables the card measures, on LIVE1 at QF 10 (all images, plain forward):
- robustness to cropped JPEGs: the gain with the JPEG cropped by ``GRID_OFFSETS`` after compression (its
  8x8 grid off the origin), without and with grid-aware inference (utils/grid_align.py);
- the flexible control: the mean output change between set QF 10 and set QF 90 (levels) and the
  PSNR-B at each, for the QF-10 inputs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import main_test_fbcnn  # noqa: E402
from models import ZOO_MODELS  # noqa: E402
from utils.training_log import TrainingLog, chain_logs, parse_train_log, plot_training_curves  # noqa: E402
from utils.utils_io import atomic_write  # noqa: E402
from utils.utils_report import paper_row  # noqa: E402

CARD = ROOT / "model_zoo" / "README.md"
CURVES = ROOT / "model_zoo" / "training_curves.png"
CHECKS = ROOT / "model_zoo" / "zoo_checks.json"
CHECK_QF = 10  # JPEG quality of the quick checks
CHECK_IMAGES = 3  # the first images (sorted names) of LIVE1_gray / LIVE1_color
MODELS = {"gray": 1, "color": 3}
QFS = [10, 20, 30, 40]
PAIRS = [[30, 10], [50, 10], [50, 30], [10, 10], [30, 30], [50, 50], [10, 30], [10, 50], [30, 50]]
GRID_OFFSETS = [(0, 0), (1, 1), (4, 4), (3, 6), (7, 2)]  # rows, columns cropped after the JPEG
CHECK_OFFSETS = [(1, 1), (7, 2)]  # the quick checks' grid offsets
CONTROL_QFS = (10, 90)  # set QFs compared by the flexible-control check


def markers(model: str) -> tuple[str, str]:
    """The comments around a model's generated section of the card."""
    return (
        f"<!-- model-card:begin {model} (benchmarks/model_card.py --write) -->",
        f"<!-- model-card:end {model} -->",
    )


def training_logs(model: str) -> list[Path]:
    """The committed training logs of a bundled model, one per stage (copies of experiments/<task>/train.log,
    named ``<name><stage>.train.log``: ``<name>.train.log``, ``<name>_ft.train.log``, ``<name>_v2.train.log``, ...),
    in the order they ran (the first timestamp of each)."""
    stem = ZOO_MODELS[MODELS[model]].stem
    logs = (ROOT / "model_zoo" / "logs").glob(f"{stem}*.train.log")
    return sorted(logs, key=lambda path: path.read_text(encoding="utf-8")[:19])


def chained_log(model: str) -> TrainingLog | None:
    """The model's stages as one log (iterations counted across stages), or None without logs."""
    paths = training_logs(model)
    return chain_logs([parse_train_log(path) for path in paths]) if paths else None


def runs(model: str, testsets: Path) -> list[tuple[str, Path, list[str], int]]:
    """(title, option file, overrides, paper table) of every evaluation of one model on the card."""
    path = str(ZOO_MODELS[MODELS[model]])
    common = [f"model_path={path}", "save_images=false", "comparison_images=0", "missing_testsets=fail"]
    common.append("fallback_testsets={}")
    if model == "gray":
        single = {"Classic5": "Classic5", "LIVE1": "LIVE1_gray", "BSDS500": "BSDS500"}
        return [
            (
                "gray, single JPEG (Table 1)",
                ROOT / "options/test_fbcnn_gray.json",
                [f"qfs={json.dumps(QFS)}", "task=card_gray_single", _testsets(testsets, single), *common],
                1,
            ),
            (
                "gray, non-aligned double JPEG on LIVE1 (Table 3)",
                ROOT / "options/test_fbcnn_double.json",
                [
                    f"qf_pairs={json.dumps(PAIRS)}",
                    "task=card_gray_double",
                    _testsets(testsets, {"LIVE1": "LIVE1_gray"}),
                    *common,
                ],
                3,
            ),
        ]
    return [
        (
            "colour, single JPEG (Table 2)",
            ROOT / "options/test_fbcnn_color.json",
            [
                f"qfs={json.dumps(QFS)}",
                "task=card_color_single",
                _testsets(testsets, {"LIVE1": "LIVE1_color", "BSDS500": "BSDS500"}),
                *common,
            ],
            2,
        )
    ]


def _testsets(root: Path, folders: dict[str, str]) -> str:
    return "testsets=" + json.dumps({name: str(root / folder) for name, folder in folders.items()})


def _iterations(stage: TrainingLog) -> str:
    if stage.start_step:  # continued the previous stage's numbering from its weights
        return f"its iterations {stage.start_step:,} to {stage.last_step:,}"
    return f"{stage.last_step:,} iterations"


def training_summary(model: str) -> str:
    """One paragraph: iterations and training hours per stage, and where the weights come from."""
    paths = training_logs(model)
    if not paths:
        return f"_No training log of {ZOO_MODELS[MODELS[model]].name} in model_zoo/logs/._"
    stages = [parse_train_log(path) for path in paths]
    log = chain_logs(stages)
    step, psnr = log.best_step()
    parts = [
        f"{stage.name} ({_iterations(stage)}, {stage.hours():.1f} h, `model_zoo/logs/{path.name}`)"
        for stage, path in zip(stages, paths, strict=True)
    ]
    return (
        f"_Training: {' then '.join(parts)}; {log.hours():.1f} h of wall-clock training on a 2-core CPU in all. "
        f"Weights from iteration {step:,} of {log.last_step:,}, the last stage's best_G: its best mean validation "
        f"PSNR ({psnr:.2f} dB over QF {', '.join(map(str, sorted(log.val[step])))} on the held-out images)._"
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def quick_checks(model: str, testsets: Path) -> dict:
    """The figures tests/test_model_zoo.py re-measures for one bundled model.

    Per image of the first ``CHECK_IMAGES`` of LIVE1 (Y for gray, RGB for colour) at JPEG ``CHECK_QF``
    (OpenCV): the PSNR gain of the blind restoration over the JPEG input (dB) and the predicted QF.
    """
    from data.degradations import jpeg
    from models import load_model
    from utils.utils_eval import restore, score
    from utils.utils_image import imread_uint, list_images

    channels = MODELS[model]
    path = ZOO_MODELS[channels]
    net = load_model(path)
    folder = testsets / ("LIVE1_gray" if channels == 1 else "LIVE1_color")
    images = {}
    for image in list_images(folder)[:CHECK_IMAGES]:
        gt = imread_uint(image, channels)
        degraded = jpeg(gt, CHECK_QF)
        restored, qf = restore(net, degraded)
        gain = score(gt, restored)["psnr"] - score(gt, degraded)["psnr"]
        images[image.name] = {"psnr_gain_db": round(gain, 4), "predicted_qf": round(qf, 3)}
    gains = [v["psnr_gain_db"] for v in images.values()]
    for offset in CHECK_OFFSETS:  # the same images cropped after the JPEG: the grid off the origin
        for image in list_images(folder)[:CHECK_IMAGES]:
            gt = imread_uint(image, channels)[offset[0] :, offset[1] :]
            degraded = jpeg(imread_uint(image, channels), CHECK_QF)[offset[0] :, offset[1] :]
            gain = score(gt, restore(net, degraded)[0])["psnr"] - score(gt, degraded)["psnr"]
            images[image.name][f"psnr_gain_db_offset{offset[0]}-{offset[1]}"] = round(gain, 4)
    control = control_response(net, folder, channels, list_images(folder)[:CHECK_IMAGES])
    return {
        "model": path.name,
        "sha256": sha256(path),
        "testset": folder.name,
        "jpeg_qf": CHECK_QF,
        "images": images,
        "mean_psnr_gain_db": round(sum(gains) / len(gains), 4),
        "control": control,
    }


def control_response(net, folder: Path, channels: int, images: list[Path]) -> dict:
    """Flexible control on QF-10 JPEGs: mean |output(set QF 10) - output(set QF 90)| (uint8 levels) and the
    mean PSNR-B at each set QF."""
    import numpy as np

    from data.degradations import jpeg
    from utils.utils_eval import restore, score
    from utils.utils_image import imread_uint

    changes, psnrb = [], {qf: [] for qf in CONTROL_QFS}
    for image in images:
        gt = imread_uint(image, channels)
        degraded = jpeg(gt, CHECK_QF)
        outs = {qf: restore(net, degraded, qf=qf)[0] for qf in CONTROL_QFS}
        changes.append(float(np.abs(outs[CONTROL_QFS[0]].astype(np.float64) - outs[CONTROL_QFS[1]]).mean()))
        for qf, out in outs.items():
            psnrb[qf].append(score(gt, out)["psnrb"])
    return {
        "set_qfs": list(CONTROL_QFS),
        "mean_change_levels": round(float(np.mean(changes)), 4),
        "psnrb_db": {str(qf): round(float(np.mean(v)), 4) for qf, v in psnrb.items()},
    }


def robustness_table(model: str, testsets: Path, results: Path) -> str:
    """Gain at each grid offset on LIVE1 QF 10, plain and with grid-aware inference, via the test script."""
    channels = MODELS[model]
    folder = "LIVE1_gray" if channels == 1 else "LIVE1_color"
    opt_file = ROOT / ("options/test_fbcnn_gray.json" if channels == 1 else "options/test_fbcnn_color.json")
    common = [f"model_path={ZOO_MODELS[channels]}", "save_images=false", "comparison_images=0", "qfs=[10]"]
    common += ["missing_testsets=fail", "fallback_testsets={}", _testsets(testsets, {"LIVE1": folder})]
    common.append(f"path.results={results}")
    gains: dict[tuple, float] = {}
    for offset in GRID_OFFSETS:
        for aligned in (False, True):
            task = f"card_{model}_grid{offset[0]}-{offset[1]}{'_aligned' if aligned else ''}"
            extra = [f"grid_offset={json.dumps(list(offset))}", f"grid_align={json.dumps(aligned)}", f"task={task}"]
            opt = main_test_fbcnn.load_options(opt_file, [*common, *extra])
            if main_test_fbcnn.run(opt) != 0:
                raise RuntimeError(f"the evaluation {task} failed; see its test.log")
            row = json.loads((results / task / "results.json").read_text())["averages"][0]
            gains[(offset, aligned)] = row["psnr"] - row["jpeg_psnr"]
    ref = gains[((0, 0), False)]
    lines = [
        f"**Cropped JPEGs** (LIVE1 {'Y' if channels == 1 else 'RGB'}, QF 10, the JPEG cropped by (rows, columns) after "
        "compression): PSNR gain over the JPEG input, dB (share of the aligned gain)",
        "",
        "| grid offset | plain forward | grid-aware inference |",
        "|---|---|---|",
    ]
    for offset in GRID_OFFSETS:
        plain, aligned = gains[(offset, False)], gains[(offset, True)]
        lines.append(
            f"| {offset} | {plain:+.2f} ({100 * plain / ref:.0f} %) | {aligned:+.2f} ({100 * aligned / ref:.0f} %) |"
        )
    return "\n".join(lines)


def control_table(model: str, testsets: Path) -> str:
    from models import load_model
    from utils.utils_image import list_images

    channels = MODELS[model]
    folder = testsets / ("LIVE1_gray" if channels == 1 else "LIVE1_color")
    c = control_response(load_model(ZOO_MODELS[channels]), folder, channels, list_images(folder))
    a, b = (str(q) for q in CONTROL_QFS)
    return (
        f"**Flexible control** (LIVE1, QF-10 JPEGs, all images): setting QF {b} instead of {a} changes the output "
        f"by {c['mean_change_levels']:.2f} levels on average; PSNR-B {c['psnrb_db'][a]:.2f} dB at set QF {a}, "
        f"{c['psnrb_db'][b]:.2f} dB at set QF {b}."
    )


def write_checks(models: list[str], testsets: Path) -> None:
    """Write (or update, per model) model_zoo/zoo_checks.json."""
    checks = json.loads(CHECKS.read_text()) if CHECKS.is_file() else {}
    checks["_about"] = (
        "Written by benchmarks/model_card.py --write (or --checks-only); read by tests/test_model_zoo.py. "
        f"Blind restoration of the first {CHECK_IMAGES} LIVE1 images at JPEG QF {CHECK_QF}."
    )
    for model in models:
        checks[model] = quick_checks(model, testsets)
    text = json.dumps(checks, indent=2, sort_keys=True) + "\n"
    atomic_write(CHECKS, lambda tmp: tmp.write_text(text))
    print(f"wrote {CHECKS}")


def cell(psnr: float, ssim: float, psnrb: float) -> str:
    return f"{psnr:.2f} / {ssim:.3f} / {psnrb:.2f}"


def ref_cell(ref: dict, method: str) -> str:
    m = ref.get(method)
    return cell(m["psnr"], m["ssim"], m["psnrb"]) if m else "–"


def table(title: str, results: dict, paper_id: int) -> str:
    fbcnn = {3: "FBCNN", 1: "FBCNN", 2: "FBCNN-C"}[paper_id]
    lines = [
        f"**{title}**: PSNR (dB) / SSIM / PSNR-B (dB)",
        "",
        "| set | JPEG QF | JPEG input | ours | gain | paper JPEG | paper " + fbcnn + " |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["averages"]:
        ref = paper_row(paper_id, row) or {}

        qf = f"{row['qf1']} → {row['qf']}" if row.get("qf1") else str(row["qf"])
        lines.append(
            f"| {row['dataset']} | {qf} | {cell(row['jpeg_psnr'], row['jpeg_ssim'], row['jpeg_psnrb'])} | "
            f"{cell(row['psnr'], row['ssim'], row['psnrb'])} | {row['psnr'] - row['jpeg_psnr']:+.2f} | "
            f"{ref_cell(ref, 'JPEG')} | {ref_cell(ref, fbcnn)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS), help="which models")
    parser.add_argument("--testsets", type=Path, default=ROOT.parent / "shared" / "datasets" / "testsets")
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    parser.add_argument("--write", action="store_true", help="replace the models' generated sections of the card")
    parser.add_argument("--checks-only", action="store_true", help="only write model_zoo/zoo_checks.json")
    args = parser.parse_args(argv)
    if args.checks_only:
        write_checks(args.models, args.testsets)
        return 0
    texts = {}
    for model in args.models:
        sections = [training_summary(model)]
        for title, opt_file, overrides, paper_id in runs(model, args.testsets):
            opt = main_test_fbcnn.load_options(opt_file, [*overrides, f"path.results={args.results}"])
            if main_test_fbcnn.run(opt) != 0:
                print(f"error: the evaluation '{title}' failed; see its test.log", file=sys.stderr)
                return 1
            results = json.loads((args.results / opt["task"] / "results.json").read_text())
            sections.append(table(title, results, paper_id))
        sections.append(robustness_table(model, args.testsets, args.results))
        sections.append(control_table(model, args.testsets))
        texts[model] = "\n\n".join(sections)
        print(texts[model] + "\n")
    if args.write:
        content = CARD.read_text()
        for model, text in texts.items():
            begin, end = markers(model)
            if begin not in content or end not in content:
                print(f"error: {CARD} lacks the markers {begin} ... {end}", file=sys.stderr)
                return 1
            start, stop = content.index(begin) + len(begin), content.index(end)
            content = content[:start] + "\n" + text + "\n" + content[stop:]
        atomic_write(CARD, lambda tmp: tmp.write_text(content))
        logs = [log for log in map(chained_log, MODELS) if log is not None]
        if logs:
            plot_training_curves(logs, CURVES)
        print(f"wrote {CARD}" + (f" and {CURVES}" if logs else ""))
        write_checks(args.models, args.testsets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
