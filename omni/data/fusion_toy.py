"""A synthetic camera + radar + ego-state scene, generated offline: the smallest fused batch that means something.

Each scene has one object ahead of the ego vehicle at range r (5-50 m) and azimuth a (±0.6 rad). The camera sees it
as a bright blob whose column follows the azimuth and whose row and size follow the range; the radar returns a
point on it (range, azimuth, Doppler, RCS) among clutter points; the ego state is (speed, yaw rate). The label is
where the object is: near/far x left/right (4 classes), so either sensor alone can tell, and both together best.

Batches: ``{"inputs": {"camera": (B, 3, H, W), "radar": {"x": (B, M, 4), "mask": (B, M)}, "ego": {"x": (B, 2)}},
"label": (B,)}`` — the layout ``omni.tasks.classification.Classifier`` reads.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from omni.data.base import OmniDataModule

__all__ = ["SyntheticFusionDataModule", "make_scenes"]

CLASSES = ["near-left", "near-right", "far-left", "far-right"]
NEAR_FAR_M = 20.0  # range threshold between "near" and "far", metres
MAX_AZIMUTH = 0.6  # rad, about ±34°: the camera's half field of view


def make_scenes(n: int, img_size: int, points: int, seed: int) -> dict[str, Tensor]:
    """``n`` scenes as tensors (see the module docstring), reproducible from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    rng = 5 + 45 * torch.rand(n, generator=g)  # metres
    az = (2 * torch.rand(n, generator=g) - 1) * MAX_AZIMUTH
    speed = 30 * torch.rand(n, generator=g)  # m/s
    yaw = 0.2 * torch.randn(n, generator=g)  # rad/s
    label = (rng > NEAR_FAR_M).long() * 2 + (az > 0).long()

    # Camera: a Gaussian blob, nearer = lower in the image and larger; plus noise.
    ys, xs = torch.meshgrid(torch.arange(img_size).float(), torch.arange(img_size).float(), indexing="ij")
    col = (az / MAX_AZIMUTH * 0.45 + 0.5) * (img_size - 1)
    row = (0.35 + 0.6 * (1 - (rng - 5) / 45)) * (img_size - 1)
    sigma = 0.5 + 3.0 * (5 / rng).sqrt()
    blob = torch.exp(
        -((xs - col[:, None, None]) ** 2 + (ys - row[:, None, None]) ** 2) / (2 * sigma[:, None, None] ** 2)
    )
    color = torch.rand(n, 3, generator=g) * 0.5 + 0.5
    camera = blob[:, None] * color[:, :, None, None] + 0.1 * torch.randn(n, 3, img_size, img_size, generator=g)

    # Radar: the object's return (noisy range/azimuth, Doppler = closing speed, strong RCS) among clutter.
    m = points
    clutter_r = 5 + 70 * torch.rand(n, m, generator=g)
    clutter_a = (2 * torch.rand(n, m, generator=g) - 1) * 1.2
    doppler = -speed[:, None] * torch.cos(clutter_a) + 0.5 * torch.randn(n, m, generator=g)
    rcs = -10 + 5 * torch.randn(n, m, generator=g)
    radar = torch.stack([clutter_r / 50, clutter_a, doppler / 30, rcs / 10], dim=-1)  # (n, M, 4), scaled
    slot = torch.randint(0, m, (n,), generator=g)
    obj = torch.stack(
        [
            (rng + 0.3 * torch.randn(n, generator=g)) / 50,
            az + 0.01 * torch.randn(n, generator=g),
            (-speed * torch.cos(az) + 2 * torch.randn(n, generator=g)) / 30,
            (10 + 3 * torch.randn(n, generator=g)) / 10,
        ],
        dim=-1,
    )
    radar[torch.arange(n), slot] = obj
    count = torch.randint(m // 2, m + 1, (n,), generator=g)  # a varying number of returns per scan
    mask = torch.arange(m)[None] < count[:, None]
    mask[torch.arange(n), slot] = True  # the object's return is always there
    radar = radar * mask[..., None]
    ego = torch.stack([speed / 30, yaw], dim=-1)
    return {"camera": camera, "radar": radar, "radar_mask": mask, "ego": ego, "label": label}


class _Scenes(Dataset):
    def __init__(self, data: dict[str, Tensor]) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data["label"])

    def __getitem__(self, i: int) -> dict[str, Any]:
        d = self.data
        return {
            "inputs": {
                "camera": d["camera"][i],
                "radar": {"x": d["radar"][i], "mask": d["radar_mask"][i]},
                "ego": {"x": d["ego"][i]},
            },
            "label": d["label"][i],
        }


class SyntheticFusionDataModule(OmniDataModule):
    """Synthetic camera + radar + ego scenes (offline, seeded): 4 classes, near/far x left/right."""

    num_classes = len(CLASSES)
    class_names = CLASSES

    def __init__(
        self,
        num_train: int = 2000,
        num_val: int = 400,
        num_test: int = 400,
        img_size: int = 32,
        radar_points: int = 24,
        batch_size: int = 64,
        seed: int = 0,
    ) -> None:
        """
        Args:
            num_train: training scenes.
            num_val: validation scenes.
            num_test: test scenes.
            img_size: camera image side, pixels (3 channels).
            radar_points: radar returns per scan (padded; a scan has between half and all of them).
            batch_size: scenes per batch.
            seed: seed of the scene generator (train, val and test use seed, seed + 1, seed + 2).
        """
        super().__init__(batch_size)
        for name, value in (("num_train", num_train), ("img_size", img_size), ("radar_points", radar_points)):
            if value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value}")
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.img_size, self.radar_points, self.seed = img_size, radar_points, seed

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.train_set, self.val_set, self.test_set = (
            _Scenes(make_scenes(n, self.img_size, self.radar_points, self.seed + i))
            for i, n in enumerate(self.sizes.values())
        )
