"""The one place for JPEG degradations: single and non-aligned double JPEG.

(The network's QF convention, ``qf_to_label`` / ``label_to_qf``, is part of the network contract:
``models.contract``.)

All functions take and return uint8 ``H x W x C`` arrays (C = 3 RGB order, or C = 1 gray).
JPEG is OpenCV's (libjpeg, 4:2:0 chroma subsampling for colour), which reproduces the
JPEG columns of the paper's tables exactly.
"""

from __future__ import annotations

import cv2
import numpy as np

QF_RANGE = (1, 100)


def jpeg_encode(img: np.ndarray, qf: int) -> bytes:
    """The JPEG file (OpenCV, quality ``qf`` in 1..100, 4:2:0 chroma) of a uint8 RGB or gray image."""
    qf = int(qf)
    if not QF_RANGE[0] <= qf <= QF_RANGE[1]:
        raise ValueError(f"JPEG quality factor must be in [1, 100], got {qf}")
    gray = img.ndim == 2 or img.shape[2] == 1
    src = (img if img.ndim == 2 else img[:, :, 0]) if gray else cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", src, [int(cv2.IMWRITE_JPEG_QUALITY), qf])
    if not ok:
        raise RuntimeError("OpenCV failed to encode JPEG")
    return buf.tobytes()


def jpeg(img: np.ndarray, qf: int) -> np.ndarray:
    """Compress and decode with OpenCV at quality ``qf`` (1..100); shape and channel order kept."""
    buf = np.frombuffer(jpeg_encode(img, qf), dtype=np.uint8)
    if img.ndim == 3 and img.shape[2] == 3:
        return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    out = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return out if img.ndim == 2 else out[:, :, None]


def shift_crop(img: np.ndarray, shift: tuple[int, int]) -> np.ndarray:
    """Remove the first ``shift[0]`` rows and ``shift[1]`` columns (top-left), as the paper's non-aligned protocol."""
    dy, dx = shift
    return img[dy:, dx:]


def double_jpeg(img: np.ndarray, qf1: int, qf2: int, shift: tuple[int, int] = (4, 4)) -> tuple[np.ndarray, np.ndarray]:
    """Non-aligned double JPEG: ``JPEG(shift(JPEG(img, qf1)), qf2)``.

    Returns ``(degraded, ground_truth)``, where the ground truth is ``img`` cropped by the same
    shift so the pair stays aligned. ``shift=(0, 0)`` gives aligned double JPEG.
    """
    once = jpeg(img, qf1)
    return jpeg(shift_crop(once, shift), qf2), shift_crop(img, shift)
