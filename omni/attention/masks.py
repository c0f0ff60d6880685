"""Attention masks as predicates over (query, key) token pairs that read ``Tokens`` metadata.

One convention: boolean, True = may attend. Padding and sample boundaries are always applied: a padded key is never
attended and a token never attends another sample packed into its row.

    from omni import masks
    m = (masks.local(radius=1) & masks.same_modality()) | masks.global_tokens()
    m.dense(tokens)                      # (B, N, N) bool: the reference every faster path equals
    masks.parse("local(radius=1) | global_tokens(modalities=['cls'])")   # the same, from a YAML string

A predicate is written once, with tensor operations that work both on broadcast (B, N, 1) x (B, 1, N) metadata
(the dense path) and on the scalar indices of FlexAttention's ``mask_mod`` (the flex path).

Shape legend
    B batch   N tokens   P coordinate dims
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor

from omni.tokens import Tokens

FLEX_BLOCK = 128  # FlexAttention block size; the flex path pads sequences to a multiple of it

__all__ = [
    "FLEX_BLOCK",
    "Causal",
    "Full",
    "GlobalTokens",
    "Local",
    "Mask",
    "SameModality",
    "SameSample",
    "Side",
    "block_mask",
    "causal",
    "from_name",
    "full",
    "global_tokens",
    "local",
    "parse",
    "same_modality",
    "same_sample",
]


@dataclass(frozen=True)
class Side:
    """Token metadata of the query or the key side of a pair.

    Dense path: query fields shaped (B, N, 1) and key fields (B, 1, N); ``pos`` carries a trailing P.
    Flex path: 0-d tensors (``pos``: (P,)) for one (b, q_idx, kv_idx).
    """

    index: Tensor
    modality: Tensor
    pos: Tensor
    group: Tensor
    sample: Tensor
    pad: Tensor
    is_global: Tensor

    @staticmethod
    def of(tokens: Tokens, axis: Literal["query", "key"], rows: Tensor | None = None) -> Side:
        """Broadcastable metadata; ``rows`` (R,) restricts the query side to those token indices."""
        index = torch.arange(tokens.num_tokens, device=tokens.x.device)
        meta = {
            "modality": tokens.modality,
            "pos": tokens.pos,
            "group": tokens.group,
            "sample": tokens.sample,
            "pad": tokens.pad,
            "is_global": tokens.is_global,
        }
        if rows is not None:
            index = rows
            meta = {k: v[:, rows] for k, v in meta.items()}
        index = index.unsqueeze(0)
        if axis == "query":
            return Side(
                index=index.unsqueeze(-1),
                pos=meta.pop("pos").unsqueeze(2),
                **{k: v.unsqueeze(-1) for k, v in meta.items()},
            )
        return Side(
            index=index.unsqueeze(1), pos=meta.pop("pos").unsqueeze(1), **{k: v.unsqueeze(1) for k, v in meta.items()}
        )


class Mask:
    """A predicate over (query, key) pairs. Subclasses implement ``allowed``; users combine with &, |, ~."""

    def allowed(self, q: Side, k: Side) -> Tensor:
        """Broadcastable bool tensor: may query ``q`` attend key ``k``? (before padding and sample boundaries)"""
        raise NotImplementedError

    def bind(self, modality_names: Sequence[str]) -> Mask:
        """Resolve modality names to the model's table indices (masks that name modalities override this)."""
        return self

    def with_boundaries(self, q: Side, k: Side) -> Tensor:
        """``allowed``, padding and sample boundaries applied: the mask every path computes."""
        return self.allowed(q, k) & k.pad & (q.sample == k.sample)

    def dense(self, tokens: Tokens, rows: Tensor | None = None) -> Tensor:
        """(B, N, N) bool mask — or (B, R, N) for the query ``rows`` only. Equal to ``with_boundaries`` on every
        pair; terms that cannot mask anything (a full predicate, one sample per row) are skipped, not computed."""
        q, k = Side.of(tokens, "query", rows), Side.of(tokens, "key")
        keep = k.pad  # (B, 1, N)
        if bool((tokens.sample != tokens.sample[:, :1]).any()):  # packed rows: keep samples apart
            keep = keep & (q.sample == k.sample)
        m = keep if self.is_full else self.allowed(q, k) & keep
        b, n = tokens.pad.shape
        return m.expand(b, n if rows is None else rows.numel(), n)

    def block_mask(self, tokens: Tokens):  # -> torch.nn.attention.flex_attention.BlockMask
        """The FlexAttention ``BlockMask`` of the same mask (the fast path on CUDA, inference on CPU)."""
        return block_mask(self, tokens)

    @property
    def is_full(self) -> bool:
        """True when the predicate allows every pair: only padding and sample boundaries remain."""
        return False

    def __and__(self, other: Mask) -> Mask:
        return And(self, other)

    def __or__(self, other: Mask) -> Mask:
        return Or(self, other)

    def __invert__(self) -> Mask:
        return Not(self)


