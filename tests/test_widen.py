"""models.widen_fbcnn (function-preserving widening) and the controller's initialisation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models import FBCNN, load_model, read_state_dict, write_state_dict
from models.model_fbcnn import init_weights
from models.network_fbcnn import controller_live_units
from models.widen_fbcnn import main as widen_main
from models.widen_fbcnn import reset_controller, widen_fbcnn_state_dict
from tests.conftest import TINY_FBCNN, make_tiny_fbcnn

WIDE = [12, 20, 40, 72]


def _outputs(model: FBCNN, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        blind, qf = model(x)
        fixed, _ = model(x, torch.tensor([[0.3]]))
    return [blind, qf, fixed]


@pytest.mark.parametrize("in_nc", [1, 3])
def test_widened_network_computes_the_same_function(in_nc: int) -> None:
    small = make_tiny_fbcnn(in_nc, seed=3)
    for p in small.parameters():  # non-zero biases everywhere, so every bias is checked too
        p.data.add_(0.05 * torch.randn_like(p))
    wide_state = widen_fbcnn_state_dict(small.state_dict(), WIDE, split_noise=0.3)
    wide = FBCNN(in_nc, in_nc, WIDE, TINY_FBCNN["nb"], qf_dim=TINY_FBCNN["qf_dim"]).eval()
    wide.load_state_dict(wide_state, strict=True)
    x = torch.rand(2, in_nc, 40, 48)
    for a, b in zip(_outputs(small, x), _outputs(wide, x), strict=True):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    # The copies of a channel get different split weights: they will not train identically.
    w = wide_state["m_tail.weight"]
    assert not torch.allclose(w[:, 8], w[:, 8:].mean(1)) and w.shape == (in_nc, WIDE[0], 3, 3)


@pytest.mark.parametrize("in_nc", [1, 3])
def test_widening_with_fresh_units_computes_the_same_function(in_nc: int) -> None:
    small = make_tiny_fbcnn(in_nc, seed=3)
    for p in small.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    wide_state = widen_fbcnn_state_dict(small.state_dict(), WIDE, new_units="random")
    wide = FBCNN(in_nc, in_nc, WIDE, TINY_FBCNN["nb"], qf_dim=TINY_FBCNN["qf_dim"]).eval()
    wide.load_state_dict(wide_state, strict=True)
    x = torch.rand(2, in_nc, 40, 48)
    for a, b in zip(_outputs(small, x), _outputs(wide, x), strict=True):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    old = small.state_dict()["m_down1.0.res.0.weight"].shape[0]
    w = wide_state["m_down1.0.res.0.weight"]  # level 0 to level 0: new rows fresh, reads of new channels zero
    assert w[old:].abs().sum() > 0 and w[:, old:].abs().sum() == 0
    assert w[old:, :old].std() != w[:old, :old].std()  # not copies of old rows


def test_widening_refuses_to_shrink() -> None:
    with pytest.raises(ValueError, match="at least the old width"):
        widen_fbcnn_state_dict(make_tiny_fbcnn(1).state_dict(), [4, 16, 32, 64])


def test_reset_controller_revives_a_dead_controller_without_changing_the_output(tmp_path: Path) -> None:
    model = make_tiny_fbcnn(1, seed=1)
    with torch.no_grad():  # kill every unit of the embedding's last ReLU, as in our v1 colour model
        model.qf_embed[4].weight.zero_()
        model.qf_embed[4].bias.fill_(-1.0)
    assert controller_live_units(model) == (0, TINY_FBCNN["qf_dim"])
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        dead_10, _ = model(x, torch.tensor([[0.9]]))
        dead_90, _ = model(x, torch.tensor([[0.1]]))
    assert torch.equal(dead_10, dead_90)  # a dead controller: the set QF changes nothing

    src = write_state_dict(model.state_dict(), tmp_path / "dead.pth")
    assert widen_main([str(src), str(tmp_path / "wide.pth"), "--nc", *map(str, WIDE), "--reset-controller"]) == 0
    wide = load_model(tmp_path / "wide.pth")
    assert wide.nc == WIDE
    live, units = controller_live_units(wide)
    assert live > units // 2
    with torch.no_grad():
        assert torch.allclose(wide(x, torch.tensor([[0.9]]))[0], dead_10, atol=1e-5)
    state = read_state_dict(tmp_path / "wide.pth")
    assert all(not state[f"to_{k}_{i}.0.weight"].any() for k in ("gamma", "beta") for i in (1, 2, 3))
    assert reset_controller(state).keys() == state.keys()


def test_training_init_keeps_the_controller_alive() -> None:
    """The official orthogonal gain-0.2 init elsewhere, PyTorch's default in qf_embed: QF-dependent from the start."""
    torch.manual_seed(0)
    net = FBCNN(1, 1, **TINY_FBCNN)
    init_weights(net, "orthogonal", 0.2)
    w = net.m_head.weight.flatten(1)
    assert torch.allclose(w @ w.T, 0.04 * torch.eye(w.shape[0]), atol=1e-5)  # orthogonal rows, gain 0.2
    live, units = controller_live_units(net)
    assert live > units // 2
    with torch.no_grad():
        e = net.qf_embed(torch.tensor([[0.1], [0.9]]))
    assert (e[0] - e[1]).abs().mean() > 0.05  # the embedding depends on the QF (gain 0.2 gave ~1e-3)
