"""Attention masks as predicates over (query, key) token pairs that read ``Tokens`` metadata.

One convention: boolean, True = may attend. Padding and sample boundaries are always applied: a padded key is never
attended and a token never attends another sample packed into its row.

    from omni import masks
    m = (masks.local(radius=1) & masks.same_modality()) | masks.global_tokens()
    m.dense(tokens)                      # (B, N, N) bool: the reference every faster path equals
    masks.parse("local(radius=1) | global_tokens(modalities=['cls'])")   # the same, from a YAML string

A predicate is written once, with tensor operations that work both on broadcast (B, N, 1) x (B, 1, N) metadata
(the dense and sparse paths) and on the scalar indices of FlexAttention's ``mask_mod`` (the flex path). ``Side``
is the one adapter from ``Tokens`` metadata to either form, driven by the schema ``omni.tokens.META``.

Shape legend
    B batch   N tokens   P coordinate dims
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Literal, TypeAlias

import torch
from torch import Tensor

from omni.tokens import META, Tokens

FLEX_BLOCK = 128  # FlexAttention block size; the flex path pads sequences to a multiple of it

__all__ = [
    "FLEX_BLOCK",
    "Causal",
    "Full",
    "GlobalTokens",
    "KeyModality",
    "Local",
    "Mask",
    "Near",
    "QueryModality",
    "SameModality",
    "SameSample",
    "Side",
    "block_mask",
    "causal",
    "from_name",
    "full",
    "global_tokens",
    "key_modality",
    "local",
    "near",
    "parse",
    "query_modality",
    "same_modality",
    "same_sample",
]


@dataclass(frozen=True)
class Side:
    """Token metadata of the query or the key side of a pair: ``index`` and one attribute per ``META`` field.

    Dense and sparse paths (``Side.of``): query fields shaped (B, N, 1) (or (B, R, 1) for chosen query rows) and
    key fields (B, 1, N); a field with trailing dims keeps them (``pos``: (B, N, 1, P) and (B, 1, N, P)).
    Flex path (``Side.at``): 0-d tensors (``pos``: (P,)) for one (b, q_idx) or (b, kv_idx).
    """

    index: Tensor
    modality: Tensor
    pos: Tensor
    pad: Tensor
    group: Tensor
    sample: Tensor
    is_global: Tensor

    @staticmethod
    def of(tokens: Tokens, axis: Literal["query", "key"], rows: Tensor | None = None) -> Side:
        """Broadcastable metadata of every token, or of the query ``rows`` only.

        Args:
            tokens: the batch, (B, N) tokens.
            axis: ``query`` puts tokens along dim 1 (the rows of the mask), ``key`` along dim 2 (its columns).
            rows: token indices in [0, N): (R,) the same for every batch row, or (B, R) per batch row.
        """
        meta = tokens.meta()
        if rows is None:
            index = torch.arange(tokens.num_tokens, device=tokens.x.device).unsqueeze(0)  # (1, N)
        elif rows.ndim == 1:
            index = rows.unsqueeze(0)  # (1, R)
            meta = {name: t.index_select(1, rows) for name, t in meta.items()}
        else:
            index = rows  # (B, R)

            def take(t: Tensor) -> Tensor:
                at = rows.view(*rows.shape, *(1,) * (t.ndim - 2)).expand(*rows.shape, *t.shape[2:])
                return t.gather(1, at)

            meta = {name: take(t) for name, t in meta.items()}
        dim = 2 if axis == "query" else 1
        return Side(index=index.unsqueeze(dim), **{name: t.unsqueeze(dim) for name, t in meta.items()})

    @staticmethod
    def at(meta: Mapping[str, Tensor], b: Tensor, idx: Tensor) -> Side:
        """One token's metadata for FlexAttention's ``mask_mod``: ``meta`` is ``Tokens.meta()``, ``b`` and ``idx``
        0-d indices of the batch row and the token."""
        return Side(index=idx, **{name: t[b, idx] for name, t in meta.items()})


_SIDE_FIELDS = ("index", *(f.name for f in META))
assert tuple(f.name for f in fields(Side)) == _SIDE_FIELDS, "Side must mirror omni.tokens.META"


Radius: TypeAlias = float | tuple[float, ...]
"""One modality's local radius: one number for every coordinate dim, or one per dim (a box)."""


