"""Building blocks: attention, MLP, norms, position encodings.

Shape legend
    B  batch     N  query tokens     M  key/value tokens     D  width
    H  heads     Dh head width (D // H)     P  coordinate dims
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from omni.mask_plans import SparsePlan

__all__ = [
    "MLP",
    "Attention",
    "DropPath",
    "FourierFeatures",
    "KVState",
    "attend",
    "make_norm",
    "masked_sdpa",
    "sincos_1d",
    "sincos_2d",
]

NormName = Literal["layernorm", "rmsnorm"]
ActName = Literal["gelu", "relu", "silu"]

_ACTS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}


def make_norm(kind: NormName, dim: int, eps: float = 1e-6) -> nn.Module:
    """The one mapping from a norm's name to its module."""
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps)
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, eps=eps)
    raise ValueError(f"norm: expected one of 'layernorm', 'rmsnorm', got {kind!r}")


def make_act(kind: ActName) -> nn.Module:
    if kind not in _ACTS:
        raise ValueError(f"act: expected one of {sorted(_ACTS)}, got {kind!r}")
    return _ACTS[kind]()


# ---------------------------------------------------------------------------- position encodings
def sincos_1d(pos: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Transformer sin-cos encoding of real-valued positions.

    Args:
        pos: (...,) positions (any real values).
        dim: output width, even.
    Returns:
        (..., dim): [sin(pos * w_i), cos(pos * w_i)] with w_i = max_period ** (-i / (dim / 2)).
    """
    if dim % 2:
        raise ValueError(f"dim: expected an even width for sin-cos encoding, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=pos.device, dtype=torch.float32) / half)
    angles = pos.float().unsqueeze(-1) * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def sincos_2d(rows: Tensor, cols: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """2-D sin-cos encoding (MAE / ViT style): half the width encodes the row, half the column.

    Args:
        rows, cols: (...,) coordinates.
        dim: output width, divisible by 4.
    Returns:
        (..., dim)
    """
    if dim % 4:
        raise ValueError(f"dim: expected a width divisible by 4 for 2-D sin-cos encoding, got {dim}")
    return torch.cat([sincos_1d(rows, dim // 2, max_period), sincos_1d(cols, dim // 2, max_period)], dim=-1)


class FourierFeatures(nn.Module):
    """Random Fourier features of continuous coordinates (Tancik et al. 2020): [sin(2π Bx), cos(2π Bx)].

    The projection ``B`` is a fixed buffer drawn from N(0, scale²) so that the encoding is deterministic
    for a given seed and saved with the model.
    """

    def __init__(self, in_dims: int, num_features: int = 32, scale: float = 1.0) -> None:
        super().__init__()
        if in_dims < 1 or num_features < 1:
            raise ValueError(
                f"FourierFeatures: expected in_dims >= 1 and num_features >= 1, got {in_dims}, {num_features}"
            )
        self.register_buffer("proj", torch.randn(in_dims, num_features) * scale)
        self.out_dim = 2 * num_features

    def forward(self, coords: Tensor) -> Tensor:
        """(..., in_dims) -> (..., 2 * num_features)"""
        angles = 2 * math.pi * coords.float() @ self.proj
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


# ---------------------------------------------------------------------------- feed-forward
class MLP(nn.Module):
    """Linear -> activation -> dropout -> Linear -> dropout, as in ViT."""

    def __init__(self, dim: int, hidden: int, act: ActName = "gelu", dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = make_act(act)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, D) -> (B, N, D)"""
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth: drop a whole residual branch per sample while training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty(x.shape[0], *([1] * (x.ndim - 1))).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


# ---------------------------------------------------------------------------- attention
@dataclass
class KVState:
    """Keys and values kept between decoding steps for one attention layer.

    Attributes:
        k, v: (B, H, M, Dh) keys and values seen so far (None before the first step).
        static: True for cross-attention, whose keys come from a fixed context and are computed once.
    """

    k: Tensor | None = None
    v: Tensor | None = None
    static: bool = False

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.shape[2]


class Attention(nn.Module):
    """Multi-head attention through ``scaled_dot_product_attention``.

    One mask convention: a boolean mask, True = may attend. A query row whose mask allows no key returns zeros
    (never NaN). ``mask=None`` means every key is allowed and takes SDPA's unmasked fast path.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        attn_dropout: float = 0.0,
        proj_dropout: float = 0.0,
        cross: bool = False,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"heads: expected a divisor of dim={dim}, got {heads}")
        self.heads = heads
        self.cross = cross
        if cross:
            self.q = nn.Linear(dim, dim, bias=qkv_bias)
            self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        else:
            self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        head_dim = dim // heads
        self.q_norm = nn.LayerNorm(head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.attn_dropout = attn_dropout
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_dropout)

    def _project(self, x: Tensor, context: Tensor | None, state: KVState | None) -> tuple[Tensor, Tensor, Tensor]:
        """Queries from ``x``; keys/values from ``x`` (self) or ``context`` (cross), cached in ``state``."""
        if not self.cross:
            q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
            k = self.k_norm(k)
            if state is not None:
                if state.k is not None:
                    k = torch.cat([state.k, k], dim=2)
                    v = torch.cat([state.v, v], dim=2)
                state.k, state.v = k, v
            return self.q_norm(q), k, v
        q = rearrange(self.q(x), "b n (h d) -> b h n d", h=self.heads)
        if state is not None and state.k is not None:
            k, v = state.k, state.v
        else:
            if context is None:
                raise ValueError("context: cross-attention expected a (B, M, D) context tensor, got None")
            k, v = rearrange(self.kv(context), "b m (two h d) -> two b h m d", two=2, h=self.heads)
            k = self.k_norm(k)
            if state is not None:
                state.k, state.v, state.static = k, v, True
        return self.q_norm(q), k, v

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        *,
        context: Tensor | None = None,
        state: KVState | None = None,
    ) -> Tensor:
        """Attend.

        Args:
            x: (B, N, D) queries (and keys/values for self-attention).
            mask: (B, N, M) or (B, 1, N, M) bool, True = may attend; None = all keys. With a KV cache, M counts
                the cached keys too.
            context: (B, M, D) keys/values for cross-attention.
            state: this layer's ``KVState`` while decoding step by step.
        Returns:
            (B, N, D)
        """
        q, k, v = self._project(x, context, state)
        dropout = self.attn_dropout if self.training else 0.0
        out = attend(q, k, v, mask, dropout)
        return self.proj_drop(self.proj(rearrange(out, "b h n d -> b n (h d)")))


# ---------------------------------------------------------------------------- attention paths
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
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=safe_mask, dropout_p=dropout)
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


_compiled_flex = None


def flex_attention(q: Tensor, k: Tensor, v: Tensor, block_mask) -> Tensor:
    """Compiled FlexAttention on a BlockMask. Fully masked rows give zeros."""
    global _compiled_flex
    if q.device.type == "cpu" and torch.is_grad_enabled() and (q.requires_grad or k.requires_grad):
        raise ValueError(
            "attention: the 'flex' path has no CPU backward in torch 2.11; use 'sparse' or 'dense' to train on CPU"
        )
    if _compiled_flex is None:
        from torch.nn.attention.flex_attention import flex_attention as _flex

        _compiled_flex = torch.compile(_flex, dynamic=False)
    return _compiled_flex(q, k, v, block_mask=block_mask)


def attend(q: Tensor, k: Tensor, v: Tensor, mask: object, dropout: float = 0.0) -> Tensor:
    """Run attention on whichever form the mask was built in: None (all keys), a dense bool tensor, a
    ``SparsePlan`` or a FlexAttention ``BlockMask``. (B, H, N, Dh) in and out."""
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
    if isinstance(mask, Tensor):
        return masked_sdpa(q, k, v, mask, dropout)
    if isinstance(mask, SparsePlan):
        return sparse_attention(q, k, v, mask, dropout)
    return flex_attention(q, k, v, mask)
