"""The network registry beyond FBCNN: DnCNN checkpoints (KAIR layout) and the non-learned deblocking filter."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from spandrel import ModelLoader
from spandrel.architectures.DnCNN import DnCNN as KairDnCNN  # KAIR's class, vendored by spandrel

from data.degradations import jpeg
from models import FBCNN, CheckpointError, define_G, load_model, write_state_dict
from models.contract import qf_to_label
from models.network_deblock import Deblock
from models.network_dncnn import DnCNN
from utils.utils_eval import restore, score
from utils.utils_image import imread_uint


def _randomise(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-trivial weights and batch-norm statistics (small variances, so BN's eps matters)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand_like(t) * 1e-3 + 1e-4)
            elif t.is_floating_point():
                t.add_(0.05 * torch.randn_like(t))
    return net.eval()


def _same_output(a: torch.nn.Module, b: torch.nn.Module, in_nc: int) -> None:
    x = torch.rand(2, in_nc, 19, 26)
    with torch.no_grad():
        out_a, out_b = a(x), b(x)
    out_a = out_a[0] if isinstance(out_a, tuple) else out_a
    out_b = out_b[0] if isinstance(out_b, tuple) else out_b
    torch.testing.assert_close(out_a, out_b, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------
# DnCNN
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("act_mode", "in_nc", "nb"), [("R", 1, 5), ("BR", 1, 6), ("R", 3, 4)])
def test_dncnn_checkpoint_detected_and_loaded_strictly(tmp_path: Path, act_mode: str, in_nc: int, nb: int) -> None:
    net = _randomise(DnCNN(in_nc=in_nc, out_nc=in_nc, nc=8, nb=nb, act_mode=act_mode), seed=nb)
    loaded = load_model(write_state_dict(net.state_dict(), tmp_path / "dncnn.pth"))
    assert loaded.net_type == "dncnn" and isinstance(loaded, DnCNN) and not loaded.training
    assert (loaded.in_nc, loaded.nc, loaded.nb, loaded.act_mode) == (in_nc, 8, nb, act_mode)
    _same_output(net, loaded, in_nc)


@pytest.mark.parametrize(("act_mode", "nb"), [("R", 20), ("BR", 17)])
def test_kair_dncnn_files_load(tmp_path: Path, act_mode: str, nb: int) -> None:
    """KAIR's own class (dncnn3.pth is nb 20 'R'; KAIR training saves 'BR') -> same keys, same outputs."""
    kair = _randomise(KairDnCNN(in_nc=1, out_nc=1, nc=64, nb=nb, act_mode=act_mode), seed=nb)
    path = tmp_path / "dncnn3.pth"
    torch.save(kair.state_dict(), path)
    loaded = load_model(path)
    assert (loaded.net_type, loaded.nb, loaded.act_mode) == ("dncnn", nb, act_mode)
    if act_mode == "R":  # the released dncnn3.pth layout: model.0 ... model.38, convs only
        assert sorted({k.split(".")[1] for k in loaded.state_dict()}, key=int) == [str(i) for i in range(0, 39, 2)]
    _same_output(kair, loaded, 1)


def test_batchnorm_file_without_counters_loads(tmp_path: Path) -> None:
    """Checkpoints from PyTorch < 0.4.1 have no ``num_batches_tracked`` entries."""
    net = _randomise(DnCNN(nc=8, nb=4, act_mode="BR"), seed=3)
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    _same_output(net, load_model(write_state_dict(state, tmp_path / "old.pth")), 1)


def test_our_dncnn_checkpoint_is_dncnn_for_spandrel(tmp_path: Path) -> None:
    net = _randomise(DnCNN(nc=8, nb=8), seed=1)
    descriptor = ModelLoader().load_from_file(write_state_dict(net.state_dict(), tmp_path / "ours.pth"))
    assert descriptor.architecture.id == "DnCNN"
    _same_output(net, descriptor.model, 1)


def test_dncnn_forward_is_residual() -> None:
    net = _randomise(DnCNN(nc=8, nb=3), seed=0)
    x = torch.rand(1, 1, 11, 13)
    with torch.no_grad():
        restored, qf = net(x, torch.tensor([[0.9]]))
        torch.testing.assert_close(restored, x - net.model(x))
        assert qf is None
        torch.testing.assert_close(net(x, torch.tensor([[0.1]]))[0], restored)  # blind: qf_input is ignored
        tail = net.model[-1]
        tail.weight.zero_()
        tail.bias.fill_(0.25)  # the network now predicts a constant residual
        torch.testing.assert_close(net(x)[0], x - 0.25)


