"""Exponential moving average of the weights (Lightning's ``EMAWeightAveraging``), safe to test after ``fit``.

Lightning's callback saves the average in a checkpoint's ``state_dict`` and the raw weights in
``current_model_state``; loading a checkpoint while its average model exists (any stage after ``fit`` on the same
trainer, which is what ``omni fit`` does when it tests the best or last checkpoint) puts the *raw* weights back.
``EMA`` restores the raw weights only when a fit resumes; validating, testing and predicting from a checkpoint use
its ``state_dict``: the average, as a user who chose an average expects.

    trainer:
      callbacks:
        - class_path: omni.averaging.EMA
          init_args: {decay: 0.999}
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn

__all__ = ["EMA"]


class EMA(EMAWeightAveraging):
    """``EMAWeightAveraging`` whose checkpoints, once loaded outside a fit, give the averaged weights."""

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn == TrainerFn.FITTING:  # resuming: the average model and the raw weights both come back
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
        # otherwise the trainer has loaded checkpoint["state_dict"], which holds the average: keep it
