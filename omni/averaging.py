"""Weight averages safe to test after ``fit``: an exponential moving average (Lightning's ``EMAWeightAveraging``) and
a uniform average of the weights from a step on (stochastic weight averaging, Izmailov et al. 2018, without SWA's
learning-rate schedule).

Lightning's callbacks save the average in a checkpoint's ``state_dict`` and the raw weights in
``current_model_state``; loading a checkpoint while its average model exists (any stage after ``fit`` on the same
trainer, which is what ``omni fit`` does when it tests the best or last checkpoint) puts the *raw* weights back.
These classes restore the raw weights only when a fit resumes; validating, testing and predicting from a checkpoint
use its ``state_dict``: the average, as a user who chose an average expects.

    trainer:
      callbacks:
        - class_path: omni.averaging.EMA
          init_args: {decay: 0.999}
        # or: the plain mean of the weights every 25 steps from step 3000 on
        - class_path: omni.averaging.UniformAverage
          init_args: {start_step: 3000, every_n_steps: 25}
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging, WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn

__all__ = ["EMA", "UniformAverage"]


class _TestsTheAverage:
    """Restore the raw weights from a checkpoint only when a fit resumes (see the module's docstring)."""

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn == TrainerFn.FITTING:  # resuming: the average model and the raw weights both come back
            super().on_load_checkpoint(trainer, pl_module, checkpoint)  # type: ignore[misc]
        # otherwise the trainer has loaded checkpoint["state_dict"], which holds the average: keep it


class EMA(_TestsTheAverage, EMAWeightAveraging):
    """``EMAWeightAveraging`` whose checkpoints, once loaded outside a fit, give the averaged weights."""


class UniformAverage(_TestsTheAverage, WeightAveraging):
    """The plain mean of the weights after every ``every_n_steps``-th optimizer step from ``start_step`` on (until
    then the average is a copy of the current weights). Validation, and so rollouts at validation, see the average."""

    def __init__(self, start_step: int = 0, every_n_steps: int = 1, **kwargs: Any) -> None:
        """
        Args:
            start_step: the first (zero-based) optimizer step whose weights enter the mean.
            every_n_steps: take the weights every this many steps.
            kwargs: ``WeightAveraging``'s (``device``, ``use_buffers``).
        """
        if not isinstance(start_step, int) or start_step < 0:
            raise ValueError(f"start_step: expected an int >= 0, got {start_step!r}")
        if not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"every_n_steps: expected an int >= 1, got {every_n_steps!r}")
        super().__init__(**kwargs)
        self.start_step, self.every_n_steps = start_step, every_n_steps

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        if step_idx is None or step_idx < self.start_step:
            return False  # before the mean starts the average is refreshed only where it is read (``_catch_up``)
        return (step_idx - self.start_step) % self.every_n_steps == 0

    def _catch_up(self, pl_module: L.LightningModule) -> None:
        """Before the mean has taken any weights, make the average a copy of the current weights where validation, a
        checkpoint or the end of training reads it (rather than a copy of every weight after every step)."""
        model = self._average_model
        if model is not None and int(model.n_averaged) == 0:
            model.update_parameters(pl_module)  # n_averaged 0: a copy
            model.n_averaged.zero_()  # the mean's first weights still replace it

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._catch_up(pl_module)
        super().on_validation_epoch_start(trainer, pl_module)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._catch_up(pl_module)
        super().on_save_checkpoint(trainer, pl_module, checkpoint)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._catch_up(pl_module)
        super().on_train_end(trainer, pl_module)
