"""On a CUDA device: FlexAttention vs dense SDPA with the same mask, and every task's training throughput.

    python benchmarks/gpu.py [--sizes 4096 16384] [--steps 30] [--tasks digits seq2seq_reverse ...]
    python benchmarks/gpu.py --cpu-smoke     # no CUDA: tiny sizes on the CPU, dense only, nothing recorded

1. Attention: ``local(radius=64) | global_tokens()`` (4 global tokens) on one sequence of N tokens, 6 heads x 64,
   bf16, forward + backward: the dense boolean mask through ``scaled_dot_product_attention``, the FlexAttention
   ``BlockMask`` (compiled), and unmasked SDPA (flash) as the floor. The flex output is checked against the dense
   one first (fp32).
2. Training throughput of each task's own config (``configs/<task>.yaml``, full model sizes) through ``omni fit`` on
   small generated data: fp32 eager with ``attention: auto`` vs bf16-mixed with FlexAttention and compiled trunks
   (``omni.compile.CompileTrunks``). Steps after the first ``--warmup`` are timed (CUDA-synchronised); samples per
   second = batch size / step time. A task that cannot run here (a corpus its generator cannot build) is recorded
   with its error instead.

Prints one JSON object last and appends it, with the machine, to ``benchmarks/results/gpu.jsonl``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import record

ROOT = Path(__file__).resolve().parents[1]
HEADS, HEAD_DIM, RADIUS, GLOBALS = 6, 64, 64, 4
TASKS = ("digits", "seq2seq_reverse", "fusion_toy", "speech_digits", "dt_hopper", "fusion")
DECODER_TASKS = ("seq2seq_reverse", "speech_digits")


# ---------------------------------------------------------------------------------------------------- attention
def cuda_ms(fn: Any, repeats: int, device: torch.device) -> float:
    """Median milliseconds of ``fn()`` after two warm-up calls (CUDA-synchronised)."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def attention(n: int, repeats: int, device: torch.device, with_flex: bool) -> dict[str, float]:
    from omni import masks
    from omni.attention.kernels import attend
    from omni.tokens import Tokens

    mask = masks.local(radius=RADIUS) | masks.global_tokens()
    tokens = Tokens.create(
        torch.zeros(1, n, 1), pos=torch.arange(n).float()[:, None], is_global=torch.arange(n)[None] < GLOBALS
    ).to(device)
    plans: dict[str, Any] = {"full": None, "dense": mask.dense(tokens)}
    if with_flex:
        plans["flex"] = mask.block_mask(tokens)
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(1, HEADS, n, HEAD_DIM, generator=g, device=device) for _ in range(3))
    out: dict[str, float] = {}
    if with_flex:
        with torch.no_grad():
            out[f"flex_max_abs_err_{n}"] = float(
                (attend(q, k, v, plans["flex"]) - attend(q, k, v, plans["dense"])).abs().max()
            )
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    qg, kg, vg = (t.to(dtype).requires_grad_() for t in (q, k, v))

    def train(plan: Any) -> Any:
        def step() -> None:
            attend(qg, kg, vg, plan).float().sum().backward()
            qg.grad = kg.grad = vg.grad = None

        return step

    for name, plan in plans.items():
        out[f"train_ms_{name}_{n}"] = round(cuda_ms(train(plan), repeats, device), 3)
    if with_flex:
        out[f"flex_speedup_{n}"] = round(out[f"train_ms_dense_{n}"] / out[f"train_ms_flex_{n}"], 2)
    return out


# ---------------------------------------------------------------------------------------------------- tasks
class StepTimer:
    """A Lightning callback timing training steps after ``warmup`` (CUDA-synchronised), with their batch sizes."""

    def __new__(cls, warmup: int) -> Any:
        from lightning.pytorch.callbacks import Callback

        class _Timer(Callback):
            def __init__(self) -> None:
                self.warmup, self.times, self.sizes, self.t0 = warmup, [], [], 0.0

            def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                self.t0 = time.perf_counter()

            def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, idx: int) -> None:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                if trainer.global_step > self.warmup:
                    self.times.append(time.perf_counter() - self.t0)
                    self.sizes.append(pl_module.batch_size_of(pl_module.model_inputs(batch)))

        return _Timer()


