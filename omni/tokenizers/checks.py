"""Input checks shared by every tokenizer: a bad input gets a ``ValueError`` naming the field, what was
expected and what came, before it can turn into a shape error deep inside torch."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["check_tensor"]


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def check_tensor(
    name: str,
    t: object,
    *,
    ndim: int | Sequence[int],
    layout: str,
    dtype: str = "float",
    sizes: dict[int, int] | None = None,
    finite: bool = True,
    nonempty: bool = True,
) -> Tensor:
    """Check a tokenizer input and return it.

    Args:
        name: the field as the user knows it (``"images"``, ``"audio"``, ``"states"``).
        t: the value to check.
        ndim: the accepted rank or ranks.
        layout: the expected layout in words, e.g. ``"(B, C, H, W)"``, quoted in errors.
        dtype: ``"float"`` (any floating dtype), ``"int"`` (any integer dtype), ``"bool"`` or ``"number"``
            (float or int).
        sizes: {dim: size} that must match exactly (negative dims count from the end).
        finite: reject NaN and inf (floating tensors only).
        nonempty: reject a tensor with a zero-sized dimension.
    """
    if not isinstance(t, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor {layout}, got {type(t).__name__}")
    ranks = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if t.ndim not in ranks:
        want = " or ".join(f"{r}-D" for r in ranks)
        raise ValueError(f"{name}: expected a {want} tensor {layout}, got shape {_shape(t)} ({t.ndim}-D)")
    kinds = {
        "float": t.is_floating_point(),
        "int": not t.is_floating_point() and not t.is_complex() and t.dtype != torch.bool,
        "bool": t.dtype == torch.bool,
        "number": t.dtype != torch.bool and not t.is_complex(),
    }
    if dtype not in kinds:
        raise AssertionError(f"unknown dtype kind {dtype!r}")
    if not kinds[dtype]:
        word = {"float": "a floating", "int": "an integer", "bool": "a bool", "number": "a real"}[dtype]
        raise ValueError(f"{name}: expected {word} dtype, got {t.dtype}")
    for dim, size in (sizes or {}).items():
        if t.shape[dim] != size:
            raise ValueError(f"{name}: expected size {size} in dimension {dim} of {layout}, got shape {_shape(t)}")
    if nonempty and t.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty tensor {layout}, got shape {_shape(t)}")
    if finite and t.is_floating_point() and not bool(torch.isfinite(t).all()):
        bad = "NaN" if bool(torch.isnan(t).any()) else "inf"
        raise ValueError(f"{name}: expected finite values, got {bad}")
    return t
