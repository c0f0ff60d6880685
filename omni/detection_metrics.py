"""nuScenes-style detection metrics on bird's-eye-view centres: mAP, mATE, mAVE, mAOE and an NDS-like score.

Boxes are rows ``(x, y, vx, vy, yaw)`` (metres, m/s, rad). As nuscenes-devkit does:

- **AP** per class and centre-distance threshold (0.5, 1, 2, 4 m): predictions of the class, over all scenes, in
  descending score; each is matched greedily to the nearest still-unmatched ground truth of its class in its scene
  if that centre lies closer than the threshold (a true positive), else it is a false positive. Precision
  ``tp / (tp + fp)`` at each prediction is interpolated at 101 recall points (0 past the highest recall reached,
  no monotone envelope, as the devkit's ``accumulate``); the points up to recall 0.1 are dropped and 0.1 is taken
  off precision (negatives to 0), then the mean is rescaled by 1 / 0.9 (the devkit's ``calc_ap``). mAP is the mean
  over classes and thresholds.
- **TP errors** at the 2 m threshold, per class: ATE the centre distance, AVE the L2 velocity error, AOE the
  smallest yaw difference in [0, π]. A class whose recall never passes 0.1 gets error 1 (the devkit's value). The
  devkit averages the running mean of the errors over recall bins; this module takes the plain mean over the
  class's true positives (the same when errors do not depend on score). mATE / mAVE / mAOE: means over classes.
- **NDS-like** = [5·mAP + (1 − min(1, mATE)) + (1 − min(1, mAVE)) + (1 − min(1, mAOE))] / 8: nuScenes' NDS with
  its three terms this simulator has a truth for (box size and attributes, ASE and AAE, are not predicted).

Classes without any ground truth in the evaluated scenes are left out of the means (nuScenes' classes always have
some); with none at all, every metric is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["DIST_THRESHOLDS", "DetectionAccumulator", "average_precision", "detection_metrics", "yaw_difference"]

DIST_THRESHOLDS = (0.5, 1.0, 2.0, 4.0)  # metres
TP_THRESHOLD = 2.0  # metres: where the true-positive errors are measured
MIN_RECALL = MIN_PRECISION = 0.1
RECALL_POINTS = 101


def yaw_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest absolute angle between headings ``a`` and ``b``, in [0, π]."""
    d = np.abs(np.asarray(a) - np.asarray(b)) % (2 * math.pi)
    return np.minimum(d, 2 * math.pi - d)


@dataclass
class _Matches:
    """One class at one threshold: per prediction in score order, whether it is a TP, and the TP errors."""

    tp: np.ndarray  # (K,) bool
    num_gt: int
    errors: np.ndarray  # (T, 3) ATE, AVE, AOE of the true positives


def _match(
    preds: list[tuple[int, float, np.ndarray]], gts: dict[int, np.ndarray], num_gt: int, threshold: float
) -> _Matches:
    """Greedy matching by score. ``preds``: (scene, score, box) of one class; ``gts``: scene -> (G, 5) boxes."""
    order = sorted(range(len(preds)), key=lambda k: -preds[k][1])
    taken = {scene: np.zeros(len(boxes), dtype=bool) for scene, boxes in gts.items()}
    tp = np.zeros(len(preds), dtype=bool)
    errors = []
    for rank, k in enumerate(order):
        scene, _, box = preds[k]
        boxes = gts.get(scene)
        if boxes is None or not len(boxes):
            continue
        dist = np.hypot(boxes[:, 0] - box[0], boxes[:, 1] - box[1])
        dist[taken[scene]] = np.inf
        j = int(np.argmin(dist))
        if dist[j] < threshold:
            taken[scene][j] = True
            tp[rank] = True
            vel = float(np.hypot(*(boxes[j, 2:4] - box[2:4])))
            errors.append((dist[j], vel, float(yaw_difference(boxes[j, 4], box[4]))))
    return _Matches(tp, num_gt, np.asarray(errors, dtype=np.float64).reshape(-1, 3))


