"""CTCHead: log-probabilities over one tokenizer's span; the loss is torch's CTC loss (checked by hand on tiny
cases), padded frames and labels never change it, and an unalignable target gives 0, not inf or NaN."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from omni.heads import CTCHead
from omni.model import OmniModel
from omni.tokenizers import SensorTokenizer
from omni.transformer import TransformerConfig

D, V = 16, 5


def test_log_probs_cover_the_tokenizers_span_and_lengths_count_real_frames():
    torch.manual_seed(0)
    model = OmniModel(
        tokenizers={"cam": SensorTokenizer(D, in_features=2), "audio": SensorTokenizer(D, in_features=3)},
        trunk=TransformerConfig(dim=D, depth=1, heads=2),
        heads={"ctc": CTCHead(D, vocab_size=V, tokenizer="audio")},
        extra_tokens={"cls": 1},
    )
    mask = torch.arange(6)[None] < torch.tensor([[6], [4]])
    out = model({"cam": torch.randn(2, 3, 2), "audio": {"x": torch.randn(2, 6, 3), "mask": mask}})
    span = out["output"].spans["audio"]
    assert span == slice(1 + 3, 1 + 3 + 6) and out["ctc"].shape == (2, 6, V) and out["ctc"].dtype == torch.float32
    head = model.heads["ctc"]
    torch.testing.assert_close(out["ctc"], head.fc(out["output"].tokens.x[:, span]).log_softmax(-1))
    assert head.lengths(out["output"]).tolist() == [6, 4]
    with pytest.raises(ValueError, match=r"tokenizer: expected 'audio' among the model output's spans, got \['cam'\]"):
        head(model({"cam": torch.randn(2, 3, 2)})["output"])


def test_the_loss_of_two_frames_by_hand():
    # Labels: 0 = blank, 1 = a, 2 = b. The alignments of "a" over two frames: aa, a-, -a; of "ab": ab only.
    p = torch.tensor([[0.5, 0.3, 0.2], [0.6, 0.1, 0.3]])
    lp = p.log()[None].expand(2, -1, -1)
    a = p[0, 1] * p[1, 1] + p[0, 1] * p[1, 0] + p[0, 0] * p[1, 1]
    ab = p[0, 1] * p[1, 2]
    each = CTCHead.loss(
        lp, torch.tensor([2, 2]), torch.tensor([[1, 0], [1, 2]]), torch.tensor([1, 2]), reduction="none"
    )
    torch.testing.assert_close(each, torch.stack([-a.log(), -ab.log()]))
    mean = CTCHead.loss(lp, torch.tensor([2, 2]), torch.tensor([[1, 0], [1, 2]]), torch.tensor([1, 2]))
    torch.testing.assert_close(mean, (-a.log() / 1 - ab.log() / 2) / 2)  # per utterance / target length, then mean
    # An empty target: every frame blank.
    empty = CTCHead.loss(lp[:1], torch.tensor([2]), torch.zeros(1, 0, dtype=torch.long), torch.tensor([0]))
    torch.testing.assert_close(empty, -(p[0, 0] * p[1, 0]).log())


def batch(seed: int, b: int = 4, n: int = 9, length: int = 4) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    log_probs = torch.randn(b, n, V, generator=g).log_softmax(-1)
    lengths = torch.randint(length + 1, n + 1, (b,), generator=g)
    targets = torch.randint(1, V, (b, length), generator=g)
    target_lengths = torch.randint(0, length + 1, (b,), generator=g)
    return log_probs, lengths, targets, target_lengths


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_the_loss_is_torchs_ctc_loss(reduction):
    log_probs, lengths, targets, target_lengths = batch(0)
    ref = F.ctc_loss(log_probs.transpose(0, 1), targets, lengths, target_lengths, reduction=reduction)
    torch.testing.assert_close(CTCHead.loss(log_probs, lengths, targets, target_lengths, reduction=reduction), ref)
    mask = torch.arange(targets.shape[1])[None] < target_lengths[:, None]
    torch.testing.assert_close(CTCHead.loss(log_probs, lengths, targets, mask, reduction=reduction), ref)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), extra_frames=st.integers(1, 4), extra_labels=st.integers(1, 3))
def test_padded_frames_and_labels_do_not_change_the_loss(seed, extra_frames, extra_labels):
    log_probs, lengths, targets, target_lengths = batch(seed)
    b, n, _ = log_probs.shape
    g = torch.Generator().manual_seed(seed + 1)
    padded_lp = torch.cat([log_probs, torch.randn(b, extra_frames, V, generator=g).log_softmax(-1)], dim=1)
    frame = torch.arange(n + extra_frames)[None, :, None] < lengths[:, None, None]
    padded_lp = torch.where(frame, padded_lp, torch.randn(padded_lp.shape, generator=g))  # garbage after the end
    padded_targets = torch.cat([targets, torch.full((b, extra_labels), -7)], dim=1)
    label = torch.arange(padded_targets.shape[1])[None] < target_lengths[:, None]
    padded_targets = padded_targets.masked_fill(~label, -7)  # not even a valid label after the end
    for reduction in ("mean", "none"):
        a = CTCHead.loss(log_probs, lengths, targets, target_lengths, reduction=reduction)
        z = CTCHead.loss(padded_lp, lengths, padded_targets, label, reduction=reduction)
        torch.testing.assert_close(a, z)


def test_a_target_longer_than_its_frames_gives_zero_not_nan():
    log_probs, lengths, targets, _ = batch(3, b=3, n=6, length=4)
    lengths = torch.tensor([6, 3, 6])  # row 1: 4 labels in 3 frames
    targets[2] = torch.tensor([2, 2, 2, 2])  # row 2: repeats need blanks between: 7 frames, it has 6
    log_probs.requires_grad_(True)
    each = CTCHead.loss(log_probs, lengths, targets, torch.tensor([4, 4, 4]), reduction="none")
    assert math.isfinite(each[0].item()) and each[0] > 0 and each[1:].eq(0).all()
    CTCHead.loss(log_probs, lengths, targets, torch.tensor([4, 4, 4])).backward()
    assert torch.isfinite(log_probs.grad).all() and log_probs.grad[1:].eq(0).all() and log_probs.grad[0].ne(0).any()


def test_bad_arguments_are_named():
    log_probs, lengths, targets, target_lengths = batch(4)
    with pytest.raises(ValueError, match=r"log_probs: expected a 3-D tensor \(B, N, V\), got shape \(4, 9\)"):
        CTCHead.loss(log_probs[..., 0], lengths, targets, target_lengths)
    with pytest.raises(ValueError, match=r"lengths: expected frame counts in \[0, N=9\], got min"):
        CTCHead.loss(log_probs, lengths + 9, targets, target_lengths)
    with_blank = targets.clone()
    with_blank[1, 0] = 0
    with pytest.raises(ValueError, match=r"targets: expected labels in \[0, V=5\) other than blank_id=0, got min 0"):
        CTCHead.loss(log_probs, lengths, with_blank, torch.full((4,), 4))
    with pytest.raises(ValueError, match=r"target_lengths: expected counts in \[0, L=4\], got min"):
        CTCHead.loss(log_probs, lengths, targets, target_lengths + 5)
    with pytest.raises(ValueError, match="target_lengths: expected a mask that is True on a prefix of each row"):
        CTCHead.loss(log_probs, lengths, targets, torch.tensor([[True, False, True, False]] * 4))
    with pytest.raises(ValueError, match="reduction: expected one of 'mean', 'sum', 'none', got 'token'"):
        CTCHead.loss(log_probs, lengths, targets, target_lengths, reduction="token")
    with pytest.raises(ValueError, match=r"blank_id: expected an id in \[0, vocab_size=5\), got 5"):
        CTCHead(D, V, blank_id=5)
