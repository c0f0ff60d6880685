"""ActionHead: tanh scaled onto the action box, logits for discrete actions, losses over the real steps only."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from omni.heads.action import ActionHead

B, K, D = 3, 5, 8


@settings(max_examples=25, deadline=None)
@given(
    low=st.lists(st.floats(-5, 4), min_size=2, max_size=2),
    width=st.lists(st.floats(0.1, 5), min_size=2, max_size=2),
    scale=st.floats(0.1, 100),
)
def test_continuous_actions_stay_inside_the_box(low, width, scale):
    torch.manual_seed(0)
    head = ActionHead(D, 2)
    high = [lo + w for lo, w in zip(low, width, strict=True)]
    head.set_bounds(low, high)
    out = head(torch.randn(B, K, D) * scale)
    assert out.shape == (B, K, 2)
    assert (out >= torch.tensor(low) - 1e-5).all() and (out <= torch.tensor(high) + 1e-5).all()
    # the box's centre is where the linear layer outputs 0
    with torch.no_grad():
        head.fc.weight.zero_()
        head.fc.bias.zero_()
    centre = (torch.tensor(low) + torch.tensor(high)) / 2
    torch.testing.assert_close(head(torch.randn(1, 1, D))[0, 0], centre)


def test_masked_loss_ignores_padded_steps_entirely():
    torch.manual_seed(0)
    head = ActionHead(D, 3)
    pred, target = head(torch.randn(B, K, D)), torch.rand(B, K, 3) * 2 - 1
    mask = torch.rand(B, K) > 0.4
    mask[0, 0] = True
    garbage = torch.where(mask[..., None], target, torch.full_like(target, 1e6))
    loss = head.loss(pred, garbage, mask)
    torch.testing.assert_close(loss, F.mse_loss(pred[mask], target[mask]))


def test_discrete_logits_and_cross_entropy():
    torch.manual_seed(0)
    head = ActionHead(D, 4, discrete=True)
    logits = head(torch.randn(B, K, D))
    assert logits.shape == (B, K, 4)
    target = torch.randint(0, 4, (B, K))
    mask = torch.ones(B, K, dtype=torch.bool)
    mask[1, 3:] = False
    expected = F.cross_entropy(logits[mask], target[mask])
    torch.testing.assert_close(head.loss(logits, target, mask), expected)
    torch.testing.assert_close(head.loss(logits, target[..., None], mask), expected)  # (B, K, 1) indices too
    assert torch.equal(head.act(logits), logits.argmax(-1))


def test_bad_arguments_raise_value_errors():
    head = ActionHead(D, 2)
    with pytest.raises(ValueError, match="action low: expected 2 finite bounds"):
        head.set_bounds([0.0], [1.0])
    with pytest.raises(ValueError, match="low < high"):
        head.set_bounds([0.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="actions: expected shape \\(3, 5, 2\\)"):
        head.loss(torch.zeros(B, K, 2), torch.zeros(B, K, 3))
    with pytest.raises(ValueError, match="act_dim: expected >= 2"):
        ActionHead(D, 1, discrete=True)
