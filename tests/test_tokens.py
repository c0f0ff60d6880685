from dataclasses import fields

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from omni.tokens import META, Tokens, pack, unpack


def make(b=2, n=3, d=4, p=2, modality=0):
    return Tokens.create(torch.randn(b, n, d), modality=modality, pos=torch.rand(b, n, p))


@settings(max_examples=30, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    dims=st.lists(st.integers(1, 3), min_size=4, max_size=4),
)
def test_cat_joins_every_field_and_zero_pads_coordinates(lengths, dims):
    parts = [make(n=n, p=dims[i], modality=i) for i, n in enumerate(lengths)]
    joined = Tokens.cat(parts)
    assert joined.num_tokens == sum(lengths)
    assert joined.pos.shape[-1] == max(dims[: len(lengths)])
    start = 0
    for i, t in enumerate(parts):
        sl = slice(start, start + t.num_tokens)
        torch.testing.assert_close(joined.x[:, sl], t.x)
        assert (joined.modality[:, sl] == i).all()
        torch.testing.assert_close(joined.pos[:, sl, : t.pos.shape[-1]], t.pos)
        assert (joined.pos[:, sl, t.pos.shape[-1] :] == 0).all()
        start += t.num_tokens


def test_create_fills_neutral_metadata():
    t = Tokens.create(torch.randn(2, 5, 3))
    assert t.pad.all() and (t.group == 0).all() and (t.sample == 0).all() and (t.modality == 0).all()
    assert t.pos.shape == (2, 5, 1) and t.pos.dtype == torch.float32


def test_to_changes_only_the_embedding_dtype():
    t = make()
    t.pos[0, 0, 0] = 1.0 + 1e-3  # not representable in bfloat16
    moved = t.to(torch.bfloat16)
    assert moved.x.dtype == torch.bfloat16
    assert moved.pos.dtype == torch.float32 and moved.modality.dtype == torch.long and moved.pad.dtype == torch.bool
    assert torch.equal(moved.pos, t.pos)  # coordinates are not rounded through the new dtype


def test_invariants_raise_naming_the_field():
    t = make()
    with pytest.raises(ValueError, match="Tokens.pad: expected shape \\(2, 3\\)"):
        t.replace(pad=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="Tokens.modality: expected dtype torch.int64"):
        t.replace(modality=torch.zeros(2, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match="Tokens.x: expected a floating dtype"):
        t.replace(x=torch.zeros(2, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="Tokens.pos"):
        t.replace(pos=torch.zeros(2, 2, 2))
    with pytest.raises(ValueError, match="Tokens.x: expected a \\(B, N, D\\)"):
        Tokens.create(torch.zeros(3, 4))


def test_cat_rejects_mismatched_batches_and_widths():
    with pytest.raises(ValueError, match="batch size 2, got 3"):
        Tokens.cat([make(b=2), make(b=3)])
    with pytest.raises(ValueError, match="width D=4, got 5"):
        Tokens.cat([make(d=4), make(d=5)])
    with pytest.raises(ValueError, match="empty"):
        Tokens.cat([])


def test_getitem_selects_tokens():
    t = make(n=6)
    sub = t[2:4]
    assert sub.num_tokens == 2
    torch.testing.assert_close(sub.x, t.x[:, 2:4])


def full_metadata(b=2, n=5, p=2, seed=0) -> Tokens:
    """Tokens whose every metadata field holds non-default values."""
    g = torch.Generator().manual_seed(seed)
    return Tokens.create(
        torch.randn(b, n, 4, generator=g),
        modality=torch.randint(0, 3, (b, n), generator=g),
        pos=torch.rand(b, n, p, generator=g),
        pad=torch.rand(b, n, generator=g) > 0.3,
        group=torch.randint(0, 4, (b, n), generator=g),
        sample=torch.randint(0, 2, (b, n), generator=g),
        is_global=torch.rand(b, n, generator=g) > 0.7,
    )


def test_meta_schema_lists_every_field_but_x():
    assert [f.name for f in META] == [f.name for f in fields(Tokens) if f.name != "x"]
    t = Tokens.create(torch.zeros(1, 2, 3))
    for f in META:  # create fills each field with its schema default and dtype
        v = getattr(t, f.name)
        assert v.dtype == f.dtype and v.ndim == 2 + f.trailing and (v == f.default).all()


def test_every_meta_field_survives_cat_stack_pad_to_getitem_and_to():
    a, b = full_metadata(p=2, seed=1), full_metadata(n=3, p=1, seed=2)
    joined, stacked, padded = Tokens.cat([a, b]), Tokens.stack([a, b]), b.pad_to(6)
    for f in META:
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if f.trailing:  # b's narrower coordinates are widened with the pad value
            vb = torch.nn.functional.pad(vb, (0, 1), value=f.pad_value)
        assert torch.equal(getattr(joined, f.name), torch.cat([va, vb], dim=1))
        assert torch.equal(getattr(stacked, f.name)[:2], va)
        assert torch.equal(getattr(stacked, f.name)[2:, :3], vb)
        assert (getattr(padded, f.name)[:, 3:] == f.pad_value).all()
        assert torch.equal(getattr(a[1:4], f.name), va[:, 1:4])
        assert torch.equal(getattr(a.to(torch.float64), f.name), va)


def test_pack_joins_rows_of_different_coordinate_widths():
    wide = Tokens.create(torch.randn(1, 5, 4), pos=torch.rand(1, 5, 2))
    narrow = Tokens.create(torch.randn(1, 5, 4), pos=torch.rand(1, 5, 1))
    packed, info = pack([wide, narrow], max_len=6)  # one sample per row: rows of P = 2 and P = 1
    assert packed.pos.shape == (2, 6, 2)
    pos = unpack(packed.pos, info)
    torch.testing.assert_close(pos[0], wide.pos[0])
    torch.testing.assert_close(pos[1][:, :1], narrow.pos[0])
    assert (pos[1][:, 1] == 0).all()
