"""CIFAR-10/100, MNIST and Fashion-MNIST through ``torchvision.datasets`` (downloaded on request, read offline).

Shape legend
    B batch   C channels   H, W image height, width
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torchvision import datasets as tvd
from torchvision.transforms import v2

from omni.data.augment import ImageAugment
from omni.data.base import check_fraction, held_out_split, pair
from omni.data.images import ImageDataModule, LabelledImages, resolve_augment

__all__ = ["TorchvisionDataModule"]

_CIFAR_RECIPE = ImageAugment(hflip=True, crop="pad", crop_padding=4)
_MNIST_RECIPE = ImageAugment(crop="pad", crop_padding=2)  # no flip: a flipped digit is another glyph

_CIFAR100_CLASSES = """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly
camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin
elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man
maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain
plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake
spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor train trout tulip turtle
wardrobe whale willow_tree wolf woman worm""".split()


@dataclass(frozen=True)
class _Spec:
    cls: type
    size: int  # native side length
    mean: tuple[float, ...]  # per-channel statistics of the official training split
    std: tuple[float, ...]
    recipe: ImageAugment  # what ``augment: true`` means for this data set
    classes: list[str]


_SPECS: dict[str, _Spec] = {
    "CIFAR10": _Spec(
        tvd.CIFAR10, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), _CIFAR_RECIPE,
        "airplane automobile bird cat deer dog frog horse ship truck".split(),
    ),
    "CIFAR100": _Spec(
        tvd.CIFAR100, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), _CIFAR_RECIPE, _CIFAR100_CLASSES
    ),
    "MNIST": _Spec(tvd.MNIST, 28, (0.1307,), (0.3081,), _MNIST_RECIPE, list(tvd.MNIST.classes)),
    "FashionMNIST": _Spec(tvd.FashionMNIST, 28, (0.2860,), (0.3530,), _MNIST_RECIPE, list(tvd.FashionMNIST.classes)),
}  # fmt: skip


class TorchvisionDataModule(ImageDataModule):
    """CIFAR-10, CIFAR-100, MNIST or Fashion-MNIST from ``torchvision.datasets``.

    Validation is a seeded, stratified ``val_fraction`` of the official training split; test is the official test
    split. Images are normalised with the data set's standard per-channel statistics. Augmentation
    (``augment: true``): a random crop after zero padding (4 px for CIFAR, 2 px for the MNISTs, scaled with
    ``img_size``), plus a horizontal flip for CIFAR only (a flipped digit is another glyph). Any ``ImageAugment`` may
    replace it.
    """

    def __init__(
        self,
        dataset: Literal["CIFAR10", "CIFAR100", "MNIST", "FashionMNIST"],
        root: str = "data",
        download: bool = False,
        batch_size: int = 128,
        val_fraction: float = 0.1,
        seed: int = 0,
        augment: bool | ImageAugment = True,
        num_workers: int = 2,
        img_size: int | tuple[int, int] | None = None,
    ) -> None:
        """
        Args:
            dataset: which torchvision data set.
            root: folder that holds (or will hold, with ``download``) the data set's files.
            download: fetch the files into ``root`` in ``prepare_data`` when they are missing.
            batch_size: images per batch.
            val_fraction: share of the official training split held out for validation.
            seed: seed of the validation hold-out.
            augment: ``true`` for the recipe above, ``false`` for none, or an ``ImageAugment``; training images only.
            num_workers: DataLoader worker processes.
            img_size: resize every image to this (H, W) or square side; None keeps the native size (32 or 28).
        """
        super().__init__(batch_size, num_workers)
        check_fraction("val_fraction", val_fraction)
        if dataset not in _SPECS:
            raise ValueError(f"dataset: expected one of {sorted(_SPECS)}, got {dataset!r}")
        self.dataset, self.root, self.download = dataset, root, download
        self.val_fraction, self.seed = val_fraction, seed
        self.spec = _SPECS[dataset]
        self.augment = resolve_augment(augment, self.spec.recipe)
        self.resize = img_size is not None
        self.img_size = pair(img_size, "img_size") if img_size is not None else (self.spec.size, self.spec.size)
        self.num_classes = len(self.spec.classes)
        self.in_chans = len(self.spec.mean)
        self.class_names = list(self.spec.classes)

    def _files(self) -> str:
        cls = self.spec.cls
        if hasattr(cls, "base_folder"):  # CIFAR
            return os.path.join(self.root, cls.base_folder)
        return os.path.join(self.root, cls.__name__, "raw")

    def _load(self, train: bool) -> Any:
        try:
            return self.spec.cls(self.root, train=train, download=False)
        except RuntimeError as e:
            raise ValueError(
                f"{self.dataset} files not found under root={self.root!r} (looked in {self._files()!r}: {e}); "
                "pass `download: true` (command line: --data.download true) to download them, "
                "or point `root` at the folder that holds them"
            ) from e

    def prepare_data(self) -> None:
        if self.download:
            for train in (True, False):
                self.spec.cls(self.root, train=train, download=True)
        else:
            self._load(train=False)  # fail early, with the message above, when the files are absent

    def _transform(self, train: bool) -> v2.Compose:
        steps: list[Any] = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
        if self.resize:
            steps.append(v2.Resize(self.img_size, antialias=True))
        if train:
            steps += self.augment.sample_transforms(self.img_size, native=self.spec.size)
        steps += [v2.Normalize(list(self.spec.mean), list(self.spec.std)), v2.ToPureTensor()]
        return v2.Compose(steps)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate") and self.train_set is None:
            base = self._load(train=True)
            self.class_names = list(base.classes)
            labels = np.asarray(base.targets)
            keep, val = held_out_split(labels, math.ceil(self.val_fraction * len(labels)), self.seed)
            self.train_set = LabelledImages(base, keep, self._transform(train=True))
            self.val_set = LabelledImages(base, val, self._transform(train=False))
        if stage in (None, "test", "predict") and self.test_set is None:
            self.test_set = LabelledImages(self._load(train=False), None, self._transform(train=False))


# ---------------------------------------------------------------------------------------------------------------------
