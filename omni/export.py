"""``omni export --ckpt_path CKPT --out DIR`` and ``omni.load(DIR)``: a trained task as ``model.safetensors`` plus its
resolved config, rebuilt with no pickle at all.

``DIR/model.safetensors``: the task's state dict (weights and buffers such as state statistics).
``DIR/config.yaml``: ``class_path`` and ``init_args`` (the hyperparameters the checkpoint recorded), and ``extras``:
the facts a task keeps in its checkpoint beside the weights (the speech vocabulary ``omni_vocab``, the RL facts
``omni_rl``), all plain YAML. ``load`` imports the class by its path, builds it from ``init_args`` the way
``omni fit`` does (jsonargparse), hands it the extras through ``on_load_checkpoint`` and loads the weights strictly.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.pytorch import LightningModule

from omni.checkpoints import load_checkpoint

__all__ = ["export", "load", "main"]

WEIGHTS, CONFIG = "model.safetensors", "config.yaml"
SKIP = ("omni_rng",)  # checkpoint keys of omni's that describe training, not the model


def _plain(value: Any, where: str) -> Any:
    """``value`` as YAML-safe Python (tensors and NumPy values to lists and numbers); a ValueError names the key."""
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "tolist"):  # NumPy arrays and scalars
        return value.tolist()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise ValueError(f"{where}: expected plain values (numbers, strings, lists, dicts), got {type(value).__name__}")


def export(ckpt_path: str | Path, out: str | Path) -> Path:
    """Write ``model.safetensors`` and ``config.yaml`` of the checkpoint's task into ``out``; returns ``out``."""
    from safetensors.torch import save_file

    ckpt = load_checkpoint(ckpt_path)
    hparams = dict(ckpt.get("hyper_parameters") or {})
    hparams.pop("_instantiator", None)
    class_path = hparams.pop("_class_path", None)
    if not isinstance(class_path, str):
        raise ValueError(
            f"{ckpt_path}: expected a checkpoint written by `omni fit` (its hyperparameters name the task's class), "
            "got one without a class path"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # clones: tied weights share storage, which safetensors refuses; loading restores the tie
    state = {k: v.detach().clone().contiguous() for k, v in ckpt["state_dict"].items()}
    extras = {k: _plain(v, k) for k, v in ckpt.items() if k.startswith("omni_") and k not in SKIP}
    config = {"class_path": class_path, "init_args": _plain(hparams, "init_args"), "extras": extras}
    tmp = out / f".{WEIGHTS}.partial"
    save_file(state, str(tmp), metadata={"format": "pt", "class_path": class_path})
    tmp.replace(out / WEIGHTS)
    (out / CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))
    return out


def _task_class(class_path: str, where: Path) -> type[LightningModule]:
    module_name, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError):
        raise ValueError(f"{where}: class_path: expected an importable task class, got {class_path!r}") from None
    if not (isinstance(cls, type) and issubclass(cls, LightningModule)):
        raise ValueError(f"{where}: class_path: expected a LightningModule subclass, got {class_path!r}")
    return cls


def load(path: str | Path, map_location: str | torch.device = "cpu") -> LightningModule:
    """The task exported into ``path`` (a folder from ``omni export``), in eval mode, with its weights."""
    from lightning.pytorch.cli import instantiate_module
    from safetensors.torch import load_file

    folder = Path(path)
    for name in (CONFIG, WEIGHTS):
        if not (folder / name).is_file():
            raise ValueError(f"{folder}: expected a folder written by `omni export` with {name}, got none there")
    config = yaml.safe_load((folder / CONFIG).read_text())
    if not isinstance(config, dict) or not isinstance(config.get("class_path"), str):
        raise ValueError(f"{folder / CONFIG}: expected a mapping with class_path and init_args, got {config!r}")
    cls = _task_class(config["class_path"], folder / CONFIG)
    task = instantiate_module(cls, {"_class_path": config["class_path"], **(config.get("init_args") or {})})
    task.on_load_checkpoint(dict(config.get("extras") or {}))
    task.load_state_dict(load_file(str(folder / WEIGHTS), device=str(map_location)), strict=True)
    return task.to(map_location).eval()


def main(argv: Sequence[str] | None = None) -> Path:
    """``omni export --ckpt_path CKPT --out DIR``."""
    p = argparse.ArgumentParser(prog="omni export", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ckpt_path", required=True, help="a checkpoint of `omni fit` (runs/.../checkpoints/last.ckpt)")
    p.add_argument("--out", required=True, help="the folder to write model.safetensors and config.yaml into")
    a = p.parse_args(argv)
    out = export(a.ckpt_path, a.out)
    print(f"exported: {out / WEIGHTS}, {out / CONFIG}")
    return out