def task_data(task: str, work: Path, scale: int) -> list[str]:
    """Command-line overrides pointing the job at small data generated in ``work`` (``scale`` x the smoke sizes)."""
    if task == "speech_digits":
        from omni.data.speech_corpus import CorpusSpec, build_corpus

        spec = CorpusSpec(num_train=16 * scale, num_val=4, num_test=4, seed=0)
        corpus = build_corpus(spec, work / "speech", None, False)
        return [
            a for s in ("train", "val", "test") for a in (f"--data.init_args.{s}_manifest", str(corpus / f"{s}.jsonl"))
        ]
    if task == "dt_hopper":
        random_hopper_dataset(work / "rl", "omni/hopper-v5/medium-v0", episodes=20 * scale)
        return ["--data.init_args.root", str(work / "rl")]
    if task == "fusion":
        from omni.data.fusion_sim import FusionCorpusSpec, build_fusion_corpus

        spec = FusionCorpusSpec(scenes=32 * scale, seed=0, shard_size=4 * scale)  # 8 shards: 2 val + 4 test + 2
        build_fusion_corpus(work / "fusion", spec, workers=max(1, min(8, (os.cpu_count() or 2) // 2)), progress=False)
        return ["--data.init_args.root", str(work / "fusion")]
    return []


def random_hopper_dataset(root: Path, dataset_id: str, episodes: int) -> None:
    """Random-policy Hopper-v5 episodes as a Minari dataset (speed needs windows, not good behaviour)."""
    from omni.data.random_minari import random_minari_dataset

    random_minari_dataset(root, dataset_id, episodes=episodes)
    os.environ["MINARI_DATASETS_PATH"] = str(root)


def throughput(task: str, gpu_recipe: bool, steps: int, warmup: int, data: list[str], work: Path) -> dict[str, float]:
    from omni.cli import OmniCLI

    timer = StepTimer(warmup)
    args = ["--config", str(ROOT / f"configs/{task}.yaml"), *data, "--trainer.max_steps", str(steps),
            "--trainer.limit_val_batches", "0", "--test_after_fit", "false", "--trainer.enable_checkpointing", "false",
            "--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir", str(work / "runs"),
            "--trainer.enable_model_summary", "false", "--trainer.devices", "1",
            "--trainer.accelerator", "gpu" if torch.cuda.is_available() else "cpu"]  # fmt: skip
    if gpu_recipe:
        args += ["--trainer.precision", "bf16-mixed", "--model.init_args.trunk.attention", "flex"]
        args += ["--model.init_args.decoder_trunk.attention", "flex"] if task in DECODER_TASKS else []
    sys.argv = ["omni"]
    cli = OmniCLI(model_class=None, datamodule_class=None, subclass_mode_model=True, subclass_mode_data=True,
                  auto_configure_optimizers=False, save_config_callback=None, args=args, run=False)  # fmt: skip
    callbacks = [timer]
    if gpu_recipe:
        from omni.compile import CompileTrunks

        callbacks.append(CompileTrunks())
    cli.trainer.callbacks.extend(callbacks)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    if not timer.times:
        raise ValueError(f"steps: expected more than warmup={warmup} training steps, got {cli.trainer.global_step}")
    step = statistics.median(timer.times)
    return {"step_ms": round(1000 * step, 2), "samples_per_s": round(statistics.mean(timer.sizes) / step, 1)}


# ---------------------------------------------------------------------------------------------------- main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--tasks", nargs="*", default=list(TASKS), choices=TASKS)
    p.add_argument("--steps", type=int, default=30, help="training steps per task and recipe")
    p.add_argument("--warmup", type=int, default=10, help="steps not timed (compilation, cudnn autotuning)")
    p.add_argument("--cpu-smoke", action="store_true", help="without CUDA: tiny sizes, dense only, nothing recorded")
    a = p.parse_args()
    cuda = torch.cuda.is_available()
    if not cuda and not a.cpu_smoke:
        raise SystemExit("benchmarks/gpu.py: error: expected a CUDA device, got none (torch.cuda.is_available() is "
                         "False); --cpu-smoke checks the script on the CPU")  # fmt: skip
    device = torch.device("cuda" if cuda else "cpu")
    sizes = a.sizes if cuda else [256]
    result: dict[str, Any] = {"heads": HEADS, "head_dim": HEAD_DIM, "radius": RADIUS, "global_tokens": GLOBALS}
    for n in sizes:
        timings = attention(n, a.repeats if cuda else 2, device, with_flex=cuda)
        print(f"attention N={n}: {timings}", flush=True)
        result.update(timings)
    recipes = {"fp32_eager": False, "bf16_flex_compiled": True} if cuda else {"fp32_eager": False}
    with tempfile.TemporaryDirectory() as tmp:
        for task in a.tasks:
            work = Path(tmp) / task
            work.mkdir()
            try:
                data = task_data(task, work, 16 if cuda else 1)
                for recipe, on in recipes.items():
                    steps, warmup = (a.steps, a.warmup) if cuda else (4, 1)
                    row = throughput(task, on, steps, warmup, data, work)
                    print(f"{task} {recipe}: {row}", flush=True)
                    result.update({f"{task}_{recipe}_{k}": v for k, v in row.items()})
            except Exception as e:  # one task's failure is recorded; the others still run
                result[f"{task}_error"] = " ".join(f"{type(e).__name__}: {e}".split())[:300]
                print(f"{task}: {result[f'{task}_error']}", flush=True)
            if cuda and f"{task}_bf16_flex_compiled_samples_per_s" in result:
                fast, base = (result[f"{task}_{r}_samples_per_s"] for r in ("bf16_flex_compiled", "fp32_eager"))
                result[f"{task}_speedup"] = round(fast / base, 2)
    record("gpu", result, save=cuda)


if __name__ == "__main__":
    main()
