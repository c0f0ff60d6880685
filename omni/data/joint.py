"""``JointDataModule``: the data of every member of a joint task (``omni.tasks.joint``), each from its own config.

Training batches come two ways, as the task's ``batching`` says:

- ``per_task``: ``TaskSchedule``, a Lightning ``CombinedLoader`` that yields ``(task name, batch)``: one task a
  step, every task ``steps`` times an epoch (default: its loader's length) in an order shuffled from ``seed`` and the
  epoch, the same on every rank (so DDP ranks run the same member each step). Each task's loader goes on where it
  stopped in the previous epoch and starts over when it runs out. Lightning sees every task's loader (it adds
  distributed samplers to them as it would alone).
- ``packed``: Lightning's ``CombinedLoader`` in ``max_size_cycle`` mode: ``{task name: batch}`` each step.

Validation and test: one loader per member that has one (``eval_names["val"]`` says whose, in order).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import lightning as L
from lightning.pytorch.utilities.combined_loader import CombinedLoader

from omni.choices import check_choice
from omni.members import Batching, MemberTrainer, TaskRef, as_refs, load_task

__all__ = ["JointDataModule", "TaskSchedule"]


class TaskSchedule(CombinedLoader):
    """One task's batch a step: ``((name, batch), index, 0)`` from Lightning's point of view (see the module doc)."""

    def __init__(
        self,
        loaders: dict[str, Any],
        steps: dict[str, int | None],
        seed: int = 0,
        epoch_of: Any = None,
        limit: int | float = 1.0,
    ):
        """
        Args:
            loaders: {task name: its training loader}.
            steps: {task name: its batches per epoch; None for its loader's length}.
            seed: the schedule's seed; an epoch's order is drawn from (seed, epoch).
            epoch_of: () -> the current epoch (the trainer's, so a resumed run draws the same orders); default: the
                number of epochs this schedule has started.
            limit: the trainer's ``limit_train_batches``: an int caps every task's batches per epoch, a fraction
                scales them (at least one batch each). Lightning's own per-loader ``limits`` are not used: it sets
                them to each loader's length, and a task's ``steps`` may be more than that (its loader starts over).
        """
        super().__init__(loaders, "max_size_cycle")
        self.names = list(loaders)
        self.steps, self.seed = dict(steps), seed
        self.epoch_of, self.limit = epoch_of, limit
        self._started = 0
        self._iters: dict[str, Iterator[Any] | None] = {}

    def counts(self) -> dict[str, int]:
        """{task name: its batches this epoch}: ``steps`` (or its loader's length), under ``limit``."""
        loaders = dict(zip(self.names, self.flattened, strict=True))
        out = {}
        for name, loader in loaders.items():
            n = self.steps.get(name)
            if n is None:
                try:
                    n = len(loader)
                except TypeError:
                    raise ValueError(
                        f"tasks.{name}.steps: expected a number (its loader has no length), got null"
                    ) from None
            if isinstance(self.limit, int) and not isinstance(self.limit, bool):
                out[name] = min(int(n), self.limit)
            else:
                out[name] = max(1, int(n * float(self.limit))) if self.limit > 0 else 0
        return out

    def order(self, epoch: int) -> list[str]:
        """The task of every step of an epoch: each ``counts()[name]`` times, shuffled from (seed, epoch)."""
        order = [name for name, n in self.counts().items() for _ in range(n)]
        random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return order

    def _next(self, name: str) -> Any:
        it = self._iters.get(name)
        loader = self.flattened[self.names.index(name)]
        if it is None:
            it = self._iters[name] = iter(loader)
        try:
            return next(it)
        except StopIteration:
            self._iters[name] = it = iter(loader)  # run out: start it over
            return next(it)

    def __iter__(self) -> TaskSchedule:
        epoch = self.epoch_of() if self.epoch_of is not None else self._started
        self._started += 1
        self._plan = iter(enumerate(self.order(epoch)))
        self._iterator = None
        return self

    def __next__(self) -> tuple[Any, int, int]:
        index, name = next(self._plan)
        return (name, self._next(name)), index, 0

    def __len__(self) -> int:
        return sum(self.counts().values())

    def reset(self) -> None:
        self._iters = {}
        super().reset()


class JointDataModule(L.LightningDataModule):
    """Every member's data module, built from the member's config (see the module doc)."""

    def __init__(self, tasks: dict[str, TaskRef], batching: Batching = "per_task", seed: int = 0) -> None:
        """
        Args:
            tasks: {name: the member's config files and overrides}: the model's ``tasks`` (a YAML anchor keeps them
                one list); ``steps`` sets a member's share of a ``per_task`` epoch.
            batching: ``per_task`` or ``packed``: the model's.
            seed: the ``per_task`` schedule's seed.
        """
        super().__init__()
        refs = as_refs(tasks)
        check_choice("batching", batching, Batching)
        self.batching, self.seed = batching, seed
        self.steps = {name: r.steps for name, r in refs.items()}
        self.members: dict[str, L.LightningDataModule] = {}
        for name, ref in refs.items():
            dm = load_task(ref, model=False).datamodule
            if dm is None:
                raise ValueError(f"tasks.{name}: expected a config with a data module (data:), got none")
            self.members[name] = dm
        self.eval_names: dict[str, list[str]] = {}  # {"val" / "test": the members whose loaders come, in order}

    def _share_trainer(self) -> None:
        if self.trainer is not None:
            for name, dm in self.members.items():
                dm.trainer = MemberTrainer(self.trainer, name, dm)  # type: ignore[assignment]

    def prepare_data(self) -> None:
        for dm in self.members.values():
            dm.prepare_data()

    def setup(self, stage: str) -> None:
        self._share_trainer()
        for dm in self.members.values():
            dm.setup(stage)

    def teardown(self, stage: str) -> None:
        for dm in self.members.values():
            dm.teardown(stage)

    def _epoch(self) -> int:
        return int(self.trainer.current_epoch) if self.trainer is not None else 0

    def train_dataloader(self) -> CombinedLoader:
        loaders = {name: dm.train_dataloader() for name, dm in self.members.items()}
        if self.batching == "packed":
            return CombinedLoader(loaders, "max_size_cycle")
        limit = self.trainer.limit_train_batches if self.trainer is not None else 1.0
        return TaskSchedule(loaders, self.steps, seed=self.seed, epoch_of=self._epoch, limit=limit)

    def _eval(self, kind: str) -> list[Any]:
        names, loaders = [], []
        for name, dm in self.members.items():
            make = getattr(dm, f"{kind}_dataloader", None)
            if not callable(make):
                continue
            try:
                loader = make()
            except NotImplementedError:  # Lightning's default: this member has no such split
                continue
            if loader is not None:
                names.append(name)
                loaders.append(loader)
        self.eval_names[kind] = names
        return loaders

    def val_dataloader(self) -> list[Any]:
        return self._eval("val")

    def test_dataloader(self) -> list[Any]:
        return self._eval("test")
