"""Classification from any mix of modalities: tokenizers -> one trunk -> ``ClassificationHead``. Batches hold the
tokenizers' inputs (``{"image": (B, C, H, W)}`` or ``{"inputs": {name: raw}}``) and ``label`` (B,)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from omni.heads.classification import ClassificationHead, Pool
from omni.training import OmniTask, OptimConfig, Stage
from omni.transformer import TransformerConfig

__all__ = ["Classifier"]


class Classifier(OmniTask):
    """ViT-style classification; with several tokenizers, of fused modalities (a missing one is skipped)."""

    monitor, monitor_mode, agree_with_data = "val/acc", "max", ("num_classes",)

    def __init__(
        self,
        num_classes: int,
        trunk: TransformerConfig,
        tokenizers: dict[str, Callable[[int], nn.Module]],
        pool: Pool = "cls",
        head_dropout: float = 0.0,
        label_smoothing: float = 0.0,
        class_names: list[str] | None = None,
        inputs: dict[str, str] | None = None,
        optim: OptimConfig | None = None,
    ) -> None:
        """
        Args:
            num_classes: number of classes; must match the data module's.
            trunk: the transformer's sizes and mask schedule; ``dim`` is shared with the tokenizers and the head.
            tokenizers: {name: tokenizer as ``class_path`` + ``init_args`` without ``dim``}, e.g. ``image:
                omni.tokenizers.ImagePatchTokenizer``.
            pool: ``cls`` (a learnable CLS token, global to every mask) or ``mean`` (mean of the real tokens).
            head_dropout: dropout before the classifier layer.
            label_smoothing: cross-entropy label smoothing while training.
            class_names: names for plots; default the class indices.
            inputs: {tokenizer name: batch key}; default the batch's ``inputs`` dict or the tokenizer's own name.
            optim: optimizer and schedule settings.
        """
        head = partial(ClassificationHead, num_classes=num_classes, pool=pool, dropout=head_dropout)
        cls = {"cls": 1} if pool == "cls" else None
        super().__init__(trunk, tokenizers, {"logits": head}, cls, inputs, optim)
        self.save_hyperparameters()
        self.num_classes, self.label_smoothing, self.class_names = num_classes, label_smoothing, class_names
        self.add_metric("acc", partial(MulticlassAccuracy, num_classes, average="micro"))
        self.confusion = MulticlassConfusionMatrix(num_classes)

    def loss(self, outputs: dict[str, Any], batch: dict[str, Any], stage: Stage) -> Tensor:
        smoothing = self.label_smoothing if stage == "train" else 0.0
        return ClassificationHead.loss(outputs["logits"], batch["label"], smoothing)

    def update_metrics(self, outputs: dict[str, Any], batch: dict[str, Any], stage: Stage) -> None:
        self.stage_metrics(stage)["acc"].update(outputs["logits"], batch["label"])
        if stage == "test":
            self.confusion.update(outputs["logits"], batch["label"])

    def predict(self, outputs: dict[str, Any], batch: Any) -> dict[str, Tensor]:
        probs = outputs["logits"].softmax(-1)
        return {"probs": probs, "pred": probs.argmax(-1)}

    def write_artifacts(self, stage: Stage, run_dir: Path | None) -> None:
        if stage == "test" and self.confusion.update_count:
            matrix, names = self.confusion.compute(), self.class_names or [str(i) for i in range(self.num_classes)]
            self.confusion.reset()  # compute() runs on every rank: under DDP it gathers the ranks' counts
            if run_dir is not None:
                from omni.viz import plot_confusion_matrix

                plot_confusion_matrix(matrix, names, run_dir / "confusion_matrix.png")
