"""DatasetJPEG: degradations recomputed from recorded parameters, labels, QF distribution, seeding, errors."""

from __future__ import annotations

import math
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from data.dataset_jpeg import DatasetError, DatasetJPEG, augment, draw_qf, worker_init_fn
from data.degradations import jpeg, shift_crop
from tests.conftest import ROOT
from utils.utils_image import imread_uint, imsave, rgb2ycbcr, tensor2uint
from utils.utils_option import OptionError

H_SIZE = 64


@pytest.fixture
def train_dir(datasets: Path, tmp_path: Path) -> Path:
    """Three real training images (BSDS500 train/val JPEGs, 321x481) in a temporary folder."""
    folder = tmp_path / "train"
    folder.mkdir()
    for src in sorted((datasets / "trainsets" / "BSDS500_trainval").glob("*.jpg"))[:3]:
        shutil.copy(src, folder / src.name)
    return folder


def to_uint(t: torch.Tensor) -> np.ndarray:
    """[C, H, W] sample tensor -> uint8 H x W x C (batched first: tensor2uint squeezes a lone gray channel)."""
    return tensor2uint(t[None])


def make(folder: Path, **opt) -> DatasetJPEG:
    return DatasetJPEG({"dataroot_H": str(folder), "H_size": H_SIZE, "samples_per_epoch": 12, **opt})


def source_crop(sample: dict, size: int, n_channels: int = 3) -> np.ndarray:
    """The clean patch recomputed from the file and the sample's recorded crop and augmentation."""
    img = imread_uint(sample["path"], n_channels)
    top, left = (int(v) for v in sample["crop"])
    return augment(img[top : top + size, left : left + size], int(sample["aug"]))


def test_augment_is_the_eight_flips_and_rotations() -> None:
    img = np.arange(2 * 3 * 1, dtype=np.uint8).reshape(2, 3, 1)
    outs = [augment(img, m) for m in range(8)]
    assert np.array_equal(outs[0], img)
    expected = [np.rot90(img, k) for k in range(4)] + [np.flipud(np.rot90(img, k)) for k in range(4)]
    assert {o.tobytes() + bytes(o.shape) for o in outs} == {e.tobytes() + bytes(e.shape) for e in expected}
    assert all(o.flags["C_CONTIGUOUS"] for o in outs)


def test_double_jpeg_pair_recomputed_from_recorded_parameters(train_dir: Path) -> None:
    ds = make(train_dir, double_jpeg_prob=1.0)
    shifts = set()
    for i in range(6):
        s = ds[i]
        q1, q2 = int(s["qf1"]), int(s["qf2"])
        dy, dx = (int(v) for v in s["shift"])
        shifts.add((dy, dx))
        ry, rx = (int(v) for v in s["recrop"])
        assert 0 <= dy < 8 and 0 <= dx < 8 and q2 != -1
        src = source_crop(s, H_SIZE + 8 + 8)  # margins: the shift and the grid-phase re-crop
        expected_l = jpeg(shift_crop(jpeg(src, q1), (dy, dx)), q2)[ry : ry + H_SIZE, rx : rx + H_SIZE]
        expected_h = src[dy + ry : dy + ry + H_SIZE, dx + rx : dx + rx + H_SIZE]
        assert s["L"].dtype == torch.float32 and s["L"].shape == (3, H_SIZE, H_SIZE)
        assert np.array_equal(to_uint(s["H"]), expected_h)
        assert np.array_equal(to_uint(s["L"]), expected_l)
        assert not np.array_equal(expected_l, expected_h)
        assert math.isnan(float(s["qf_label"]))
    assert len(shifts) > 1


def test_labels_nan_exactly_for_double_and_single_pairs(train_dir: Path) -> None:
    ds = make(train_dir, double_jpeg_prob=0.5, samples_per_epoch=40)
    kinds = Counter()
    for i in range(len(ds)):
        s = ds[i]
        double = int(s["qf2"]) != -1
        kinds[double] += 1
        assert s["qf_label"].shape == (1,) and s["qf_label"].dtype == torch.float32
        assert math.isnan(float(s["qf_label"])) == double
        if not double:
            q = int(s["qf1"])
            assert float(s["qf_label"]) == pytest.approx((100 - q) / 100, abs=1e-6)
            assert s["shift"].tolist() == [0, 0]
            ry, rx = (int(v) for v in s["recrop"])
            src = source_crop(s, H_SIZE + 8)
            assert np.array_equal(to_uint(s["H"]), src[ry : ry + H_SIZE, rx : rx + H_SIZE])
            assert np.array_equal(to_uint(s["L"]), jpeg(src, q)[ry : ry + H_SIZE, rx : rx + H_SIZE])
    assert kinds[True] >= 5 and kinds[False] >= 5


