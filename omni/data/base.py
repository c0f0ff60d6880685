"""The one base every omni data module builds on: argument checks, seeded held-out splits, and the loaders.

A data module subclasses ``OmniDataModule``, fills ``train_set``, ``val_set`` and ``test_set`` in ``setup`` and, if a
split needs batch-level work (augmenting a whole batch at once, padding, packing), overrides ``collate``.
``predict`` reads the test split.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset, DistributedSampler, default_collate

from omni.data.resume import SkipOnResume

__all__ = [
    "EpochShuffle",
    "OmniDataModule",
    "Split",
    "check_fraction",
    "check_train_fraction",
    "held_out_split",
    "kept_share",
    "pair",
]

Split = Literal["train", "val", "test"]


def check_fraction(name: str, value: float) -> None:
    """A share of a data set: strictly between 0 and 1."""
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name}: expected a fraction in (0, 1), got {value}")


def check_train_fraction(value: float) -> None:
    """``train_fraction``: the share of the training data a run keeps, in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value <= 1.0:
        raise ValueError(f"train_fraction: expected a share of the training data in (0, 1], got {value!r}")


def kept_share(n: int, fraction: float, labels: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """Sorted indices of the ``fraction`` of ``range(n)`` a run keeps (``train_fraction``): ``round(fraction * n)``
    of them, at least one, drawn with ``seed`` (stratified by ``labels`` where every class can keep one); all of them
    when ``fraction`` is 1. The same seed keeps the same items, so runs compared on a cut see the same cut."""
    check_train_fraction(fraction)
    keep = max(1, round(fraction * n))
    if keep >= n:
        return np.arange(n)
    if labels is not None:
        kept, _ = held_out_split(labels, n - keep, seed)
        return kept
    return np.sort(np.random.default_rng(seed).choice(n, size=keep, replace=False))


def pair(v: int | Sequence[int], name: str) -> tuple[int, int]:
    """An (H, W) size from one side or a pair."""
    if isinstance(v, int):
        v = (v, v)
    if len(v) != 2 or any(int(s) < 1 for s in v):
        raise ValueError(f"{name}: expected a positive int or a pair (H, W), got {v!r}")
    return (int(v[0]), int(v[1]))


def held_out_split(labels: np.ndarray, n_out: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``range(len(labels))`` into sorted (keep, held_out) index arrays, ``n_out`` held out.

    Stratified when every class can give at least one sample to each side; plain shuffling otherwise (tiny sets).
    """
    idx = np.arange(len(labels))
    if not 1 <= n_out < len(labels):
        raise ValueError(f"cannot hold out {n_out} of {len(labels)} samples: expected at least one on each side")
    _, counts = np.unique(labels, return_counts=True)
    can_stratify = counts.min() >= 2 and len(counts) <= n_out <= len(labels) - len(counts)
    keep, out = train_test_split(
        idx, test_size=n_out, stratify=labels if can_stratify else None, random_state=seed, shuffle=True
    )
    return np.sort(keep), np.sort(out)


class EpochShuffle(SkipOnResume, DistributedSampler):
    """A new random order every epoch, drawn from ``(seed, epoch)`` alone (Lightning calls ``set_epoch``), so a run
    resumed at epoch e sees the order the uninterrupted run saw, and the global RNG is left to augmentation.

    Under DDP (``num_replicas`` W) rank r takes positions r, r + W, r + 2W, ... of that one order, as
    ``DistributedSampler`` deals (the end padded with the order's first positions when W does not divide the size):
    the W ranks' batches of a step hold exactly what one process's batch of W times the size holds. A
    ``DistributedSampler`` so that Lightning keeps it instead of wrapping it in one that shuffles again."""

    def __init__(self, size: int, seed: int, num_replicas: int = 1, rank: int = 0) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank: expected 0 <= rank < num_replicas={num_replicas}, got {rank}")
        super().__init__(range(size), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.size = size

    def __iter__(self) -> Iterator[int]:  # type: ignore[override]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=g).tolist()
        order += order[: self.total_size - len(order)]  # pad to a multiple of the ranks, as DistributedSampler does
        return self.resumed(iter(order[self.rank : self.total_size : self.num_replicas]))


class OmniDataModule(L.LightningDataModule):
    """Loaders over ``train_set`` / ``val_set`` / ``test_set``: training batches in a new order every epoch
    (``EpochShuffle``, seeded by ``seed_everything``'s seed), the others in order. Under DDP ``batch_size`` is per
    rank; training positions are dealt over the ranks by ``EpochShuffle``, the others by the ``DistributedSampler``
    Lightning puts in (rank r: positions r, r + W, ...)."""

    def __init__(self, batch_size: int, num_workers: int = 0) -> None:
        """
        Args:
            batch_size: samples per batch.
            num_workers: DataLoader worker processes; 0 loads in the main process.
        """
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers: expected >= 0, got {num_workers}")
        self.batch_size, self.num_workers = batch_size, num_workers
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self._resume: tuple[int, int] | None = None  # (epoch, batches trained) of the checkpoint loaded

    def state_dict(self) -> dict[str, int]:
        """Where training is in its epoch, kept in every checkpoint: the epoch and the batches its loop has taken."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return {}
        return {"epoch": trainer.current_epoch, "batches": trainer.fit_loop.epoch_loop.batch_progress.current.ready}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """From a checkpoint: the next training loader skips the batches of that epoch the run had trained on."""
        if state_dict:
            self._resume = (int(state_dict["epoch"]), int(state_dict["batches"]))

    def resume_sampler(self, sampler: SkipOnResume, items_per_batch: int) -> None:
        """Make a training sampler (``items_per_batch`` of its items to a batch) skip what a loaded checkpoint's run
        trained on in its last epoch; nothing when none was loaded, or it was saved at the end of an epoch."""
        if self._resume is not None:
            epoch, batches = self._resume
            sampler.skip(epoch, batches * items_per_batch)
            self._resume = None

    def replicas(self) -> tuple[int, int]:
        """(rank, world size) of the trainer this module is attached to; (0, 1) outside one or in one process."""
        trainer = getattr(self, "trainer", None)
        if trainer is None or trainer.world_size <= 1:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def collate(self, split: Split) -> Callable[[list[Any]], Any]:
        """How a list of items becomes a batch for ``split`` (default: ``default_collate``)."""
        return default_collate

    def _loader(self, ds: Dataset | None, split: Split) -> DataLoader:
        if ds is None:
            raise RuntimeError(f"{type(self).__name__}: call setup() before asking for the {split} data loader")
        train = split == "train"
        rank, world = self.replicas()
        seed = torch.initial_seed() % 2**31
        sampler = EpochShuffle(len(ds), seed, world, rank) if train else None
        if sampler is not None:
            self.resume_sampler(sampler, self.batch_size)
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            sampler=sampler,  # type: ignore[arg-type]
            generator=torch.Generator().manual_seed(torch.initial_seed() % 2**31),  # worker seeds; not the global RNG
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=self.collate(split),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, "train")

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, "val")

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, "test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, "test")
