"""``omni data fusion`` at a tiny scale: scenes are a function of (seed, index) alone, shards are whole and a build
resumes with the missing ones, the radar measures what the scene holds, and empty scenes are valid."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from omni.cli import main as omni_main
from omni.data import fusion_scene
from omni.data.fusion_scene import (
    CLASSES,
    IMAGE_HW,
    MAX_OBJECTS,
    MAX_RADAR_POINTS,
    RADAR_FOV,
    SceneSimulator,
)
from omni.data.fusion_sim import SHARD_FIELDS, FusionCorpusSpec, build_fusion_corpus, shard_path


def load(path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def scenes_by_index(out, spec: FusionCorpusSpec) -> dict[int, dict[str, np.ndarray]]:
    rows = {}
    for k in range(spec.num_shards):
        shard = load(shard_path(out, k))
        for j, i in enumerate(shard["index"].tolist()):
            rows[i] = {name: shard[name][j] for name in SHARD_FIELDS}
    return rows


@pytest.fixture(scope="module")
def sim() -> SceneSimulator:
    return SceneSimulator()


def test_cli_builds_shards_with_meta(tmp_path) -> None:
    omni_main(["data", "fusion", "--out", str(tmp_path), "--scenes", "7", "--shard_size", "3", "--no_progress"])
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["num_shards"] == 3 and meta["scenes"] == 7 and meta["classes"] == list(CLASSES)
    assert meta["scenes_per_second"] > 0
    sizes = [len(load(shard_path(tmp_path, k))["index"]) for k in range(3)]
    assert sizes == [3, 3, 1]
    shard = load(shard_path(tmp_path, 0))
    for name, (shape, dtype) in SHARD_FIELDS.items():
        assert shard[name].shape == (3, *shape) and shard[name].dtype == np.dtype(dtype), name
    assert shard["camera"].shape[1:3] == IMAGE_HW


def test_scene_depends_only_on_seed_and_index(tmp_path) -> None:
    """The same scenes whatever the shard size or the number of worker processes; another seed differs."""
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    spec_a, spec_b = FusionCorpusSpec(scenes=6, seed=3, shard_size=4), FusionCorpusSpec(scenes=6, seed=3, shard_size=2)
    build_fusion_corpus(b, spec_b, workers=2, progress=False)  # first: forked workers (nothing rendered here yet)
    build_fusion_corpus(a, spec_a, workers=1, progress=False)
    build_fusion_corpus(c, FusionCorpusSpec(scenes=6, seed=4, shard_size=4), workers=1, progress=False)
    ra, rb = scenes_by_index(a, spec_a), scenes_by_index(b, spec_b)
    assert sorted(ra) == sorted(rb) == list(range(6))
    for i in range(6):
        for name in SHARD_FIELDS:
            np.testing.assert_array_equal(ra[i][name], rb[i][name], err_msg=f"scene {i} field {name}")
    other = load(shard_path(c, 0))
    assert not np.array_equal(other["camera"], load(shard_path(a, 0))["camera"])


def test_interrupted_build_resumes_with_missing_shards(tmp_path) -> None:
    spec = FusionCorpusSpec(scenes=6, seed=0, shard_size=2)
    build_fusion_corpus(tmp_path, spec, workers=1, progress=False)
    whole = {k: shard_path(tmp_path, k).read_bytes() for k in range(3)}
    kept = shard_path(tmp_path, 0).stat().st_mtime_ns
    # An interruption: shard 1 never renamed into place, its staging file left half-written.
    shard_path(tmp_path, 1).unlink()
    (tmp_path / ".shard-00001.npz.tmp-123").write_bytes(b"half")
    meta = build_fusion_corpus(tmp_path, spec, workers=1, progress=False)
    assert meta["built_scenes_last_run"] == 2
    assert shard_path(tmp_path, 0).stat().st_mtime_ns == kept  # finished shards are not redone
    assert {k: shard_path(tmp_path, k).read_bytes() for k in range(3)} == whole
    assert not list(tmp_path.glob(".shard-*"))
    with pytest.raises(ValueError, match="another build"):
        build_fusion_corpus(tmp_path, FusionCorpusSpec(scenes=6, seed=1, shard_size=2), progress=False)


def test_a_corpus_of_another_simulator_version_is_not_finished(tmp_path) -> None:
    """A resumed build must not mix scenes of two simulators: build.json records the version, and one written
    before versions were recorded counts as version 1."""
    spec = FusionCorpusSpec(scenes=2, seed=0, shard_size=2)
    assert spec.simulator == fusion_scene.SIMULATOR_VERSION >= 2
    plan = tmp_path / "build.json"
    plan.write_text(json.dumps({"scenes": 2, "seed": 0, "shard_size": 2}))
    with pytest.raises(ValueError, match="build.json.*another build.*'simulator': 1"):
        build_fusion_corpus(tmp_path, spec, workers=1, progress=False)
    assert not shard_path(tmp_path, 0).exists()


def test_radar_doppler_range_and_azimuth_match_the_object(sim, monkeypatch) -> None:
    """One car 20 m ahead, 3 m left, driving at (-5, 1) m/s while the ego drives at 10 m/s: every detection on it
    sits near it and measures the relative radial speed ``(v - v_ego) · u``."""
    monkeypatch.setattr(fusion_scene, "STATIC_RETURNS", 0.0)  # their RCS overlaps the car's
    rng = np.random.default_rng(0)
    classes = np.array([0])
    boxes = np.array([[20.0, 3.0, -5.0, 1.0, 0.0]])
    geoms = sim._place(classes, boxes, rng)
    for _ in range(20):  # until the car is not missed as a whole (8 % of scans)
        radar, mask = sim._radar(classes, boxes, geoms, 10.0, False, rng)
        on_car = radar[mask & (radar[:, 3] > 0)]  # clutter has RCS ~ -12 dBsm, the car ~ +10
        if len(on_car):
            break
    assert len(on_car) >= 1
    r, az, doppler = on_car[:, 0], on_car[:, 1], on_car[:, 2]
    x, y = r * np.cos(az), r * np.sin(az)
    assert np.all(np.abs(x - 20.0) < 3.0) and np.all(np.abs(y - 3.0) < 1.5)
    expected = (-5.0 - 10.0) * np.cos(az) + 1.0 * np.sin(az)
    np.testing.assert_allclose(doppler, expected, atol=0.6)
    assert np.all(np.abs(az) <= RADAR_FOV + 0.05)


def test_occluded_object_is_flagged(sim) -> None:
    """A pedestrian 15 m behind a car, in line with the camera: of its 5 probe points only the head (1.53 m) shows
    over the car's 1.5 m roof, seen from the camera at 1.6 m; the car is fully visible."""
    rng = np.random.default_rng(0)
    classes = np.array([0, 1])
    boxes = np.array([[10.0, 0.0, 0.0, 0.0, 0.0], [25.0, 0.0, 0.0, 0.0, 0.0]])
    geoms = sim._place(classes, boxes, rng)
    visible = sim._visibility(classes, boxes, geoms)
    assert visible[0] == 1.0 and visible[1] == pytest.approx(0.2)


