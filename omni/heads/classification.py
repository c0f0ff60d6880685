"""Class logits from a CLS token or the mean of the real tokens, and their cross-entropy.

Shape legend
    B batch   D width   K classes
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from omni.choices import check_choice
from omni.dropout import Dropout
from omni.model import ModelOutput

__all__ = ["ClassificationHead", "Pool"]

Pool = Literal["cls", "mean"]


class ClassificationHead(nn.Module):
    """Class logits from the ``cls`` extra token (ViT) or the mean of the real tokens."""

    def __init__(self, dim: int, num_classes: int, pool: Pool = "cls", dropout: float = 0.0) -> None:
        """
        Args:
            dim: model width D.
            num_classes: K, at least 2.
            pool: ``cls`` (the model must have a ``cls`` extra token) or ``mean`` (of all real tokens).
            dropout: dropout before the linear layer.
        """
        super().__init__()
        check_choice("pool", pool, Pool)
        if num_classes < 2:
            raise ValueError(f"num_classes: expected >= 2, got {num_classes}")
        self.pool = pool
        self.drop = Dropout(dropout)
        self.fc = nn.Linear(dim, num_classes)
        nn.init.zeros_(self.fc.weight)  # start from uniform predictions (timm zero-initialises classifier heads)
        nn.init.zeros_(self.fc.bias)

    def forward(self, out: ModelOutput) -> Tensor:
        """-> (B, K) logits"""
        if self.pool == "cls":
            if "cls" not in out.extras:
                raise ValueError("pool: 'cls' expected the model to have a `cls` extra token, got none")
            feat = out.extras["cls"][:, 0]
        else:
            feat = out.mean()
        return self.fc(self.drop(feat))

    @staticmethod
    def loss(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
        """Mean cross-entropy of (B, K) logits against (B,) class indices."""
        if labels.shape != logits.shape[:1]:
            raise ValueError(
                f"labels: expected shape ({logits.shape[0]},) like the logits' batch, got {tuple(labels.shape)}"
            )
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
