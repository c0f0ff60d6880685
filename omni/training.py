"""The LightningModule base every task uses.

``OmniTask`` builds its ``OmniModel`` from config (tokenizers and heads given by ``class_path`` without ``dim``,
the trunk, extra tokens, which batch key feeds which tokenizer), and owns what every task repeats: the train / val /
test step, per-stage metrics and their logging, ``predict_step``, AdamW with warmup + cosine, weight decay by
module type, gradient clipping, RNG state in checkpoints (a resumed run continues exactly) and the run directory's
artifacts. A task adds its loss, its metrics and its predictions in a short file under ``omni/tasks/``.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torchmetrics import Metric

from omni.model import OmniModel
from omni.tokens import Tokens
from omni.transformer import TransformerConfig

__all__ = [
    "STAGES",
    "ClipsByConfig",
    "OmniTask",
    "OptimConfig",
    "RunArtifacts",
    "Stage",
    "make_adamw",
    "param_groups",
    "run_directory",
    "warmup_cosine",
    "with_schedule",
]

Stage = Literal["train", "val", "test"]
STAGES: tuple[Stage, ...] = ("train", "val", "test")
DECAYED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


@dataclass
class OptimConfig:
    """AdamW with linear warmup then cosine decay, stepped every optimizer step.

    Attributes:
        lr: peak learning rate, reached at the end of warmup.
        weight_decay: AdamW decoupled weight decay, applied to Linear and Conv weights only (see ``param_groups``).
        betas: AdamW betas.
        warmup: warmup length, as a fraction of all training steps (< 1) or a number of steps (>= 1).
        min_lr_ratio: the learning rate at the end of training, as a fraction of ``lr``.
        grad_clip: clip the global gradient norm to this value; None to leave gradients alone.
        fused: torch's fused AdamW (one kernel over all parameters, on CPU and CUDA) instead of a dozen small ops per
            parameter tensor; the same update up to rounding. False for the for-loop version.
    """

    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    warmup: float = 0.05
    min_lr_ratio: float = 0.01
    grad_clip: float | None = 1.0
    fused: bool = True

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


def _named_leaves(module: nn.Module) -> Iterator[tuple[str, str, nn.Module, nn.Parameter]]:
    """(full name, own name, owning module, parameter) for every parameter, each once."""
    seen: set[int] = set()
    for prefix, m in module.named_modules():
        for name, p in m.named_parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                yield (f"{prefix}.{name}" if prefix else name), name, m, p


def make_adamw(module: nn.Module, cfg: OptimConfig, mixed_precision: bool = False) -> torch.optim.AdamW:
    """AdamW over ``param_groups``, fused where ``cfg.fused`` and every parameter sits on a CPU or CUDA device, except
    under mixed precision (Lightning's AMP plugin refuses to clip the gradients of a fused optimizer)."""
    on_kernel_device = all(p.device.type in ("cpu", "cuda") for p in module.parameters())
    fused = cfg.fused and on_kernel_device and not mixed_precision
    return torch.optim.AdamW(
        param_groups(module, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas), fused=fused or None
    )


def param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups decided by module type, as timm and MAE do: the ``weight`` of a Linear or Conv layer decays;
    biases, norms, embedding tables, position tables and learned tokens do not. Any submodule may exclude more of
    its own parameters with a ``no_weight_decay()`` method returning their names relative to it (timm's hook)."""
    skip: set[str] = set()
    for prefix, m in module.named_modules():
        hook = getattr(m, "no_weight_decay", None)
        if callable(hook):
            skip |= {f"{prefix}.{n}" if prefix else n for n in hook()}
    decay, keep = [], []
    for full, name, owner, p in _named_leaves(module):
        if p.requires_grad:
            decays = name == "weight" and isinstance(owner, DECAYED) and full not in skip
            (decay if decays else keep).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]


def with_schedule(opt: torch.optim.Optimizer, cfg: OptimConfig, trainer: L.Trainer) -> dict[str, Any]:
    """Lightning's ``configure_optimizers`` answer: ``opt`` under warmup + cosine over the trainer's steps."""
    total = max(1, int(trainer.estimated_stepping_batches))
    warmup = int(cfg.warmup * total) if cfg.warmup < 1 else int(cfg.warmup)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total, warmup, cfg.min_lr_ratio))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class ClipsByConfig(L.LightningModule):
    """Gradient clipping from ``self.optim`` (an ``OptimConfig``): the trainer's ``gradient_clip_val`` wins when set;
    otherwise ``self.optim.grad_clip``."""

    optim: OptimConfig

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None, gradient_clip_algorithm=None
    ) -> None:
        clip = gradient_clip_val if gradient_clip_val is not None else self.optim.grad_clip
        if clip is not None:
            algorithm = gradient_clip_algorithm or "norm"
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm=algorithm)


