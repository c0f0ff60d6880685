"""``omni rollout --ckpt_path CKPT --target 3600 [--target 1800 ...] --episodes 20``: evaluate a Decision
Transformer checkpoint in its Gymnasium environment. Writes ``rollouts.csv`` (one row per episode),
``summary.json`` and ``return_conditioning.png`` (target vs achieved, the dataset's best and mean marked) into
``--out`` (default: a ``rollout`` folder next to the checkpoint's run) and prints a table."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omni.rollout import check_targets, rollout

__all__ = ["main", "parse_target"]


def parse_target(text: str) -> float:
    """A ``--target`` value: a number; anything else raises ValueError naming ``--target``."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"--target: expected a number (a return such as 3600), got {text!r}") from None
    return check_targets(value, "--target")[0]


def _out_dir(ckpt: Path, out: str | None) -> Path:
    if out:
        return Path(out)
    run = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    return run / "rollout"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Entry of ``omni rollout``; returns the summary it writes."""
    from rich.console import Console
    from rich.table import Table

    from omni.checkpoints import load_task
    from omni.rl_plots import plot_return_conditioning
    from omni.tasks.decision import DecisionTransformer

    p = argparse.ArgumentParser(prog="omni rollout", description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt_path", required=True, help="a DecisionTransformer checkpoint (runs/.../last.ckpt)")
    p.add_argument("--target", action="append", default=None, help="a target return; repeat for several")
    p.add_argument("--episodes", type=int, default=20, help="episodes per target")
    p.add_argument("--mode", choices=["window", "cache", "recompute"], default="window")
    p.add_argument("--seed", type=int, default=0, help="episode i is reset with seed + i")
    p.add_argument("--env", default=None, help="Gymnasium id; default the dataset's")
    p.add_argument("--max_steps", type=int, default=None, help="cut episodes after this many steps")
    p.add_argument("--out", default=None, help="output folder (default: <run>/rollout)")
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    ckpt = Path(a.ckpt_path)
    if not ckpt.is_file():
        raise ValueError(f"--ckpt_path: expected a checkpoint file, found none at {ckpt}")
    targets = [parse_target(t) for t in (a.target or [])]
    task = load_task(DecisionTransformer, ckpt, map_location=a.device)
    if not targets:
        stats = task.rl.get("return_stats") or {}
        if "max" not in stats:
            raise ValueError("--target: expected at least one target return (the checkpoint knows no dataset max)")
        targets = [stats["max"]]
    result = rollout(
        task, targets, a.episodes, mode=a.mode, env_id=a.env, seed=a.seed, max_steps=a.max_steps, progress=True
    )
    out = _out_dir(ckpt, a.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "rollouts.csv"
    csv_path.unlink(missing_ok=True)
    result.write_csv(csv_path, {"mode": a.mode})
    summary = result.by_target()
    payload = {
        "checkpoint": str(ckpt),
        "env_id": a.env or task.rl.get("env_id"),
        "layout": task.layout,
        "mode": a.mode,
        "episodes": a.episodes,
        "dataset_returns": task.rl.get("return_stats"),
        "targets": {f"{t:g}": s for t, s in summary.items()},
    }
    (out / "summary.json").write_text(json.dumps(payload, indent=2) + "\n")
    if task.layout == "dt":
        plot_return_conditioning(summary, task.rl.get("return_stats"), out / "return_conditioning.png")
    table = Table(title=f"{payload['env_id']} · {task.layout} · {a.episodes} episodes per target · {a.mode}")
    for col in ("target", "return", "± std", "length", "normalised score"):
        table.add_column(col, justify="right")
    for t, s in summary.items():
        score = f"{s['score']:.1f}" if "score" in s else "—"
        table.add_row(f"{t:g}", f"{s['return']:.1f}", f"{s['return_std']:.1f}", f"{s['length']:.0f}", score)
    Console().print(table)
    print(f"rollouts: {csv_path}")
    return payload
