"""Batches of the simulated camera + radar corpus (``omni data fusion``), streamed shard by shard.

Splits are by shard: the last ``test_shards`` shards are the test split, the ``val_shards`` before them the
validation split, the rest training. A ``ShardSampler`` visits one shard at a time (shards in a new order every
epoch while training, and the scenes inside each shard shuffled), and the dataset keeps only the shard it reads in
memory. Under DDP (W ranks, ``batch_size`` per rank) every rank walks the order one process walks and keeps the
scenes r, r + W, r + 2W, ... of it (as ``DistributedSampler`` deals), cut to a multiple of W so every rank yields the
same number: a step's W batches hold exactly the scenes one process at batch size B × W puts in its batch. The ranks
read the same shard at the same time (each keeps only that one in memory). The sampler is a ``DistributedSampler``,
so Lightning keeps it (``use_distributed_sampler`` either way) instead of sharding the scenes a second time; that
also holds inside a joint run's combined loader.

Batches::

    {"inputs": {"camera": (B, 3, H, W) float in [-0.5, 0.5],
                "radar": {"x": (B, P, 6) (x, y, range / 50, azimuth, doppler / 10, rcs / 10), "mask": (B, P)},
                "ego": {"x": (B, 2) (speed / 10, yaw rate × 10)}},
     "targets": {"class": (B, O) long (-1 = none), "box": (B, O, 5) (x, y, vx, vy, yaw), "mask": (B, O)},
     "condition": (B,) long, "index": (B,) long}

The radar's first two features are the detection's (x, y) in metres (ego frame), its coordinates for the sensor
tokenizer and the local mask: ``local(radius={'radar': [5.0, 5.0]})`` means within 5 m.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from omni.data.base import OmniDataModule, Split, check_train_fraction, kept_share
from omni.data.fusion_scene import CLASSES, CONDITIONS
from omni.data.fusion_sim import SHARD_FIELDS
from omni.data.resume import SkipOnResume

__all__ = ["FusionDataModule", "FusionScenes", "ShardSampler", "load_shard", "radar_features"]

RADAR_INPUT_FEATURES = 6


def load_shard(path: str | Path) -> dict[str, np.ndarray]:
    """A shard's arrays, checked: every field of ``SHARD_FIELDS`` with its per-scene shape and one scene count,
    finite radar and boxes. Raises ``ValueError`` naming the file and the field."""
    path = Path(path)
    try:
        with np.load(path) as z:
            arrays = {name: z[name] for name in z.files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(
            f"{path}: expected a shard written by `omni data fusion`, got an unreadable file (truncated or corrupt?): "
            f"{type(err).__name__}: {err}"
        ) from None
    n = None
    for name, (shape, _) in SHARD_FIELDS.items():
        if name not in arrays:
            raise ValueError(f"{path}: field {name!r} missing; expected {sorted(SHARD_FIELDS)}")
        got = arrays[name].shape
        if got[1:] != shape or (n is not None and got[0] != n):
            raise ValueError(
                f"{path}: field {name!r} expected shape ({n or 'S'}, {', '.join(map(str, shape))}), got {got}"
            )
        n = got[0]
    for name in ("radar", "obj_box", "ego"):
        if not np.isfinite(arrays[name]).all():
            bad = np.argwhere(~np.isfinite(arrays[name]))[0].tolist()
            raise ValueError(f"{path}: field {name!r} holds NaN or inf (first at {bad})")
    return arrays


DOPPLER_SCALE = 10.0  # m/s per unit of the radial-velocity feature


def radar_features(radar: np.ndarray) -> np.ndarray:
    """(..., 4) detections (range, azimuth, doppler, rcs) -> (..., 6) tokenizer features, (x, y) in metres first."""
    r, az, doppler, rcs = np.moveaxis(radar, -1, 0)
    return np.stack([r * np.cos(az), r * np.sin(az), r / 50.0, az, doppler / DOPPLER_SCALE, rcs / 10.0], axis=-1)


class FusionScenes(Dataset):
    """Scenes of some shards; item ``i`` is scene ``rows[i]`` = (shard, row). Keeps the last shard read."""

    def __init__(self, root: Path, shards: list[str], rows: list[tuple[int, int]]) -> None:
        self.root, self.shards, self.rows = root, shards, rows
        self._cached: tuple[int, dict[str, np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def shard(self, k: int) -> dict[str, np.ndarray]:
        if self._cached is None or self._cached[0] != k:
            self._cached = (k, load_shard(self.root / self.shards[k]))
        return self._cached[1]

    def __getitem__(self, i: int) -> dict[str, Any]:
        k, j = self.rows[i]
        s = self.shard(k)
        camera = torch.from_numpy(s["camera"][j]).permute(2, 0, 1).float() / 255.0 - 0.5  # (3, H, W)
        classes = torch.from_numpy(s["obj_class"][j])
        return {
            "inputs": {
                "camera": camera,
                "radar": {
                    "x": torch.from_numpy(radar_features(s["radar"][j])).float(),
                    "mask": torch.from_numpy(s["radar_mask"][j]),
                },
                "ego": {"x": torch.from_numpy(s["ego"][j] * np.array([0.1, 10.0], dtype=np.float32))},
            },
            "targets": {"class": classes, "box": torch.from_numpy(s["obj_box"][j]), "mask": classes >= 0},
            "condition": torch.tensor(int(s["condition"][j])),
            "index": torch.tensor(int(s["index"][j])),
        }


class ShardSampler(SkipOnResume, DistributedSampler):
    """Dataset positions one shard at a time, shuffled by ``(seed, epoch)`` when ``shuffle`` (shard order and the
    order inside each); this rank's share is every ``world_size``-th position from ``rank``, all shares the same
    length. A ``DistributedSampler`` so that Lightning keeps it under DDP instead of wrapping it in another."""

    def __init__(
        self, groups: list[list[int]], shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank: expected 0 <= rank < world_size={world_size}, got {rank}")
        size = sum(len(g) for g in groups)
        super().__init__(range(size), num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
        self.groups, self.world = groups, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return sum(len(g) for g in self.groups) // self.world

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.groups), generator=g).tolist() if self.shuffle else range(len(self.groups))
        out: list[int] = []
        for k in order:
            group = self.groups[k]
            if self.shuffle:
                group = [group[i] for i in torch.randperm(len(group), generator=g).tolist()]
            out.extend(group)
        return self.resumed(iter(out[self.rank : len(self) * self.world : self.world]))


class FusionDataModule(OmniDataModule):
    """The ``omni data fusion`` corpus: camera, radar and ego inputs, object targets, condition labels."""

    num_classes = len(CLASSES)
    class_names = CLASSES

    def __init__(
        self,
        root: str,
        batch_size: int = 32,
        val_shards: int = 1,
        test_shards: int = 1,
        conditions: list[str] | None = None,
        num_workers: int = 0,
        train_fraction: float = 1.0,
    ) -> None:
        """
        Args:
            root: the corpus folder (``omni data fusion --out``); its ``meta.json`` must exist.
            batch_size: scenes per batch.
            val_shards: shards held out for validation (before the test shards).
            test_shards: the last shards, held out for testing.
            conditions: keep only these conditions (of ``clear``, ``fog``, ``night``, ``rain``); None = all.
            num_workers: DataLoader worker processes.
            train_fraction: keep this share of each training shard's scenes (after ``conditions``; drawn with a
                fixed seed: the same cut in every run). Validation and test are untouched.
        """
        super().__init__(batch_size, num_workers)
        unknown = sorted(set(conditions or []) - set(CONDITIONS))
        if unknown:
            raise ValueError(f"conditions: unknown {unknown}; expected some of {list(CONDITIONS)}")
        if val_shards < 1 or test_shards < 1:
            raise ValueError(f"val_shards, test_shards: expected >= 1, got {val_shards}, {test_shards}")
        self.root, self.val_shards, self.test_shards = Path(root), val_shards, test_shards
        self.conditions = conditions
        check_train_fraction(train_fraction)
        self.train_fraction = train_fraction
        self.groups: dict[Split, list[list[int]]] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        meta_path = self.root / "meta.json"
        if not meta_path.exists():
            raise ValueError(f"root: {meta_path} not found; build the corpus with `omni data fusion --out {self.root}`")
        meta = json.loads(meta_path.read_text())
        shards: list[str] = meta["shards"]
        held = self.val_shards + self.test_shards
        if len(shards) <= held:
            raise ValueError(
                f"val_shards + test_shards: expected fewer than the corpus's {len(shards)} shards, got {held}"
            )
        sizes = [len(range(k * meta["shard_size"], min(meta["scenes"], (k + 1) * meta["shard_size"]))) for k in
                 range(len(shards))]  # fmt: skip
        keep = None if self.conditions is None else {CONDITIONS.index(c) for c in self.conditions}
        splits: dict[Split, range] = {
            "train": range(0, len(shards) - held),
            "val": range(len(shards) - held, len(shards) - self.test_shards),
            "test": range(len(shards) - self.test_shards, len(shards)),
        }
        sets = {}
        for split, ks in splits.items():
            rows: list[tuple[int, int]] = []
            groups: list[list[int]] = []
            for k in ks:
                if keep is None:
                    js = range(sizes[k])
                else:
                    with np.load(self.root / shards[k]) as z:  # the one small field, not the images
                        js = [j for j, c in enumerate(z["condition"].tolist()) if c in keep]
                if split == "train" and self.train_fraction < 1.0:
                    js = [js[i] for i in kept_share(len(js), self.train_fraction, seed=k)]
                groups.append(list(range(len(rows), len(rows) + len(js))))
                rows.extend((k, j) for j in js)
            self.groups[split] = groups
            sets[split] = FusionScenes(self.root, shards, rows)
        self.train_set, self.val_set, self.test_set = sets["train"], sets["val"], sets["test"]

    def _loader(self, ds: Dataset | None, split: Split) -> DataLoader:
        if ds is None:
            raise RuntimeError(f"{type(self).__name__}: call setup() before asking for the {split} data loader")
        rank, world = self.replicas()
        sampler = ShardSampler(self.groups[split], split == "train", torch.initial_seed() % 2**31, rank, world)
        if split == "train":
            self.resume_sampler(sampler, self.batch_size)
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
