import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from omni.dropout import dropout as omni_dropout
from omni.transformer import Attention, Transformer, TransformerConfig


def naive_attention(q, k, v, mask):
    """Reference: softmax over allowed keys; a row with none gives zeros."""
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return weights @ v


def test_config_rejects_unknown_and_missing_keys():
    with pytest.raises(ValueError, match="unknown keys \\['dpeth'\\]"):
        TransformerConfig.from_dict({"dim": 32, "depth": 2, "heads": 4, "dpeth": 3})
    with pytest.raises(ValueError, match="missing required keys \\['heads'\\]"):
        TransformerConfig.from_dict({"dim": 32, "depth": 2})
    with pytest.raises(ValueError, match="heads"):
        TransformerConfig(dim=30, depth=2, heads=4)
    with pytest.raises(ValueError, match="norm"):
        TransformerConfig(dim=32, depth=2, heads=4, norm="batchnorm")


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 12), m=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_attention_matches_naive_reference_and_empty_rows_are_zero(n, m, seed):
    torch.manual_seed(seed)
    attn = Attention(16, 2, cross=True).eval()
    x, ctx = torch.randn(2, n, 16), torch.randn(2, m, 16)
    mask = torch.rand(2, n, m) < 0.5
    mask[0, 0] = False  # at least one query with no key at all
    out = attn(x, mask, context=ctx)
    q = attn.q(x).view(2, n, 2, 8).transpose(1, 2)
    k, v = attn.kv(ctx).view(2, m, 2, 2, 8).permute(2, 0, 3, 1, 4)
    ref = attn.proj(naive_attention(q, k, v, mask.unsqueeze(1)).transpose(1, 2).reshape(2, n, 16))
    empty = ~mask.any(-1)
    ref = torch.where(empty.unsqueeze(-1), attn.proj.bias.expand_as(ref), ref)  # zero mix, then the projection
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(out).all()


def test_query_without_keys_has_finite_gradients():
    trunk = Transformer(TransformerConfig(dim=16, depth=2, heads=2))
    x = torch.randn(2, 5, 16, requires_grad=True)
    mask = torch.ones(2, 5, 5, dtype=torch.bool)
    mask[:, 2] = False
    trunk(x, mask).square().sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in trunk.parameters() if p.grad is not None)


def causal(n):
    return torch.ones(n, n, dtype=torch.bool).tril()


@pytest.mark.parametrize("cross", [False, True])
@pytest.mark.parametrize("qk_norm", [False, True])
def test_cached_decoding_equals_full_recomputation(cross, qk_norm):
    torch.manual_seed(0)
    cfg = TransformerConfig(dim=32, depth=3, heads=4, cross_attention=cross, qk_norm=qk_norm)
    trunk = Transformer(cfg).eval()
    b, n = 2, 9
    x = torch.randn(b, n, 32)
    ctx = torch.randn(b, 7, 32) if cross else None
    ctx_pad = torch.tensor([[True] * 7, [True] * 4 + [False] * 3]) if cross else None
    full = trunk(x, causal(n).expand(b, n, n), context=ctx, context_pad=ctx_pad)

    def rows(start, stop):  # the causal mask rows of new tokens start..stop-1 against every key so far
        return causal(n)[start:stop, :stop].expand(b, -1, -1)

    cache = trunk.new_cache()
    prefill = 4  # a multi-token prefill, then one token at a time
    outs = [trunk(x[:, :prefill], rows(0, prefill), context=ctx, context_pad=ctx_pad, cache=cache)]
    for t in range(prefill, n):
        context = ctx if t == prefill else None  # the context is read once, then held by the cache
        outs.append(trunk(x[:, t : t + 1], rows(t, t + 1), context=context, context_pad=ctx_pad, cache=cache))
    assert cache.length == n
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=1e-5, rtol=1e-5)


