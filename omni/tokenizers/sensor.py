"""Sensor readings -> tokens: one token per point of a set (radar) or per reading of a vector sensor (IMU).

Shape legend
    B batch   M points in a (padded) set   T readings in a sequence   F features per point or reading
    C coord_dims (the first C features of a point are its coordinates)   D width
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from omni.choices import check_choice
from omni.layers import FourierFeatures, sincos_1d
from omni.tokenizers.checks import check_tensor
from omni.tokens import Tokens

__all__ = ["SensorMode", "SensorTokenizer"]

SensorMode = Literal["points", "vector"]


class SensorTokenizer(nn.Module):
    """Embed each point of a set, or each reading of a vector sensor, with a two-layer MLP.

    ``mode="points"``: a padded set (B, M, F), e.g. radar detections (range, azimuth, Doppler velocity, RCS). The
    first ``coord_dims`` features are coordinates; the MLP reads ``[features, FourierFeatures(coords)]`` (Tancik et
    al. 2020), so nearby points get nearby embeddings, and treats every point alike (permuting the points permutes
    the tokens). ``pos`` is the coordinates; ``group`` is 0.

    ``mode="vector"``: one reading per sample (B, F) (IMU, ego state) or a sequence of readings (B, T, F). A fixed
    sin-cos encoding of the reading index is added; ``pos`` = (t,) and ``group`` = t, the reading index.

    ``name`` sets this instance's modality tag, so one model can hold a "radar" and an "imu" tokenizer.
    """

    modalities: tuple[str, ...] = ("sensor",)

    def __init__(
        self,
        dim: int,
        in_features: int,
        coord_dims: int = 2,
        fourier_features: int = 32,
        fourier_scale: float = 1.0,
        hidden: int | None = None,
        mode: SensorMode = "points",
        name: str = "sensor",
        feature_scale: list[float] | None = None,
    ) -> None:
        """
        Args:
            dim: model width D (even in ``vector`` mode, for the sin-cos encoding).
            in_features: features F per point or reading, coordinates included.
            coord_dims: ``points`` mode: how many leading features are coordinates (range, azimuth: 2).
            fourier_features: ``points`` mode: random frequencies for the coordinates (0 = none).
            fourier_scale: standard deviation of those frequencies, in cycles per coordinate unit; larger tells
                closer points apart.
            hidden: width of the MLP's hidden layer; default D.
            mode: ``points`` (a set per sample) or ``vector`` (a reading, or a sequence of readings, per sample).
            name: the modality tag this instance emits (``modalities == (name,)``).
            feature_scale: F multipliers of the features before the MLP (``pos`` keeps the raw coordinates), to
                bring them to about unit range: radar (x, y) in metres reach 50, and a pre-norm trunk's LayerNorm
                would then see little but those two numbers. Default: none.
        """
        super().__init__()
        check_choice("mode", mode, SensorMode)
        if dim < 1 or in_features < 1:
            raise ValueError(f"dim, in_features: expected positive ints, got {dim}, {in_features}")
        if mode == "vector" and dim % 2:
            raise ValueError(f"dim: expected an even width in vector mode (sin-cos encoding), got {dim}")
        if mode == "points" and not 1 <= coord_dims <= in_features:
            raise ValueError(f"coord_dims: expected a value in [1, in_features={in_features}], got {coord_dims}")
        if fourier_features < 0:
            raise ValueError(f"fourier_features: expected a non-negative int, got {fourier_features}")
        self.modalities = (name,)
        self.dim = dim
        self.in_features = in_features
        self.coord_dims = coord_dims
        self.mode = mode
        if feature_scale is not None and len(feature_scale) != in_features:
            raise ValueError(f"feature_scale: expected {in_features} values (one per feature), got {feature_scale}")
        scale = torch.tensor(feature_scale if feature_scale is not None else [1.0] * in_features)
        self.register_buffer("feature_scale", scale, persistent=False)
        if mode == "points" and fourier_features > 0:
            self.fourier: nn.Module | None = FourierFeatures(coord_dims, fourier_features, fourier_scale)
            extra = self.fourier.out_dim
        else:
            self.fourier = None
            extra = 0
        hidden = hidden or dim
        self.mlp = nn.Sequential(nn.Linear(in_features + extra, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tokens:
        """Tokenize a batch of point sets or readings.

        Args:
            x: ``points``: (B, M, F) float points, coordinates first. ``vector``: (B, F) or (B, T, F) float.
            mask: True where the point or reading is real: (B, M), (B, T) or (B,); None = all real.
        Returns:
            Tokens with x (B, M, D) and pos (B, M, C) = coordinates (``points``), or x (B, T, D) with T = 1 for a
            single reading, pos (B, T, 1) = group = reading index (``vector``).
        """
        if self.mode == "points":
            x = check_tensor("x", x, ndim=3, layout="(B, M, F) points", sizes={-1: self.in_features})
            lead = "(B, M)"
        else:
            layout = "(B, F) or (B, T, F) readings"
            x = check_tensor("x", x, ndim=(2, 3), layout=layout, sizes={-1: self.in_features})
            lead = "(B, T)" if x.ndim == 3 else "(B,)"
            if x.ndim == 2:
                x = x[:, None]  # (B, 1, F): one reading
        if mask is not None:
            want = x.shape[:-1] if lead != "(B,)" else x.shape[:1]
            mask = check_tensor("mask", mask, ndim=len(want), layout=lead, dtype="bool")
            if mask.shape != want:
                raise ValueError(
                    f"mask: expected shape {tuple(want)} = {lead} to match the input, got {tuple(mask.shape)}"
                )
            mask = mask.to(x.device).reshape(x.shape[:-1])
        dtype = self.mlp[0].weight.dtype
        if self.mode == "points":
            coords = x[..., : self.coord_dims].float()  # (B, M, C)
            feats = [(x * self.feature_scale).to(dtype)]
            if self.fourier is not None:
                feats.append(self.fourier(coords).to(dtype))
            out = self.mlp(torch.cat(feats, dim=-1))
            return Tokens.create(out, modality=0, pos=coords, pad=mask)
        t = torch.arange(x.shape[1], device=x.device)
        out = self.mlp((x * self.feature_scale).to(dtype)) + sincos_1d(t, self.dim).to(dtype)
        return Tokens.create(out, modality=0, pos=t.float()[:, None], pad=mask, group=t)
