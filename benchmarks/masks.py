"""Masked attention paths side by side: dense SDPA with the boolean mask, full SDPA (no mask), the sparse gather
path and FlexAttention, for ``local(radius=64) | global_tokens()`` with 4 global tokens.

    python benchmarks/masks.py [--sizes 1024 4096 16384] [--repeats 5]

The attention operation itself (queries, keys, values in; dim 384 = 6 heads x 64) for one sequence; forward alone
(inference, no autograd) and forward + backward. Every path's output is checked against the dense one first. Mask
build times: cold (a new batch's metadata) and cached (``PlanCache`` hit on the same metadata).

Prints one JSON object last: ``infer_speedup_4096`` (best inference path vs dense), ``train_speedup_4096`` (best
training path vs dense, forward + backward), ``mask_build_ms_cold``, ``mask_fetch_ms_cached``, and every timing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import record

from omni import masks
from omni.attention.kernels import attend
from omni.attention.masks import block_mask
from omni.attention.plans import PlanCache, sparse_plan
from omni.tokens import Tokens

HEADS, HEAD_DIM, RADIUS, GLOBALS = 6, 64, 64, 4


def timed(fns: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median seconds of each ``fn()`` over ``repeats`` rounds after one warm-up round. Each round runs every
    path once, so that drift in the machine's speed hits all paths alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def tokens_for(n: int) -> Tokens:
    """An audio-like sequence: 1-D positions, the first 4 tokens global."""
    return Tokens.create(
        torch.zeros(1, n, 1), pos=torch.arange(n).float()[:, None], is_global=torch.arange(n)[None] < GLOBALS
    )


def run_size(n: int, repeats: int, with_flex: bool) -> dict[str, float]:
    mask = masks.local(radius=RADIUS) | masks.global_tokens()
    tokens = tokens_for(n)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, HEADS, n, HEAD_DIM, generator=g) for _ in range(3))
    reps = repeats if n <= 4096 else 1
    t0 = time.perf_counter()
    dense = mask.dense(tokens)
    build_dense = time.perf_counter() - t0
    t0 = time.perf_counter()
    sparse = sparse_plan(mask, tokens)
    build_sparse = time.perf_counter() - t0
    plans: dict[str, object] = {"dense": dense, "sparse": sparse}
    builds = {"dense": build_dense, "sparse": build_sparse}
    if with_flex:
        t0 = time.perf_counter()
        plans["flex"] = block_mask(mask, tokens)
        builds["flex"] = time.perf_counter() - t0

    with torch.no_grad():
        ref = attend(q, k, v, dense)
        for name, p in plans.items():
            err = (attend(q, k, v, p) - ref).abs().max().item()
            if err > 1e-4:
                raise SystemExit(f"{name} path differs from dense at N={n}: max abs error {err:.2e}")

    out: dict[str, float] = {f"build_ms_{k}_{n}": round(1000 * t, 2) for k, t in builds.items()}

    def infer(p):
        def f():
            with torch.no_grad():
                attend(q, k, v, p)

        return f

    for name, t in timed({name: infer(p) for name, p in [("full", None), *plans.items()]}, reps).items():
        out[f"infer_ms_{name}_{n}"] = round(1000 * t, 2)

    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))

    def train(p):
        def f():
            attend(qg, kg, vg, p).sum().backward()
            qg.grad = kg.grad = vg.grad = None

        return f

    paths = [("full", None), ("dense", dense), ("sparse", sparse)]
    for name, t in timed({name: train(p) for name, p in paths}, reps).items():
        out[f"train_ms_{name}_{n}"] = round(1000 * t, 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-flex", action="store_true", help="skip FlexAttention (it compiles on first use)")
    args = p.parse_args()

    result: dict[str, object] = {"heads": HEADS, "head_dim": HEAD_DIM, "radius": RADIUS, "global_tokens": GLOBALS}
    for n in args.sizes:
        timings = run_size(n, args.repeats, not args.no_flex)
        print(f"N={n}: {timings}", flush=True)
        result.update(timings)
    if 4096 in args.sizes:
        infer_paths = [k for k in ("sparse", "flex") if f"infer_ms_{k}_4096" in result]
        best = min(infer_paths, key=lambda k: result[f"infer_ms_{k}_4096"])
        result["infer_best_path_4096"] = best
        result["infer_speedup_4096"] = round(result["infer_ms_dense_4096"] / result[f"infer_ms_{best}_4096"], 2)
        result["train_speedup_4096"] = round(result["train_ms_dense_4096"] / result["train_ms_sparse_4096"], 2)
        # Mask build: a new batch's metadata (cold) vs the same metadata again (cached), through the PlanCache.
        mask = masks.local(radius=RADIUS) | masks.global_tokens()
        tokens = tokens_for(4096)
        cache = PlanCache()
        t0 = time.perf_counter()
        cache.get(mask, tokens, "sparse")
        result["mask_build_ms_cold"] = round(1000 * (time.perf_counter() - t0), 2)
        fetch = [0.0] * 50
        for i in range(50):
            t0 = time.perf_counter()
            cache.get(mask, tokens, "sparse")
            fetch[i] = time.perf_counter() - t0
        result["mask_fetch_ms_cached"] = round(1000 * statistics.median(fetch), 3)
        if "build_ms_flex_4096" in result:
            result["mask_build_ms_cold_flex"] = result["build_ms_flex_4096"]
    record("masks", result)


if __name__ == "__main__":
    main()
