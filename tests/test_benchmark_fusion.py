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
