"""nuScenes-style detection metrics on cases worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from omni.detection_metrics import detection_metrics, yaw_difference


def scene(cls, boxes, scores=None) -> dict[str, np.ndarray]:
    out = {"class": np.asarray(cls, dtype=np.int64), "box": np.asarray(boxes, dtype=np.float64).reshape(-1, 5)}
    if scores is not None:
        out["score"] = np.asarray(scores, dtype=np.float64)
    return out


# One class, three objects on a line ahead; four predictions in score order:
#   A 0.9 at 0.3 m from GT1, B 0.8 10 m from everything, C 0.7 at 0.8 m from GT2, D 0.6 at 3 m from GT3.
GT = scene([0, 0, 0], [[10, 0, 1, 0, 0], [20, 0, 0, 0, 3.0], [30, 0, 0, 0, 0]])
PRED = scene(
    [0, 0, 0, 0],
    [[10.3, 0, 1, 1, math.pi / 2], [40, 0, 0, 0, 0], [20, 0.8, 3, 4, -3.0], [30, 3, 0, 0, 0]],
    [0.9, 0.8, 0.7, 0.6],
)


def test_hand_worked_ap_tp_errors_and_nds() -> None:
    # Precision is interpolated at recall r = i / 100; points i <= 10 are dropped, and each AP is
    # sum_{i=11..100} max(0, p_i - 0.1) / 90 / 0.9. With 3 objects, recall steps at 1/3 and 2/3 (never on the grid).
    # 0.5 m: A TP, B C D FP -> precision 1 up to recall 1/3 (i = 11..33: 23 points), 0 after:
    #        AP = 23 * 0.9 / 81 = 0.255556
    # 1 m:   A TP, B FP, C TP, D FP -> (recall, precision) = (1/3, 1), (1/3, 1/2), (2/3, 2/3), (2/3, 1/2).
    #        i = 11..33: 1; i = 34..66 on the segment (1/3, 1/2)-(2/3, 2/3): 0.5 + 0.5 (r - 1/3), whose sum over
    #        33 points is 16.5 + 0.5 * (16.5 - 11) = 19.25; i > 66: 0.
    #        AP = (23 * 0.9 + 19.25 - 33 * 0.1) / 81 = 36.65 / 81 = 0.452469
    # 2 m:   the same matches (D is 3 m away): 0.452469
    # 4 m:   D is a TP too: the last point is (1, 3/4); i = 67..100 on (2/3, 2/3)-(1, 3/4): 2/3 + 0.25 (r - 2/3),
    #        summing to 34 * 2/3 + 0.25 * (28.39 - 22.6667) = 24.0975.
    #        AP = (20.7 + 15.95 + 24.0975 - 34 * 0.1) / 81 = 57.3475 / 81 = 0.707994
    # mAP = (0.255556 + 0.452469 + 0.452469 + 0.707994) / 4 = 0.467122
    # TP errors at 2 m, over A and C: ATE (0.3 + 0.8) / 2 = 0.55; AVE (|(0, 1)| + |(3, 4)|) / 2 = (1 + 5) / 2 = 3;
    #        AOE (pi/2 + (2 pi - 6)) / 2 = (1.570796 + 0.283185) / 2 = 0.926991.
    # NDS-like = (5 * 0.467122 + (1 - 0.55) + (1 - 1) + (1 - 0.926991)) / 8 = 2.858619 / 8 = 0.357327
    m = detection_metrics([PRED], [GT], num_classes=1)
    assert m["mAP"] == pytest.approx(0.467122, abs=1e-5)
    assert m["mATE"] == pytest.approx(0.55)
    assert m["mAVE"] == pytest.approx(3.0)
    assert m["mAOE"] == pytest.approx(0.926991, abs=1e-6)
    assert m["NDS"] == pytest.approx(0.357327, abs=1e-5)


def test_perfect_and_empty_predictions() -> None:
    # Every object found exactly, first: precision 1 at every recall -> AP 1, errors 0, NDS 1.
    perfect = scene(GT["class"], GT["box"], [0.9, 0.8, 0.7])
    m = detection_metrics([perfect], [GT], num_classes=1)
    assert m["mAP"] == pytest.approx(1.0) and m["NDS"] == pytest.approx(1.0)
    assert m["mATE"] == m["mAVE"] == m["mAOE"] == 0.0
    # Nothing predicted: AP 0, and recall never passes 0.1, so every TP error is 1 (the devkit's value): NDS 0.
    m = detection_metrics([scene([], [], [])], [GT], num_classes=1)
    assert m["mAP"] == 0.0 and m["mATE"] == 1.0 and m["NDS"] == 0.0


def test_greedy_by_score_classes_and_scenes_are_separate() -> None:
    # Scene 0: one car at (10, 0). The 0.9 prediction 1.5 m away takes it at 2 m and 4 m; the 0.5 one that sits
    # exactly on it comes second and is a FP there (greedy by score, not by distance).
    # 0.5 m and 1 m: only the 0.5 one matches: (recall, precision) = (0, 0), (1, 1/2) -> p(r) = r / 2 on the grid;
    #   sum_{i=21..100} (0.005 i - 0.1) = 24.2 - 8 = 16.2 -> AP = 16.2 / 81 = 0.2.
    # 2 m and 4 m: (1, 1), (1, 1/2): precision 1 below recall 1 and, at r = 1, the last of the tied points (1/2,
    #   np.interp's choice, as in the devkit): (89 * 0.9 + 0.4) / 81 = 0.993827.
    # Class-0 AP = (0.2 * 2 + 0.993827 * 2) / 4 = 0.596914. A class-1 prediction on the car is no match for it, and
    # class 1 (no ground truth) is left out of the means; scene 1 has no objects and no predictions.
    gts = [scene([0], [[10, 0, 0, 0, 0]]), scene([], [])]
    preds = [
        scene([0, 0, 1], [[11.5, 0, 0, 0, 0], [10, 0, 0, 0, 0], [10, 0, 0, 0, 0]], [0.9, 0.5, 0.95]),
        scene([], [], []),
    ]
    m = detection_metrics(preds, gts, num_classes=2)
    assert m["AP_0"] == pytest.approx(0.596914, abs=1e-6)
    assert "AP_1" not in m
    assert m["mAP"] == m["AP_0"] and m["mATE"] == pytest.approx(1.5)


def test_yaw_difference_wraps() -> None:
    assert yaw_difference(np.array(3.0), np.array(-3.0)) == pytest.approx(2 * math.pi - 6)
    assert yaw_difference(np.array(0.0), np.array(math.pi)) == pytest.approx(math.pi)
    assert yaw_difference(np.array(0.1), np.array(2 * math.pi + 0.1)) == pytest.approx(0.0)


def test_mismatched_inputs_raise() -> None:
    with pytest.raises(ValueError, match="preds"):
        detection_metrics([PRED], [GT, GT], num_classes=1)
    assert math.isnan(detection_metrics([], [], num_classes=1)["mAP"])