def test_static_returns_look_like_the_static_world(sim) -> None:
    """Reflectors the camera does not show: Doppler of the static world (-v_ego cos az), inside the field of view and
    the radar's range, 1-4 detections each, ``STATIC_RETURNS`` a scan on average, RCS overlapping the objects'."""
    rng = np.random.default_rng(0)
    scans = [sim._static_returns(12.0, rng) for _ in range(300)]
    det = np.concatenate(scans)
    np.testing.assert_allclose(det[:, 2], -12.0 * np.cos(det[:, 1]), atol=5 * fusion_scene.DOPPLER_NOISE)
    assert np.all(np.abs(det[:, 1]) <= RADAR_FOV + 5 * fusion_scene.AZIMUTH_NOISE)
    assert det[:, 0].min() > 2.0 and det[:, 0].max() < fusion_scene.RADAR_RANGE + 1.0
    per_scan = np.mean([len(s) for s in scans])
    assert math.isclose(per_scan, 2.5 * fusion_scene.STATIC_RETURNS, rel_tol=0.15)  # Poisson(8) x U{1..4}
    # As strong as a pedestrian or a car often enough that RCS alone cannot reject them.
    assert (det[:, 3] > fusion_scene.RCS_DBSM["pedestrian"]).mean() > 0.6
    assert (det[:, 3] > fusion_scene.RCS_DBSM["car"]).mean() > 0.03


def test_scenes_without_objects_or_radar_points_are_valid(sim, monkeypatch) -> None:
    empty = None
    for i in range(200):
        scene = sim.make(np.random.default_rng([0, i]))
        assert scene.camera.shape == (*IMAGE_HW, 3) and scene.radar.shape == (MAX_RADAR_POINTS, 4)
        assert scene.obj_class.shape == (MAX_OBJECTS,) and np.isfinite(scene.radar).all()
        assert not scene.radar[~scene.radar_mask].any()  # padding is zero
        n = int((scene.obj_class >= 0).sum())
        assert (scene.obj_class[n:] == -1).all()  # objects first, then padding
        if n == 0:
            empty = scene
            break
    assert empty is not None, "no empty scene in 200 draws"
    # Zero radar points: no objects, no clutter and no static returns in a clear scene (here with the static returns
    # off: Poisson(2) = 0 is 13.5 %).
    monkeypatch.setattr(fusion_scene, "STATIC_RETURNS", 0.0)
    classes, boxes = np.zeros(0, dtype=np.int64), np.zeros((0, 5))
    geoms = sim._place(classes, boxes, np.random.default_rng(1))
    counts = [int(sim._radar(classes, boxes, geoms, 5.0, False, np.random.default_rng(s))[1].sum()) for s in range(40)]
    assert 0 in counts
    assert math.isclose(np.mean(counts), 2.0, abs_tol=1.0)
