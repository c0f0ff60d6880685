"""Tokens: the one data contract between tokenizers, masks and the trunk.

Shape legend
    B  batch rows            N  tokens per row          D  model width
    P  coordinate dims (the widest modality's; unused dims are 0)

Every tokenizer returns a ``Tokens``; the trunk consumes one. All fields are batch-first tensors on one device.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["META", "MetaField", "PackInfo", "Tokens", "pack", "unpack", "unpack_items"]


@dataclass(frozen=True)
class MetaField:
    """One metadata field of ``Tokens``: everything the generic code (validation, joining, padding, packing, mask
    sides, plan digests) needs to handle it without naming it.

    Attributes:
        name: the ``Tokens`` attribute.
        kind: ``long`` / ``bool``: exactly that dtype; ``float``: any floating dtype (created as float32).
        trailing: dims after (B, N): 0 for per-token values, 1 for ``pos`` (P coordinates).
        default: the value ``Tokens.create`` fills in when the field is not given.
        pad_value: the value of padded slots (``pad_to``) and of the missing coordinate dims when parts of
            different widths are joined.
    """

    name: str
    kind: Literal["long", "bool", "float"]
    trailing: int = 0
    default: int | float | bool = 0
    pad_value: int | float | bool = 0

    @property
    def dtype(self) -> torch.dtype:
        """The dtype ``Tokens.create`` gives this field."""
        return {"long": torch.long, "bool": torch.bool, "float": torch.float32}[self.kind]


META: tuple[MetaField, ...] = (
    MetaField("modality", "long"),
    MetaField("pos", "float", trailing=1, default=0.0, pad_value=0.0),
    MetaField("pad", "bool", default=True, pad_value=False),
    MetaField("group", "long"),
    MetaField("sample", "long"),
    MetaField("is_global", "bool", default=False, pad_value=False),
)
"""The schema of ``Tokens`` metadata: every field besides ``x``, in one place. Code that handles metadata
generically iterates this; adding a field means adding it here and to the dataclass."""


@dataclass
class Tokens:
    """A batch of tokens with their metadata.

    Attributes:
        x: (B, N, D) float embeddings; the tokenizer has already added its own position encoding.
        modality: (B, N) long index into the model's modality table.
        pos: (B, N, P) float coordinates in the modality's own space ((row, col) of a patch, (seconds,) of an
            audio slice, (timestep,) of an RL token, (range, azimuth) of a radar point); unused dims are 0.
        pad: (B, N) bool, True where the token is real.
        group: (B, N) long, the unit a token belongs to (RL timestep, video frame, radar scan).
        sample: (B, N) long, which sample a token belongs to inside a packed row (0 when not packed).
        is_global: (B, N) bool, True for tokens that ``masks.global_tokens()`` lets see and be seen by all (the
            model flags its extra tokens, e.g. CLS); default all False.
    """

    x: Tensor
    modality: Tensor
    pos: Tensor
    pad: Tensor
    group: Tensor
    sample: Tensor
    is_global: Tensor | None = None

    def __post_init__(self) -> None:
        if self.is_global is None and isinstance(self.pad, Tensor):
            self.is_global = torch.zeros_like(self.pad, dtype=torch.bool)
        self.validate()

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        x: Tensor,
        *,
        modality: int | Tensor = 0,
        pos: Tensor | None = None,
        pad: Tensor | None = None,
        group: Tensor | None = None,
        sample: Tensor | None = None,
        is_global: Tensor | bool | None = None,
    ) -> Tokens:
        """Build ``Tokens`` from embeddings, filling unspecified metadata with its neutral value.

        Args:
            x: (B, N, D) embeddings.
            modality: an int for every token, or a (B, N) / (N,) long tensor.
            pos: (B, N, P) or (N, P) coordinates; default one zero coordinate per token.
            pad: (B, N) bool, True = real; default all real.
            group: (B, N) or (N,) long; default 0.
            sample: (B, N) long; default 0.
            is_global: (B, N) bool or one bool for every token; default False.
        """
        if not isinstance(x, Tensor) or x.ndim != 3:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"Tokens.x: expected a (B, N, D) tensor, got {got}")
        b, n, _ = x.shape
        given = dict(modality=modality, pos=pos, pad=pad, group=group, sample=sample, is_global=is_global)

        def fill(f: MetaField, value: Tensor | float | None) -> Tensor:
            """A value for every token (None: the default; a number: that number), or a tensor given for every
            row ((N, ...)) or per row ((B, N, ...))."""
            if not isinstance(value, Tensor):
                value = f.default if value is None else value
                return torch.full((b, n) + (1,) * f.trailing, value, dtype=f.dtype, device=x.device)
            value = value.to(device=x.device, dtype=f.dtype if f.kind == "float" else value.dtype)
            return value.unsqueeze(0).expand(b, *value.shape) if value.ndim == 1 + f.trailing else value

        return cls(x=x, **{f.name: fill(f, given[f.name]) for f in META})

    # ------------------------------------------------------------------ invariants
    def validate(self) -> None:
        """Raise ``ValueError`` naming the field if shapes, dtypes or devices disagree."""
        x = self.x
        if not isinstance(x, Tensor) or x.ndim != 3:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"Tokens.x: expected a (B, N, D) tensor, got {got}")
        if not x.is_floating_point():
            raise ValueError(f"Tokens.x: expected a floating dtype, got {x.dtype}")
        b, n, _ = x.shape
        for f in META:
            t = getattr(self, f.name)
            if not isinstance(t, Tensor) or t.ndim != 2 + f.trailing or tuple(t.shape[:2]) != (b, n):
                got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                want = "(" + ", ".join([str(b), str(n)] + ["P"] * f.trailing) + ")"
                raise ValueError(f"Tokens.{f.name}: expected shape {want} to match x, got {got}")
            if f.kind == "float" and not t.is_floating_point():
                raise ValueError(f"Tokens.{f.name}: expected a floating dtype, got {t.dtype}")
            if f.kind != "float" and t.dtype != f.dtype:
                raise ValueError(f"Tokens.{f.name}: expected dtype {f.dtype}, got {t.dtype}")
            if t.device != x.device:
                raise ValueError(f"Tokens.{f.name}: expected device {x.device} like x, got {t.device}")

    # ------------------------------------------------------------------ views
    @property
    def batch_size(self) -> int:
        return self.x.shape[0]

    @property
    def num_tokens(self) -> int:
        return self.x.shape[1]

    @property
    def dim(self) -> int:
        return self.x.shape[2]

    def __len__(self) -> int:
        return self.x.shape[1]

    def meta(self) -> dict[str, Tensor]:
        """{name: tensor} of every metadata field, in ``META`` order: everything a mask may read."""
        return {f.name: getattr(self, f.name) for f in META}

    def replace(self, **changes: Tensor) -> Tokens:
        """A copy with some fields swapped (checked again)."""
        return replace(self, **changes)

    def to(self, *args, **kwargs) -> Tokens:
        """Move to a device; a floating dtype applies to ``x`` alone (``pos`` stays float32, ids stay long)."""
        x = self.x.to(*args, **kwargs)
        return Tokens(x=x, **{name: t.to(x.device) for name, t in self.meta().items()})

    def __getitem__(self, index: slice | Tensor | int) -> Tokens:
        """Select along N (a slice, an index tensor or a bool mask over N)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return Tokens(x=self.x[:, index], **{name: t[:, index] for name, t in self.meta().items()})

    # ------------------------------------------------------------------ joining
    @staticmethod
    def cat(parts: Sequence[Tokens]) -> Tokens:
        """Join along N. Coordinates of narrower modalities are zero-padded to the widest P.

        Every part must have the same B, D, dtype and device.
        """
        parts = list(parts)
        if not parts:
            raise ValueError("Tokens.cat: expected at least one Tokens, got an empty sequence")
        b, d = parts[0].batch_size, parts[0].dim
        for i, t in enumerate(parts):
            if not isinstance(t, Tokens):
                raise ValueError(f"Tokens.cat: parts[{i}] expected Tokens, got {type(t).__name__}")
            if t.batch_size != b:
                raise ValueError(f"Tokens.cat: parts[{i}].x expected batch size {b}, got {t.batch_size}")
            if t.dim != d:
                raise ValueError(f"Tokens.cat: parts[{i}].x expected width D={d}, got {t.dim}")
        if len(parts) == 1:
            return parts[0]
        return _join(parts, dim=1)

    @staticmethod
    def stack(samples: Sequence[Tokens]) -> Tokens:
        """Batch samples by padding each to the longest (the alternative to ``pack``): B = total batch rows."""
        samples = list(samples)
        if not samples:
            raise ValueError("Tokens.stack: expected at least one Tokens, got an empty sequence")
        longest = max(t.num_tokens for t in samples)
        return _join([t.pad_to(longest) for t in samples], dim=0)

    def pad_to(self, length: int) -> Tokens:
        """Append padded tokens (``pad`` False, every other field its ``MetaField.pad_value``) up to ``length``."""
        extra = length - self.num_tokens
        if extra < 0:
            raise ValueError(f"length: expected >= {self.num_tokens} tokens, got {length}")
        if extra == 0:
            return self
        grow = {f.name: F.pad(getattr(self, f.name), (0, 0) * f.trailing + (0, extra), value=f.pad_value) for f in META}
        return Tokens(x=F.pad(self.x, (0, 0, 0, extra)), **grow)


