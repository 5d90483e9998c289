"""FBCNN web demo: upload a JPEG (or pick an example), see the blind restoration and slide the QF.

Examples::

    python3 -m pip install -r requirements-demo.txt     # Gradio, an optional extra
    python3 main_demo_fbcnn.py                           # http://127.0.0.1:7860, the bundled models
    python3 main_demo_fbcnn.py --model fbcnn_color.pth   # any FBCNN checkpoint (repeatable), listed first
    python3 main_demo_fbcnn.py --host 0.0.0.0 --port 8000   # listen on the network: an explicit opt-in
    python3 main_demo_fbcnn.py --share                   # a public Gradio link: an explicit opt-in

The page shows the blind restoration with the network's predicted QF, the FBCNN-D estimate of the dominant QF
(``utils.dominant_qf``) and the JPEG grid phase (``utils.grid_align``), a before/after comparison with zoom, a
QF slider that restores again with that ``qf_input`` (flexible control) and a "Blind" button. Restoration goes
through the restore CLI's path (``main_restore_fbcnn.restore_pixels``: the model's channels, grid-aware
inference, tiles of ``--tile`` pixels with one global QF), so large images cost bounded memory; images over
``--max-pixels`` are refused before they are decoded (decompression bombs). The result downloads as PNG (16-bit
for 16-bit inputs). Unreadable uploads give a message on the page.

Conventions: pixels are uint8 in [0, 255] (uint16 in [0, 65535] for 16-bit files); QFs on the page are JPEG
qualities 1..100 (the network's ``qf_input`` is (100 - QF) / 100).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from data.degradations import jpeg, shift_crop
from main_restore_fbcnn import LoadedImage, read_image, restore_pixels, to_uint8, write_image
from models import ZOO_MODELS, load_model
from utils.backends import BACKENDS, Backend, backend_for_model, runner
from utils.dominant_qf import QFEstimate, estimate_dominant_qf
from utils.grid_align import GridPhase, estimate_grid_phase
from utils.tiling import DEFAULT_OVERLAP, DEFAULT_TILE
from utils.utils_eval import model_channels
from utils.utils_image import ImageReadError

log = logging.getLogger("fbcnn-demo")

DEFAULT_MAX_PIXELS = 50_000_000  # 50 MP: a 8000 x 6000 photo passes, a decompression bomb does not
COMPARE_SIZE = 512  # side of the before/after crop shown, in screen pixels
ZOOMS = ("1x", "2x", "4x", "8x")
# name -> (scikit-image image, how it is compressed): QF, or (QF1, QF2) for a non-aligned double JPEG, and
# the (rows, columns) cropped after the last JPEG (so that the grid is not at the origin)
EXAMPLES = {
    "astronaut, JPEG QF 10": ("astronaut", 10, (0, 0)),
    "camera (gray), JPEG QF 20": ("camera", 20, (0, 0)),
    "coffee, double JPEG QF 10 then 40 (FBCNN-D)": ("coffee", (10, 40), (0, 0)),
    "chelsea, JPEG QF 30 cropped by (3, 5) (grid phase)": ("chelsea", 30, (3, 5)),
}


class DemoError(ValueError):
    """A problem to show on the page (unreadable or too large upload), not a traceback."""


# --------------------------------------------------------------------------------------
# The work, without Gradio
# --------------------------------------------------------------------------------------
def example_image(name: str) -> np.ndarray:
    """The named ``EXAMPLES`` image: a scikit-image photo compressed as stated (uint8 ``H x W x C``)."""
    from skimage import data

    source, qf, crop = EXAMPLES[name]
    img = getattr(data, source)()
    img = img[:, :, None] if img.ndim == 2 else img
    if isinstance(qf, tuple):  # non-aligned double JPEG: JPEG(QF1), drop 4 rows and 4 columns, JPEG(QF2)
        img = jpeg(shift_crop(jpeg(img, qf[0]), (4, 4)), qf[1])
    else:
        img = jpeg(img, qf)
    return np.ascontiguousarray(shift_crop(img, crop))


def load_upload(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Read an uploaded file as the restore CLI does, refusing images over ``max_pixels`` before decoding them.

    Raises ``DemoError`` with a message for the page.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:  # reads the header only
            width, height = im.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DemoError(f"{path.name} is not a readable image ({exc})") from exc
    if width * height > max_pixels:
        raise DemoError(
            f"{path.name} is {width} x {height} = {width * height / 1e6:.1f} MP, over the limit of "
            f"{max_pixels / 1e6:.1f} MP (--max-pixels)"
        )
    try:
        img = read_image(path)
    except ImageReadError as exc:
        raise DemoError(str(exc).replace(str(path), path.name)) from exc
    if min(img.pixels.shape[:2]) < 8:
        raise DemoError(f"{path.name} is {width} x {height}: too small (at least 8 x 8 pixels)")
    return img


@dataclass(frozen=True)
class Analysis:
    """What the page reports about an input: FBCNN-D's estimate and the JPEG grid phase (None if too small)."""

    dominant: QFEstimate | None
    grid: GridPhase


