"""``torch.compile`` for any task, as a Lightning callback: ``--trainer.callbacks+=omni.compile.CompileTrunks``.

Every ``omni.transformer.Transformer`` of the task (the trunk; a decoder's trunk too) is compiled in place with
``nn.Module.compile``: the module's call goes through ``torch.compile`` while its parameters and state-dict keys stay
as they are, so checkpoints, ``omni export`` and resuming do not change. Tokenizers and heads stay eager (their
input checks read tensor values, which would break the graph). With ``attention: flex`` the FlexAttention kernel is
compiled inside the trunk's graph.
"""

from __future__ import annotations

from typing import Literal

import lightning.pytorch as L
from lightning.pytorch.callbacks import Callback

from omni.transformer import Transformer

__all__ = ["CompileMode", "CompileTrunks"]

CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


class CompileTrunks(Callback):
    """Compile the task's transformer trunks when the trainer sets it up (once; every stage after uses them)."""

    def __init__(self, mode: CompileMode = "default", dynamic: bool | None = None, fullgraph: bool = False) -> None:
        """
        Args:
            mode: ``torch.compile``'s mode.
            dynamic: ``torch.compile``'s ``dynamic`` (None: specialise first, then mark the sizes that change
                dynamic, which suits lengths that vary from batch to batch).
            fullgraph: refuse graph breaks inside a trunk.
        """
        from omni.choices import check_choice

        check_choice("mode", mode, CompileMode)
        self.mode, self.dynamic, self.fullgraph = mode, dynamic, fullgraph
        self.compiled: list[str] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for name, module in pl_module.named_modules():
            if isinstance(module, Transformer) and name not in self.compiled:
                module.compile(mode=self.mode, dynamic=self.dynamic, fullgraph=self.fullgraph)
                self.compiled.append(name)
