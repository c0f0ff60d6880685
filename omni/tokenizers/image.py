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

__all__ = ["ImagePatchTokenizer", "local_contrast"]


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


def local_contrast(images: Tensor, window: int, floor: float) -> Tensor:
    """Local contrast normalisation: (B, C, H, W) -> (B, C, H, W), each pixel minus the mean of the ``window`` x
    ``window`` pixels around it (per channel; the image's edge counts only the pixels inside), over their standard
    deviation plus ``floor`` (added in quadrature: flat regions and sensor noise stay small). A scene seen through
    fog or at night, I = a * J + b with a, b smooth over the window, normalises to nearly what the clear scene does."""
    pad = window // 2
    mean = F.avg_pool2d(images, window, stride=1, padding=pad, count_include_pad=False)
    square = F.avg_pool2d(images.square(), window, stride=1, padding=pad, count_include_pad=False)
    return (images - mean) / ((square - mean.square()).clamp(min=0) + floor**2).sqrt()


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
        local_contrast: int = 0,
        contrast_floor: float = 0.02,
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
            local_contrast: the side (odd, pixels) of a window over which ``local_contrast`` normalises the image;
                its C channels join the image's, so the stem sees 2C (fog and night lose contrast, not edges). 0: off.
            contrast_floor: ``local_contrast``'s floor on the standard deviation, in the images' units.
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
        if local_contrast and (local_contrast < 3 or local_contrast % 2 == 0):
            raise ValueError(f"local_contrast: expected 0 (off) or an odd window >= 3 pixels, got {local_contrast}")
        if contrast_floor <= 0:
            raise ValueError(f"contrast_floor: expected > 0, got {contrast_floor}")
        self.local_contrast, self.contrast_floor = local_contrast, contrast_floor
        stem_in = in_chans * (2 if local_contrast else 1)
        for name, side in zip(("H", "W"), self.img_size, strict=True):
            if side % patch_size:
                raise ValueError(f"img_size: expected {name} divisible by patch_size={patch_size}, got {side}")
        layers: list[nn.Module] = []
        if stem == "strided" and patch_size & (patch_size - 1):
            raise ValueError(f"patch_size: expected a power of 2 with stem='strided', got {patch_size}")
        if stem == "strided":
            self.stem, patch_in = _strided_stem(stem_in, stem_channels, patch_size.bit_length() - 1), stem_channels
        elif stem == "conv":
            c = stem_in
            for _ in range(stem_depth):
                layers += [nn.Conv2d(c, stem_channels, 3, padding=1, bias=False), nn.BatchNorm2d(stem_channels)]
                layers += [nn.GELU()]
                c = stem_channels
            self.stem = nn.Sequential(*layers)
            patch_in = stem_channels
        else:
            self.stem = nn.Identity()
            patch_in = stem_in
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
        images = images.to(self.proj.weight.dtype)
        if self.local_contrast:
            images = torch.cat([images, local_contrast(images.float(), self.local_contrast, self.contrast_floor)], 1)
            images = images.to(self.proj.weight.dtype)
        return self.proj(self.stem(images))

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
