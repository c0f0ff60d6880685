"""The shared trunk: pre-norm transformer blocks, modality-blind.

Shape legend
    B batch   N tokens (new tokens when decoding)   C cached tokens   M context tokens (cross-attention)
    D width   L depth   H heads   Dh head width
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from omni.attention import masks as mask_lib
from omni.attention.kernels import attend, segment_attention, stream_attention
from omni.attention.masks import Mask
from omni.attention.plans import AttentionPath, Plan, SegmentPlan, StreamPlan
from omni.choices import check_literal_fields
from omni.dropout import Dropout
from omni.layers import MLP, ActName, DropPath, NormName, make_norm

__all__ = ["Attention", "Block", "KVCache", "KVState", "Transformer", "TransformerConfig"]


@dataclass
class TransformerConfig:
    """Sizes and options of the trunk. ``dim``, ``depth`` and ``heads`` are required; unknown keys raise.

    Attributes:
        dim: width D.
        depth: number of blocks L.
        heads: attention heads (must divide ``dim``).
        mlp_ratio: MLP hidden width / D.
        qkv_bias: bias on the query/key/value projection (ViT: True).
        qk_norm: LayerNorm on queries and keys per head.
        dropout: dropout after attention and MLP projections.
        attn_dropout: dropout on attention weights.
        mlp_dropout: dropout on the MLP's hidden units; None = ``dropout`` (timm's ViT). GPT-2, and so the Decision
            Transformer of Hugging Face and CORL, has none: 0.
        drop_path: stochastic depth rate at the last block (linearly increasing from 0 over depth).
        norm: ``layernorm`` or ``rmsnorm``.
        norm_eps: epsilon of every norm.
        act: MLP activation.
        cross_attention: add cross-attention to a context in every block (Whisper's decoder).
        final_norm: normalise the trunk's output.
        masks: the per-layer mask schedule, repeated over depth, e.g. ``[local, local, global]``. Each entry is a
            name from ``mask_defs`` or an expression of ``omni.masks`` (``full``, ``causal``, ``local(radius=2)``).
        mask_defs: {name: mask expression}, e.g. ``{local: "local(radius=1) | global_tokens()", global: full}``.
        attention: how masked attention runs: ``dense`` (bool mask + SDPA), ``flex`` (FlexAttention BlockMask,
            compiled), ``sparse`` (gathered key blocks; CPU training) or ``auto`` (chosen per device and length).
        exits: {modality name: L_m}: that modality's tokens take part in the first L_m blocks only (1 <= L_m <=
            depth); the later blocks run on the other tokens (their masks built on those) and leave the exited
            tokens' states as they were (the final norm still applies to them). Late fusion for a modality whose
            tokens later layers need not update: ``{camera: 2}`` runs the last layers of a detector on its radar
            points and queries alone. ``OmniModel`` resolves the names; empty = every token in every block.
    """

    dim: int
    depth: int
    heads: int
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    qk_norm: bool = False
    dropout: float = 0.0
    attn_dropout: float = 0.0
    mlp_dropout: float | None = None
    drop_path: float = 0.0
    norm: NormName = "layernorm"
    norm_eps: float = 1e-6
    act: ActName = "gelu"
    cross_attention: bool = False
    final_norm: bool = True
    masks: list[str] = field(default_factory=lambda: ["full"])
    mask_defs: dict[str, str] = field(default_factory=dict)
    attention: AttentionPath = "auto"
    exits: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("dim", "depth", "heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TransformerConfig.{name}: expected a positive int, got {value!r}")
        if self.dim % self.heads:
            raise ValueError(f"TransformerConfig.heads: expected a divisor of dim={self.dim}, got {self.heads}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"TransformerConfig.mlp_ratio: expected > 0, got {self.mlp_ratio}")
        for name in ("dropout", "attn_dropout", "drop_path", "mlp_dropout"):
            if name == "mlp_dropout" and self.mlp_dropout is None:
                continue
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"TransformerConfig.{name}: expected a rate in [0, 1), got {getattr(self, name)}")
        check_literal_fields(self)
        if isinstance(self.masks, str) or not self.masks:
            raise ValueError(f"TransformerConfig.masks: expected a non-empty list of mask names, got {self.masks!r}")
        self.layer_masks()  # parse now: a typo fails at construction, not at the first forward
        if not isinstance(self.exits, Mapping):
            raise ValueError(f"TransformerConfig.exits: expected {{modality name: layers}}, got {self.exits!r}")
        for name, layers in self.exits.items():
            if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= self.depth:
                raise ValueError(
                    f"TransformerConfig.exits.{name}: expected a number of layers in [1, depth={self.depth}], "
                    f"got {layers!r}"
                )

    def layer_masks(self) -> list[Mask]:
        """One mask expression per layer: the schedule repeated over depth, names resolved through mask_defs."""
        defs: dict[str, Mask] = {}
        for name, text in self.mask_defs.items():
            try:
                defs[name] = mask_lib.parse(text, defs)
            except ValueError as e:
                raise ValueError(f"TransformerConfig.mask_defs.{name}: {e}") from e
        out = []
        for i in range(self.depth):
            name = self.masks[i % len(self.masks)]
            try:
                out.append(defs[name] if name in defs else mask_lib.from_name(name))
            except ValueError as e:
                raise ValueError(f"TransformerConfig.masks[{i % len(self.masks)}]: {e}") from e
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TransformerConfig:
        """Build from a plain mapping (YAML); an unknown key raises ``ValueError`` naming it."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"TransformerConfig: unknown keys {unknown}; expected some of {sorted(known)}")
        missing = sorted(f.name for f in fields(cls) if f.name in ("dim", "depth", "heads") and f.name not in values)
        if missing:
            raise ValueError(f"TransformerConfig: missing required keys {missing}")
        return cls(**values)


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

    def apply(self, fn: Callable[[Tensor], Tensor]) -> None:
        """Replace k and v by ``fn`` of them (a batch reorder, a cut along the key axis)."""
        if self.k is not None:
            self.k, self.v = fn(self.k), fn(self.v)


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
        self.proj_drop = Dropout(proj_dropout)

    def context_kv(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-attention keys and values of a context: (B, M, D) -> two (B, H, M, Dh)."""
        k, v = rearrange(self.kv(context), "b m (two h d) -> two b h m d", two=2, h=self.heads)
        return self.k_norm(k), v

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
            k, v = self.context_kv(context)
            if state is not None:
                state.k, state.v, state.static = k, v, True
        return self.q_norm(q), k, v

    def forward(
        self,
        x: Tensor,
        mask: Plan = None,
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
        dropout = self.attn_dropout if self.training else 0.0
        if isinstance(mask, SegmentPlan | StreamPlan) and not self.cross and state is None:
            b = x.shape[0]  # packed rows, sample by sample: from the fused projection
            qkv = rearrange(self.qkv(x), "b n c -> (b n) c")
            run = segment_attention if isinstance(mask, SegmentPlan) else stream_attention
            out = run(qkv, mask, self.heads, self.q_norm, self.k_norm, dropout)
            return self.proj_drop(self.proj(rearrange(out, "(b n) c -> b n c", b=b)))
        q, k, v = self._project(x, context, state)
        out = attend(q, k, v, mask, dropout)
        return self.proj_drop(self.proj(rearrange(out, "b h n d -> b n (h d)")))


@dataclass
class KVCache:
    """Per-layer keys/values for step-by-step decoding. ``self_attn[i]`` grows by the new tokens of every call;
    ``cross_attn[i]`` holds the context's keys/values, computed once (by ``Transformer.new_cache(context)`` or on
    the first call); ``context_pad`` (B, M) bool, True where a context token is real, masks the rest out."""

    self_attn: list[KVState] = field(default_factory=list)
    cross_attn: list[KVState] = field(default_factory=list)
    context_pad: Tensor | None = None

    @property
    def length(self) -> int:
        """Tokens already decoded (keys held by the self-attention caches)."""
        return self.self_attn[0].length if self.self_attn else 0

    def _apply(self, fn: Callable[[Tensor], Tensor], cross: bool) -> None:
        for state in self.self_attn + (self.cross_attn if cross else []):
            state.apply(fn)
        if cross and self.context_pad is not None:
            self.context_pad = fn(self.context_pad)

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (R,) long, in that order (beam search): every cached K/V, context included."""
        self._apply(lambda t: t.index_select(0, index.to(t.device)), cross=True)

    def expand(self, beams: int) -> None:
        """Repeat each batch row ``beams`` times in place (rows b*beams ... b*beams + beams-1 copy row b)."""
        self._apply(lambda t: t.repeat_interleave(beams, dim=0), cross=True)

    def drop(self, count: int) -> None:
        """Forget the ``count`` oldest cached self-attention keys/values (a rolling window)."""
        self._apply(lambda t: t[:, :, count:], cross=False)


