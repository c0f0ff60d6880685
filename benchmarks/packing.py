"""Packing vs padding: training throughput of a 6-layer trunk on audio-like batches of varying lengths.

    python benchmarks/packing.py [--batches 3 --batch-size 16 --dim 192 --heads 3 --max-len 4096]

Lengths are log-normal (median 400 tokens, sigma 0.6, capped at 3,000: a few seconds to a minute of 20 ms audio
tokens). Each batch runs forward + backward twice, side by side: padded to its longest sample (``Tokens.stack``),
and packed into rows of ``--max-len`` (``pack``: several samples per row, kept apart by the sample boundary mask).
The attention path is ``auto`` for both (the sparse gather path for long packed rows on CPU, which skips the
pairs between packed samples); mask plans are built per batch, as in training. Throughput counts real tokens only.

Prints one JSON object last: ``packing_speedup`` (packed tokens/s over padded tokens/s) and both throughputs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import record

from omni.model import OmniModel
from omni.tokenizers import MelSpectrogramTokenizer
from omni.tokens import Tokens, pack
from omni.transformer import TransformerConfig

MEDIAN, SIGMA, CAP = 400, 0.6, 3000


def sample_lengths(n: int, g: torch.Generator) -> list[int]:
    z = torch.randn(n, generator=g)
    return [int(min(CAP, max(1, round(MEDIAN * float(torch.exp(SIGMA * x)))))) for x in z]


def audio_like(length: int, dim: int, g: torch.Generator) -> Tokens:
    """One sample: random embeddings, 20 ms positions."""
    return Tokens.create(torch.randn(1, length, dim, generator=g), pos=(torch.arange(length) * 0.02)[:, None])


def step(model: OmniModel, tokens: Tokens) -> float:
    t0 = time.perf_counter()
    out = model.mix(tokens)
    (out.x * out.pad.unsqueeze(-1)).square().mean().backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--dim", type=int, default=192)
    p.add_argument("--heads", type=int, default=3)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--max-len", type=int, default=4096)
    args = p.parse_args()

    torch.manual_seed(0)
    model = OmniModel(
        tokenizers={"audio": MelSpectrogramTokenizer(args.dim)},
        trunk=TransformerConfig(dim=args.dim, depth=args.depth, heads=args.heads),
    )
    g = torch.Generator().manual_seed(0)
    batches = [
        [audio_like(n, args.dim, g) for n in sample_lengths(args.batch_size, g)] for _ in range(args.batches + 1)
    ]
    t_pad = t_pack = 0.0
    real = slots_pad = slots_pack = 0
    for i, samples in enumerate(batches):
        padded = Tokens.stack(samples)
        packed, info = pack(samples, args.max_len)
        if i == 0:  # warm-up batch, not counted
            step(model, padded)
            step(model, packed)
            continue
        t_pad += step(model, padded)
        t_pack += step(model, packed)
        real += sum(info.lengths)
        slots_pad += padded.pad.numel()
        slots_pack += packed.pad.numel()
        print(
            f"batch {i}: {sum(info.lengths)} tokens; padded {tuple(padded.pad.shape)}, packed {tuple(packed.pad.shape)}"
        )
    result = {
        "config": vars(args),
        "lengths": {"median": MEDIAN, "sigma": SIGMA, "cap": CAP},
        "real_tokens": real,
        "padding_efficiency_padded": round(real / slots_pad, 3),
        "padding_efficiency_packed": round(real / slots_pack, 3),
        "tokens_per_s_padded": round(real / t_pad, 1),
        "tokens_per_s_packed": round(real / t_pack, 1),
        "packing_speedup": round(t_pad / t_pack, 3),
    }
    record("packing", result)


if __name__ == "__main__":
    main()
