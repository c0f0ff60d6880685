"""The camera + radar driving corpus, simulated offline in MuJoCo: ``omni data fusion --out DIR``.

Each scene (``omni.data.fusion_scene``) is drawn from ``numpy.random.default_rng([seed, i])``: scene i's content
depends only on (seed, i), whichever process, shard size or resumed build makes it. Scenes are written in shards of
``shard_size`` (``shard-00000.npz``: the arrays of ``SHARD_FIELDS``, scene-major), each staged under a hidden name
and renamed into place, so a shard on disk is always whole; an interrupted build run again continues with the
missing shards. ``build.json`` holds the plan (a resumed build must match it) and ``meta.json``, written last,
the corpus's facts: sizes, classes, conditions, radar features and the measured scenes per second.

Shards are made by a pool of processes (``--workers``, default 2), each with its own MuJoCo model and GL context
(forked; spawned instead when this process has opened a GL context itself, which a forked child could not reuse).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from omni.data import fusion_scene
from omni.data.fusion_scene import (
    CLASSES,
    CONDITIONS,
    IMAGE_HW,
    MAX_OBJECTS,
    MAX_RADAR_POINTS,
    RADAR_FEATURES,
    SceneSimulator,
)

__all__ = ["SHARD_FIELDS", "FusionCorpusSpec", "build_fusion_corpus", "main", "make_shard", "shard_path"]

# name -> (per-scene shape, dtype): what every shard holds, with a leading scene axis S.
SHARD_FIELDS: dict[str, tuple[tuple[int, ...], str]] = {
    "index": ((), "int64"),
    "camera": ((*IMAGE_HW, 3), "uint8"),
    "radar": ((MAX_RADAR_POINTS, len(RADAR_FEATURES)), "float32"),
    "radar_mask": ((MAX_RADAR_POINTS,), "bool"),
    "ego": ((2,), "float32"),
    "obj_class": ((MAX_OBJECTS,), "int64"),
    "obj_box": ((MAX_OBJECTS, 5), "float32"),
    "obj_visible": ((MAX_OBJECTS,), "float32"),
    "condition": ((), "int64"),
}


@dataclass(frozen=True)
class FusionCorpusSpec:
    """A build's plan, kept as ``build.json``.

    Attributes:
        scenes: number of scenes.
        seed: scene i is drawn from ``default_rng([seed, i])``.
        shard_size: scenes per shard (the last may hold fewer).
        simulator: ``fusion_scene.SIMULATOR_VERSION`` of the code that draws the scenes: a folder built by another
            version is refused rather than finished with scenes of a different kind.
    """

    scenes: int = 20_000
    seed: int = 0
    shard_size: int = 500
    simulator: int = fusion_scene.SIMULATOR_VERSION

    def __post_init__(self) -> None:
        if self.scenes < 1 or self.shard_size < 1:
            raise ValueError(f"scenes, shard_size: expected positive ints, got {self.scenes}, {self.shard_size}")

    @property
    def num_shards(self) -> int:
        return -(-self.scenes // self.shard_size)

    def shard_range(self, k: int) -> range:
        return range(k * self.shard_size, min(self.scenes, (k + 1) * self.shard_size))


def shard_path(out: Path, k: int) -> Path:
    return out / f"shard-{k:05d}.npz"


_SIM: SceneSimulator | None = None  # one per process, made on first use


def make_shard(spec: FusionCorpusSpec, k: int) -> dict[str, np.ndarray]:
    """Shard ``k``'s arrays (``SHARD_FIELDS``, each with a leading axis of the shard's scenes)."""
    global _SIM
    if _SIM is None:
        _SIM = SceneSimulator()
    rows: dict[str, list[np.ndarray]] = {name: [] for name in SHARD_FIELDS}
    for i in spec.shard_range(k):
        scene = _SIM.make(np.random.default_rng([spec.seed, i]))
        rows["index"].append(np.asarray(i))
        for name in SHARD_FIELDS:
            if name != "index":
                rows[name].append(np.asarray(getattr(scene, name)))
    return {name: np.stack(v).astype(SHARD_FIELDS[name][1]) for name, v in rows.items()}


def _fresh_simulator() -> None:
    """Pool initializer: a forked worker makes its own simulator (a GL context does not survive a fork)."""
    global _SIM
    _SIM = None


def _write_shard(args: tuple[FusionCorpusSpec, int, str]) -> tuple[int, int]:
    """Make shard k and move it into place; returns (k, scenes)."""
    spec, k, out = args
    arrays = make_shard(spec, k)
    path = shard_path(Path(out), k)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)
    return k, len(arrays["index"])


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def build_fusion_corpus(
    out: str | Path, spec: FusionCorpusSpec, workers: int = 2, progress: bool = True
) -> dict[str, object]:
    """Build (or finish) the corpus in ``out``; returns its ``meta.json`` payload.

    Args:
        out: the corpus folder (made if missing).
        spec: the plan; a folder holding another plan's ``build.json`` is refused.
        workers: processes that make shards (1 = in this process).
        progress: show a Rich progress bar.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan = out / "build.json"
    if plan.exists():
        previous = json.loads(plan.read_text())
        previous.setdefault("simulator", 1)  # build.json before versions were recorded
        if previous != asdict(spec):
            raise ValueError(
                f"{plan}: this folder holds another build {previous}; asked for {asdict(spec)} "
                "(build into a new folder, or delete this one)"
            )
    else:
        _write_json(plan, asdict(spec))
    for stale in out.glob(".shard-*.tmp-*"):  # what an interrupted build was writing
        stale.unlink()
    todo = [k for k in range(spec.num_shards) if not shard_path(out, k).exists()]
    made = 0
    start = time.perf_counter()
    jobs = [(spec, k, str(out)) for k in todo]
    with _progress(progress) as bar:
        task = bar.add_task("scenes", total=sum(len(spec.shard_range(k)) for k in todo)) if bar else None
        if workers <= 1 or len(jobs) <= 1:
            results = map(_write_shard, jobs)
            pool = None
        else:
            # Forked workers start at once, but EGL does not survive a fork: a process that has rendered spawns them.
            method = "spawn" if fusion_scene.GL_OPENED else "fork"
            pool = mp.get_context(method).Pool(min(workers, len(jobs)), initializer=_fresh_simulator)
            results = pool.imap_unordered(_write_shard, jobs)
        try:
            for _, n in results:
                made += n
                if bar is not None:
                    bar.advance(task, n)
        finally:
            if pool is not None:
                pool.close()
                pool.join()
    seconds = time.perf_counter() - start
    meta_path = out / "meta.json"
    old = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    rate = made / seconds if made else old.get("scenes_per_second")
    meta = {
        **asdict(spec),
        "num_shards": spec.num_shards,
        "shards": [shard_path(out, k).name for k in range(spec.num_shards)],
        "classes": list(CLASSES),
        "conditions": list(CONDITIONS),
        "radar_features": list(RADAR_FEATURES),
        "image_hw": list(IMAGE_HW),
        "max_objects": MAX_OBJECTS,
        "max_radar_points": MAX_RADAR_POINTS,
        "scenes_per_second": rate,
        "workers": workers,
        "built_scenes_last_run": made,
        "seconds_last_run": round(seconds, 2),
    }
    _write_json(meta_path, meta)
    if made:
        print(f"fusion corpus: {made} scenes in {seconds:.1f} s = {made / seconds:.1f} scenes/s -> {out}")
    return meta


class _progress:
    """A Rich progress bar, or nothing."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = None

    def __enter__(self):
        if not self.enabled:
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self.bar = Progress("[bold]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        self.bar.start()
        return self.bar

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    """``omni data fusion --out DIR [--scenes N --seed S --shard_size M --workers W]``"""
    p = argparse.ArgumentParser(prog="omni data fusion", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="corpus folder (an interrupted build there is continued)")
    p.add_argument("--scenes", type=int, default=FusionCorpusSpec.scenes, help="number of scenes")
    p.add_argument("--seed", type=int, default=0, help="scene i is drawn from default_rng([seed, i])")
    p.add_argument("--shard_size", type=int, default=FusionCorpusSpec.shard_size, help="scenes per shard")
    p.add_argument("--workers", type=int, default=2, help="processes that make shards")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    spec = FusionCorpusSpec(scenes=a.scenes, seed=a.seed, shard_size=a.shard_size)
    return build_fusion_corpus(a.out, spec, workers=a.workers, progress=not a.no_progress)
