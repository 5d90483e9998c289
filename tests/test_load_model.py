"""load_model on our checkpoints, spandrel-saved ones, wrapped ones and junk."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from spandrel import ModelLoader
from spandrel.architectures.FBCNN import FBCNN as SpandrelFBCNN

from models import FBCNN, CheckpointError, load_model, write_state_dict
from tests.conftest import make_tiny_fbcnn


def _outputs_equal(a: torch.nn.Module, b: torch.nn.Module, in_nc: int) -> None:
    x = torch.rand(1, in_nc, 24, 16)
    with torch.no_grad():
        torch.testing.assert_close(a(x)[0], b(x)[0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("in_nc", [1, 3])
def test_roundtrip_own_checkpoint(tmp_path: Path, suffix: str, in_nc: int) -> None:
    net = make_tiny_fbcnn(in_nc)
    path = write_state_dict(net.state_dict(), tmp_path / f"net{suffix}")
    loaded = load_model(path)
    assert isinstance(loaded, FBCNN) and not loaded.training
    assert (loaded.in_nc, loaded.nc, loaded.nb, loaded.qf_dim) == (in_nc, [8, 16, 32, 64], 1, 32)
    _outputs_equal(net, loaded, in_nc)


def test_half_storage_loads_as_float32(tmp_path: Path) -> None:
    net = make_tiny_fbcnn(1)
    path = write_state_dict(net.state_dict(), tmp_path / "half.pth", half=True)
    assert torch.load(path, weights_only=True)["m_head.weight"].dtype == torch.float16
    loaded = load_model(path)
    assert loaded.m_head.weight.dtype == torch.float32
    torch.testing.assert_close(loaded.m_head.weight, net.m_head.weight, atol=1e-3, rtol=1e-3)


def test_official_configuration_and_wrappers(tmp_path: Path) -> None:
    """The released layout (nc 64..512, nb 4), saved by spandrel's own class, in the containers other tools use."""
    ref = SpandrelFBCNN(in_nc=1, out_nc=1)
    sd = ref.state_dict()
    torch.save(sd, tmp_path / "plain.pth")
    torch.save({"params": sd}, tmp_path / "basicsr.pth")
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "ddp.pth")
    for name in ("plain.pth", "basicsr.pth", "ddp.pth"):
        net = load_model(tmp_path / name)
        assert (net.in_nc, net.out_nc, net.nc, net.nb, net.qf_dim) == (1, 1, [64, 128, 256, 512], 4, 512)
    _outputs_equal(ref.eval(), net, 1)


def test_our_checkpoint_loads_in_spandrel(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = FBCNN(in_nc=3, out_nc=3, nc=[16, 32, 64, 512], nb=2).eval()
    path = write_state_dict(net.state_dict(), tmp_path / "ours.pth")
    descriptor = ModelLoader().load_from_file(path)
    assert descriptor.architecture.id == "FBCNN"
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(descriptor.model(x)[0], net(x)[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"this is not a checkpoint", "cannot be read"),
        (None, "no such checkpoint"),
    ],
)
def test_unreadable_files(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "junk.pth"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as info:
        load_model(path)
    assert "junk.pth" in str(info.value)


def test_foreign_state_dicts_are_rejected(tmp_path: Path) -> None:
    torch.save(torch.nn.Conv2d(3, 3, 3).state_dict(), tmp_path / "conv.pth")
    with pytest.raises(CheckpointError, match="Expected keys of one of"):
        load_model(tmp_path / "conv.pth")
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    with pytest.raises(CheckpointError, match="single tensor"):
        load_model(tmp_path / "tensor.pth")
    torch.save({"epoch": 3, "note": "hi"}, tmp_path / "meta.pth")
    with pytest.raises(CheckpointError, match="not tensors"):
        load_model(tmp_path / "meta.pth")


def test_pickled_objects_are_not_unpickled(tmp_path: Path) -> None:
    """A checkpoint holding an arbitrary Python object is refused by the weights-only loader."""
    torch.save({"m_head.weight": torch.zeros(1), "payload": Path("/etc")}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_model(tmp_path / "evil.pth")


def test_truncated_state_dict_names_missing_keys(tmp_path: Path) -> None:
    sd = make_tiny_fbcnn(3).state_dict()
    del sd["m_up1.1.res.2.bias"]
    torch.save(sd, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match="m_up1.1.res.2.bias"):
        load_model(tmp_path / "partial.pth")


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_failed_checkpoint_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    """A save interrupted half-way (disk full, Ctrl-C) keeps the previous checkpoint loadable, leaves no temp file."""
    path = write_state_dict(make_tiny_fbcnn(1, seed=0).state_dict(), tmp_path / "net.pth")
    before = path.read_bytes()
    original_save = torch.save

    def half_save(obj, f, *args, **kwargs) -> None:
        original_save(obj, f, *args, **kwargs)
        Path(f).write_bytes(Path(f).read_bytes()[:1000])  # a truncated file on disk
        raise error

    monkeypatch.setattr(torch, "save", half_save)
    with pytest.raises(type(error)):
        write_state_dict(make_tiny_fbcnn(1, seed=1).state_dict(), path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.pth"]
    assert path.read_bytes() == before
    monkeypatch.undo()
    _outputs_equal(make_tiny_fbcnn(1, seed=0), load_model(path), 1)
