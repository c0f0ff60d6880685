"""Attention masks as predicates over (query, key) token pairs that read ``Tokens`` metadata.

One convention: boolean, True = may attend. Padding is always applied (a padded key is never attended).

    from omni import masks
    m = masks.causal(by="group") & ~masks.full()   # expressions combine with &, |, ~
    m.dense(tokens)                                # (B, N, N) bool

Shape legend
    B batch   N tokens (queries and keys of one sequence)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from omni.tokens import Tokens

__all__ = ["Causal", "Full", "Mask", "causal", "from_name", "full", "to_attn_mask"]


@dataclass(frozen=True)
class Side:
    """Token metadata of the query side, shaped (B, N, 1), or of the key side, shaped (B, 1, N)."""

    index: Tensor
    modality: Tensor
    pos: Tensor  # (B, N, 1, P) or (B, 1, N, P)
    group: Tensor
    sample: Tensor

    @staticmethod
    def of(tokens: Tokens, axis: Literal["query", "key"]) -> Side:
        unsq = -1 if axis == "query" else 1
        index = torch.arange(tokens.num_tokens, device=tokens.x.device).unsqueeze(0)
        return Side(
            index=index.unsqueeze(unsq),
            modality=tokens.modality.unsqueeze(unsq),
            pos=tokens.pos.unsqueeze(2 if axis == "query" else 1),
            group=tokens.group.unsqueeze(unsq),
            sample=tokens.sample.unsqueeze(unsq),
        )


class Mask:
    """A predicate over (query, key) pairs. Subclasses implement ``allowed``; users combine with &, |, ~."""

    def allowed(self, q: Side, k: Side) -> Tensor:
        """Broadcastable bool tensor: may query ``q`` attend key ``k``?"""
        raise NotImplementedError

    def dense(self, tokens: Tokens) -> Tensor:
        """(B, N, N) bool mask, padding applied: the reference every faster path must equal."""
        allowed = self.allowed(Side.of(tokens, "query"), Side.of(tokens, "key"))
        b, n = tokens.pad.shape
        return allowed.expand(b, n, n) & tokens.pad.unsqueeze(1)

    @property
    def is_full(self) -> bool:
        """True when the predicate allows every pair (padding aside): the trunk may skip the mask."""
        return False

    def __and__(self, other: Mask) -> Mask:
        return And(self, other)

    def __or__(self, other: Mask) -> Mask:
        return Or(self, other)

    def __invert__(self) -> Mask:
        return Not(self)


@dataclass(frozen=True)
class Full(Mask):
    """Every token may attend every (real) token."""

    def allowed(self, q: Side, k: Side) -> Tensor:
        return torch.ones_like(q.index & k.index, dtype=torch.bool)

    @property
    def is_full(self) -> bool:
        return True


@dataclass(frozen=True)
class Causal(Mask):
    """A token attends itself and the past: by token ``index``, or by ``group`` (all tokens of one RL timestep
    see each other and every earlier timestep)."""

    by: Literal["index", "group"] = "index"

    def __post_init__(self) -> None:
        if self.by not in ("index", "group"):
            raise ValueError(f"causal.by: expected 'index' or 'group', got {self.by!r}")

    def allowed(self, q: Side, k: Side) -> Tensor:
        return k.index <= q.index if self.by == "index" else k.group <= q.group


@dataclass(frozen=True)
class And(Mask):
    a: Mask
    b: Mask

    def allowed(self, q: Side, k: Side) -> Tensor:
        return self.a.allowed(q, k) & self.b.allowed(q, k)

    @property
    def is_full(self) -> bool:
        return self.a.is_full and self.b.is_full


@dataclass(frozen=True)
class Or(Mask):
    a: Mask
    b: Mask

    def allowed(self, q: Side, k: Side) -> Tensor:
        return self.a.allowed(q, k) | self.b.allowed(q, k)

    @property
    def is_full(self) -> bool:
        return self.a.is_full or self.b.is_full


@dataclass(frozen=True)
class Not(Mask):
    a: Mask

    def allowed(self, q: Side, k: Side) -> Tensor:
        return ~self.a.allowed(q, k)


def full() -> Mask:
    return Full()


def causal(by: Literal["index", "group"] = "index") -> Mask:
    return Causal(by=by)


_NAMED: dict[str, Mask] = {"full": Full(), "causal": Causal("index"), "causal_group": Causal("group")}


def from_name(name: str | Mask) -> Mask:
    """The one mapping from a config string to a mask expression."""
    if isinstance(name, Mask):
        return name
    if name not in _NAMED:
        raise ValueError(f"mask: expected one of {sorted(_NAMED)} or a Mask, got {name!r}")
    return _NAMED[name]


def to_attn_mask(mask: Mask, tokens: Tokens) -> Tensor | None:
    """The mask the trunk should receive: None when nothing is masked (SDPA's unmasked fast path), else the
    (B, N, N) bool mask. Never drops a constraint: None only when the predicate is full and no token is padded."""
    if mask.is_full and bool(tokens.pad.all()):
        return None
    return mask.dense(tokens)
