"""Our FBCNN against spandrel's independent implementation, and the official layout."""

from __future__ import annotations

import pytest
import torch
from spandrel.architectures.FBCNN import FBCNN as SpandrelFBCNN

from models import FBCNN

# Small but official-shaped: spandrel hard-codes the 512-wide QF MLP and nc[3] = 512.
NC = [16, 32, 64, 512]


def _pair(in_nc: int, seed: int) -> tuple[FBCNN, SpandrelFBCNN]:
    torch.manual_seed(seed)
    ours = FBCNN(in_nc=in_nc, out_nc=in_nc, nc=NC, nb=2).eval()
    # Random, non-trivial weights everywhere (default init leaves biases small).
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.02 * torch.randn_like(p))
    ref = SpandrelFBCNN(in_nc=in_nc, out_nc=in_nc, nc=NC, nb=2).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    return ours, ref


@pytest.mark.parametrize("in_nc", [3, 1])
@pytest.mark.parametrize("with_qf_input", [False, True])
def test_matches_spandrel(in_nc: int, with_qf_input: bool) -> None:
    ours, ref = _pair(in_nc, seed=in_nc)
    x = torch.rand(2, in_nc, 37, 50)  # sides not divisible by 8, batch 2
    qf_input = torch.tensor([[0.9], [0.3]]) if with_qf_input else None
    with torch.no_grad():
        out, qf = ours(x, qf_input)
        ref_out, ref_qf = ref(x, qf_input)
    assert out.shape == x.shape and qf.shape == (2, 1)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=0)
    torch.testing.assert_close(qf, ref_qf, atol=1e-5, rtol=0)


def test_qf_input_changes_output_and_broadcasts() -> None:
    ours, _ = _pair(3, seed=5)
    x = torch.rand(2, 3, 32, 24)
    with torch.no_grad():
        a, _ = ours(x, torch.tensor([[0.9]]))  # [1, 1] broadcasts over the batch
        b, _ = ours(x, torch.tensor([[0.9], [0.9]]))
        c, _ = ours(x, torch.tensor([[0.1], [0.1]]))
    torch.testing.assert_close(a, b)
    assert (a - c).abs().max() > 1e-4


def test_released_layout_keys_and_shapes() -> None:
    sd = FBCNN(in_nc=3, out_nc=3).state_dict()
    ref = SpandrelFBCNN(in_nc=3, out_nc=3).state_dict()
    assert list(sd) == list(ref)
    assert all(sd[k].shape == ref[k].shape for k in sd)
    # Facts of the released checkpoints.
    assert sd["m_down1.4.weight"].shape == (128, 64, 2, 2)
    assert sd["m_up3.0.weight"].shape == (512, 256, 2, 2)  # ConvTranspose2d: [in, out, k, k]
    assert sd["qf_pred.6.weight"].shape == (512, 512)
    assert sd["qf_pred.10.weight"].shape == (1, 512)
    assert sd["qf_embed.0.weight"].shape == (512, 1)
    assert sd["to_gamma_1.0.weight"].shape == (64, 512)
    assert sum(v.numel() for v in sd.values()) == 71_921_796


def test_small_models_with_narrow_bottleneck() -> None:
    net = FBCNN(in_nc=1, out_nc=1, nc=[16, 32, 64, 128], nb=2, qf_dim=64)
    out, qf = net(torch.rand(1, 1, 20, 20))
    assert out.shape == (1, 1, 20, 20) and qf.shape == (1, 1)
    assert net.state_dict()["qf_pred.4.weight"].shape == (64, 128)
