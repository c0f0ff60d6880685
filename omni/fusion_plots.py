"""Pictures of one camera + radar scene: the camera image with the radar's detections projected on it, and a
bird's-eye view of ground truth against predictions, with velocity arrows (PNG); drawn by ``omni viz scene``."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Polygon

from omni.data.fusion_scene import CLASSES, HALF_SIZE, RADAR_HEIGHT, project_to_image
from omni.viz import save_figure

__all__ = ["plot_scene"]

COLORS = {"car": "tab:blue", "pedestrian": "tab:orange", "cyclist": "tab:green"}


def _footprint(x: float, y: float, yaw: float, cls: str) -> np.ndarray:
    """(4, 2) BEV corners of a class-sized box at (x, y) heading ``yaw``."""
    hx, hy, _ = HALF_SIZE[cls]
    corners = np.array([[hx, hy], [hx, -hy], [-hx, -hy], [-hx, hy]])
    rot = np.array([[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]])
    return corners @ rot.T + np.array([x, y])


def plot_scene(
    camera: np.ndarray,
    radar_xy: np.ndarray,
    doppler: np.ndarray,
    gt_class: np.ndarray,
    gt_box: np.ndarray,
    pred_class: np.ndarray,
    pred_box: np.ndarray,
    pred_score: np.ndarray,
    out: str | Path,
    title: str = "",
    min_score: float = 0.3,
) -> Path:
    """Camera image with radar points, and the bird's-eye view.

    Args:
        camera: (H, W, 3) image in [0, 1].
        radar_xy: (P, 2) real radar detections, ego-frame metres; doppler: (P,) m/s (their colour).
        gt_class: (G,) class indices; gt_box: (G, 5) (x, y, vx, vy, yaw).
        pred_class, pred_score: (Q,); pred_box: (Q, 5); predictions scoring below ``min_score`` are not drawn.
        out: PNG path.
    """
    fig, (cam_ax, bev_ax) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1.3, 1]})
    cam_ax.imshow(np.clip(camera, 0, 1))
    u, v = project_to_image(radar_xy[:, 0], radar_xy[:, 1], RADAR_HEIGHT)
    inside = np.isfinite(u) & (u >= 0) & (u < camera.shape[1])
    sc = cam_ax.scatter(u[inside], v[inside], c=doppler[inside], cmap="coolwarm", vmin=-15, vmax=15, s=14,
                        edgecolors="k", linewidths=0.3)  # fmt: skip
    fig.colorbar(sc, ax=cam_ax, fraction=0.025, label="Doppler (m/s)")
    cam_ax.set_xlim(0, camera.shape[1])
    cam_ax.set_ylim(camera.shape[0], 0)
    cam_ax.set_title(f"camera + radar {title}".strip(), fontsize=9)
    cam_ax.axis("off")

    bev_ax.scatter(radar_xy[:, 1], radar_xy[:, 0], s=6, c="grey", label="radar")
    for c, (x, y, vx, vy, yaw) in zip(gt_class.tolist(), gt_box.tolist(), strict=True):
        name = CLASSES[c]
        poly = _footprint(x, y, yaw, name)[:, ::-1]  # plotted as (y, x): left is left, ahead is up
        bev_ax.add_patch(Polygon(poly, closed=True, fill=False, color=COLORS[name], lw=1.8))
        bev_ax.arrow(y, x, vy, vx, color=COLORS[name], width=0.15, length_includes_head=True)
    keep = pred_score >= min_score
    for c, (x, y, vx, vy, yaw), s in zip(pred_class[keep].tolist(), pred_box[keep].tolist(), pred_score[keep].tolist(),
                                         strict=True):  # fmt: skip
        name = CLASSES[c]
        poly = _footprint(x, y, yaw, name)[:, ::-1]
        bev_ax.add_patch(Polygon(poly, closed=True, fill=False, color=COLORS[name], lw=1.0, ls="--"))
        bev_ax.arrow(y, x, vy, vx, color="k", width=0.08, ls="--", length_includes_head=True)
        bev_ax.text(y, x, f"{s:.2f}", fontsize=6)
    bev_ax.set_xlim(40, -40)  # +y (left) on the left
    bev_ax.set_ylim(0, 60)
    bev_ax.set_aspect("equal")
    bev_ax.set_xlabel("y (m, left)")
    bev_ax.set_ylabel("x (m, ahead)")
    handles = [plt.Line2D([], [], color=COLORS[n], label=n) for n in CLASSES]
    handles += [plt.Line2D([], [], color="k", ls="--", label=f"prediction (score ≥ {min_score})")]
    bev_ax.legend(handles=handles, fontsize=7, loc="upper right")
    bev_ax.set_title("bird's-eye view: truth (solid) vs predictions (dashed)", fontsize=9)
    return save_figure(fig, out)
