"""Lightning data modules for image classification.

Every module yields batches ``{"image": (B, C, H, W) float32, "label": (B,) int64}`` and exposes ``num_classes``,
``in_chans``, ``img_size`` (H, W) and ``class_names`` from ``__init__`` on, so a config can link them to the model.

- ``DigitsDataModule``: scikit-learn's bundled 8×8 handwritten digits (offline; the default task).
- ``TorchvisionDataModule``: CIFAR-10/100, MNIST, Fashion-MNIST through ``torchvision.datasets``.
- ``ImageFolderDataModule``: a user's own folder of images, one subfolder per class.

Shape legend
    B batch   C channels   H, W image height, width
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision import datasets as tvd
from torchvision.datasets.folder import IMG_EXTENSIONS, pil_loader
from torchvision.transforms import v2

__all__ = [
    "DigitsDataModule",
    "ImageFolderDataModule",
    "TorchvisionDataModule",
    "digits_splits",
    "random_affine",
]

Batch = dict[str, Tensor]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DIGITS_MAX = 16.0  # load_digits pixels are counts of set pixels in 4×4 blocks of a 32×32 bitmap: 0..16


def _pair(v: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(v, int):
        v = (v, v)
    if len(v) != 2 or any(int(s) < 1 for s in v):
        raise ValueError(f"{name}: expected a positive int or a pair (H, W), got {v!r}")
    return (int(v[0]), int(v[1]))


def _check_common(batch_size: int, val_fraction: float, num_workers: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction: expected a fraction in (0, 1), got {val_fraction}")
    if num_workers < 0:
        raise ValueError(f"num_workers: expected >= 0, got {num_workers}")


def _split(labels: np.ndarray, n_out: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``range(len(labels))`` into sorted (keep, held_out) index arrays, ``n_out`` held out.

    Stratified when every class can give at least one sample to each side; plain shuffling otherwise (tiny sets).
    """
    idx = np.arange(len(labels))
    if not 1 <= n_out < len(labels):
        raise ValueError(f"cannot hold out {n_out} of {len(labels)} samples: expected at least one on each side")
    _, counts = np.unique(labels, return_counts=True)
    can_stratify = counts.min() >= 2 and len(counts) <= n_out <= len(labels) - len(counts)
    keep, out = train_test_split(
        idx, test_size=n_out, stratify=labels if can_stratify else None, random_state=seed, shuffle=True
    )
    return np.sort(keep), np.sort(out)


class _DictDataset(Dataset):
    """``base[i] -> (image, label)`` seen through ``indices`` and ``transform`` as ``{"image", "label"}`` items."""

    def __init__(self, base: Any, indices: Sequence[int] | None, transform: Callable[[Any], Tensor]) -> None:
        self.base, self.transform = base, transform
        self.indices = list(range(len(base))) if indices is None else [int(i) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image, label = self.base[self.indices[i]]
        return {"image": self.transform(image).as_subclass(Tensor), "label": int(label)}


class _ImageDataModule(L.LightningDataModule):
    """Shared loaders. Subclasses fill ``train_set``, ``val_set``, ``test_set`` in ``setup``."""

    num_classes: int
    in_chans: int
    img_size: tuple[int, int]
    class_names: list[str]

    def __init__(self, batch_size: int, num_workers: int) -> None:
        super().__init__()
        self.batch_size, self.num_workers = batch_size, num_workers
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def _collate(self, train: bool) -> Callable[[list[Any]], Batch]:
        return default_collate

    def _loader(self, ds: Dataset | None, train: bool) -> DataLoader:
        if ds is None:
            raise RuntimeError(f"{type(self).__name__}: call setup() before asking for a data loader")
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=train,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=self._collate(train),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)


# ---------------------------------------------------------------------------------------------------------------------
# Digits


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


@dataclass
class _AffineCollate:
    """Stack a list of items, then warp the whole batch at once (a picklable collate_fn for worker processes)."""

    strength: float
    fill: float

    def __call__(self, items: list[dict[str, Tensor]]) -> Batch:
        batch = default_collate(items)
        k = self.strength
        batch["image"] = random_affine(
            batch["image"], degrees=10.0 * k, translate=1.0 * k, scale=(1 - 0.1 * k, 1 + 0.1 * k), shear=8.0 * k,
            fill=self.fill,
        )  # fmt: skip
        return batch


