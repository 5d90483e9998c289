"""--backend torch|onnxruntime|auto: the choice per device (CPU flags and CUDA mocked), bf16_supported never
reporting emulated bf16, fp16 on CUDA GPUs without native bf16, and the per-checkpoint ONNX cache end to end
(tiny network)."""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import pytest
import torch
from PIL import Image

import main_restore_fbcnn as cli
import utils.backends as backends
import utils.tiling as tiling
from models import write_state_dict
from tests.conftest import make_tiny_fbcnn

AVX2_ONLY = {"fpu", "sse4_2", "avx", "avx2", "fma", "avx512f"}  # AVX-512 without BF16: bf16 would be emulated
BF16_CPU = AVX2_ONLY | {"avx512_bf16"}


@pytest.fixture
def ort():
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"onnxruntime is missing ({exc}): requirements-dev.txt installs it")


def test_auto_picks_onnxruntime_where_bf16_is_emulated(monkeypatch, ort) -> None:
    monkeypatch.setattr(tiling, "cpu_flags", lambda: AVX2_ONLY)
    assert not tiling.bf16_supported("cpu")
    choice = backends.choose_backend("auto", "cpu")
    assert choice.name == "onnxruntime" and not choice.half
    assert backends.choose_backend("torch", "cpu") == backends.Backend("torch", False, True, "asked for")
    # without onnxruntime: torch float32 + channels_last, never emulated bf16
    monkeypatch.setattr(backends, "onnxruntime_available", lambda: False)
    choice = backends.choose_backend("auto", "cpu")
    assert (choice.name, choice.half, choice.channels_last) == ("torch", False, True)
    with pytest.raises(ValueError, match="onnxruntime is not installed"):
        backends.choose_backend("onnxruntime", "cpu")


def test_onednn_isa_cap_below_bf16_counts_as_emulated(monkeypatch) -> None:
    """ONEDNN_MAX_CPU_ISA=AVX2 on a bf16 CPU makes oneDNN emulate bf16 (slower than float32): not native."""
    monkeypatch.setattr(tiling, "cpu_flags", lambda: BF16_CPU)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not tiling.bf16_supported("cpu")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_amx")
    assert tiling.bf16_supported("cpu")


def test_auto_picks_torch_bf16_where_bf16_is_native(monkeypatch, ort) -> None:
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(tiling, "cpu_flags", lambda: BF16_CPU)
    choice = backends.choose_backend("auto", "cpu")
    assert (choice.name, choice.half, choice.channels_last) == ("torch", True, True)
    assert backends.choose_backend("auto", "cpu", half=False).half is False  # --no-half is respected
    assert tiling.half_dtype("cpu") == torch.bfloat16
    assert backends.choose_backend("onnxruntime", "cpu").name == "onnxruntime"  # asked for explicitly


@pytest.mark.parametrize(
    ("native", "capability", "dtype"),
    [
        (True, (8, 0), torch.bfloat16),  # Ampere on: bf16
        (False, (7, 5), torch.float16),  # Turing (T4): tensor cores, no native bf16 -> fp16
        (False, (6, 1), None),  # Pascal consumer cards: slow fp16 -> float32
    ],
)
def test_cuda_half_precision_is_native_only_for_the_device_used(monkeypatch, native, capability, dtype) -> None:
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
    monkeypatch.setattr(torch.cuda, "device", lambda index: calls.append(("device", index)) or contextlib.nullcontext())

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        calls.append(("emulation", including_emulation))
        return native or including_emulation  # an emulating GPU says True unless asked without emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert tiling.bf16_supported("cuda:1") is native
    assert calls == [("device", 1), ("emulation", False)]
    choice = backends.choose_backend("auto", "cuda:1")
    assert (choice.name, choice.half, choice.channels_last) == ("torch", dtype is not None, True)
    assert tiling.half_supported("cuda:1") is (dtype is not None)
    if dtype is not None:
        assert tiling.half_dtype("cuda:1") == dtype
        assert {torch.bfloat16: "native bf16", torch.float16: "native fp16"}[dtype] in choice.reason
    with pytest.raises(ValueError, match="CPU only"):
        backends.choose_backend("onnxruntime", "cuda")


