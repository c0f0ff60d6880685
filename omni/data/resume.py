"""Samplers that a run resumed mid-epoch can start where its checkpoint was.

Every omni training sampler draws its epoch's order from ``(seed, epoch)`` alone, so the order is known again after a
restart; ``SkipOnResume.skip(epoch, n)`` makes the next iteration of that epoch drop its first ``n`` items (at the
sampler: nothing is loaded to be thrown away). ``OmniDataModule`` keeps where training is in its epoch in every
checkpoint (Lightning's ``LightningDataModule.state_dict``) and calls ``skip`` when it is loaded from one; Lightning
restores its own loop counters, so batch ``k + 1`` follows step ``k``'s checkpoint as in the uninterrupted run.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import TypeVar

__all__ = ["SkipOnResume"]

T = TypeVar("T")


class SkipOnResume:
    """Mixin for a sampler with an ``epoch`` attribute (set by ``set_epoch``): ``skip`` its first items, once."""

    _skip: tuple[int, int] | None = None

    def skip(self, epoch: int, n: int) -> None:
        """Drop the first ``n`` items of epoch ``epoch``'s order the next time that epoch is iterated."""
        if n < 0:
            raise ValueError(f"n: expected a number of items >= 0, got {n}")
        self._skip = (epoch, n)

    def resumed(self, items: Iterator[T]) -> Iterator[T]:
        """``items`` without the ones a pending ``skip`` of this epoch names (the skip is then used up). Decided
        when the first item is asked for: Lightning may create the iterator before it sets the epoch."""
        if self._skip is not None and self._skip[0] == getattr(self, "epoch", 0):
            n, self._skip = self._skip[1], None
            items = itertools.islice(items, n, None)
        yield from items
