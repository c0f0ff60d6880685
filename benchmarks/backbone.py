"""Our trunk vs timm's VisionTransformer: same width, depth, heads, MLP ratio and patching, same batch.

    python benchmarks/backbone.py [--dim 192 --depth 12 --heads 3 --img 224 --patch 16 --batch 8 --steps 30]

Measures one forward + backward step (cross-entropy on random labels) for each model, alternating the two
models step by step in one process so that drift in the machine's speed hits both alike; reports the median.
Prints one JSON object last: ``ratio_vs_timm`` (ours / timm, < 1 means ours is faster), ``params_ours``,
``params_timm``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import record

from omni.heads import ClassificationHead
from omni.model import OmniModel
from omni.tokenizers import ImagePatchTokenizer
from omni.transformer import TransformerConfig


def build_ours(args: argparse.Namespace) -> torch.nn.Module:
    cfg = TransformerConfig(dim=args.dim, depth=args.depth, heads=args.heads, mlp_ratio=args.mlp_ratio)
    model = OmniModel(
        tokenizers={"image": ImagePatchTokenizer(args.dim, patch_size=args.patch, in_chans=3, img_size=args.img)},
        trunk=cfg,
        heads={"logits": ClassificationHead(args.dim, args.classes, pool="cls")},
        extra_tokens={"cls": 1},
    )

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model({"image": x})["logits"]

    return Wrapped()


def build_timm(args: argparse.Namespace) -> torch.nn.Module:
    return VisionTransformer(
        img_size=args.img,
        patch_size=args.patch,
        in_chans=3,
        num_classes=args.classes,
        embed_dim=args.dim,
        depth=args.depth,
        num_heads=args.heads,
        mlp_ratio=args.mlp_ratio,
        qkv_bias=True,
        class_token=True,
        global_pool="token",
    )


def step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    t0 = time.perf_counter()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, default=192)
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--heads", type=int, default=3)
    p.add_argument("--mlp-ratio", type=float, default=4.0)
    p.add_argument("--img", type=int, default=224)
    p.add_argument("--patch", type=int, default=16)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    args = p.parse_args()

    torch.manual_seed(0)
    ours, timm_vit = build_ours(args), build_timm(args)
    x = torch.randn(args.batch, 3, args.img, args.img)
    y = torch.randint(0, args.classes, (args.batch,))
    for _ in range(args.warmup):
        step(ours, x, y)
        step(timm_vit, x, y)
    t_ours, t_timm = [], []
    for i in range(args.steps):
        # Alternate which goes first so neither always runs on a warmer cache.
        if i % 2 == 0:
            t_ours.append(step(ours, x, y))
            t_timm.append(step(timm_vit, x, y))
        else:
            t_timm.append(step(timm_vit, x, y))
            t_ours.append(step(ours, x, y))
    med_ours, med_timm = statistics.median(t_ours), statistics.median(t_timm)
    params_ours = sum(p.numel() for p in ours.parameters())
    params_timm = sum(p.numel() for p in timm_vit.parameters())
    record(
        "backbone",
        {
            "config": {k: v for k, v in vars(args).items()},
            "step_ms_ours": round(1000 * med_ours, 2),
            "step_ms_timm": round(1000 * med_timm, 2),
            "ratio_vs_timm": round(med_ours / med_timm, 4),
            "params_ours": params_ours,
            "params_timm": params_timm,
            "params_rel_diff": round(abs(params_ours - params_timm) / params_timm, 6),
        },
    )


if __name__ == "__main__":
    main()