def _modality_indices(name: str, wanted: str | int, modality_names: Sequence[str]) -> list[int]:
    """Table indices of ``wanted``: an int is one already; a name matches itself and, for a tokenizer with several
    tags (``trajectory.state``, ``trajectory.action``), every ``name.tag``. ``name`` is the field for errors."""
    if isinstance(wanted, int):
        return [wanted]
    hits = [i for i, m in enumerate(modality_names) if m == wanted or m.startswith(f"{wanted}.")]
    if not hits:
        raise ValueError(f"{name}: expected names among {list(modality_names)}, got {wanted!r}")
    return hits


def _modality_keys(name: str, values: object) -> tuple[str | int, ...]:
    """Check modality names / table indices given to a mask: a tuple of str or int."""
    out = tuple(values) if isinstance(values, list | tuple) else ()
    if not out or not all(isinstance(m, str | int) and not isinstance(m, bool) for m in out):
        raise ValueError(f"{name}: expected modality names or table indices, got {values!r}")
    return out


def _unbound(name: str, keys: Sequence[str | int]) -> None:
    """Raise when names were given but never resolved to table indices."""
    names = [m for m in keys if isinstance(m, str)]
    if names:
        raise ValueError(
            f"{name}: expected table indices, got modality names {names} that were never bound; call "
            "mask.bind(modality_names) first (OmniModel binds its masks)"
        )


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v >= 0


