"""Decision Transformer speed: one training step of ours vs Hugging Face's ``DecisionTransformerModel``, and a rollout
step with the rolling KV cache vs recomputing the window.

    pip install -e ".[compare]"          # transformers, for the comparison only
    python benchmarks/decision_speed.py  # CORL's sizes: K 20, width 128, 3 layers, 1 head, batch 64, Hopper's S/A

1. ``train_step_ratio_vs_hf``: the same batch (B windows of K steps), the same width, depth, heads, MLP ratio and
   activation (ReLU: Hugging Face's default and kzl's DT), dropout and K, each model in train mode with AdamW and
   gradient clipping; one step = forward, masked MSE of the actions, backward, clip, optimizer step. The two are timed
   alternately in one process (ours, theirs, ours, ...) and the ratio of the medians is reported (< 1: ours is
   faster).
2. ``rollout_cache_speedup``: ``omni.rollout``'s loop for E episodes at once, on a stand-in env with no physics and
   no episode ends: ``window`` re-runs the model over the last K steps at every step (CORL's evaluation), ``cache``
   feeds each step's new tokens to ``OmniModel.step`` over a rolling KV cache of K steps. Seconds per env step
   (median over repeats), window / cache.

Prints one JSON object last and appends it to ``benchmarks/results/decision_speed.jsonl``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import record  # noqa: E402

from omni.rollout import run_episodes  # noqa: E402
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
        act="relu",  # DecisionTransformerConfig's default activation (kzl's DT); CORL's is GELU
        masks=["dt"],
        mask_defs={"dt": f"causal() & causal(by='group', window={a.context})"},
    )
    return DecisionTransformer(trunk, state_dim=a.state_dim, act_dim=a.act_dim, max_timestep=1000, embed_dropout=0.1)


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
        activation_function="relu",  # its default, spelled out: both models run the same MLP
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
    # omni's training step uses torch's fused AdamW (OptimConfig.fused); Hugging Face's model gets the same optimizer
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-4, weight_decay=1e-4, fused=True)
    opt_hf = torch.optim.AdamW(hf.parameters(), lr=1e-4, weight_decay=1e-4, fused=True)
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


class EndlessEnv:
    """A stand-in vector env (random observations, no episode ends): the rollout loop's model calls alone."""

    def __init__(self, rows: int, state_dim: int) -> None:
        self.rows, self.state_dim = rows, state_dim
        self.rng = np.random.default_rng(0)

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict]:
        return self.rng.standard_normal((self.rows, self.state_dim)).astype(np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        obs, _ = self.reset()
        no = np.zeros(self.rows, dtype=bool)
        return obs, np.ones(self.rows), no, no, {}


def rollout_steps(a: argparse.Namespace) -> dict[str, Any]:
    """Milliseconds per env step of ``omni.rollout``'s loop for ``a.episodes`` rows, ``window`` vs ``cache``, over
    ``a.rollout_steps`` steps (the first K fill the window), alternating the two modes over several repeats."""
    torch.manual_seed(0)
    task = make_ours(a).eval()
    task.rl = {"context": a.context, "reward_scale": 0.001}
    targets = np.full(a.episodes, 3600.0)
    per_mode: dict[str, list[float]] = {"window": [], "cache": []}
    for _ in range(a.repeats):
        for mode in per_mode:
            env = EndlessEnv(a.episodes, a.state_dim)
            t0 = time.perf_counter()
            with torch.no_grad():
                run_episodes(task, env, targets, mode, a.context, 0.001, 0, a.rollout_steps, False)
            per_mode[mode].append((time.perf_counter() - t0) / a.rollout_steps)
    m_window, m_cache = statistics.median(per_mode["window"]), statistics.median(per_mode["cache"])
    return {
        "rollout_step_ms_window": round(1e3 * m_window, 3),
        "rollout_step_ms_cache": round(1e3 * m_cache, 3),
        "rollout_cache_speedup": round(m_window / m_cache, 3),
        "rollout_rows": a.episodes,
        "rollout_steps": a.rollout_steps,
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
    p.add_argument("--rollout_steps", type=int, default=300, help="env steps per rollout (Hopper's episodes: 1000)")
    p.add_argument("--repeats", type=int, default=3, help="rollouts per mode, alternated")
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
