"""Camera + radar fusion on the simulated corpus: the fused model (modality dropout) against camera-only and
radar-only models with the same trunk, data and budget, per seed, evaluated per condition and sensor set.

    python benchmarks/fusion.py                     # corpus if missing, 3 models x seeds 0 1 2 (6-12 min a run)
    python benchmarks/fusion.py --seeds 0 --models fusion fusion_camera
    python benchmarks/fusion.py --tiny              # a smoke run: tiny corpus and overlays, nothing recorded

1. Builds the corpus if missing (``omni data fusion --out ROOT --scenes N``); its scenes per second come from
   ``meta.json``.
2. For each model and seed: ``omni fit --config configs/<model>.yaml`` in its own process, tested on the ``last``
   checkpoint; ``train_wall_s`` is the whole command (validation and test included). Fits run with
   ``OMP_NUM_THREADS=2`` unless it is set (the benchmark runs alone on two cores; on cores shared with another job
   set it to 1: two threads there oversubscribe).
   The fused model is tested with both sensors, the camera alone and the radar alone (its ``eval_sensors``).
3. Means over seeds of mAP, mATE, mAVE, mAOE and NDS per (model, sensors, condition), and the issue's checks:
   fused mAP vs the best single-sensor model on clear and fog, fused mAVE vs camera-only, the fused model with a
   sensor removed vs that sensor's own model, and the loss from clear to fog.

Prints one JSON object last and appends it to ``benchmarks/results/fusion.jsonl`` (not with ``--tiny``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import record  # noqa: E402

from omni.data.fusion_sim import FusionCorpusSpec, build_fusion_corpus  # noqa: E402

MODELS = {"fusion": ["both", "camera", "radar"], "fusion_camera": ["camera"], "fusion_radar": ["radar"]}
CONDITIONS = ("clear", "fog", "night", "rain")
METRICS = ("mAP", "mATE", "mAVE", "mAOE", "NDS")


def omni() -> str:
    return str(Path(sys.executable).with_name("omni"))


def ensure_corpus(root: Path, scenes: int, shard_size: int) -> dict[str, Any]:
    """Build the corpus in ``root``, or finish it, or take it as it is; ``build_fusion_corpus`` refuses a folder
    that holds another plan (scene count, seed, shard size or simulator version) with a ``ValueError``."""
    spec = FusionCorpusSpec(scenes=scenes, shard_size=shard_size)
    return build_fusion_corpus(root, spec, progress=sys.stderr.isatty())


def reused(model: str, seed: int, runs: Path) -> dict[str, Any] | None:
    """A finished fit's record from its run directory (``--reuse``), or None where it did not finish.

    ``wall.json`` holds the whole command's wall time; a run written before that file existed gets the span from
    its ``config.yaml`` (written as training starts) to its ``metrics.json`` (after the test), a few seconds short
    of the command's (start-up), and says so in ``wall_from``."""
    run = runs / f"bench_{model}" / f"seed{seed}"
    if not (run / "metrics.json").is_file():
        return None
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    if (run / "wall.json").is_file():
        wall = json.loads((run / "wall.json").read_text())["train_wall_s"]
        return {"train_wall_s": wall, "reused": True, "metrics": metrics}
    span = (run / "metrics.json").stat().st_mtime - (run / "config.yaml").stat().st_mtime
    return {"train_wall_s": round(span, 1), "reused": True, "wall_from": "file times", "metrics": metrics}


def fit(model: str, seed: int, root: Path, runs: Path, tiny: bool) -> dict[str, Any]:
    name = f"bench_{model}"
    configs = ["--config", f"configs/{model}.yaml"] + (["--config", f"configs/{model}_tiny.yaml"] if tiny else [])
    cmd = [
        omni(), "fit", *configs,
        "--seed_everything", str(seed),
        "--data.init_args.root", str(root),
        "--trainer.logger.init_args.save_dir", str(runs),
        "--trainer.logger.init_args.name", name,
        "--trainer.logger.init_args.version", f"seed{seed}",
        "--trainer.enable_progress_bar", "false",
        "--test_checkpoint", "last",
    ]  # fmt: skip
    t0 = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}  # see the docstring
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"omni fit failed ({' '.join(cmd)}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    run = runs / name / f"seed{seed}"
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    (run / "wall.json").write_text(json.dumps({"train_wall_s": round(wall, 1)}))
    main = MODELS[model][0]
    print(f"{model:>14} seed {seed}: {main} mAP {metrics.get(f'test/{main}/mAP', float('nan')):.3f} "
          f"NDS {metrics.get(f'test/{main}/NDS', float('nan')):.3f} ({wall:.0f} s)", flush=True)  # fmt: skip
    return {"train_wall_s": round(wall, 1), "metrics": metrics}


