"""ONNX export: onnxruntime agrees with PyTorch on a tiny FBCNN, at sizes other than the export example.

Without onnxruntime the comparison skips locally but fails in CI (``CI`` set), where it must run; the
argument checks of the exporter need neither onnx nor onnxruntime.
"""

from __future__ import annotations

import importlib
import os
import types

import numpy as np
import pytest
import torch

from data.degradations import jpeg
from models import write_state_dict
from tests.conftest import make_tiny_fbcnn
from utils.utils_export import export_onnx, main
from utils.utils_image import imread_uint, uint2tensor4


@pytest.fixture(scope="module")
def ort() -> types.ModuleType:
    """onnxruntime; missing: a failure in CI, a skip elsewhere."""
    try:
        return importlib.import_module("onnxruntime")
    except ImportError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"onnxruntime is missing ({exc}): CI must run the ONNX checks (requirements-dev.txt)")
        pytest.skip(f"onnxruntime not installed ({exc})")


def test_onnx_matches_pytorch(tmp_path, datasets, ort) -> None:
    checkpoint = write_state_dict(make_tiny_fbcnn(3, seed=1).state_dict(), tmp_path / "tiny.pth")
    assert main([str(checkpoint), str(tmp_path / "tiny.onnx")]) == 0
    blind = ort.InferenceSession(str(tmp_path / "tiny.onnx"))
    flexible = ort.InferenceSession(str(tmp_path / "tiny_qf.onnx"))
    model = make_tiny_fbcnn(3, seed=1)

    real = jpeg(imread_uint(datasets / "testsets" / "LIVE1_color" / "bikes.png", 3)[:45, :61], 20)
    inputs = [uint2tensor4(real), torch.rand(2, 3, 37, 53), torch.rand(1, 3, 5, 7), torch.rand(1, 3, 72, 40)]
    for x in inputs:
        qf_input = torch.full((x.shape[0], 1), 0.35)
        with torch.no_grad():
            ref, ref_qf = model(x)
            ref_flex, _ = model(x, qf_input)
        restored, qf = blind.run(None, {"image": x.numpy()})
        assert restored.shape == tuple(x.shape) and qf.shape == (x.shape[0], 1)
        assert np.abs(restored - ref.numpy()).max() < 1e-4
        assert np.abs(qf - ref_qf.numpy()).max() < 1e-5
        restored, qf = flexible.run(None, {"image": x.numpy(), "qf_input": qf_input.numpy()})
        assert np.abs(restored - ref_flex.numpy()).max() < 1e-4
        assert np.allclose(qf, 0.35)
    assert not np.allclose(ref, ref_flex)  # the QF input really changes the output


def test_export_rejects_non_fbcnn(tmp_path) -> None:
    with pytest.raises(ValueError, match="FBCNN"):
        export_onnx(torch.nn.Conv2d(3, 3, 3), tmp_path / "x.onnx")
    assert main([str(tmp_path / "missing.pth"), str(tmp_path / "x.onnx")]) == 2
    assert not (tmp_path / "x.onnx").exists()