def chi2_critical(df: int, z: float = 3.29) -> float:
    """Upper chi-square quantile (Wilson-Hilferty); z = 3.29 is a 1-in-2000 false alarm."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def test_qf_histogram_matches_the_configured_distribution(train_dir: Path) -> None:
    choices, p_choice, lo, hi = [10, 50], 0.7, 20, 29
    expected = {q: p_choice / len(choices) for q in choices}
    expected.update({q: (1 - p_choice) / (hi - lo + 1) for q in range(lo, hi + 1)})
    # Through the dataset (both QFs of double samples follow the same distribution) ...
    ds = make(
        train_dir,
        qf_choices=choices,
        qf_choice_prob=p_choice,
        qf_uniform_range=[lo, hi],
        double_jpeg_prob=0.5,
        samples_per_epoch=3000,
    )
    draws = [ds.draw(i) for i in range(len(ds))]
    qfs = [d["qf1"] for d in draws] + [d["qf2"] for d in draws if d["double"]]
    # ... and straight from the sampler.
    rng = np.random.default_rng(1)
    for sample in (qfs, [draw_qf(rng, choices, p_choice, [lo, hi]) for _ in range(20000)]):
        counts = Counter(sample)
        assert set(counts) <= set(expected)
        n = len(sample)
        chi2 = sum((counts[q] - n * p) ** 2 / (n * p) for q, p in expected.items())
        assert chi2 < chi2_critical(len(expected) - 1), (chi2, counts)
    double_rate = np.mean([d["double"] for d in draws])
    assert abs(double_rate - 0.5) < 4 * math.sqrt(0.25 / len(draws))


def chi2_fits(sample: list, expected: dict) -> bool:
    """Whether ``sample`` fits the probabilities ``expected`` (value -> probability) at a 1-in-2000 false alarm."""
    counts = Counter(sample)
    if not set(counts) <= set(expected):
        return False
    n = len(sample)
    chi2 = sum((counts[v] - n * p) ** 2 / (n * p) for v, p in expected.items())
    return chi2 < chi2_critical(len(expected) - 1)


def test_grid_phase_of_pairs_is_spread_as_configured(train_dir: Path) -> None:
    # Re-crop offsets: (0, 0) without re-crop, else each coordinate uniform on 0..max_offset.
    for prob, max_offset in ((0.5, 8), (0.8, 5)):
        ds = make(train_dir, grid_recrop_prob=prob, grid_recrop_max_offset=max_offset, samples_per_epoch=4000)
        draws = [ds.draw(i) for i in range(len(ds))]
        side = max_offset + 1
        expected = {(i, j): prob / side**2 for i in range(side) for j in range(side)}
        expected[(0, 0)] += 1 - prob
        assert chi2_fits([d["recrop"] for d in draws], expected)
        # The grid phase is the re-crop offset folded onto the 8x8 grid.
        phases = Counter(d["grid_phase"] for d in draws)
        assert all(d["grid_phase"] == (-d["recrop"][0] % 8, -d["recrop"][1] % 8) for d in draws)
        assert len(phases) == min(side, 8) ** 2
    ds = make(train_dir, grid_recrop_prob=0, samples_per_epoch=200)
    assert {ds.draw(i)["recrop"] for i in range(len(ds))} == {(0, 0)}
    assert ds.min_size == H_SIZE


def test_grid_phase_is_where_the_jpeg_grid_is(train_dir: Path) -> None:
    """Independent of the bookkeeping: the 8x8 grid found in the pixels is the recorded phase (gray, where JPEG
    has one 8x8 grid; colour 4:2:0 chroma adds a 16x16 one that blurs this simple search)."""
    ds = make(train_dir, n_channels=1, grid_recrop_prob=1.0, qf_choices=[10], qf_choice_prob=1.0, samples_per_epoch=40)
    checked = 0
    for i in range(len(ds)):
        s = ds[i]
        low = to_uint(s["L"])
        # A JPEG is nearly a fixed point of JPEG at its own QF on its own grid only.
        errors = {
            (a, b): np.mean((shift_crop(low, (a, b)).astype(float) - jpeg(shift_crop(low, (a, b)), 10)) ** 2)
            for a in range(8)
            for b in range(8)
        }
        assert min(errors, key=errors.get) == tuple(s["grid_phase"].tolist())
        checked += tuple(s["grid_phase"].tolist()) != (0, 0)
    assert checked >= 20


def test_fbcnn_a_gray_option_file_follows_the_official_double_loader(datasets: Path) -> None:
    """QF distributions of options/train_fbcnn_gray_double.json against the official dataset_jpeggraydouble.py:
    first QF 25 % uniform on 5..95, else one of 10..70; second QF 50/50 of the same two; half the samples double,
    a quarter of the gray conversions OpenCV's, the grid-phase re-crop on half the samples."""
    from main_train_fbcnn import load_train_options

    kodak = datasets / "trainsets" / "Kodak5"
    opt = load_train_options(
        str(ROOT / "options" / "train_fbcnn_gray_double.json"), [f"datasets.train.dataroot_H={kodak}"]
    )
    ds = DatasetJPEG({**opt["datasets"]["train"], "samples_per_epoch": 6000})
    draws = [ds.draw(i) for i in range(len(ds))]

    def official(p_uniform: float) -> dict[int, float]:
        probs = {q: p_uniform / 91 for q in range(5, 96)}
        for q in range(10, 71, 10):
            probs[q] += (1 - p_uniform) / 7
        return probs

    assert chi2_fits([d["qf1"] for d in draws], official(0.25))
    assert chi2_fits([d["qf2"] for d in draws if d["double"]], official(0.5))
    n = len(draws)
    for key, p in (("double", 0.5), ("gray_cv2", 0.25)):
        assert abs(np.mean([d[key] for d in draws]) - p) < 4 * math.sqrt(p * (1 - p) / n), key
    recropped = np.mean([d["recrop"] != (0, 0) for d in draws])
    assert abs(recropped - 0.5 * (1 - 1 / 81)) < 4 * math.sqrt(0.25 / n)
    assert ds.opt["grid_recrop_max_offset"] == 8 and ds.min_size == ds.H_size + 16


