"""omni: tokenize everything into one transformer."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from omni.attention import masks
from omni.model import ModelOutput, OmniModel
from omni.tokens import Tokens
from omni.transformer import Transformer, TransformerConfig

if TYPE_CHECKING:
    import torch
    from lightning.pytorch import LightningModule

__all__ = ["ModelOutput", "OmniModel", "Tokens", "Transformer", "TransformerConfig", "load", "masks"]


def load(path: str | Path, map_location: str | torch.device = "cpu") -> LightningModule:
    """The task that ``omni export`` wrote into the folder ``path``, rebuilt without pickle (``omni.export.load``)."""
    from omni.export import load as load_exported

    return load_exported(path, map_location)


__version__ = "0.1.0"
