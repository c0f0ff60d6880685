"""Metrics of the field that torchmetrics has but gets wrong at the edges: word and character error rates.

``torchmetrics``' ``WordErrorRate`` / ``CharErrorRate`` sum edits and reference lengths over the corpus (so they are
right under DDP), but return inf or nan when the references hold no words, and ``zip`` silently drops
hypotheses or references when the two lists differ in length. These subclasses fix both.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.text import CharErrorRate, WordErrorRate

__all__ = ["ErrorRate", "SafeCharErrorRate", "SafeWordErrorRate"]


class _Safe:
    """Mixin: equal-length inputs, and ``edits / max(reference units, 1)`` (0 with no references and no output)."""

    errors: Tensor
    total: Tensor

    def update(self, preds: list[str], target: list[str]) -> None:  # type: ignore[override]
        if isinstance(preds, str) or isinstance(target, str):
            raise ValueError("preds, target: expected lists of strings, got a single string")
        if len(preds) != len(target):
            raise ValueError(f"preds: expected one hypothesis per reference ({len(target)}), got {len(preds)}")
        super().update(preds, target)  # type: ignore[misc]

    def compute(self) -> Tensor:
        return self.errors.float() / torch.clamp(self.total.float(), min=1.0)


class SafeWordErrorRate(_Safe, WordErrorRate):
    """Corpus WER = word edits / reference words; with no reference words, the hypotheses' words count as errors
    over a denominator of 1 (so a model that says nothing on silence scores 0)."""


class SafeCharErrorRate(_Safe, CharErrorRate):
    """Corpus CER = character edits / reference characters, safe on empty references as ``SafeWordErrorRate``."""


ErrorRate = SafeWordErrorRate | SafeCharErrorRate
