"""Modality tokenizers ("chunkers"): raw input -> ``Tokens``.

They live inside the ``omni`` package (``omni.tokenizers``) and not as a top-level ``tokenizers`` package, which
would shadow Hugging Face's ``tokenizers`` for anyone who installs omni or runs from its root.

Every tokenizer is an ``nn.Module`` whose first argument is the model width ``dim``, whose ``forward(raw)``
returns ``Tokens``, and whose class attribute ``modalities`` names the modality tags it emits: ``Tokens.modality``
holds indices into that tuple, and the model maps them onto its own modality table.
"""

from omni.tokenizers.audio import MelSpectrogramTokenizer
from omni.tokenizers.image import ImagePatchTokenizer
from omni.tokenizers.sensor import SensorTokenizer
from omni.tokenizers.text import TextTokenizer
from omni.tokenizers.trajectory import TrajectoryTokenizer

__all__ = ["ImagePatchTokenizer", "MelSpectrogramTokenizer", "SensorTokenizer", "TextTokenizer", "TrajectoryTokenizer"]
