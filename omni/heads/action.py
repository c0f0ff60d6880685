"""Actions from the trunk's output at each step's state token, and their loss over the real (unpadded) steps.

Shape legend
    B batch   K steps   D width   A action size (continuous) or number of actions (discrete)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omni.dropout import Dropout
from omni.ranks import global_count
from omni.tokenizers.checks import check_tensor

__all__ = ["ActionHead"]


class ActionHead(nn.Module):
    """Continuous actions: Linear -> tanh, scaled from (-1, 1) onto the action space's [low, high] box (the Decision
    Transformer's tanh head, made bound-aware). Discrete actions: Linear -> logits.

    The bounds are buffers (saved with the checkpoint); a task sets them from the data with ``set_bounds``.
    """

    def __init__(self, dim: int, act_dim: int, discrete: bool = False, dropout: float = 0.0) -> None:
        """
        Args:
            dim: model width D.
            act_dim: A, the action size (continuous) or the number of discrete actions (at least 2).
            discrete: predict logits over ``act_dim`` actions instead of a continuous vector.
            dropout: dropout before the linear layer.
        """
        super().__init__()
        if act_dim < 1 or (discrete and act_dim < 2):
            raise ValueError(f"act_dim: expected >= {2 if discrete else 1}, got {act_dim}")
        self.act_dim, self.discrete = act_dim, discrete
        self.drop = Dropout(dropout)
        self.fc = nn.Linear(dim, act_dim)
        self.register_buffer("low", -torch.ones(act_dim))
        self.register_buffer("high", torch.ones(act_dim))

    def set_bounds(self, low: Sequence[float] | Tensor, high: Sequence[float] | Tensor) -> None:
        """The box [low, high] (each (A,)) that continuous actions are scaled onto; every low < high, finite."""
        low_t = torch.as_tensor(low, dtype=torch.float32).flatten()
        high_t = torch.as_tensor(high, dtype=torch.float32).flatten()
        for name, t in (("low", low_t), ("high", high_t)):
            if t.shape != (self.act_dim,) or not bool(torch.isfinite(t).all()):
                raise ValueError(f"action {name}: expected {self.act_dim} finite bounds, got {t.tolist()}")
        if not bool((low_t < high_t).all()):
            raise ValueError(
                f"action bounds: expected low < high everywhere, got low {low_t.tolist()}, high {high_t.tolist()}"
            )
        self.low.copy_(low_t)
        self.high.copy_(high_t)

    def forward(self, x: Tensor) -> Tensor:
        """(B, K, D) outputs at the state tokens -> (B, K, A) actions in [low, high], or (B, K, A) logits."""
        y = self.fc(self.drop(x))
        if self.discrete:
            return y
        half = (self.high - self.low).to(y.dtype) / 2
        return self.low.to(y.dtype) + half * (torch.tanh(y) + 1)

    def act(self, out: Tensor) -> Tensor:
        """What to do, from ``forward``'s output: (..., A) actions as they are, or (...) argmax action indices."""
        return out.argmax(-1) if self.discrete else out

    def loss(self, out: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        """Mean squared error (continuous) or cross-entropy (discrete), averaged over the real steps only.

        Args:
            out: (B, K, A) from ``forward``.
            target: (B, K, A) float actions, or (B, K) / (B, K, 1) integer indices.
            mask: (B, K) bool, True where the step is real; None = all real.
        """
        out = check_tensor("predictions", out, ndim=3, layout="(B, K, A)", sizes={-1: self.act_dim})
        b, k = out.shape[:2]
        kind = "int" if self.discrete else "float"
        target = check_tensor("actions", target, ndim=(2, 3), layout="(B, K, A) or (B, K)", dtype=kind)
        if self.discrete and target.ndim == 3:
            target = target[..., 0]
        want = (b, k) if self.discrete else (b, k, self.act_dim)
        if tuple(target.shape) != want:
            raise ValueError(f"actions: expected shape {want} like the predictions, got {tuple(target.shape)}")
        if self.discrete and (int(target.min()) < 0 or int(target.max()) >= self.act_dim):
            raise ValueError(
                f"actions: expected indices in [0, {self.act_dim}), got {int(target.min())}..{int(target.max())}"
            )
        if mask is not None:
            mask = check_tensor("mask", mask, ndim=2, layout="(B, K)", dtype="bool", sizes={0: b, 1: k})
        if self.discrete:
            per_step = F.cross_entropy(out.float().transpose(1, 2), target.long(), reduction="none")  # (B, K)
        else:  # in float32 whatever the predictions' dtype: a half-precision square overflows past 256
            per_step = (out.float() - target.float()).pow(2).mean(-1)  # (B, K)
        if mask is None:
            return per_step.sum() / global_count(per_step.numel()).to(per_step.device)
        weight = mask.to(per_step.dtype)  # a mean over the real steps of the global batch under DDP (omni.ranks)
        return (per_step * weight).sum() / global_count(weight.sum()).to(per_step.device)
