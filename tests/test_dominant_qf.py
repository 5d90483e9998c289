"""FBCNN-D dominant-QF estimation (utils/dominant_qf.py) on real LIVE1 images."""

from __future__ import annotations

import numpy as np
import pytest

from data.degradations import double_jpeg, jpeg
from utils.dominant_qf import _dips, estimate_dominant_qf, luma, main
from utils.utils_image import imread_uint, imsave

GRAY = ["bikes", "caps", "house"]


def live1(datasets, name: str, channels: int = 1, size: int = 280) -> np.ndarray:
    """A centre crop of a LIVE1 image (gray = the paper's Y protocol); small crops keep the tests fast."""
    folder = "LIVE1_gray" if channels == 1 else "LIVE1_color"
    img = imread_uint(datasets / "testsets" / folder / f"{name}.png", channels)
    y0, x0 = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
    return np.ascontiguousarray(img[y0 : y0 + size, x0 : x0 + size])


@pytest.mark.parametrize("qf", [20, 50, 80])
def test_single_jpeg_within_one(datasets, qf: int) -> None:
    for name in GRAY:
        est = estimate_dominant_qf(jpeg(live1(datasets, name), qf))
        assert est.accepted and abs(est.qf - qf) <= 1, (name, qf, est)
        assert est.shift == (0, 0) and abs(est.qf_last - qf) <= 1


