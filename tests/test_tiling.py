"""Tiled inference with one global QF (the bundled models), and the fast forward options (tiny networks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data.degradations import jpeg
from models import ZOO_MODELS, load_model
from models.contract import qf_to_label
from tests.conftest import make_tiny_fbcnn
from utils import tiling
from utils.tiling import GRID, estimate_qf, forward, restore_tiled, tile_starts
from utils.utils_image import imread_uint, uint2tensor4


@pytest.fixture(scope="module")
def jpeg_crop(datasets) -> np.ndarray:
    """A 200 x 264 crop of LIVE1 'bikes' compressed at QF 20 (sides not multiples of the tile)."""
    img = imread_uint(datasets / "testsets" / "LIVE1_color" / "bikes.png", 3)[:200, :264]
    return jpeg(img, 20)


class SizeRecorder(torch.nn.Module):
    """Wraps a network and records the spatial size of every input it sees."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.sizes = model, []

    def forward(self, x: torch.Tensor, qf_input: torch.Tensor | None = None, *, predict_qf: bool = True):
        self.sizes.append(tuple(x.shape[-2:]))
        return self.model(x, qf_input, predict_qf=predict_qf)


@pytest.mark.parametrize("length", [1, 7, 64, 65, 200, 511, 1000, 1001])
@pytest.mark.parametrize(("tile", "overlap"), [(64, 16), (64, 56), (128, 32), (512, 32)])
def test_tile_starts_cover_on_the_grid(length: int, tile: int, overlap: int) -> None:
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0
    assert all(s % GRID == 0 for s in starts)
    assert starts[-1] + tile >= length  # the end is covered
    assert starts[-1] == max(0, -(-(length - tile) // GRID) * GRID)  # the last start: the first one reaching the end
    gaps = np.diff(starts)
    step = (tile - overlap) // GRID * GRID
    assert (gaps > 0).all() and (gaps <= step).all()  # no holes, overlap kept
    assert len(starts) == 1 or (len(starts) - 2) * step < starts[-1]  # the fewest tiles: one fewer cannot reach


def test_tile_starts_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        tile_starts(100, 60, 8)
    with pytest.raises(ValueError, match="overlap"):
        tile_starts(100, 64, 64)


def test_predict_qf_false_skips_predictor_and_keeps_results() -> None:
    model = make_tiny_fbcnn(3)
    x = torch.rand(2, 3, 40, 24)
    q = torch.tensor([[0.7]])
    with torch.no_grad():
        full, qf_pred = model(x, q)
        skipped, qf_echo = model(x, q, predict_qf=False)
        blind, qf_blind = model(x, predict_qf=False)  # no qf_input: the flag changes nothing
        default, qf_default = model(x)
    assert torch.equal(full, skipped)
    assert qf_echo.shape == (2, 1) and torch.all(qf_echo == 0.7)
    assert not torch.allclose(qf_pred, qf_echo)  # the predictor really ran in the default call
    assert torch.equal(blind, default) and torch.equal(qf_blind, qf_default)


@pytest.fixture(scope="module")
def zoo_color() -> torch.nn.Module:
    """The bundled colour model: a trained network with a real output range (tiny ones give near-black)."""
    return load_model(ZOO_MODELS[3])


@pytest.fixture(scope="module")
def zoo_gray() -> torch.nn.Module:
    return load_model(ZOO_MODELS[1])


@pytest.fixture
def float_output(monkeypatch) -> None:
    """Make ``restore_tiled`` return its float32 result in gray levels (not rounded, not clamped)."""
    monkeypatch.setattr(tiling, "tensor2uint", lambda t: t[0].permute(1, 2, 0).double().numpy() * 255)


def test_tiled_matches_untiled_with_one_qf(jpeg_crop: np.ndarray, zoo_color, float_output) -> None:
    qf = 25.0
    whole, _ = restore_tiled(zoo_color, jpeg_crop, qf, tile=None)
    tiled, used = restore_tiled(zoo_color, jpeg_crop, qf, tile=128, overlap=64)  # 2 x 3 tiles
    assert used == qf and tiled.shape == jpeg_crop.shape
    # The network really restores: output far from its input, with the full range of the photo.
    assert np.abs(whole - jpeg_crop).mean() > 2 and whole.std() > 30 and whole.max() - whole.min() > 200
    diff = np.abs(whole - tiled)
    # Measured: max 0.90, mean 0.043 gray levels (float32, before rounding); blending that keeps the tile
    # edge pixels (a linear ramp from the edge) gives mean 0.072, a plain average of the overlaps max 12.8.
    assert diff.max() < 1.2, f"max difference {diff.max():.3f} levels"
    assert diff.mean() < 0.06, f"mean difference {diff.mean():.4f} levels"


def test_blind_tiling_uses_one_global_qf(jpeg_crop: np.ndarray, zoo_color) -> None:
    recorder = SizeRecorder(zoo_color)
    blind, qf = restore_tiled(recorder, jpeg_crop, None, tile=128, overlap=32)
    assert qf == pytest.approx(estimate_qf(recorder, jpeg_crop, 128))
    assert abs(qf - 20) <= 3, qf  # the crop is QF 20; measured 18.3
    fixed, _ = restore_tiled(recorder, jpeg_crop, qf, tile=128, overlap=32)
    assert np.array_equal(blind, fixed)  # every tile was restored with that one QF
    assert max(max(size) for size in recorder.sizes) <= 128  # network memory bounded by the tile


def test_estimated_qf_tracks_whole_image_prediction(datasets, jpeg_crop: np.ndarray, zoo_color) -> None:
    with torch.no_grad():
        _, label = zoo_color(uint2tensor4(jpeg_crop))
    whole = 100 * (1 - label.item())
    assert estimate_qf(zoo_color, jpeg_crop, tile=512) == pytest.approx(whole, abs=1e-4)  # fits: predicted whole
    assert estimate_qf(zoo_color, jpeg_crop, tile=128) == pytest.approx(whole, abs=3)  # measured 18.3 vs 16.6
    img = imread_uint(datasets / "testsets" / "LIVE1_color" / "bikes.png", 3)[:200, :264]
    for true_qf in (10, 50):  # four 128 tiles: measured 8.9 and 50.0
        assert abs(estimate_qf(zoo_color, jpeg(img, true_qf), tile=128) - true_qf) <= 3, true_qf


def test_small_images_and_gray(jpeg_crop: np.ndarray, zoo_gray) -> None:
    tiny = np.ascontiguousarray(jpeg_crop[:5, :3, :1])
    out, qf = restore_tiled(zoo_gray, tiny, None, tile=64)
    with torch.no_grad():
        _, label = zoo_gray(uint2tensor4(tiny))
    assert out.shape == (5, 3, 1) and qf == pytest.approx(100 * (1 - label.item()), abs=1e-4)
    gray = np.ascontiguousarray(jpeg_crop[:, :, 1:2])
    whole, _ = restore_tiled(zoo_gray, gray, 40, tile=None)
    tiled, _ = restore_tiled(zoo_gray, gray, 40, tile=128, overlap=64)
    assert np.abs(whole.astype(int) - gray).mean() > 1  # not the identity
    assert np.abs(whole.astype(int) - tiled.astype(int)).max() <= 2


def test_fast_options_stay_within_rounding(jpeg_crop: np.ndarray) -> None:
    model = make_tiny_fbcnn(3)
    x = uint2tensor4(jpeg_crop[:64, :96])
    q = torch.tensor([[qf_to_label(30)]])
    ref, _ = forward(model, x, q)
    fast_model = make_tiny_fbcnn(3).to(memory_format=torch.channels_last)
    for half in (False, True):
        out, qf = forward(fast_model, x, q, half=half, channels_last=True)
        levels = (out - ref).abs().max().item() * 255
        assert levels <= (2.0 if half else 0.01), f"half={half}: {levels:.3f} levels"
        assert qf.shape == (1, 1) and qf.item() == pytest.approx(qf_to_label(30), abs=1e-2)


def test_fp16_autocast_of_the_bundled_model_stays_within_rounding(jpeg_crop: np.ndarray, monkeypatch) -> None:
    """``half`` runs float16 on CUDA GPUs without native bf16. The same autocast on the CPU (where ``half_dtype``
    is forced to float16) shows that trained FBCNN weights stay in float16's range: at most 2 levels off."""
    model = load_model(ZOO_MODELS[3], "cpu")
    x = uint2tensor4(jpeg_crop[:64, :64])
    ref, ref_qf = forward(model, x)
    used = []
    monkeypatch.setattr(tiling, "half_dtype", lambda device: used.append(torch.float16) or torch.float16)
    out, qf = forward(model, x, half=True)
    assert used == [torch.float16]
    levels = (out.clamp(0, 1) - ref.clamp(0, 1)).abs() * 255
    assert torch.isfinite(out).all() and levels.max().item() <= 2.0, f"{levels.max().item():.2f} levels"
    assert 0 < levels.mean().item() < 0.2  # it did run in float16 (not bit-identical), and close
    assert qf.item() == pytest.approx(ref_qf.item(), abs=5e-3)
