"""Pictures: training curves, confusion matrices and attention masks (PNG, headless)."""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: runs on CI and servers without a display
import matplotlib.pyplot as plt
import torch

__all__ = ["plot_confusion_matrix", "plot_masks", "plot_training_curves", "read_metrics_csv"]


def save_figure(fig: plt.Figure, out: str | Path, tight: bool = True) -> Path:
    """Write ``fig`` as a PNG at ``out`` (110 dpi; its folder made if missing) and close it; returns the path.
    ``tight`` lays it out tightly first (False: the caller has laid it out)."""
    if tight:
        fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def read_metrics_csv(path: str | Path) -> dict[str, list[tuple[float, float]]]:
    """Read Lightning's CSVLogger file into {metric: [(x, value), ...]}: x is the step for per-step metrics
    (``*_step``, and rows logged without an epoch such as learning rates) and the epoch for everything else."""
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key in ("epoch", "step") or value in ("", None):
                    continue
                x = row.get("epoch")
                if key.endswith("_step") or x in ("", None):
                    x = row.get("step")
                series[key].append((float(x or 0), float(value)))
    return dict(series)


def _family(key: str) -> str:
    """The panel a metric goes in: ``train/acc`` and ``val/acc`` share ``acc``; learning rates share one."""
    if key.startswith("lr-"):
        return "learning rate"
    return key.split("/", 1)[-1].removesuffix("_epoch").removesuffix("_step")


def plot_training_curves(metrics_csv: str | Path, out: str | Path) -> Path:
    """One panel per metric family (loss, accuracy, learning rate...), train and val curves together."""
    series = read_metrics_csv(metrics_csv)
    families: dict[str, list[str]] = defaultdict(list)
    for key in sorted(series):
        if key.startswith("test/") or key.endswith("_step"):
            continue  # test is one number (metrics.json); per-step values are noise next to the epoch curves
        families[_family(key)].append(key)
    n = max(1, len(families))
    fig, axes = plt.subplots(1, n, figsize=(4 * n, 3.2), squeeze=False)
    for ax, (name, keys) in zip(axes[0], sorted(families.items()), strict=False):
        for key in keys:
            xs, ys = zip(*series[key], strict=True)
            ax.plot(xs, ys, label=key.removesuffix("_epoch"), marker="." if len(xs) < 50 else None)
        ax.set_title(name)
        ax.set_xlabel("step" if name == "learning rate" else "epoch")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return save_figure(fig, out)


def plot_confusion_matrix(matrix: torch.Tensor, class_names: Sequence[str], out: str | Path) -> Path:
    """(C, C) counts, rows = true class, columns = predicted, annotated with counts."""
    m = matrix.detach().cpu().numpy()
    c = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * c, 0.8 + 0.45 * c))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(c), labels=list(class_names), rotation=90 if c > 12 else 0)
    ax.set_yticks(range(c), labels=list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if c <= 30:
        top = m.max() if m.size else 0
        for i in range(c):
            for j in range(c):
                if m[i, j]:
                    ax.text(
                        j,
                        i,
                        int(m[i, j]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if m[i, j] > top / 2 else "black",
                    )
    acc = m.trace() / max(1, m.sum())
    ax.set_title(f"confusion matrix (accuracy {acc:.4f})")
    return save_figure(fig, out)


def plot_masks(
    masks: Sequence[tuple[str, torch.Tensor]],
    modality: torch.Tensor,
    names: Sequence[str],
    out: str | Path,
    pad: torch.Tensor | None = None,
) -> Path:
    """Draw attention masks of one sequence side by side, the tokens' modalities coloured along both axes.

    Args:
        masks: [(title, (N, N) bool mask)], True = may attend (drawn dark).
        modality: (N,) long modality index of every token.
        names: the modality table's names (legend).
        out: PNG path.
        pad: (N,) bool, True where the token is real; padded tokens are marked grey.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    n = modality.numel()
    palette = plt.get_cmap("tab10").colors
    used = sorted(set(modality.tolist()))
    colors = torch.tensor([palette[i % 10] for i in range(len(names))])  # (M, 3)
    strip = colors[modality.cpu()]  # (N, 3)
    if pad is not None:
        strip[~pad.cpu()] = 0.85
    k = len(masks)
    fig = plt.figure(figsize=(5.2 * k, 5.6))
    band = max(1, n // 40)  # colour strip thickness in tokens
    for i, (title, m) in enumerate(masks):
        ax = fig.add_subplot(1, k, i + 1)
        ax.imshow(m.cpu().float().numpy(), cmap=ListedColormap(["white", "#222222"]), vmin=0, vmax=1,
                  extent=(0, n, n, 0), interpolation="nearest")  # fmt: skip
        ax.imshow(strip[None].numpy(), extent=(0, n, 0, -band), aspect="auto", interpolation="nearest")
        ax.imshow(strip[:, None].numpy(), extent=(-band, 0, n, 0), aspect="auto", interpolation="nearest")
        ax.set_xlim(-band, n)
        ax.set_ylim(n, -band)
        ax.set_xlabel("key token")
        ax.set_ylabel("query token")
        density = m.float().mean().item()
        ax.set_title(f"{title}\n{density:.1%} of pairs attend", fontsize=9)
    handles = [Patch(color=tuple(colors[i].tolist()), label=names[i]) for i in used]
    fig.legend(handles=handles, loc="lower center", ncol=min(8, len(handles)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return save_figure(fig, out, tight=False)


def plot_ctc_alignment(
    log_mel: torch.Tensor,
    log_probs: torch.Tensor,
    reference: str,
    out: str | Path,
    labels: Sequence[str] | None = None,
    blank: int = 0,
) -> Path:
    """One utterance: its log-mel spectrogram above its CTC posteriors over time, each token's best label marked.

    Args:
        log_mel: (M, F) the normalised log-mel (10 ms frames).
        log_probs: (N, V) the CTC head's log-probabilities per token (N tokens spread over the same time).
        reference: the transcript, shown as the title.
        labels: the symbol of every id (None: ids are shown).
        blank: the blank id (drawn, but not labelled).
    """
    m, f = log_mel.shape
    n, v = log_probs.shape
    seconds = f * 0.01
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6.0, seconds * 4), 5), sharex=True)
    top.imshow(log_mel.numpy(), origin="lower", aspect="auto", extent=(0, seconds, 0, m), cmap="magma")
    top.set_ylabel("mel bin")
    top.set_title(f"reference: {reference!r}")
    probs = log_probs.exp().T.numpy()  # (V, N)
    bottom.imshow(probs, origin="lower", aspect="auto", extent=(0, seconds, 0, v), cmap="Blues", vmin=0, vmax=1)
    best = log_probs.argmax(dim=-1).tolist()
    step = seconds / max(n, 1)
    for i, k in enumerate(best):
        if k != blank and (i == 0 or best[i - 1] != k):
            name = labels[k] if labels is not None and k < len(labels) else str(k)
            bottom.text((i + 0.5) * step, k + 0.5, "␣" if name == " " else name, ha="center", va="center", fontsize=8)
    bottom.set_ylabel("label id")
    bottom.set_xlabel("seconds")
    return save_figure(fig, out)
