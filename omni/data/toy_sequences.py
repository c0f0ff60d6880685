"""Random symbol sequences to copy or reverse, generated offline: the smallest sequence-to-sequence task.

Ids 0, 1, 2 are PAD, BOS and EOS; symbols are 3 ... vocab_size - 1. A source is 1 to ``max_len`` random symbols;
its target is BOS, the same symbols (``copy``) or the same symbols backwards (``reverse``), EOS.

Batches: ``{"source": {"ids": (B, S), "mask": (B, S)}, "target": {"ids": (B, T), "mask": (B, T)}}`` with S =
``max_len``, T = ``max_len`` + 2, ``mask`` True where the id is real and PAD elsewhere: the layout
``omni.tasks.seq2seq.Seq2Seq`` reads (``source`` feeds the encoder's tokenizer of that name).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.data import Dataset

from omni.choices import check_choice
from omni.data.base import OmniDataModule

__all__ = ["BOS", "EOS", "PAD", "ToySequenceDataModule", "ToyTask", "make_pairs"]

PAD, BOS, EOS = 0, 1, 2
SPECIALS = 3  # ids below this are not symbols
ToyTask = Literal["copy", "reverse"]


def make_pairs(n: int, num_symbols: int, min_len: int, max_len: int, task: ToyTask, seed: int) -> dict[str, Tensor]:
    """``n`` (source, target) pairs as padded id tensors and masks (see the module docstring), from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, max_len + 1, (n,), generator=g)
    symbols = torch.randint(SPECIALS, SPECIALS + num_symbols, (n, max_len), generator=g)
    src_mask = torch.arange(max_len)[None] < lengths[:, None]  # (n, S)
    source = symbols.masked_fill(~src_mask, PAD)
    body = source
    if task == "reverse":  # row i reads source[i, L_i - 1], ..., source[i, 0], then padding
        index = (lengths[:, None] - 1 - torch.arange(max_len)[None]).clamp(min=0)
        body = source.gather(1, index).masked_fill(~src_mask, PAD)
    target = torch.full((n, max_len + 2), PAD, dtype=torch.long)
    target[:, 0] = BOS
    target[:, 1:-1] = body
    target[torch.arange(n), lengths + 1] = EOS
    tgt_mask = torch.arange(max_len + 2)[None] < (lengths + 2)[:, None]
    return {"source": source, "source_mask": src_mask, "target": target, "target_mask": tgt_mask}


class _Pairs(Dataset):
    def __init__(self, data: dict[str, Tensor]) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data["source"])

    def __getitem__(self, i: int) -> dict[str, Any]:
        d = self.data
        return {
            "source": {"ids": d["source"][i], "mask": d["source_mask"][i]},
            "target": {"ids": d["target"][i], "mask": d["target_mask"][i]},
        }


class ToySequenceDataModule(OmniDataModule):
    """Copy or reverse random symbol sequences (offline, seeded). Train, val and test draw independently, so
    short sequences may repeat across splits; long ones almost never do."""

    pad_id, bos_id, eos_id = PAD, BOS, EOS

    def __init__(
        self,
        task: ToyTask = "reverse",
        num_symbols: int = 10,
        min_len: int = 1,
        max_len: int = 8,
        num_train: int = 10000,
        num_val: int = 500,
        num_test: int = 500,
        batch_size: int = 64,
        seed: int = 0,
    ) -> None:
        """
        Args:
            task: ``copy`` (the target is the source) or ``reverse`` (the source backwards).
            num_symbols: distinct symbols; the vocabulary adds PAD, BOS and EOS (``vocab_size`` = num_symbols + 3).
            min_len: the shortest source, in symbols (>= 1).
            max_len: the longest source, in symbols; lengths are uniform in [min_len, max_len].
            num_train: training pairs.
            num_val: validation pairs.
            num_test: test pairs.
            batch_size: pairs per batch.
            seed: seed of the generator (train, val and test use seed, seed + 1, seed + 2).
        """
        super().__init__(batch_size)
        check_choice("task", task, ToyTask)
        positive = {"num_symbols": num_symbols, "min_len": min_len, "num_train": num_train}
        for name, value in {**positive, "num_val": num_val, "num_test": num_test}.items():
            if value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value}")
        if max_len < min_len:
            raise ValueError(f"max_len: expected >= min_len={min_len}, got {max_len}")
        self.task, self.num_symbols, self.min_len, self.max_len, self.seed = task, num_symbols, min_len, max_len, seed
        self.vocab_size = num_symbols + SPECIALS
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.train_set, self.val_set, self.test_set = (
            _Pairs(make_pairs(n, self.num_symbols, self.min_len, self.max_len, self.task, self.seed + i))
            for i, n in enumerate(self.sizes.values())
        )
