"""Task heads: each reads the model's output (``ModelOutput``) and owns its loss. One file per kind of output."""

from omni.heads.classification import ClassificationHead

__all__ = ["ClassificationHead"]