def _precision_at_recalls(m: _Matches) -> tuple[np.ndarray, float]:
    """(101,) interpolated precision at recall 0, 0.01, ..., 1, and the highest recall reached."""
    if m.num_gt == 0 or len(m.tp) == 0:
        return np.zeros(RECALL_POINTS), 0.0
    tp = np.cumsum(m.tp)
    fp = np.cumsum(~m.tp)
    precision = tp / (tp + fp)
    recall = tp / m.num_gt
    grid = np.linspace(0.0, 1.0, RECALL_POINTS)
    return np.interp(grid, recall, precision, right=0.0), float(recall[-1])


def average_precision(m: _Matches) -> float:
    """nuscenes-devkit's ``calc_ap``: mean precision above recall 0.1, less 0.1, rescaled to [0, 1]."""
    prec, _ = _precision_at_recalls(m)
    prec = prec[round(100 * MIN_RECALL) + 1 :] - MIN_PRECISION
    return float(np.clip(prec, 0.0, None).mean() / (1.0 - MIN_PRECISION))


def detection_metrics(
    preds: Sequence[dict[str, np.ndarray]],
    gts: Sequence[dict[str, np.ndarray]],
    num_classes: int,
    thresholds: Sequence[float] = DIST_THRESHOLDS,
) -> dict[str, float]:
    """mAP, mATE, mAVE, mAOE, NDS and per-class AP (``AP_<class index>``) over a list of scenes.

    Args:
        preds: per scene ``{"class": (K,) int, "score": (K,) float, "box": (K, 5)}``.
        gts: per scene ``{"class": (G,) int, "box": (G, 5)}``; the same scenes in the same order.
        num_classes: classes 0 .. num_classes - 1.
        thresholds: centre-distance thresholds of the AP, metres; must include 2 m (the TP errors').
    """
    if len(preds) != len(gts):
        raise ValueError(f"preds: expected one entry per ground-truth scene ({len(gts)}), got {len(preds)}")
    if TP_THRESHOLD not in thresholds:
        raise ValueError(f"thresholds: expected to include {TP_THRESHOLD} m (the TP errors'), got {thresholds}")
    out: dict[str, float] = {}
    aps, tps = [], []
    for c in range(num_classes):
        cls_gts = {s: np.asarray(g["box"])[np.asarray(g["class"]) == c] for s, g in enumerate(gts)}
        num_gt = sum(len(b) for b in cls_gts.values())
        if num_gt == 0:
            continue
        cls_preds = [
            (s, float(score), np.asarray(box))
            for s, p in enumerate(preds)
            for cls, score, box in zip(p["class"], p["score"], p["box"], strict=True)
            if int(cls) == c
        ]
        class_aps = []
        for t in thresholds:
            m = _match(cls_preds, cls_gts, num_gt, t)
            class_aps.append(average_precision(m))
            if t == TP_THRESHOLD:
                _, max_recall = _precision_at_recalls(m)
                err = m.errors.mean(axis=0) if max_recall > MIN_RECALL and len(m.errors) else np.ones(3)
                tps.append(err)
        out[f"AP_{c}"] = float(np.mean(class_aps))
        aps.append(out[f"AP_{c}"])
    if not aps:
        return {k: math.nan for k in ("mAP", "mATE", "mAVE", "mAOE", "NDS")}
    tp = np.mean(np.asarray(tps), axis=0)
    out["mAP"] = float(np.mean(aps))
    out["mATE"], out["mAVE"], out["mAOE"] = (float(v) for v in tp)
    out["NDS"] = float((5 * out["mAP"] + np.sum(1 - np.minimum(1.0, tp))) / (5 + len(tp)))
    return out


class DetectionAccumulator:
    """Scenes gathered batch by batch (optionally under a key such as the condition), then ``compute``d."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.preds: dict[str, list[dict[str, np.ndarray]]] = {}
        self.gts: dict[str, list[dict[str, np.ndarray]]] = {}

    def add(self, key: str, pred: dict[str, np.ndarray], gt: dict[str, np.ndarray]) -> None:
        self.preds.setdefault(key, []).append(pred)
        self.gts.setdefault(key, []).append(gt)

    def compute(self, key: str) -> dict[str, float]:
        return detection_metrics(self.preds.get(key, []), self.gts.get(key, []), self.num_classes)

    def keys(self) -> list[str]:
        return sorted(self.preds)

    def reset(self) -> None:
        self.preds.clear()
        self.gts.clear()
