"""The LightningModule base every task uses: AdamW, linear warmup then cosine, gradient clipping, per-epoch
metric logging, checkpoint and run-directory hooks.

A task subclasses ``OmniTask``, builds its model in ``__init__`` and implements ``step(batch, stage)``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import Tensor, nn

__all__ = ["OmniTask", "OptimConfig", "RunArtifacts", "warmup_cosine"]

Stage = Literal["train", "val", "test"]


@dataclass
class OptimConfig:
    """AdamW with linear warmup then cosine decay, stepped every optimizer step.

    Attributes:
        lr: peak learning rate, reached at the end of warmup.
        weight_decay: AdamW decoupled weight decay; not applied to biases, norms, embeddings and extra tokens.
        betas: AdamW betas.
        warmup: warmup length, as a fraction of all training steps (< 1) or a number of steps (>= 1).
        min_lr_ratio: the learning rate at the end of training, as a fraction of ``lr``.
        grad_clip: clip the global gradient norm to this value; None to leave gradients alone.
    """

    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    warmup: float = 0.05
    min_lr_ratio: float = 0.01
    grad_clip: float | None = 1.0

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"optim.lr: expected > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"optim.weight_decay: expected >= 0, got {self.weight_decay}")
        if self.warmup < 0:
            raise ValueError(f"optim.warmup: expected >= 0, got {self.warmup}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"optim.min_lr_ratio: expected in [0, 1], got {self.min_lr_ratio}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"optim.grad_clip: expected > 0 or null, got {self.grad_clip}")


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Learning-rate multiplier: linear from ~0 to 1 over ``warmup`` steps, then cosine down to ``min_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _no_decay(name: str, param: nn.Parameter) -> bool:
    """Biases, norm weights (1-D), embedding tables and learned tokens/positions are not decayed (timm, MAE)."""
    return param.ndim <= 1 or "embed" in name or "extra_tokens" in name


class OmniTask(L.LightningModule):
    """Base of every task. Subclasses set ``monitor`` / ``monitor_mode`` (the metric that picks the ``best``
    checkpoint) and implement ``step``, which returns the loss and logs the task's metrics."""

    monitor: str = "val/loss"
    monitor_mode: Literal["min", "max"] = "min"

    def __init__(self, optim: OptimConfig | None = None) -> None:
        super().__init__()
        self.optim = optim if optim is not None else OptimConfig()

    # ------------------------------------------------------------------ the task's part
    def step(self, batch: Any, stage: Stage) -> Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------------ Lightning hooks
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self.step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self.step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self.step(batch, "test")

    def configure_optimizers(self) -> dict[str, Any]:
        decay, no_decay = [], []
        for name, param in self.named_parameters():
            if param.requires_grad:
                (no_decay if _no_decay(name, param) else decay).append(param)
        cfg = self.optim
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr,
            betas=tuple(cfg.betas),
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(cfg.warmup * total) if cfg.warmup < 1 else int(cfg.warmup)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total, warmup, cfg.min_lr_ratio))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None, gradient_clip_algorithm=None
    ) -> None:
        # The trainer's gradient_clip_val wins when set; otherwise the task's own optim.grad_clip.
        clip = gradient_clip_val if gradient_clip_val is not None else self.optim.grad_clip
        if clip is not None:
            self.clip_gradients(
                optimizer, gradient_clip_val=clip, gradient_clip_algorithm=gradient_clip_algorithm or "norm"
            )

    def configure_callbacks(self) -> list[Callback]:
        """``last`` and ``best`` checkpoints (best by ``monitor``) and the run directory's plots and metrics."""
        best = ModelCheckpoint(
            filename="best", monitor=self.monitor, mode=self.monitor_mode, save_top_k=1, save_last=True
        )
        best.CHECKPOINT_NAME_LAST = "last"
        return [best, RunArtifacts()]

    # ------------------------------------------------------------------ run directory
    @property
    def run_dir(self) -> Path | None:
        """Where this run writes its config, checkpoints, metrics and plots (the logger's directory)."""
        trainer = self._trainer
        if trainer is None:
            return None
        path = trainer.log_dir or trainer.default_root_dir
        return Path(path) if path else None

    def write_artifacts(self, stage: Stage, run_dir: Path) -> None:
        """Extra pictures a task draws after ``stage`` (e.g. a confusion matrix after test). Default: none."""


class RunArtifacts(Callback):
    """Fills the run directory: ``metrics.json`` (final test metrics), ``training_curves.png`` and the task's own
    pictures."""

    def _dir(self, trainer: L.Trainer) -> Path | None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return None
        path = trainer.log_dir or trainer.default_root_dir
        if path is None:
            return None
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        return out

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        out = self._dir(trainer)
        if out is None:
            return
        for logger in trainer.loggers:
            logger.save()
        csv = out / "metrics.csv"
        if csv.exists():
            from omni.viz import plot_training_curves

            plot_training_curves(csv, out / "training_curves.png")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        out = self._dir(trainer)
        if out is None:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        ckpt = getattr(trainer, "ckpt_path", None)
        payload = {"metrics": metrics, "checkpoint": str(ckpt) if ckpt else None, "epoch": trainer.current_epoch}
        (out / "metrics.json").write_text(json.dumps(payload, indent=2) + "\n")
        if isinstance(pl_module, OmniTask):
            pl_module.write_artifacts("test", out)
