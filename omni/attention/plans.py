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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeAlias

import torch
from torch import Tensor

if TYPE_CHECKING:
    from torch.nn.attention.flex_attention import BlockMask

from omni.attention.masks import FLEX_BLOCK, Mask, Side, block_mask, flex_unsupported
from omni.choices import check_choice
from omni.tokens import PackInfo, Tokens

__all__ = [
    "BUCKET",
    "AttentionPath",
    "Plan",
    "PlanCache",
    "SegmentPlan",
    "SparsePlan",
    "StreamPlan",
    "StreamSegment",
    "choose_path",
    "plan",
    "segment_plan",
    "stream_plan",
]

AttentionPath = Literal["auto", "dense", "flex", "sparse"]
BUCKET = FLEX_BLOCK  # sequence lengths are rounded up to a multiple of this on the flex path
BLOCK = 64  # query rows per block on the sparse path (chosen with benchmarks/masks.py; see RESULTS.md)
DENSE_ROW_FRACTION = 0.25  # a query allowed more than this share of keys is run densely (global tokens)
SMALL = 512  # below this many tokens the dense path is the fastest everywhere
MAX_GATHERED = 0.5  # a sparse plan gathering more than this share of the keys per block falls back to dense


@dataclass
class BlockGroup:
    """Query blocks that gather the same number of key columns, Kc, run as one batched SDPA call.

    Attributes:
        q_index: (G * Bq,) flat query index of every block slot (padding slots read token 0 of their row).
        kv_index: (G * Kc,) flat key index of every gathered column (padding columns are masked out).
        mask: (G, Bq, Kc) bool, True = may attend.
        write_index: (G, Bq) flat token each slot's output belongs to; padding slots point at B * N (a dump row).
        safe_mask: (G, 1, Bq, Kc) the mask with rows that allow nothing opened up (SDPA would give NaN there).
        has_key: (G, 1, Bq, 1) bool zeroing those rows afterwards; None when every row has a key.
    """

    q_index: Tensor
    kv_index: Tensor
    mask: Tensor
    write_index: Tensor
    safe_mask: Tensor = field(init=False)
    has_key: Tensor | None = field(init=False)

    def __post_init__(self) -> None:
        has_key = self.mask.any(-1, keepdim=True).unsqueeze(1)  # (G, 1, Bq, 1)
        everyone = bool(has_key.all())
        self.safe_mask = self.mask.unsqueeze(1) if everyone else (self.mask.unsqueeze(1) | ~has_key)
        self.has_key = None if everyone else has_key


@dataclass
class SparsePlan:
    """Gather plan for one mask on one batch. Token indices are flat over (B, N); queries and keys are gathered
    as rows of (B * N, H * Dh). Blocks are grouped by how many key columns they need, so that one long packed
    sample or one global key does not widen every block.

    Attributes:
        n: sequence length N.
        groups: the query blocks, grouped by width.
        dense_q_index: (B * Rd,) flat indices of the queries run against all keys (global tokens), or None.
        dense_mask: (B, Rd, N) bool for those queries, or None.
        dense_write_index: (B, Rd) flat token of each dense query (padding: B * N), or None.
        out_index: (B * N,) where each token's output sits in [group outputs..., dense outputs].
    """

    n: int
    groups: list[BlockGroup]
    dense_q_index: Tensor | None
    dense_mask: Tensor | None
    dense_write_index: Tensor | None
    out_index: Tensor

    @property
    def n_dense(self) -> int:
        """Dense query rows per batch row (global tokens), Rd."""
        return 0 if self.dense_mask is None else self.dense_mask.shape[1]

    @property
    def kc(self) -> int:
        """The widest block's key columns."""
        return max(g.mask.shape[-1] for g in self.groups)

    @property
    def gathered_fraction(self) -> float:
        """(query, key) pairs computed, as a share of B * N * N (what the plan costs next to dense)."""
        batch = self.out_index.numel() // self.n
        pairs = sum(g.mask.numel() for g in self.groups) + batch * self.n_dense * self.n
        return pairs / (batch * self.n * self.n)