def ijg_quality(path) -> int | None:
    """The IJG quality whose scaled standard luminance table is the file's own, or None (another encoder)."""
    from PIL import Image

    std = np.array(
        [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29]
        + [51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92, 49, 64, 78, 87, 103, 121]
        + [120, 101, 72, 92, 95, 98, 112, 100, 103, 99]
    )
    with Image.open(path) as im:
        table = np.sort(np.array(im.quantization[0]))
    for qf in range(1, 101):
        scale = 5000 // qf if qf < 50 else 200 - 2 * qf
        if np.array_equal(np.sort(np.clip((std * scale + 50) // 100, 1, 255)), table):
            return qf
    return None


def test_real_jpeg_files_match_their_quantization_tables(datasets) -> None:
    """Real-world JPEGs (testsets/Real) whose header holds a standard IJG table of quality q: the dominant QF is
    never above q (an earlier compression on the same grid may be lower) and equals q for most files."""
    qualities, estimates = [], []
    for path in sorted((datasets / "testsets" / "Real").glob("*.jpg")):
        if (quality := ijg_quality(path)) is not None:
            qualities.append(quality)
            estimates.append(estimate_dominant_qf(imread_uint(path, 3)))
    assert len(qualities) >= 3
    assert all(e.accepted and e.qf <= q + 1 for q, e in zip(qualities, estimates, strict=True)), estimates
    matches = sum(abs(e.qf - q) <= 1 for q, e in zip(qualities, estimates, strict=True))
    assert matches > len(qualities) / 2, list(zip(qualities, estimates, strict=True))


def test_smooth_image_ignores_the_echo_below_its_qf(datasets) -> None:
    """On smooth images a QF 10 JPEG also dips at QF 8 (its table is 5/4 of QF 10's); the real dip is deeper."""
    img = imread_uint(datasets / "trainsets" / "Kodak5" / "kodim02.png", 1)[128:416, 240:528]
    for qf in (10, 20):
        est = estimate_dominant_qf(jpeg(img, qf))
        assert est.accepted and abs(est.qf - qf) <= 1 and abs(est.qf_last - qf) <= 1, (qf, est)


def test_colour_jpeg_uses_luma(datasets) -> None:
    rgb = jpeg(live1(datasets, "parrots", channels=3), 40)
    est = estimate_dominant_qf(rgb)
    assert est.accepted and abs(est.qf - 40) <= 1, est
    assert luma(rgb).shape == (*rgb.shape[:2], 1)
    gray = jpeg(live1(datasets, "parrots"), 40)
    assert np.array_equal(luma(np.repeat(gray, 3, axis=2)), gray)  # gray stored as RGB stays as it is


@pytest.mark.parametrize("name", ["bikes", "house"])
def test_nonaligned_double_jpeg_finds_the_first_qf(datasets, name: str) -> None:
    img = live1(datasets, name)
    for qf1, qf2 in [(10, 30), (30, 50)]:
        degraded, _ = double_jpeg(img, qf1, qf2, shift=(4, 4))
        est = estimate_dominant_qf(degraded, threshold=float("inf"))
        assert est.qf_found is not None and abs(est.qf_found - qf1) <= 5, (name, qf1, qf2, est)
        assert est.shift == (4, 4) and est.accepted and est.qf == est.qf_found
        assert est.qf_last is not None and abs(est.qf_last - qf2) <= 1


@pytest.mark.parametrize(("name", "qf1", "qf2"), [("caps", 50, 10), ("house", 50, 10), ("bikes", 90, 30)])
def test_dominant_is_the_last_qf_when_it_is_lower(datasets, name: str, qf1: int, qf2: int) -> None:
    """A milder first compression is erased by the stronger last one: its QF is dominant, on the last grid.

    The dip there is exact (MSE 0 on the crops measured), so the estimate must be accepted.
    """
    degraded, _ = double_jpeg(live1(datasets, name), qf1, qf2, shift=(4, 4))
    est = estimate_dominant_qf(degraded)
    assert est.accepted and est.qf is not None, est
    assert abs(est.qf - qf2) <= 1 and est.shift == (0, 0) and abs(est.qf_last - qf2) <= 1, est
    assert est.mse < 30  # the paper's threshold T


def test_threshold_decides_acceptance(datasets) -> None:
    degraded, _ = double_jpeg(live1(datasets, "house"), 10, 30)
    est = estimate_dominant_qf(degraded, threshold=float("inf"))
    assert est.accepted and 0 < est.mse < float("inf")
    low = estimate_dominant_qf(degraded, threshold=est.mse / 2)
    assert not low.accepted and low.qf is None and low.qf_found == est.qf_found and low.mse == est.mse
    high = estimate_dominant_qf(degraded, threshold=est.mse * 2)
    assert high.accepted and high.qf == est.qf_found


def test_no_estimate_without_jpeg_history(datasets) -> None:
    """A never-compressed photo and uniform noise have no dip at any shift: rejected whatever the threshold."""
    noise = np.random.default_rng(0).integers(0, 256, size=(200, 200, 1), dtype=np.uint8)
    for img in (live1(datasets, "bikes"), noise):
        est = estimate_dominant_qf(img, threshold=float("inf"))
        assert est.qf is None and not est.accepted and est.qf_found is None and est.mse == float("inf"), est


def test_fast_search_matches_exhaustive_search(datasets) -> None:
    img = jpeg(live1(datasets, "caps", size=96), 60)
    fast = estimate_dominant_qf(img, crop=None)
    full = estimate_dominant_qf(img, exhaustive=True)
    assert (fast.qf, fast.shift) == (full.qf, full.shift) and abs(fast.qf - 60) <= 1


def test_dips_skip_shallow_wiggles_and_centre_plateaus() -> None:
    curve = np.array([9.0, 8.0, 7.0, 6.9, 7.0, 5.0, 4.0, 1.0, 1.0, 1.0, 3.0, 4.0, 5.0, 4.0])
    assert _dips(curve, depth=0.1, width=3) == [8]  # the 1.4 % wiggle at index 3 does not count


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="too small"):
        estimate_dominant_qf(np.zeros((12, 40), np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        estimate_dominant_qf(np.zeros((64, 64), np.float32))


def test_cli_reports_each_file_and_bad_files(datasets, tmp_path, capsys) -> None:
    img = live1(datasets, "house")
    imsave(jpeg(img, 35), tmp_path / "decoded.png")
    imsave(img, tmp_path / "photo.jpg")  # a real JPEG file (OpenCV's default quality, 95)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    files = [tmp_path / "decoded.png", tmp_path / "broken.png", tmp_path / "photo.jpg"]
    assert main([str(f) for f in files]) == 1
    out, err = capsys.readouterr()
    assert any(f"{tmp_path / 'decoded.png'}: QF {q} " in out for q in (34, 35, 36)), out
    assert any(f"{tmp_path / 'photo.jpg'}: QF {q} " in out for q in (94, 95, 96)), out
    assert "broken.png" in err and "broken.png" not in out
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0 and "--threshold" in capsys.readouterr().out


def test_default_rule_on_images_not_used_for_calibration(datasets) -> None:
    """The calibrated relative rule on the ODD-numbered training files (calibration used the even ones) and on
    graphics from other seeds: QF1 < QF2 doubles accepted with QF1 within 5, singles within 1, never-compressed
    photos (Kodak scans, 2x-downscaled crops) and PNG-native graphics rejected."""
    import cv2

    from benchmarks.dominant_calibration import double_jpeg, graphic, training_images

    images = training_images(2, parity=1)  # 2 per training set, odd positions
    doubles = [
        estimate_dominant_qf(double_jpeg(img, q1, q2)) for _, img, _ in images for q1, q2 in ((10, 30), (30, 50))
    ]
    hits = [e.accepted and abs(e.qf - q1) <= 5 for e, q1 in zip(doubles, [10, 30] * len(images), strict=True)]
    assert sum(hits) >= 0.9 * len(hits), doubles
    for (_, img, _), qf in zip(images, (20, 40, 60, 80, 20, 40, 60, 80), strict=False):
        est = estimate_dominant_qf(jpeg(img, qf))
        assert est.accepted and abs(est.qf - qf) <= 1, (qf, est)
    clean = [img for name, img, _ in images if name.startswith("Kodak5")]
    clean += [
        cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
        for _, img, lossless in images
        if lossless
    ]
    clean += [graphic(seed) for seed in range(5000, 5012)]
    rejected = [estimate_dominant_qf(img) for img in clean]
    assert not any(e.accepted for e in rejected), rejected


def held_out_crop(datasets, name: str) -> np.ndarray:
    """The calibration benchmark's centre crop of a training file at an odd (held-out) position."""
    from benchmarks.dominant_calibration import crop

    return crop(imread_uint(datasets / "trainsets" / name, 3))


@pytest.mark.parametrize("qf", [10, 50])
def test_shallow_basin_on_a_facade_does_not_override_the_dip(datasets, qf: int) -> None:
    """A regular façade (held-out Urban100 file) shows a shallow basin (ratio ~0.9 to its mirror) at another
    shift below the true dip; a basin must be as clear as the acceptance rule asks before it counts."""
    est = estimate_dominant_qf(jpeg(held_out_crop(datasets, "Urban100_half/img_011.png"), qf))
    assert est.accepted and abs(est.qf - qf) <= 1 and est.shift == (0, 0), est


@pytest.mark.parametrize("qf", [30, 50])
def test_saturated_colour_jpeg_file_is_read_as_its_own_luma(datasets, tmp_path, qf: int, capsys) -> None:
    """Saturated colours clip when a JPEG is decoded to RGB, so the luma of the RGB pixels is off the JPEG's
    lattice and its dip moves (QF 30 is found at 32 here); the file's own Y plane (``read_jpeg_luma``) is exact."""
    import cv2

    from utils.utils_image import read_jpeg_luma

    img = held_out_crop(datasets, "IRCNN_Val20/006.png")
    path = tmp_path / f"saturated_q{qf}.jpg"
    assert cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, qf])
    rgb = imread_uint(path, 3)
    y = read_jpeg_luma(path)
    assert y.shape == (*rgb.shape[:2], 1) and y.dtype == np.uint8
    inside = ((rgb > 0) & (rgb < 255)).all(axis=2)  # unclipped pixels: the RGB luma is the JPEG's, +-1
    assert inside.mean() < 0.8 and np.mean(np.abs(luma(rgb)[inside].astype(int) - y[inside]) <= 1) > 0.99
    assert np.mean(luma(rgb) != y) > 0.2  # the clipped ones are not
    est = estimate_dominant_qf(y)
    assert est.accepted and est.qf == qf and est.shift == (0, 0), est
    assert main([str(path)]) == 0 and f"QF {qf} " in capsys.readouterr().out  # the CLI reads the Y plane
    from main_restore_fbcnn import read_image

    assert np.array_equal(read_image(path).analysis_pixels(), y)  # so do the restore CLI and the demo


def test_read_jpeg_luma_formats_and_orientation(datasets, tmp_path) -> None:
    from PIL import Image

    from utils.utils_image import read_jpeg_luma

    img = live1(datasets, "bikes", 3, size=96)[:64]
    imsave(img, tmp_path / "a.png")
    assert read_jpeg_luma(tmp_path / "a.png") is None and read_jpeg_luma(tmp_path / "missing.jpg") is None
    gray = live1(datasets, "bikes", 1, size=96)[:64]
    Image.fromarray(gray[:, :, 0]).save(tmp_path / "g.jpg", quality=40)
    assert np.array_equal(read_jpeg_luma(tmp_path / "g.jpg"), imread_uint(tmp_path / "g.jpg", 1))
    exif = Image.Exif()
    exif[274] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(img).save(tmp_path / "r.jpg", quality=40, exif=exif)
    stored, upright = read_jpeg_luma(tmp_path / "r.jpg"), read_jpeg_luma(tmp_path / "r.jpg", upright=True)
    assert stored.shape == (64, 96, 1) and np.array_equal(upright[:, :, 0], np.rot90(stored[:, :, 0], -1))
