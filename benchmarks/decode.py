"""Greedy decoding with the KV cache vs recomputing the whole prefix, with a decoder of Whisper base's size.

    python benchmarks/decode.py [--device cuda --dtype bf16] [--lengths 50 200 448]

The decoder has Whisper base's text decoder sizes: width 512, 6 layers, 8 heads, a vocabulary of 51,865, a learned
position table, cross-attention to the 1,500 encoder tokens of one 30 s utterance (random memory and random weights:
the cost does not depend on what they hold). Greedy decoding from BOS generates exactly 50, 200 and 448 ids (448:
Whisper's text context), never stopping at EOS, two ways:

- cached: ``OmniModel.start_decoding`` computes the memory's cross-attention keys/values once, then every step runs
  ``OmniModel.step`` on the newest id only, against the cached keys/values;
- recompute: every step runs a full forward of the decoder over BOS and all ids so far (the memory's keys/values
  included) and takes the next id from the last position (the output layer only there, which favours recompute).

Both runs must produce the same ids. A difference is allowed only where the cached run's two best logits were within
the dtype's rounding at the first differing step (a near-tie, possible in bf16); any other difference stops the
benchmark. Timings are after one short warm-up of each path.

Prints one JSON object last: seconds of each path per length and ``cache_speedup_<n>`` (recompute / cached).
``--smoke`` runs a 2-layer decoder for 5 ids and writes no results file.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import record

from omni.heads import TokenHead
from omni.model import ModelOutput, OmniModel
from omni.tokenizers import TextTokenizer
from omni.tokens import Tokens
from omni.transformer import TransformerConfig

DIM, DEPTH, HEADS, VOCAB = 512, 6, 8, 51865  # Whisper base's text decoder
MEMORY = 1500  # encoder tokens of a 30 s utterance: 3,000 mel frames / 2 (the stem's stride)
BOS = 50258  # Whisper's <|startoftranscript|>
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
T = TypeVar("T")
NEAR_TIE = 8  # a difference is a near-tie when the top-2 gap is below this many epsilons of the largest logit


def build(depth: int, max_len: int, device: str, dtype: torch.dtype) -> tuple[OmniModel, Tokens]:
    """The decoder (eval mode) and one utterance's memory (1, MEMORY, DIM)."""
    torch.manual_seed(0)
    decoder = OmniModel(
        {"text": TextTokenizer(DIM, VOCAB, max_len=max_len, pad_id=None)},
        TransformerConfig(dim=DIM, depth=depth, heads=HEADS, cross_attention=True, masks=["causal"]),
        heads={"lm": TokenHead(DIM, VOCAB, tokenizer="text")},
    )
    memory = Tokens.create(torch.randn(1, MEMORY, DIM))
    return decoder.to(device=device, dtype=dtype).eval(), memory.replace(x=memory.x.to(device=device, dtype=dtype))


def near_tie(logits: Tensor) -> Tensor:
    """(B,) True where the two best logits are closer than the dtype can tell apart."""
    top = logits.float().topk(2, dim=-1).values
    return (top[:, 0] - top[:, 1]) <= NEAR_TIE * torch.finfo(logits.dtype).eps * top[:, 0].abs().clamp(min=1.0)


@torch.no_grad()
def cached(decoder: OmniModel, memory: Tokens, steps: int) -> tuple[Tensor, Tensor]:
    """Greedy ids (1, steps) by ``step`` on the newest id, and (1, steps) bool: near-ties at each step."""
    state = decoder.start_decoding(memory)
    ids = torch.full((1, 1), BOS, dtype=torch.long, device=memory.x.device)
    out, ties = [], []
    for t in range(steps):
        logits = decoder.step({"text": {"ids": ids, "start": t}}, state)["lm"][:, -1]
        ids = logits.argmax(dim=-1, keepdim=True)
        out.append(ids)
        ties.append(near_tie(logits)[:, None])
    return torch.cat(out, dim=1), torch.cat(ties, dim=1)


@torch.no_grad()
def recompute(decoder: OmniModel, memory: Tokens, steps: int) -> Tensor:
    """Greedy ids (1, steps) by a full forward over the whole prefix at every step."""
    prefix = torch.full((1, 1), BOS, dtype=torch.long, device=memory.x.device)
    head = decoder.heads["lm"]
    for _ in range(steps):
        out = decoder.encode({"text": prefix}, context=memory)
        n = out.tokens.num_tokens
        last = ModelOutput(tokens=out.tokens[slice(n - 1, n)], extras={}, spans={"text": slice(0, 1)})
        prefix = torch.cat([prefix, head(last)[:, -1].argmax(dim=-1, keepdim=True)], dim=1)
    return prefix[:, 1:]


def timed(fn: Callable[[], T], device: str) -> tuple[T, float]:
    """``fn()`` and the seconds it took (the device synchronised before and after)."""
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    result = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return result, time.perf_counter() - t0


def check_same(ids_cached: Tensor, ties: Tensor, ids_full: Tensor, n: int) -> int | None:
    """The first step where the two runs differ (None: identical); raises unless it was a near-tie."""
    differ = (ids_cached != ids_full)[0].nonzero()
    if not len(differ):
        return None
    first = int(differ[0])
    if not bool(ties[0, first]):
        raise SystemExit(
            f"decode: cached and recomputed greedy ids differ at step {first} of {n} without a near-tie: "
            f"{ids_cached[0, : first + 1].tolist()} vs {ids_full[0, : first + 1].tolist()}"
        )
    return first


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[50, 200, 448])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--depth", type=int, default=DEPTH)
    p.add_argument("--smoke", action="store_true", help="2 layers, 5 ids, no results file: check that it runs")
    args = p.parse_args()
    if args.smoke:
        args.depth, args.lengths = 2, [5]
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: expected a CUDA device, found none")

    decoder, memory = build(args.depth, 1 + max(args.lengths), args.device, DTYPES[args.dtype])
    cached(decoder, memory, 3)  # warm-up: kernels, allocator
    recompute(decoder, memory, 3)
    result: dict[str, object] = {"config": {**vars(args), "dim": DIM, "heads": HEADS, "vocab": VOCAB, "memory": MEMORY}}
    for n in args.lengths:
        (ids_cached, ties), t_cached = timed(lambda n=n: cached(decoder, memory, n), args.device)
        ids_full, t_full = timed(lambda n=n: recompute(decoder, memory, n), args.device)
        first = check_same(ids_cached, ties, ids_full, n)
        print(f"{n} ids: cached {t_cached:.3f} s, recompute {t_full:.3f} s, same ids: {first is None}")
        result[f"cached_s_{n}"] = round(t_cached, 4)
        result[f"recompute_s_{n}"] = round(t_full, 4)
        result[f"cache_speedup_{n}"] = round(t_full / t_cached, 2)
        result[f"ids_equal_{n}"] = first is None
        if first is not None:
            result[f"first_near_tie_difference_{n}"] = first
    record("decode", result, save=not args.smoke)


if __name__ == "__main__":
    main()
