"""The bundled models: official layout, strict loading, and real gains on LIVE1 at QF10."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from spandrel.architectures.FBCNN import FBCNN as SpandrelFBCNN

from data.degradations import jpeg
from models import ZOO_MODELS, load_model
from utils.utils_eval import restore, score
from utils.utils_image import imread_uint, list_images

# Minimum mean PSNR gain over the JPEG input on the first three LIVE1 images at QF10 (dB), and the
# tolerance on the predicted QF. The committed models gain 1.25 (gray) and 1.02 dB (colour)
# (see model_zoo/README.md); a loader, metric or model regression falls below them.
MIN_GAIN = {1: 1.1, 3: 0.9}
QF_TOLERANCE = {1: 10, 3: 10}


def _official_prefixes() -> set[str]:
    return {key.split(".")[0] for key in SpandrelFBCNN().state_dict()}


@pytest.mark.parametrize("channels", [1, 3])
def test_zoo_model_layout(channels: int) -> None:
    path = ZOO_MODELS[channels]
    assert path.is_file(), f"{path} is missing: the project's first command needs it"
    assert path.stat().st_size < 15 * 2**20
    model = load_model(path)
    assert model.in_nc == channels and model.out_nc == channels
    keys = list(model.state_dict())
    assert {k.split(".")[0] for k in keys} == _official_prefixes()
    assert f"m_down1.{model.nb}.weight" in keys and f"m_up1.{model.nb}.res.2.weight" in keys


@pytest.mark.parametrize("channels", [1, 3])
def test_zoo_model_beats_jpeg_on_live1(channels: int, datasets: Path) -> None:
    model = load_model(ZOO_MODELS[channels])
    folder = datasets / "testsets" / ("LIVE1_gray" if channels == 1 else "LIVE1_color")
    gains, predicted = [], []
    for path in list_images(folder)[:3]:
        gt = imread_uint(path, channels)
        degraded = jpeg(gt, 10)
        restored, qf = restore(model, degraded)
        gains.append(score(gt, restored)["psnr"] - score(gt, degraded)["psnr"])
        predicted.append(qf)
    assert np.mean(gains) >= MIN_GAIN[channels], f"mean gain {np.mean(gains):.2f} dB, per image {gains}"
    assert all(q is not None and 0 < q < 100 for q in predicted)
    assert all(abs(q - 10) <= QF_TOLERANCE[channels] for q in predicted), predicted


@pytest.mark.parametrize("model", ["gray", "color"])
def test_zoo_model_card_sections_and_training_logs(model: str) -> None:
    """The card's generated section of each model states what its committed training logs say."""
    import benchmarks.model_card as card

    text = card.CARD.read_text()
    begin, end = card.markers(model)
    assert text.index(begin) < text.index(end)
    log = card.chained_log(model)
    assert log is not None and log.val and log.last_step >= max(log.val) >= 30000
    assert card.training_summary(model) in text[text.index(begin) : text.index(end)]
