import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from omni import masks
from omni.tokens import Tokens


def tokens_from(groups, pad):
    n = len(groups)
    return Tokens.create(torch.zeros(1, n, 2), group=torch.tensor([groups]), pad=torch.tensor([pad], dtype=torch.bool))


def reference(expr_name, groups, pad):
    """Naive per-pair loops."""
    n = len(groups)
    out = torch.zeros(1, n, n, dtype=torch.bool)
    for i in range(n):
        for j in range(n):
            ok = {
                "full": True,
                "causal": j <= i,
                "causal_group": groups[j] <= groups[i],
                "not_causal": not (j <= i),
                "causal_or_group": (j <= i) or (groups[j] <= groups[i]),
                "causal_and_group": (j <= i) and (groups[j] <= groups[i]),
            }[expr_name]
            out[0, i, j] = ok and pad[j]
    return out


EXPRS = {
    "full": masks.full(),
    "causal": masks.causal(),
    "causal_group": masks.causal(by="group"),
    "not_causal": ~masks.causal(),
    "causal_or_group": masks.causal() | masks.causal(by="group"),
    "causal_and_group": masks.causal() & masks.causal(by="group"),
}


@settings(max_examples=40, deadline=None)
@given(
    data=st.lists(st.tuples(st.integers(0, 4), st.booleans()), min_size=1, max_size=12),
    name=st.sampled_from(sorted(EXPRS)),
)
def test_dense_equals_naive_reference(data, name):
    groups = sorted(g for g, _ in data)
    pad = [p for _, p in data]
    dense = EXPRS[name].dense(tokens_from(groups, pad))
    assert torch.equal(dense, reference(name, groups, pad))


def test_full_mask_without_padding_takes_the_fast_path_and_padding_never_drops():
    t = tokens_from([0, 0, 0], [True, True, True])
    assert masks.to_attn_mask(masks.full(), t) is None
    padded = tokens_from([0, 0, 0], [True, False, True])
    m = masks.to_attn_mask(masks.full(), padded)
    assert m is not None and not m[0, :, 1].any()
    assert masks.to_attn_mask(masks.causal(), t) is not None


def test_names_and_errors():
    assert isinstance(masks.from_name("causal_group"), masks.Causal)
    with pytest.raises(ValueError, match="mask: expected one of"):
        masks.from_name("sliding")
    with pytest.raises(ValueError, match="causal.by"):
        masks.causal(by="time")
