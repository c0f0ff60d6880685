"""Offline RL on datasets made here: the Decision Transformer against behaviour cloning (the same trunk, tokenizer and
budget, returns left out), per D4RL tier and seed, in normalised score.

    python benchmarks/decision.py --env Hopper-v5                       # 4 tiers x {dt, bc} x seeds 0 1 2
    python benchmarks/decision.py --env Hopper-v5 --tier medium --seeds 0   # a part of it
    python benchmarks/decision.py --env HalfCheetah-v5                  # the same commands, another env
    python benchmarks/decision.py --env Hopper-v5 --resume              # after an interruption: finished runs reused

1. Builds the datasets if missing (``omni data rl --env ENV --out ROOT``).
2. For every tier, layout and seed: ``omni fit --config configs/{dt,bc}_hopper.yaml`` on that tier's dataset (state
   and action sizes and target returns set from the dataset for other envs) in its own process; ``train_wall_s`` is
   the whole command (validation rollouts and the test's rollouts, >= 10 episodes per target, included);
   ``fit_wall_s`` the training alone (validation rollouts included, the test's not). The score
   of a run is the test's normalised score at the first target.
3. The dataset's own mean normalised return per tier, from its episodes.
4. Return conditioning on ``medium-expert``: every DT checkpoint of that tier rolled out (``omni rollout``'s code)
   at three targets between the dataset's median and maximum return; the achieved returns, averaged over seeds,
   should rise with the target.

Each finished run leaves ``bench_run.json`` in its run directory (its command, the config's sha256, the thread
count, its result); ``--resume`` reads those back instead of training again. Prints one JSON object last and appends
it to ``benchmarks/results/decision.jsonl``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import record  # noqa: E402

from omni.data.rl_readers import load_episodes  # noqa: E402

TIERS = ("medium", "medium-replay", "medium-expert", "expert")
HOPPER_TARGETS = (3600.0, 1800.0)  # CORL's hopper targets, for D4RL's hopper (expert 3234)


def dataset_id(env: str, tier: str) -> str:
    return f"omni/{env.lower()}/{tier}-v0"


def ensure_datasets(env: str, root: Path, tiers: list[str]) -> None:
    if all((root / dataset_id(env, t)).exists() for t in tiers):
        return
    print(f"building the {env} datasets in {root}", flush=True)
    omni = str(Path(sys.executable).with_name("omni"))
    subprocess.run([omni, "data", "rl", "--env", env, "--out", str(root)], cwd=ROOT, check=True)


def dataset_facts(env: str, tier: str, root: Path) -> dict[str, Any]:
    eps = load_episodes(dataset_id(env, tier), root=root)
    returns = eps.returns
    return {
        "state_dim": int(np.prod(eps.state_shape)),
        "act_dim": int(eps.num_actions if eps.discrete else np.prod(eps.action_shape)),
        "episodes": len(eps),
        "transitions": int(eps.lengths.sum()),
        "return_mean": float(returns.mean()),
        "return_median": float(np.median(returns)),
        "return_max": float(returns.max()),
        "score_mean": float(eps.normalized_score(returns).mean()),
        "ref_min_score": eps.ref_min_score,
        "ref_max_score": eps.ref_max_score,
    }


def targets_for(env: str, facts: dict[str, Any]) -> list[float]:
    """CORL's hopper targets for Hopper; elsewhere the same ratios to the expert's return (1.1x and 0.55x)."""
    if env.lower().startswith("hopper"):
        return list(HOPPER_TARGETS)
    top = float(facts["ref_max_score"])
    return [round(1.1 * top), round(0.55 * top)]


def config_digest(layout: str) -> str:
    """sha256 of the config file a run trains with (``--resume`` reuses a run only if it is unchanged)."""
    return hashlib.sha256((ROOT / "configs" / f"{layout}_hopper.yaml").read_bytes()).hexdigest()


def rollout_every(layout: str) -> int:
    """The config's validation-rollout period in epochs (the benchmark overrides targets and test episodes only)."""
    import yaml

    config = yaml.safe_load((ROOT / "configs" / f"{layout}_hopper.yaml").read_text())
    for cb in config["trainer"].get("callbacks") or []:
        if cb["class_path"].endswith("RolloutCallback"):
            return int(cb["init_args"].get("every_n_epochs", 1))
    raise SystemExit(f"configs/{layout}_hopper.yaml: expected a RolloutCallback in trainer.callbacks, found none")


