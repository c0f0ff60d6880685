"""How a mask is executed: the same boolean mask on three paths that give the same answer.

- ``dense``: a (B, N, N) bool mask for ``scaled_dot_product_attention`` — the reference, and the fallback.
- ``flex``: a FlexAttention ``BlockMask`` built from the same predicate (``mask_mod``), run by a compiled
  ``flex_attention`` (CUDA forward and backward; CPU forward only in torch 2.11, so inference there).
- ``sparse``: ``SparsePlan``, a gather path for training on CPU. Queries are cut into blocks of 128; each block
  gathers only the key columns that some query of the block may attend and runs SDPA on them. Queries that attend
  most keys (global tokens) are taken out of the blocks and run densely on their own, and a global *key* adds one
  gathered column to each block, not a whole block.

``plan(mask, tokens, path)`` builds one of these once per forward; every layer with that mask shares it, and
``PlanCache`` keeps it across steps, keyed by the mask, the path and a digest of the tokens' metadata.

Shape legend
    B batch   N tokens (bucketed: a multiple of 128 on the flex path)   nb query blocks   Bq rows per block (128)
    Kc key columns gathered per block   Rd dense query rows
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from omni.masks import Mask, Side
from omni.tokens import Tokens

__all__ = ["BUCKET", "AttentionPath", "PlanCache", "SparsePlan", "choose_path", "plan"]

AttentionPath = Literal["auto", "dense", "flex", "sparse"]
BUCKET = 128  # sequence lengths are rounded up to a multiple of this on the flex path (and flex's block size)
BLOCK = 128  # query rows per block on the sparse path
DENSE_ROW_FRACTION = 0.25  # a query allowed more than this share of keys is run densely (global tokens)
SMALL = 512  # below this many tokens the dense path is the fastest everywhere


@dataclass
class SparsePlan:
    """Gather plan for one mask on one batch.

    Attributes:
        n: sequence length N.
        rows: (B, nb, Bq) long query indices per block; padding slots point at N (a dump row).
        cols: (B, nb, Kc) long key indices gathered per block; padding slots point at 0 and are masked out.
        mask: (B, nb, Bq, Kc) bool, True = may attend.
        dense_rows: (B, Rd) long queries run against all keys (padding slots point at N), or None.
        dense_mask: (B, Rd, N) bool, or None.
    """

    n: int
    rows: Tensor
    cols: Tensor
    mask: Tensor
    dense_rows: Tensor | None
    dense_mask: Tensor | None

    @property
    def gathered_fraction(self) -> float:
        """Key columns computed per query, as a share of N (what the plan saves over dense)."""
        return self.cols.shape[-1] / max(1, self.n)


def _row_chunks(n: int, b: int, budget: int = 1 << 24) -> int:
    """Query rows per chunk so that a (B, rows, N) bool chunk stays under ``budget`` elements."""
    return max(BLOCK, (budget // max(1, b * n)) // BLOCK * BLOCK)


def sparse_plan(mask: Mask, tokens: Tokens) -> SparsePlan:
    """Build the gather plan, evaluating the predicate in chunks of query rows (never the whole N x N at once)."""
    b, n = tokens.pad.shape
    dev = tokens.x.device
    keys = Side.of(tokens, "key")
    # Pass 1: how many keys each query may attend -> which queries are dense rows.
    counts = torch.empty(b, n, dtype=torch.long, device=dev)
    step = _row_chunks(n, b)
    for s in range(0, n, step):
        rows = torch.arange(s, min(n, s + step), device=dev)
        counts[:, s : s + step] = mask.with_boundaries(Side.of(tokens, "query", rows), keys).expand(b, -1, n).sum(-1)
    dense = counts > DENSE_ROW_FRACTION * n  # (B, N)
    n_dense = int(dense.sum(-1).max())
    sparse_idx = _ordered_indices(~dense, n)  # (B, n_sparse_max), N for padding
    n_sparse = sparse_idx.shape[1]
    nb = max(1, math.ceil(n_sparse / BLOCK))
    sparse_idx = torch.nn.functional.pad(sparse_idx, (0, nb * BLOCK - n_sparse), value=n)
    rows = sparse_idx.view(b, nb, BLOCK)
    # Pass 2: per block, the union of allowed key columns.
    colany = torch.zeros(b, nb, n, dtype=torch.bool, device=dev)
    blocks_per_chunk = max(1, step // BLOCK)
    for s in range(0, nb, blocks_per_chunk):
        r = rows[:, s : s + blocks_per_chunk]  # (B, c, Bq)
        allowed = _rows_mask(mask, tokens, r.reshape(b, -1), keys)  # (B, c*Bq, N)
        colany[:, s : s + blocks_per_chunk] = allowed.view(b, r.shape[1], BLOCK, n).any(2)
    kc = max(1, int(colany.sum(-1).max()))
    # Stable sort puts each block's allowed columns first, in key order.
    order = torch.sort((~colany).to(torch.uint8), dim=-1, stable=True).indices[..., :kc]  # (B, nb, Kc)
    valid = colany.gather(-1, order)
    cols = torch.where(valid, order, torch.zeros_like(order))
    block_mask = torch.zeros(b, nb, BLOCK, kc, dtype=torch.bool, device=dev)
    for s in range(0, nb, blocks_per_chunk):
        r = rows[:, s : s + blocks_per_chunk]
        allowed = _rows_mask(mask, tokens, r.reshape(b, -1), keys).view(b, r.shape[1], BLOCK, n)
        idx = cols[:, s : s + blocks_per_chunk].unsqueeze(2).expand(-1, -1, BLOCK, -1)
        block_mask[:, s : s + blocks_per_chunk] = allowed.gather(-1, idx) & valid[:, s : s + blocks_per_chunk, None]
    dense_rows = dense_mask = None
    if n_dense:
        dense_rows = _ordered_indices(dense, n)[:, :n_dense]
        dense_mask = _rows_mask(mask, tokens, dense_rows, keys)
    return SparsePlan(n=n, rows=rows, cols=cols, mask=block_mask, dense_rows=dense_rows, dense_mask=dense_mask)


def _ordered_indices(select: Tensor, n: int) -> Tensor:
    """(B, N) bool -> (B, max count) long indices of the True entries in order, padded with N."""
    count = int(select.sum(-1).max())
    idx = torch.arange(n, device=select.device).expand_as(select)
    idx = torch.where(select, idx, torch.full_like(idx, n))
    return idx.sort(dim=-1).values[:, :count]


def _rows_mask(mask: Mask, tokens: Tokens, rows: Tensor, keys: Side) -> Tensor:
    """(B, R) query indices (N = padding slot) -> (B, R, N) bool mask rows; padding slots allow nothing."""
    b, n = tokens.pad.shape
    safe = rows.clamp(max=n - 1)
    meta = {
        "modality": tokens.modality.gather(1, safe),
        "group": tokens.group.gather(1, safe),
        "sample": tokens.sample.gather(1, safe),
        "pad": tokens.pad.gather(1, safe),
        "is_global": tokens.is_global.gather(1, safe),
    }
    pos = tokens.pos.gather(1, safe.unsqueeze(-1).expand(-1, -1, tokens.pos.shape[-1]))
    q = Side(index=safe.unsqueeze(-1), pos=pos.unsqueeze(2), **{k: v.unsqueeze(-1) for k, v in meta.items()})
    allowed = mask.with_boundaries(q, keys).expand(b, rows.shape[1], n)
    return allowed & (rows < n).unsqueeze(-1)


def block_mask(mask: Mask, tokens: Tokens):  # -> torch.nn.attention.flex_attention.BlockMask
    """A FlexAttention BlockMask whose ``mask_mod`` evaluates the same predicate on single (q, kv) pairs."""
    from torch.nn.attention.flex_attention import create_block_mask

    b, n = tokens.pad.shape
    meta = (tokens.modality, tokens.pos, tokens.group, tokens.sample, tokens.pad, tokens.is_global)

    def mask_mod(bi: Tensor, hi: Tensor, qi: Tensor, ki: Tensor) -> Tensor:
        mod, pos, grp, smp, pad, glob = meta
        q = Side(qi, mod[bi, qi], pos[bi, qi], grp[bi, qi], smp[bi, qi], pad[bi, qi], glob[bi, qi])
        k = Side(ki, mod[bi, ki], pos[bi, ki], grp[bi, ki], smp[bi, ki], pad[bi, ki], glob[bi, ki])
        return mask.with_boundaries(q, k)

    return create_block_mask(mask_mod, b, None, n, n, device=tokens.x.device, BLOCK_SIZE=BUCKET)


def choose_path(path: AttentionPath, n: int, device: torch.device, training: bool) -> AttentionPath:
    """``auto``: dense for short sequences; flex on CUDA; on CPU the sparse path for training and flex for
    inference (FlexAttention has no CPU backward in torch 2.11)."""
    if path != "auto":
        return path
    if n < SMALL:
        return "dense"
    if device.type == "cuda":
        return "flex"
    return "sparse" if training else "flex"


def plan(mask: Mask, tokens: Tokens, path: AttentionPath):
    """The mask in the form ``path`` runs: None (nothing masked), a dense bool tensor, a BlockMask or a SparsePlan."""
    if mask.is_full and bool(tokens.pad.all()) and bool((tokens.sample == tokens.sample[:, :1]).all()):
        return None
    if path == "dense":
        return mask.dense(tokens)
    if path == "flex":
        return block_mask(mask, tokens)
    if path == "sparse":
        return sparse_plan(mask, tokens)
    raise ValueError(f"attention: expected 'auto', 'dense', 'flex' or 'sparse', got {path!r}")


def signature(tokens: Tokens) -> str:
    """A digest of everything a mask may read (not the embeddings): equal metadata, equal masks."""
    h = hashlib.blake2b(digest_size=16)
    for t in (tokens.modality, tokens.pos, tokens.group, tokens.sample, tokens.pad, tokens.is_global):
        h.update(str((tuple(t.shape), t.dtype)).encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


class PlanCache:
    """Plans kept across steps (LRU), keyed by (mask, path, device, metadata digest)."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._plans: OrderedDict[tuple, object] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, mask: Mask, tokens: Tokens, path: AttentionPath):
        key = (mask, path, str(tokens.x.device), signature(tokens))
        if key in self._plans:
            self.hits += 1
            self._plans.move_to_end(key)
            return self._plans[key]
        self.misses += 1
        value = plan(mask, tokens, path)
        self._plans[key] = value
        if len(self._plans) > self.size:
            self._plans.popitem(last=False)
        return value

    def clear(self) -> None:
        self._plans.clear()
