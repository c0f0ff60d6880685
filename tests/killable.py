"""A callback for the suite's killed runs: the run stops still before training step ``step + 1`` (after step
``step``'s checkpoint is written) and touches ``marker``, so the test can SIGKILL it at a known point mid-epoch."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L


class Stall(L.Callback):
    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = step, Path(marker)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: object, idx: int) -> None:
        if trainer.global_step == self.step:
            self.marker.write_text(str(self.step))
            time.sleep(600)  # the test kills the process long before
