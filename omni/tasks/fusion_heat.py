"""Detections read off the camera's heat map (CenterNet on the camera's patch grid): what ``FusionDetector`` answers
with when its radar is missing and ``camera_fallback`` is on.

Shape legend
    B batch   N patches (h * w, row-major)   C classes   K detections
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

__all__ = ["heat_boxes", "heat_peaks"]

SUPPRESSED = -30.0  # the logit given to a pick that is not a peak (sigmoid: about 1e-13)


def heat_boxes(reg: Tensor) -> Tensor:
    """(..., 6) raw regression (x, y, vx, vy, sin, cos) -> the same with a unit (sin, cos), as the queries' heads
    give it."""
    return torch.cat([reg[..., :4], F.normalize(reg[..., 4:], dim=-1, eps=1e-6)], dim=-1)


def heat_peaks(logits: Tensor, reg: Tensor, grid: tuple[int, int], k: int) -> tuple[Tensor, Tensor]:
    """The K strongest local maxima of a per-class heat map (CenterNet's 3 x 3 max-pool in place of NMS).

    Args:
        logits: (B, N, C) sigmoid logits per patch and class.
        reg: (B, N, 6) each patch's box (x / 10 m, y / 10 m, vx / 5 m/s, vy / 5 m/s, sin yaw, cos yaw).
        grid: (h, w) with h * w = N.
        k: detections per sample; where a sample has fewer peaks, the rest are patches whose logits are set to
            ``SUPPRESSED`` (scored about 0, so they never count).
    Returns:
        logits (B, K, C) and boxes (B, K, 6) of the picks, strongest first: the form of the queries' outputs.
    """
    b, n, c = logits.shape
    h, w = grid
    if h * w != n:
        raise ValueError(f"grid: expected h * w = N = {n} patches, got {grid}")
    if reg.shape != (b, n, 6):
        raise ValueError(f"reg: expected ({b}, {n}, 6), got {tuple(reg.shape)}")
    k = min(k, n)
    score = logits.detach().float().amax(-1)  # (B, N); sigmoid is monotonic
    plane = rearrange(score, "b (h w) -> b 1 h w", h=h)
    peak = rearrange(F.max_pool2d(plane, 3, stride=1, padding=1) == plane, "b 1 h w -> b (h w)")
    rank = torch.where(peak, score, torch.finfo(score.dtype).min)
    top = rank.topk(k, dim=1).indices  # (B, K)
    picked = torch.gather(logits, 1, top[..., None].expand(-1, -1, c))
    picked = torch.where(torch.gather(peak, 1, top)[..., None], picked, picked.new_tensor(SUPPRESSED))
    return picked, heat_boxes(torch.gather(reg, 1, top[..., None].expand(-1, -1, 6)))
