"""Fuzzing every tokenizer and the heads' user-facing inputs with arbitrary tensors (any rank, sizes including 0,
any dtype, NaN / inf): the only accepted outcomes are a correct output or a ``ValueError`` — never a shape error
from inside torch, never NaN out of finite in, never a silent garbage shape."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omni.heads.action import ActionHead
from omni.heads.ctc import CTCHead
from omni.tokenizers import (
    ImagePatchTokenizer,
    MelSpectrogramTokenizer,
    SensorTokenizer,
    TextTokenizer,
    TrajectoryTokenizer,
)
from omni.tokens import Tokens

D = 16
DTYPES = [torch.float32, torch.float64, torch.float16, torch.int64, torch.int32, torch.uint8, torch.bool]


@st.composite
def tensors(draw, max_rank: int = 5, max_size: int = 9, near: tuple[int, ...] | None = None) -> torch.Tensor:
    """Any tensor of at most 20,000 elements; with ``near``, the shape is ``near`` with a few sizes changed (so checks
    past the rank are hit)."""
    if near is not None and draw(st.booleans()):
        shape = list(near)
        for _ in range(draw(st.integers(0, 2))):
            shape[draw(st.integers(0, len(shape) - 1))] = draw(st.integers(0, max_size))
    else:
        rank = draw(st.integers(0, max_rank))
        shape = [draw(st.integers(0, max_size)) for _ in range(rank)]
    while math.prod(shape) > 20_000:  # keep memory bounded: shrink the largest size
        shape[shape.index(max(shape))] //= 2
    dtype = draw(st.sampled_from(DTYPES))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    if dtype == torch.bool:
        t = torch.rand(shape, generator=g) > 0.5
    elif dtype.is_floating_point:
        t = (torch.randn(shape, generator=g) * draw(st.sampled_from([1e-3, 1.0, 1e3]))).to(dtype)
        if t.numel() and draw(st.booleans()):
            t.view(-1)[draw(st.integers(0, t.numel() - 1))] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    else:
        t = torch.randint(0, 50, shape, generator=g).to(dtype)
    return t


def _finite_in(*ts: torch.Tensor | None) -> bool:
    return all(t is None or not t.is_floating_point() or bool(torch.isfinite(t).all()) for t in ts)


def check_tokens(out: Tokens, batch: int, *inputs: torch.Tensor | None) -> None:
    assert isinstance(out, Tokens)
    assert out.x.ndim == 3 and out.x.shape[0] == batch and out.x.shape[2] == D
    if _finite_in(*inputs):
        assert bool(torch.isfinite(out.x).all()), "finite input gave a non-finite token"


def outcome(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, or None when it raised a ValueError (the only failure the tests accept)."""
    try:
        return fn(*args)
    except ValueError:
        return None


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(images=tensors(near=(2, 3, 8, 8)))
def test_image_tokenizer(images) -> None:
    tok = ImagePatchTokenizer(D, patch_size=4, in_chans=3, img_size=8)
    out = outcome(tok, images)
    if out is None:
        return
    check_tokens(out, images.shape[0], images)


@FUZZ
@given(audio=tensors(max_rank=3, max_size=3000, near=(2, 1600)), lengths=st.none() | tensors(max_rank=2, near=(2,)))
def test_audio_tokenizer(audio, lengths) -> None:
    tok = MelSpectrogramTokenizer(D)
    out = outcome(tok, audio, lengths)
    if out is None:
        return
    check_tokens(out, audio.shape[0], audio)


@FUZZ
@given(x=tensors(near=(2, 7, 5)), mask=st.none() | tensors(max_rank=3, near=(2, 7)))
def test_sensor_tokenizer_points(x, mask) -> None:
    tok = SensorTokenizer(D, in_features=5, coord_dims=2, name="radar")
    out = outcome(tok, x, mask)
    if out is None:
        return
    check_tokens(out, x.shape[0], x)


@FUZZ
@given(ids=tensors(max_rank=3, near=(2, 6)), mask=st.none() | tensors(max_rank=3, near=(2, 6)))
def test_text_tokenizer(ids, mask) -> None:
    tok = TextTokenizer(D, vocab_size=50, max_len=16)
    out = outcome(tok, ids, mask)
    if out is None:
        return
    check_tokens(out, ids.shape[0])


@FUZZ
@given(
    rtg=tensors(max_rank=4, near=(2, 4, 1)),
    states=tensors(max_rank=4, near=(2, 4, 5)),
    actions=tensors(max_rank=4, near=(2, 4, 3)),
    timesteps=tensors(max_rank=3, near=(2, 4)),
    mask=st.none() | tensors(max_rank=3, near=(2, 4)),
)
def test_trajectory_tokenizer(rtg, states, actions, timesteps, mask) -> None:
    tok = TrajectoryTokenizer(D, state_dim=5, act_dim=3, max_timestep=100)
    out = outcome(tok, rtg, states, actions, timesteps, mask)
    if out is None:
        return
    assert out.x.shape[1] == 3 * states.shape[1]
    check_tokens(out, states.shape[0], rtg, states, actions)


@FUZZ
@given(pred=tensors(max_rank=4, near=(2, 4, 3)), target=tensors(max_rank=4, near=(2, 4, 3)),
       mask=st.none() | tensors(max_rank=3, near=(2, 4)))  # fmt: skip
def test_action_head_loss(pred, target, mask) -> None:
    head = ActionHead(D, act_dim=3)
    loss = outcome(head.loss, pred, target, mask)
    if loss is None:
        return
    assert loss.ndim == 0
    if _finite_in(pred, target):
        assert bool(torch.isfinite(loss))


@FUZZ
@given(
    log_probs=tensors(max_rank=4, near=(2, 12, 6)),
    lengths=tensors(max_rank=2, near=(2,)),
    targets=tensors(max_rank=3, near=(2, 3)),
    target_lengths=tensors(max_rank=2, near=(2,)),
)
def test_ctc_loss(log_probs, lengths, targets, target_lengths) -> None:
    loss = outcome(CTCHead.loss, log_probs, lengths, targets, target_lengths)
    if loss is None:
        return
    assert loss.ndim == 0 and bool(torch.isfinite(loss))


def test_the_fuzzer_reaches_the_happy_path() -> None:
    """The strategies are not all-reject: well-formed inputs pass every tokenizer (so the tests above can fail)."""
    torch.manual_seed(0)
    check_tokens(ImagePatchTokenizer(D, patch_size=4, in_chans=3, img_size=8)(torch.randn(2, 3, 8, 8)), 2)
    check_tokens(MelSpectrogramTokenizer(D)(torch.randn(2, 1600) * 0.1), 2)
    check_tokens(TrajectoryTokenizer(D, 5, 3)(torch.rand(2, 4, 1), torch.randn(2, 4, 5), torch.rand(2, 4, 3),
                                              torch.arange(4).repeat(2, 1)), 2)  # fmt: skip
    with pytest.raises(ValueError, match="states: expected finite values, got NaN"):
        TrajectoryTokenizer(D, 5, 3)(torch.rand(2, 4, 1), torch.full((2, 4, 5), math.nan), torch.rand(2, 4, 3),
                                     torch.arange(4).repeat(2, 1))  # fmt: skip