def analyse(image: LoadedImage) -> Analysis:
    """FBCNN-D (``estimate_dominant_qf``) and the grid phase of an image (of its Y plane if it is a JPEG)."""
    img = image.analysis_pixels()
    try:
        dominant = estimate_dominant_qf(img)
    except ValueError:  # smaller than 16 x 16
        dominant = None
    return Analysis(dominant, estimate_grid_phase(img))


def describe(analysis: Analysis, qf_used: float | None, how: str) -> str:
    """Markdown for the page: the QF used, FBCNN-D's estimate and the grid phase."""
    qf_text = "none (this network predicts no QF)" if qf_used is None else f"**{qf_used:.1f}**"
    lines = [f"- QF used: {qf_text} ({how})"]
    dom = analysis.dominant
    if dom is None:
        lines.append("- FBCNN-D: image too small to search")
    elif dom.accepted:
        lines.append(f"- FBCNN-D dominant QF: **{dom.qf}** (MSE {dom.mse:.1f} at shift {dom.shift})")
    elif dom.qf_found is not None:
        lines.append(f"- FBCNN-D: no dominant QF accepted (best dip at QF {dom.qf_found}, MSE {dom.mse:.1f})")
    else:
        lines.append("- FBCNN-D: no JPEG trace found")
    last = "" if dom is None or dom.qf_last is None else f"; last compression's QF {dom.qf_last}"
    phase = analysis.grid.phase
    if phase is None:
        lines.append(f"- JPEG grid: not detected (restored as it is){last}")
    else:
        lines.append(f"- JPEG grid phase: **{phase}** (rows, columns from the origin){last}")
    return "\n".join(lines)