def _rng_state() -> dict[str, Any]:
    """torch, NumPy and Python RNG states as tensors, ints and lists only (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": [version, list(internal), gauss_next],
    }


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def run_directory(trainer: L.Trainer) -> Path | None:
    """The run directory (the logger's ``log_dir``, else ``default_root_dir``), the same on every rank.

    Under DDP ``Trainer.log_dir`` is a collective (it broadcasts rank 0's path): every rank must ask for it, so call
    this on every rank and only then test ``trainer.is_global_zero``. Asking on rank 0 alone leaves the ranks'
    collectives out of step, and the next one (the test after fit) waits forever.
    """
    path = trainer.log_dir or trainer.default_root_dir
    return Path(path) if path else None


class OmniTask(ClipsByConfig):
    """Base of every task: ``self.model`` (an ``OmniModel``) built from config, and the loop around it.

    A task implements ``loss`` (and usually ``update_metrics`` and ``predict``), registers its metrics with
    ``add_metric``, and sets ``monitor`` / ``monitor_mode``: the metric that picks the ``best`` checkpoint.
    """

    monitor: str = "val/loss"
    monitor_mode: Literal["min", "max"] = "min"
    agree_with_data: tuple[str, ...] = ()  # attributes (``num_classes``) that must equal the data module's

    def __init__(
        self,
        trunk: TransformerConfig,
        tokenizers: dict[str, Callable[[int], nn.Module]],
        heads: dict[str, Callable[[int], nn.Module]] | None = None,
        extra_tokens: dict[str, int] | None = None,
        inputs: dict[str, str] | None = None,
        optim: OptimConfig | None = None,
    ) -> None:
        """
        Args:
            trunk: the transformer's sizes (``dim``, ``depth``, ``heads``, ...) and mask schedule; ``dim`` is
                given to every tokenizer and head.
            tokenizers: {name: tokenizer given as ``class_path`` + ``init_args`` without ``dim``}.
            heads: {name: head given the same way}; each reads the model's output.
            extra_tokens: {name: count} learnable tokens put first in every sequence (``cls``, object queries).
            inputs: {tokenizer name: batch key} where each tokenizer's raw input sits in a batch. Default: the
                batch's ``inputs`` dict when it has one, else the batch key equal to the tokenizer's name.
            optim: optimizer and schedule settings.
        """
        super().__init__()
        self.optim = optim if optim is not None else OptimConfig()
        cfg = trunk if isinstance(trunk, TransformerConfig) else TransformerConfig.from_dict(trunk)
        self.model = OmniModel(
            tokenizers={name: make(cfg.dim) for name, make in tokenizers.items()},
            trunk=cfg,
            heads={name: make(cfg.dim) for name, make in (heads or {}).items()},
            extra_tokens=extra_tokens,
        )
        unknown = sorted(set(inputs or {}) - set(self.model.tokenizers))
        if unknown:
            raise ValueError(
                f"inputs: unknown tokenizer names {unknown}; expected some of {sorted(self.model.tokenizers)}"
            )
        self.inputs = dict(inputs or {})
        self.metrics = nn.ModuleDict()
        self._resume_rng: dict[str, Any] | None = None

    # ------------------------------------------------------------------ the task's part
    def loss(self, outputs: dict[str, Any], batch: Any, stage: Stage) -> Tensor | dict[str, Tensor]:
        """The loss to minimise, or {"loss": total, name: part, ...} to log the parts too."""
        raise NotImplementedError(f"{type(self).__name__}: a task implements loss(outputs, batch, stage)")

    def update_metrics(self, outputs: dict[str, Any], batch: Any, stage: Stage) -> None:
        """Feed this stage's metrics (``self.stage_metrics(stage)``); they are logged once per epoch."""

    def predict(self, outputs: dict[str, Any], batch: Any) -> Any:
        """What ``omni predict`` saves for one batch (default: every head's output)."""
        return {k: v for k, v in outputs.items() if k != "output"}

    def write_artifacts(self, stage: Stage, run_dir: Path | None) -> None:
        """Pictures and files a task writes after ``stage`` (e.g. a confusion matrix after test). Default: none.

        Called on every rank, ``run_dir`` None except on rank 0: gather what every rank holds (a torchmetrics
        ``compute()``, ``omni.ranks.all_ranks``) before testing it."""

    # ------------------------------------------------------------------ inputs and metrics
    def model_inputs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The model's ``{tokenizer name: raw input}`` from a batch (see ``inputs``)."""
        if not self.inputs and isinstance(batch.get("inputs"), Mapping):
            return dict(batch["inputs"])
        keys = {name: self.inputs.get(name, name) for name in self.model.tokenizers}
        missing = sorted(k for k in keys.values() if k not in batch)
        if len(missing) == len(keys):
            raise ValueError(
                f"batch: expected some of the keys {sorted(keys.values())} (see `inputs`), got {sorted(batch)}"
            )
        return {name: batch[key] for name, key in keys.items() if key in batch}

    def add_metric(self, name: str, make: Callable[[], Metric], stages: tuple[Stage, ...] = STAGES) -> None:
        """Register a torchmetrics metric under ``{stage}/{name}``, one instance per stage."""
        for stage in stages:
            self.metrics[f"{stage}_{name}"] = make()

    def stage_metrics(self, stage: Stage) -> dict[str, Metric]:
        """{name: metric} of one stage."""
        prefix = f"{stage}_"
        return {k.removeprefix(prefix): m for k, m in self.metrics.items() if k.startswith(prefix)}

    @staticmethod
    def batch_size_of(inputs: Mapping[str, Any]) -> int:
        """The batch size of a batch's model inputs (the first tensor's leading size)."""
        for value in inputs.values():
            if isinstance(value, Mapping):
                value = next(iter(value.values()), None)
            if isinstance(value, Tensor):
                return int(value.shape[0])
        raise ValueError("batch: expected at least one tensor among the model inputs")

    # ------------------------------------------------------------------ the loop
    def setup(self, stage: str) -> None:
        data = getattr(self.trainer, "datamodule", None)
        for name in self.agree_with_data:
            mine, theirs = getattr(self, name), getattr(data, name, None)
            if theirs is not None and theirs != mine:
                raise ValueError(f"model.{name}: expected the data module's {name}={theirs!r}, got {mine!r}")

    def trunk_inputs(self, inputs: Mapping[str, Any]) -> tuple[Tokens, dict[str, slice]]:
        """The joint ``Tokens`` (B, N, D) the trunk mixes, and {name: slice of N}: ``model.tokenize`` of the inputs a
        tokenizer reads (a task whose inputs hold more, such as a decoder's target, leaves that out here)."""
        return self.model.tokenize(inputs)

    def outputs_from(self, mixed: Tokens, spans: dict[str, slice], inputs: Mapping[str, Any]) -> dict[str, Any]:
        """What ``forward`` returns, from the trunk's output ``mixed`` (B, N, D) of ``trunk_inputs``: the heads'
        outputs; a task adds what it computes after the trunk (a decoder, a head on some positions)."""
        return self.model.read_out(mixed, spans)

    @property
    def packable(self) -> bool:
        """Whether ``forward`` is ``trunk_inputs`` -> the trunk -> ``outputs_from``, so that a joint task may run the
        trunk on packed rows that hold this task's samples beside other tasks' (``omni.tasks.joint``). A task that
        overrides ``forward`` (hooks in the trunk, tokens edited between tokenizer and trunk) is run on its own."""
        return type(self).forward is OmniTask.forward

    def forward(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """{tokenizer name: raw input} -> {head name: output, "output": ModelOutput}"""
        tokens, spans = self.trunk_inputs(inputs)
        return self.outputs_from(self.model.mix(tokens), spans, inputs)

    def log(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        """Lightning's ``log``; a task trained inside a joint task (``omni.tasks.joint``) logs through it, under its
        own name (``val/wer`` -> ``val/speech/wer``)."""
        ref = self.__dict__.get("_joint")  # a weak reference, set by the joint task
        joint = ref() if ref is not None else None
        if joint is None:
            return super().log(name, value, *args, **kwargs)
        return joint.log_member(self, name, value, *args, **kwargs)

    def step(self, batch: Any, stage: Stage) -> Tensor:
        inputs = self.model_inputs(batch)
        return self.finish_step(inputs, self(inputs), batch, stage)

    def finish_step(self, inputs: Mapping[str, Any], outputs: dict[str, Any], batch: Any, stage: Stage) -> Tensor:
        """Loss, logging and metrics of one batch whose ``outputs`` (of ``forward``) are computed."""
        result = self.loss(outputs, batch, stage)
        parts = result if isinstance(result, dict) else {"loss": result}
        if "loss" not in parts:
            raise ValueError(
                f"{type(self).__name__}.loss: expected a tensor or a dict with 'loss', got {sorted(parts)}"
            )
        size = self.batch_size_of(inputs)
        on_step = stage == "train"
        for name, value in parts.items():
            # sync_dist: under DDP the logged value is reduced over the ranks (one scalar all-reduce), not rank 0's
            self.log(f"{stage}/{name}", value, on_step=on_step, on_epoch=True, prog_bar=name == "loss", batch_size=size,
                     sync_dist=True)  # fmt: skip
        with torch.no_grad():
            self.update_metrics(outputs, batch, stage)
        for name, metric in self.stage_metrics(stage).items():
            if metric.update_called:
                self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, prog_bar=True)
        return parts["loss"]

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self.step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self.step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self.step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> Any:
        return self.predict(self(self.model_inputs(batch)), batch)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> dict[str, Any]:
        opt = make_adamw(self, self.optim, mixed_precision="mixed" in str(self.trainer.precision))
        return with_schedule(opt, self.optim, self.trainer)

    # ------------------------------------------------------------------ checkpoints and resuming
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the RNG states (shuffling, augmentation, dropout draw from them) so a resumed run continues exactly."""
        checkpoint["omni_rng"] = _rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._check_checkpoint(checkpoint)
        self._resume_rng = checkpoint.get("omni_rng")

    def _check_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A checkpoint of another task, or of this task at other sizes, is one ``ValueError`` naming the task or
        the first weights that differ, before Lightning's multi-line state-dict error."""
        mine = f"{type(self).__module__}.{type(self).__qualname__}"
        theirs = (checkpoint.get("hyper_parameters") or {}).get("_class_path")
        if isinstance(theirs, str) and theirs.rpartition(".")[2] != type(self).__qualname__:
            raise ValueError(f"ckpt_path: expected a checkpoint of {mine}, got one of {theirs}")
        state = checkpoint.get("state_dict")
        if not isinstance(state, dict):
            return
        own = self.state_dict()
        missing, unknown = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        shapes = [
            f"{k} {tuple(state[k].shape)} (this config: {tuple(own[k].shape)})"
            for k in own
            if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)
        ]
        if missing or unknown or shapes:
            parts = [f"missing {missing[:3]}"] * bool(missing) + [f"unexpected {unknown[:3]}"] * bool(unknown)
            parts += [f"other shapes: {', '.join(shapes[:3])}"] * bool(shapes)
            raise ValueError(
                f"ckpt_path: expected the weights of this config's {type(self).__name__}, got {'; '.join(parts)}"
            )

    def on_train_epoch_start(self) -> None:
        # Restored here, not at load time: the sanity check and set-up between load and the first resumed epoch
        # draw from the RNG too, and the uninterrupted run did not make those draws.
        self._restore_rng()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # A run resumed mid-epoch (from a step checkpoint) skips on_train_epoch_start: restore before its first step.
        # Model draws (dropout) then follow the uninterrupted run's; draws the loader makes one batch ahead of the
        # step (Lightning prefetches) do not: see README, "Many processes and killed runs".
        self._restore_rng()

    def _restore_rng(self) -> None:
        if self._resume_rng is not None:
            _set_rng_state(self._resume_rng)
            self._resume_rng = None

    def configure_callbacks(self) -> list[Callback]:
        """The run directory's metrics and plots (``RunArtifacts``), unless the trainer has them already."""
        have = self._trainer is not None and any(isinstance(c, RunArtifacts) for c in self.trainer.callbacks)
        return [] if have else [RunArtifacts()]

    @property
    def run_dir(self) -> Path | None:
        """Where this run writes its config, checkpoints, metrics and plots (the logger's directory)."""
        trainer = self._trainer
        return None if trainer is None else run_directory(trainer)


class RunArtifacts(Callback):
    """Fills the run directory: ``metrics.json`` (final test metrics, and ``fit_wall_s``: seconds from the start of
    ``fit`` to its end, validation included, the test after it not), ``training_curves.png`` and the task's own
    pictures."""

    def __init__(self) -> None:
        self.fit_started: float | None = None
        self.fit_wall_s: float | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fit_started = time.perf_counter()

    def _dir(self, trainer: L.Trainer) -> Path | None:
        """The run directory on rank 0, None elsewhere (and during the sanity check); called on every rank."""
        if trainer.sanity_checking:
            return None
        out = run_directory(trainer)  # a collective under DDP: before the rank test
        if out is None or not trainer.is_global_zero:
            return None
        out.mkdir(parents=True, exist_ok=True)
        return out

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.fit_started is not None:
            self.fit_wall_s = round(time.perf_counter() - self.fit_started, 1)
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
        if out is not None:
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
            ckpt = getattr(trainer, "ckpt_path", None)
            payload = {"metrics": metrics, "checkpoint": str(ckpt) if ckpt else None, "epoch": trainer.current_epoch}
            if self.fit_wall_s is not None:
                payload["fit_wall_s"] = self.fit_wall_s
            (out / "metrics.json").write_text(json.dumps(payload, indent=2) + "\n")
        if callable(getattr(pl_module, "write_artifacts", None)) and not trainer.sanity_checking:
            pl_module.write_artifacts("test", out)  # every rank: they may gather
