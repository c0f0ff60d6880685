"""What subnormal floats cost a CPU training step, and what flushing them to zero (``omni.denormals``) buys.

    python benchmarks/speech.py --config configs/speech_digits.yaml   # once: a trained checkpoint
    python benchmarks/denormals.py [--ckpt_path runs/bench_speech_digits/version_N/checkpoints/last.ckpt]

The same model two ways on the same batches of the digits corpus's validation split: with its trained weights (the
checkpoint) and freshly initialised. Each is timed for a forward and backward pass (no optimizer step) on 8 batches
(the first 2 warm up), 3 rounds, median, in two fresh processes: one with subnormals flushed to zero from the start
(``OMNI_FLUSH_DENORMAL=1``, what the ``omni`` command does) and one without (``0``). The flag has to be set before
torch's thread pool starts, hence a process each. All four numbers come from one invocation, one after the other.

Prints one JSON object last: seconds per step of each (weights, flush) pair, ``slowdown_trained_kept`` (trained /
fresh, subnormals kept) and ``slowdown_trained_flushed`` (the same, flushed), and ``flush_speedup_trained``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import record

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "data/speech_digits"
BATCHES, WARMUP, ROUNDS = 8, 2, 3


def latest_checkpoint() -> Path:
    found = sorted((ROOT / "runs/bench_speech_digits").glob("version_*/checkpoints/last.ckpt"), key=os.path.getmtime)
    if not found:
        raise SystemExit("no checkpoint: run python benchmarks/speech.py --config configs/speech_digits.yaml first")
    return found[-1]


def child(ckpt: str) -> None:
    """In a fresh process: time trained and fresh weights; print their seconds per step as one JSON line."""
    from omni.denormals import flush_denormals

    flushed = flush_denormals()  # before any torch operation starts the thread pool
    import torch

    from omni.data import ManifestDataModule
    from omni.tasks.speech import SpeechRecognizer

    torch.manual_seed(0)
    trained = SpeechRecognizer.load_from_checkpoint(ckpt, map_location="cpu")
    fresh = SpeechRecognizer(**dict(trained.hparams))
    manifest = str(CORPUS / "val.jsonl")
    data = ManifestDataModule(
        train_manifest=str(CORPUS / "train.jsonl"), val_manifest=manifest, test_manifest=manifest, vocab="subword",
        subword_size=trained.vocab_size, max_batch_seconds=60.0, speed_perturb=None,
    )  # fmt: skip
    data.setup("test")  # learns the subword vocabulary from the training transcripts, as the checkpoint's run did
    if data.vocab.to_dict() != trained.vocab.to_dict():
        raise SystemExit(f"{ckpt}: its vocabulary is not the one {CORPUS / 'train.jsonl'} gives; rebuild the corpus")
    batches = [b for _, b in zip(range(BATCHES), data.test_dataloader(), strict=False)]
    fresh.vocab = trained.vocab

    def step_seconds(model: SpeechRecognizer) -> float:
        model.train()
        times = []
        for i, batch in enumerate(batches):
            t0 = time.perf_counter()
            out = model(model.model_inputs(batch))
            loss = model.loss(out, batch, "train")["loss"]
            model.zero_grad(set_to_none=True)
            loss.backward()
            if i >= WARMUP:
                times.append(time.perf_counter() - t0)
        return sum(times) / len(times)

    rounds = {"trained": [], "fresh": []}
    for _ in range(ROUNDS):
        for name, model in (("trained", trained), ("fresh", fresh)):
            rounds[name].append(step_seconds(model))
    print(json.dumps({"flushed": flushed, **{k: statistics.median(v) for k, v in rounds.items()}}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt_path", default=None, help="a speech_digits checkpoint (default: the newest bench one)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = parser.parse_args()
    ckpt = str(a.ckpt_path or latest_checkpoint())
    if a.child:
        child(ckpt)
        return
    if not (CORPUS / "val.jsonl").exists():
        raise SystemExit(f"no corpus in {CORPUS}: omni data speech --kind digits --out {CORPUS}")
    steps: dict[str, float] = {}
    for flag, label in (("0", "kept"), ("1", "flushed")):
        env = {**os.environ, "OMNI_FLUSH_DENORMAL": flag}
        proc = subprocess.run(
            [sys.executable, __file__, "--child", "--ckpt_path", ckpt], env=env, capture_output=True, text=True,
            check=False, cwd=ROOT,
        )  # fmt: skip
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-4000:])
            raise SystemExit(f"the {label} run failed with exit code {proc.returncode}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        steps[f"trained_{label}"], steps[f"fresh_{label}"] = row["trained"], row["fresh"]
        print(f"subnormals {label}: trained {row['trained']:.3f} s/step, fresh {row['fresh']:.3f} s/step", flush=True)
    result = {"checkpoint": ckpt, "batches": BATCHES - WARMUP, "rounds": ROUNDS}
    result |= {f"step_s_{k}": round(v, 4) for k, v in steps.items()}
    for label in ("kept", "flushed"):
        result[f"slowdown_trained_{label}"] = round(steps[f"trained_{label}"] / steps[f"fresh_{label}"], 3)
    result["flush_speedup_trained"] = round(steps["trained_kept"] / steps["trained_flushed"], 3)
    record("denormals", result)


if __name__ == "__main__":
    main()