class Mask:
    """A predicate over (query, key) pairs. Subclasses implement ``allowed``; users combine with &, |, ~."""

    def allowed(self, q: Side, k: Side) -> Tensor:
        """Broadcastable bool tensor: may query ``q`` attend key ``k``? (before padding and sample boundaries)"""
        raise NotImplementedError

    def bind(self, modality_names: Sequence[str]) -> Mask:
        """Resolve modality names to the model's table indices (masks that name modalities override this)."""
        return self

    def prepared(self, tokens: Tokens) -> Mask:
        """This mask ready to evaluate on ``tokens``: lookup tables built once, as tensors on their device (the flex
        path's ``mask_mod`` captures them instead of building tensors inside compiled code). Default: itself."""
        return self

    def with_boundaries(self, q: Side, k: Side) -> Tensor:
        """``allowed``, padding and sample boundaries applied: the mask every path computes."""
        return self.allowed(q, k) & k.pad & (q.sample == k.sample)

    def dense(self, tokens: Tokens, rows: Tensor | None = None) -> Tensor:
        """(B, N, N) bool mask — or (B, R, N) for the query ``rows`` ((R,) indices) only. Equal to
        ``with_boundaries`` on every pair; terms that cannot mask anything (a full predicate, one sample per row) are
        skipped, not computed."""
        q, k = Side.of(tokens, "query", rows), Side.of(tokens, "key")
        keep = k.pad  # (B, 1, N)
        if bool((tokens.sample != tokens.sample[:, :1]).any()):  # packed rows: keep samples apart
            keep = keep & (q.sample == k.sample)
        m = keep if self.is_full else self.prepared(tokens).allowed(q, k) & keep
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
    """Neighbours within one modality, near in ``pos``: patches talk to adjacent patches, audio slices to nearby
    slices, radar points to nearby points.

    ``radius`` is one number for every modality (Chebyshev distance on ``pos``: the largest coordinate difference
    is at most ``radius``), or a dict giving each modality its own radius in its own units:
    ``{"camera": 1, "radar": [5.0, 0.1]}``. A dict value is one number for every coordinate dim, or a list with
    one radius per dim (radar at (range m, azimuth rad): within 5 m *and* 0.1 rad); coordinates past the list
    are not compared, and radii past the batch's P coordinate dims are ignored. Keys are modality names, resolved
    by ``bind`` (``OmniModel`` binds; ``trajectory`` also names ``trajectory.state`` and the other tags of that
    tokenizer, an exact name wins), or table indices. **Modalities the dict does not name get no local
    neighbours**: their tokens still attend what the other terms of the expression allow (``| global_tokens()``,
    ``| same_modality()``).
    """

    radius: float | tuple[tuple[str | int, Radius], ...]
    radii: tuple[Radius | None, ...] | None = None  # per table index, resolved by bind(); None: no neighbours
    table: Tensor | None = field(default=None, compare=False, repr=False)  # (M + 1, P), built by prepared()

    def __post_init__(self) -> None:
        r = self.radius
        if _is_number(r):
            return
        pairs = isinstance(r, tuple) and all(isinstance(kv, tuple) and len(kv) == 2 for kv in r)  # after replace()
        if not (isinstance(r, Mapping) or pairs):
            raise ValueError(f"local.radius: expected a number >= 0 or a dict {{modality: radius}}, got {r!r}")
        items: list[tuple[str | int, Radius]] = []
        for key, value in dict(r).items():
            if not isinstance(key, str | int) or isinstance(key, bool):
                raise ValueError(f"local.radius: expected modality names or table indices as keys, got {key!r}")
            if _is_number(value):
                items.append((key, float(value)))
            elif isinstance(value, list | tuple) and value and all(_is_number(v) for v in value):
                items.append((key, tuple(float(v) for v in value)))
            else:
                raise ValueError(
                    f"local.radius[{key!r}]: expected a number >= 0 or a list of them (one per coordinate dim), "
                    f"got {value!r}"
                )
        object.__setattr__(self, "radius", tuple(items))  # hashable: masks are cache keys

    @property
    def per_modality(self) -> bool:
        return isinstance(self.radius, tuple)

    def bind(self, modality_names: Sequence[str]) -> Mask:
        if not self.per_modality:
            return self
        per: dict[int, Radius] = {}
        exact: set[int] = set()
        for key, r in self.radius:
            for i in _modality_indices("local.radius", key, modality_names):
                is_exact = isinstance(key, int) or modality_names[i] == key
                if i not in exact or is_exact:  # an exact name (or index) wins over a tokenizer prefix
                    per[i] = r
                    if is_exact:
                        exact.add(i)
        radii = tuple(per.get(i) for i in range(max(per, default=-1) + 1))
        return replace(self, radii=radii, table=None)

    def _table(self, p: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """(M + 1, P) radius per (modality index, coordinate dim); row M, for every modality without a radius,
        is -inf (nothing is near)."""
        if self.radii is not None:
            per = dict(enumerate(self.radii))
        else:
            _unbound("local.radius", [key for key, _ in self.radius])
            per = dict(self.radius)
        m = max(per, default=-1) + 1
        rows = []
        for i in range(m + 1):
            r = per.get(i)
            if r is None:
                rows.append([-math.inf] * p)
            elif isinstance(r, float):
                rows.append([r] * p)
            else:
                rows.append((list(r) + [math.inf] * p)[:p])
        return torch.tensor(rows, dtype=dtype, device=device)

    def prepared(self, tokens: Tokens) -> Mask:
        pos, table = tokens.pos, self.table
        if not self.per_modality or (
            table is not None and (table.shape[-1], table.device, table.dtype) == (pos.shape[-1], pos.device, pos.dtype)
        ):
            return self
        return replace(self, table=self._table(pos.shape[-1], pos.device, pos.dtype))

    def _radii(self, pos: Tensor, modality: Tensor) -> Tensor | None:
        """(..., P) radius per coordinate dim for tokens of ``modality`` (shaped like one side's modality), or None
        for one radius everywhere (``self.radius``)."""
        if not self.per_modality:
            return None
        table = self.table
        if table is None or table.shape[-1] != pos.shape[-1] or table.device != pos.device:
            table = self._table(pos.shape[-1], pos.device, pos.dtype)
        m = table.shape[0] - 1
        return table[torch.where((modality >= 0) & (modality < m), modality, m)]

    def _within(self, diffs: Sequence[Tensor], radii: Tensor | None) -> Tensor:
        """Every coordinate dim's |difference| (each (B, N, N)) within its radius, ``radii`` (..., P) or None for
        ``self.radius``. One dim at a time: a (B, N, N, P) difference tensor is never built (it took most of a
        fused detector's mask time)."""
        out: Tensor | None = None
        for d, diff in enumerate(diffs):
            ok = diff <= (self.radius if radii is None else radii[..., d])
            out = ok if out is None else out & ok
        assert out is not None, "pos has at least one coordinate dim"
        return out

    def _within_flex(self, diff: Tensor, radii: Tensor | None) -> Tensor:
        """The flex path's ``mask_mod``: diff (P,) and radii (P,) at once (Inductor cannot lower per-dim selects
        there)."""
        return diff.amax(dim=-1) <= self.radius if radii is None else (diff <= radii).all(dim=-1)

    def allowed(self, q: Side, k: Side) -> Tensor:
        radii = self._radii(q.pos, q.modality)  # the query's modality's
        if q.pos.ndim == 1:  # flex: one pair, pos (P,)
            return self._within_flex((q.pos - k.pos).abs(), radii) & (q.modality == k.modality)
        diffs = [(q.pos[..., d] - k.pos[..., d]).abs() for d in range(q.pos.shape[-1])]  # each (B, N, N)
        return self._within(diffs, radii) & (q.modality == k.modality)


@dataclass(frozen=True)
class Near(Local):
    """Pairs near in ``pos`` *across* modalities: a query attends a key when every coordinate differs by at most
    the radius of the **key's** modality, whatever the query's modality (``Local`` asks for the same modality).
    The query's ``pos`` must then be in the key modality's units: object queries placed at reference points in
    metres read the radar points near them (``query_modality("queries") & near(radius={"radar": [6.0, 6.0]})``),
    the locality prior of Deformable DETR's sampling around a reference point. ``radius`` as in ``Local``; key
    modalities the dict does not name are never near.

    ``shift``: {key modality: k} compares the query's coordinates from dim k on with the key's from dim 0 on, so a
    query can carry one position per key modality: (x, y) in metres for radar, then (row, col) in patch cells for a
    camera (``shift={"camera": 2}``). Dims shifted past the query's P count as 0.
    """

    shift: tuple[tuple[str | int, int], ...] | Mapping[str | int, int] = ()
    shifts: tuple[tuple[int, tuple[int, ...]], ...] | None = None  # (k, key table indices), resolved by bind()

    def __post_init__(self) -> None:
        super().__post_init__()
        items = tuple(dict(self.shift).items())
        for key, k in items:
            if not isinstance(key, str | int) or isinstance(k, bool) or not isinstance(k, int) or k < 0:
                raise ValueError(f"near.shift: expected {{modality: dims >= 0}}, got {dict(self.shift)!r}")
        object.__setattr__(self, "shift", items)

    def bind(self, modality_names: Sequence[str]) -> Mask:
        bound = super().bind(modality_names)
        groups: dict[int, list[int]] = {}
        for key, k in self.shift:  # type: ignore[misc]
            groups.setdefault(k, []).extend(_modality_indices("near.shift", key, modality_names))
        return replace(bound, shifts=tuple((k, tuple(sorted(set(ix)))) for k, ix in sorted(groups.items())))

    @staticmethod
    def _key_of(k: Side, ids: tuple[int, ...]) -> Tensor:
        """True where the key's modality is one of the table indices ``ids``."""
        hit = k.modality == ids[0]
        for i in ids[1:]:
            hit = hit | (k.modality == i)
        return hit

    def allowed(self, q: Side, k: Side) -> Tensor:
        if self.shift and self.shifts is None:
            _unbound("near.shift", [key for key, _ in self.shift])  # type: ignore[misc]
        radii = self._radii(k.pos, k.modality)  # the key's modality's
        shifted = [(dims, self._key_of(k, ids)) for dims, ids in self.shifts or ()]  # (dims, keys it applies to)
        if q.pos.ndim == 1:  # flex: one pair, pos (P,)
            diff = (q.pos - k.pos).abs()
            for dims, hit in shifted:
                moved = torch.cat([q.pos[dims:], torch.zeros_like(q.pos[:dims])])
                diff = torch.where(hit, (moved - k.pos).abs(), diff)
            return self._within_flex(diff, radii)
        p = q.pos.shape[-1]
        diffs = [(q.pos[..., d] - k.pos[..., d]).abs() for d in range(p)]  # each (B, N, N)
        for dims, hit in shifted:
            # the query's dim d + dims against the key's dim d; dims shifted past P count as 0
            moved = [q.pos[..., d + dims] if d + dims < p else torch.zeros_like(q.pos[..., d]) for d in range(p)]
            diffs = [torch.where(hit, (moved[d] - k.pos[..., d]).abs(), diffs[d]) for d in range(p)]
        return self._within(diffs, radii)


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
        idx = [i for m in self.modalities for i in _modality_indices("global_tokens.modalities", m, modality_names)]
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
class _OneSide(Mask):
    """The modality of one side of the pair is one of ``modalities``, whatever the other side."""

    modalities: tuple[str | int, ...]
    indices: tuple[int, ...] | None = None  # resolved by bind()
    field_name = "modalities"  # for errors, set by each subclass

    def __post_init__(self) -> None:
        object.__setattr__(self, "modalities", _modality_keys(self.field_name, self.modalities))

    def bind(self, modality_names: Sequence[str]) -> Mask:
        idx = [i for m in self.modalities for i in _modality_indices(self.field_name, m, modality_names)]
        return replace(self, indices=tuple(sorted(set(idx))))

    def _of(self, side: Side) -> Tensor:
        """(B, N, 1) / (B, 1, N) bool, or 0-d on the flex path: is this side's modality one of ours?"""
        ids = self.indices
        if ids is None:
            _unbound(self.field_name, self.modalities)
            ids = self.modalities
        hit = side.modality == ids[0]
        for i in ids[1:]:
            hit = hit | (side.modality == i)
        return hit


@dataclass(frozen=True)
class QueryModality(_OneSide):
    """Pairs whose *query* is of one of ``modalities``, whatever the key: one-way rules for prefix-LM and
    cross-modal layers. ``query_modality("radar") & key_modality("camera")`` lets radar read camera and not the
    other way round."""

    field_name = "query_modality.modalities"

    def allowed(self, q: Side, k: Side) -> Tensor:
        return self._of(q)


@dataclass(frozen=True)
class KeyModality(_OneSide):
    """Pairs whose *key* is of one of ``modalities``, whatever the query: ``key_modality("text")`` lets every
    token read the text (a prefix), ``~key_modality("audio")`` hides audio from everyone."""

    field_name = "key_modality.modalities"

    def allowed(self, q: Side, k: Side) -> Tensor:
        return self._of(k)


@dataclass(frozen=True)
class And(Mask):
    a: Mask
    b: Mask

    def allowed(self, q: Side, k: Side) -> Tensor:
        return self.a.allowed(q, k) & self.b.allowed(q, k)

    def bind(self, modality_names: Sequence[str]) -> Mask:
        return And(self.a.bind(modality_names), self.b.bind(modality_names))

    def prepared(self, tokens: Tokens) -> Mask:
        a, b = self.a.prepared(tokens), self.b.prepared(tokens)
        return self if a is self.a and b is self.b else And(a, b)

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

    def prepared(self, tokens: Tokens) -> Mask:
        a, b = self.a.prepared(tokens), self.b.prepared(tokens)
        return self if a is self.a and b is self.b else Or(a, b)

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

    def prepared(self, tokens: Tokens) -> Mask:
        a = self.a.prepared(tokens)
        return self if a is self.a else Not(a)


# ---------------------------------------------------------------------------- the vocabulary
def full() -> Mask:
    return Full()


def causal(by: Literal["index", "group"] = "index", window: int | None = None) -> Mask:
    return Causal(by=by, window=window)


def local(radius: float | Mapping[str | int, float | Sequence[float]]) -> Mask:
    """Neighbours in ``pos`` within one modality: one radius for all (``local(radius=1)``), or one per modality in
    its own units (``local(radius={"camera": 1, "radar": [5.0, 0.1]})``; unnamed modalities get no neighbours).
    See ``Local``."""
    return Local(radius=radius)


def near(
    radius: float | Mapping[str | int, float | Sequence[float]], shift: Mapping[str | int, int] | None = None
) -> Mask:
    """Pairs near in ``pos`` across modalities, by the key's modality's radius (and, with ``shift``, the query's
    coordinates for that modality from a later dim). See ``Near``."""
    return Near(radius=radius, shift=dict(shift or {}))


def same_modality() -> Mask:
    return SameModality()


def same_sample() -> Mask:
    return SameSample()


def global_tokens(modalities: Sequence[str | int] = ()) -> Mask:
    return GlobalTokens(modalities=tuple(modalities))


def _flat(modalities: tuple[str | int | Sequence[str | int], ...]) -> tuple[str | int, ...]:
    """``("a", "b")`` and ``(["a", "b"],)`` alike -> ``("a", "b")``."""
    return tuple(m for item in modalities for m in (item if isinstance(item, list | tuple) else [item]))


def query_modality(*modalities: str | int | Sequence[str | int]) -> Mask:
    """Pairs whose query is of one of ``modalities`` (names, bound by the model, or table indices), any key.
    ``(query_modality("radar") & key_modality("camera")) | same_modality()``: radar reads camera, nobody else
    crosses."""
    return QueryModality(modalities=_flat(modalities))


def key_modality(*modalities: str | int | Sequence[str | int]) -> Mask:
    """Pairs whose key is of one of ``modalities`` (names, bound by the model, or table indices), any query."""
    return KeyModality(modalities=_flat(modalities))


VOCABULARY: dict[str, Callable[..., Mask]] = {
    "full": full,
    "causal": causal,
    "local": local,
    "near": near,
    "same_modality": same_modality,
    "same_sample": same_sample,
    "global_tokens": global_tokens,
    "query_modality": query_modality,
    "key_modality": key_modality,
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


def flex_unsupported(mask: Mask) -> str | None:
    """Why FlexAttention cannot run ``mask`` (its compiled kernel cannot lower the predicate), or None.

    ``near(shift=...)`` moves the query's coordinates along P, which inductor cannot lower inside the kernel's
    mask_mod in torch 2.11 (found by the suite's randomised flex-vs-dense test)."""
    if isinstance(mask, Near) and mask.shift:
        return "near(shift=...)"
    for f in fields(mask):
        value = getattr(mask, f.name)
        if isinstance(value, Mask) and (reason := flex_unsupported(value)):
            return reason
    return None


def block_mask(mask: Mask, tokens: Tokens):  # -> torch.nn.attention.flex_attention.BlockMask
    """A FlexAttention BlockMask whose ``mask_mod`` evaluates the same predicate on single (q, kv) pairs."""
    from torch.nn.attention.flex_attention import create_block_mask

    if reason := flex_unsupported(mask):
        raise ValueError(
            f"mask: expected a predicate FlexAttention can compile, got {reason}; use the sparse or dense path"
        )

    b, n = tokens.pad.shape
    meta = tokens.meta()
    ready = mask.prepared(tokens)  # lookup tables built here, captured by mask_mod

    def mask_mod(bi: Tensor, hi: Tensor, qi: Tensor, ki: Tensor) -> Tensor:
        return ready.with_boundaries(Side.at(meta, bi, qi), Side.at(meta, bi, ki))

    return create_block_mask(mask_mod, b, None, n, n, device=tokens.x.device, BLOCK_SIZE=FLEX_BLOCK)
