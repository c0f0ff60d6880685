"""Task heads: each reads the model's output (``ModelOutput``) and owns its loss. One file per kind of output."""

from omni.heads.classification import ClassificationHead
from omni.heads.ctc import CTCHead
from omni.heads.token import TokenHead

__all__ = ["CTCHead", "ClassificationHead", "TokenHead"]