def comparison(before: np.ndarray, after: np.ndarray, zoom: int, cx: float, cy: float) -> tuple[np.ndarray, ...]:
    """The same crop of ``before`` and ``after`` (uint8 ``H x W x C``), magnified ``zoom`` x by pixel repetition.

    The crop is ``COMPARE_SIZE / zoom`` pixels a side (clipped to the image), centred at ``(cx, cy)``, fractions
    of the width and height in [0, 1]. Returns two uint8 ``H x W x 3`` images for the before/after slider.
    """
    h, w = before.shape[:2]
    side_y, side_x = min(h, max(1, COMPARE_SIZE // zoom)), min(w, max(1, COMPARE_SIZE // zoom))
    y0 = int(np.clip(round(cy * h - side_y / 2), 0, h - side_y))
    x0 = int(np.clip(round(cx * w - side_x / 2), 0, w - side_x))

    def crop(img: np.ndarray) -> np.ndarray:
        part = to_uint8(img[y0 : y0 + side_y, x0 : x0 + side_x])
        part = np.repeat(part, 3, axis=2) if part.shape[2] == 1 else part
        return np.ascontiguousarray(part.repeat(zoom, axis=0).repeat(zoom, axis=1))

    return crop(before), crop(after)


class Restorer:
    """Models by name, loaded on first use, and the restoration of one image with one of them."""

    def __init__(
        self, models: dict[str, Path], device: str = "cpu", tile: int = DEFAULT_TILE, backend: str = "auto"
    ) -> None:
        self.paths, self.device, self.tile, self.backend = dict(models), torch.device(device), tile, backend
        self.backends: dict[str, Backend] = {}

    @functools.cache  # noqa: B019 (one Restorer per process; the models are meant to stay loaded)
    def model(self, name: str) -> nn.Module:
        """Model ``name`` on the backend the restore CLI would pick (``utils.backends``; onnxruntime on CPUs
        without native bf16, half precision where native)."""
        network = load_model(self.paths[name], self.device)
        backend = backend_for_model(network, self.paths[name], self.backend, self.device)
        self.backends[name] = backend
        log.info("model %s: backend %s (%s), half precision %s", name, backend.name, backend.reason, backend.half)
        return runner(network, self.paths[name], backend)

    def restore(
        self, name: str, img: LoadedImage, qf: float | None, phase: tuple[int, int] | None
    ) -> tuple[np.ndarray, float | None]:
        """Restore ``img`` with model ``name`` at JPEG quality ``qf`` (None: blind); returns (pixels, QF used)."""
        model = self.model(name)
        half = self.backends[name].half and img.pixels.dtype == np.uint8  # 16-bit inputs: float32, as in the CLI
        return restore_pixels(
            model,
            img.pixels,
            qf,
            phase=phase,
            tile=self.tile or None,
            overlap=DEFAULT_OVERLAP,
            half=half,
            channels_last=True,
        )

    def channels(self, name: str) -> int:
        return model_channels(self.model(name))


def model_choices(extra: Sequence[str | Path]) -> dict[str, Path]:
    """Display name -> checkpoint: the ``--model`` files first (in order), then the bundled gray and colour models.

    A file given twice, or a ``--model`` that is a bundled file, is listed once.
    """
    named = [(f"{Path(p).name} (--model)", Path(p)) for p in extra]
    bundled = [("gray", ZOO_MODELS[1]), ("colour", ZOO_MODELS[3])]
    named += [(f"{label}: {path.name} (bundled)", path) for label, path in bundled if path.is_file()]
    choices: dict[str, Path] = {}
    listed: set[Path] = set()
    for name, path in named:
        if path.resolve() not in listed:
            choices[name] = path
            listed.add(path.resolve())
    return choices


# --------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------
def build_demo(restorer: Restorer, max_pixels: int = DEFAULT_MAX_PIXELS, workdir: Path | None = None):
    """The Gradio Blocks app (``gradio`` is imported here: it is an optional extra)."""
    import gradio as gr

    workdir = Path(workdir or tempfile.mkdtemp(prefix="fbcnn-demo-"))
    names = list(restorer.paths)

    def run(state: dict | None, name: str, qf: float | None, zoom: str, cx: float, cy: float):
        """Restore the current image; returns the outputs after the state."""
        if not state or "img" not in state:
            return state, "Upload an image or load an example.", None, None, None, gr.skip()
        img, analysis = state["img"], state["analysis"]
        out, qf_used = restorer.restore(name, img, qf, analysis.grid.phase)
        how = "set with the slider" if qf is not None else "blind: predicted by the network"
        state = {**state, "out": out}
        png = workdir / f"{Path(state['name']).stem}_restored_{'blind' if qf is None else f'qf{qf:.0f}'}.png"
        write_image(png, out, img.alpha, "png")
        shown = to_uint8(out)
        shown = shown[:, :, 0] if shown.shape[2] == 1 else shown
        pair = comparison(img.pixels, out, int(zoom.rstrip("x")), cx / 100, cy / 100)
        slider = gr.skip() if qf is not None or qf_used is None else round(qf_used)  # show the predicted QF
        return state, describe(analysis, qf_used, how), shown, pair, str(png), slider

    def new_image(img: LoadedImage, label: str, name: str, zoom: str, cx: float, cy: float):
        state = {"img": img, "name": label, "analysis": analyse(img)}
        return run(state, name, None, zoom, cx, cy)

    def on_upload(path: str | None, name: str, zoom: str, cx: float, cy: float):
        if not path:
            return None, "Upload an image or load an example.", None, None, None, gr.skip()
        try:
            img = load_upload(path, max_pixels)
        except DemoError as exc:
            return None, f"**Could not use this file:** {exc}", None, None, None, gr.skip()
        return new_image(img, Path(path).name, name, zoom, cx, cy)

    def on_example(example: str, name: str, zoom: str, cx: float, cy: float):
        return new_image(LoadedImage(example_image(example)), f"{example.split(',')[0]}.png", name, zoom, cx, cy)

    def on_zoom(state: dict | None, zoom: str, cx: float, cy: float):
        if not state or "out" not in state:
            return None
        return comparison(state["img"].pixels, state["out"], int(zoom.rstrip("x")), cx / 100, cy / 100)

    with gr.Blocks(title="FBCNN: flexible blind JPEG artifact removal") as demo:
        gr.Markdown(
            "# FBCNN: flexible blind JPEG artifact removal\n"
            "Upload a JPEG (or any image) or load an example. The network predicts the QF and restores blind; "
            "move the QF slider to restore as for that quality (lower = stronger smoothing), **Blind** goes back."
        )
        state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Upload an image", type="filepath", elem_id="upload")
                example = gr.Dropdown(list(EXAMPLES), value=next(iter(EXAMPLES)), label="Or an example")
                load_example = gr.Button("Load example", elem_id="load-example")
                model = gr.Radio(names, value=names[0], label="Model", elem_id="model")
                qf = gr.Slider(1, 100, value=50, step=1, label="QF (flexible control)", elem_id="qf-slider")
                blind = gr.Button("Blind (predicted QF)", variant="primary", elem_id="blind")
                info = gr.Markdown("Upload an image or load an example.", elem_id="info")
                download = gr.File(label="Download the result (PNG)", elem_id="download", interactive=False)
            with gr.Column(scale=2):
                output = gr.Image(label="Restored", type="numpy", format="png", elem_id="output", interactive=False)
                compare = gr.ImageSlider(
                    label="Before / after (drag the divider)", type="numpy", format="png", elem_id="compare"
                )
                with gr.Row():
                    zoom = gr.Radio(list(ZOOMS), value="2x", label="Zoom", elem_id="zoom")
                    cx = gr.Slider(0, 100, value=50, step=1, label="Centre x (%)")
                    cy = gr.Slider(0, 100, value=50, step=1, label="Centre y (%)")

        outputs = [state, info, output, compare, download, qf]
        view = [zoom, cx, cy]
        upload.upload(on_upload, [upload, model, *view], outputs)
        load_example.click(on_example, [example, model, *view], outputs)
        qf.release(lambda s, n, q, *v: run(s, n, float(q), *v), [state, model, qf, *view], outputs)
        blind.click(lambda s, n, *v: run(s, n, None, *v), [state, model, *view], outputs)
        model.change(lambda s, n, *v: run(s, n, None, *v), [state, model, *view], outputs)
        for control in view:
            control.change(on_zoom, [state, *view], [compare])
    return demo


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(  # prog: main_demo_fbcnn.py from a checkout, fbcnn-demo when installed
        description="FBCNN web demo (Gradio): blind restoration, the QF slider, FBCNN-D and the grid phase.",
    )
    parser.add_argument("--model", action="append", default=[], help="FBCNN checkpoint to offer (repeatable)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default %(default)s)")
    parser.add_argument("--share", action="store_true", help="also open a public Gradio share link (opt-in)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default %(default)s)")
    parser.add_argument(
        "--tile", type=int, default=DEFAULT_TILE, help="tile size for large images, 0 = whole (default %(default)s)"
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=os.environ.get("FBCNN_BACKEND") or "auto",
        help="as in the restore CLI: torch, onnxruntime (CPU) or auto, the fastest present "
        "(default: %(default)s; $FBCNN_BACKEND sets it)",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help="refuse uploads with more pixels than this (default %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    for ours in (log, logging.getLogger("fbcnn-restore")):  # ours (and the shared backend's) at INFO; others quieter
        ours.setLevel(logging.INFO)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if args.tile < 0 or args.tile % 8:
        log.error("--tile must be 0 or a positive multiple of 8, got %d", args.tile)
        return 2
    missing = [m for m in args.model if not Path(m).is_file()]
    if missing:
        log.error("model file(s) not found: %s", ", ".join(missing))
        return 2
    choices = model_choices(args.model)
    if not choices:
        log.error("no model: pass --model PATH (the bundled models in model_zoo/ are missing)")
        return 2
    try:
        import gradio  # noqa: F401
    except ImportError:
        log.error("the demo needs Gradio: python3 -m pip install -r requirements-demo.txt")
        return 2
    Image.MAX_IMAGE_PIXELS = args.max_pixels  # Pillow refuses to decode far larger images at all
    restorer = Restorer(choices, args.device, args.tile, args.backend)
    first = next(iter(choices))
    try:  # the first model now, not on the first request (an ONNX export takes a while, once per checkpoint)
        restorer.model(first)
    except Exception as exc:  # a bad checkpoint or a failed export: name it, no traceback
        log.error("model %s (%s) failed to load: %s", first, choices[first], exc)
        return 2
    demo = build_demo(restorer, args.max_pixels)
    import gradio as gr

    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])  # no web fonts
    demo.queue(default_concurrency_limit=1).launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        max_file_size="200mb",
        show_error=False,
        theme=theme,
    )
    return 0


def cli() -> None:
    """Console-script entry point (``fbcnn-demo``, installed with the ``demo`` extra's Gradio)."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
