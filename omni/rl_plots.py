"""Pictures of offline RL runs: the learning curve of normalised score and the return-conditioning plot (PNG)."""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless
import matplotlib.pyplot as plt
import numpy as np

from omni.viz import save_figure

__all__ = ["plot_return_conditioning", "plot_score_curve"]


def plot_score_curve(rollouts_csv: str | Path, out: str | Path) -> Path:
    """Mean normalised score (or return, without reference scores) per epoch, one line per target, from the
    callback's ``rollouts.csv``."""
    by: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    use_score = True
    with open(rollouts_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    use_score = all(r["normalized_score"] not in ("", None) for r in rows)
    for r in rows:
        value = float(r["normalized_score"] if use_score else r["return"])
        by[r["target"]][int(r["epoch"])].append(value)
    fig, ax = plt.subplots(figsize=(6, 4))
    for target, per_epoch in by.items():
        epochs = sorted(per_epoch)
        mean = np.array([np.mean(per_epoch[e]) for e in epochs])
        std = np.array([np.std(per_epoch[e]) for e in epochs])
        label = "behaviour cloning" if target == "nan" else f"target {float(target):g}"
        ax.plot(epochs, mean, marker="o", label=label)
        ax.fill_between(epochs, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("normalised score" if use_score else "return")
    ax.set_title("rollouts at validation")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, out)


def plot_return_conditioning(
    summary: Mapping[float, Mapping[str, float]], dataset_returns: Mapping[str, float] | None, out: str | Path
) -> Path:
    """Achieved return (mean ± std over episodes) against the target return, with the line achieved = target and
    the dataset's best and mean episode returns marked.

    Args:
        summary: {target: {"return": mean, "return_std": std}} (``RolloutResult.by_target``).
        dataset_returns: {"max", "mean", ...} of the training data's episode returns, or None.
        out: PNG to write.
    """
    targets = np.array(sorted(summary))
    mean = np.array([summary[t]["return"] for t in targets])
    std = np.array([summary[t]["return_std"] for t in targets])
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.errorbar(targets, mean, yerr=std, marker="o", capsize=3, label="achieved")
    lo, hi = float(min(targets.min(), mean.min())), float(max(targets.max(), mean.max()))
    ax.plot([lo, hi], [lo, hi], "k:", lw=1, label="achieved = target")
    if dataset_returns:
        ax.axhline(dataset_returns["max"], color="tab:green", ls="--", lw=1, label="dataset best")
        ax.axhline(dataset_returns["mean"], color="tab:red", ls="--", lw=1, label="dataset mean")
    ax.set_xlabel("target return")
    ax.set_ylabel("achieved return")
    ax.set_title("return conditioning")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out)
