"""Start a fit from another run's weights: ``--trainer.callbacks+=omni.init_weights.InitWeights``.

``--ckpt_path`` resumes a run (weights, optimizer, step, RNG); this only copies weights, as timm's
``checkpoint_path`` or a fine-tune does: each parameter or buffer whose name and shape match one in the file takes
its value, the others keep their initialisation. A fused detector can start from a trained radar-only one (the
camera's tokenizer and gate stay new), a classifier from another with a different head.

The copy happens when the trainer sets the model up for fitting, before Lightning restores a ``--ckpt_path``: a
resumed run gets its own checkpoint's weights, not the file's.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from omni.checkpoints import load_checkpoint

__all__ = ["InitWeights", "copy_matching"]


def _state_dict(path: Path) -> dict[str, Tensor]:
    """The tensors of a Lightning checkpoint (its ``state_dict``) or a safetensors file."""
    if not path.is_file():
        raise ValueError(f"{path}: expected a checkpoint (.ckpt or .safetensors) to start from, found no file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own SafetensorError for a corrupt file
            raise ValueError(f"{path}: expected a safetensors file, could not read it ({e})") from None
    ckpt = load_checkpoint(path)
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        got = f"keys {sorted(map(str, ckpt))[:8]}" if isinstance(ckpt, dict) else f"a {type(ckpt).__name__}"
        raise ValueError(f"{path}: expected a Lightning checkpoint with a state_dict, got {got}")
    return state


def copy_matching(module: torch.nn.Module, state: dict[str, Tensor]) -> tuple[list[str], list[str], list[str]]:
    """Copy every tensor of ``state`` whose name and shape match one of ``module``'s into it, in place.

    Returns (copied, skipped: same name but another shape, missing: the module's names ``state`` lacks)."""
    own = module.state_dict()
    copied, skipped = [], []
    for name, value in state.items():
        if name not in own:
            continue
        if own[name].shape != value.shape:
            skipped.append(f"{name} {tuple(value.shape)} -> {tuple(own[name].shape)}")
            continue
        copied.append(name)
    with torch.no_grad():
        for name in copied:
            own[name].copy_(state[name])
    missing = sorted(set(own) - set(state))
    return copied, skipped, missing


class InitWeights(Callback):
    """Copy matching weights from a checkpoint into the task before fitting (once; see the module's docstring)."""

    def __init__(self, path: str, strict: bool = False) -> None:
        """
        Args:
            path: a Lightning ``.ckpt`` (``omni fit``'s checkpoints) or a ``.safetensors`` file of the same names.
            strict: refuse a file that leaves any of the task's tensors new or has one of another shape.
        """
        self.path = Path(path)
        self.strict = strict
        self.copied: list[str] = []
        self.skipped: list[str] = []
        self.missing: list[str] = []
        self.done = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or self.done:
            return
        state = _state_dict(self.path)
        self.copied, self.skipped, self.missing = copy_matching(pl_module, state)
        if not self.copied:
            raise ValueError(f"{self.path}: expected weights named like the task's, none matched by name and shape")
        if self.strict and (self.skipped or self.missing):
            raise ValueError(
                f"{self.path}: expected every weight of the task (strict), got {len(self.missing)} missing "
                f"{self.missing[:5]} and {len(self.skipped)} of another shape {self.skipped[:5]}"
            )
        self.done = True
        rank_zero_info(
            f"InitWeights: {len(self.copied)} tensors from {self.path}; {len(self.missing)} kept new"
            + (f" ({', '.join(self.missing[:6])}{', ...' if len(self.missing) > 6 else ''})" if self.missing else "")
            + (f"; {len(self.skipped)} of another shape skipped" if self.skipped else "")
        )
