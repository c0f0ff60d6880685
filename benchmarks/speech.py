"""Speech recognition on the eSpeak NG corpus: WER and CER on held-out voices for every decoder, training wall time,
decoding real-time factor, silence, and resampling invariance of ``omni transcribe``.

    python benchmarks/speech.py --config configs/speech_digits.yaml
    python benchmarks/speech.py --config configs/speech_sentences.yaml

1. Builds the corpus the config reads if its manifests are missing (``omni data speech``, kind from the config's
   name, the folder from its train manifest).
2. Trains with ``omni fit --config CONFIG`` in its own process (``train_wall_s`` is what a user waits for: start-up
   and validation included), then ``omni test`` of the last checkpoint (``test_wall_s``: every decoder over the
   whole test split) and reads its ``metrics.json``: ``wer_<decoder>`` and ``cer_<decoder>`` on the test split
   (voices, and for sentences texts, never heard in training).
3. Loads the checkpoint tested and measures, per decoder, the real-time factor of transcribing the test split
   (decoding seconds / audio seconds, batches of 16, encoder included).
4. Transcribes 1 s of digital silence and 2 s of noise at -40 and -30 dBFS (each decoder must say nothing), and up
   to 50 test files written again at 44.1 kHz stereo (``omni transcribe``'s path: the same text as the 16 kHz mono
   original is expected).

Prints one JSON object last and appends it to ``benchmarks/results/speech.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import record  # noqa: E402

from omni.checkpoints import load_task  # noqa: E402
from omni.tasks.speech import DECODERS, SpeechRecognizer  # noqa: E402
from omni.transcribe import load_audio, transcribe_files  # noqa: E402


def manifests(config: str) -> dict[str, Path]:
    data = yaml.safe_load(Path(config).read_text())["data"]["init_args"]
    return {s: ROOT / data[f"{s}_manifest"] for s in ("train", "val", "test")}


def ensure_corpus(config: str, kind: str) -> None:
    """Build the corpus if its manifests are missing; a corpus of an older degradation recipe is refused by the
    build (``corpus.json`` differs), with the folder named, rather than trained on."""
    from omni.data.speech_corpus import CorpusSpec

    paths = manifests(config)
    out = paths["train"].parent
    meta = out / "corpus.json"
    current = meta.exists() and json.loads(meta.read_text())["spec"].get("version") == CorpusSpec().version
    if current and all(p.exists() for p in paths.values()):
        return
    print(f"building the {kind} corpus in {out}", flush=True)
    subprocess.run([str(Path(sys.executable).with_name("omni")), "data", "speech", "--kind", kind, "--out", str(out)],
                   cwd=ROOT, check=True)  # fmt: skip


def omni(args: list[str]) -> tuple[float, str]:
    """Run ``omni ARGS`` in its own process; its wall seconds and the run directory it printed."""
    cmd = [str(Path(sys.executable).with_name("omni")), *args, "--trainer.enable_progress_bar", "false"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"omni {args[0]} failed with exit code {proc.returncode}")
    return wall, re.findall(r"run directory: (\S+)", proc.stdout)[-1]


def train_and_test(config: str, name: str, extra: list[str]) -> tuple[float, float, str, str]:
    """``omni fit`` (timed: training and validation) then ``omni test`` of its last checkpoint (timed apart: every
    decoder on the whole test split); fit's wall seconds, test's, the test's run directory and the checkpoint."""
    logger = ["--trainer.logger.init_args.name", name]
    fit_wall, fit_dir = omni(["fit", "--config", config, "--test_after_fit", "false", *logger, *extra])
    ckpt = str(Path(fit_dir) / "checkpoints" / "last.ckpt")
    test_wall, test_dir = omni(["test", "--config", config, "--ckpt_path", ckpt, *logger, *extra])
    return fit_wall, test_wall, test_dir, ckpt


