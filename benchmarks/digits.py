"""Digits accuracy: ``configs/digits.yaml`` trained once per seed, next to scikit-learn's SVC on the same split.

    python benchmarks/digits.py --seeds 0 1 2

Each seed runs ``omni fit --config configs/digits.yaml --seed_everything SEED`` in its own process (wall time is
what a user waits for, start-up and the final test included) and reads the run's ``metrics.json``. The data
split is fixed (stratified 80/20, ``split_seed`` 0; validation carved from the training part), so the seed only
changes initialisation, augmentation and shuffling. The anchor is ``SVC(gamma=0.001, C=10)`` fitted on exactly the
images our model trains on (``svc_accuracy``) and on the whole 80 % (``svc_accuracy_full_train``).

Prints one JSON object last: ``accuracy`` and ``wall_s`` per seed, ``accuracy_mean``, ``svc_accuracy``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.svm import SVC

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import record  # noqa: E402

from omni.data import digits_splits  # noqa: E402


def svc_accuracy(train_parts: list[str]) -> float:
    splits = digits_splits(split_seed=0, val_fraction=0.1, seed=0)
    x = np.concatenate([splits[p][0] for p in train_parts]).reshape(-1, 64)
    y = np.concatenate([splits[p][1] for p in train_parts])
    clf = SVC(gamma=0.001, C=10).fit(x, y)
    x_test, y_test = splits["test"]
    return float((clf.predict(x_test.reshape(-1, 64)) == y_test).mean())


def run_seed(config: str, seed: int, extra: list[str]) -> tuple[float, float, str]:
    omni = Path(sys.executable).with_name("omni")
    cmd = [str(omni), "fit", "--config", config, "--seed_everything", str(seed)]
    cmd += ["--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.name", f"bench_digits_seed{seed}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd + extra, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"seed {seed}: omni fit failed with exit code {proc.returncode}")
    run_dir = re.findall(r"run directory: (\S+)", proc.stdout)[-1]
    metrics = json.loads((ROOT / run_dir / "metrics.json").read_text())["metrics"]
    return metrics["test/acc"], wall, run_dir


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--config", default="configs/digits.yaml")
    p.add_argument("extra", nargs="*", help="extra `omni fit` arguments, after --")
    args = p.parse_args()

    accs, walls, dirs = [], [], []
    for seed in args.seeds:
        acc, wall, run_dir = run_seed(args.config, seed, args.extra)
        print(f"seed {seed}: test accuracy {acc:.4f} in {wall:.1f} s ({run_dir})", flush=True)
        accs.append(acc)
        walls.append(wall)
        dirs.append(run_dir)
    record(
        "digits",
        {
            "config": args.config,
            "extra_args": args.extra,
            "seeds": args.seeds,
            "accuracy": [round(a, 4) for a in accs],
            "accuracy_mean": round(statistics.mean(accs), 4),
            "wall_s": [round(w, 1) for w in walls],
            "svc_accuracy": round(svc_accuracy(["train"]), 4),
            "svc_accuracy_full_train": round(svc_accuracy(["train", "val"]), 4),
            "run_dirs": dirs,
        },
    )


if __name__ == "__main__":
    main()
