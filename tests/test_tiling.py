"""Tiled inference with one global QF, and the fast forward options (tiny networks, real image crops)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data.degradations import jpeg, qf_to_label
from tests.conftest import make_tiny_fbcnn
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


def test_tiled_matches_untiled_with_one_qf(jpeg_crop: np.ndarray) -> None:
    model = make_tiny_fbcnn(3)
    qf = 25.0
    whole, _ = restore_tiled(model, jpeg_crop, qf, tile=None)
    tiled, used = restore_tiled(model, jpeg_crop, qf, tile=64, overlap=32)
    diff = np.abs(whole.astype(int) - tiled.astype(int))
    assert used == qf
    assert tiled.shape == jpeg_crop.shape
    assert diff.max() <= 1, f"max difference {diff.max()} levels"
    assert diff.mean() < 0.05, f"mean difference {diff.mean():.4f} levels"


def test_blind_tiling_uses_one_global_qf(jpeg_crop: np.ndarray) -> None:
    recorder = SizeRecorder(make_tiny_fbcnn(3))
    blind, qf = restore_tiled(recorder, jpeg_crop, None, tile=64, overlap=16)
    assert qf == pytest.approx(estimate_qf(recorder, jpeg_crop, 64))
    fixed, _ = restore_tiled(recorder, jpeg_crop, qf, tile=64, overlap=16)
    assert np.array_equal(blind, fixed)  # every tile was restored with that one QF
    assert max(max(size) for size in recorder.sizes) <= 64  # network memory bounded by the tile


def test_estimated_qf_tracks_whole_image_prediction(jpeg_crop: np.ndarray) -> None:
    model = make_tiny_fbcnn(3)
    with torch.no_grad():
        _, label = model(uint2tensor4(jpeg_crop))
    whole = 100 * (1 - label.item())
    assert estimate_qf(model, jpeg_crop, tile=512) == pytest.approx(whole, abs=1e-4)  # fits: predicted whole
    assert estimate_qf(model, jpeg_crop, tile=128) == pytest.approx(whole, abs=5)


def test_small_images_and_gray(jpeg_crop: np.ndarray) -> None:
    model = make_tiny_fbcnn(1)
    tiny = jpeg_crop[:5, :3, :1]
    out, qf = restore_tiled(model, tiny, None, tile=64)
    assert out.shape == (5, 3, 1) and 0 <= qf <= 100
    gray = np.ascontiguousarray(jpeg_crop[:, :, 1:2])
    whole, _ = restore_tiled(model, gray, 40, tile=None)
    tiled, _ = restore_tiled(model, gray, 40, tile=64, overlap=32)
    assert np.abs(whole.astype(int) - tiled.astype(int)).max() <= 1


def test_fast_options_stay_within_rounding(jpeg_crop: np.ndarray) -> None:
    model = make_tiny_fbcnn(3)
    x = uint2tensor4(jpeg_crop[:64, :96])
    q = torch.tensor([[qf_to_label(30)]])
    ref, _ = forward(model, x, q)
    fast_model = make_tiny_fbcnn(3).to(memory_format=torch.channels_last)
    for bf16 in (False, True):
        out, qf = forward(fast_model, x, q, bf16=bf16, channels_last=True)
        levels = (out - ref).abs().max().item() * 255
        assert levels <= (2.0 if bf16 else 0.01), f"bf16={bf16}: {levels:.3f} levels"
        assert qf.shape == (1, 1) and qf.item() == pytest.approx(qf_to_label(30), abs=1e-2)