@dataclass(frozen=True)
class Full(Mask):
    """Every token may attend every token."""

    def allowed(self, q: Side, k: Side) -> Tensor:
        return (q.index >= 0) & (k.index >= 0)

    @property
    def is_full(self) -> bool:
        return True


@dataclass(frozen=True)
class Causal(Mask):
    """A token attends itself and the past: by token ``index``, or by ``group`` (all tokens of one RL timestep
    see each other and every earlier timestep). With ``window``, only the recent past: a key is allowed when
    ``q - window < k <= q`` (a sliding window of ``window`` indices, or of ``window`` groups)."""

    by: Literal["index", "group"] = "index"
    window: int | None = None

    def __post_init__(self) -> None:
        if self.by not in ("index", "group"):
            raise ValueError(f"causal.by: expected 'index' or 'group', got {self.by!r}")
        w = self.window
        if w is not None and (isinstance(w, bool) or not isinstance(w, int) or w < 1):
            raise ValueError(f"causal.window: expected a positive int or None, got {w!r}")

    def allowed(self, q: Side, k: Side) -> Tensor:
        qi, ki = (q.index, k.index) if self.by == "index" else (q.group, k.group)
        past = ki <= qi
        return past if self.window is None else past & (ki > qi - self.window)


@dataclass(frozen=True)
class Local(Mask):
    """Neighbours within ``radius`` in Chebyshev distance on ``pos`` (max over coordinate dims), within one
    modality: patches talk to adjacent patches, audio slices to nearby slices."""

    radius: float

    def __post_init__(self) -> None:
        if not isinstance(self.radius, int | float) or self.radius < 0:
            raise ValueError(f"local.radius: expected a number >= 0, got {self.radius!r}")

    def allowed(self, q: Side, k: Side) -> Tensor:
        near = (q.pos - k.pos).abs().amax(dim=-1) <= self.radius
        return near & (q.modality == k.modality)


@dataclass(frozen=True)
class SameModality(Mask):
    """Tokens attend only tokens of their own modality."""

    def allowed(self, q: Side, k: Side) -> Tensor:
        return q.modality == k.modality


@dataclass(frozen=True)
class SameSample(Mask):
    """Tokens attend only tokens of their own packed sample (always applied anyway; here to be explicit)."""

    def allowed(self, q: Side, k: Side) -> Tensor:
        return q.sample == k.sample


@dataclass(frozen=True)
class GlobalTokens(Mask):
    """Global tokens see all tokens and are seen by all. A token is global when ``Tokens.is_global`` flags it
    (the model flags its extra tokens, e.g. CLS) or when its modality is one of ``modalities``."""

    modalities: tuple[str | int, ...] = ()
    indices: tuple[int, ...] | None = None  # resolved by bind()

    def bind(self, modality_names: Sequence[str]) -> Mask:
        idx: list[int] = []
        for m in self.modalities:
            if isinstance(m, int):
                idx.append(m)
                continue
            hits = [i for i, name in enumerate(modality_names) if name == m or name.startswith(f"{m}.")]
            if not hits:
                raise ValueError(f"global_tokens.modalities: expected names among {list(modality_names)}, got {m!r}")
            idx += hits
        return replace(self, indices=tuple(sorted(set(idx))))

    def _is_global(self, side: Side) -> Tensor:
        flag = side.is_global
        ids = self.indices if self.indices is not None else tuple(m for m in self.modalities if isinstance(m, int))
        for i in ids:
            flag = flag | (side.modality == i)
        return flag

    def allowed(self, q: Side, k: Side) -> Tensor:
        return self._is_global(q) | self._is_global(k)


