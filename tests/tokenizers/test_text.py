"""TextTokenizer: positions and padding, a step at an offset equals the slice of the full sequence, checks."""

from __future__ import annotations

import pytest
import torch

from omni.layers import sincos_1d
from omni.tokenizers import TextTokenizer

B, N, D, V = 2, 6, 16, 11
ONES = torch.ones(1, 4, dtype=torch.long)


def ids(b: int = B, n: int = N) -> torch.Tensor:
    return torch.randint(1, V, (b, n), generator=torch.Generator().manual_seed(0))


@pytest.fixture(params=["learned", "sincos"])
def tok(request) -> TextTokenizer:
    torch.manual_seed(0)
    return TextTokenizer(D, vocab_size=V, max_len=16, pos_embed=request.param)


def test_shapes_positions_and_embedding(tok):
    x = ids()
    out = tok(x)
    assert out.x.shape == (B, N, D) and out.pos.shape == (B, N, 1)
    index = torch.arange(N)
    assert torch.equal(out.group, index.expand(B, N)) and torch.equal(out.pos[..., 0], index.float().expand(B, N))
    assert out.pad.all() and out.modality.eq(0).all()
    pos = tok.pos_embed[:N] if tok.pos_embed_kind == "learned" else sincos_1d(index, D)
    torch.testing.assert_close(out.x, tok.embed(x) + pos)


def test_same_id_differs_only_by_position(tok):
    out = tok(torch.full((1, 4), 5))
    assert not torch.allclose(out.x[0, 0], out.x[0, 1])


def test_a_step_at_an_offset_equals_the_slice_of_the_full_sequence(tok):
    x = ids()
    full = tok(x)
    part = tok(x[:, 4:], start=4)
    for field in ("x", "pos", "group", "pad"):
        torch.testing.assert_close(getattr(part, field), getattr(full, field)[:, 4:])


def test_padding_from_pad_id_mask_or_lengths(tok):
    x = ids()
    x[0, 4:] = 0
    assert torch.equal(tok(x).pad[0], torch.tensor([True] * 4 + [False] * 2)) and tok(x).pad[1].all()
    mask = torch.tensor([[True, True, False, False, False, False], [True] * 6])
    assert torch.equal(tok(x, mask=mask).pad, mask)  # mask wins over pad_id
    assert torch.equal(tok(x, lengths=torch.tensor([2, 6])).pad, mask)
    no_pad = TextTokenizer(D, vocab_size=V, pad_id=None)
    assert no_pad(x).pad.all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ids": torch.zeros(2, 3, 1).long()}, r"ids: expected a 2-D tensor \(B, N\), got shape \(2, 3, 1\)"),
        ({"ids": torch.zeros(2, 3)}, "ids: expected an integer dtype, got torch.float32"),
        ({"ids": torch.tensor([[1, 11]])}, r"ids: expected ids in \[0, vocab_size=11\), got min 1, max 11"),
        ({"ids": torch.tensor([[-1, 2]])}, "got min -1, max 2"),
        ({"ids": torch.ones(1, 17, dtype=torch.long)}, "ids: expected start \\+ N <= max_len=16, got start=0, N=17"),
        ({"ids": ONES, "start": 13}, "got start=13, N=4"),
        ({"ids": ONES, "start": -1}, "start: expected a non-negative int"),
        ({"ids": ONES, "mask": torch.ones(1, 3).bool()}, r"mask: expected shape \(1, 4\)"),
        ({"ids": ONES, "mask": torch.ones(1, 4)}, "mask: expected a bool dtype"),
        ({"ids": ONES, "lengths": torch.tensor([5])}, r"lengths: expected values in \[0, N=4\]"),
        ({"ids": torch.ones(2, 4, dtype=torch.long), "lengths": torch.tensor([1])}, "lengths: expected size 2"),
        ({"ids": ONES, "lengths": torch.tensor([1]), "mask": ONES.bool()}, "expected either mask or lengths, got both"),
    ],
)  # fmt: skip
def test_bad_input_names_the_field(kwargs, match):
    tok = TextTokenizer(D, vocab_size=V, max_len=16)
    with pytest.raises(ValueError, match=match):
        tok(**kwargs)


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="vocab_size: expected a positive int, got 0"):
        TextTokenizer(D, vocab_size=0)
    with pytest.raises(ValueError, match=r"pad_id: expected an id in \[0, vocab_size=5\) or None, got 5"):
        TextTokenizer(D, vocab_size=5, pad_id=5)
    with pytest.raises(ValueError, match="pos_embed: expected one of 'learned', 'sincos', got 'rope'"):
        TextTokenizer(D, vocab_size=5, pos_embed="rope")
    with pytest.raises(ValueError, match="dim: expected an even width for pos_embed='sincos', got 15"):
        TextTokenizer(15, vocab_size=5, pos_embed="sincos")