class Block(nn.Module):
    """Pre-norm block: x + attn(norm(x)) [+ cross(norm(x), context)] + mlp(norm(x))."""

    def __init__(self, cfg: TransformerConfig, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = make_norm(cfg.norm, cfg.dim, cfg.norm_eps)
        self.attn = self._attention(cfg, cross=False)
        if cfg.cross_attention:
            self.norm_cross = make_norm(cfg.norm, cfg.dim, cfg.norm_eps)
            self.cross = self._attention(cfg, cross=True)
        else:
            self.cross = None
        self.norm2 = make_norm(cfg.norm, cfg.dim, cfg.norm_eps)
        hidden_dropout = cfg.dropout if cfg.mlp_dropout is None else cfg.mlp_dropout
        self.mlp = MLP(
            cfg.dim, int(cfg.dim * cfg.mlp_ratio), act=cfg.act, dropout=cfg.dropout, hidden_dropout=hidden_dropout
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    @staticmethod
    def _attention(cfg: TransformerConfig, cross: bool) -> Attention:
        return Attention(
            cfg.dim,
            cfg.heads,
            qkv_bias=cfg.qkv_bias,
            qk_norm=cfg.qk_norm,
            attn_dropout=cfg.attn_dropout,
            proj_dropout=cfg.dropout,
            cross=cross,
            norm_eps=cfg.norm_eps,
        )

    def forward(
        self,
        x: Tensor,
        mask: Plan = None,
        *,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        state: KVState | None = None,
        cross_state: KVState | None = None,
        active: Tensor | None = None,
    ) -> Tensor:
        """(B, N, D) -> (B, N, D); ``mask`` (B, N, N[+cached]) bool, ``context_mask`` (B, N, M) bool.

        ``active``: (N',) long, the tokens that take part (``TransformerConfig.exits``); the block runs on x[:, active]
        alone (``mask`` and ``context_mask`` then cover those N' tokens) and the other tokens come out unchanged."""
        if active is None:
            return self._run(x, mask, context, context_mask, state, cross_state)
        if state is not None or cross_state is not None:
            raise ValueError("active: a block run on a subset of its tokens (exits) cannot extend a KV cache")
        return x.index_copy(1, active, self._run(x.index_select(1, active), mask, context, context_mask, None, None))

    def _run(
        self,
        x: Tensor,
        mask: Plan,
        context: Tensor | None,
        context_mask: Tensor | None,
        state: KVState | None,
        cross_state: KVState | None,
    ) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), mask, state=state))
        if self.cross is not None:
            x = x + self.drop_path(self.cross(self.norm_cross(x), context_mask, context=context, state=cross_state))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Transformer(nn.Module):
    """A stack of pre-norm blocks. Sees only embeddings and masks: which modality a token came from is already
    in its embedding."""

    def __init__(self, config: TransformerConfig | Mapping[str, Any]) -> None:
        super().__init__()
        cfg = config if isinstance(config, TransformerConfig) else TransformerConfig.from_dict(config)
        self.config = cfg
        rates = torch.linspace(0, cfg.drop_path, cfg.depth).tolist() if cfg.depth > 1 else [cfg.drop_path]
        self.blocks = nn.ModuleList(Block(cfg, rate) for rate in rates)
        self.norm = make_norm(cfg.norm, cfg.dim, cfg.norm_eps) if cfg.final_norm else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # ViT's initialisation (timm): truncated normal for linear weights, zero bias.
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def new_cache(self, context: Tensor | None = None, context_pad: Tensor | None = None) -> KVCache:
        """An empty cache for step-by-step decoding; with a ``context`` (B, M, D) (and its ``context_pad`` (B, M)
        bool, True = real), every layer's cross-attention keys/values are computed now, once."""
        n = len(self.blocks)
        cache = KVCache([KVState() for _ in range(n)], [KVState() for _ in range(n)])
        if context is not None:
            self._check_context(context, context_pad, context.shape[0])
            for block, state in zip(self.blocks, cache.cross_attn, strict=True):
                state.k, state.v = block.cross.context_kv(context)
                state.static = True
            cache.context_pad = context_pad
        return cache

    def _check_context(self, context: Tensor | None, context_pad: Tensor | None, batch: int) -> None:
        if not self.config.cross_attention:
            if context is not None:
                raise ValueError("context: this trunk has no cross-attention (cross_attention: false), got a context")
            return
        d = self.config.dim
        if context is not None and (context.ndim != 3 or context.shape[0] != batch or context.shape[2] != d):
            raise ValueError(f"context: expected (B={batch}, M, D={d}), got {tuple(context.shape)}")
        if context is not None and context_pad is not None and context_pad.shape != context.shape[:2]:
            want, got = tuple(context.shape[:2]), tuple(context_pad.shape)
            raise ValueError(f"context_pad: expected (B, M) = {want}, got {got}")

    def forward(
        self,
        x: Tensor,
        mask: Plan | Sequence[Plan] = None,
        *,
        context: Tensor | None = None,
        context_pad: Tensor | None = None,
        cache: KVCache | None = None,
        active: Sequence[Tensor | None] | None = None,
    ) -> Tensor:
        """Mix tokens.

        Args:
            x: (B, N, D) token embeddings.
            mask: (B, N, N) bool (True = may attend), a ``SparsePlan`` or a FlexAttention ``BlockMask``; one per
                layer as a list; or None for full attention. With ``cache``, keys are the C cached ones then the N
                new ones: masks are (B, N, C + N) bool rows (``Mask.dense(tokens, rows=...)`` builds them), and
                None lets every new token see every key (nothing is made causal for you).
            context: (B, M, D) for cross-attention; with a ``cache`` that already holds the context's keys/values
                it is not needed (and not read).
            context_pad: (B, M) bool, True where a context token is real; a padded one is never attended.
            cache: a ``KVCache`` from ``new_cache()``; it is extended in place with this call's keys/values.
            active: per layer, None (every token) or (N_l,) long indices of the tokens that block runs on; that
                layer's mask then covers those N_l tokens (``OmniModel.mix`` builds both from ``exits``).
        Returns:
            (B, N, D)
        """
        if x.ndim != 3 or x.shape[-1] != self.config.dim:
            raise ValueError(f"x: expected (B, N, D={self.config.dim}), got {tuple(x.shape)}")
        b, n, _ = x.shape
        masks = list(mask) if isinstance(mask, list | tuple) else [mask] * len(self.blocks)
        if len(masks) != len(self.blocks):
            raise ValueError(f"mask: expected one mask per layer ({len(self.blocks)}), got {len(masks)}")
        actives = list(active) if active is not None else [None] * len(self.blocks)
        if len(actives) != len(self.blocks):
            raise ValueError(f"active: expected one entry per layer ({len(self.blocks)}), got {len(actives)}")
        self._check_context(context, context_pad, b)
        context_mask = None
        if self.config.cross_attention:
            cached = cache is not None and cache.cross_attn[0].k is not None
            if context is None and not cached:
                raise ValueError("context: this trunk has cross-attention and expected a (B, M, D) context, got None")
            if cache is not None and not cached:
                cache.context_pad = context_pad
            pad = context_pad if context_pad is not None or cache is None else cache.context_pad
            if pad is not None:
                context_mask = pad.unsqueeze(1).expand(b, n, pad.shape[-1])
        for i, block in enumerate(self.blocks):
            rows = actives[i]
            x = block(
                x,
                masks[i],
                context=context,
                context_mask=context_mask if rows is None or context_mask is None else context_mask[:, rows],
                state=cache.self_attn[i] if cache is not None else None,
                cross_state=cache.cross_attn[i] if cache is not None else None,
                active=rows,
            )
        return self.norm(x)