def _join(parts: Sequence[Tokens], dim: int) -> Tokens:
    """Concatenate every field along ``dim`` (1: tokens, 0: rows): ``x`` in the promoted dtype of the parts, fields
    with trailing dims (``pos``) padded with their ``pad_value`` to the widest part first."""
    dtype = functools.reduce(torch.promote_types, [t.x.dtype for t in parts])
    out = {"x": torch.cat([t.x.to(dtype) for t in parts], dim=dim)}
    for f in META:
        values = [getattr(t, f.name) for t in parts]
        if f.trailing:
            wide = max(v.shape[-1] for v in values)
            values = [F.pad(v, (0, wide - v.shape[-1]), value=f.pad_value) for v in values]
        out[f.name] = torch.cat(values, dim=dim)
    return Tokens(**out)


# ---------------------------------------------------------------------------- packing
@dataclass(frozen=True)
class PackInfo:
    """Where each packed sample went: ``rows[i]``, ``starts[i]``, ``lengths[i]`` for input sample i (the items'
    batch rows in order, item by item). ``index[k]``: the flat position (row x max_len + slot) of every real token of
    item k, in row-major order of its ``pad``; ``pads[k]``: that item's (B, N) ``pad``."""

    rows: tuple[int, ...]
    starts: tuple[int, ...]
    lengths: tuple[int, ...]
    num_rows: int
    max_len: int
    index: tuple[Tensor, ...] = field(default=(), compare=False, repr=False)
    pads: tuple[Tensor, ...] = field(default=(), compare=False, repr=False)


