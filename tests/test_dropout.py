"""omni.dropout: the CPU fast path is inverted dropout (right rate, right scale, gradient through the same mask),
reproducible from torch's seed, and attention with dropout equals the written-out reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from omni.attention.kernels import sdpa
from omni.dropout import Dropout, dropout, keep_mask


def test_rate_and_scale() -> None:
    torch.manual_seed(0)
    x = torch.rand(1000, 1000) + 0.5  # no zeros: a zero in the output means dropped
    out = dropout(x, 0.1)
    dropped = out == 0
    # 1e6 Bernoulli(0.1) draws: std of the fraction is 3e-4
    assert abs(dropped.float().mean().item() - 0.1) < 2e-3
    torch.testing.assert_close(out[~dropped], x[~dropped] / 0.9)


@settings(max_examples=25, deadline=None)
@given(p=st.floats(0.02, 0.9), seed=st.integers(0, 2**31 - 1))
def test_any_rate(p: float, seed: int) -> None:
    torch.manual_seed(seed)
    kept = keep_mask((200_000,), p)
    # std of the kept fraction <= sqrt(0.25 / 2e5) ~ 1.1e-3; 5 std plus p's rounding to 1/65536
    assert abs(kept.float().mean().item() - (1 - p)) < 6e-3


def test_reproducible_from_torch_seed_and_fresh_each_call() -> None:
    x = torch.ones(64, 60, 128)
    torch.manual_seed(3)
    a, b = dropout(x, 0.1), dropout(x, 0.1)
    torch.manual_seed(3)
    assert torch.equal(dropout(x, 0.1), a)
    assert not torch.equal(a, b)


def test_gradient_goes_through_the_same_mask() -> None:
    torch.manual_seed(1)
    x = (torch.rand(32, 50) + 0.5).requires_grad_()
    out = dropout(x, 0.3)
    out.backward(torch.full_like(out, 2.0))
    scale = 1 / (1 - round(0.3 * 65536) / 65536)
    expected = torch.where(out != 0, 2.0 * scale, 0.0)
    torch.testing.assert_close(x.grad, expected)


def test_identity_when_off_and_zeros_at_one() -> None:
    x = torch.randn(4, 5)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    m = Dropout(0.5).eval()
    assert torch.equal(m(x), x)
    assert Dropout(0.5).state_dict() == nn.Dropout(0.5).state_dict() == {}


def test_bad_probability_is_named() -> None:
    with pytest.raises(ValueError, match=r"p: expected a dropout probability in \[0, 1\], got 1.5"):
        keep_mask((3,), 1.5)


def test_sdpa_with_dropout_equals_the_written_out_reference() -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8, generator=g) for _ in range(3))
    mask = torch.rand(2, 1, 7, 7, generator=g) > 0.3
    mask[..., 0] = True  # every row attends at least one key
    torch.manual_seed(5)
    out = sdpa(q, k, v, mask, 0.2)
    torch.manual_seed(5)
    kept = keep_mask((2, 3, 7, 7), 0.2)
    weights = (q @ k.transpose(-2, -1) / 8**0.5).masked_fill(~mask, float("-inf")).softmax(-1)
    expected = torch.where(kept, weights / (1 - round(0.2 * 65536) / 65536), 0.0) @ v
    torch.testing.assert_close(out, expected)
    # without dropout it is PyTorch's SDPA
    torch.testing.assert_close(sdpa(q, k, v, mask), F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