def test_cache_holds_the_context_and_reorders_with_the_batch():
    torch.manual_seed(0)
    trunk = Transformer(TransformerConfig(dim=16, depth=2, heads=2, cross_attention=True)).eval()
    x, ctx = torch.randn(2, 5, 16), torch.randn(2, 3, 16)
    ctx_pad = torch.tensor([[True, True, True], [True, False, False]])
    full = trunk(x, causal(5).expand(2, 5, 5), context=ctx, context_pad=ctx_pad)
    cache = trunk.new_cache(ctx, ctx_pad)  # cross-attention keys/values computed once, here
    cache.expand(2)  # rows 0, 0, 1, 1
    cache.reorder(torch.tensor([3, 0]))  # rows 1, 0
    outs = [trunk(x[[1, 0], t : t + 1], causal(5)[t : t + 1, : t + 1].expand(2, 1, -1), cache=cache) for t in range(5)]
    torch.testing.assert_close(torch.cat(outs, dim=1), full[[1, 0]], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="no cross-attention"):
        Transformer(TransformerConfig(dim=16, depth=1, heads=2))(x, context=ctx)
    with pytest.raises(ValueError, match="expected a \\(B, M, D\\) context"):
        trunk(x)
    with pytest.raises(ValueError, match="context_pad: expected"):
        trunk(x, context=ctx, context_pad=ctx_pad[:, :2])


def test_padded_key_changes_no_real_output():
    torch.manual_seed(0)
    trunk = Transformer(TransformerConfig(dim=16, depth=2, heads=2)).eval()
    x = torch.randn(1, 6, 16)
    pad = torch.tensor([[True, True, True, True, False, False]])
    mask = pad.unsqueeze(1).expand(1, 6, 6)
    y1 = trunk(x, mask)
    x2 = x.clone()
    x2[:, 4:] = torch.randn(1, 2, 16) * 100
    y2 = trunk(x2, mask)
    torch.testing.assert_close(y1[:, :4], y2[:, :4])
    # and equal to running the real tokens alone
    torch.testing.assert_close(y1[:, :4], trunk(x[:, :4]), atol=1e-5, rtol=1e-5)


def test_per_layer_masks_and_errors():
    trunk = Transformer(TransformerConfig(dim=16, depth=2, heads=2)).eval()
    x = torch.randn(1, 4, 16)
    full = torch.ones(1, 4, 4, dtype=torch.bool)
    torch.testing.assert_close(trunk(x, [full, full]), trunk(x))
    assert not torch.allclose(trunk(x, [causal(4)[None], full]), trunk(x))
    with pytest.raises(ValueError, match="one mask per layer"):
        trunk(x, [full])
    with pytest.raises(ValueError, match="x: expected"):
        trunk(torch.randn(1, 4, 8))
    with pytest.raises(ValueError, match="mask: expected"):
        trunk(x, torch.ones(1, 3, 3, dtype=torch.bool))


@pytest.mark.parametrize("mlp_dropout", [None, 0.0, 0.3])
def test_mlp_dropout_drops_the_hidden_units_only_when_asked(mlp_dropout):
    """``mlp_dropout`` rules the MLP's hidden units (None: ``dropout``, as timm's ViT; 0: GPT-2's MLP); the output
    projection is always dropped at ``dropout``. Checked against the MLP written out with the same random draws."""
    cfg = TransformerConfig(dim=8, depth=1, heads=1, dropout=0.5, mlp_dropout=mlp_dropout)
    mlp = Transformer(cfg).blocks[0].mlp.train()
    x = torch.randn(3, 5, 8)
    torch.manual_seed(0)
    out = mlp(x)
    torch.manual_seed(0)
    p = 0.5 if mlp_dropout is None else mlp_dropout
    h = omni_dropout(mlp.act(mlp.fc1(x)), p, training=True)
    ref = omni_dropout(mlp.fc2(h), 0.5, training=True)
    torch.testing.assert_close(out, ref)
    with pytest.raises(ValueError, match="mlp_dropout"):
        TransformerConfig(dim=8, depth=1, heads=1, mlp_dropout=1.5)
