"""Per-frame label log-probabilities over one tokenizer's tokens (audio), and the CTC loss (Graves et al. 2006).

Shape legend
    B batch   N frames (the tokenizer's tokens)   D width   V vocabulary size (blank included)   L target labels
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from omni.choices import check_choice
from omni.ctc import check_ctc_inputs
from omni.model import ModelOutput
from omni.tokenizers.checks import check_tensor

__all__ = ["CTCHead", "CTCReduction"]

CTCReduction = Literal["mean", "sum", "none"]


class CTCHead(nn.Module):
    """A linear layer and a log-softmax at every token of one tokenizer: a CTC output layer (wav2vec 2.0, ESPnet's
    CTC branch).

    Reads ``out.tokens.x[:, out.spans[tokenizer]]``, the trunk's output at that tokenizer's tokens only, so extra
    tokens and other modalities in the sequence are left out. ``lengths(out)`` gives the real frames of each row.
    """

    def __init__(self, dim: int, vocab_size: int, tokenizer: str = "audio", blank_id: int = 0) -> None:
        """
        Args:
            dim: model width D.
            vocab_size: V, the labels including the blank.
            tokenizer: the name of the tokenizer whose tokens are the frames (its key in the model's ``tokenizers``).
            blank_id: the blank label (0: the speech vocabularies' PAD = BLANK).
        """
        super().__init__()
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 2:
            raise ValueError(f"vocab_size: expected an int >= 2 (the blank and a label), got {vocab_size!r}")
        if isinstance(blank_id, bool) or not isinstance(blank_id, int) or not 0 <= blank_id < vocab_size:
            raise ValueError(f"blank_id: expected an id in [0, vocab_size={vocab_size}), got {blank_id!r}")
        self.vocab_size, self.tokenizer, self.blank_id = vocab_size, tokenizer, blank_id
        self.fc = nn.Linear(dim, vocab_size)
        nn.init.normal_(self.fc.weight, std=0.02)
        nn.init.zeros_(self.fc.bias)

    def _span(self, out: ModelOutput) -> slice:
        if self.tokenizer not in out.spans:
            raise ValueError(
                f"tokenizer: expected {self.tokenizer!r} among the model output's spans, got {sorted(out.spans)}"
            )
        return out.spans[self.tokenizer]

    def forward(self, out: ModelOutput) -> Tensor:
        """-> (B, N, V) float32 log-probabilities at the tokens of ``tokenizer``."""
        return self.fc(out.tokens.x[:, self._span(out)]).float().log_softmax(dim=-1)

    def lengths(self, out: ModelOutput) -> Tensor:
        """(B,) long real frames per row: the tokenizer's tokens that are not padding."""
        return out.tokens.pad[:, self._span(out)].sum(dim=1)

    @staticmethod
    def loss(
        log_probs: Tensor,
        lengths: Tensor,
        targets: Tensor,
        target_lengths: Tensor,
        blank_id: int = 0,
        reduction: CTCReduction = "mean",
    ) -> Tensor:
        """CTC loss of padded frames against padded label sequences (torch's ``ctc_loss``, ``zero_infinity``).

        An utterance whose target cannot be aligned to its frames (more labels than frames, counting the blanks
        repeats need) has an infinite loss; it is set to 0 (with a zero gradient) instead of turning the batch NaN.

        Args:
            log_probs: (B, N, V) log-probabilities (``CTCHead.forward``).
            lengths: (B,) real frames per row; later frames are ignored.
            targets: (B, L) integer labels in [0, V) other than ``blank_id``; any value past a row's length.
            target_lengths: (B,) labels per row, or a (B, L) bool mask, True at the real labels (a prefix of each
                row).
            blank_id: the blank label.
            reduction: ``mean`` (torch's: each utterance's loss divided by its target length, then the mean over
                utterances), ``sum`` (over utterances) or ``none`` ((B,) losses).
        Returns:
            a scalar, or (B,) for ``none``.
        """
        check_choice("reduction", reduction, CTCReduction)
        log_probs, lengths = check_ctc_inputs(log_probs, lengths, blank_id)
        b, _, v = log_probs.shape
        targets = check_tensor("targets", targets, ndim=2, layout="(B, L)", dtype="int", sizes={0: b}, nonempty=False)
        targets = targets.to(log_probs.device, torch.long)
        target_lengths = _target_lengths(target_lengths, targets)
        real = torch.arange(targets.shape[1], device=targets.device) < target_lengths[:, None]  # (B, L)
        labels = targets[real]
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= v or bool((labels == blank_id).any())):
            got = f"min {int(labels.min())}, max {int(labels.max())}"
            raise ValueError(f"targets: expected labels in [0, V={v}) other than blank_id={blank_id}, got {got}")
        safe = targets.masked_fill(~real, blank_id)  # padding may hold any value; ctc_loss never reads it
        return F.ctc_loss(
            rearrange(log_probs, "b n v -> n b v"),
            safe,
            lengths,
            target_lengths,
            blank=blank_id,
            reduction=reduction,
            zero_infinity=True,
        )


def _target_lengths(target_lengths: object, targets: Tensor) -> Tensor:
    """(B,) long labels per row from a (B,) count or a (B, L) bool prefix mask."""
    b, n = targets.shape
    if isinstance(target_lengths, Tensor) and target_lengths.dtype == torch.bool:
        mask = check_tensor(
            "target_lengths", target_lengths, ndim=2, layout="(B, L) mask", dtype="bool", nonempty=False
        )
        if mask.shape != targets.shape:
            raise ValueError(f"target_lengths: expected a mask of shape {(b, n)} like targets, got {tuple(mask.shape)}")
        counts = mask.sum(dim=1)
        if not torch.equal(mask, torch.arange(n, device=mask.device) < counts[:, None]):
            raise ValueError("target_lengths: expected a mask that is True on a prefix of each row, got gaps")
        return counts.to(targets.device)
    counts = check_tensor("target_lengths", target_lengths, ndim=1, layout="(B,) or a (B, L) mask", dtype="int")
    if counts.shape[0] != b:
        raise ValueError(f"target_lengths: expected {b} counts like targets' rows, got {counts.shape[0]}")
    if int(counts.min()) < 0 or int(counts.max()) > n:
        got = f"min {int(counts.min())}, max {int(counts.max())}"
        raise ValueError(f"target_lengths: expected counts in [0, L={n}], got {got}")
    return counts.to(targets.device, torch.long)
