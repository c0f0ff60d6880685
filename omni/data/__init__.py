"""Data modules and generators. Every module builds on ``OmniDataModule`` (loaders, checks, seeded splits).

- ``DigitsDataModule``: scikit-learn's bundled 8×8 handwritten digits (offline; the default task).
- ``TorchvisionDataModule``: CIFAR-10/100, MNIST, Fashion-MNIST through ``torchvision.datasets``.
- ``ImageFolderDataModule``: a user's own folder of images, one subfolder per class.
- ``SyntheticFusionDataModule``: offline camera + radar + ego scenes (a toy for masks and fusion).
- ``ToySequenceDataModule``: random symbol sequences to copy or reverse (offline; the seq2seq toy).
- ``ImageAugment``: image augmentation as a config choice (flip, crop, affine warps).
"""

from omni.data.augment import ImageAugment
from omni.data.base import OmniDataModule
from omni.data.digits import DigitsDataModule, digits_splits
from omni.data.fusion_toy import SyntheticFusionDataModule
from omni.data.image_folder import ImageFolderDataModule
from omni.data.toy_sequences import ToySequenceDataModule
from omni.data.vision import TorchvisionDataModule

__all__ = [
    "DigitsDataModule",
    "ImageAugment",
    "ImageFolderDataModule",
    "OmniDataModule",
    "SyntheticFusionDataModule",
    "TorchvisionDataModule",
    "ToySequenceDataModule",
    "digits_splits",
]
