"""A user's own folder of images, one subfolder per class.

Shape legend
    B batch   C = 3 (RGB)   H, W image height, width
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, pil_loader
from torchvision.transforms import v2

from omni.data.augment import ImageAugment
from omni.data.base import check_fraction, held_out_split, pair
from omni.data.images import ImageDataModule, LabelledImages, resolve_augment

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ImageFolderDataModule"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_FOLDER_RECIPE = ImageAugment(hflip=True, crop="resized", crop_scale=(0.6, 1.0))


class _FileList(Dataset):
    def __init__(self, samples: list[tuple[str, int]]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        path, label = self.samples[i]
        try:
            return pil_loader(path), label  # pil_loader converts to RGB
        except OSError as e:  # PIL's UnidentifiedImageError and truncated files are OSErrors
            raise ValueError(f"{path}: expected an image file PIL can read, got {type(e).__name__}: {e}") from None


def _class_dirs(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _scan(folder: Path, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    """(path, label) of every image under ``folder/<class>/`` (recursively), in a fixed order."""
    extra = sorted(set(_class_dirs(folder)) - set(class_to_idx))
    if extra:
        raise ValueError(f"{folder}: class folders {extra} are not among the training classes {sorted(class_to_idx)}")
    samples = []
    for name, label in class_to_idx.items():
        if not (folder / name).is_dir():
            continue
        for dirpath, _, files in sorted(os.walk(folder / name, followlinks=True)):
            samples += [(os.path.join(dirpath, f), label) for f in sorted(files) if f.lower().endswith(IMG_EXTENSIONS)]
    return samples


class ImageFolderDataModule(ImageDataModule):
    """A folder of the user's own images, one subfolder per class (``root/<class>/<image>``), read as RGB.

    Two layouts:

    - ``root/train/<class>/...`` with optional ``root/val/`` (or ``root/valid/``) and ``root/test/``: test is ``val``
      when there is no ``test/``; with no validation folder, a ``val_fraction`` of ``train/`` is held out.
    - ``root/<class>/...``: split into train/val/test, stratified and seeded, with ``val_fraction`` for validation and
      10 % for test (80/10/10 by default).

    Classes are the sorted subfolder names of ``train/`` (or ``root``), found in ``__init__`` so ``num_classes`` can
    be linked to the model. Augmentation (``augment: true``): RandomResizedCrop (scale 0.6-1) and a horizontal
    flip; any ``ImageAugment`` may replace it (turn ``hflip`` off for text, signs or digits). Validation and test
    images are resized to ``img_size``.
    """

    in_chans = 3
    test_fraction = 0.1  # of the whole set, in the single-folder layout

    def __init__(
        self,
        root: str,
        img_size: int | tuple[int, int] = 224,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        seed: int = 0,
        augment: bool | ImageAugment = True,
        num_workers: int = 2,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        """
        Args:
            root: the data folder (see the class docstring for its two layouts).
            img_size: (H, W) or square side that every image is resized (or cropped) to.
            batch_size: images per batch.
            val_fraction: share held out for validation when there is no validation folder.
            seed: seed of the held-out splits.
            augment: ``true`` for the recipe above, ``false`` for none, or an ``ImageAugment``; training images only.
            num_workers: DataLoader worker processes (decoding images is the slow part).
            mean: per-channel (RGB) mean for normalisation; ImageNet's by default.
            std: per-channel (RGB) standard deviation for normalisation; ImageNet's by default.
        """
        super().__init__(batch_size, num_workers)
        check_fraction("val_fraction", val_fraction)
        for name, v in (("mean", mean), ("std", std)):
            if len(v) != 3:
                raise ValueError(f"{name}: expected 3 values (R, G, B), got {v!r}")
        if min(std) <= 0:
            raise ValueError(f"std: expected positive values, got {std!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"root: expected an existing folder of class subfolders, got {str(root)!r} (not found)")
        self.img_size = pair(img_size, "img_size")
        self.val_fraction, self.seed = val_fraction, seed
        self.augment = resolve_augment(augment, _FOLDER_RECIPE)
        self.mean, self.std = tuple(mean), tuple(std)
        self.train_dir = self.root / "train" if (self.root / "train").is_dir() else self.root
        self.class_names = _class_dirs(self.train_dir)
        if not self.class_names:
            raise ValueError(f"root: expected class subfolders (root/<class>/ or root/train/<class>/) in {str(root)!r}")
        self.num_classes = len(self.class_names)

    def _transform(self, train: bool) -> v2.Compose:
        aug = self.augment if train else ImageAugment()
        steps: list[Any] = [] if aug.crop == "resized" else [v2.Resize(self.img_size)]  # the crop resizes itself
        steps += aug.sample_transforms(self.img_size)
        steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(self.mean), list(self.std))]
        return v2.Compose([*steps, v2.ToPureTensor()])

    def _samples(self) -> tuple[list[tuple[str, int]], list[tuple[str, int]], list[tuple[str, int]]]:
        class_to_idx = {c: i for i, c in enumerate(self.class_names)}
        train = _scan(self.train_dir, class_to_idx)
        if not train:
            raise ValueError(f"root: no images ({', '.join(IMG_EXTENSIONS)}) in the class folders of {self.train_dir}")
        labels = np.array([y for _, y in train])
        n_val = math.ceil(self.val_fraction * len(train))
        if self.train_dir == self.root:  # one folder: carve test, then val from the rest
            rest, test_idx = held_out_split(labels, math.ceil(self.test_fraction * len(train)), self.seed)
            keep, val_idx = held_out_split(labels[rest], n_val, self.seed)
            train, val, test = ([train[i] for i in idx] for idx in (rest[keep], rest[val_idx], test_idx))
            return train, val, test
        val_dir = next((self.root / n for n in ("val", "valid") if (self.root / n).is_dir()), None)
        test_dir = self.root / "test" if (self.root / "test").is_dir() else val_dir
        if val_dir is None:
            keep, val_idx = held_out_split(labels, n_val, self.seed)
            val, train = [train[i] for i in val_idx], [train[i] for i in keep]
        else:
            val = _scan(val_dir, class_to_idx)
        test = val if test_dir is None or test_dir == val_dir else _scan(test_dir, class_to_idx)
        return train, val, test

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train, val, test = self._samples()
        self.train_set = LabelledImages(_FileList(train), None, self._transform(train=True))
        self.val_set = LabelledImages(_FileList(val), None, self._transform(train=False))
        self.test_set = LabelledImages(_FileList(test), None, self._transform(train=False))
