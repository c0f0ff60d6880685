"""LibriSpeech and Speech Commands folders (torchaudio's layouts, built here with soundfile) -> speech batches."""

from __future__ import annotations

from pathlib import Path

import pytest

from omni.data.speech_corpora import LibriSpeechDataModule, SpeechCommandsDataModule
from omni.data.text import BOS, EOS, CharVocab

LIBRI = {
    "train-clean-100": {"19-198": ["CHAPTER ONE", "MISSUS RACHEL LYNDE WAS SURPRISED"], "26-495": ["IT'S A TEST"]},
    "train-clean-360": {"100-121669": ["ANOTHER SUBSET"]},
    "dev-clean": {"84-121123": ["GO DO YOU HEAR"]},
    "test-clean": {"61-70968": ["HE BEGAN A CONFUSED COMPLAINT", "GIVE NOT SO EARNEST A MIND"]},
}


@pytest.fixture
def libri(tmp_path, tone) -> Path:
    for subset, chapters in LIBRI.items():
        for chapter, texts in chapters.items():
            speaker, number = chapter.split("-")
            folder = tmp_path / "LibriSpeech" / subset / speaker / number
            for i, _ in enumerate(texts):
                tone(folder / f"{chapter}-{i:04d}.flac", 0.3 + 0.1 * i)
            trans = "".join(f"{chapter}-{i:04d} {t}\n" for i, t in enumerate(texts))
            (folder / f"{chapter}.trans.txt").write_text(trans)
    return tmp_path


@pytest.fixture
def commands(tmp_path, tone) -> Path:
    folder = tmp_path / "SpeechCommands" / "speech_commands_v0.02"
    for word in ("yes", "no", "marvin"):
        for speaker in ("0a7c2a8d", "1b4c9b89", "2c5d0c9a"):
            tone(folder / word / f"{speaker}_nohash_0.wav", 1.0 if word != "no" else 0.7, freq=300.0)
    tone(folder / "_background_noise_" / "white_noise.wav", 2.0)
    (folder / "validation_list.txt").write_text("yes/1b4c9b89_nohash_0.wav\nno/1b4c9b89_nohash_0.wav\n")
    (folder / "testing_list.txt").write_text("marvin/2c5d0c9a_nohash_0.wav\n")
    return tmp_path


def keys_and_texts(loader, parts: int = 1) -> dict[str, str]:
    """{the last ``parts`` parts of each key's path: its text} over a whole loader."""
    return {
        "/".join(Path(k).parts[-parts:]): t
        for batch in loader
        for k, t in zip(batch["key"], batch["text"], strict=True)
    }


def test_librispeech_splits_transcripts_and_durations(libri):
    dm = LibriSpeechDataModule(str(libri), train_splits=["train-clean-100", "train-clean-360"], speed_perturb=None)
    dm.setup("fit")
    assert keys_and_texts(dm.train_dataloader()) == {
        "19-198-0000.flac": "chapter one",
        "19-198-0001.flac": "missus rachel lynde was surprised",
        "26-495-0000.flac": "it's a test",
        "100-121669-0000.flac": "another subset",
    }
    assert keys_and_texts(dm.val_dataloader()) == {"84-121123-0000.flac": "go do you hear"}
    utts = sorted(dm.train_set.utterances, key=lambda u: u.audio)
    assert [round(u.duration, 3) for u in utts] == [0.3, 0.4, 0.3, 0.3]
    assert [u.speaker for u in utts] == ["19", "19", "26", "100"]
    batch = next(iter(dm.val_dataloader()))
    assert batch["target"]["ids"][0].tolist() == [BOS, *CharVocab().encode("go do you hear"), EOS]
    dm.setup("predict")
    assert sorted(keys_and_texts(dm.predict_dataloader())) == ["61-70968-0000.flac", "61-70968-0001.flac"]


def test_librispeech_errors_name_what_is_missing(libri):
    with pytest.raises(ValueError, match="root: expected the LibriSpeech subset 'train-other-500' at .*no such folder"):
        LibriSpeechDataModule(str(libri), train_splits=["train-other-500"]).setup("fit")
    (libri / "LibriSpeech/dev-clean/84/121123/84-121123-0000.flac").unlink()
    with pytest.raises(ValueError, match=r"84-121123.trans.txt:1: expected the audio file 84-121123-0000.flac next"):
        LibriSpeechDataModule(str(libri)).setup("validate")
    with pytest.raises(ValueError, match="train_splits: expected a non-empty list of subset names, got 'train-clean"):
        LibriSpeechDataModule(str(libri), train_splits="train-clean-100")


def test_speech_commands_splits_follow_the_lists_and_skip_background_noise(commands):
    dm = SpeechCommandsDataModule(str(commands), speed_perturb=None, max_batch_seconds=3.0)
    dm.setup("fit")
    train = {f"{Path(u.audio).parent.name}/{Path(u.audio).name}": u.text for u in dm.train_set.utterances}
    assert train == {
        "yes/0a7c2a8d_nohash_0.wav": "yes",
        "yes/2c5d0c9a_nohash_0.wav": "yes",
        "no/0a7c2a8d_nohash_0.wav": "no",
        "no/2c5d0c9a_nohash_0.wav": "no",
        "marvin/0a7c2a8d_nohash_0.wav": "marvin",
        "marvin/1b4c9b89_nohash_0.wav": "marvin",
    }
    assert keys_and_texts(dm.val_dataloader(), parts=2) == {
        "yes/1b4c9b89_nohash_0.wav": "yes",
        "no/1b4c9b89_nohash_0.wav": "no",
    }
    assert {round(u.duration, 2) for u in dm.val_set.utterances} == {0.7, 1.0}
    assert {u.speaker for u in dm.val_set.utterances} == {"1b4c9b89"}
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    assert batch["text"] == ["marvin"] and batch["audio"]["lengths"].tolist() == [16000]


def test_speech_commands_errors(commands, tmp_path):
    (commands / "SpeechCommands/speech_commands_v0.02/testing_list.txt").unlink()
    with pytest.raises(ValueError, match="root: expected testing_list.txt in .*speech_commands_v0.02, got no such"):
        SpeechCommandsDataModule(str(commands)).setup("fit")
    with pytest.raises(ValueError, match="root: expected Speech Commands v0.02 at .*, got no such folder"):
        SpeechCommandsDataModule(str(tmp_path / "elsewhere")).setup("fit")


@pytest.mark.parametrize("kind", ["libri", "commands"])
def test_a_train_fraction_keeps_the_same_share_of_training_clips_and_every_validation_one(kind, libri, commands):
    make = {
        "libri": lambda **kw: LibriSpeechDataModule(str(libri), train_splits=["train-clean-100", "train-clean-360"],
                                                    speed_perturb=None, **kw),
        "commands": lambda **kw: SpeechCommandsDataModule(str(commands), speed_perturb=None, **kw),
    }[kind]  # fmt: skip
    full, half = make(), make(train_fraction=0.5)
    for dm in (full, half):
        dm.setup("fit")
    everything = sorted(u.audio for u in full.train_set.utterances)
    kept = sorted(u.audio for u in half.train_set.utterances)
    assert len(kept) == len(everything) // 2 and set(kept) < set(everything)
    again = make(train_fraction=0.5)
    again.setup("fit")
    assert sorted(u.audio for u in again.train_set.utterances) == kept  # the same cut in every run
    assert sorted(u.audio for u in half.val_set.utterances) == sorted(u.audio for u in full.val_set.utterances)
