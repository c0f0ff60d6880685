"""Flush subnormal floats to zero on the CPU, as the ``omni`` command does when it starts.

Late in training the gradients are small, and products of small gradients fall below float32's normal range
(1.2e-38). x86 CPUs compute with such subnormal numbers through a slow microcode path: a trained speech model's
backward pass took 50 % longer than a fresh one's on the same batches, almost all of it in ``aten::mm``
(``benchmarks/denormals.py``). Flushing subnormals to zero (the FTZ and DAZ bits, what GPUs do in most kernels)
only changes values below 1.2e-38, far below any update that moves a weight (its effect on accuracy has not been
measured apart from other changes).

The bits belong to each thread. Threads inherit them when they are created, so this must run before torch's
intra-op thread pool exists (before the first parallel torch operation of the process); run later, it covers the
calling thread only. The ``omni`` console command calls it first thing (``omni.cli.main(args)`` called from Python
does not: the caller's process keeps its floating-point mode); ``OMNI_FLUSH_DENORMAL=0`` leaves the CPU as it was.
"""

from __future__ import annotations

import os

import torch

__all__ = ["ENV", "flush_denormals"]

ENV = "OMNI_FLUSH_DENORMAL"


def flush_denormals() -> bool:
    """Set flush-to-zero for this process's CPU threads unless ``OMNI_FLUSH_DENORMAL`` is ``0``; True when set
    (False where it is switched off or the CPU has no such mode)."""
    value = os.environ.get(ENV, "1").strip()
    if value not in ("0", "1"):
        raise ValueError(f"{ENV}: expected 0 or 1, got {value!r}")
    if value == "0":
        return False
    return bool(torch.set_flush_denormal(True))
