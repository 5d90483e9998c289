"""Shared fixtures: the real data beside the project, and tiny networks for fast tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models import FBCNN  # noqa: E402

# The restore CLI's --backend auto would pick onnxruntime on CPUs without native bf16; the tests compare its outputs
# with torch's, so they pin torch (tests/test_backends.py tests auto and onnxruntime themselves).
os.environ.setdefault("FBCNN_BACKEND", "torch")

SHARED = ROOT.parent / "shared"
DATASETS = SHARED / "datasets"
TINY_FBCNN = {"nc": [8, 16, 32, 64], "nb": 1, "qf_dim": 32}


@pytest.fixture(scope="session")
def datasets() -> Path:
    """``../shared/datasets``. Missing data skips locally but fails in CI, where it must run."""
    if not DATASETS.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{DATASETS} is missing: CI must run the real-image tests")
        pytest.skip(f"{DATASETS} not found")
    return DATASETS


@pytest.fixture(scope="session")
def paper_dir() -> Path:
    path = SHARED / "paper"
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing")
        pytest.skip(f"{path} not found")
    return path


def make_tiny_fbcnn(in_nc: int = 3, seed: int = 0) -> FBCNN:
    """A randomly initialised FBCNN small enough for unit tests (about 0.3M parameters)."""
    torch.manual_seed(seed)
    return FBCNN(in_nc=in_nc, out_nc=in_nc, **TINY_FBCNN).eval()


@pytest.fixture
def tiny_fbcnn_path(tmp_path: Path) -> Path:
    """A tiny colour FBCNN checkpoint written in the official layout."""
    from models import write_state_dict

    return write_state_dict(make_tiny_fbcnn(3).state_dict(), tmp_path / "tiny_color.pth")