class DigitsDataModule(_ImageDataModule):
    """scikit-learn's bundled handwritten digits: 1,797 grey 8×8 images of 0-9, no download.

    Split: a fixed stratified 80/20 train/test split (1,437 / 360) seeded by ``split_seed``, then a stratified
    ``val_fraction`` of the training part for validation, seeded by ``seed``. ``digits_splits`` returns the same
    split as raw arrays. Pixels are divided by 16, then normalised with the training set's mean and std.

    Training batches are augmented as a whole: a random affine warp per image (rotation ±10°, shift ±1 pixel, scale
    0.9-1.1, shear ±8°, all times ``augment_strength``), drawn from torch's RNG in the collate function.
    """

    num_classes = 10
    in_chans = 1
    img_size = (8, 8)

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        seed: int = 0,
        augment: bool = True,
        num_workers: int = 0,
        split_seed: int = 0,
        augment_strength: float = 1.0,
    ) -> None:
        """
        Args:
            batch_size: images per batch.
            val_fraction: share of the 1,437 training images held out for validation (stratified).
            seed: seed of the validation hold-out.
            augment: random affine warps on training batches (never on validation or test).
            num_workers: DataLoader worker processes; 0 loads in the main process, which is fastest for 8×8 images.
            split_seed: seed of the fixed 80/20 train/test split; keep it fixed to compare runs.
            augment_strength: scales every augmentation range (1.0: rotation ±10°, shift ±1 px, scale ±10 %,
                shear ±8°).
        """
        super().__init__(batch_size, num_workers)
        _check_common(batch_size, val_fraction, num_workers)
        if augment_strength < 0:
            raise ValueError(f"augment_strength: expected >= 0, got {augment_strength}")
        self.val_fraction, self.seed, self.split_seed = val_fraction, seed, split_seed
        self.augment, self.augment_strength = augment, augment_strength
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
        train_x = raw["train"][0] / DIGITS_MAX
        self.mean, self.std = float(train_x.mean()), float(train_x.std())

        def tensors(x: np.ndarray, y: np.ndarray) -> _TensorDictDataset:
            x = (torch.from_numpy(x / DIGITS_MAX).float() - self.mean) / self.std
            return _TensorDictDataset(rearrange(x, "n h w -> n 1 h w").contiguous(), torch.from_numpy(y).long())

        self.train_set, self.val_set, self.test_set = (tensors(*raw[k]) for k in ("train", "val", "test"))

    def _collate(self, train: bool) -> Callable[[list[Any]], Batch]:
        if train and self.augment and self.augment_strength > 0:
            assert self.mean is not None and self.std is not None
            return _AffineCollate(self.augment_strength, fill=-self.mean / self.std)  # fill = a blank pixel
        return default_collate


# ---------------------------------------------------------------------------------------------------------------------
# torchvision data sets

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
    flip: bool
    pad: int  # random-crop padding at native size
    classes: list[str]


_SPECS: dict[str, _Spec] = {
    "CIFAR10": _Spec(
        tvd.CIFAR10, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), True, 4,
        "airplane automobile bird cat deer dog frog horse ship truck".split(),
    ),
    "CIFAR100": _Spec(
        tvd.CIFAR100, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), True, 4, _CIFAR100_CLASSES
    ),
    "MNIST": _Spec(tvd.MNIST, 28, (0.1307,), (0.3081,), False, 2, list(tvd.MNIST.classes)),
    "FashionMNIST": _Spec(tvd.FashionMNIST, 28, (0.2860,), (0.3530,), False, 2, list(tvd.FashionMNIST.classes)),
}  # fmt: skip


