"""What every image-classification data module shares: the batch contract and the (image, label) view.

Every image module yields batches ``{"image": (B, C, H, W) float32, "label": (B,) int64}`` and exposes
``num_classes``, ``in_chans``, ``img_size`` (H, W) and ``class_names`` from ``__init__`` on, so a config can link
them to the model.

Shape legend
    B batch   C channels   H, W image height, width
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor
from torch.utils.data import Dataset

from omni.data.augment import ImageAugment
from omni.data.base import OmniDataModule

__all__ = ["ImageDataModule", "LabelledImages", "resolve_augment"]


def resolve_augment(augment: bool | ImageAugment, recipe: ImageAugment) -> ImageAugment:
    """``true``: the data set's own ``recipe``; ``false``: nothing; an ``ImageAugment``: exactly that."""
    if isinstance(augment, ImageAugment):
        return augment
    if isinstance(augment, bool):
        return recipe if augment else ImageAugment()
    raise ValueError(f"augment: expected true, false or an ImageAugment, got {type(augment).__name__}")


class LabelledImages(Dataset):
    """``base[i] -> (image, label)`` seen through ``indices`` and ``transform`` as ``{"image", "label"}`` items."""

    def __init__(self, base: Any, indices: Sequence[int] | None, transform: Callable[[Any], Tensor]) -> None:
        self.base, self.transform = base, transform
        self.indices = list(range(len(base))) if indices is None else [int(i) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image, label = self.base[self.indices[i]]
        return {"image": self.transform(image).as_subclass(Tensor), "label": int(label)}


class ImageDataModule(OmniDataModule):
    """An ``OmniDataModule`` of labelled images (the attributes a classifier config links to)."""

    num_classes: int
    in_chans: int
    img_size: tuple[int, int]
    class_names: list[str]