def checkpoint_choice(layout: str) -> str:
    """How the config picks the tested checkpoint: ``last``, or ``best by val/score`` (the validation rollouts, an
    online choice: the test plays other episodes) or ``best by val/loss``."""
    import yaml

    config = yaml.safe_load((ROOT / "configs" / f"{layout}_hopper.yaml").read_text())
    if config.get("test_checkpoint", "best") == "last":
        return "last"
    return f"best by val/{config['model']['init_args'].get('select_by', 'loss')}"


def fit(
    env: str, tier: str, layout: str, seed: int, root: Path, facts: dict[str, Any], episodes: int, resume: bool = False
) -> dict:
    name = f"bench_{env.lower()}_{tier}_{layout}"
    run_dir = ROOT / "runs" / name / f"seed{seed}"
    targets = targets_for(env, facts)
    every = rollout_every(layout)
    callback = {
        "class_path": "omni.tasks.rollouts.RolloutCallback",
        "init_args": {"targets": targets, "test_episodes": episodes, "every_n_epochs": every, "mode": "window"},
    }
    cmd = [
        str(Path(sys.executable).with_name("omni")), "fit",
        "--config", f"configs/{layout}_hopper.yaml",
        "--seed_everything", str(seed),
        "--data.init_args.dataset", dataset_id(env, tier),
        "--data.init_args.root", str(root),
        "--model.init_args.state_dim", str(facts["state_dim"]),
        "--model.init_args.act_dim", str(facts["act_dim"]),
        "--trainer.callbacks", json.dumps([callback]),
        "--trainer.logger.init_args.name", name,
        "--trainer.logger.init_args.version", f"seed{seed}",
        "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    key = {"cmd": cmd[1:], "config_sha256": config_digest(layout), "threads": os.environ.get("OMP_NUM_THREADS")}
    done = run_dir / "bench_run.json"
    if resume and done.is_file():
        prior = json.loads(done.read_text())
        if prior["key"] == key:
            print(
                f"{tier:>14} {layout} seed {seed}: score {prior['result']['score']:.1f}  (reused: {done})", flush=True
            )
            return prior["result"]
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run: no rows of an earlier one in its CSVs and plots
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"omni fit failed ({' '.join(cmd)}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    report = json.loads((run_dir / "metrics.json").read_text())
    metrics, fit_wall = report["metrics"], report.get("fit_wall_s")
    score = metrics.get("test/score")
    val = validation_scores(run_dir)
    print(f"{tier:>14} {layout} seed {seed}: score {score:.1f}  ({wall:.0f} s, fit {fit_wall} s)", flush=True)
    result = {"score": score, "train_wall_s": round(wall, 1), "fit_wall_s": fit_wall,
              "run_dir": str(run_dir.relative_to(ROOT)), "checkpoint": report.get("checkpoint"),
              "tested_epoch": checkpoint_epoch(report.get("checkpoint")), "val_scores": val,
              "metrics": metrics}  # fmt: skip
    done.write_text(json.dumps({"key": key, "result": result}))  # what --resume reads back
    return result


def checkpoint_epoch(checkpoint: str | None) -> int | None:
    """The (zero-based) epoch a checkpoint was saved at; ``metrics.json``'s ``epoch`` is the trainer's at test."""
    if not checkpoint:
        return None
    import torch

    return int(torch.load(ROOT / checkpoint, map_location="cpu", weights_only=True)["epoch"])


def validation_scores(run_dir: Path) -> dict[str, float]:
    """{epoch: validation rollout score} of a run (``metrics.csv``): how the tested checkpoint was chosen, and what
    the last epoch scored on the validation episodes."""
    import csv

    with (run_dir / "metrics.csv").open() as f:
        return {r["epoch"]: round(float(r["val/score"]), 2) for r in csv.DictReader(f) if r.get("val/score")}


def conditioning(checkpoints: list[str], facts: dict[str, Any], episodes: int) -> dict[str, Any]:
    """Achieved return at three targets between the dataset's median and max, averaged over the given checkpoints
    (each run's tested one)."""
    from omni.checkpoints import load_task
    from omni.rollout import rollout
    from omni.tasks.decision import DecisionTransformer

    lo, hi = facts["return_median"], facts["return_max"]
    targets = [round(lo), round((lo + hi) / 2), round(hi)]
    achieved = []
    for ckpt in checkpoints:
        task = load_task(DecisionTransformer, ROOT / ckpt)
        result = rollout(task, targets, episodes, mode="window", seed=10_000)
        achieved.append([result.by_target()[float(t)]["return"] for t in targets])
    mean = np.mean(achieved, axis=0)
    return {
        "targets": targets,
        "achieved_return": [round(float(x), 1) for x in mean],
        "per_seed": [[round(float(x), 1) for x in row] for row in achieved],
        "rises": bool(np.all(np.diff(mean) > 0)),
    }


def summary(row: dict[str, Any], layouts: list[str]) -> dict[str, float]:
    """{layout: mean score over seeds, "dataset": the dataset's mean normalised return} of one tier."""
    return {k: row[k]["score_mean"] for k in layouts} | {"dataset": round(row["dataset"]["score_mean"], 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="Hopper-v5")
    p.add_argument("--root", default="data/rl", help="the datasets' root (MINARI_DATASETS_PATH)")
    p.add_argument("--tier", nargs="+", default=list(TIERS), choices=TIERS)
    p.add_argument("--layouts", nargs="+", default=["dt", "bc"], choices=["dt", "bc"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--episodes", type=int, default=10, help="test episodes per target and seed")
    p.add_argument("--no_save", action="store_true", help="print only (a smoke run)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="reuse runs an interrupted invocation finished (same command, config file and thread count)",
    )
    a = p.parse_args()
    root = (ROOT / a.root).resolve()
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    ensure_datasets(a.env, root, a.tier)
    tiers: dict[str, Any] = {}
    for tier in a.tier:
        facts = dataset_facts(a.env, tier, root)
        row: dict[str, Any] = {"dataset": facts, "runs": {}}
        for layout in a.layouts:
            runs = [fit(a.env, tier, layout, s, root, facts, a.episodes, a.resume) for s in a.seeds]
            scores = [r["score"] for r in runs]
            row["runs"][layout] = runs
            row[layout] = {"score_mean": round(float(np.mean(scores)), 2), "score_std": round(float(np.std(scores)), 2),
                           "scores": scores, "train_wall_s_max": max(r["train_wall_s"] for r in runs)}  # fmt: skip
        if "dt" in row and "bc" in row:
            row["dt_ge_bc"] = row["dt"]["score_mean"] >= row["bc"]["score_mean"]
        if "dt" in row:
            row["dt_ge_dataset"] = row["dt"]["score_mean"] >= facts["score_mean"]
            if tier == "medium-expert":
                tested = [r.get("checkpoint") or f"{r['run_dir']}/checkpoints/last.ckpt" for r in row["runs"]["dt"]]
                row["conditioning"] = conditioning(tested, facts, a.episodes)
        for layout in a.layouts:  # keep the JSON line short: the per-run metrics stay in the run directories
            for r in row["runs"][layout]:
                r.pop("metrics", None)
        tiers[tier] = row
    walls = [r["train_wall_s"] for t in tiers.values() for lay in a.layouts for r in t["runs"][lay]]
    fit_walls = [r.get("fit_wall_s") or 0.0 for t in tiers.values() for lay in a.layouts for r in t["runs"][lay]]
    result = {
        "env": a.env,
        "seeds": a.seeds,
        "episodes_per_target": a.episodes,
        "tiers": tiers,
        "checkpoint_choice": {lay: checkpoint_choice(lay) for lay in a.layouts},
        "train_wall_s_max": max(walls),
        "fit_wall_s_max": max(fit_walls),
        "summary": {t: summary(row, a.layouts) for t, row in tiers.items()},
    }
    record("decision", result, save=not a.no_save)


if __name__ == "__main__":
    main()
