"""Batches of utterances of similar duration, under a budget of padded seconds, dealt over DDP ranks by rows.

``DurationBucketSampler`` yields lists of indices (a batch sampler). Utterances are sorted by duration and cut into
``num_buckets`` buckets of equal count; a bucket's batch size is what its longest utterance allows under
``max_batch_seconds`` (batch size x the longest duration in the batch, the padded audio a batch holds), and its
utterances are dealt into near-equal batches of at most that size. Each epoch the members of every bucket are
shuffled before they are cut and the batches are shuffled, from ``(seed, epoch)`` alone, so every rank draws the
same list and a resumed run sees the order the uninterrupted run saw. The number of batches never changes.

Under DDP (W ranks) the budget and ``batch_size`` are per rank, as batch sizes are everywhere in Lightning: the
sampler builds the global batches one process would build with W times the budget (or W x ``batch_size``), and rank
r takes rows r, r + W, r + 2W, ... of every global batch. So W ranks train each step on exactly the utterances one
process with the W-times budget puts in its batch, every rank has the same number of batches, and each utterance is
seen once per epoch. A rank's share holds at most one utterance more than the per-rank budget allows (the global
batch size need not divide by W). A global batch with fewer rows than ranks (a bucket's last few utterances) repeats
its rows so every rank has one, as ``DistributedSampler`` pads; with ``even=False`` (prediction) nothing repeats and a
rank without a row skips that batch.

The sampler is a ``torch.utils.data.DistributedSampler`` (of batches): Lightning leaves a loader whose ``sampler``
is one alone under DDP instead of injecting its own, and calls ``set_epoch`` on it. In a Lightning data module pass
it as ``DataLoader(BatchOf(dataset), sampler=..., batch_size=None)``; elsewhere ``batch_sampler=`` works as usual.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

from omni.data.resume import SkipOnResume

__all__ = ["BatchOf", "DurationBucketSampler"]


def _replicas(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """(world size, rank): the ones given, else torch.distributed's when initialised, else (1, 0)."""
    ready = dist.is_available() and dist.is_initialized()
    world = num_replicas if num_replicas is not None else dist.get_world_size() if ready else 1
    me = rank if rank is not None else dist.get_rank() if ready else 0
    if isinstance(world, bool) or not isinstance(world, int) or world < 1:
        raise ValueError(f"num_replicas: expected a positive int, got {world!r}")
    if isinstance(me, bool) or not isinstance(me, int) or not 0 <= me < world:
        raise ValueError(f"rank: expected an int in [0, num_replicas={world}), got {me!r}")
    return world, me


class DurationBucketSampler(SkipOnResume, DistributedSampler):
    """Duration-bucketed batches under a padded-seconds budget, reshuffled per epoch, dealt over DDP ranks by rows
    (see the module docstring). Iterating yields this rank's batches, each a list of indices into ``durations``."""

    def __init__(
        self,
        durations: Sequence[float],
        max_batch_seconds: float = 200.0,
        num_buckets: int = 10,
        batch_size: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        even: bool = True,
    ) -> None:
        """
        Args:
            durations: seconds of each utterance (what the batch budget counts; scale them for speed perturbation).
            max_batch_seconds: the most padded seconds a batch holds (batch size x its longest utterance), per rank;
                an utterance longer than that is a batch of its own.
            num_buckets: duration buckets (equal counts of utterances); more buckets, less padding, less mixing.
            batch_size: a count per rank instead of the seconds budget (which is then ignored): each bucket is dealt
                into near-equal global batches of at most this many utterances times the number of ranks.
            shuffle: reshuffle bucket members and batch order each epoch (training); False: batches in order of
                duration, the same every epoch (evaluation).
            seed: the seed of every epoch's order, with the epoch (``set_epoch``).
            num_replicas: DDP world size; None: torch.distributed's when initialised, else 1.
            rank: this process's rank; None: torch.distributed's when initialised, else 0.
            even: give every rank a row of every batch, repeating rows of a batch smaller than the number of ranks
                (training and validation under DDP); False: never repeat one (prediction).
        """
        d = np.asarray(durations, dtype=np.float64)
        if d.ndim != 1 or d.size < 1 or not np.isfinite(d).all() or (d < 0).any():
            raise ValueError(f"durations: expected one finite, non-negative duration per utterance, got {d!r:.120}")
        if not max_batch_seconds > 0:
            raise ValueError(f"max_batch_seconds: expected a positive number of seconds, got {max_batch_seconds!r}")
        for name, value in (("num_buckets", num_buckets), ("batch_size", batch_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        world, me = _replicas(num_replicas, rank)
        super().__init__(d, num_replicas=world, rank=me, shuffle=shuffle, seed=seed, drop_last=False)
        self.durations, self.max_batch_seconds = d, float(max_batch_seconds)
        self.batch_size, self.even = batch_size, even
        order = np.argsort(d, kind="stable")
        self.buckets = [b for b in np.array_split(order, min(num_buckets, d.size)) if b.size]
        self.bucket_batches = [math.ceil(b.size / self._bucket_batch_size(b)) for b in self.buckets]
        self.num_batches = sum(self.bucket_batches)  # global batches: every rank has a share of each
        self.total_size = self.num_batches  # DistributedSampler's names, counted in batches
        self.num_samples = self.num_batches if even else sum(1 for b in self.batches() if len(b) > me)

    def _bucket_batch_size(self, bucket: np.ndarray) -> int:
        """Utterances per global batch in ``bucket``: W x the fixed ``batch_size``, or as many of its longest as fit
        in W x the budget."""
        world = self.num_replicas
        if self.batch_size is not None:
            return self.batch_size * world
        longest = float(self.durations[bucket].max())
        if longest == 0.0:
            return bucket.size
        budget = self.max_batch_seconds * world
        size = max(1, math.floor(budget / longest))
        while size > 1 and size * longest > budget:  # floor of a rounded quotient may be 1 too many
            size -= 1
        return size

    def batches(self) -> list[list[int]]:
        """The global batches of this epoch, in order; rank r iterates over their rows ``[r::num_replicas]``."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        out: list[list[int]] = []
        for bucket, n in zip(self.buckets, self.bucket_batches, strict=True):
            members = bucket[torch.randperm(bucket.size, generator=g).numpy()] if self.shuffle else bucket
            out += [part.tolist() for part in np.array_split(members, n)]
        if self.shuffle:
            out = [out[i] for i in torch.randperm(len(out), generator=g).tolist()]
        return out

    def __iter__(self) -> Iterator[list[int]]:  # type: ignore[override]
        return self.resumed(self._shares())

    def _shares(self) -> Iterator[list[int]]:
        world, me = self.num_replicas, self.rank
        for batch in self.batches():
            if self.even and len(batch) < world:  # fewer rows than ranks: repeat them, as DistributedSampler pads
                batch = [batch[j % len(batch)] for j in range(world)]
            if len(batch) > me:
                yield batch[me::world]

    def __len__(self) -> int:
        return self.num_samples


class BatchOf(Dataset):
    """A map-style dataset indexed by a list of indices: ``BatchOf(ds)[[3, 1]] == [ds[3], ds[1]]``. With
    ``DataLoader(BatchOf(ds), sampler=DurationBucketSampler(...), batch_size=None, collate_fn=...)`` a worker loads
    a whole batch, as with ``batch_sampler=``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, indices: list[int]) -> list:
        return [self.dataset[i] for i in indices]