def assert_same(a: dict, b: dict) -> None:
    assert a["path"] == b["path"]
    for key in ("L", "H", "qf1", "qf2", "shift", "crop", "aug", "recrop", "grid_phase"):
        assert torch.equal(a[key], b[key]), key


def test_same_seed_epoch_index_gives_the_same_sample(train_dir: Path) -> None:
    ds = make(train_dir, double_jpeg_prob=0.5)
    first = [ds[i] for i in (7, 3, 7)]
    assert_same(first[0], first[2])
    again = make(train_dir, double_jpeg_prob=0.5, cache="none")  # fresh instance, other cache mode
    assert_same(again[3], first[1])
    ds.set_epoch(1)
    other = ds[3]
    assert not torch.equal(other["L"], first[1]["L"])
    ds.set_epoch(0)
    assert_same(ds[3], first[1])
    reseeded = make(train_dir, double_jpeg_prob=0.5, seed=5)
    assert not torch.equal(reseeded[3]["L"], first[1]["L"])


def test_samples_do_not_depend_on_dataloader_workers(train_dir: Path) -> None:
    ds = make(train_dir, double_jpeg_prob=0.5, samples_per_epoch=8)
    ds.set_epoch(2)
    batches = []
    for workers in (0, 2):
        loader = DataLoader(ds, batch_size=4, shuffle=False, num_workers=workers, worker_init_fn=worker_init_fn)
        batches.append(list(loader))
    for b0, b2 in zip(batches[0], batches[1], strict=True):
        assert torch.equal(b0["L"], b2["L"]) and torch.equal(b0["H"], b2["H"])
        assert torch.equal(b0["qf_label"].isnan(), b2["qf_label"].isnan())


def test_every_image_used_equally(train_dir: Path) -> None:
    ds = make(train_dir, samples_per_epoch=0)
    assert len(ds) == 3
    ds = make(train_dir, samples_per_epoch=4)
    used = Counter()
    for epoch in range(3):
        ds.set_epoch(epoch)
        used.update(ds.draw(i)["image"] for i in range(len(ds)))
    assert sorted(used.values()) == [4, 4, 4]


