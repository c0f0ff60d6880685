"""Data modules and generators. Every module builds on ``OmniDataModule`` (loaders, checks, seeded splits).

- ``DigitsDataModule``: scikit-learn's bundled 8×8 handwritten digits (offline; the default task).
- ``TorchvisionDataModule``: CIFAR-10/100, MNIST, Fashion-MNIST through ``torchvision.datasets``.
- ``ImageFolderDataModule``: a user's own folder of images, one subfolder per class.
- ``FusionDataModule``: the simulated camera + radar driving corpus (``omni data fusion``), streamed by shard.
- ``SyntheticFusionDataModule``: offline camera + radar + ego scenes (a toy for masks and fusion).
- ``ToySequenceDataModule``: random symbol sequences to copy or reverse (offline; the seq2seq toy).
- ``ManifestDataModule``: speech from NeMo-style JSON-lines manifests (``omni data speech`` writes them); built on
  ``SpeechDataModule`` (audio, transcripts, duration-bucketed batches) like the two below.
- ``LibriSpeechDataModule``, ``SpeechCommandsDataModule``: those corpora in torchaudio's folder layouts.
- ``DurationBucketSampler``: batches of similar duration under a padded-seconds budget, even over DDP ranks.
- ``normalize_text``, ``CharVocab``, ``SubwordVocab``, ``vocab_from_dict``: transcripts to ids and back.
- ``ImageAugment``: image augmentation as a config choice (flip, crop, affine warps).
- ``Episodes``, ``load_episodes``, ``load_minari``, ``load_d4rl_hdf5``: offline RL episodes from a Minari dataset id or
  a D4RL hdf5 file.
"""

from omni.data.augment import ImageAugment
from omni.data.base import OmniDataModule
from omni.data.buckets import DurationBucketSampler
from omni.data.digits import DigitsDataModule, digits_splits
from omni.data.episodes import Episodes
from omni.data.fusion import FusionDataModule
from omni.data.fusion_toy import SyntheticFusionDataModule
from omni.data.image_folder import ImageFolderDataModule
from omni.data.joint import JointDataModule
from omni.data.rl_readers import load_d4rl_hdf5, load_episodes, load_minari
from omni.data.speech import ManifestDataModule, SpeechDataModule
from omni.data.speech_corpora import LibriSpeechDataModule, SpeechCommandsDataModule
from omni.data.text import CharVocab, SubwordVocab, normalize_text, vocab_from_dict
from omni.data.toy_sequences import ToySequenceDataModule
from omni.data.vision import TorchvisionDataModule

__all__ = [
    "CharVocab",
    "DigitsDataModule",
    "DurationBucketSampler",
    "Episodes",
    "FusionDataModule",
    "ImageAugment",
    "ImageFolderDataModule",
    "JointDataModule",
    "LibriSpeechDataModule",
    "ManifestDataModule",
    "OmniDataModule",
    "SpeechCommandsDataModule",
    "SpeechDataModule",
    "SubwordVocab",
    "SyntheticFusionDataModule",
    "TorchvisionDataModule",
    "ToySequenceDataModule",
    "digits_splits",
    "load_d4rl_hdf5",
    "load_episodes",
    "load_minari",
    "normalize_text",
    "vocab_from_dict",
]
