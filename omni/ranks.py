"""What code outside Lightning's loop needs under DDP: every rank's Python objects, and the global batch's counts.

Lightning averages gradients over the ranks and reduces logged values; two things it cannot know are left here.
``all_ranks`` gathers Python objects (transcripts, detections) that torchmetrics' tensor states cannot carry.
``global_count`` is the divisor of a loss that is a mean over a count inside the batch (real steps of a window,
objects of a scene): a rank that divides its sum by its own count, averaged over ranks, is the mean of ratios, not
the global batch's ratio of sums; divided by ``global_count`` instead, DDP's average is exactly the one-process mean
(as fairseq and Megatron normalise by the tokens of the whole data-parallel batch). Both are collectives under DDP:
every rank must call them, in the same order (a training, validation or test step does).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["all_ranks", "close_process_group", "global_count"]


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def close_process_group() -> None:
    """End a command's process group on every rank: wait for the others, then destroy it. A no-op without one.

    Lightning starts the group and leaves it open when ``fit`` or ``predict`` returns. Left to Python's exit, gloo's
    worker threads can be torn down while a peer is still closing its side, and the process aborts ("terminate called
    without an active exception", status -6) after its work is done. Every rank must call this, as the last thing its
    command does.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    if dist.get_world_size() > 1:
        dist.barrier()
    dist.destroy_process_group()


def all_ranks(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` under torch.distributed, else ``[obj]``."""
    if not _distributed():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def global_count(count: Tensor | float, minimum: float = 1.0) -> Tensor:
    """``max(count summed over the ranks, minimum) / world size``; ``max(count, minimum)`` in one process.

    A rank's sum divided by this, averaged over the ranks (DDP's gradient average, Lightning's reduction of a logged
    value), is the sum over the global batch divided by its count. No gradient flows through the count.
    """
    total = torch.as_tensor(count, dtype=torch.float32).detach().clone()
    if not _distributed():
        return total.clamp(min=minimum)
    if dist.get_backend() == "nccl" and total.device.type != "cuda":
        total = total.cuda()
    dist.all_reduce(total)
    return total.clamp(min=minimum) / dist.get_world_size()
