"""Tokens: the one data contract between tokenizers, masks and the trunk.

Shape legend
    B  batch rows            N  tokens per row          D  model width
    P  coordinate dims (the widest modality's; unused dims are 0)

Every tokenizer returns a ``Tokens``; the trunk consumes one. All fields are batch-first tensors on one device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Tokens"]


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
    """

    x: Tensor
    modality: Tensor
    pos: Tensor
    pad: Tensor
    group: Tensor
    sample: Tensor

    def __post_init__(self) -> None:
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
    ) -> Tokens:
        """Build ``Tokens`` from embeddings, filling unspecified metadata with its neutral value.

        Args:
            x: (B, N, D) embeddings.
            modality: an int for every token, or a (B, N) / (N,) long tensor.
            pos: (B, N, P) or (N, P) coordinates; default one zero coordinate per token.
            pad: (B, N) bool, True = real; default all real.
            group: (B, N) or (N,) long; default 0.
            sample: (B, N) long; default 0.
        """
        if not isinstance(x, Tensor) or x.ndim != 3:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"Tokens.x: expected a (B, N, D) tensor, got {got}")
        b, n, _ = x.shape
        dev = x.device

        def expand(t: Tensor | None, fill: int | bool, dtype: torch.dtype) -> Tensor:
            if t is None:
                return torch.full((b, n), fill, dtype=dtype, device=dev)
            t = t.to(device=dev)
            return t.unsqueeze(0).expand(b, n) if t.ndim == 1 else t

        mod = modality if isinstance(modality, Tensor) else None
        if pos is None:
            pos = x.new_zeros(b, n, 1, dtype=torch.float32)
        elif pos.ndim == 2:
            pos = pos.unsqueeze(0).expand(b, -1, -1)
        return cls(
            x=x,
            modality=expand(mod, int(modality) if mod is None else 0, torch.long),
            pos=pos.to(device=dev, dtype=torch.float32),
            pad=expand(pad, True, torch.bool),
            group=expand(group, 0, torch.long),
            sample=expand(sample, 0, torch.long),
        )

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
        want = {"modality": torch.long, "pad": torch.bool, "group": torch.long, "sample": torch.long}
        for name, dtype in want.items():
            t = getattr(self, name)
            if not isinstance(t, Tensor) or tuple(t.shape) != (b, n):
                got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(f"Tokens.{name}: expected shape {(b, n)} to match x, got {got}")
            if t.dtype != dtype:
                raise ValueError(f"Tokens.{name}: expected dtype {dtype}, got {t.dtype}")
        pos = self.pos
        if not isinstance(pos, Tensor) or pos.ndim != 3 or tuple(pos.shape[:2]) != (b, n):
            got = tuple(pos.shape) if isinstance(pos, Tensor) else type(pos).__name__
            raise ValueError(f"Tokens.pos: expected shape ({b}, {n}, P) to match x, got {got}")
        if not pos.is_floating_point():
            raise ValueError(f"Tokens.pos: expected a floating dtype, got {pos.dtype}")
        for f in fields(self):
            t = getattr(self, f.name)
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

    def replace(self, **changes: Tensor) -> Tokens:
        """A copy with some fields swapped (checked again)."""
        return replace(self, **changes)

    def to(self, *args, **kwargs) -> Tokens:
        """Move to a device; a floating dtype applies to ``x`` alone (``pos`` stays float32, ids stay long)."""
        moved = {f.name: getattr(self, f.name).to(*args, **kwargs) for f in fields(self)}
        moved = {
            name: t if name == "x" else t.to(getattr(self, name).dtype) for name, t in moved.items()
        }  # only x may change dtype
        return Tokens(**moved)

    def __getitem__(self, index: slice | Tensor | int) -> Tokens:
        """Select along N (a slice, an index tensor or a bool mask over N)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return Tokens(**{f.name: getattr(self, f.name)[:, index] for f in fields(self)})

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
        p = max(t.pos.shape[-1] for t in parts)
        dtype = torch.promote_types(*[t.x.dtype for t in parts[:2]]) if len(parts) > 1 else parts[0].x.dtype
        for t in parts[2:]:
            dtype = torch.promote_types(dtype, t.x.dtype)
        return Tokens(
            x=torch.cat([t.x.to(dtype) for t in parts], dim=1),
            modality=torch.cat([t.modality for t in parts], dim=1),
            pos=torch.cat([F.pad(t.pos, (0, p - t.pos.shape[-1])) for t in parts], dim=1),
            pad=torch.cat([t.pad for t in parts], dim=1),
            group=torch.cat([t.group for t in parts], dim=1),
            sample=torch.cat([t.sample for t in parts], dim=1),
        )
