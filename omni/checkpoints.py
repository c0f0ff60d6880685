"""Loading checkpoints safely: ``torch.load(weights_only=True)`` everywhere omni reads one.

A Lightning checkpoint is a pickle. With ``weights_only=False`` unpickling can import and call anything the file
names, so a checkpoint from a stranger could run code on load. omni's checkpoints hold only tensors, numbers,
strings and plain containers (hyperparameters as dicts, RNG states as tensors and lists, the speech vocabulary and
the RL facts as dicts), which PyTorch's restricted unpickler accepts; anything else is refused before it runs, with
a one-line ``ValueError`` naming the file.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any, TypeVar

import torch

__all__ = ["load_checkpoint", "load_task"]

T = TypeVar("T")


def _refused(path: Path, err: BaseException) -> ValueError:
    if isinstance(err, pickle.UnpicklingError):
        # torch's message names the global it refused on its first line ("Unsupported global: GLOBAL os.system")
        reason = next((line.strip() for line in str(err).splitlines() if "GLOBAL" in line), "a pickled object")
        return ValueError(
            f"{path}: expected a checkpoint of tensors and plain values (loaded with weights_only=True), got a "
            f"pickled object that could run code ({reason}); refused without running it"
        )
    return ValueError(f"{path}: expected a PyTorch checkpoint, got an unreadable file ({type(err).__name__}: {err})")


def _check_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"ckpt_path: expected a checkpoint file, got {str(p)!r}, which does not exist")
    return p


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """The checkpoint dict of ``path``, unpickled with ``weights_only=True``; a ``ValueError`` naming the file for a
    missing, corrupt or code-carrying one."""
    p = _check_file(path)
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile) as e:
        raise _refused(p, e) from None


def load_task(cls: type[T], path: str | Path, map_location: Any = "cpu") -> T:
    """``cls.load_from_checkpoint(path, weights_only=True)`` with ``load_checkpoint``'s errors; a checkpoint of
    another task is refused by name."""
    p = _check_file(path)
    theirs = (load_checkpoint(p).get("hyper_parameters") or {}).get("_class_path")
    if isinstance(theirs, str) and theirs.rpartition(".")[2] != cls.__qualname__:
        raise ValueError(f"{p}: expected a checkpoint of {cls.__module__}.{cls.__qualname__}, got one of {theirs}")
    try:
        return cls.load_from_checkpoint(p, map_location=map_location, weights_only=True)  # type: ignore[attr-defined]
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile) as e:
        raise _refused(p, e) from None
    except RuntimeError as e:  # a corrupt archive; other RuntimeErrors (a state dict of another model) pass on
        if "PytorchStreamReader" not in str(e):
            raise
        raise _refused(p, e) from None
