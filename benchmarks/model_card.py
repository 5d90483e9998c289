"""Regenerate the measured numbers of the model card (model_zoo/README.md) with the test script.

    python benchmarks/model_card.py [--testsets ../shared/datasets/testsets] [--write]

Runs ``main_test_fbcnn.py``'s evaluation for the bundled models: gray on Classic5, LIVE1 (Y) and
BSDS500 (Y) at QF 10/20/30/40 and on the Table 3 double-JPEG pairs (LIVE1 Y); colour on LIVE1 and
BSDS500 (RGB) at QF 10/20/30/40. Prints one table per model with the JPEG input and the paper's
FBCNN beside each figure (PSNR / SSIM / PSNR-B); ``--write`` also replaces the generated section of
model_zoo/README.md with exactly what is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import main_test_fbcnn  # noqa: E402
from models import ZOO_MODELS  # noqa: E402
from utils.utils_report import paper_row  # noqa: E402

BEGIN, END = "<!-- model-card:begin (benchmarks/model_card.py --write) -->", "<!-- model-card:end -->"
QFS = [10, 20, 30, 40]
PAIRS = [[30, 10], [50, 10], [50, 30], [10, 10], [30, 30], [50, 50], [10, 30], [10, 50], [30, 50]]


def runs(testsets: Path) -> list[tuple[str, Path, list[str]]]:
    """(title, option file, overrides) of every evaluation on the card."""
    gray, color = str(ZOO_MODELS[1]), str(ZOO_MODELS[3])
    common = ["save_images=false", "comparison_images=0", "missing_testsets=fail", "fallback_testsets={}"]
    return [
        (
            "gray, single JPEG (Table 1)",
            ROOT / "options/test_fbcnn_gray.json",
            [
                f"model_path={gray}",
                f"qfs={json.dumps(QFS)}",
                "task=card_gray_single",
                "testsets="
                + json.dumps(
                    {
                        "Classic5": str(testsets / "Classic5"),
                        "LIVE1": str(testsets / "LIVE1_gray"),
                        "BSDS500": str(testsets / "BSDS500"),
                    }
                ),
                *common,
            ],
        ),
        (
            "gray, non-aligned double JPEG on LIVE1 (Table 3)",
            ROOT / "options/test_fbcnn_double.json",
            [
                f"model_path={gray}",
                f"qf_pairs={json.dumps(PAIRS)}",
                "task=card_gray_double",
                "testsets=" + json.dumps({"LIVE1": str(testsets / "LIVE1_gray")}),
                *common,
            ],
        ),
        (
            "colour, single JPEG (Table 2)",
            ROOT / "options/test_fbcnn_color.json",
            [
                f"model_path={color}",
                f"qfs={json.dumps(QFS)}",
                "task=card_color_single",
                "testsets="
                + json.dumps({"LIVE1": str(testsets / "LIVE1_color"), "BSDS500": str(testsets / "BSDS500")}),
                *common,
            ],
        ),
    ]


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--testsets", type=Path, default=ROOT.parent / "shared" / "datasets" / "testsets")
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    parser.add_argument("--write", action="store_true", help="replace the generated section of model_zoo/README.md")
    args = parser.parse_args()
    sections = []
    for (title, opt_file, overrides), paper_id in zip(runs(args.testsets), (1, 3, 2), strict=True):
        opt = main_test_fbcnn.load_options(opt_file, [*overrides, f"path.results={args.results}"])
        if main_test_fbcnn.run(opt) != 0:
            print(f"error: the evaluation '{title}' failed; see its test.log", file=sys.stderr)
            return 1
        results = json.loads((args.results / opt["task"] / "results.json").read_text())
        sections.append(table(title, results, paper_id))
    text = "\n\n".join(sections)
    print(text)
    if args.write:
        card = ROOT / "model_zoo" / "README.md"
        content = card.read_text()
        start, end = content.index(BEGIN) + len(BEGIN), content.index(END)
        card.write_text(content[:start] + "\n" + text + "\n" + content[end:])
        print(f"\nwrote {card}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
