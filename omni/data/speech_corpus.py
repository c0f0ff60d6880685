"""A spoken corpus made offline with eSpeak NG: ``omni data speech --kind digits|sentences --out DIR``.

Every utterance is one eSpeak NG voice (an English base voice with or without a voice variant) at a random speed,
pitch, pitch range and word gap, then degraded as a microphone in a room would: resampled to 16 kHz, silence
before and after, room reverberation (a synthetic impulse response), telephone band-limiting, white, pink or brown
noise at a random SNR, and a random gain. A few utterances are noise or silence alone with an empty transcript, so
a model learns to say nothing when nobody speaks.

- ``digits``: connected digit strings of 1-7 digits (``zero``/``oh`` ... ``nine``), as in TIDIGITS.
- ``sentences``: sentences of the King James Bible (public domain), read from Debian's ``bible-kjv`` package
  (``apt-get install bible-kjv``), or from any UTF-8 text file (``--text``). A sentence belongs to one split only,
  by a hash of its normalised text, so test sentences never appear in training.

Splits are by voice: a voice (base + variant) of the test or validation split is never heard in training. Each
split gets a NeMo-style JSON-lines manifest (``audio_filepath``, ``duration``, ``text``, ``speaker``, plus the
synthesis settings). The build is deterministic from ``--seed`` and resumable: audio files are written atomically
and kept when the build runs again; manifests are written last, atomically.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Literal

import numpy as np

from omni.choices import check_choice

__all__ = ["CorpusSpec", "Utterance", "build_corpus", "digit_text", "main", "plan", "read_sentences"]

SAMPLE_RATE = 16000
SPLITS = ("train", "val", "test")
Kind = Literal["digits", "sentences"]
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
KJV_RANGE = "Ge1:1-Re22:21"


@dataclass(frozen=True)
class CorpusSpec:
    """What a corpus is made of; stored as ``corpus.json`` so an interrupted build resumes with the same plan."""

    kind: Kind = "digits"
    num_train: int = 12000
    num_val: int = 400
    num_test: int = 1000
    seed: int = 0
    val_voices: float = 0.05
    test_voices: float = 0.10
    empty_fraction: float = 0.02
    text: str | None = None  # sentences only: a text file instead of the King James Bible
    min_words: int = 3
    max_words: int = 14
    version: int = 2  # of the degradation recipe; 2: reverberation by direct-to-reverberant ratio (``_room``)

    def sizes(self) -> dict[str, int]:
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}


@dataclass(frozen=True)
class Utterance:
    """One utterance of the plan: its text, voice and synthesis settings, and the seed of its degradations."""

    split: str
    index: int
    text: str
    voice: str
    rate: int
    pitch: int
    range_: int
    wordgap: int
    seed: tuple[int, ...]

    @property
    def relpath(self) -> str:
        return f"audio/{self.split}/{self.index:06d}.wav"


# ---------------------------------------------------------------------------------------------------- texts
def digit_text(rng: np.random.Generator) -> str:
    """A connected digit string of 1-7 digits; 0 is read ``zero`` or ``oh``."""
    digits = rng.integers(0, 10, size=int(rng.integers(1, 8)))
    return " ".join(("oh" if rng.random() < 0.5 else "zero") if d == 0 else DIGIT_WORDS[d] for d in digits)


def _kjv_text() -> str:
    if shutil.which("bible") is None:
        raise ValueError(
            "sentences: expected Debian's `bible` program (apt-get install bible-kjv) for the King James Bible, "
            "or --text FILE with your own text; neither was found"
        )
    out = subprocess.run(["bible", "-f", KJV_RANGE], capture_output=True, text=True, check=True).stdout
    return re.sub(r"^\S+\d+:\d+ ", "", out, flags=re.MULTILINE)  # drop the verse references


def read_sentences(text: str, min_words: int, max_words: int) -> list[str]:
    """The distinct normalised sentences (or clauses, split at ``. ; : ? !``) of ``min_words``-``max_words`` words,
    in order of first appearance."""
    from omni.data.text import normalize_text

    seen: dict[str, None] = {}
    for piece in re.split(r"[.;:?!]+", re.sub(r"\s+", " ", text)):
        sentence = normalize_text(piece)
        if min_words <= len(sentence.split()) <= max_words:
            seen.setdefault(sentence, None)
    return list(seen)


def split_of_sentence(sentence: str, val: float, test: float) -> str:
    """The split a sentence belongs to, from a hash of its text (stable across machines and runs)."""
    u = int.from_bytes(hashlib.sha1(sentence.encode()).digest()[:8], "big") / 2**64
    return "test" if u < test else "val" if u < test + val else "train"


# ---------------------------------------------------------------------------------------------------- plan
def split_voices(voices: Sequence[str], spec: CorpusSpec) -> dict[str, list[str]]:
    """Voices per split, disjoint: a seeded permutation, test first, then validation, the rest for training."""
    order = np.random.default_rng(spec.seed).permutation(len(voices))
    n_test = max(1, round(spec.test_voices * len(voices)))
    n_val = max(1, round(spec.val_voices * len(voices)))
    picked = [voices[i] for i in order]
    return {"test": picked[:n_test], "val": picked[n_test : n_test + n_val], "train": picked[n_test + n_val :]}


def plan(spec: CorpusSpec, voices: Sequence[str], sentences: Sequence[str] | None = None) -> list[Utterance]:
    """Every utterance of the corpus, deterministic from ``spec`` (utterance i of a split draws from its own seed)."""
    by_split = split_voices(voices, spec)
    pools: dict[str, list[str]] = {}
    if spec.kind == "sentences":
        if not sentences:
            raise ValueError("sentences: expected some sentences of min_words..max_words words, got none")
        for s in SPLITS:
            pools[s] = [t for t in sentences if split_of_sentence(t, spec.val_voices, spec.test_voices) == s]
            if not pools[s]:
                raise ValueError(f"sentences: expected sentences for the {s} split, got none (too little text?)")
    out = []
    for k, split in enumerate(SPLITS):
        for i in range(spec.sizes()[split]):
            seed = (spec.seed, k, i)
            rng = np.random.default_rng(seed)
            if rng.random() < spec.empty_fraction:
                text = ""
            elif spec.kind == "digits":
                text = digit_text(rng)
            else:
                text = pools[split][int(rng.integers(len(pools[split])))]
            voice = by_split[split][int(rng.integers(len(by_split[split])))]
            rate, pitch, range_ = int(rng.integers(110, 231)), int(rng.integers(10, 91)), int(rng.integers(10, 91))
            wordgap = int(rng.integers(0, 4)) if rng.random() < 0.3 else 0
            out.append(Utterance(split, i, text, voice, rate, pitch, range_, wordgap, seed))
    return out


# ---------------------------------------------------------------------------------------------------- audio
def _colored_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """White, pink or brown noise (power ~ 1/f^alpha, alpha 0, 1 or 2), unit RMS."""
    alpha = float(rng.choice([0.0, 1.0, 2.0]))
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.fft.rfftfreq(n), 1.0 / n)
    noise = np.fft.irfft(spectrum / f ** (alpha / 2), n)
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


ROOM_DRR_DB = (0.0, 12.0)  # direct-to-reverberant ratio: small and medium rooms, talker 0.5-3 m from the microphone


def _room(rng: np.random.Generator) -> np.ndarray:
    """A synthetic room impulse response: the direct sound, then exponentially decaying noise (RT60 0.15-0.8 s)
    whose energy sits a direct-to-reverberant ratio drawn from ``ROOM_DRR_DB`` below the direct sound's.

    (Scaling the tail's samples instead, as corpora of version 1 did, put the DRR at -13.5 dB on median and -3.4 dB
    at best: half the corpus reverberated like a cathedral heard from its far end, and a recognizer trained on it
    erred as often on its own training utterances as on held-out voices.)"""
    rt60 = rng.uniform(0.15, 0.8)
    t = np.arange(int(rt60 * SAMPLE_RATE)) / SAMPLE_RATE
    tail = rng.standard_normal(t.size) * np.exp(-6.9 * t / rt60)
    tail[: int(0.002 * SAMPLE_RATE)] = 0.0  # the first reflection arrives after the direct sound
    drr_db = rng.uniform(*ROOM_DRR_DB)
    tail *= np.sqrt(10 ** (-drr_db / 10) / np.sum(tail**2))  # tail energy = direct energy (1) / DRR
    tail[0] = 1.0
    return tail / np.sqrt(np.sum(tail**2))


def degrade(wave: np.ndarray, source_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Resample to 16 kHz and pass through a random room, channel and noise; (T,) float32 in [-1, 1]."""
    from scipy.signal import butter, fftconvolve, resample_poly, sosfilt

    g = np.gcd(SAMPLE_RATE, source_rate)
    x = resample_poly(wave, SAMPLE_RATE // g, source_rate // g) if wave.size else wave
    lead, trail = (int(rng.uniform(0.05, 0.5) * SAMPLE_RATE) for _ in range(2))
    if not x.size:  # an empty transcript: silence or noise only, 0.5-3 s
        lead, trail = int(rng.uniform(0.5, 3.0) * SAMPLE_RATE), 0
    x = np.concatenate([np.zeros(lead), x, np.zeros(trail)])
    if x.size > lead + trail and rng.random() < 0.5:
        x = fftconvolve(x, _room(rng))[: x.size]
    if rng.random() < 0.2:  # a telephone's band
        x = sosfilt(butter(4, [300, 3400], btype="bandpass", fs=SAMPLE_RATE, output="sos"), x)
    speech_rms = np.sqrt(np.mean(x**2)) if x.any() else 0.0
    if speech_rms > 0 and rng.random() < 0.85:
        snr_db = rng.uniform(5.0, 40.0)
        x = x + _colored_noise(rng, x.size) * speech_rms * 10 ** (-snr_db / 20)
    elif speech_rms == 0:  # no speech: digital silence, or noise at -60..-20 dBFS
        level = 0.0 if rng.random() < 0.3 else 10 ** (rng.uniform(-60, -20) / 20)
        x = _colored_noise(rng, x.size) * level
    peak = np.abs(x).max()
    if peak > 0 and speech_rms > 0:
        x = x * (rng.uniform(0.05, 0.95) / peak)
    return x.clip(-1.0, 1.0).astype(np.float32)


def render(utt: Utterance, out: Path) -> float:
    """Synthesise and degrade one utterance into ``out / utt.relpath`` (kept if already complete); its seconds."""
    import soundfile as sf

    from omni.data.espeak import ESpeak

    path = out / utt.relpath
    if path.exists():
        try:
            return sf.info(str(path)).frames / SAMPLE_RATE
        except RuntimeError:  # a file cut short by a crash mid-write of an older tool: make it again
            path.unlink()
    engine = ESpeak.get()
    wave = engine.synth(utt.text, utt.voice, utt.rate, utt.pitch, utt.range_, utt.wordgap)
    audio = degrade(wave, engine.sample_rate, np.random.default_rng(utt.seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    sf.write(str(tmp), audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)  # atomic: a file at `path` is always complete
    return audio.size / SAMPLE_RATE


def _render_chunk(args: tuple[list[Utterance], str]) -> list[float]:
    chunk, out = args
    return [render(u, Path(out)) for u in chunk]


def _chunks(items: list[Utterance], size: int) -> Iterable[list[Utterance]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def build_corpus(spec: CorpusSpec, out: str | Path, workers: int | None = None, progress: bool = True) -> Path:
    """Build (or finish building) the corpus of ``spec`` in ``out``; returns ``out``. See the module's docstring.

    Raises:
        ValueError: ``out`` holds a corpus of other settings (``corpus.json`` differs), or bad settings.
    """
    from omni.data.espeak import english_voices

    check_choice("kind", spec.kind, Kind)
    for name, n in spec.sizes().items():
        if n < 1:
            raise ValueError(f"num_{name}: expected a positive number of utterances, got {n}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = out / "corpus.json"
    settings = asdict(spec)
    if meta.exists() and json.loads(meta.read_text()).get("spec") != settings:
        raise ValueError(
            f"out: {out} holds a corpus built with other settings ({meta}); pick another --out or delete it"
        )
    sentences = None
    if spec.kind == "sentences":
        raw = Path(spec.text).read_text(encoding="utf-8") if spec.text else _kjv_text()
        sentences = read_sentences(raw, spec.min_words, spec.max_words)
    voices = english_voices()
    utts = plan(spec, voices, sentences)
    _write_atomic(meta, json.dumps({"spec": settings, "sample_rate": SAMPLE_RATE}, indent=1))
    workers = workers or min(os.cpu_count() or 1, 8)
    durations = _render_all(utts, out, workers, progress)
    by_split = split_voices(voices, spec)
    for split in SPLITS:
        rows = [
            {
                "audio_filepath": u.relpath,
                "duration": round(d, 4),
                "text": u.text,
                "speaker": u.voice,
                "rate": u.rate,
                "pitch": u.pitch,
            }
            for u, d in zip(utts, durations, strict=True)
            if u.split == split
        ]
        _write_atomic(out / f"{split}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        _write_atomic(out / f"{split}_voices.txt", "".join(v + "\n" for v in by_split[split]))
    return out


def _render_all(utts: list[Utterance], out: Path, workers: int, progress: bool) -> list[float]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    chunks = list(_chunks(utts, 64))
    durations: list[float] = []
    columns = ("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task(f"speech corpus -> {out}", total=len(utts))
        if workers <= 1:
            results: Iterable[list[float]] = (_render_chunk((c, str(out))) for c in chunks)
            for r in results:
                durations += r
                bar.advance(task, len(r))
        else:
            with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
                for r in pool.map(_render_chunk, [(c, str(out)) for c in chunks]):
                    durations += r
                    bar.advance(task, len(r))
    return durations


def main(argv: Sequence[str] | None = None) -> Path:
    """``omni data speech --kind digits|sentences --out DIR``."""
    p = argparse.ArgumentParser(prog="omni data speech", description=__doc__.split("\n\n")[0])
    p.add_argument("--kind", choices=["digits", "sentences"], default="digits")
    p.add_argument("--out", required=True, help="the corpus folder (created; an unfinished build there resumes)")
    defaults = CorpusSpec()
    for name in ("num_train", "num_val", "num_test", "seed", "min_words", "max_words"):
        p.add_argument(f"--{name}", type=int, default=getattr(defaults, name))
    for name in ("val_voices", "test_voices", "empty_fraction"):
        p.add_argument(f"--{name}", type=float, default=getattr(defaults, name))
    p.add_argument("--text", default=None, help="sentences: a UTF-8 text file to read sentences from")
    p.add_argument("--workers", type=int, default=None, help="processes (default: the CPU count, at most 8)")
    a = vars(p.parse_args(argv))
    out, workers = a.pop("out"), a.pop("workers")
    spec = CorpusSpec(**a)
    path = build_corpus(spec, out, workers)
    print(f"corpus: {path} ({', '.join(f'{k} {v}' for k, v in spec.sizes().items())} utterances)")
    return path