def real_time_factors(task: SpeechRecognizer, test: Path, limit: int) -> tuple[dict[str, float], float]:
    rows = [json.loads(line) for line in test.read_text().splitlines()][:limit]
    waves = [torch.from_numpy(load_audio(test.parent / r["audio_filepath"])[0]) for r in rows]
    seconds = sum(w.numel() for w in waves) / 16000
    rtf = {}
    for d in DECODERS:
        t0 = time.perf_counter()
        for i in range(0, len(waves), 16):
            chunk = waves[i : i + 16]
            lengths = torch.tensor([w.numel() for w in chunk])
            audio = torch.nn.utils.rnn.pad_sequence(chunk, batch_first=True)
            with torch.no_grad():
                task.transcribe({task.audio: {"audio": audio, "lengths": lengths}}, decoder=d)
        rtf[d] = round((time.perf_counter() - t0) / seconds, 4)
    return rtf, seconds


def silence_outputs(task: SpeechRecognizer) -> dict[str, list[str]]:
    rng = np.random.default_rng(0)
    clips = [
        np.zeros(16000),
        rng.standard_normal(32000) * 10 ** (-40 / 20),
        rng.standard_normal(32000) * 10 ** (-30 / 20),
    ]
    lengths = torch.tensor([c.size for c in clips])
    audio = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(c).float() for c in clips], batch_first=True)
    with torch.no_grad():
        return task.transcribe_all({task.audio: {"audio": audio, "lengths": lengths}}, DECODERS)


def resampling_agreement(task: SpeechRecognizer, test: Path, limit: int) -> float:
    import torchaudio.functional as AF

    rows = [json.loads(line) for line in test.read_text().splitlines()][:limit]
    same = 0
    with tempfile.TemporaryDirectory() as tmp:
        originals, copies = [], []
        for i, r in enumerate(rows):
            wave, rate = load_audio(test.parent / r["audio_filepath"])
            up = AF.resample(torch.from_numpy(wave), rate, 44100).numpy()
            path = Path(tmp) / f"{i}.wav"
            sf.write(str(path), np.stack([up, up], axis=1), 44100, subtype="FLOAT")
            originals.append(test.parent / r["audio_filepath"])
            copies.append(path)
        a, b = transcribe_files(task, originals), transcribe_files(task, copies)
        same = sum(a[str(o)] == b[str(c)] for o, c in zip(originals, copies, strict=True))
    return same / max(len(rows), 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/speech_digits.yaml")
    p.add_argument("--kind", choices=["digits", "sentences"], default=None, help="default: from the config's name")
    p.add_argument("--rtf_utterances", type=int, default=200, help="test utterances timed per decoder")
    p.add_argument("extra", nargs="*", help="more `omni fit` arguments, e.g. --trainer.max_epochs 2")
    a = p.parse_args()
    kind = a.kind or ("sentences" if "sentences" in Path(a.config).stem else "digits")
    ensure_corpus(a.config, kind)
    torch.set_num_threads(torch.get_num_threads())
    name = f"bench_{Path(a.config).stem}"
    wall, test_wall, run_dir, ckpt = train_and_test(a.config, name, a.extra)
    metrics = json.loads((ROOT / run_dir / "metrics.json").read_text())["metrics"]
    task = load_task(SpeechRecognizer, ROOT / ckpt).eval()
    test = manifests(a.config)["test"]
    rtf, seconds = real_time_factors(task, test, a.rtf_utterances)
    silence = silence_outputs(task)
    out = {
        "config": a.config,
        "extra_args": a.extra,
        "train_wall_s": round(wall, 1),
        "test_wall_s": round(test_wall, 1),
        "decoder": task.decoder_name,
        **{f"wer_{d}": round(metrics[f"test/wer_{d}"], 4) for d in DECODERS},
        **{f"cer_{d}": round(metrics[f"test/cer_{d}"], 4) for d in DECODERS},
        "best_decoder": min(DECODERS, key=lambda d: metrics[f"test/wer_{d}"]),
        "wer_best": round(min(metrics[f"test/wer_{d}"] for d in DECODERS), 4),
        "beam_vs_greedy_wer": [round(metrics["test/wer_beam"], 4), round(metrics["test/wer_greedy"], 4)],
        "rtf": rtf,
        "rtf_audio_s": round(seconds, 1),
        "silence_empty": all(t == "" for texts in silence.values() for t in texts),
        "silence_outputs": silence,
        "resampled_44k_stereo_same_text": resampling_agreement(task, test, 50),
        "run_dir": run_dir,
        "checkpoint": ckpt,
    }
    record("speech", out)


if __name__ == "__main__":
    main()