@dataclass(frozen=True)
class And(Mask):
    a: Mask
    b: Mask

    def allowed(self, q: Side, k: Side) -> Tensor:
        return self.a.allowed(q, k) & self.b.allowed(q, k)

    def bind(self, modality_names: Sequence[str]) -> Mask:
        return And(self.a.bind(modality_names), self.b.bind(modality_names))

    @property
    def is_full(self) -> bool:
        return self.a.is_full and self.b.is_full


@dataclass(frozen=True)
class Or(Mask):
    a: Mask
    b: Mask

    def allowed(self, q: Side, k: Side) -> Tensor:
        return self.a.allowed(q, k) | self.b.allowed(q, k)

    def bind(self, modality_names: Sequence[str]) -> Mask:
        return Or(self.a.bind(modality_names), self.b.bind(modality_names))

    @property
    def is_full(self) -> bool:
        return self.a.is_full or self.b.is_full


@dataclass(frozen=True)
class Not(Mask):
    a: Mask

    def allowed(self, q: Side, k: Side) -> Tensor:
        return ~self.a.allowed(q, k)

    def bind(self, modality_names: Sequence[str]) -> Mask:
        return Not(self.a.bind(modality_names))


# ---------------------------------------------------------------------------- the vocabulary
def full() -> Mask:
    return Full()


def causal(by: Literal["index", "group"] = "index", window: int | None = None) -> Mask:
    return Causal(by=by, window=window)


def local(radius: float) -> Mask:
    return Local(radius=radius)


def same_modality() -> Mask:
    return SameModality()


def same_sample() -> Mask:
    return SameSample()


def global_tokens(modalities: Sequence[str | int] = ()) -> Mask:
    return GlobalTokens(modalities=tuple(modalities))


VOCABULARY: dict[str, Callable[..., Mask]] = {
    "full": full,
    "causal": causal,
    "local": local,
    "same_modality": same_modality,
    "same_sample": same_sample,
    "global_tokens": global_tokens,
}


def parse(text: str, names: dict[str, Mask] | None = None) -> Mask:
    """A mask expression from a config string, e.g. ``"(local(radius=1) & same_modality()) | global_tokens()"``.

    Only the vocabulary's calls (with literal arguments), names defined in ``names``, ``&``, ``|``, ``~`` and
    parentheses are accepted; nothing is evaluated as Python.
    """
    names = names or {}
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise ValueError(f"mask: expected an expression like 'local(radius=1) | global_tokens()', got {text!r}") from e

    def build(node: ast.AST) -> Mask:
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitAnd | ast.BitOr):
            a, b = build(node.left), build(node.right)
            return a & b if isinstance(node.op, ast.BitAnd) else a | b
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Invert):
            return ~build(node.operand)
        if isinstance(node, ast.Name):
            if node.id in names:
                return names[node.id]
            if node.id in VOCABULARY:
                return VOCABULARY[node.id]()
            raise ValueError(
                f"mask: unknown name {node.id!r} in {text!r}; expected one of {sorted(VOCABULARY) + sorted(names)}"
            )
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in VOCABULARY:
            try:
                args = [ast.literal_eval(a) for a in node.args]
                kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg is not None}
            except ValueError as e:
                raise ValueError(f"mask: arguments must be literals in {text!r}") from e
            try:
                return VOCABULARY[node.func.id](*args, **kwargs)
            except TypeError as e:
                raise ValueError(f"mask: bad arguments to {node.func.id}() in {text!r}: {e}") from e
        raise ValueError(f"mask: unsupported syntax {ast.unparse(node)!r} in {text!r}; use the vocabulary, &, |, ~")

    return build(tree.body)


_NAMED: dict[str, Mask] = {"full": Full(), "causal": Causal("index"), "causal_group": Causal("group")}


def from_name(name: str | Mask) -> Mask:
    """A mask from a name (``full``, ``causal``, ``causal_group``), an expression string, or a ``Mask``."""
    if isinstance(name, Mask):
        return name
    if not isinstance(name, str):
        raise ValueError(f"mask: expected a name, an expression or a Mask, got {type(name).__name__}")
    if name in _NAMED:
        return _NAMED[name]
    return parse(name)


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

    return create_block_mask(mask_mod, b, None, n, n, device=tokens.x.device, BLOCK_SIZE=FLEX_BLOCK)