def test_gray_is_the_y_channel_or_opencv_gray(train_dir: Path, tmp_path: Path) -> None:
    s = make(train_dir, n_channels=1, grid_recrop_prob=0)[0]
    assert s["H"].shape == (1, H_SIZE, H_SIZE)
    rgb_crop = source_crop(s, H_SIZE, n_channels=3)
    assert np.array_equal(to_uint(s["H"])[:, :, 0], rgb2ycbcr(rgb_crop, only_y=True))

    s = make(train_dir, n_channels=1, gray_cv2_prob=1.0, grid_recrop_prob=0)[0]
    assert int(s["gray_cv2"]) == 1
    rgb_crop = source_crop(s, H_SIZE, n_channels=3)
    assert np.array_equal(to_uint(s["H"])[:, :, 0], cv2.cvtColor(rgb_crop, cv2.COLOR_RGB2GRAY))

    gray_dir = tmp_path / "gray"  # a gray file is used as it is, whichever conversion is drawn
    src = imread_uint(next(train_dir.iterdir()), 3)
    gray = cv2.cvtColor(src, cv2.COLOR_RGB2GRAY)[:, :, None]
    imsave(gray, gray_dir / "g.png")
    for prob in (0.0, 1.0):
        s = make(gray_dir, n_channels=1, gray_cv2_prob=prob, grid_recrop_prob=0)[0]
        top, left = (int(v) for v in s["crop"])
        expected = augment(gray[top : top + H_SIZE, left : left + H_SIZE], int(s["aug"]))
        assert np.array_equal(to_uint(s["H"]), expected)


def test_bad_and_small_images_reported_by_name(train_dir: Path) -> None:
    good = sorted(train_dir.iterdir())
    data = good[0].read_bytes()
    (train_dir / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (train_dir / "notes.png").write_text("not an image")
    imsave(np.zeros((40, 40, 3), np.uint8), train_dir / "tiny.png")
    with pytest.raises(DatasetError) as err:
        make(train_dir)
    message = str(err.value)
    for name in ("truncated.jpg", "notes.png", "tiny.png"):
        assert name in message
    assert not any(p.name in message for p in good)
    with pytest.warns(UserWarning, match="truncated.jpg"):
        ds = make(train_dir, skip_bad_images=True)
    assert ds.paths == good


def test_option_errors_name_the_key(train_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(OptionError, match=r"datasets\.train\.dataroot_H.*nowhere"):
        make(missing)
    with pytest.raises(OptionError, match=r"datasets\.train\.dataroot_H"):
        DatasetJPEG({"H_size": 64})
    with pytest.raises(OptionError, match=r"datasets\.train\.H_size"):
        make(train_dir, H_size=60)
    with pytest.raises(OptionError, match=r"datasets\.train\.gray_cv2_prob"):
        make(train_dir, gray_cv2_prob=0.25)
    with pytest.raises(OptionError, match=r"datasets\.train\.cache"):
        make(train_dir, cache="disk")
    with pytest.raises(OptionError, match=r"datasets\.train\.qf_uniform_range"):
        make(train_dir, qf_uniform_range=[50, 20])
    with pytest.raises(OptionError, match=r"datasets\.train\.grid_recrop_prob"):
        make(train_dir, grid_recrop_prob=1.5)
    with pytest.raises(OptionError, match=r"datasets\.train\.grid_recrop_max_offset"):
        make(train_dir, grid_recrop_max_offset=-1)
    with pytest.raises(OptionError, match=r"datasets\.train\.qf2_choice_prob"):
        make(train_dir, qf2_choice_prob=2)
    with pytest.raises(OptionError, match="did you mean"):
        make(train_dir, H_sise=64)


def test_prepare_subimages_tiles_cover_the_image(train_dir: Path, tmp_path: Path) -> None:
    from data.prepare_subimages import main, tile_starts

    assert tile_starts(481, 200, 100) == [0, 100, 200, 281]
    assert tile_starts(150, 200, 100) == [0]
    imsave(cv2.cvtColor(imread_uint(next(train_dir.iterdir()), 3), cv2.COLOR_RGB2GRAY), train_dir / "gray.png")
    (train_dir / "broken.png").write_text("not an image")
    out = tmp_path / "sub"
    assert main(["--input", str(train_dir), "--output", str(out), "--size", "200", "--step", "150"]) == 1  # broken
    for src in sorted(train_dir.glob("*.jpg")) + [train_dir / "gray.png"]:
        img = imread_uint(src, 3) if src.suffix == ".jpg" else imread_uint(src, 1)
        rebuilt, covered = np.zeros_like(img), np.zeros(img.shape[:2], bool)
        tiles = sorted(out.glob(f"{src.stem}_s*.png"))
        assert len(tiles) > 1
        for tile in tiles:
            top, left = (int(v) for v in tile.stem.split("_s")[-1].split("_"))
            t = imread_uint(tile, img.shape[2])
            assert cv2.imread(str(tile), cv2.IMREAD_UNCHANGED).ndim == (3 if img.shape[2] == 3 else 2)
            rebuilt[top : top + t.shape[0], left : left + t.shape[1]] = t
            covered[top : top + t.shape[0], left : left + t.shape[1]] = True
        assert covered.all() and np.array_equal(rebuilt, img)
