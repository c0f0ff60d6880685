"""Image augmentation as a config choice: what a data module may do to training images, and the batch-level random
affine warp.

Orientation-sensitive images (digits, text, signs) keep ``hflip`` off: a flipped glyph is another glyph.

Shape legend
    B batch   C channels   H, W image height, width
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor
from torch.utils.data import default_collate
from torchvision.transforms import v2

from omni.choices import check_choice

__all__ = ["AugmentCollate", "Crop", "ImageAugment", "random_affine"]

Crop = Literal["none", "pad", "resized"]


@dataclass(frozen=True)
class ImageAugment:
    """What happens to training images (validation and test images are never augmented). The defaults do nothing;
    each data module documents its own recipe, used when its ``augment`` is ``true``.

    Attributes:
        hflip: random horizontal flip (off for digits, text and signs).
        crop: ``none``; ``pad`` (zero-pad by ``crop_padding`` pixels, then crop back at a random offset: CIFAR's
            recipe); ``resized`` (``RandomResizedCrop`` over ``crop_scale`` of the area: ImageNet's recipe).
        crop_padding: pixels of padding for ``crop: pad``, at the image's native size.
        crop_scale: (min, max) share of the area kept by ``crop: resized``.
        affine: strength of a random affine warp per image, applied to whole batches: rotation ±10°, shift ±1 pixel,
            scale ±10 % and x-shear ±8°, each times ``affine``; 0 turns it off.
    """

    hflip: bool = False
    crop: Crop = "none"
    crop_padding: int = 4
    crop_scale: tuple[float, float] = (0.6, 1.0)
    affine: float = 0.0

    def __post_init__(self) -> None:
        check_choice("augment.crop", self.crop, Crop)
        if self.crop_padding < 0:
            raise ValueError(f"augment.crop_padding: expected >= 0 pixels, got {self.crop_padding}")
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"augment.crop_scale: expected 0 < min <= max <= 1, got {self.crop_scale!r}")
        if self.affine < 0:
            raise ValueError(f"augment.affine: expected a strength >= 0, got {self.affine}")

    def sample_transforms(self, size: tuple[int, int], native: int | None = None, fill: float = 0.0) -> list[Any]:
        """torchvision v2 steps for one training image of output ``size`` (H, W); ``native`` is the side the
        padding is given for (it is scaled with the image)."""
        steps: list[Any] = []
        if self.crop == "pad" and self.crop_padding > 0:
            pad = max(1, round(self.crop_padding * max(size) / (native or max(size))))
            steps.append(v2.RandomCrop(size, padding=pad, fill=fill))
        elif self.crop == "resized":
            steps.append(v2.RandomResizedCrop(size, scale=self.crop_scale, antialias=True))
        if self.hflip:
            steps.append(v2.RandomHorizontalFlip())
        return steps


def random_affine(
    images: Tensor,
    degrees: float = 10.0,
    translate: float = 1.0,
    scale: tuple[float, float] = (0.9, 1.1),
    shear: float = 8.0,
    fill: float = 0.0,
) -> Tensor:
    """A different random affine warp for every image of a batch, in one ``grid_sample`` call (bilinear).

    Rotation in [-degrees, degrees], translation in [-translate, translate] pixels per axis, isotropic scale in
    ``scale``, x-shear in [-shear, shear] degrees, about the image centre. Pixels from outside the image read ``fill``.
    Random numbers come from torch's global RNG, so ``lightning.seed_everything`` makes the warps reproducible.

    Args:
        images: (B, C, H, W) float.
        degrees: largest rotation, degrees.
        translate: largest shift per axis, pixels.
        scale: (low, high) zoom factor range.
        shear: largest x-shear angle, degrees.
        fill: value of pixels that come from outside the image.

    Returns:
        (B, C, H, W) warped images.
    """
    b, _, h, w = images.shape
    u = torch.rand(b, 5, dtype=images.dtype, device=images.device) * 2 - 1  # (B, 5) in [-1, 1)
    angle = torch.deg2rad(u[:, 0] * degrees)
    shift = u[:, 1:3] * translate  # (B, 2) pixels (x, y)
    zoom = scale[0] + (u[:, 3] + 1) / 2 * (scale[1] - scale[0])
    sh = torch.tan(torch.deg2rad(u[:, 4] * shear))
    cos, sin, one, zero = torch.cos(angle), torch.sin(angle), torch.ones_like(angle), torch.zeros_like(angle)
    rot = rearrange(torch.stack([cos, -sin, sin, cos], -1), "b (i j) -> b i j", i=2)
    shear_m = rearrange(torch.stack([one, sh, zero, one], -1), "b (i j) -> b i j", i=2)
    forward = rot @ shear_m * zoom[:, None, None]  # (B, 2, 2) input pixel offsets -> output pixel offsets
    inverse = torch.linalg.inv(forward)
    # affine_grid maps output to input coordinates in [-1, 1] units: one pixel is 2 / W along x, 2 / H along y.
    to_unit = torch.tensor([2.0 / w, 2.0 / h], dtype=images.dtype, device=images.device)
    lin = to_unit[None, :, None] * inverse / to_unit[None, None, :]
    offset = -to_unit[None, :] * (inverse @ shift[:, :, None])[:, :, 0]
    theta = torch.cat([lin, offset[:, :, None]], dim=2)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    warped = F.grid_sample(images - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return warped + fill


@dataclass
class AugmentCollate:
    """Collate ``{"image", ...}`` items with an ``ImageAugment`` done on tensors: its per-image steps (flip, crop)
    first, then one random affine warp per image for the whole batch at once. Picklable, so worker processes can run
    it.

    A batch's random draws come from torch's RNG seeded with ``seed`` and a hash of the batch's pixels (in a forked
    RNG: the global stream is left as it was), so they depend on nothing but the batch: not on when the loader runs
    (Lightning fetches one batch ahead of the step), nor on what drew from the RNG before. A run resumed mid-epoch
    warps its batches as the uninterrupted run did, and dropout's draws do not shift with the loader's. Batches are
    shuffled anew every epoch, so an image's warp changes from epoch to epoch.

    Attributes:
        augment: what to do.
        img_size: (H, W) of the images.
        fill: the value of a blank pixel (what padding and warps bring in), in the images' normalised units.
    """

    augment: ImageAugment
    img_size: tuple[int, int]
    fill: float = 0.0
    seed: int = 0  # with the hash of a batch's pixels, the seed of its draws

    def __call__(self, items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        key = hashlib.blake2b(str(self.seed).encode(), digest_size=8)
        for item in items:
            key.update(item["image"].detach().cpu().contiguous().numpy().tobytes())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int.from_bytes(key.digest(), "little") % 2**63)
            return self._augment(items)

    def _augment(self, items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        steps = self.augment.sample_transforms(self.img_size, fill=self.fill)
        if steps:
            per_image = v2.Compose(steps)
            items = [{**item, "image": per_image(item["image"])} for item in items]
        batch = default_collate(items)
        k = self.augment.affine
        if k > 0:
            batch["image"] = random_affine(
                batch["image"], degrees=10.0 * k, translate=1.0 * k, scale=(1 - 0.1 * k, 1 + 0.1 * k), shear=8.0 * k,
                fill=self.fill,
            )  # fmt: skip
        return batch
