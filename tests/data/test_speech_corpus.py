"""The eSpeak NG corpus: voices split by speaker, deterministic, resumable, atomic; silent clips say nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from omni.cli import main as omni_main
from omni.data.espeak import ESpeak, english_voices
from omni.data.speech_corpus import (
    DIGIT_WORDS,
    CorpusSpec,
    build_corpus,
    digit_text,
    plan,
    read_sentences,
    split_of_sentence,
    split_voices,
)

TINY = {"num_train": 6, "num_val": 2, "num_test": 3}


def manifest(out: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (out / f"{split}.jsonl").read_text().splitlines()]


def test_english_voices_are_bases_times_variants():
    voices = english_voices()
    bases = [v for v in voices if "+" not in v]
    assert len(bases) == 8 and "en-us" in bases
    assert len(voices) > 8 * 100  # eSpeak NG 1.52 ships 104 variants
    assert len(set(voices)) == len(voices)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), test=st.floats(0.01, 0.4), val=st.floats(0.01, 0.4))
def test_no_test_or_val_voice_is_heard_in_training(seed, test, val):
    spec = CorpusSpec(seed=seed, test_voices=test, val_voices=val, num_train=300, num_val=30, num_test=30)
    voices = english_voices()
    by_split = split_voices(voices, spec)
    assert sorted(v for s in by_split.values() for v in s) == sorted(voices)  # a partition
    utts = plan(spec, voices)
    heard = {s: {u.voice for u in utts if u.split == s} for s in ("train", "val", "test")}
    assert not heard["train"] & heard["test"] and not heard["train"] & heard["val"] and not heard["val"] & heard["test"]
    assert all(u.voice in by_split[u.split] for u in utts)


def test_plan_is_deterministic_from_the_seed():
    voices = english_voices()
    assert plan(CorpusSpec(seed=3), voices) == plan(CorpusSpec(seed=3), voices)
    assert plan(CorpusSpec(seed=3), voices) != plan(CorpusSpec(seed=4), voices)


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_digit_strings_are_1_to_7_digit_words(seed):
    words = digit_text(np.random.default_rng(seed)).split()
    assert 1 <= len(words) <= 7
    assert set(words) <= {*DIGIT_WORDS, "oh"}


def test_held_out_sentences_never_appear_in_training():
    text = " ".join(f"The {w} man went to the market number {i}. He sat; she stood" for i, w in enumerate("abcdefgh"))
    text += " " + " ".join(f"Sentence {i} has exactly five words here." for i in range(300))
    sentences = read_sentences(text, min_words=3, max_words=14)
    assert "he sat" not in sentences  # two words: too short
    assert "the a man went to the market number zero" in sentences  # normalised: digits spelled, lower case
    spec = CorpusSpec(kind="sentences", num_train=200, num_val=40, num_test=40, test_voices=0.2, val_voices=0.1)
    utts = plan(spec, english_voices(), sentences)
    said = {s: {u.text for u in utts if u.split == s and u.text} for s in ("train", "val", "test")}
    assert said["test"] and said["train"] and not said["test"] & said["train"] and not said["val"] & said["train"]
    assert all(split_of_sentence(u.text, 0.1, 0.2) == u.split for u in utts if u.text)


def test_synthesis_speaks_and_silence_is_silent():
    engine = ESpeak.get()
    wave = engine.synth("seven three", "en-us+f3", rate=175)
    assert engine.sample_rate == 22050
    assert 0.3 < wave.size / engine.sample_rate < 3.0 and np.abs(wave).max() > 0.05
    assert engine.synth("", "en-us").size == 0
    with pytest.raises(ValueError, match=r"voice: expected an eSpeak NG voice.*'xx-nonsense'"):
        engine.synth("one", "xx-nonsense")


def test_build_is_deterministic_resumable_and_atomic(tmp_path):
    spec = CorpusSpec(seed=1, **TINY)
    a = build_corpus(spec, tmp_path / "a", workers=1, progress=False)
    rows = manifest(a, "train")
    assert len(rows) == 6 and set(rows[0]) >= {"audio_filepath", "duration", "text", "speaker"}
    for row in rows:
        audio, rate = sf.read(a / row["audio_filepath"], dtype="float32")
        assert rate == 16000 and audio.ndim == 1
        assert row["duration"] == pytest.approx(audio.size / 16000, abs=1e-4)
    # an interrupted build: one file lost, one half-written temporary left behind, manifests not yet written
    victim = a / rows[2]["audio_filepath"]
    before = victim.read_bytes()
    victim.unlink()
    (victim.parent / "000099.123.tmp").write_bytes(b"RIFF")
    for split in ("train", "val", "test"):
        (a / f"{split}.jsonl").unlink()
    build_corpus(spec, a, workers=2, progress=False)  # resumes with two processes: the same result
    assert victim.read_bytes() == before
    assert manifest(a, "train") == rows
    b = build_corpus(spec, tmp_path / "b", workers=1, progress=False)  # from scratch elsewhere: identical
    assert all((a / r["audio_filepath"]).read_bytes() == (b / r["audio_filepath"]).read_bytes() for r in rows)
    with pytest.raises(ValueError, match=r"out: .* holds a corpus built with other settings"):
        build_corpus(CorpusSpec(seed=2, **TINY), a, workers=1, progress=False)


def test_empty_transcripts_are_noise_or_silence_only(tmp_path):
    out = build_corpus(CorpusSpec(empty_fraction=1.0, **TINY), tmp_path, workers=1, progress=False)
    for row in manifest(out, "train"):
        audio, _ = sf.read(out / row["audio_filepath"], dtype="float32")
        assert row["text"] == "" and row["duration"] >= 0.5
        assert np.sqrt(np.mean(audio**2)) < 0.1  # at most -20 dBFS of noise, no speech


def test_cli_builds_a_corpus(tmp_path, capsys):
    omni_main(["data", "speech", "--kind", "digits", "--out", str(tmp_path), "--num_train", "3", "--num_val", "1",
               "--num_test", "1", "--workers", "1"])  # fmt: skip
    assert len(manifest(tmp_path, "test")) == 1
    assert "train 3, val 1, test 1" in capsys.readouterr().out


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_rooms_keep_the_direct_sound_above_the_reverberation(seed):
    from omni.data.speech_corpus import ROOM_DRR_DB, _room

    h = _room(np.random.default_rng(seed))
    assert np.sum(h**2) == pytest.approx(1.0)
    drr = 10 * np.log10(h[0] ** 2 / np.sum(h[1:] ** 2))
    assert ROOM_DRR_DB[0] - 1e-6 <= drr <= ROOM_DRR_DB[1] + 1e-6
