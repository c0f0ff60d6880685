"""scikit-learn's bundled handwritten digits (offline; omni's default task).

Shape legend
    B batch   H, W = 8, 8
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from einops import rearrange
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor
from torch.utils.data import Dataset, default_collate

from omni.data.augment import AugmentCollate, ImageAugment
from omni.data.base import Split, check_fraction, check_train_fraction, kept_share
from omni.data.images import ImageDataModule, resolve_augment

__all__ = ["DIGITS_RECIPE", "DigitsDataModule", "digits_splits"]

Batch = dict[str, Tensor]
DIGITS_MAX = 16.0  # load_digits pixels are counts of set pixels in 4×4 blocks of a 32×32 bitmap: 0..16
DIGITS_RECIPE = ImageAugment(affine=1.0)  # what ``augment: true`` means for digits: warps, no flip, no crop


def digits_splits(
    split_seed: int = 0, val_fraction: float = 0.1, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The digits train/val/test split as raw arrays, so other models (an SVC) can use the exact same split.

    A fixed stratified 80/20 train/test split (``random_state=split_seed``), then a stratified ``val_fraction`` of the
    training part held out for validation (``random_state=seed``).

    Returns:
        ``{"train" | "val" | "test": (X (n, 8, 8) float64 in 0..16, y (n,) int64)}``.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction: expected a fraction in (0, 1), got {val_fraction}")
    digits = load_digits()
    x, y = digits.images.astype(np.float64), digits.target.astype(np.int64)
    x_fit, x_test, y_fit, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=split_seed)
    x_tr, x_val, y_tr, y_val = train_test_split(x_fit, y_fit, test_size=val_fraction, stratify=y_fit, random_state=seed)
    return {"train": (x_tr, y_tr), "val": (x_val, y_val), "test": (x_test, y_test)}


class _TensorDictDataset(Dataset):
    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"image": self.images[i], "label": self.labels[i]}


class DigitsDataModule(ImageDataModule):
    """scikit-learn's bundled handwritten digits: 1,797 grey 8×8 images of 0-9, no download.

    Split: a fixed stratified 80/20 train/test split (1,437 / 360) seeded by ``split_seed``, then a stratified
    ``val_fraction`` of the training part for validation, seeded by ``seed``. ``digits_splits`` returns the same
    split as raw arrays. Pixels are divided by 16, then normalised with the training set's mean and std.

    Augmentation (``augment: true``): a random affine warp per image (rotation ±10°, shift ±1 pixel, scale 0.9-1.1,
    shear ±8°), applied to whole training batches in the collate function with torch's RNG; no flip (a flipped digit
    is another glyph) and no crop. Any ``ImageAugment`` may replace it.
    """

    num_classes = 10
    in_chans = 1
    img_size = (8, 8)

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        seed: int = 0,
        augment: bool | ImageAugment = True,
        num_workers: int = 0,
        split_seed: int = 0,
        train_fraction: float = 1.0,
    ) -> None:
        """
        Args:
            batch_size: images per batch.
            val_fraction: share of the 1,437 training images held out for validation (stratified).
            seed: seed of the validation hold-out.
            augment: ``true`` for the recipe above, ``false`` for none, or an ``ImageAugment`` (flip, crop, affine
                strength); training batches only.
            num_workers: DataLoader worker processes; 0 loads in the main process, which is fastest for 8×8 images.
            split_seed: seed of the fixed 80/20 train/test split; keep it fixed to compare runs.
            train_fraction: keep this share of the training images (stratified, drawn with ``split_seed``: the same
                cut in every run); validation and test are untouched.
        """
        super().__init__(batch_size, num_workers)
        check_fraction("val_fraction", val_fraction)
        self.val_fraction, self.seed, self.split_seed = val_fraction, seed, split_seed
        check_train_fraction(train_fraction)
        self.train_fraction = train_fraction
        self.augment = resolve_augment(augment, DIGITS_RECIPE)
        self.class_names = [str(d) for d in range(10)]
        self.mean: float | None = None
        self.std: float | None = None

    def splits(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """This module's split as raw arrays (see ``digits_splits``)."""
        return digits_splits(self.split_seed, self.val_fraction, self.seed)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        raw = self.splits()
        x, y = raw["train"]
        kept = kept_share(len(y), self.train_fraction, labels=y, seed=self.split_seed)
        raw["train"] = (x[kept], y[kept])
        train_x = raw["train"][0] / DIGITS_MAX
        self.mean, self.std = float(train_x.mean()), float(train_x.std())

        def tensors(x: np.ndarray, y: np.ndarray) -> _TensorDictDataset:
            x = (torch.from_numpy(x / DIGITS_MAX).float() - self.mean) / self.std
            return _TensorDictDataset(rearrange(x, "n h w -> n 1 h w").contiguous(), torch.from_numpy(y).long())

        self.train_set, self.val_set, self.test_set = (tensors(*raw[k]) for k in ("train", "val", "test"))

    def collate(self, split: Split) -> Callable[[list[Any]], Batch]:
        if split != "train" or self.augment == ImageAugment():
            return default_collate
        assert self.mean is not None and self.std is not None, "setup() sets the statistics"
        fill = -self.mean / self.std  # a blank pixel
        return AugmentCollate(self.augment, self.img_size, fill=fill, seed=torch.initial_seed() % 2**31)