class TorchvisionDataModule(_ImageDataModule):
    """CIFAR-10, CIFAR-100, MNIST or Fashion-MNIST from ``torchvision.datasets``.

    Validation is a seeded, stratified ``val_fraction`` of the official training split; test is the official test
    split. Images are normalised with the data set's standard per-channel statistics. Training augmentation: a random
    crop after zero padding (4 px for CIFAR, 2 px for the MNISTs, scaled with ``img_size``), plus a horizontal flip
    for CIFAR only (a flipped digit is another glyph).
    """

    def __init__(
        self,
        dataset: Literal["CIFAR10", "CIFAR100", "MNIST", "FashionMNIST"],
        root: str = "data",
        download: bool = False,
        batch_size: int = 128,
        val_fraction: float = 0.1,
        seed: int = 0,
        augment: bool = True,
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
            augment: random crop (and flip for CIFAR) on training images.
            num_workers: DataLoader worker processes.
            img_size: resize every image to this (H, W) or square side; None keeps the native size (32 or 28).
        """
        super().__init__(batch_size, num_workers)
        _check_common(batch_size, val_fraction, num_workers)
        if dataset not in _SPECS:
            raise ValueError(f"dataset: expected one of {sorted(_SPECS)}, got {dataset!r}")
        self.dataset, self.root, self.download = dataset, root, download
        self.val_fraction, self.seed, self.augment = val_fraction, seed, augment
        self.spec = _SPECS[dataset]
        self.resize = img_size is not None
        self.img_size = _pair(img_size, "img_size") if img_size is not None else (self.spec.size, self.spec.size)
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
        if train and self.augment:
            pad = max(1, round(self.spec.pad * max(self.img_size) / self.spec.size))
            steps.append(v2.RandomCrop(self.img_size, padding=pad))
            if self.spec.flip:
                steps.append(v2.RandomHorizontalFlip())
        steps += [v2.Normalize(list(self.spec.mean), list(self.spec.std)), v2.ToPureTensor()]
        return v2.Compose(steps)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate") and self.train_set is None:
            base = self._load(train=True)
            self.class_names = list(base.classes)
            labels = np.asarray(base.targets)
            keep, val = _split(labels, math.ceil(self.val_fraction * len(labels)), self.seed)
            self.train_set = _DictDataset(base, keep, self._transform(train=True))
            self.val_set = _DictDataset(base, val, self._transform(train=False))
        if stage in (None, "test", "predict") and self.test_set is None:
            self.test_set = _DictDataset(self._load(train=False), None, self._transform(train=False))


# ---------------------------------------------------------------------------------------------------------------------
# A folder of images


class _FileList(Dataset):
    def __init__(self, samples: list[tuple[str, int]]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        path, label = self.samples[i]
        return pil_loader(path), label  # pil_loader converts to RGB


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


class ImageFolderDataModule(_ImageDataModule):
    """A folder of the user's own images, one subfolder per class (``root/<class>/<image>``), read as RGB.

    Two layouts:

    - ``root/train/<class>/...`` with optional ``root/val/`` (or ``root/valid/``) and ``root/test/``: test is ``val``
      when there is no ``test/``; with no validation folder, a ``val_fraction`` of ``train/`` is held out.
    - ``root/<class>/...``: split into train/val/test, stratified and seeded, with ``val_fraction`` for validation and
      10 % for test (80/10/10 by default).

    Classes are the sorted subfolder names of ``train/`` (or ``root``), found in ``__init__`` so ``num_classes`` can
    be linked to the model. Training augmentation: RandomResizedCrop(scale 0.6-1) and a horizontal flip; validation
    and test images are resized to ``img_size``.
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
        augment: bool = True,
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
            augment: random resized crop and horizontal flip on training images.
            num_workers: DataLoader worker processes (decoding images is the slow part).
            mean: per-channel (RGB) mean for normalisation; ImageNet's by default.
            std: per-channel (RGB) standard deviation for normalisation; ImageNet's by default.
        """
        super().__init__(batch_size, num_workers)
        _check_common(batch_size, val_fraction, num_workers)
        for name, v in (("mean", mean), ("std", std)):
            if len(v) != 3:
                raise ValueError(f"{name}: expected 3 values (R, G, B), got {v!r}")
        if min(std) <= 0:
            raise ValueError(f"std: expected positive values, got {std!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"root: expected an existing folder of class subfolders, got {str(root)!r} (not found)")
        self.img_size = _pair(img_size, "img_size")
        self.val_fraction, self.seed, self.augment = val_fraction, seed, augment
        self.mean, self.std = tuple(mean), tuple(std)
        self.train_dir = self.root / "train" if (self.root / "train").is_dir() else self.root
        self.class_names = _class_dirs(self.train_dir)
        if not self.class_names:
            raise ValueError(f"root: expected class subfolders (root/<class>/ or root/train/<class>/) in {str(root)!r}")
        self.num_classes = len(self.class_names)

    def _transform(self, train: bool) -> v2.Compose:
        if train and self.augment:
            steps: list[Any] = [v2.RandomResizedCrop(self.img_size, scale=(0.6, 1.0)), v2.RandomHorizontalFlip()]
        else:
            steps = [v2.Resize(self.img_size)]
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
            rest, test_idx = _split(labels, math.ceil(self.test_fraction * len(train)), self.seed)
            keep, val_idx = _split(labels[rest], n_val, self.seed)
            train, val, test = ([train[i] for i in idx] for idx in (rest[keep], rest[val_idx], test_idx))
            return train, val, test
        val_dir = next((self.root / n for n in ("val", "valid") if (self.root / n).is_dir()), None)
        test_dir = self.root / "test" if (self.root / "test").is_dir() else val_dir
        if val_dir is None:
            keep, val_idx = _split(labels, n_val, self.seed)
            val, train = [train[i] for i in val_idx], [train[i] for i in keep]
        else:
            val = _scan(val_dir, class_to_idx)
        test = val if test_dir is None or test_dir == val_dir else _scan(test_dir, class_to_idx)
        return train, val, test

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train, val, test = self._samples()
        self.train_set = _DictDataset(_FileList(train), None, self._transform(train=True))
        self.val_set = _DictDataset(_FileList(val), None, self._transform(train=False))
        self.test_set = _DictDataset(_FileList(test), None, self._transform(train=False))
