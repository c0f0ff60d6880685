"""Image classification: one image tokenizer, the shared trunk, a CLS or mean-pool head.

Batches are dicts ``{"image": (B, C, H, W) float, "label": (B,) long}`` (see ``omni.tasks.image_data``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from omni.model import ModelOutput, OmniModel
from omni.training import OmniTask, OptimConfig, Stage
from omni.transformer import TransformerConfig

__all__ = ["ClassificationHead", "ImageClassifier", "MultimodalClassifier"]


class ClassificationHead(nn.Module):
    """Class logits from the CLS token (ViT) or the mean of the real tokens."""

    def __init__(self, dim: int, num_classes: int, pool: Literal["cls", "mean"] = "cls", dropout: float = 0.0) -> None:
        super().__init__()
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool: expected 'cls' or 'mean', got {pool!r}")
        if num_classes < 2:
            raise ValueError(f"num_classes: expected >= 2, got {num_classes}")
        self.pool = pool
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(dim, num_classes)
        nn.init.zeros_(self.fc.weight)  # start from uniform predictions (timm zero-initialises classifier heads)
        nn.init.zeros_(self.fc.bias)

    def forward(self, out: ModelOutput) -> Tensor:
        """-> (B, num_classes) logits"""
        feat = out.extras["cls"][:, 0] if self.pool == "cls" else out.mean()
        return self.fc(self.drop(feat))


class MultimodalClassifier(OmniTask):
    """Class labels from any mix of modalities: ``tokenizers`` -> one trunk -> ``ClassificationHead``.

    Batches are ``{"inputs": {tokenizer name: raw input}, "label": (B,) long}``; a modality missing from a batch is
    skipped.
    """

    monitor = "val/acc"
    monitor_mode = "max"

    def __init__(
        self,
        num_classes: int,
        trunk: TransformerConfig,
        tokenizers: dict[str, Callable[[int], nn.Module]],
        pool: Literal["cls", "mean"] = "cls",
        head_dropout: float = 0.0,
        label_smoothing: float = 0.0,
        class_names: list[str] | None = None,
        optim: OptimConfig | None = None,
    ) -> None:
        """
        Args:
            num_classes: number of classes; must match the data module's.
            trunk: the transformer's sizes (``dim``, ``depth``, ``heads``, ...) and mask schedule; ``dim`` is shared
                with the tokenizers and the head.
            tokenizers: {name: tokenizer given as ``class_path`` + ``init_args`` without ``dim``}; each is called
                with the trunk's ``dim``. The name is the key of that modality in the batch's ``inputs``.
            pool: ``cls`` (a learnable CLS token, global to every mask) or ``mean`` (mean of the real tokens).
            head_dropout: dropout before the classifier layer.
            label_smoothing: cross-entropy label smoothing while training.
            class_names: names for plots; default the class indices.
            optim: optimizer and schedule settings.
        """
        super().__init__(optim)
        self.save_hyperparameters()
        if isinstance(trunk, dict):
            trunk = TransformerConfig.from_dict(trunk)
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.class_names = class_names or [str(i) for i in range(num_classes)]
        self.model = OmniModel(
            tokenizers={name: make(trunk.dim) for name, make in tokenizers.items()},
            trunk=trunk,
            heads={"logits": ClassificationHead(trunk.dim, num_classes, pool, head_dropout)},
            extra_tokens={"cls": 1} if pool == "cls" else None,
        )
        self.metrics = nn.ModuleDict(
            {f"{stage}_acc": MulticlassAccuracy(num_classes, average="micro") for stage in ("train", "val", "test")}
        )
        self.confusion = MulticlassConfusionMatrix(num_classes)

    def model_inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The model's ``{tokenizer name: raw input}`` from a batch."""
        return batch["inputs"]

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        n = getattr(dm, "num_classes", None)
        if n is not None and n != self.num_classes:
            raise ValueError(f"model.num_classes: expected the data module's {n} classes, got {self.num_classes}")

    def forward(self, inputs: dict[str, Any]) -> Tensor:
        """{tokenizer name: raw input} -> (B, num_classes) logits"""
        return self.model(inputs)["logits"]

    def step(self, batch: dict[str, Any], stage: Stage) -> Tensor:
        labels = batch["label"]
        logits = self(self.model_inputs(batch))
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing if stage == "train" else 0.0)
        acc = self.metrics[f"{stage}_acc"]
        acc(logits, labels)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, batch_size=len(labels))
        self.log(f"{stage}/acc", acc, on_step=False, on_epoch=True, prog_bar=True)
        if stage == "test":
            self.confusion.update(logits, labels)
        return loss

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        probs = torch.softmax(self(self.model_inputs(batch)), dim=-1)
        return {"probs": probs, "pred": probs.argmax(-1)}

    def on_test_epoch_start(self) -> None:
        self.confusion.reset()

    def write_artifacts(self, stage: Stage, run_dir: Path) -> None:
        if stage == "test" and self.confusion.update_count > 0:
            from omni.viz import plot_confusion_matrix

            plot_confusion_matrix(self.confusion.compute(), self.class_names, run_dir / "confusion_matrix.png")


class ImageClassifier(MultimodalClassifier):
    """A ViT-style image classifier: ``tokenizer(dim)`` -> trunk -> ``ClassificationHead``.

    Batches are ``{"image": (B, C, H, W) float, "label": (B,) long}`` (see ``omni.tasks.image_data``).
    """

    def __init__(
        self,
        num_classes: int,
        trunk: TransformerConfig,
        tokenizer: Callable[[int], nn.Module],
        pool: Literal["cls", "mean"] = "cls",
        head_dropout: float = 0.0,
        label_smoothing: float = 0.0,
        class_names: list[str] | None = None,
        optim: OptimConfig | None = None,
    ) -> None:
        """
        Args:
            num_classes: number of classes; must match the data module's.
            trunk: the transformer's sizes (``dim``, ``depth``, ``heads``, ...); ``dim`` is shared with the
                tokenizer and the head.
            tokenizer: an image tokenizer given as ``class_path`` + ``init_args`` without ``dim`` (it is called with
                the trunk's ``dim``), e.g. ``omni.tokenizers.ImagePatchTokenizer``.
            pool: ``cls`` (a learnable CLS token read by the head) or ``mean`` (mean of the patch tokens).
            head_dropout: dropout before the classifier layer.
            label_smoothing: cross-entropy label smoothing while training.
            class_names: names for plots; default the class indices.
            optim: optimizer and schedule settings.
        """
        super().__init__(
            num_classes, trunk, {"image": tokenizer}, pool, head_dropout, label_smoothing, class_names, optim
        )
        self.save_hyperparameters()

    def model_inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {"image": batch["image"]}
