"""Packing: a packed forward equals per-sample forwards, on every attention path, for any modality mix."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from omni.model import OmniModel
from omni.tokenizers import ImagePatchTokenizer, MelSpectrogramTokenizer, SensorTokenizer
from omni.tokens import META, Tokens, pack, unpack, unpack_items
from omni.transformer import TransformerConfig

D = 32


def model(attention: str, masks=("local", "global")) -> OmniModel:
    torch.manual_seed(0)
    cfg = TransformerConfig(
        dim=D,
        depth=2,
        heads=4,
        masks=list(masks),
        mask_defs={"local": "local(radius=2) | global_tokens()", "global": "full"},
        attention=attention,
    )
    return OmniModel(
        tokenizers={
            "image": ImagePatchTokenizer(D, patch_size=4, in_chans=3, img_size=16),
            "audio": MelSpectrogramTokenizer(D),
            "radar": SensorTokenizer(D, in_features=4, name="radar"),
        },
        trunk=cfg,
        extra_tokens={"cls": 1},
    ).eval()


def samples(m: OmniModel) -> list[Tokens]:
    """Single samples of different modality mixes and lengths, tokenized by the model (batch size 1 each)."""
    g = torch.Generator().manual_seed(1)
    raw = [
        {"image": torch.randn(1, 3, 16, 16, generator=g)},
        {"audio": torch.randn(1, 4800, generator=g) * 0.1},
        {"image": torch.randn(1, 3, 8, 16, generator=g), "radar": {"x": torch.randn(1, 7, 4, generator=g)}},
        {"audio": torch.randn(1, 1600, generator=g) * 0.1, "radar": {"x": torch.randn(1, 3, 4, generator=g)}},
        {"radar": {"x": torch.randn(1, 5, 4, generator=g)}},
    ]
    return [m.tokenize(r)[0] for r in raw]


@pytest.mark.parametrize("attention", ["dense", "sparse", "flex"])
def test_packed_forward_equals_per_sample_forwards(attention):
    m = model(attention)
    items = samples(m)
    lengths = [t.num_tokens for t in items]
    packed, info = pack(items, max_len=max(lengths) + 20)
    assert info.num_rows < len(items)  # samples really share rows
    with torch.no_grad():
        out = unpack(m.mix(packed).x, info)
        for i, t in enumerate(items):
            alone = m.mix(t).x[0]
            torch.testing.assert_close(out[i], alone, atol=1e-5, rtol=1e-5)


def test_packed_gradients_equal_per_sample_gradients_on_the_sparse_path():
    m = model("sparse")
    items = samples(m)
    packed, info = pack(items, max_len=160)
    loss_packed = sum(o.square().mean() for o in unpack(m.mix(packed).x, info))
    g_packed = torch.autograd.grad(loss_packed, list(m.trunk.parameters()))
    loss_alone = sum(m.mix(t).x[0].square().mean() for t in items)
    g_alone = torch.autograd.grad(loss_alone, list(m.trunk.parameters()))
    for a, b in zip(g_packed, g_alone, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_pack_is_greedy_whole_samples_and_rejects_too_long():
    items = [Tokens.create(torch.randn(1, n, 4)) for n in (5, 3, 4, 2)]
    packed, info = pack(items, max_len=7)
    assert info.num_rows == 2  # first-fit, longest first: [5, 2] and [4, 3]
    assert packed.pad.sum().item() == 14
    for r in range(info.num_rows):  # samples in a row are numbered 0, 1, ... and positions restart per sample
        ids = packed.sample[r][packed.pad[r]].unique().tolist()
        assert ids == list(range(len(ids)))
    with pytest.raises(ValueError, match="max_len=4"):
        pack(items, max_len=4)
    with pytest.raises(ValueError, match="unpack: expected x of shape"):
        unpack(torch.zeros(3, 7, 4), info)


def test_schedule_layers_get_their_own_masks_and_paths_agree():
    m_dense, m_sparse = model("dense"), model("sparse")
    items = samples(m_dense)
    packed, _ = pack(items, max_len=200)
    plans = m_dense.attention_plans(packed, "dense")
    assert not torch.equal(plans[0], plans[1])  # local layer vs global layer
    with torch.no_grad():
        torch.testing.assert_close(m_dense.mix(packed).x, m_sparse.mix(packed).x, atol=1e-5, rtol=1e-5)
    cfg = m_dense.trunk.config
    assert [type(x).__name__ for x in cfg.layer_masks()] == ["Or", "Full"]
    with pytest.raises(ValueError, match="TransformerConfig.masks\\[0\\]"):
        TransformerConfig(dim=8, depth=2, heads=2, masks=["lokal"])
    with pytest.raises(ValueError, match="TransformerConfig.mask_defs.a"):
        TransformerConfig(dim=8, depth=2, heads=2, masks=["a"], mask_defs={"a": "local(r=1)"})


def reference_pack(items: list[Tokens], max_len: int) -> Tokens:
    """Packing the slow, obvious way: every sample's real tokens cut out one by one, placed first-fit longest first,
    numbered within their row, rows padded and stacked."""
    samples = []
    for t in items:
        for r in range(t.batch_size):
            keep = t.pad[r]
            samples.append(Tokens(x=t.x[r : r + 1, keep], **{k: v[r : r + 1, keep] for k, v in t.meta().items()}))
    free: list[int] = []
    rows: list[list[Tokens]] = []
    for i in sorted(range(len(samples)), key=lambda j: -samples[j].num_tokens):
        n = samples[i].num_tokens
        row = next((r for r, room in enumerate(free) if room >= n), None)
        if row is None:
            free.append(max_len), rows.append([])
            row = len(free) - 1
        free[row] -= n
        rows[row].append(samples[i].replace(sample=torch.full_like(samples[i].sample, len(rows[row]))))
    return Tokens.stack([Tokens.cat(parts).pad_to(max_len) for parts in rows])


@st.composite
def token_items(draw) -> list[Tokens]:
    """1-3 items of 1-4 rows, 1-9 tokens, random padding, coordinate widths 1-3, float32 or float64 embeddings."""
    items = []
    for k in range(draw(st.integers(1, 3))):
        b, n, p = draw(st.integers(1, 4)), draw(st.integers(1, 9)), draw(st.integers(1, 3))
        g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
        pad = torch.rand(b, n, generator=g) < draw(st.floats(0.3, 1.0))
        dtype = draw(st.sampled_from([torch.float32, torch.float64]))
        items.append(Tokens.create(
            torch.randn(b, n, 5, generator=g, dtype=dtype), modality=k, pos=torch.rand(b, n, p, generator=g),
            pad=pad, group=torch.randint(0, 4, (b, n), generator=g),
            is_global=torch.rand(b, n, generator=g) < 0.2,
        ))  # fmt: skip
    return items


@settings(max_examples=80, deadline=None)
@given(items=token_items(), extra=st.integers(0, 12))
def test_pack_puts_every_field_where_the_per_sample_reference_does_and_unpack_items_returns_each_items_layout(
    items, extra
):
    max_len = max(1, max(int(t.pad.sum(1).max()) for t in items) + extra)
    packed, info = pack(items, max_len)
    want = reference_pack(items, max_len)
    assert packed.x.dtype == want.x.dtype and packed.x.shape == want.x.shape
    torch.testing.assert_close(packed.x, want.x, rtol=0, atol=0)
    for f in META:
        torch.testing.assert_close(getattr(packed, f.name), getattr(want, f.name), rtol=0, atol=0)
    back = unpack_items(packed.x, info)
    for t, x in zip(items, back, strict=True):
        torch.testing.assert_close(x, torch.where(t.pad[..., None], t.x, 0).to(x.dtype), rtol=0, atol=0)
    per_sample = unpack(packed.x, info)  # the same samples, one by one, in the items' order
    assert torch.cat(per_sample).shape[0] == sum(int(t.pad.sum()) for t in items)


def test_gradients_flow_through_pack_and_unpack_items_to_every_real_token_and_no_padded_one():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 6, 4, generator=g, requires_grad=True)
    b = torch.randn(2, 4, 4, generator=g, requires_grad=True)
    pads = [torch.rand(3, 6, generator=g) < 0.7, torch.rand(2, 4, generator=g) < 0.7]
    items = [Tokens.create(a, pad=pads[0]), Tokens.create(b, pad=pads[1], modality=1)]
    packed, info = pack(items, max_len=8)
    out = unpack_items(packed.x * 2.0, info)
    (out[0].sum() + 3.0 * out[1].sum()).backward()
    torch.testing.assert_close(a.grad, 2.0 * pads[0][..., None].float().expand_as(a))
    torch.testing.assert_close(b.grad, 6.0 * pads[1][..., None].float().expand_as(b))


# ---------------------------------------------------------------------------------------------------- segments
@st.composite
def masked_items(draw) -> tuple[list[Tokens], list[torch.Tensor | None]]:
    """1-3 items of 1-4 samples (1-9 tokens, some padded or none), each with its own mask: random or None (all)."""
    items, masks = [], []
    for k in range(draw(st.integers(1, 3))):
        b, n = draw(st.integers(1, 4)), draw(st.integers(1, 9))
        g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
        pad = torch.rand(b, n, generator=g) < draw(st.sampled_from([0.5, 0.8, 1.0]))
        pad[:, 0] = pad[:, 0] | ~pad.any(1)  # a sample has a token
        items.append(Tokens.create(torch.randn(b, n, 8, generator=g), modality=k, pad=pad))
        masks.append(None if draw(st.booleans()) else (torch.rand(b, n, n, generator=g) < 0.6) & pad[:, None, :])
    return items, masks


@settings(max_examples=60, deadline=None)
@given(case=masked_items(), extra=st.integers(0, 6), stream=st.booleans())
def test_attention_sample_by_sample_in_packed_rows_equals_each_item_under_its_own_mask_with_gradients(
    case, extra, stream
):
    """Sample-by-sample attention, in rows (``segment_plan``) or in one stream (``stream_plan``: full samples as
    views, padded ones gathered; every gather has a gather backward), against each item attending in its own layout
    under its own mask: the same outputs at every real token and the same gradients of the weights and of every
    token, with padding in the items or none, unused slots in the rows or none."""
    from omni.attention.plans import segment_plan, stream_plan
    from omni.transformer import Attention

    items, masks = case
    torch.manual_seed(0)
    attn = Attention(8, 2, qk_norm=True)
    weights = [torch.randn(t.batch_size, t.num_tokens, 8) for t in items]
    max_len = max(int(t.pad.sum(1).max()) for t in items) + extra

    def run(packed: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        xs = [t.x.clone().requires_grad_(True) for t in items]
        attn.zero_grad(set_to_none=True)
        if packed:
            rows, info = pack([t.replace(x=x) for t, x in zip(items, xs, strict=True)], None if stream else max_len)
            plan = stream_plan(masks, info) if stream else segment_plan(masks, info)
            outs = unpack_items(attn(rows.x, plan), info)
        else:
            outs = [attn(x, t.pad[:, None, :].expand(-1, t.num_tokens, -1) if m is None else m)
                    for t, x, m in zip(items, xs, masks, strict=True)]  # fmt: skip
        real = [torch.where(t.pad[..., None], o, 0) for t, o in zip(items, outs, strict=True)]
        sum((r * w).sum() for r, w in zip(real, weights, strict=True)).backward()
        return [r.detach() for r in real], [x.grad for x in xs] + [p.grad for p in attn.parameters()]

    (got, got_grads), (want, want_grads) = run(True), run(False)
    for a, b in zip(got + got_grads, want + want_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@settings(max_examples=60, deadline=None)
@given(items=token_items())
def test_a_stream_holds_every_real_token_once_item_by_item_with_full_samples_first(items):
    """``pack(items, None)``: one row of exactly the real tokens, no padded slot; item after item, each item's samples
    longest first (its full-length ones first, in order); ``unpack_items`` gives every item its layout back."""
    packed, info = pack(items, None)
    total = sum(int(t.pad.sum()) for t in items)
    assert info.num_rows == 1 and packed.x.shape[:2] == (1, total) and bool(packed.pad.all())
    at = 0
    for t, back in zip(items, unpack_items(packed.x, info), strict=True):
        lengths = t.pad.sum(1).tolist()
        for i in sorted(range(t.batch_size), key=lambda j: -lengths[j]):
            torch.testing.assert_close(packed.x[0, at : at + lengths[i]], t.x[i][t.pad[i]].to(packed.x.dtype))
            at += lengths[i]
        torch.testing.assert_close(back, torch.where(t.pad[..., None], t.x, 0).to(back.dtype), rtol=0, atol=0)
    assert at == total