@dataclass
class SegmentPlan(SparsePlan):
    """A ``SparsePlan`` whose groups are whole samples of packed rows (``segment_plan``): each group's queries are
    its keys, so ``segment_attention`` gathers queries, keys and values at once from the fused projection, every
    group in one gather; the gathers' backward passes are gathers too (no zero-filled gradient, no scatter-add).

    Attributes:
        index: (M,) every group's slots in order (``q_index`` of each, concatenated): the token each slot reads.
        inverse: (B * N,) the slot whose gradient each token takes (its own slot; a token no slot reads takes a padding
            slot's, which is zero), or None where no padding slot exists (the backward then scatter-adds).
        out_inverse: (M,) the token whose output gradient each slot takes (padding slots: any; they allow no key, so
            nothing flows back through them).
    """

    index: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    inverse: Tensor | None = None
    out_inverse: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))


@dataclass
class StreamSegment:
    """A run of one item's samples in a stream (``pack(items, None)``), attended as a batch of equal-length samples.

    Attributes:
        size: stream tokens the run covers (its samples' real tokens, back to back).
        count, length: G samples, N slots each (the item's layout).
        safe_mask: (G, 1, N, N) bool, rows that allow nothing opened up; None: every key (SDPA's unmasked path).
        has_key: (G, 1, N, 1) bool zeroing the rows that allowed nothing (padding slots among them), or None.
        index: (G * N,) the run-local token each slot reads (padding slots: token 0), or None: the run is its
            samples' full layouts back to back, a view.
        inverse: (size,) the slot each token's gradient comes from (its own), with ``index``.
        compact: (size,) the slot holding each token's output, with ``index``.
        compact_inverse: (G * N,) the token whose output gradient each slot takes (padding slots: token 0; they are
            zeroed, so nothing flows back), with ``index``.
    """

    size: int
    count: int
    length: int
    safe_mask: Tensor | None
    has_key: Tensor | None
    index: Tensor | None = None
    inverse: Tensor | None = None
    compact: Tensor | None = None
    compact_inverse: Tensor | None = None


@dataclass
class StreamPlan:
    """Variable-length attention over one packed stream (``pack(items, None)``): per item, its full-length samples
    as a view of the stream and its padded ones gathered into their layout, each run under the item's own mask.

    Attributes:
        segments: the runs in stream order; their sizes add up to the stream's length.
    """

    segments: list[StreamSegment]


