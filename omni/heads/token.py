"""Per-token vocabulary logits over one tokenizer's tokens (a language-model head), and their cross-entropy.

Shape legend
    B batch   N tokens of the tokenizer's span   D width   V vocabulary size
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from omni.choices import check_choice
from omni.model import ModelOutput

__all__ = ["Reduction", "TokenHead"]

Reduction = Literal["sequence", "token", "none"]


class TokenHead(nn.Module):
    """Next-token logits at every token of one tokenizer (GPT's ``lm_head``, Whisper's decoder output).

    Reads ``out.tokens.x[:, out.spans[tokenizer]]``: the trunk's output (already normalised when the trunk has
    ``final_norm``) at that tokenizer's tokens only, so extra tokens and other modalities in the same sequence are
    left out. When decoding step by step it reads the new tokens of the step.
    """

    def __init__(self, dim: int, vocab_size: int, tokenizer: str = "text", bias: bool = True) -> None:
        """
        Args:
            dim: model width D.
            vocab_size: V, the number of classes of every token (the target vocabulary).
            tokenizer: the name of the tokenizer whose tokens are read (its key in the model's ``tokenizers``).
            bias: a bias on the output layer.
        """
        super().__init__()
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 2:
            raise ValueError(f"vocab_size: expected an int >= 2, got {vocab_size!r}")
        self.vocab_size, self.tokenizer = vocab_size, tokenizer
        self.fc = nn.Linear(dim, vocab_size, bias=bias)
        nn.init.normal_(self.fc.weight, std=0.02)
        if bias:
            nn.init.zeros_(self.fc.bias)

    def forward(self, out: ModelOutput) -> Tensor:
        """-> (B, N, V) logits at the tokens of ``tokenizer``."""
        if self.tokenizer not in out.spans:
            raise ValueError(
                f"tokenizer: expected {self.tokenizer!r} among the model output's spans, got {sorted(out.spans)}"
            )
        return self.fc(out.tokens.x[:, out.spans[self.tokenizer]])

    @staticmethod
    def loss(
        logits: Tensor,
        targets: Tensor,
        mask: Tensor | None = None,
        label_smoothing: float = 0.0,
        reduction: Reduction = "sequence",
    ) -> Tensor:
        """Cross-entropy of (B, N, V) logits against (B, N) target ids, padded targets ignored.

        Args:
            logits: (B, N, V).
            targets: (B, N) integer ids in [0, V); any value where ``mask`` is False.
            mask: (B, N) bool, True where the target is real; None = all real.
            label_smoothing: cross-entropy label smoothing.
            reduction: ``sequence``: each sequence's mean over its real targets, then the mean over sequences
                (a sequence weighs the same whatever its length and whatever it is batched with); ``token``: the
                mean over every real target of the batch (long sequences weigh more); ``none``: the (B, N) losses,
                0 at padding.
        Returns:
            a scalar, or (B, N) for ``none``.
        """
        check_choice("reduction", reduction, Reduction)
        if logits.ndim != 3 or targets.shape != logits.shape[:2]:
            raise ValueError(
                f"targets: expected shape (B, N) = {tuple(logits.shape[:2])} like the logits (B, N, V), "
                f"got {tuple(targets.shape)}"
            )
        if mask is None:
            mask = targets.new_ones(targets.shape, dtype=torch.bool)
        elif mask.shape != targets.shape:
            raise ValueError(f"mask: expected shape {tuple(targets.shape)} like the targets, got {tuple(mask.shape)}")
        safe = targets.long().masked_fill(~mask, 0)  # padding may hold any id; its loss is dropped below
        losses = F.cross_entropy(  # in float32: bf16 logits (bf16-mixed) would round the log-softmax
            rearrange(logits.float(), "b n v -> b v n"), safe, reduction="none", label_smoothing=label_smoothing
        )
        losses = losses * mask  # (B, N)
        if reduction == "none":
            return losses
        count = mask.sum(dim=1)  # (B,)
        if reduction == "token":
            return losses.sum() / count.sum().clamp(min=1)
        per_sequence = losses.sum(dim=1) / count.clamp(min=1)
        has_targets = count > 0  # a row with no real target does not count
        return per_sequence.sum() / has_targets.sum().clamp(min=1)
