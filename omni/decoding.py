"""The state of step-by-step decoding: the trunk's KV cache and the metadata of every cached token.

``OmniModel.start_decoding`` creates a ``DecodeState``; each ``OmniModel.step`` appends its new tokens to it and
builds their mask rows against every cached key from the model's own layer masks, so causal-by-index,
causal-by-group, sliding windows, padding and packed-sample boundaries hold on the cached path as on the full one.
Beam search reorders and expands the state; a rolling ``window`` (in groups: RL timesteps) bounds it.

Shape legend
    B batch rows (hypotheses in a beam search)   C cached tokens   N new tokens   M context (memory) tokens
    R rows kept by a reorder
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from omni.tokens import Tokens
from omni.transformer import KVCache

__all__ = ["DecodeState"]


def _map_rows(tokens: Tokens, fn: Callable[[Tensor], Tensor]) -> Tokens:
    """Apply ``fn`` to every field of ``tokens`` (all are batch-first)."""
    return Tokens(**{f.name: fn(getattr(tokens, f.name)) for f in fields(tokens)})


@dataclass
class DecodeState:
    """What step-by-step decoding keeps between steps.

    Attributes:
        cache: the trunk's per-layer ``KVCache``: self-attention keys/values (B, H, C, Dh) that grow each step;
            cross-attention keys/values of the context (B, H, M, Dh), computed once; the context's pad (B, M).
        tokens: metadata of the C cached tokens (modality, pos, pad, group, sample, is_global), with an empty
            ``x`` (B, C, 0); None before the first step.
        window: keep only tokens of the newest ``window`` groups: after each step, a token whose group is at most
            (newest group - window) is forgotten (its key is masked out, and dropped from the cache once it is
            among the oldest of every row). None keeps everything.
        steps: calls of ``OmniModel.step`` so far (the model's extra tokens, e.g. BOS, enter on the first).
    """

    cache: KVCache
    tokens: Tokens | None = None
    window: int | None = None
    steps: int = 0

    def __post_init__(self) -> None:
        w = self.window
        if w is not None and (isinstance(w, bool) or not isinstance(w, int) or w < 1):
            raise ValueError(f"window: expected a positive number of groups or None, got {w!r}")

    @property
    def length(self) -> int:
        """C: tokens held in the cache."""
        return 0 if self.tokens is None else self.tokens.num_tokens

    @property
    def batch_size(self) -> int | None:
        """B, once known (from the first step, or from the context); None before."""
        if self.tokens is not None:
            return self.tokens.batch_size
        if self.cache.cross_attn and self.cache.cross_attn[0].k is not None:
            return self.cache.cross_attn[0].k.shape[0]
        return None

    # ------------------------------------------------------------------ beam search
    def reorder(self, index: Tensor) -> None:
        """Keep hypotheses ``index`` (R,) long, in that order (after each beam step): every cached self- and
        cross-attention K/V and the cached metadata are index-selected along the batch."""
        b = self.batch_size
        if not isinstance(index, Tensor) or index.ndim != 1 or index.dtype not in (torch.long, torch.int32):
            got = f"{tuple(index.shape)} {index.dtype}" if isinstance(index, Tensor) else type(index).__name__
            raise ValueError(f"index: expected a (R,) long tensor of batch rows, got {got}")
        if b is not None and index.numel() and not (0 <= int(index.min()) and int(index.max()) < b):
            raise ValueError(f"index: expected rows in [0, {b}), got min {int(index.min())}, max {int(index.max())}")
        index = index.long()
        self.cache.reorder(index)
        if self.tokens is not None:
            self.tokens = _map_rows(self.tokens, lambda t: t.index_select(0, index.to(t.device)))

    def expand(self, beams: int) -> None:
        """Repeat each batch row ``beams`` times (B -> B * beams; rows b * beams ... b * beams + beams - 1 are
        copies of row b), the cross-attention memory included: start a beam search with it."""
        if isinstance(beams, bool) or not isinstance(beams, int) or beams < 1:
            raise ValueError(f"beams: expected a positive int, got {beams!r}")
        self.cache.expand(beams)
        if self.tokens is not None:
            self.tokens = _map_rows(self.tokens, lambda t: t.repeat_interleave(beams, dim=0))

    # ------------------------------------------------------------------ used by OmniModel.step
    def append(self, new: Tokens) -> Tokens:
        """Record the metadata of N new tokens; returns the metadata of all C + N tokens (x empty)."""
        b = self.batch_size
        if b is not None and new.batch_size != b:
            raise ValueError(f"inputs: expected batch size {b} (the decoding state's rows), got {new.batch_size}")
        meta = new.replace(x=new.x.new_zeros(new.batch_size, new.num_tokens, 0))
        self.tokens = meta if self.tokens is None else Tokens.cat([self.tokens, meta])
        self.steps += 1
        return self.tokens

    def roll(self) -> None:
        """Apply the window: forget tokens whose group is at most (newest group of their row - window)."""
        if self.window is None or self.tokens is None:
            return
        t = self.tokens
        newest = t.group.amax(dim=1, keepdim=True)  # (B, 1)
        pad = t.pad & (t.group > newest - self.window)
        # Drop the oldest columns no row needs: a prefix, so index distances (causal by index) stay as they were.
        needed = pad.any(dim=0)
        count = int(needed.int().argmax()) if bool(needed.any()) else t.num_tokens
        self.tokens = t.replace(pad=pad)[slice(count, None)]
        if count:
            self.cache.drop(count)
