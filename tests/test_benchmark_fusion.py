"""``benchmarks/fusion.py --tiny``: the whole benchmark (corpus, three models, per-condition table, checks) at a
smoke scale, recording nothing."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_fusion_benchmark_runs_tiny(capsys) -> None:
    spec = importlib.util.spec_from_file_location("bench_fusion", ROOT / "benchmarks" / "fusion.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_fusion"] = bench
    spec.loader.exec_module(bench)
    before = sorted((ROOT / "benchmarks" / "results").glob("*"))
    row = bench.main(["--tiny", "--seeds", "0"])
    assert sorted((ROOT / "benchmarks" / "results").glob("*")) == before  # nothing recorded
    assert row["benchmark"] == "fusion" and row["scenes_per_second"] > 0
    for model, sensors in bench.MODELS.items():
        for s in sensors:
            assert set(row["results"][model][s]["all"]) == set(bench.METRICS)
    assert "fused_mAVE_over_camera_mAVE" in row["checks"]
    assert capsys.readouterr().out.rstrip().splitlines()[-1].startswith('{"benchmark": "fusion"')


def test_reuse_takes_a_finished_fit_and_its_wall_time_and_skips_an_unfinished_one(tmp_path) -> None:
    import json
    import os

    spec = importlib.util.spec_from_file_location("bench_fusion_reuse", ROOT / "benchmarks" / "fusion.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    metrics = {"metrics": {"test/radar/mAP": 0.18}}
    run = tmp_path / "bench_fusion_radar" / "seed1"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("seed_everything: 1\n")
    assert bench.reused("fusion_radar", 1, tmp_path) is None  # no metrics.json: the fit did not finish
    (run / "metrics.json").write_text(json.dumps(metrics))
    os.utime(run / "config.yaml", (1000.0, 1000.0))
    os.utime(run / "metrics.json", (1377.5, 1377.5))
    assert bench.reused("fusion_radar", 1, tmp_path) == {  # an older run: the span of its files, marked as such
        "train_wall_s": 377.5, "reused": True, "wall_from": "file times", "metrics": metrics["metrics"]}  # fmt: skip
    (run / "wall.json").write_text(json.dumps({"train_wall_s": 381.2}))
    assert bench.reused("fusion_radar", 1, tmp_path) == {
        "train_wall_s": 381.2,
        "reused": True,
        "metrics": metrics["metrics"],
    }
    assert bench.reused("fusion_radar", 2, tmp_path) is None and bench.reused("fusion", 1, tmp_path) is None