def test_cli_auto_uses_cached_onnx_and_reexports_a_changed_checkpoint(tmp_path, monkeypatch, caplog, ort) -> None:
    monkeypatch.setattr(tiling, "cpu_flags", lambda: AVX2_ONLY)
    monkeypatch.setenv("FBCNN_CACHE", str(tmp_path / "cache"))
    ckpt = write_state_dict(make_tiny_fbcnn(3, seed=1).state_dict(), tmp_path / "tiny.pth")
    rng = np.random.default_rng(0)
    src = tmp_path / "in.jpg"
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(src, quality=30)

    def restore(backend: str, out: str) -> np.ndarray:
        argv = [str(src), "-o", str(tmp_path / out), "--model", str(ckpt), "--backend", backend, "--no-grid-align"]
        with caplog.at_level(logging.INFO, logger="fbcnn-restore"):
            assert cli.main(argv) == 0
        return np.asarray(Image.open(tmp_path / out)).astype(int)

    via_ort = restore("auto", "a.png")
    assert "backend onnxruntime" in caplog.text
    graphs = sorted(p.name for p in (tmp_path / "cache").iterdir())
    sha = backends.file_sha256(ckpt)[:16]
    assert graphs == [f"tiny-{sha}.onnx", f"tiny-{sha}_qf.onnx"]
    assert np.abs(via_ort - restore("torch", "t.png")).max() <= 1  # float32 both ways: rounding only

    caplog.clear()
    stamp = (tmp_path / "cache" / graphs[0]).stat().st_mtime_ns
    restore("auto", "b.png")
    assert "exporting" not in caplog.text and (tmp_path / "cache" / graphs[0]).stat().st_mtime_ns == stamp

    write_state_dict(make_tiny_fbcnn(3, seed=2).state_dict(), ckpt)  # the checkpoint changes
    caplog.clear()
    changed = restore("auto", "c.png")
    assert "exporting" in caplog.text
    new_sha = backends.file_sha256(ckpt)[:16]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [f"tiny-{new_sha}.onnx", f"tiny-{new_sha}_qf.onnx"]
    assert np.abs(changed - restore("torch", "t2.png")).max() <= 1


def test_cli_half_flag_keeps_the_old_bf16_names() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["x.jpg"]).half is None  # default: where the device computes it natively
    assert parser.parse_args(["x.jpg", "--half"]).half is True
    assert parser.parse_args(["x.jpg", "--no-half"]).half is False
    assert parser.parse_args(["x.jpg", "--bf16"]).half is True
    assert parser.parse_args(["x.jpg", "--no-bf16"]).half is False


def test_demo_picks_the_clis_backend_and_keeps_other_networks_on_torch(tmp_path, monkeypatch, ort) -> None:
    """The web demo restores through the same choice: onnxruntime where bf16 is emulated, torch when asked, and
    networks other than FBCNN (not exported) on torch under auto; onnxruntime asked for them is an error."""
    import main_demo_fbcnn as demo
    from models.network_dncnn import DnCNN

    monkeypatch.setattr(tiling, "cpu_flags", lambda: AVX2_ONLY)
    monkeypatch.setenv("FBCNN_CACHE", str(tmp_path / "cache"))
    ckpt = write_state_dict(make_tiny_fbcnn(3, seed=1).state_dict(), tmp_path / "tiny.pth")
    src = tmp_path / "in.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(src, quality=30)
    img = cli.read_image(src)
    outputs = {}
    for backend in ("auto", "torch"):
        restorer = demo.Restorer({"tiny": ckpt}, "cpu", 0, backend)
        outputs[backend], _ = restorer.restore("tiny", img, None, None)
        assert restorer.backends["tiny"].name == ("onnxruntime" if backend == "auto" else "torch")
    assert isinstance(demo.Restorer({"tiny": ckpt}, "cpu", 0, "auto").model("tiny"), backends.OrtFBCNN)
    assert np.abs(outputs["auto"].astype(int) - outputs["torch"].astype(int)).max() <= 1

    dncnn = DnCNN(in_nc=3, out_nc=3, nc=8, nb=3)
    assert backends.backend_for_model(dncnn, "dncnn.pth", "auto", "cpu").name == "torch"
    with pytest.raises(ValueError, match=r"FBCNN networks only; dncnn\.pth is not one"):
        backends.backend_for_model(dncnn, "dncnn.pth", "onnxruntime", "cpu")
