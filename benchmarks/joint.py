"""One model for every task against one model per task, at the same total compute.

    python benchmarks/joint.py                          # joint + each single-task model, seeds 0 1 2 (~1 h a seed)
    python benchmarks/joint.py --seeds 0 --runs joint   # only the joint fit
    python benchmarks/joint.py --runs throughput        # packed rows vs per-task batches (a minute)
    python benchmarks/joint.py --train-fraction 0.25 --seeds 0 --runs joint single   # transfer: a quarter of the data
    python benchmarks/joint.py --config configs/omni_all.yaml configs/omni_all_tiny.yaml --arg ...   # a smoke run

1. ``joint``: ``omni fit --config configs/omni_all.yaml`` (every task, one shared trunk), tested on its ``last``
   checkpoint. ``fit_wall_s`` is training with its validations; ``train_wall_s`` the whole command (tests included).
2. ``single``: each task alone, built as the joint task builds it (its config, the joint trunk's width, depth and
   heads: ``omni.members.member_argv``) and trained for the steps it gets in the joint run (its ``steps`` x the joint
   ``max_epochs``), without validation (the joint run's own two validations pick nothing: both test ``last``).
   Same total compute: the joint run makes the sum of the single runs' steps.
3. Each task's own test metric (accuracy, WER, normalised score, mAP), joint against single: the ratio for a score,
   joint / single error for an error; parameter counts (trunk and total) of the joint model and the four models.
4. ``--train-fraction F``: every task keeps a share F of its training data (its data module's ``train_fraction``: the
   same seeded cut for the joint and the single runs), at the same steps: does training one trunk on all of them make
   up for less data of each? Runs are named ``bench_joint_f{F}`` / ``bench_single_{task}_f{F}``.
5. ``throughput``: the same real batches of the packable tasks (images, speech, trajectories) through the shared
   trunk, forward and backward, side by side: per-task batches padded to their longest, and mixed-task packed rows of
   ``pack_len`` tokens (``--pack-len``), their attention sample by sample (``packed``: ``pack_attention: segments``,
   the CPU default) and over the whole row under its mask (``packed_rows``). Real tokens a second, median of
   ``--repeats``, on two draws of the batches: ``bucketed`` (the data modules' own: speech in duration buckets, little
   padding) and ``random`` (one bucket: every batch padded to its longest, as a loader without duration buckets makes
   them).

Every finished run also gets a line in ``benchmarks/results/joint_runs.jsonl`` (its metrics and wall time): run
directories are not kept from one machine to the next, the ledger is, so ``--reuse`` can put seeds measured at
different times into one table (``--seeds 0 1 2 --reuse`` runs only what neither ``runs/`` nor the ledger holds).

Prints one JSON object last and appends it to ``benchmarks/results/joint.jsonl`` (not for a config named tiny).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import machine, record  # noqa: E402

from omni.members import TaskRef, as_refs, member_argv, task_parser  # noqa: E402
from omni.transformer import TransformerConfig  # noqa: E402

# {task class: (its test metric, "max" for a score / "min" for an error)}
METRICS = {
    "Classifier": ("acc", "max"),
    "SpeechRecognizer": ("wer", "min"),
    "DecisionTransformer": ("score", "max"),
    "FusionDetector": ("mAP", "max"),
}


def omni() -> str:
    return str(Path(sys.executable).with_name("omni"))


def plan(configs: list[str], extra: list[str]) -> dict[str, Any]:
    """The joint config as parsed: its trunk, epochs and members."""
    cfg = task_parser().parse_args([a for c in configs for a in ("--config", c)] + extra)
    init = cfg.model.init_args
    trunk = TransformerConfig.from_dict(dict(init.trunk))
    tasks = as_refs({name: dict(r) for name, r in dict(init.tasks).items()})
    return {"trunk": trunk, "tasks": tasks, "epochs": int(cfg.trainer.max_epochs), "cfg": cfg}


def with_fraction(p: dict[str, Any], extra: list[str], fraction: float) -> list[str]:
    """Every task of plan ``p`` keeps a share ``fraction`` of its training data: its ref gains the data module's
    ``train_fraction``; returns ``extra`` with the joint run's tasks replaced by those refs."""
    p["tasks"] = {
        n: replace(r, args={**r.args, "data.init_args.train_fraction": fraction}) for n, r in p["tasks"].items()
    }
    tasks = json.dumps({n: asdict(r) for n, r in p["tasks"].items()})
    return [*extra, "--model.init_args.tasks", tasks, "--data.init_args.tasks", tasks]


