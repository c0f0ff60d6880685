"""Task heads: each reads the model's output (``ModelOutput``) and owns its loss. One file per kind of output."""

from omni.heads.classification import ClassificationHead
from omni.heads.token import TokenHead

__all__ = ["ClassificationHead", "TokenHead"]
