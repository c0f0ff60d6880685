"""Decision Transformer speed: one training step of ours vs Hugging Face's ``DecisionTransformerModel``, and a rollout
step with the rolling KV cache vs recomputing the window.

    pip install -e ".[compare]"          # transformers, for the comparison only
    python benchmarks/decision_speed.py  # CORL's sizes: K 20, width 128, 3 layers, 1 head, batch 64, Hopper's S/A

1. ``train_step_ratio_vs_hf``: the same batch (B windows of K steps), the same width, depth, heads, MLP ratio, dropout
   and K, each model in train mode with AdamW and gradient clipping; one step = forward, masked MSE of the actions,
   backward, clip, optimizer step. The two are timed alternately in one process (ours, theirs, ours, ...) and the
   ratio of the medians is reported (< 1: ours is faster).
2. ``rollout_cache_speedup``: the policy's work per env step for E episodes at once, deep into an episode (t >= K):
   ``window`` re-runs the model over the last K steps (CORL's evaluation), ``cache`` feeds the new step's tokens to
   ``OmniModel.step`` over a rolling KV cache of K steps. Median seconds per env step, window / cache.

Prints one JSON object last and appends it to ``benchmarks/results/decision_speed.jsonl``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import record  # noqa: E402

from omni.tasks.decision import DecisionTransformer  # noqa: E402
from omni.transformer import TransformerConfig  # noqa: E402


def make_ours(a: argparse.Namespace) -> DecisionTransformer:
    trunk = TransformerConfig(
        dim=a.dim,
        depth=a.depth,
        heads=a.heads,
        dropout=0.1,
        attn_dropout=0.1,
        mlp_dropout=0.0,  # GPT-2's MLP, as Hugging Face's and CORL's DT: no dropout on the hidden units
        masks=["dt"],
        mask_defs={"dt": f"causal() & causal(by='group', window={a.context})"},
    )
    return DecisionTransformer(trunk, state_dim=a.state_dim, act_dim=a.act_dim, max_timestep=1000)


def make_hf(a: argparse.Namespace) -> torch.nn.Module:
    try:
        from transformers import DecisionTransformerConfig, DecisionTransformerModel
    except ImportError as e:
        raise SystemExit(
            'transformers: expected the benchmark-only extra (pip install -e ".[compare]"), got none'
        ) from e
    cfg = DecisionTransformerConfig(
        state_dim=a.state_dim,
        act_dim=a.act_dim,
        hidden_size=a.dim,
        n_layer=a.depth,
        n_head=a.heads,
        n_inner=4 * a.dim,
        max_ep_len=1000,
        n_positions=3 * a.context,
        action_tanh=True,
        resid_pdrop=0.1,
        embd_pdrop=0.1,
        attn_pdrop=0.1,
    )
    return DecisionTransformerModel(cfg)


def batch(a: argparse.Namespace, g: torch.Generator) -> dict[str, torch.Tensor]:
    b, k = a.batch_size, a.context
    mask = torch.ones(b, k, dtype=torch.bool)
    mask[: b // 4, k // 2 :] = False  # a quarter of the windows run past their episode's end, as in training
    start = torch.randint(0, 900, (b, 1), generator=g)
    return {
        "returns_to_go": torch.rand(b, k, 1, generator=g) * 3.6,
        "states": torch.randn(b, k, a.state_dim, generator=g),
        "actions": torch.rand(b, k, a.act_dim, generator=g) * 2 - 1,
        "timesteps": start + torch.arange(k),
        "mask": mask,
    }


def step_ours(task: DecisionTransformer, opt: torch.optim.Optimizer, traj: dict[str, torch.Tensor]) -> None:
    opt.zero_grad(set_to_none=True)
    batch_ = {"trajectory": traj}
    loss = task.loss(task(task.model_inputs(batch_)), batch_, "train")
    loss.backward()
    torch.nn.utils.clip_grad_norm_(task.parameters(), 0.25)
    opt.step()


def step_hf(model: torch.nn.Module, opt: torch.optim.Optimizer, traj: dict[str, torch.Tensor]) -> None:
    opt.zero_grad(set_to_none=True)
    mask = traj["mask"]
    out = model(
        states=traj["states"],
        actions=traj["actions"],
        rewards=torch.zeros_like(traj["returns_to_go"]),
        returns_to_go=traj["returns_to_go"],
        timesteps=traj["timesteps"],
        attention_mask=mask.long(),
        return_dict=True,
    )
    loss = ((out.action_preds - traj["actions"]) ** 2)[mask].mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
    opt.step()


def train_steps(a: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    ours, hf = make_ours(a).train(), make_hf(a).train()
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-4, weight_decay=1e-4)
    opt_hf = torch.optim.AdamW(hf.parameters(), lr=1e-4, weight_decay=1e-4)
    traj = batch(a, torch.Generator().manual_seed(0))
    for _ in range(a.warmup):
        step_ours(ours, opt_ours, traj)
        step_hf(hf, opt_hf, traj)
    t_ours, t_hf = [], []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        step_ours(ours, opt_ours, traj)
        t1 = time.perf_counter()
        step_hf(hf, opt_hf, traj)
        t2 = time.perf_counter()
        t_ours.append(t1 - t0)
        t_hf.append(t2 - t1)
    m_ours, m_hf = statistics.median(t_ours), statistics.median(t_hf)
    return {
        "train_step_ms_ours": round(1e3 * m_ours, 3),
        "train_step_ms_hf": round(1e3 * m_hf, 3),
        "train_step_ratio_vs_hf": round(m_ours / m_hf, 3),
        "params_ours": sum(p.numel() for p in ours.parameters()),
        "params_hf": sum(p.numel() for p in hf.parameters()),
    }


@torch.no_grad()
def rollout_steps(a: argparse.Namespace) -> dict[str, Any]:
    """Seconds per env step of the policy for ``a.episodes`` rows at timesteps K .. K + steps (the window is full)."""
    torch.manual_seed(0)
    task = make_ours(a).eval()
    tok = task.tokenizer
    rows, k, horizon = a.episodes, a.context, a.context + a.rollout_steps
    g = torch.Generator().manual_seed(1)
    states = torch.randn(rows, horizon, a.state_dim, generator=g)
    actions = torch.zeros(rows, horizon, a.act_dim)
    rtg = torch.full((rows, horizon, 1), 3.6)
    before_action = tok.tokens_per_step - 1

    def window(lo: int, hi: int) -> dict[str, Any]:
        steps = torch.arange(lo, hi)[None].expand(rows, -1)
        return {"returns_to_go": rtg[:, lo:hi], "states": states[:, lo:hi], "actions": actions[:, lo:hi],
                "timesteps": steps}  # fmt: skip

    def by_window(t: int) -> None:
        pred = task({"trajectory": window(max(0, t + 1 - k), t + 1)})["actions"][:, -1]
        actions[:, t] = task.head.act(pred)

    cache = task.model.start_decoding(window=k)

    def by_cache(t: int) -> None:
        tokens, _ = task.model.tokenize({"trajectory": window(t, t + 1)})
        out = task.model.step(tokens[0:before_action], cache)["output"].tokens.x
        actions[:, t] = task.head.act(task.head(out[:, -1:])[:, 0])
        tokens, _ = task.model.tokenize({"trajectory": window(t, t + 1)})
        task.model.step(tokens[before_action:], cache)

    for t in range(k):  # fill the cache; warm both paths up
        by_cache(t)
        by_window(t)
    t_window, t_cache = [], []
    for t in range(k, horizon):
        t0 = time.perf_counter()
        by_window(t)
        t1 = time.perf_counter()
        by_cache(t)
        t2 = time.perf_counter()
        t_window.append(t1 - t0)
        t_cache.append(t2 - t1)
    m_window, m_cache = statistics.median(t_window), statistics.median(t_cache)
    return {
        "rollout_step_ms_window": round(1e3 * m_window, 3),
        "rollout_step_ms_cache": round(1e3 * m_cache, 3),
        "rollout_cache_speedup": round(m_window / m_cache, 3),
        "rollout_rows": rows,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--heads", type=int, default=1)
    p.add_argument("--context", type=int, default=20, help="K steps per window")
    p.add_argument("--state_dim", type=int, default=11, help="Hopper's")
    p.add_argument("--act_dim", type=int, default=3, help="Hopper's")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--steps", type=int, default=100, help="timed training steps per model")
    p.add_argument("--episodes", type=int, default=10, help="rollout rows stepped at once")
    p.add_argument("--rollout_steps", type=int, default=200, help="timed env steps per mode")
    p.add_argument("--no_save", action="store_true", help="print only (a smoke run)")
    a = p.parse_args()
    result = {
        "sizes": {k: getattr(a, k) for k in ("dim", "depth", "heads", "context", "batch_size", "state_dim", "act_dim")},
        **train_steps(a),
        **rollout_steps(a),
    }
    record("decision_speed", result, save=not a.no_save)


if __name__ == "__main__":
    main()
