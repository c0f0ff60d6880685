"""Attention under CPU autocast: the fused kernel runs in float32 (its bf16 backward is ~10x slower on the CPU), and
the result comes back in the dtype autocast chose, close to a float32 run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from omni.attention import kernels
from omni.transformer import Transformer, TransformerConfig


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[torch.dtype, bool]]:
    """Records (query dtype, CPU autocast on?) for every call of the fused kernel."""
    calls: list[tuple[torch.dtype, bool]] = []
    real = F.scaled_dot_product_attention

    def record(q, *args, **kwargs):
        calls.append((q.dtype, torch.is_autocast_enabled("cpu")))
        return real(q, *args, **kwargs)

    monkeypatch.setattr(kernels.F, "scaled_dot_product_attention", record)
    return calls


@pytest.mark.parametrize("masked", [False, True])
def test_sdpa_under_cpu_autocast_runs_float32_and_returns_bf16(spy, masked):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8, requires_grad=True) for _ in range(3))
    mask = torch.rand(2, 1, 7, 7) < 0.7 if masked else None
    if mask is not None:
        mask[..., 0] = True  # every query keeps a key
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = kernels.sdpa(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask)
    assert out.dtype == torch.bfloat16
    assert spy == [(torch.float32, False)]
    want = F.scaled_dot_product_attention(q.bfloat16().float(), k.bfloat16().float(), v.bfloat16().float(), mask)
    torch.testing.assert_close(out.float(), want, atol=1e-2, rtol=1e-2)
    out.float().square().sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (q, k, v))


def test_bf16_inputs_without_autocast_keep_their_dtype(spy):
    q = torch.randn(1, 2, 5, 4, dtype=torch.bfloat16)
    out = kernels.sdpa(q, q, q)
    assert out.dtype == torch.bfloat16 and spy == [(torch.float32, False)]
    plain = kernels.sdpa(q.float(), q.float(), q.float())  # float32 in, no autocast: the kernel as it is
    assert plain.dtype == torch.float32 and spy[-1] == (torch.float32, False)


def test_a_trunk_under_cpu_autocast_matches_float32_with_gradients(spy):
    torch.manual_seed(0)
    trunk = Transformer(TransformerConfig(dim=32, depth=2, heads=4))
    x = torch.randn(3, 10, 32)
    ref = trunk(x)
    ref_grads = torch.autograd.grad(ref.square().mean(), list(trunk.parameters()))
    spy.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = trunk(x)
    assert spy and all(call == (torch.float32, False) for call in spy)
    torch.testing.assert_close(out.float(), ref, atol=0.1, rtol=0.05)
    grads = torch.autograd.grad(out.float().square().mean(), list(trunk.parameters()))
    got, want = torch.cat([g.flatten().float() for g in grads]), torch.cat([r.flatten() for r in ref_grads])
    assert torch.isfinite(got).all()
    assert F.cosine_similarity(got, want, dim=0) > 0.98  # bf16 matmuls: close in direction, not to the bit


def test_float64_under_autocast_stays_float64(spy):
    """Autocast leaves float64 alone, and so does the float32 detour."""
    q = torch.randn(1, 2, 5, 4, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = kernels.sdpa(q, q, q)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, q, q))
