"""Small units: MLP, norms, drop path, position encodings (1-D / 2-D sin-cos, Fourier features).

Attention lives in ``omni.transformer`` (the module) and ``omni.attention`` (masks, plans, kernels).

Shape legend
    B  batch     N  tokens     D  width     P  coordinate dims
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from omni.choices import check_choice
from omni.dropout import Dropout

__all__ = ["MLP", "DropPath", "FourierFeatures", "SincosLayout", "make_act", "make_norm", "sincos_1d", "sincos_2d"]

NormName = Literal["layernorm", "rmsnorm"]
ActName = Literal["gelu", "relu", "silu"]
SincosLayout = Literal["vaswani", "whisper"]

_ACTS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}


def make_norm(kind: NormName, dim: int, eps: float = 1e-6) -> nn.Module:
    """The one mapping from a norm's name to its module."""
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps)
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, eps=eps)
    check_choice("norm", kind, NormName)
    raise AssertionError(kind)


def make_act(kind: ActName) -> nn.Module:
    if kind not in _ACTS:
        check_choice("act", kind, ActName)
    return _ACTS[kind]()


# ---------------------------------------------------------------------------- position encodings
def sincos_1d(pos: Tensor, dim: int, max_period: float = 10_000.0, layout: SincosLayout = "vaswani") -> Tensor:
    """Transformer sin-cos encoding of real-valued positions.

    Args:
        pos: (...,) positions (any real values).
        dim: output width, even.
        layout: ``vaswani``: w_i = max_period ** (-i / (dim / 2)); ``whisper``: w_i = max_period ** (-i / (dim / 2
            - 1)), Whisper's ``sinusoids`` (its last frequency is exactly 1 / max_period).
    Returns:
        (..., dim): [sin(pos * w_i), cos(pos * w_i)] for i in [0, dim / 2).
    """
    if dim % 2:
        raise ValueError(f"dim: expected an even width for sin-cos encoding, got {dim}")
    check_choice("layout", layout, SincosLayout)
    half = dim // 2
    if layout == "whisper" and half < 2:
        raise ValueError(f"dim: expected a width >= 4 for Whisper's sinusoids, got {dim}")
    index = torch.arange(half, device=pos.device, dtype=torch.float32)
    if layout == "vaswani":
        freqs = torch.exp(-math.log(max_period) * index / half)
    else:  # in Whisper's order of operations, so that the float32 values agree bit for bit
        freqs = torch.exp(-(math.log(max_period) / (half - 1)) * index)
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
    """Linear -> activation -> dropout -> Linear -> dropout, as in ViT (GPT-2: no dropout on the hidden units)."""

    def __init__(
        self,
        dim: int,
        hidden: int,
        act: ActName = "gelu",
        dropout: float = 0.0,
        bias: bool = True,
        hidden_dropout: float | None = None,
    ) -> None:
        """``dropout`` after the output projection; ``hidden_dropout`` after the activation (None = ``dropout``)."""
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = make_act(act)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)
        self.drop_hidden = Dropout(dropout if hidden_dropout is None else hidden_dropout)
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, D) -> (B, N, D)"""
        return self.drop(self.fc2(self.drop_hidden(self.act(self.fc1(x)))))


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