def table(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """{model: {sensors: {condition or "all": {metric: mean over seeds}}}}"""
    out: dict[str, Any] = {}
    for model, seeds in runs.items():
        for sensors in MODELS[model]:
            for cond in ("all", *CONDITIONS):
                key = f"test/{sensors}" + ("" if cond == "all" else f"/{cond}")
                row = {}
                for m in METRICS:
                    values = [r["metrics"][f"{key}/{m}"] for r in seeds if f"{key}/{m}" in r["metrics"]]
                    if values:
                        row[m] = round(float(np.mean(values)), 4)
                out.setdefault(model, {}).setdefault(sensors, {})[cond] = row
    return out


def checks(t: dict[str, Any]) -> dict[str, Any]:
    """The issue's claims, from the table (mAP in points)."""

    def get(model: str, sensors: str, cond: str, metric: str) -> float:
        return t.get(model, {}).get(sensors, {}).get(cond, {}).get(metric, float("nan")) * (
            100 if metric == "mAP" else 1
        )

    out: dict[str, Any] = {}
    for cond in ("clear", "fog"):
        best = max(get("fusion_camera", "camera", cond, "mAP"), get("fusion_radar", "radar", cond, "mAP"))
        out[f"fused_minus_best_single_mAP_{cond}"] = round(get("fusion", "both", cond, "mAP") - best, 2)
    out["fused_mAVE_over_camera_mAVE"] = round(get("fusion", "both", "all", "mAVE") / get("fusion_camera", "camera",
                                                                                        "all", "mAVE"), 3)  # fmt: skip
    out["fused_camera_removed_minus_radar_only_mAP"] = round(
        get("fusion", "radar", "all", "mAP") - get("fusion_radar", "radar", "all", "mAP"), 2
    )
    out["fused_radar_removed_minus_camera_only_mAP"] = round(
        get("fusion", "camera", "all", "mAP") - get("fusion_camera", "camera", "all", "mAP"), 2
    )
    fused_loss = get("fusion", "both", "clear", "mAP") - get("fusion", "both", "fog", "mAP")
    camera_loss = get("fusion_camera", "camera", "clear", "mAP") - get("fusion_camera", "camera", "fog", "mAP")
    out["clear_to_fog_loss_fused"], out["clear_to_fog_loss_camera"] = round(fused_loss, 2), round(camera_loss, 2)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=None, help="corpus folder (default data/fusion; a temporary one with --tiny)")
    p.add_argument("--scenes", type=int, default=11_000, help="corpus size if it must be built")
    p.add_argument("--shard_size", type=int, default=500)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    p.add_argument("--tiny", action="store_true", help="smoke run: 24 scenes, the tiny overlays, nothing recorded")
    p.add_argument("--reuse", action="store_true",
                   help="take a (model, seed) whose run directory holds a finished fit instead of fitting it again "
                        "(an interrupted benchmark goes on; runs/bench_<model>/seed<k>)")  # fmt: skip
    a = p.parse_args(argv)
    tmp = tempfile.TemporaryDirectory() if a.tiny else None
    base = Path(tmp.name) if tmp else ROOT
    root = Path(a.root) if a.root else (base / "fusion" if a.tiny else ROOT / "data" / "fusion")
    scenes, shard = (24, 8) if a.tiny else (a.scenes, a.shard_size)
    meta = ensure_corpus(root, scenes, shard)
    runs_dir = base / "runs"
    runs: dict[str, list[dict[str, Any]]] = {}
    for model in a.models:
        for seed in a.seeds:
            done = reused(model, seed, runs_dir) if a.reuse else None
            if done is not None:
                print(f"{model:>14} seed {seed}: reused {runs_dir / f'bench_{model}' / f'seed{seed}'}", flush=True)
            runs.setdefault(model, []).append(done or fit(model, seed, root, runs_dir, a.tiny))
    t = table(runs)
    result = {
        "seeds": a.seeds,
        "scenes": meta["scenes"],
        "simulator": meta["simulator"],
        "scenes_per_second": meta.get("scenes_per_second"),
        "train_wall_s": {m: [r["train_wall_s"] for r in rs] for m, rs in runs.items()},
        "threads": int(os.environ.get("OMP_NUM_THREADS", "2")),
        "reused": {m: [s for s, r in zip(a.seeds, rs, strict=True) if r.get("reused")] for m, rs in runs.items()},
        "wall_from_file_times": {
            m: [s for s, r in zip(a.seeds, rs, strict=True) if "wall_from" in r] for m, rs in runs.items()
        },
        "results": t,
        "checks": checks(t) if set(a.models) == set(MODELS) else {},
        "tiny": a.tiny,
    }
    row = record("fusion", result, save=not a.tiny)
    if tmp is not None:
        tmp.cleanup()
    return row


if __name__ == "__main__":
    main()