PACKED = ("stream", "segments", "rows")  # the ways packed samples attend (JointTask's pack_attention), all timed
REUSE = False  # --reuse: a finished run (its metrics.json, or its line in the ledger) is read, not run again
# Every finished run's figures, one JSON line each: the run directories (runs/) are not kept between machines, the
# ledger is, so a later ``--reuse`` can put seeds measured in different sessions into one table.
NOTE: str | None = None  # --note: kept with each run's ledger line too
LEDGER = ROOT / "benchmarks" / "results" / "joint_runs.jsonl"


def ledger_entry(out: Path) -> dict[str, Any] | None:
    """The latest ledger line of run ``out`` (``runs/<name>/<version>``), or None."""
    if not LEDGER.is_file():
        return None
    key = (out.parent.name, out.name)
    found = None
    for line in LEDGER.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            if (row["name"], row["version"]) == key:
                found = row
    return found


def run(cmd: list[str], env: dict[str, str], out: Path) -> float | None:
    """Run ``cmd`` (an ``omni fit`` writing to ``out``) and return its wall time, kept in ``out/bench.json`` and in
    the ledger; with ``--reuse`` a finished run (``out/metrics.json`` or a ledger line) is not run again and its
    kept wall time (if any) returned."""
    if REUSE and (out / "metrics.json").is_file():
        kept = out / "bench.json"
        print(f"reusing {out}", flush=True)
        return json.loads(kept.read_text())["wall_s"] if kept.is_file() else None
    if REUSE and (entry := ledger_entry(out)) is not None:
        print(f"reusing {out.parent.name}/{out.name} from {LEDGER.name}", flush=True)
        return entry.get("wall_s")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({' '.join(cmd)}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    wall = time.perf_counter() - t0
    (out / "bench.json").write_text(json.dumps({"wall_s": round(wall, 1)}))
    done = json.loads((out / "metrics.json").read_text())
    row = {"name": out.parent.name, "version": out.name, "wall_s": round(wall, 1), "fit_wall_s": done.get("fit_wall_s"),
           "metrics": done["metrics"], "threads": int(env.get("OMP_NUM_THREADS", 0)) or None,
           **({"note": NOTE} if NOTE else {}), "machine": machine()}  # fmt: skip
    LEDGER.parent.mkdir(parents=True, exist_ok=True)
    with open(LEDGER, "a") as f:
        f.write(json.dumps(row) + "\n")
    return wall


def read(run_dir: Path) -> dict[str, Any]:
    """A finished run's ``metrics.json``, or its ledger line where the directory is gone."""
    if (run_dir / "metrics.json").is_file():
        return json.loads((run_dir / "metrics.json").read_text())
    entry = ledger_entry(run_dir)
    if entry is None:
        raise SystemExit(f"{run_dir}: no metrics.json and no line in {LEDGER}")
    return entry


def metric_of(ref: TaskRef) -> tuple[str, str]:
    cls = task_parser().parse_args(member_argv(ref)).model.class_path.rpartition(".")[2]
    if cls not in METRICS:
        raise SystemExit(f"no test metric known for {cls}; add it to METRICS")
    return METRICS[cls]


def fit_joint(
    configs: list[str], extra: list[str], seed: int, runs: Path, env: dict[str, str], tag: str = ""
) -> dict[str, Any]:
    args = [a for c in configs for a in ("--config", c)] + extra
    cmd = [omni(), "fit", *args, "--seed_everything", str(seed), "--test_checkpoint", "last",
           "--trainer.logger.init_args.save_dir", str(runs), "--trainer.logger.init_args.name", f"bench_joint{tag}",
           "--trainer.logger.init_args.version", f"seed{seed}", "--trainer.enable_progress_bar", "false"]  # fmt: skip
    wall = run(cmd, env, runs / f"bench_joint{tag}" / f"seed{seed}")
    out = read(runs / f"bench_joint{tag}" / f"seed{seed}")
    print(f"joint{tag} seed {seed}: {wall} s (fit {out.get('fit_wall_s')} s)", flush=True)
    return {
        "train_wall_s": None if wall is None else round(wall, 1),
        "fit_wall_s": out.get("fit_wall_s"),
        "metrics": out["metrics"],
    }


def fit_single(name: str, ref: TaskRef, p: dict[str, Any], seed: int, runs: Path, env: dict[str, str], tag: str = ""):
    steps = (ref.steps or 0) * p["epochs"]
    if steps < 1:
        raise SystemExit(f"tasks.{name}.steps: the benchmark needs each task's steps per epoch")
    cmd = [omni(), "fit", *member_argv(ref, p["trunk"]), "--seed_everything", str(seed),
           "--trainer.max_steps", str(steps), "--trainer.max_epochs", "-1", "--trainer.limit_val_batches", "0",
           "--test_checkpoint", "last", "--trainer.logger.init_args.save_dir", str(runs),
           "--trainer.logger.init_args.name", f"bench_single_{name}{tag}", "--trainer.logger.init_args.version",
           f"seed{seed}", "--trainer.enable_progress_bar", "false"]  # fmt: skip
    wall = run(cmd, env, runs / f"bench_single_{name}{tag}" / f"seed{seed}")
    out = read(runs / f"bench_single_{name}{tag}" / f"seed{seed}")
    print(f"single {name}{tag} seed {seed}: {steps} steps, {wall} s", flush=True)
    took = None if wall is None else round(wall, 1)
    return {"steps": steps, "train_wall_s": took, "fit_wall_s": out.get("fit_wall_s"), "metrics": out["metrics"]}


def compare(p: dict[str, Any], joint: list[dict], single: dict[str, list[dict]]) -> dict[str, Any]:
    """Per task: the metric's mean over seeds (and each seed's), joint and single, and joint relative to single (the
    means)."""
    out = {}
    for name, ref in p["tasks"].items():
        metric, mode = metric_of(ref)
        j = [r["metrics"].get(f"test/{name}/{metric}") for r in joint]
        s = [r["metrics"].get(f"test/{metric}") for r in single.get(name, [])]
        row: dict[str, Any] = {"metric": metric, "better": "higher" if mode == "max" else "lower"}
        if j and None not in j:
            row["joint"] = round(statistics.mean(j), 4)
            row["joint_per_seed"] = [round(x, 4) for x in j]
        if s and None not in s:
            row["single"] = round(statistics.mean(s), 4)
            row["single_per_seed"] = [round(x, 4) for x in s]
        if "joint" in row and "single" in row and row["single"]:
            ratio = row["joint"] / row["single"]
            row["joint_over_single"] = round(ratio, 3)
            row["holds"] = bool(ratio >= 0.9) if mode == "max" else bool(ratio <= 1.1)
        out[name] = row
    return out


def parameters(p: dict[str, Any]) -> dict[str, Any]:
    """Trunk and total parameter counts: the joint model against the single-task models."""
    from omni.members import load_task
    from omni.tasks.joint import JointTask

    joint = JointTask({n: r for n, r in p["tasks"].items()}, p["trunk"])
    count = lambda m: sum(x.numel() for x in m.parameters())  # noqa: E731
    singles = {n: load_task(r, data=False, trunk=p["trunk"]).task for n, r in p["tasks"].items()}
    trunks = sum(count(s.model.trunk) for s in singles.values())
    return {
        "joint_trunk": count(joint.trunk),
        "single_trunks_sum": trunks,
        "trunk_fraction": round(count(joint.trunk) / trunks, 3),
        "joint_total": count(joint),
        "single_total_sum": sum(count(s) for s in singles.values()),
    }


def throughput(p: dict[str, Any], batches: int, repeats: int, pack_len: int | None = None) -> dict[str, Any]:
    """Real tokens a second through the shared trunk (forward + backward of each task's loss): per-task batches
    padded to their longest against packed mixed-task rows of the same samples, side by side in one run, on two
    draws of the same training data: the data modules' own batches (speech in duration buckets) and random batches
    (one bucket: each batch padded to its longest, as a loader without bucketing makes them)."""
    from omni.attention.plans import choose_path
    from omni.data.joint import JointDataModule
    from omni.tasks.joint import JointTask
    from omni.tokens import pack

    pack_len = pack_len or int(p["cfg"].model.init_args.pack_len)
    joint = JointTask(p["tasks"], p["trunk"], batching="packed", pack_len=pack_len)
    names = [n for n, m in joint.members.items() if m.packable]
    dm = JointDataModule({n: p["tasks"][n] for n in names})
    dm.setup("fit")
    for sub in joint.members.values():
        sub.log = lambda *a, **k: None  # no trainer: nothing to log to

    def draw(bucketed: bool) -> dict[str, list[Any]]:
        out = {}
        for n in names:
            member = dm.members[n]
            buckets = getattr(member, "num_buckets", None)
            if buckets is not None and not bucketed:
                member.num_buckets = 1
            it = iter(member.train_dataloader())
            out[n] = [next(it) for _ in range(batches)]
            if buckets is not None:
                member.num_buckets = buckets
        return out

    def tokens_of(data: dict[str, list[Any]]) -> tuple[int, int, int]:
        """Real tokens, per-task padded slots, packed rows."""
        real = padded = rows = 0
        for i in range(batches):
            toks = [joint.members[n].trunk_inputs(joint.members[n].model_inputs(data[n][i]))[0] for n in names]
            real += sum(int(t.pad.sum()) for t in toks)
            padded += sum(t.pad.numel() for t in toks)
            rows += pack(toks, joint.pack_len)[1].num_rows
        return real, padded, rows

    def loss_of(n: str, out: Any, b: Any) -> Any:
        out = joint.members[n].loss(out, b, "train")
        return out["loss"] if isinstance(out, dict) else out

    def per_task(data: dict[str, list[Any]]) -> None:
        for i in range(batches):
            total = 0
            for n in names:
                sub, b = joint.members[n], data[n][i]
                total = total + loss_of(n, sub(sub.model_inputs(b)), b)
            total.backward()
            joint.zero_grad(set_to_none=True)

    def packed(data: dict[str, list[Any]], attention: str) -> None:
        joint.pack_attention = attention
        for i in range(batches):
            inputs = {n: joint.members[n].model_inputs(data[n][i]) for n in names}
            outs = joint.forward_packed(inputs)
            total = 0
            for n in names:
                total = total + loss_of(n, outs[n], data[n][i])
            total.backward()
            joint.zero_grad(set_to_none=True)

    joint.train()
    path = choose_path(joint.trunk.config.attention, joint.pack_len, next(joint.parameters()).device, True)
    default = "rows" if path == "flex" else "stream"  # what pack_attention: auto runs here
    result: dict[str, Any] = {"tasks": names, "batches_per_task": batches, "pack_len": joint.pack_len,
                              "packed": f"pack_attention: {default} (auto)"}  # fmt: skip
    for label, data in (("bucketed", draw(True)), ("random", draw(False))):
        real, padded, rows = tokens_of(data)
        modes = {"per_task": per_task, **{f"packed_{a}": functools.partial(packed, attention=a) for a in PACKED}}
        for fn in modes.values():
            fn(data)  # warm-up: mask plans, allocator
        times: dict[str, list[float]] = {mode: [] for mode in modes}
        for _ in range(repeats):
            for mode, fn in modes.items():
                t0 = time.perf_counter()
                fn(data)
                times[mode].append(time.perf_counter() - t0)
        tps = {mode: real / statistics.median(ts) for mode, ts in times.items()}
        result[label] = {
            "real_tokens": real,
            "padding_efficiency_per_task": round(real / padded, 3),
            "padding_efficiency_packed_rows": round(real / (rows * joint.pack_len), 3),  # a stream: 1.0
            **{f"tokens_per_s_{mode}": round(t, 1) for mode, t in tps.items()},
            **{f"{mode}_speedup": round(tps[mode] / tps["per_task"], 3) for mode in tps if mode != "per_task"},
        }
        result[label]["packed_speedup"] = result[label][f"packed_{default}_speedup"]
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", nargs="+", default=["configs/omni_all.yaml"], help="the joint config (and overlays)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--runs", nargs="+", choices=["joint", "single", "throughput"],
                    default=["joint", "single", "throughput"])  # fmt: skip
    ap.add_argument("--batches", type=int, default=4, help="throughput: batches of each task")
    ap.add_argument("--repeats", type=int, default=3, help="throughput: timed repeats (median)")
    ap.add_argument("--pack-len", type=int, default=None, help="throughput: tokens per packed row (default: config's)")
    ap.add_argument(
        "--train-fraction", type=float, default=1.0, help="every task keeps this share of its training data"
    )
    ap.add_argument("--reuse", action="store_true", help="read finished runs (metrics.json or the ledger) instead")
    ap.add_argument("--note", default=None, help="a remark kept in the JSON row (e.g. that the machine was shared)")
    ap.add_argument("--arg", action="append", default=[], help="an extra `omni fit` argument for the joint config")
    a = ap.parse_args(argv)
    global REUSE, NOTE
    REUSE, NOTE = a.reuse, a.note
    extra = [x for kv in a.arg for x in kv.split("=", 1)]
    p = plan(a.config, extra)
    tag = ""
    if a.train_fraction != 1.0:
        extra, tag = with_fraction(p, extra, a.train_fraction), f"_f{a.train_fraction:g}"
    env = dict(os.environ)
    runs = ROOT / "runs"
    joint = [fit_joint(a.config, extra, s, runs, env, tag) for s in a.seeds] if "joint" in a.runs else []
    single: dict[str, list[dict]] = {}
    if "single" in a.runs:
        for s in a.seeds:
            for name, ref in p["tasks"].items():
                single.setdefault(name, []).append(fit_single(name, ref, p, s, runs, env, tag))
    result: dict[str, Any] = {
        "config": a.config,
        "seeds": a.seeds,
        "train_fraction": a.train_fraction,
        **({"note": a.note} if a.note else {}),
        "trunk": {k: getattr(p["trunk"], k) for k in ("dim", "depth", "heads", "mlp_ratio")},
        "steps": {n: (r.steps or 0) * p["epochs"] for n, r in p["tasks"].items()},
        "parameters": parameters(p),
    }
    if joint:
        result["joint_train_wall_s"] = [r["train_wall_s"] for r in joint]
        result["joint_fit_wall_s"] = [r["fit_wall_s"] for r in joint]
    if single:
        result["single_train_wall_s"] = {n: [r["train_wall_s"] for r in rs] for n, rs in single.items()}
    if joint or single:
        result["tasks"] = compare(p, joint, single)
    if "throughput" in a.runs:
        result["throughput"] = throughput(p, a.batches, a.repeats, a.pack_len)
    return record("joint", result, save=not any("tiny" in c for c in a.config))


if __name__ == "__main__":
    main()
