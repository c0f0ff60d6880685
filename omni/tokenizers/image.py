"""Images -> patch tokens (ViT).

Shape legend
    B batch   C channels   H, W image height, width   p patch size
    h, w = H // p, W // p patch grid   N = h * w tokens   D width
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from omni.choices import check_choice
from omni.layers import sincos_2d
from omni.tokenizers.checks import check_tensor
from omni.tokens import Tokens

__all__ = ["ImagePatchTokenizer"]


PosEmbed = Literal["learned", "sincos", "none"]
Stem = Literal["patch", "conv", "strided"]


def _pair(v: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    if len(v) != 2:
        raise ValueError(f"expected an int or a pair (H, W), got {v!r}")
    return (int(v[0]), int(v[1]))


def _strided_stem(in_chans: int, channels: int, steps: int) -> nn.Sequential:
    """(B, C, H, W) -> (B, channels, H / 2^steps, W / 2^steps): ``steps`` stride-2 3×3 convs, BatchNorm, ReLU; the
    widths double up to ``channels`` (Xiao et al. 2021's stem)."""
    layers: list[nn.Module] = []
    c = in_chans
    for k in range(steps):
        out = max(1, channels >> (steps - 1 - k))
        layers += [nn.Conv2d(c, out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
        c = out
    return nn.Sequential(*layers)


class ImagePatchTokenizer(nn.Module):
    """Cut images into non-overlapping patches and embed each one, as ViT does.

    ``stem="patch"`` is ViT's single strided convolution (identical to timm's ``PatchEmbed``). ``stem="conv"``
    first runs a few 3×3 convolutions at full resolution (Xiao et al. 2021, "Early convolutions help transformers
    see better"): the inductive bias that small data sets need. ``stem="strided"`` is that paper's own stem: stride-2
    3×3 convolutions (BatchNorm, ReLU), log2(p) of them, halve the image down to the patch grid, then a 1×1
    convolution projects to D. Each token then sees an overlapping neighbourhood of pixels, so content finer than a
    patch (where an object's foot point sits in it) survives the patchify.

    Every token's ``pos`` is its (row, col) in the patch grid; ``group`` and ``sample`` are 0.
    """

    modalities: tuple[str, ...] = ("image",)

    def __init__(
        self,
        dim: int,
        patch_size: int = 16,
        in_chans: int = 3,
        img_size: int | tuple[int, int] = 224,
        pos_embed: PosEmbed = "learned",
        stem: Stem = "patch",
        stem_channels: int = 64,
        stem_depth: int = 2,
    ) -> None:
        """
        Args:
            dim: model width D.
            patch_size: side p of a square patch; H and W must be divisible by it.
            in_chans: image channels C.
            img_size: (H, W) the learned position table is made for; other sizes interpolate it.
            pos_embed: ``learned`` (ViT), ``sincos`` (fixed 2-D sin-cos, any size) or ``none``.
            stem: ``patch`` (one strided conv), ``conv`` (3×3 convs, then the strided patch conv) or ``strided``
                (stride-2 3×3 convs down to the patch grid, then a 1×1 conv; ``patch_size`` a power of 2).
            stem_channels: width of the 3×3 convs of the ``conv`` stem; the last (widest) of the ``strided`` stem,
                whose earlier convs halve it going back (e.g. 16, 32, 64 for p = 8).
            stem_depth: number of 3×3 convs in the ``conv`` stem (the ``strided`` stem has log2(p)).
        """
        super().__init__()
        if patch_size < 1:
            raise ValueError(f"patch_size: expected a positive int, got {patch_size}")
        check_choice("pos_embed", pos_embed, PosEmbed)
        check_choice("stem", stem, Stem)
        self.dim = dim
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.img_size = _pair(img_size)
        self.pos_embed_kind = pos_embed
        self.stem_kind = stem
        for name, side in zip(("H", "W"), self.img_size, strict=True):
            if side % patch_size:
                raise ValueError(f"img_size: expected {name} divisible by patch_size={patch_size}, got {side}")
        layers: list[nn.Module] = []
        if stem == "strided" and patch_size & (patch_size - 1):
            raise ValueError(f"patch_size: expected a power of 2 with stem='strided', got {patch_size}")
        if stem == "strided":
            self.stem, patch_in = _strided_stem(in_chans, stem_channels, patch_size.bit_length() - 1), stem_channels
        elif stem == "conv":
            c = in_chans
            for _ in range(stem_depth):
                layers += [nn.Conv2d(c, stem_channels, 3, padding=1, bias=False), nn.BatchNorm2d(stem_channels)]
                layers += [nn.GELU()]
                c = stem_channels
            self.stem = nn.Sequential(*layers)
            patch_in = stem_channels
        else:
            self.stem = nn.Identity()
            patch_in = in_chans
        kernel = 1 if stem == "strided" else patch_size
        self.proj = nn.Conv2d(patch_in, dim, kernel_size=kernel, stride=kernel)
        self.grid = (self.img_size[0] // patch_size, self.img_size[1] // patch_size)
        if pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.randn(1, self.grid[0] * self.grid[1], dim) * 0.02)
        else:
            self.register_parameter("pos_embed", None)

    def position(self, h: int, w: int, device: torch.device) -> Tensor | None:
        """(1, h*w, D) position embedding that ``forward`` adds for an h × w patch grid (None: ``pos_embed='none'``)."""
        if self.pos_embed_kind == "none":
            return None
        if self.pos_embed_kind == "sincos":
            rows, cols = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
            return sincos_2d(rows.flatten(), cols.flatten(), self.dim).unsqueeze(0)
        if (h, w) == self.grid:
            return self.pos_embed
        table = rearrange(self.pos_embed, "1 (h w) d -> 1 d h w", h=self.grid[0])
        table = F.interpolate(table, size=(h, w), mode="bicubic", align_corners=False)
        return rearrange(table, "1 d h w -> 1 (h w) d")

    def feature_map(self, images: Tensor) -> Tensor:
        """(B, C, H, W) float images -> (B, D, h, w) patch embeddings before any position encoding, in the weights'
        dtype: what ``forward`` flattens into tokens, and what a detector may sample at projected points."""
        check_tensor("images", images, ndim=4, layout="(B, C, H, W)", sizes={1: self.in_chans})
        _, _, height, width = images.shape
        p = self.patch_size
        for name, side in (("H", height), ("W", width)):
            if side % p:
                raise ValueError(
                    f"images: expected {name} divisible by patch_size={p}, got shape {tuple(images.shape)}"
                )
        return self.proj(self.stem(images.to(self.proj.weight.dtype)))

    def forward(self, images: Tensor) -> Tokens:
        """(B, C, H, W) float images -> Tokens with x (B, h*w, D), pos (B, h*w, 2) = (row, col)."""
        x = self.feature_map(images)  # (B, D, h, w)

        h, w = x.shape[-2:]
        x = rearrange(x, "b d h w -> b (h w) d")
        pos_embed = self.position(h, w, x.device)
        if pos_embed is not None:
            x = x + pos_embed.to(x.dtype)
        rows, cols = torch.meshgrid(
            torch.arange(h, device=x.device, dtype=torch.float32),
            torch.arange(w, device=x.device, dtype=torch.float32),
            indexing="ij",
        )
        coords = torch.stack([rows.flatten(), cols.flatten()], dim=-1)  # (h*w, 2)
        return Tokens.create(x, modality=0, pos=coords)