def _first_fit(lengths: Sequence[int], max_len: int) -> tuple[list[int], list[int], list[int], int]:
    """First-fit, longest first: (row, start, number within the row) of every sample, and the number of rows."""
    free: list[int] = []  # tokens left per row
    row_of, start_of, nth = [0] * len(lengths), [0] * len(lengths), [0] * len(lengths)
    placed: list[int] = []  # samples per row so far
    for i in sorted(range(len(lengths)), key=lambda j: -lengths[j]):
        row = next((r for r, room in enumerate(free) if room >= lengths[i]), None)
        if row is None:
            free.append(max_len)
            placed.append(0)
            row = len(free) - 1
        row_of[i], start_of[i], nth[i] = row, max_len - free[row], placed[row]
        free[row] -= lengths[i]
        placed[row] += 1
    return row_of, start_of, nth, len(free)


def _stream(items_lengths: Sequence[Sequence[int]]) -> tuple[list[int], list[int], int]:
    """One row, item after item; within an item its samples longest first (stable: its full-length samples come
    first, in order): (start, number within the row) of every sample, and the row's length."""
    order, first = [], 0
    for lengths in items_lengths:
        order += [first + i for i in sorted(range(len(lengths)), key=lambda j: -lengths[j])]
        first += len(lengths)
    flat = [n for lengths in items_lengths for n in lengths]
    start_of, nth, at = [0] * len(flat), [0] * len(flat), 0
    for number, i in enumerate(order):
        start_of[i], nth[i] = at, number
        at += flat[i]
    return start_of, nth, at