def _safe(mask: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
    """(G, N, N) bool -> (G, 1, N, N) with empty rows opened up, and (G, 1, N, 1) has_key (None: no row empty)."""
    if mask is None:
        return None, None
    has_key = mask.any(-1, keepdim=True).unsqueeze(1)
    if bool(has_key.all()):
        return mask.unsqueeze(1), None
    return mask.unsqueeze(1) | ~has_key, has_key


def stream_plan(item_masks: list[Tensor | None], info: PackInfo) -> StreamPlan:
    """The ``StreamPlan`` of items packed as one stream (``pack(items, None)``).

    Args:
        item_masks: per item, its mask in its own layout, (B_k, N_k, N_k) bool (padded keys masked), or None (every
            real key).
        info: what ``pack(items, None)`` returned.
    """
    if info.num_rows != 1 or len(item_masks) != len(info.pads):
        raise ValueError(
            f"stream_plan: expected one stream (pack(items, None)) and one mask per item ({len(info.pads)}), got "
            f"{info.num_rows} rows and {len(item_masks)} masks"
        )
    segments: list[StreamSegment] = []
    offset = 0
    for k, (mask, pad) in enumerate(zip(item_masks, info.pads, strict=True)):
        b, nk = pad.shape
        if mask is not None and tuple(mask.shape) != (b, nk, nk):
            raise ValueError(f"item_masks[{k}]: expected ({b}, {nk}, {nk}) bool, got {tuple(mask.shape)}")
        lengths = pad.sum(1).tolist()
        order = sorted(range(b), key=lambda j: -lengths[j])  # the stream's order (``pack``'s, stable)
        full = [j for j in order if lengths[j] == nk]
        rest = [j for j in order if lengths[j] < nk]
        if full:
            m = None if mask is None else (mask if len(full) == b else mask[full])
            segments.append(StreamSegment(len(full) * nk, len(full), nk, *_safe(m)))
        if rest:
            sub = pad[rest]  # (P, N)
            size = int(sub.sum())
            real = sub.reshape(-1).nonzero().squeeze(-1)  # slot of each run token, in stream order
            local = torch.arange(size, device=pad.device)
            index = torch.zeros(len(rest) * nk, dtype=torch.long, device=pad.device).index_copy(0, real, local)
            both = sub.unsqueeze(1) & sub.unsqueeze(2)  # padding slots neither attend nor are attended
            allowed = both if mask is None else mask[rest] & both
            segments.append(StreamSegment(size, len(rest), nk, *_safe(allowed), index=index, inverse=real,
                                          compact=real, compact_inverse=index))  # fmt: skip
        offset += sum(lengths)
    if offset != info.max_len:
        raise ValueError(f"stream_plan: the items hold {offset} tokens, the stream {info.max_len}")
    return StreamPlan(segments)


Plan: TypeAlias = "Tensor | SparsePlan | StreamPlan | BlockMask | None"
"""A mask in the form one attention path runs: None (nothing masked: SDPA's unmasked fast path), a dense
(B, N, M) bool tensor, a ``SparsePlan`` or a FlexAttention ``BlockMask``."""


def _row_chunks(n: int, b: int, budget: int = 1 << 24) -> int:
    """Query rows per chunk so that a (B, rows, N) bool chunk stays under ``budget`` elements."""
    return max(BLOCK, (budget // max(1, b * n)) // BLOCK * BLOCK)


MATERIALIZE = 1 << 26  # masks up to this many (B * N * N) elements are evaluated in one go, larger in row chunks
DENSE_ROW_OVER_MEDIAN = 4  # ... and a dense row also sees this many times the median query's keys
WIDTH_STEP = 128  # block widths are rounded up to a multiple of this to form groups


def sparse_plan(mask: Mask, tokens: Tokens, block: int | None = None) -> SparsePlan:
    """Build the gather plan. The predicate is evaluated once per (query, key) pair: in one go when B * N * N fits
    ``MATERIALIZE``, else in chunks of query rows (never the whole N x N at once)."""
    bq = block or BLOCK
    b, n = tokens.pad.shape
    dev = tokens.x.device
    mask = mask.prepared(tokens)  # lookup tables built once for every row chunk
    keys = Side.of(tokens, "key")
    whole = mask.dense(tokens) if b * n * n <= MATERIALIZE else None

    row_base = (torch.arange(b, device=dev) * n).unsqueeze(1)  # (B, 1)

    def rows_mask(rows: Tensor) -> Tensor:  # (B, R) indices, N = padding slot -> (B, R, N)
        if whole is not None:  # row copies out of the materialised mask
            flat = (rows.clamp(max=n - 1) + row_base).reshape(-1)
            got = whole.reshape(b * n, n).index_select(0, flat).view(b, -1, n)
            return got & (rows < n).unsqueeze(-1)
        return _rows_mask(mask, tokens, rows, keys)

    stride = max(1, n // 512)

    def count(m: Tensor) -> Tensor:
        """Allowed keys per query, estimated from every ``stride``-th key: the count only decides which queries
        run densely (a speed choice; every choice gives the same result), so 512 samples per row are plenty."""
        return m[..., ::stride].sum(-1, dtype=torch.int32) * stride

    step = _row_chunks(n, b)
    if whole is not None:
        counts = count(whole)
    else:
        counts = torch.cat([count(rows_mask(torch.arange(s, min(n, s + step), device=dev).expand(b, -1)))
                            for s in range(0, n, step)], dim=1)  # fmt: skip
    # Dense rows: queries that see most keys, far more than a typical query of their row (global tokens).
    typical = torch.where(tokens.pad, counts, torch.zeros_like(counts)).float().quantile(0.5, dim=-1, keepdim=True)
    dense = (counts > DENSE_ROW_FRACTION * n) & (counts > DENSE_ROW_OVER_MEDIAN * typical)
    n_dense = int(dense.sum(-1).max())
    sparse_idx = _ordered_indices(~dense, n)  # (B, n_sparse), N = padding
    nb = max(1, math.ceil(sparse_idx.shape[1] / bq))
    rows = torch.nn.functional.pad(sparse_idx, (0, nb * bq - sparse_idx.shape[1]), value=n).view(b, nb, bq)
    per_chunk = max(1, step // bq)
    allowed = torch.cat(
        [rows_mask(rows[:, s : s + per_chunk].reshape(b, -1)).view(b, -1, bq, n) for s in range(0, nb, per_chunk)],
        dim=1,
    ).view(b * nb, bq, n)  # every block's rows against all keys
    colany = allowed.any(1)  # (B * nb, N): the key columns each block needs
    width = colany.sum(-1)
    offset = (torch.arange(b, device=dev) * n).view(b, 1, 1)
    flat_rows = (rows.clamp(max=n - 1) + offset).view(b * nb, bq)
    real_rows = (rows < n).view(b * nb, bq)
    row_token = (rows + offset).view(b * nb, bq)
    key_offset = offset.view(b, 1).expand(b, nb).reshape(-1, 1)  # (B * nb, 1)
    groups: list[BlockGroup] = []
    out_index = torch.zeros(b * n, dtype=torch.long, device=dev)
    slot = 0
    bucket = (width + WIDTH_STEP - 1) // WIDTH_STEP
    for level in bucket.unique().tolist():
        ids = (bucket == level).nonzero().squeeze(-1)
        ids = ids[real_rows[ids].any(-1)]  # blocks of padding slots only are skipped
        if ids.numel() == 0:
            continue
        kc = max(1, int(width[ids].max()))
        order = torch.sort((~colany[ids]).to(torch.uint8), dim=-1, stable=True).indices[:, :kc]  # needed cols first
        valid = colany[ids].gather(-1, order)  # (G, Kc)
        cols = torch.where(valid, order, torch.zeros_like(order))
        block_mask = allowed[ids].gather(-1, cols.unsqueeze(1).expand(-1, bq, -1)) & valid.unsqueeze(1)
        real = real_rows[ids]
        write = torch.where(real, row_token[ids], torch.full_like(row_token[ids], b * n))
        groups.append(BlockGroup(flat_rows[ids].reshape(-1), (cols + key_offset[ids]).reshape(-1), block_mask, write))
        slots = slot + torch.arange(ids.numel() * bq, device=dev).view(-1, bq)
        out_index[row_token[ids][real]] = slots[real]
        slot += ids.numel() * bq
    if not groups:  # nothing but padding and dense rows: one empty-width group keeps the shapes simple
        groups.append(
            BlockGroup(
                flat_rows[:1].reshape(-1),
                key_offset[:1].reshape(-1),
                torch.zeros(1, bq, 1, dtype=torch.bool, device=dev),
            )
        )
        slot += bq
    dense_q_index = dense_mask = dense_write_index = None
    if n_dense:
        dense_rows = _ordered_indices(dense, n)[:, :n_dense]  # (B, Rd)
        dense_mask = rows_mask(dense_rows)
        dense_q_index = (dense_rows.clamp(max=n - 1) + offset.view(b, 1)).reshape(-1)
        real = dense_rows < n
        dslots = slot + torch.arange(b * n_dense, device=dev).view(b, n_dense)
        dense_tokens = dense_rows + offset.view(b, 1)
        out_index[dense_tokens[real]] = dslots[real]
        dense_write_index = torch.where(real, dense_tokens, torch.full_like(dense_tokens, b * n))
    return SparsePlan(
        n=n,
        groups=groups,
        dense_q_index=dense_q_index,
        dense_mask=dense_mask,
        dense_write_index=dense_write_index,
        out_index=out_index,
    )


def segment_plan(item_masks: list[Tensor | None], info: PackInfo) -> SparsePlan:
    """Attention in packed rows computed sample by sample, as variable-length attention kernels do (FlashAttention's
    ``cu_seqlens``): one ``SparsePlan`` group per packed item, each sample of the item one block whose queries and keys
    are its own tokens, gathered from the rows into the item's own (B_k, N_k) layout. No query meets another sample's
    key, so a packed row costs what its samples cost alone, while everything between attentions (projections, MLP,
    norms) runs on the rows without padding.

    Args:
        item_masks: per item of ``pack``, its mask in its own layout: (B_k, N_k, N_k) bool (the dense plan of the
            item's tokens), or None (every real key); padded keys must be masked.
        info: what ``pack`` returned for those items (``info.index``, ``info.pads``).
    Returns:
        a ``SegmentPlan`` over the packed (R, max_len) rows, equal to the rows' dense mask restricted to each item's
        own mask (unused slots of the rows attend nothing that matters: their outputs are never read).
    """
    if len(item_masks) != len(info.pads) or len(info.index) != len(info.pads):
        raise ValueError(
            f"item_masks: expected one mask per packed item ({len(info.pads)}) and pack's token indices, "
            f"got {len(item_masks)} masks and {len(info.index)} indices"
        )
    n, size = info.max_len, info.num_rows * info.max_len
    device = info.pads[0].device if info.pads else torch.device("cpu")
    out_index = torch.zeros(size, dtype=torch.long, device=device)
    inverse = torch.full((size,), -1, dtype=torch.long, device=device)
    groups: list[BlockGroup] = []
    reads, writes, pad_slot, slot = [], [], None, 0
    for k, (mask, where, pad) in enumerate(zip(item_masks, info.index, info.pads, strict=True)):
        b, nk = pad.shape
        if mask is not None and tuple(mask.shape) != (b, nk, nk):
            raise ValueError(f"item_masks[{k}]: expected ({b}, {nk}, {nk}) bool, got {tuple(mask.shape)}")
        real = pad.reshape(-1).nonzero().squeeze(-1)  # (T_k,) real slots of the item's layout, in pack's order
        layout = torch.zeros(b * nk, dtype=torch.long, device=device).index_copy(0, real, where)  # pads read token 0
        write = torch.full((b * nk,), size, dtype=torch.long, device=device).index_copy(0, real, where)
        # Padding slots neither attend nor are attended: their outputs are zeroed, so no gradient passes through them.
        both = pad.unsqueeze(1) & pad.unsqueeze(2)
        allowed = both if mask is None else mask & both
        groups.append(BlockGroup(layout, layout, allowed, write.view(b, nk)))
        out_index[where] = slot + real
        inverse[where] = slot + real
        if pad_slot is None and real.numel() < b * nk:
            pad_slot = slot + int((~pad.reshape(-1)).nonzero()[0])
        reads.append(layout)
        writes.append(torch.where(write < size, write, torch.zeros_like(write)))
        slot += b * nk
    unread = inverse < 0  # tokens of no sample (the rows' unused slots)
    if bool(unread.any()):
        inverse = None if pad_slot is None else torch.where(unread, torch.full_like(inverse, pad_slot), inverse)
    return SegmentPlan(n=n, groups=groups, dense_q_index=None, dense_mask=None, dense_write_index=None,
                       out_index=out_index, index=torch.cat(reads), inverse=inverse,
                       out_inverse=torch.cat(writes))  # fmt: skip


def _ordered_indices(select: Tensor, n: int) -> Tensor:
    """(B, N) bool -> (B, max count) long indices of the True entries in order, padded with N."""
    count = int(select.sum(-1).max())
    idx = torch.arange(n, device=select.device).expand_as(select)
    idx = torch.where(select, idx, torch.full_like(idx, n))
    return idx.sort(dim=-1).values[:, :count]


def _rows_mask(mask: Mask, tokens: Tokens, rows: Tensor, keys: Side) -> Tensor:
    """(B, R) query indices (N = padding slot) -> (B, R, N) bool mask rows; padding slots allow nothing."""
    b, n = tokens.pad.shape
    q = Side.of(tokens, "query", rows.clamp(max=n - 1))
    allowed = mask.with_boundaries(q, keys).expand(b, rows.shape[1], n)
    return allowed & (rows < n).unsqueeze(-1)


def choose_path(path: AttentionPath, n: int, device: torch.device, training: bool) -> AttentionPath:
    """``auto``: dense for short sequences, flex on CUDA, sparse on CPU.

    On CPU the sparse path is also the faster one for inference (``benchmarks/masks.py`` compares them; the figures
    are in ``benchmarks/results/RESULTS.md``), and it needs no compilation. ``training`` is kept for devices where the
    choice differs (FlexAttention has no CPU backward in torch 2.11)."""
    if path != "auto":
        return path
    if n < SMALL:
        return "dense"
    if device.type == "cuda":
        return "flex"
    return "sparse"


def plan(mask: Mask, tokens: Tokens, path: AttentionPath) -> Plan:
    """The mask in the form ``path`` runs: None (nothing masked), a dense bool tensor, a BlockMask or a SparsePlan."""
    if mask.is_full and bool(tokens.pad.all()) and bool((tokens.sample == tokens.sample[:, :1]).all()):
        return None
    if path == "dense":
        return mask.dense(tokens)
    if path == "flex" and flex_unsupported(mask) is None:
        return block_mask(mask, tokens)
    if path in ("flex", "sparse"):  # a mask flex cannot compile runs on the sparse path (device-agnostic)
        sparse = sparse_plan(mask, tokens)
        # A mask that is not sparse (every block needs most keys) runs faster densely.
        return sparse if sparse.gathered_fraction <= MAX_GATHERED else mask.dense(tokens)
    check_choice("attention", path, AttentionPath)
    raise AssertionError(path)


def signature(tokens: Tokens) -> str:
    """A digest of everything a mask may read (not the embeddings): equal metadata, equal masks."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in tokens.meta().items():
        h.update(str((name, tuple(t.shape), t.dtype)).encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def _nbytes(value: object) -> int:
    """Bytes held by a plan's tensors (a BlockMask's are counted through its own tensors)."""
    if value is None:
        return 0
    if isinstance(value, Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, SparsePlan):
        tensors = [value.out_index, value.dense_q_index, value.dense_mask]
        tensors += [t for g in value.groups for t in (g.q_index, g.kv_index, g.mask, g.safe_mask, g.has_key)]
        return sum(_nbytes(t) for t in tensors)
    return sum(_nbytes(t) for t in getattr(value, "as_tuple", lambda: ())() if isinstance(t, Tensor))


class PlanCache:
    """Plans kept across steps (least recently used first out), keyed by (mask, path, device, metadata digest),
    within ``max_entries`` plans and ``max_bytes`` of tensors: a plan bigger than the budget is used, not kept."""

    def __init__(self, max_entries: int = 16, max_bytes: int = 256 << 20) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._plans: OrderedDict[tuple, tuple[object, int]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        return sum(size for _, size in self._plans.values())

    def get(self, mask: Mask, tokens: Tokens, path: AttentionPath) -> Plan:
        key = (mask, path, str(tokens.x.device), signature(tokens))
        if key in self._plans:
            self.hits += 1
            self._plans.move_to_end(key)
            return self._plans[key][0]
        self.misses += 1
        value = plan(mask, tokens, path)
        size = _nbytes(value)
        if size <= self.max_bytes:
            self._plans[key] = (value, size)
            while len(self._plans) > self.max_entries or self.nbytes > self.max_bytes:
                self._plans.popitem(last=False)
        return value

    def clear(self) -> None:
        self._plans.clear()
