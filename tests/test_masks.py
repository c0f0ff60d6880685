"""Masks: the dense mask equals a naive per-pair reference; every execution path equals the dense path."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omni import masks
from omni.attention.kernels import attend, masked_sdpa
from omni.attention.plans import BLOCK, PlanCache, choose_path, plan, sparse_plan
from omni.tokens import Tokens

# ---------------------------------------------------------------------------- random metadata and expressions


@st.composite
def metadata(draw, max_n=40, min_n=1):
    b = draw(st.integers(1, 2))
    n = draw(st.integers(min_n, max_n))
    p = draw(st.integers(1, 2))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    return Tokens.create(
        torch.zeros(b, n, 4),
        modality=torch.randint(0, 3, (b, n), generator=g),
        pos=torch.randint(0, 6, (b, n, p), generator=g).float(),
        group=torch.randint(0, 5, (b, n), generator=g).sort(-1).values,
        sample=torch.randint(0, 2, (b, n), generator=g).sort(-1).values,
        pad=torch.rand(b, n, generator=g) > 0.2,
        is_global=torch.rand(b, n, generator=g) > 0.9,
    )


def _leaf():
    return st.one_of(
        st.just((masks.full(), lambda m, i, j: True)),
        st.just((masks.causal(), lambda m, i, j: j <= i)),
        st.just((masks.causal(by="group"), lambda m, i, j: m["group"][j] <= m["group"][i])),
        st.integers(0, 3).map(
            lambda r: (
                masks.local(radius=r),
                lambda m, i, j: (
                    m["modality"][i] == m["modality"][j]
                    and max(abs(a - b) for a, b in zip(m["pos"][i], m["pos"][j], strict=True)) <= r
                ),
            )
        ),
        st.just((masks.same_modality(), lambda m, i, j: m["modality"][i] == m["modality"][j])),
        st.just((masks.same_sample(), lambda m, i, j: m["sample"][i] == m["sample"][j])),
        st.just((masks.global_tokens(), lambda m, i, j: m["is_global"][i] or m["is_global"][j])),
        st.integers(0, 2).map(
            lambda k: (
                masks.global_tokens(modalities=[k]),
                lambda m, i, j: m["is_global"][i] or m["is_global"][j] or k in (m["modality"][i], m["modality"][j]),
            )
        ),
    )


def _combine(children):
    pair = st.tuples(children, children)
    return st.one_of(
        pair.map(lambda ab: (ab[0][0] & ab[1][0], lambda m, i, j: ab[0][1](m, i, j) and ab[1][1](m, i, j))),
        pair.map(lambda ab: (ab[0][0] | ab[1][0], lambda m, i, j: ab[0][1](m, i, j) or ab[1][1](m, i, j))),
        children.map(lambda a: (~a[0], lambda m, i, j: not a[1](m, i, j))),
    )


expressions = st.recursive(_leaf(), _combine, max_leaves=4)


def naive(fn, tokens: Tokens) -> torch.Tensor:
    """Per-pair Python loops over plain lists: padding and sample boundaries always applied."""
    b, n = tokens.pad.shape
    out = torch.zeros(b, n, n, dtype=torch.bool)
    for r in range(b):
        m = {k: getattr(tokens, k)[r].tolist() for k in ("modality", "pos", "group", "sample", "pad", "is_global")}
        for i in range(n):
            for j in range(n):
                out[r, i, j] = fn(m, i, j) and m["pad"][j] and m["sample"][i] == m["sample"][j]
    return out


@settings(max_examples=60, deadline=None)
@given(tokens=metadata(), expr=expressions)
def test_dense_equals_naive_reference(tokens, expr):
    mask, fn = expr
    assert torch.equal(mask.dense(tokens), naive(fn, tokens))


# ---------------------------------------------------------------------------- paths


def qkv(tokens: Tokens, heads=2, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    b, n = tokens.pad.shape
    return [torch.randn(b, heads, n, d, generator=g).requires_grad_() for _ in range(3)]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tokens=metadata(max_n=300, min_n=100), expr=expressions)
def test_sparse_path_equals_dense_with_gradients_and_no_nan(tokens, expr):
    mask, _ = expr
    dense = mask.dense(tokens)
    q, k, v = qkv(tokens)
    ref = masked_sdpa(q, k, v, dense)
    grads_ref = torch.autograd.grad(ref.square().sum(), (q, k, v))
    plan_ = sparse_plan(mask, tokens)
    out = attend(q, k, v, plan_)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for g, gr in zip(grads, grads_ref, strict=True):
        assert torch.isfinite(g).all()
        # float32 sums in another order: gradients differ by ~1e-5 (a wrong mask moves them by orders more)
        torch.testing.assert_close(g, gr, atol=1e-4, rtol=1e-4)
    empty = ~dense.any(-1)  # (B, N): queries with nothing to attend output zeros
    assert (out.detach().transpose(1, 2)[empty] == 0).all()
    with torch.no_grad():  # inference takes another branch: reused buffers, outputs written in place
        out_inference = attend(q, k, v, plan_)
        again = attend(q, k, v, plan_)  # a second call reuses the buffers
    torch.testing.assert_close(out_inference, ref.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again, out_inference)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tokens=metadata(max_n=256, min_n=256), expr=expressions)
def test_flex_path_equals_dense_in_inference(tokens, expr):
    # One length for every example (B is 1 or 2): FlexAttention compiles at most twice (CPU: forward only).
    mask, _ = expr
    q, k, v = (t.detach() for t in qkv(tokens))
    with torch.no_grad():
        out = attend(q, k, v, mask.block_mask(tokens))
    ref = masked_sdpa(q, k, v, mask.dense(tokens))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_global_tokens_do_not_force_every_block():
    n, r = 4096, 64
    tokens = Tokens.create(
        torch.zeros(1, n, 4), pos=torch.arange(n).float()[:, None], is_global=torch.arange(n)[None] < 4
    )
    p = sparse_plan(masks.local(radius=r) | masks.global_tokens(), tokens)
    assert p.n_dense == 4  # the global queries run on their own
    # each block gathers its window (at most 128 + 2 * 64 keys) plus the 4 global keys, not 4,096
    assert p.kc <= BLOCK + 2 * r + 4
    assert p.gathered_fraction < 0.08  # (4,092 x 260 + 4 x 4,096) / 4,096²


def test_full_mask_without_padding_needs_no_mask_and_padding_is_never_dropped():
    t = Tokens.create(torch.zeros(1, 3, 2))
    assert plan(masks.full(), t, "dense") is None
    padded = Tokens.create(torch.zeros(1, 3, 2), pad=torch.tensor([[True, False, True]]))
    m = plan(masks.full(), padded, "dense")
    assert m is not None and not m[0, :, 1].any()
    packed = Tokens.create(torch.zeros(1, 3, 2), sample=torch.tensor([[0, 0, 1]]))
    assert plan(masks.full(), packed, "dense") is not None  # sample boundaries need a mask


def test_plan_cache_hits_on_equal_metadata_and_misses_on_changed():
    cache = PlanCache()
    t = Tokens.create(torch.randn(1, 300, 4), pos=torch.arange(300).float()[:, None])
    m = masks.local(radius=4)
    first = cache.get(m, t, "sparse")
    assert cache.get(m, t.replace(x=torch.randn(1, 300, 4)), "sparse") is first  # embeddings don't matter
    assert (cache.hits, cache.misses) == (1, 1)
    cache.get(m, t.replace(pos=t.pos * 2), "sparse")
    assert cache.misses == 2


def test_parse_builds_the_same_masks_and_rejects_anything_else():
    t = Tokens.create(
        torch.zeros(1, 6, 2), modality=torch.tensor([[0, 0, 1, 1, 0, 1]]), pos=torch.arange(6).float()[:, None]
    )
    parsed = masks.parse("(local(radius=1) & same_modality()) | ~causal(by='group') | global_tokens(modalities=[1])")
    built = (masks.local(radius=1) & masks.same_modality()) | ~masks.causal(by="group") | masks.global_tokens([1])
    assert torch.equal(parsed.dense(t), built.dense(t))
    assert parsed == built  # frozen dataclasses: equal expressions share cache entries
    with pytest.raises(ValueError, match="unknown name 'os'"):
        masks.parse("os")
    with pytest.raises(ValueError, match="unsupported syntax"):
        masks.parse("__import__('os').system('true')")
    with pytest.raises(ValueError, match="bad arguments to local"):
        masks.parse("local(radius=1, size=2)")
    with pytest.raises(ValueError, match="local.radius"):
        masks.parse("local(radius=-1)")
    with pytest.raises(ValueError, match="causal.by"):
        masks.causal(by="time")


def test_global_tokens_by_name_binds_to_model_indices():
    m = masks.global_tokens(modalities=["trajectory"]).bind(["image", "trajectory.return", "trajectory.state", "cls"])
    assert m.indices == (1, 2)
    with pytest.raises(ValueError, match="global_tokens.modalities"):
        masks.global_tokens(modalities=["lidar"]).bind(["image"])


def test_a_mask_that_is_not_sparse_falls_back_to_dense():
    t = Tokens.create(torch.zeros(1, 300, 2), pad=torch.arange(300)[None] < 290)
    assert isinstance(plan(masks.full(), t, "sparse"), torch.Tensor)  # padding alone: nothing to skip
    long = Tokens.create(torch.zeros(1, 2000, 2), pos=torch.arange(2000.0)[:, None])
    assert not isinstance(plan(masks.local(radius=2), long, "sparse"), torch.Tensor)


def test_plan_cache_stays_within_its_byte_budget():
    cache = PlanCache(max_bytes=3 * 300 * 300)  # room for three (1, 300, 300) dense masks
    for shift in range(5):
        t = Tokens.create(
            torch.zeros(1, 300, 2), pos=torch.arange(300.0)[:, None] + shift, pad=torch.arange(300)[None] < 299
        )
        assert isinstance(cache.get(masks.local(radius=3), t, "dense"), torch.Tensor)
    assert cache.nbytes <= 3 * 300 * 300 and len(cache._plans) == 3
    big = Tokens.create(torch.zeros(1, 1000, 2), pad=torch.arange(1000)[None] < 999)
    assert cache.get(masks.full(), big, "dense").shape == (1, 1000, 1000)  # used, but too big to keep
    assert cache.nbytes <= 3 * 300 * 300


def test_auto_path_choice():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert choose_path("auto", 100, cpu, training=True) == "dense"  # short: dense everywhere
    assert choose_path("auto", 4096, cpu, training=True) == "sparse"
    assert choose_path("auto", 4096, cpu, training=False) == "sparse"  # measured faster than CPU flex
    assert choose_path("auto", 4096, cuda, training=True) == "flex"
    assert choose_path("flex", 100, cpu, training=False) == "flex"  # an explicit choice is kept


@pytest.mark.gpu
def test_flex_path_equals_dense_forward_and_backward_on_cuda():
    tokens = Tokens.create(
        torch.zeros(2, 512, 4),
        modality=torch.randint(0, 2, (2, 512)),
        pos=torch.arange(512.0)[:, None],
        pad=torch.rand(2, 512) > 0.1,
        is_global=torch.arange(512)[None].expand(2, -1) < 3,
    ).to("cuda")
    mask = (masks.local(radius=16) & masks.same_modality()) | masks.global_tokens()
    q, k, v = (torch.randn(2, 4, 512, 32, device="cuda", requires_grad=True) for _ in range(3))
    ref = masked_sdpa(q, k, v, mask.dense(tokens))
    grads_ref = torch.autograd.grad(ref.square().sum(), (q, k, v))
    out = attend(q, k, v, mask.block_mask(tokens))
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=2e-5)
    for g, gr in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, gr, atol=1e-4, rtol=1e-4)