# --------------------------------------------------------------------------------------
# Registry, detection and rejection
# --------------------------------------------------------------------------------------
def test_define_g_builds_every_baseline() -> None:
    dncnn = define_G({"net_type": "dncnn", "in_nc": 1, "out_nc": 1, "nc": 8, "nb": 4, "act_mode": "BR"})
    assert isinstance(dncnn, DnCNN) and isinstance(dncnn.model[3], torch.nn.BatchNorm2d)
    deblock = define_G({"net_type": "deblock", "in_nc": 1, "default_qf": 20})
    assert isinstance(deblock, Deblock) and deblock.default_qf == 20
    assert not list(deblock.parameters()) and not deblock.state_dict()
    with pytest.raises(ValueError, match="known types.*deblock.*dncnn.*fbcnn"):
        define_G({"net_type": "dncnn3"})


def test_fbcnn_still_detected_as_fbcnn(tiny_fbcnn_path: Path) -> None:
    model = load_model(tiny_fbcnn_path)
    assert model.net_type == "fbcnn" and isinstance(model, FBCNN)


def _kair_like(in_nc: int, out_nc: int) -> dict[str, torch.Tensor]:
    return {"model.0.weight": torch.zeros(8, in_nc, 3, 3), "model.0.bias": torch.zeros(8),
            "model.2.weight": torch.zeros(out_nc, 8, 3, 3), "model.2.bias": torch.zeros(out_nc)}  # fmt: skip


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"conv.weight": torch.zeros(3, 3, 3, 3)}, "not a known network state_dict"),
        (_kair_like(2, 1), "not a DnCNN"),  # FDnCNN / FFDNet share the 'model.N' layout
        ({**_kair_like(1, 1), "model.3.weight": torch.zeros(8)}, "do not follow DnCNN's layout"),
        ({**_kair_like(1, 1), "model.2.bias": torch.zeros(5)}, "size mismatch"),
    ],
)
def test_junk_is_rejected_with_the_file_name(tmp_path: Path, state: dict, message: str) -> None:
    path = write_state_dict(state, tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match=message) as info:
        load_model(path)
    assert "junk.pth" in str(info.value)


# --------------------------------------------------------------------------------------
# Deblocking filter
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 3, 37, 50), (1, 1, 5, 7), (1, 2, 8, 16)])
def test_deblock_any_size_and_flat_images_untouched(shape: tuple[int, ...]) -> None:
    net = Deblock()
    x = torch.rand(shape)
    out, qf = net(x)
    assert out.shape == x.shape and qf is None
    flat = torch.full(shape, 0.4)
    torch.testing.assert_close(net(flat)[0], flat)


def test_deblock_batch_uses_each_images_qf() -> None:
    torch.manual_seed(0)
    x = (torch.rand(2, 1, 4, 4, 1, 1) * 0.3).repeat(1, 1, 1, 1, 8, 8)  # 8x8 piecewise-constant blocks
    x = x.permute(0, 1, 2, 4, 3, 5).reshape(2, 1, 32, 32) + 0.02 * torch.rand(2, 1, 32, 32)
    labels = torch.tensor([[qf_to_label(10)], [qf_to_label(80)]])
    batch = Deblock()(x, labels)[0]
    for i in range(2):
        torch.testing.assert_close(batch[i : i + 1], Deblock()(x[i : i + 1], labels[i : i + 1])[0])
    # A strong filter (QF 10) moves blocky content more than a weak one (QF 80).
    assert (batch[0] - x[0]).abs().mean() > 2 * (batch[1] - x[1]).abs().mean()


@pytest.mark.parametrize("name", ["bikes", "caps", "parrots"])
def test_deblock_beats_jpeg_on_live1_qf10(datasets: Path, name: str) -> None:
    gt = imread_uint(datasets / "testsets" / "LIVE1_gray" / f"{name}.png", n_channels=1)
    gt = gt[:256, :384]  # a crop keeps the test fast; the grid stays JPEG's
    lq = jpeg(gt, 10)
    model = define_G({"net_type": "deblock", "in_nc": 1})
    before = score(gt, lq)
    for qf in (None, 10):  # blind (default_qf 10) and told the quality
        after = score(gt, restore(model, lq, qf)[0])
        assert after["psnr"] > before["psnr"] + 0.1, (qf, before, after)
        assert after["psnrb"] > before["psnrb"] + 1.0, (qf, before, after)


def test_deblock_told_a_high_quality_leaves_the_image_alone(datasets: Path) -> None:
    gt = imread_uint(datasets / "testsets" / "LIVE1_gray" / "bikes.png", n_channels=1)[:256, :256]
    lq = jpeg(gt, 90)
    out, _ = restore(Deblock(), lq, qf=90)
    assert score(gt, out)["psnr"] > score(gt, lq)["psnr"] - 0.05
