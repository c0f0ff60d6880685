"""Building a task from its own config, for a joint task (``omni.tasks.joint``) that trains several at once.

A member is given as ``TaskRef``: the config files ``omni fit`` would read (``configs/digits.yaml``, overlays after
it), overrides in the command line's dotted keys, a loss weight and its share of the joint epoch. ``load_task`` parses
them with the parser ``omni fit`` uses (Lightning's, with omni's own arguments), so a task config means the same thing
alone and inside a joint run; only the trunk's sizes are the joint trunk's. ``MemberTrainer`` is the trainer as a
member sees it: its own data module and a run directory of its own under the joint run's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import lightning as L
from lightning.pytorch.callbacks import Callback

__all__ = [
    "Batching",
    "MemberCallback",
    "MemberTrainer",
    "TaskParts",
    "TaskRef",
    "as_refs",
    "attach",
    "load_task",
    "member_argv",
    "task_parser",
]

Batching = Literal["per_task", "packed"]  # a joint run's batches: one task a step, or packed rows of every task


@dataclass
class TaskRef:
    """One member of a joint task.

    Attributes:
        config: the task's config file, or files (an overlay after it), as ``omni fit --config`` reads them.
        args: overrides in dotted keys, as on the command line: ``{"data.init_args.root": "data/fusion"}``.
        weight: this task's loss weight in the joint loss.
        steps: this task's batches per joint epoch (one task a step); None: its training loader's length.
    """

    config: str | list[str]
    args: dict[str, Any] = field(default_factory=dict)
    weight: float = 1.0
    steps: int | None = None

    def __post_init__(self) -> None:
        files = [self.config] if isinstance(self.config, str) else list(self.config)
        if not files:
            raise ValueError("tasks.config: expected a config file, got none")
        missing = [f for f in files if not Path(f).is_file()]
        if missing:
            raise ValueError(f"tasks.config: expected a config file, got {missing[0]!r} (no such file)")
        if self.weight < 0:
            raise ValueError(f"tasks.weight: expected >= 0, got {self.weight}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"tasks.steps: expected a positive number of batches or null, got {self.steps}")

    @property
    def files(self) -> list[str]:
        return [self.config] if isinstance(self.config, str) else list(self.config)


def as_refs(tasks: Mapping[str, TaskRef | Mapping[str, Any]]) -> dict[str, TaskRef]:
    """{name: TaskRef} from ``TaskRef``s or plain mappings (a config's), unknown keys refused by name."""
    if not tasks:
        raise ValueError("tasks: expected at least one task, got none")
    known = {f.name for f in fields(TaskRef)}
    out = {}
    for name, ref in tasks.items():
        if not isinstance(ref, TaskRef):
            if not isinstance(ref, Mapping):
                raise ValueError(f"tasks.{name}: expected {{config: FILE, ...}}, got {type(ref).__name__}")
            unknown = sorted(set(ref) - known)
            if unknown:
                raise ValueError(f"tasks.{name}: expected keys among {sorted(known)}, got {unknown}")
            ref = TaskRef(**ref)
        out[name] = ref
    return out


@dataclass
class TaskParts:
    """What a task's config builds: the task (or None), its data module (or None) and its trainer callbacks."""

    task: L.LightningModule | None
    datamodule: L.LightningDataModule | None
    callbacks: list[Callback]


def task_parser() -> Any:
    """The parser of ``omni fit``'s config: model, data, trainer and omni's own arguments."""
    from jsonargparse import ActionConfigFile
    from lightning.pytorch import Trainer
    from lightning.pytorch.cli import LightningArgumentParser

    from omni.cli import OmniCLI

    parser = LightningArgumentParser(exit_on_error=False)
    parser.add_argument("-c", "--config", action=ActionConfigFile)
    parser.add_lightning_class_args(L.LightningModule, "model", subclass_mode=True)
    parser.add_lightning_class_args(L.LightningDataModule, "data", subclass_mode=True, required=False)
    parser.add_lightning_class_args(Trainer, "trainer")
    parser.add_argument("--seed_everything", type=int | bool, default=True)
    parser.add_argument("--ckpt_path", type=str | None, default=None)  # keys a run's saved config.yaml holds too
    parser.add_argument("--weights_only", type=bool | None, default=None)
    OmniCLI.add_arguments_to_parser(None, parser)  # type: ignore[arg-type]  # only adds arguments
    return parser


def _arg(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def member_argv(ref: TaskRef, trunk: Any = None) -> list[str]:
    """The ``omni fit`` arguments that build the member alone as the joint task builds it: its config files, its
    overrides and (given the joint trunk's ``TransformerConfig``) every setting of the shared trunk but the task's own
    ``masks`` / ``mask_defs``, and a decoder trunk's width and heads where the task has one. ``benchmarks/joint.py``
    trains the single-task models so."""
    argv: list[str] = []
    for f in ref.files:
        argv += ["--config", f]
    for key, value in ref.args.items():
        argv += [f"--{key}", _arg(value)]
    if trunk is not None:  # the shared trunk's every setting but the task's own mask schedule
        own = task_parser().parse_args(argv).model.init_args
        shared = asdict(trunk) | {"masks": list(own.trunk.masks), "mask_defs": dict(own.trunk.mask_defs or {})}
        argv += ["--model.init_args.trunk", json.dumps(shared)]
        if own.get("decoder_trunk") is not None:
            argv += ["--model.init_args.decoder_trunk.dim", str(trunk.dim)]
            argv += ["--model.init_args.decoder_trunk.heads", str(trunk.heads)]
    return argv


def load_task(ref: TaskRef, *, model: bool = True, data: bool = True, trunk: Any = None) -> TaskParts:
    """Build a member from its config.

    Args:
        ref: the member's config files and overrides.
        model: build the task (and its trainer callbacks); data: build its data module.
        trunk: the joint trunk's ``TransformerConfig``: the task is built with the shared trunk's settings (a decoder
            trunk at its width), keeping its own mask schedule.
    Returns:
        the parts; a part not asked for is None (callbacks: empty).
    """
    parser = task_parser()
    try:
        cfg = parser.parse_args(member_argv(ref, trunk if model else None))
    except Exception as e:  # jsonargparse's ArgumentError, naming the files
        raise ValueError(f"tasks.config: {' + '.join(ref.files)}: {e}") from None
    if not model:
        cfg.model = None
        cfg.trainer.callbacks = None
    if not data:
        cfg.data = None
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    init = instantiate(cfg)
    callbacks = init.trainer.callbacks or []
    return TaskParts(
        task=init.model if model else None,
        datamodule=init.data if data else None,
        callbacks=list(callbacks) if isinstance(callbacks, list) else [callbacks],
    )


def attach(sub: L.LightningModule, name: str, trainer: L.Trainer) -> Any:
    """Give a member the joint run's trainer as it should see it (``MemberTrainer``), unless it has it already;
    returns the member's trainer."""
    current = sub._trainer
    if not isinstance(current, MemberTrainer) or current._trainer is not trainer:
        members = getattr(getattr(trainer, "datamodule", None), "members", None) or {}
        sub.trainer = MemberTrainer(trainer, name, members.get(name))
    return sub.trainer


class MemberTrainer:
    """The joint run's trainer as one member sees it: everything the trainer has, except ``datamodule`` (the
    member's own) and ``log_dir`` (``<run directory>/<member name>``), so a task's hooks and callbacks that read
    their data module or write into the run directory work unchanged inside a joint run."""

    def __init__(self, trainer: L.Trainer, name: str, datamodule: L.LightningDataModule | None) -> None:
        self.__dict__.update(_trainer=trainer, _name=name, _datamodule=datamodule)

    def __getattr__(self, item: str) -> Any:
        return getattr(self.__dict__["_trainer"], item)

    @property
    def datamodule(self) -> L.LightningDataModule | None:
        return self._datamodule

    @property
    def log_dir(self) -> str | None:
        base = self._trainer.log_dir or self._trainer.default_root_dir
        return None if base is None else str(Path(base) / self._name)


# Epoch, stage and checkpoint hooks; not the per-batch ones (a joint batch holds other tasks' samples).
_HOOKS = sorted(
    n for n in vars(Callback) if n.startswith("on_") and "batch" not in n and callable(getattr(Callback, n))
)


class MemberCallback(Callback):
    """A member task's trainer callback (a Decision Transformer's rollouts) inside a joint run: each epoch, stage
    and checkpoint hook is called with the member's trainer (``MemberTrainer``) and the member task instead of the
    joint ones. Per-batch hooks are not passed on."""

    def __init__(self, name: str, callback: Callback, joint: Any) -> None:
        self.name, self.callback = name, callback
        self.__dict__["_joint"] = joint

    @property
    def state_key(self) -> str:
        return f"{self.name}:{self.callback.state_key}"

    def _member(self, trainer: L.Trainer) -> tuple[Any, Any]:
        """(the member's trainer, the member task); attached here when a callback hook comes before the task's
        ``setup`` (callbacks are set up first)."""
        sub = self._joint.members[self.name]
        return attach(sub, self.name, trainer), sub

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        member_trainer, sub = self._member(trainer)
        self.callback.setup(member_trainer, sub, stage)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        member_trainer, sub = self._member(trainer)
        self.callback.teardown(member_trainer, sub, stage)

    def state_dict(self) -> dict[str, Any]:
        return self.callback.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.callback.load_state_dict(state_dict)


def _forward(hook: str) -> Any:
    def call(self: MemberCallback, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any) -> Any:
        member_trainer, sub = self._member(trainer)
        return getattr(self.callback, hook)(member_trainer, sub, *args, **kwargs)

    call.__name__ = hook
    return call


for _hook in _HOOKS:
    setattr(MemberCallback, _hook, _forward(_hook))