def pack(items: Sequence[Tokens], max_len: int | None) -> tuple[Tokens, PackInfo]:
    """Fill rows of ``max_len`` tokens with whole samples (first-fit, longest first), of any modality mix; or, with
    ``max_len=None``, one row of exactly the samples' tokens, item after item, each item's longest samples first
    (the layout of variable-length attention: ``omni.attention.plans.stream_plan``).

    Every batch row of every item is one sample; its padded tokens are dropped. Samples keep their own positions,
    groups and embeddings (so positions restart per sample); ``sample`` numbers them within their row, and the
    always-applied sample boundary in ``omni.attention.masks`` keeps them from attending each other. Coordinates of
    narrower modalities are zero-padded to the widest P. The tokens move in one scatter per field (no per-sample
    slices: the backward pass is one gather).

    Returns:
        the packed Tokens (R, max_len, D), unused slots padded (None: (1, T, D), none), and the ``PackInfo`` that
        ``unpack`` needs.
    """
    for i, t in enumerate(items):
        if not isinstance(t, Tokens):
            raise ValueError(f"pack: items[{i}] expected Tokens, got {type(t).__name__}")
    counts = [t.pad.sum(1) for t in items]  # (B_k,) real tokens per sample
    lengths: list[int] = torch.cat(counts).tolist() if items else []
    if not lengths:
        raise ValueError("pack: expected at least one sample, got none")
    if max_len is None:
        start_of, nth, max_len = _stream([c.tolist() for c in counts])
        row_of, num_rows = [0] * len(lengths), 1
    else:
        too_long = [(i, n) for i, n in enumerate(lengths) if n > max_len]
        if too_long:
            i, n = too_long[0]
            raise ValueError(f"pack: expected samples of at most max_len={max_len} tokens, got sample {i} with {n}")
        row_of, start_of, nth, num_rows = _first_fit(lengths, max_len)
    device = items[0].x.device
    index, numbers, first = [], [], 0
    for t in items:
        b = t.batch_size
        base = torch.tensor([row_of[j] * max_len + start_of[j] for j in range(first, first + b)], device=device)
        slot = t.pad.long().cumsum(1) - 1  # (B, N) a real token's place among its sample's real tokens
        index.append((base[:, None] + slot)[t.pad])  # (T_k,)
        nums = torch.tensor(nth[first : first + b], device=device)
        numbers.append(nums[:, None].expand(b, t.num_tokens)[t.pad])
        first += b
    where = torch.cat(index)  # (T,) flat destination of every real token
    size = num_rows * max_len

    def scatter(values: list[Tensor], fill: float | bool, dtype: torch.dtype) -> Tensor:
        flat = torch.cat(values).to(dtype)  # (T, ...)
        out = flat.new_full((size, *flat.shape[1:]), fill)
        return out.index_copy(0, where, flat).unflatten(0, (num_rows, max_len))

    dtype = functools.reduce(torch.promote_types, [t.x.dtype for t in items])
    out = {"x": scatter([t.x[t.pad] for t in items], 0.0, dtype)}
    for f in META:
        values = [getattr(t, f.name)[t.pad] for t in items]
        if f.name == "sample":
            values = numbers
        if f.trailing:
            wide = max(v.shape[-1] for v in values)
            values = [F.pad(v, (0, wide - v.shape[-1]), value=f.pad_value) for v in values]
        kind = functools.reduce(torch.promote_types, [v.dtype for v in values]) if f.kind == "float" else f.dtype
        out[f.name] = scatter(values, f.pad_value, kind)
    info = PackInfo(
        tuple(row_of), tuple(start_of), tuple(lengths), num_rows, max_len, tuple(index), tuple(t.pad for t in items)
    )
    return Tokens(**out), info


def unpack(x: Tensor, info: PackInfo) -> list[Tensor]:
    """Give each packed sample its outputs back: (R, max_len, ...) -> [ (n_i, ...) for each input sample ]."""
    _check_packed(x, info)
    return [x[r, s : s + n] for r, s, n in zip(info.rows, info.starts, info.lengths, strict=True)]


def unpack_items(x: Tensor, info: PackInfo) -> list[Tensor]:
    """Give each packed item its outputs back in its own layout: (R, max_len, ...) -> [(B_k, N_k, ...) per item],
    padded tokens 0. One gather and one scatter per item."""
    _check_packed(x, info)
    if len(info.index) != len(info.pads):
        raise ValueError("unpack_items: expected the PackInfo that pack returned, got one without token indices")
    flat = x.flatten(0, 1)  # (R * max_len, ...)
    out = []
    for where, pad in zip(info.index, info.pads, strict=True):
        real = flat.index_select(0, where)  # (T_k, ...)
        dest = pad.flatten().nonzero().squeeze(-1)
        full = real.new_zeros((pad.numel(), *real.shape[1:])).index_copy(0, dest, real)
        out.append(full.unflatten(0, tuple(pad.shape)))
    return out


def _check_packed(x: Tensor, info: PackInfo) -> None:
    if x.shape[:2] != (info.num_rows, info.max_len):
        raise ValueError(f"unpack: expected x of shape ({info.num_rows}, {info.max_len}, ...), got {tuple(x.shape)}")
