"""Attention kernels: run SDPA on whichever form a mask plan took (None, a dense bool tensor, a ``SparsePlan`` or a
FlexAttention ``BlockMask``). One convention everywhere: boolean masks, True = may attend; a query with no key to
attend gets zeros, never NaN.

Shape legend
    B batch   H heads   N query tokens   M key tokens   Dh head width   G query blocks of one width
    Bq rows per block   Kc key columns gathered per block   Rd dense query rows
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from omni.attention.plans import Plan, SegmentPlan, SparsePlan, StreamPlan, StreamSegment
from omni.dropout import dropout as fast_dropout

__all__ = [
    "attend",
    "flex_attention",
    "masked_sdpa",
    "safe_sdpa",
    "sdpa",
    "segment_attention",
    "sparse_attention",
    "stream_attention",
]


def sdpa(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None, dropout: float = 0.0) -> Tensor:
    """``F.scaled_dot_product_attention``, except with dropout on CPU: there the weights are written out (as SDPA's
    own math path does) and dropped with ``omni.dropout``, whose CPU mask costs a fraction of ``bernoulli_``'s.

    Args:
        q: (B, H, N, Dh); k, v: (B, H, M, Dh); attn_mask: None or bool broadcastable to (B, H, N, M), True = may
            attend, every row allowing at least one key.
    Returns:
        (B, H, N, Dh)
    """
    autocast = q.dtype == torch.float32 and torch.is_autocast_enabled("cpu")  # float64 is not autocast's to cast
    if q.device.type == "cpu" and (q.dtype in _HALF or autocast):
        return _sdpa_float32(q, k, v, attn_mask, dropout)
    if dropout == 0.0 or q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (B, H, N, M)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return fast_dropout(scores.softmax(dim=-1), dropout) @ v


_HALF = (torch.bfloat16, torch.float16)


def _sdpa_float32(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None, dropout: float) -> Tensor:
    """``sdpa`` in float32 with autocast off, the result cast back to the dtype autocast (or the inputs) chose.

    On the CPU, torch 2.11's fused attention backward in bfloat16 takes about 10x as long as in float32 (a trunk
    layer of the digits recognizer: 13 ms vs 1.1 ms), enough to make a whole bf16-mixed step slower than float32.
    Under autocast, float32 inputs alone do not help: autocast casts them back down, hence the ``autocast`` block."""
    out_dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else q.dtype
    with torch.autocast("cpu", enabled=False):
        out = sdpa(q.float(), k.float(), v.float(), attn_mask, dropout)
    return out.to(out_dtype)


def masked_sdpa(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, dropout: float = 0.0) -> Tensor:
    """SDPA with a bool mask (True = may attend); a query row with no key gets zeros, never NaN.

    Args:
        q: (B, H, N, Dh); k, v: (B, H, M, Dh); mask: (B, N, M) or (B, 1|H, N, M) bool.
    Returns:
        (B, H, N, Dh)
    """
    if mask.ndim == 3:
        mask = mask.unsqueeze(1)  # the same mask for every head
    if mask.shape[-2:] != (q.shape[2], k.shape[2]):
        raise ValueError(f"mask: expected (B, N, M) = (.., {q.shape[2]}, {k.shape[2]}) bool, got {tuple(mask.shape)}")
    has_key = mask.any(dim=-1, keepdim=True)  # (B, 1, N, 1)
    # A row with no key would give softmax over nothing (NaN): let it see everything, then zero it.
    return safe_sdpa(q, k, v, mask | ~has_key, has_key, dropout)


def safe_sdpa(q: Tensor, k: Tensor, v: Tensor, safe_mask: Tensor, has_key: Tensor | None, dropout: float) -> Tensor:
    """SDPA on a mask already made safe (every row allows a key); ``has_key`` (.., N, 1) zeroes the rows that had
    none, None when every row had one (a plan knows this in advance)."""
    out = sdpa(q, k, v, safe_mask, dropout)
    return out if has_key is None else out * has_key


_workspace = threading.local()


def _buffer(name: str, rows: int, like: Tensor) -> Tensor:
    """A reusable (rows, width) buffer per thread, grown when needed: inference on the sparse path gathers into
    these instead of allocating (and page-faulting) tens of MB of fresh temporaries every layer."""
    width = like.shape[-1]
    store = getattr(_workspace, "buffers", None)
    if store is None:
        store = _workspace.buffers = {}
    key = (name, like.dtype, like.device)
    buf = store.get(key)
    if buf is None or buf.numel() < rows * width:
        buf = store[key] = torch.empty(rows * width, dtype=like.dtype, device=like.device)
    return buf[: rows * width].view(rows, width)


def sparse_attention(q: Tensor, k: Tensor, v: Tensor, plan: SparsePlan, dropout: float = 0.0) -> Tensor:
    """Attention on a ``SparsePlan``: per group of query blocks, SDPA over the gathered key columns only.

    Queries, keys and values are gathered as whole rows of (B * N, H * Dh) — a view of the projection's output, so
    each gather is a plain row copy. With autograd, outputs are read back in token order with one more row
    gather; without it, gathers go to reused buffers and outputs are written in place.

    Args:
        q, k, v: (B, H, N, Dh)
    Returns:
        (B, H, N, Dh), equal to ``masked_sdpa`` with the plan's dense mask.
    """
    b, h = q.shape[:2]

    def rows(t: Tensor) -> Tensor:  # (B, H, N, Dh) -> (B * N, H * Dh), a view when t came from one projection
        return rearrange(t, "b h n d -> (b n) (h d)")

    qf, kf, vf = rows(q), rows(k), rows(v)
    inference = not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad))

    def gather(name: str, src: Tensor, index: Tensor) -> Tensor:
        if not inference:
            return src.index_select(0, index)
        return torch.index_select(src, 0, index, out=_buffer(name, index.numel(), src))

    if inference:
        out = torch.empty(qf.shape[0] + 1, qf.shape[1], dtype=q.dtype, device=q.device)  # + a dump row
        out3 = rearrange(out, "t (h d) -> t h d", h=h)
    outs = []
    for g in plan.groups:
        bq, kc = g.mask.shape[1:]
        qb = rearrange(gather("q", qf, g.q_index), "(g q) (h d) -> g h q d", q=bq, h=h)
        kb = rearrange(gather("k", kf, g.kv_index), "(g k) (h d) -> g h k d", k=kc, h=h)
        vb = rearrange(gather("v", vf, g.kv_index), "(g k) (h d) -> g h k d", k=kc, h=h)
        ob = safe_sdpa(qb, kb, vb, g.safe_mask, g.has_key, dropout)  # (G, H, Bq, Dh)
        if inference:
            out3.index_put_((g.write_index,), rearrange(ob, "g h q d -> g q h d"))
        else:
            outs.append(rearrange(ob, "g h q d -> (g q) (h d)"))
    if plan.dense_q_index is not None:
        qd = rearrange(qf.index_select(0, plan.dense_q_index), "(b r) (h d) -> b h r d", b=b, h=h)
        od = masked_sdpa(qd, k, v, plan.dense_mask, dropout)  # (B, H, Rd, Dh)
        if inference:
            out3.index_put_((plan.dense_write_index,), rearrange(od, "b h r d -> b r h d"))
        else:
            outs.append(rearrange(od, "b h r d -> (b r) (h d)"))
    if inference:
        return rearrange(out[:-1], "(b n) (h d) -> b h n d", b=b, h=h)
    out = torch.cat(outs).index_select(0, plan.out_index)  # (B * N, H * Dh) in token order
    return rearrange(out, "(b n) (h d) -> b h n d", b=b, h=h)


class _GatherRows(torch.autograd.Function):
    """``src.index_select(0, index)`` whose backward is a gather too: ``grad.index_select(0, inverse)``. Exact when
    every row of ``src`` is read by the output row ``inverse`` names, and any other output row reading it gets no
    gradient (a padding slot) — the case of a segment plan, whose slots are its tokens once each."""

    @staticmethod
    def forward(ctx: Any, src: Tensor, index: Tensor, inverse: Tensor) -> Tensor:
        ctx.save_for_backward(inverse)
        return src.index_select(0, index)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (inverse,) = ctx.saved_tensors
        return grad.index_select(0, inverse), None, None


def _gather_rows(src: Tensor, index: Tensor, inverse: Tensor | None) -> Tensor:
    if inverse is None or not (torch.is_grad_enabled() and src.requires_grad):
        return src.index_select(0, index)
    return _GatherRows.apply(src, index, inverse)


def segment_attention(
    qkv: Tensor,
    plan: SegmentPlan,
    heads: int,
    q_norm: Callable[[Tensor], Tensor],
    k_norm: Callable[[Tensor], Tensor],
    dropout: float = 0.0,
) -> Tensor:
    """Self-attention on a ``segment_plan`` (packed rows, sample by sample), from the fused projection.

    Each group's queries are its keys, so one row gather of the fused (B * N, 3 * H * Dh) projection gives every
    group's queries, keys and values at once; its backward, like that of the gather that puts the outputs back in
    token order, is a gather as well (gathering q, k and v apart, as ``sparse_attention`` must, costs three
    zero-filled gradients, scatter-adds and a strided copy that stacks them).

    Args:
        qkv: (B * N, 3 * H * Dh) the projection's output, (three h d) along the last axis.
        plan: a ``SegmentPlan``.
        heads: H.
        q_norm, k_norm: per-head norms (or ``nn.Identity``), applied after the gather.
    Returns:
        (B * N, H * Dh) in token order (tokens in no group get another token's output: they are never read).
    """
    if not isinstance(plan, SegmentPlan):
        raise ValueError(f"plan: expected a SegmentPlan (segment_plan), got {type(plan).__name__}")
    rows = _gather_rows(qkv, plan.index, plan.inverse)  # (M, 3 * H * Dh), every group's slots in turn
    sizes = [g.mask.shape[0] * g.mask.shape[1] for g in plan.groups]
    outs = []
    for g, part in zip(plan.groups, rows.split(sizes), strict=True):  # split: its backward is one cat, no zeros
        bq = g.mask.shape[1]
        q, k, v = rearrange(part, "(g n) (three h d) -> three g h n d", n=bq, three=3, h=heads)
        ob = safe_sdpa(q_norm(q), k_norm(k), v, g.safe_mask, g.has_key, dropout)  # (G, H, Bq, Dh)
        outs.append(rearrange(ob, "g h n d -> (g n) (h d)"))
    out = outs[0] if len(outs) == 1 else torch.cat(outs)
    return _gather_rows(out, plan.out_index, plan.out_inverse)


class _SplitHeads(torch.autograd.Function):
    """The stream's fused projection cut into its runs: a view run's queries, keys and values, (G, H, N, Dh) views
    each; a gathered run's rows, (size, 3 * H * Dh). Backward writes every run's gradients straight into one buffer
    (one pass; autograd's own would stack q, k and v per run, then concatenate the runs: two)."""

    @staticmethod
    def forward(ctx: Any, qkv: Tensor, segments: list[StreamSegment], heads: int) -> tuple[Tensor, ...]:
        ctx.segments, ctx.heads, ctx.spec = segments, heads, (qkv.shape, qkv.dtype, qkv.device)
        outs: list[Tensor] = []
        for seg, part in zip(segments, qkv.split([seg.size for seg in segments]), strict=True):
            if seg.index is None:
                outs += rearrange(part, "(g n) (three h d) -> three g h n d", n=seg.length, three=3, h=heads).unbind(0)
            else:
                outs.append(part)
        return tuple(outs)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple[Tensor, None, None]:  # unused outputs' grads come as zeros
        shape, dtype, device = ctx.spec
        buf = torch.empty(shape, dtype=dtype, device=device)
        it = iter(grads)
        for seg, part in zip(ctx.segments, buf.split([seg.size for seg in ctx.segments]), strict=True):
            if seg.index is None:
                dst = rearrange(part, "(g n) (three h d) -> three g h n d", n=seg.length, three=3, h=ctx.heads)
                for i in range(3):
                    dst[i].copy_(next(it))
            else:
                part.copy_(next(it))
        return buf, None, None


class _MergeHeads(torch.autograd.Function):
    """Every run's attention output back into one (T, H * Dh) stream: a view run's (G, H, N, Dh), a gathered run's
    (size, H * Dh) rows, written into one buffer (one pass); backward hands each run a view of the gradient."""

    @staticmethod
    def forward(ctx: Any, segments: list[StreamSegment], *outs: Tensor) -> Tensor:
        ctx.segments = segments
        width = outs[0].shape[1] * outs[0].shape[3] if segments[0].index is None else outs[0].shape[1]
        buf = outs[0].new_empty(sum(seg.size for seg in segments), width)
        for seg, part, out in zip(segments, buf.split([seg.size for seg in segments]), outs, strict=True):
            if seg.index is None:
                rearrange(part, "(g n) (h d) -> g h n d", n=seg.length, h=out.shape[1]).copy_(out)
            else:
                part.copy_(out)
        ctx.heads = next((o.shape[1] for seg, o in zip(segments, outs, strict=True) if seg.index is None), 1)
        return buf

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        parts = grad.split([seg.size for seg in ctx.segments])
        return (None, *(rearrange(part, "(g n) (h d) -> g h n d", n=seg.length, h=ctx.heads) if seg.index is None
                        else part for seg, part in zip(ctx.segments, parts, strict=True)))  # fmt: skip


def stream_attention(
    qkv: Tensor,
    plan: StreamPlan,
    heads: int,
    q_norm: Callable[[Tensor], Tensor],
    k_norm: Callable[[Tensor], Tensor],
    dropout: float = 0.0,
) -> Tensor:
    """Variable-length self-attention over one packed stream, from the fused projection: each item's full-length
    samples attend as views of the stream, its padded samples through one gather into their layout and one back
    (both with gather backwards). Everything between attentions runs on the stream: no padding anywhere.

    Args:
        qkv: (T, 3 * H * Dh) the projection of the stream's T tokens, (three h d) along the last axis.
        plan: the stream's ``StreamPlan``.
    Returns:
        (T, H * Dh) in stream order.
    """
    pieces = iter(_SplitHeads.apply(qkv, plan.segments, heads))
    outs = []
    for seg in plan.segments:
        if seg.index is None:
            q, k, v = next(pieces), next(pieces), next(pieces)
        else:
            rows = _gather_rows(next(pieces), seg.index, seg.inverse)
            q, k, v = rearrange(rows, "(g n) (three h d) -> three g h n d", n=seg.length, three=3, h=heads)
        q, k = q_norm(q), k_norm(k)
        if seg.safe_mask is None:
            ob = sdpa(q, k, v, None, dropout)
        else:
            ob = safe_sdpa(q, k, v, seg.safe_mask, seg.has_key, dropout)  # (G, H, N, Dh)
        if seg.index is not None:
            ob = _gather_rows(rearrange(ob, "g h n d -> (g n) (h d)"), seg.compact, seg.compact_inverse)
        outs.append(ob)
    return _MergeHeads.apply(plan.segments, *outs)


@functools.cache
def _compiled_flex():
    """FlexAttention compiled once per process (compiling is what makes it fast; lengths are bucketed upstream)."""
    from torch.nn.attention.flex_attention import flex_attention as flex

    return torch.compile(flex, dynamic=False)


def flex_attention(q: Tensor, k: Tensor, v: Tensor, block_mask) -> Tensor:
    """Compiled FlexAttention on a BlockMask. Fully masked rows give zeros."""
    if q.device.type == "cpu" and torch.is_grad_enabled() and (q.requires_grad or k.requires_grad):
        raise ValueError(
            "attention: the 'flex' path has no CPU backward in torch 2.11; use 'sparse' or 'dense' to train on CPU"
        )
    return _compiled_flex()(q, k, v, block_mask=block_mask)


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Plan, dropout: float = 0.0) -> Tensor:
    """Run attention on whichever form the mask was built in: None (all keys), a dense bool tensor, a
    ``SparsePlan`` or a FlexAttention ``BlockMask``. (B, H, N, Dh) in and out."""
    if mask is None:
        return sdpa(q, k, v, None, dropout)
    if isinstance(mask, Tensor):
        return masked_sdpa(q, k, v, mask, dropout)
    if isinstance(mask, SparsePlan):
        return sparse_attention(q, k, v, mask, dropout)
    if isinstance(mask, StreamPlan):
        raise ValueError(
            "mask: a StreamPlan runs from the fused projection (omni.transformer.Attention), not on q, k, v"
        )
    return flex_attention(q, k, v, mask)
