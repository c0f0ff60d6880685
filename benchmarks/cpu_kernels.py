"""Two CPU kernel choices in the speech encoder, each side by side with the plain PyTorch call it replaces.

    python benchmarks/cpu_kernels.py [--threads 2]

1. ``ConvModule``'s depthwise convolution: ``nn.Conv1d`` over a (B, D, N) copy of the tokens (the textbook block)
   vs omni's 1 x k ``conv2d`` on the channels-last (B, D, 1, N) view of the (B, N, D) tokens. The whole module,
   forward + backward, digits-recognizer sizes (B 23, N 75 tokens, D 192, kernel 15); outputs must agree to 1e-6.
2. Attention under CPU bf16 autocast: the fused kernel in bf16 (what autocast picks) vs omni's ``sdpa``, which runs
   it in float32 with autocast off. A trunk-sized attention (B 20, 4 heads, N 42, 48 wide) between two linears,
   forward + backward; float32 without autocast as the third column.

Each is timed over 30 calls after 5 to warm up, 5 rounds interleaved, median. Prints one JSON object last.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import record

CALLS, WARMUP, ROUNDS = 30, 5, 5


def per_call_ms(fn: Callable[[], None]) -> float:
    for _ in range(WARMUP):
        fn()
    start = time.perf_counter()
    for _ in range(CALLS):
        fn()
    return (time.perf_counter() - start) / CALLS * 1e3


def interleaved(cases: dict[str, Callable[[], None]]) -> dict[str, float]:
    """Median ms per call of each case, the cases taking turns round after round."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(ROUNDS):
        for name, fn in cases.items():
            times[name].append(per_call_ms(fn))
    return {name: statistics.median(t) for name, t in times.items()}


def conv_module_cases() -> tuple[dict[str, Callable[[], None]], float]:
    import torch
    import torch.nn.functional as F

    from omni.tokenizers.audio import ConvModule

    torch.manual_seed(0)
    block = ConvModule(192, kernel=15)
    x = torch.randn(23, 75, 192, requires_grad=True)
    pad = torch.arange(75) < torch.randint(40, 76, (23, 1))

    def textbook(x: torch.Tensor) -> torch.Tensor:
        h = F.glu(block.pointwise_in(block.norm(x)), dim=-1) * pad[..., None]
        h = block.depthwise(h.transpose(1, 2)).transpose(1, 2)
        return x + block.pointwise_out(F.silu(block.mid_norm(h)))

    with torch.no_grad():
        diff = float((block(x, pad) - textbook(x)).abs().max())
    cases = {
        "conv1d": lambda: textbook(x).sum().backward(),
        "conv2d_channels_last": lambda: block(x, pad).sum().backward(),
    }
    return cases, diff


def attention_cases() -> dict[str, Callable[[], None]]:
    import torch
    import torch.nn.functional as F
    from einops import rearrange

    from omni.attention.kernels import sdpa

    torch.manual_seed(0)
    heads, width = 4, 48
    x = torch.randn(20, 42, heads * width, requires_grad=True)
    qkv, proj = torch.nn.Linear(heads * width, 3 * heads * width), torch.nn.Linear(heads * width, heads * width)
    mask = torch.ones(20, 1, 42, 42, dtype=torch.bool)

    def step(attention: Callable, autocast: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            q, k, v = rearrange(qkv(x), "b n (three h d) -> three b h n d", three=3, h=heads)
            y = proj(rearrange(attention(q, k, v, mask), "b h n d -> b n (h d)"))
        y.float().sum().backward()

    def fused(q, k, v, mask):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    return {
        "bf16_fused": lambda: step(fused, True),
        "bf16_omni_sdpa": lambda: step(sdpa, True),
        "float32": lambda: step(fused, False),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    a = parser.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    conv, diff = conv_module_cases()
    conv_ms = interleaved(conv)
    print(f"ConvModule fwd+bwd: conv1d {conv_ms['conv1d']:.2f} ms, channels-last conv2d "
          f"{conv_ms['conv2d_channels_last']:.2f} ms (max |diff| {diff:.1e})", flush=True)  # fmt: skip
    att_ms = interleaved(attention_cases())
    print(f"attention fwd+bwd: bf16 fused {att_ms['bf16_fused']:.2f} ms, omni sdpa under bf16 autocast "
          f"{att_ms['bf16_omni_sdpa']:.2f} ms, float32 {att_ms['float32']:.2f} ms", flush=True)  # fmt: skip
    result = {
        "threads": a.threads,
        **{f"conv_module_ms_{k}": round(v, 3) for k, v in conv_ms.items()},
        "conv_module_speedup": round(conv_ms["conv1d"] / conv_ms["conv2d_channels_last"], 3),
        "conv_module_max_abs_diff": diff,
        **{f"attention_ms_{k}": round(v, 3) for k, v in att_ms.items()},
        "attention_bf16_speedup": round(att_ms["bf16_fused"] / att_ms["bf16_omni_sdpa"], 3),
    }
    record("cpu_kernels", result)


if __name__ == "__main__":
    main()
