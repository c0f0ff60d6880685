"""TokenHead: logits over one tokenizer's span only; the loss ignores padded targets, by sequence or by token."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from omni.heads import TokenHead
from omni.model import OmniModel
from omni.tokenizers import SensorTokenizer, TextTokenizer
from omni.transformer import TransformerConfig

B, N, D, V = 3, 5, 16, 7


def test_logits_cover_the_tokenizers_span_only():
    torch.manual_seed(0)
    model = OmniModel(
        tokenizers={"points": SensorTokenizer(D, in_features=2), "text": TextTokenizer(D, vocab_size=V)},
        trunk=TransformerConfig(dim=D, depth=1, heads=2),
        heads={"lm": TokenHead(D, vocab_size=V, tokenizer="text")},
        extra_tokens={"cls": 1},
    )
    ids = torch.randint(1, V, (B, N))
    out = model({"points": torch.randn(B, 4, 2), "text": ids})
    assert out["lm"].shape == (B, N, V)
    span = out["output"].spans["text"]
    assert span == slice(1 + 4, 1 + 4 + N)  # after CLS and the 4 points
    torch.testing.assert_close(out["lm"], model.heads["lm"].fc(out["output"].tokens.x[:, span]))
    with pytest.raises(
        ValueError, match=r"tokenizer: expected 'text' among the model output's spans, got \['points'\]"
    ):
        model.heads["lm"](model({"points": torch.randn(B, 4, 2)})["output"])


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, N, V, generator=g)
    targets = torch.randint(0, V, (B, N), generator=g)
    mask = torch.arange(N)[None] < torch.tensor([[5], [2], [3]])  # lengths 5, 2, 3
    return logits, targets, mask


def test_padded_targets_are_ignored():
    logits, targets, mask = batch()
    other_logits, other_targets = logits.clone(), targets.clone()
    other_logits[~mask] = 100 * torch.randn(int((~mask).sum()), V)
    other_targets[~mask] = -5  # not even a valid id
    for reduction in ("sequence", "token", "none"):
        a = TokenHead.loss(logits, targets, mask, reduction=reduction)
        b = TokenHead.loss(other_logits, other_targets, mask, reduction=reduction)
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_reductions_agree_with_cross_entropy(smoothing):
    logits, targets, mask = batch(1)
    per_row = [F.cross_entropy(logits[i, mask[i]], targets[i, mask[i]], label_smoothing=smoothing) for i in range(B)]
    by_sequence = TokenHead.loss(logits, targets, mask, label_smoothing=smoothing)
    torch.testing.assert_close(by_sequence, torch.stack(per_row).mean())
    by_token = TokenHead.loss(logits, targets, mask, label_smoothing=smoothing, reduction="token")
    torch.testing.assert_close(by_token, F.cross_entropy(logits[mask], targets[mask], label_smoothing=smoothing))
    each = TokenHead.loss(logits, targets, mask, label_smoothing=smoothing, reduction="none")
    assert each.shape == (B, N) and each[~mask].eq(0).all()
    torch.testing.assert_close(
        TokenHead.loss(logits, targets), F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    )


def test_bf16_logits_get_a_float32_loss():
    """bf16 logits (bf16-mixed training) are scored in float32: the loss of their exact float32 values."""
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 5, 40, generator=g) * 4).bfloat16()
    targets = torch.randint(0, 40, (3, 5), generator=g)
    loss = TokenHead.loss(logits, targets, label_smoothing=0.1, reduction="none")
    assert loss.dtype == torch.float32
    expected = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none", label_smoothing=0.1)
    torch.testing.assert_close(loss, expected, atol=0.0, rtol=0.0)


def test_a_row_without_targets_does_not_count():
    logits, targets, mask = batch(2)
    mask[1] = False
    keep = torch.tensor([0, 2])
    torch.testing.assert_close(
        TokenHead.loss(logits, targets, mask), TokenHead.loss(logits[keep], targets[keep], mask[keep])
    )


def test_bad_arguments_are_named():
    logits, targets, mask = batch()
    with pytest.raises(ValueError, match=r"targets: expected shape \(B, N\) = \(3, 5\)"):
        TokenHead.loss(logits, targets[:, :4])
    with pytest.raises(ValueError, match=r"mask: expected shape \(3, 5\) like the targets, got \(3, 4\)"):
        TokenHead.loss(logits, targets, mask[:, :4])
    with pytest.raises(ValueError, match="reduction: expected one of"):
        TokenHead.loss(logits, targets, reduction="mean")
    with pytest.raises(ValueError, match="vocab_size: expected an int >= 2, got 1"):
        TokenHead(D, vocab_size=1)
