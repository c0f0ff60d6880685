"""ManifestDataModule: manifests -> batches of the speech layout; audio (mono, resampled, speed-perturbed), targets,
the seconds budget, the subword vocabulary, manifest errors, and how Lightning treats its loaders under DDP."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import soundfile as sf
import torch
from lightning import LightningModule, Trainer
from lightning.fabric.utilities.data import _set_sampler_epoch
from lightning.pytorch.trainer.states import RunningStage
from torch.utils.data import DataLoader

from omni.data.speech import ManifestDataModule, read_manifest
from omni.data.text import BOS, EOS, PAD, CharVocab, SubwordVocab, normalize_text

TEXTS = ["Seven 7 seas", "Don't panic!", "the quick brown fox", "Hello, World", "a b c", "oh one two"]


def write_manifest(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def corpus(tmp_path, tone) -> Path:
    """train: 10 clips of 0.2-1.1 s (clip 3 stereo at 8 kHz, paths relative; clip 9 absolute); val and test: 3."""
    rows: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for split, n in (("train", 10), ("val", 3), ("test", 3)):
        for i in range(n):
            rel = f"audio/{split}/{i:03d}.{'flac' if i % 2 else 'wav'}"
            seconds = 0.2 + 0.1 * i
            rate, channels = (8000, 2) if (split, i) == ("train", 3) else (16000, 1)
            tone(tmp_path / rel, seconds, rate, channels, freq=200.0 + 50 * i)
            path = str(tmp_path / rel) if i == 9 else rel
            rows[split].append({"audio_filepath": path, "duration": seconds, "text": TEXTS[i % 6], "speaker": "s"})
    for split, r in rows.items():
        write_manifest(tmp_path / f"{split}.jsonl", r)
    return tmp_path


def module(corpus: Path, **kw) -> ManifestDataModule:
    kw = {"speed_perturb": None, **kw}
    return ManifestDataModule(str(corpus / "train.jsonl"), str(corpus / "val.jsonl"), str(corpus / "test.jsonl"), **kw)


def test_batches_hold_the_audio_and_targets_of_the_manifest(corpus):
    dm = module(corpus, max_batch_seconds=2.0, num_buckets=2)
    dm.setup("fit")
    rows = [json.loads(line) for line in (corpus / "train.jsonl").read_text().splitlines()]
    seen = set()
    for batch in dm.train_dataloader():
        audio, lengths = batch["audio"]["audio"], batch["audio"]["lengths"]
        ids, mask = batch["target"]["ids"], batch["target"]["mask"]
        assert audio.dtype == torch.float32 and lengths.dtype == ids.dtype == torch.long and mask.dtype == torch.bool
        assert audio.shape == (len(batch["key"]), int(lengths.max())) and ids.shape == mask.shape
        for b, key in enumerate(batch["key"]):
            i = int(Path(key).stem)
            seen.add(i)
            want, rate = sf.read(key, dtype="float32", always_2d=True)
            assert int(lengths[b]) == round(len(want) * 16000 / rate)  # 8 kHz stereo comes back at 16 kHz
            if rate == 16000:
                assert torch.allclose(audio[b, : lengths[b]], torch.from_numpy(want[:, 0]))
            assert audio[b, lengths[b] :].eq(0).all()  # zero padded
            text = normalize_text(rows[i]["text"])
            assert batch["text"][b] == text
            assert ids[b][mask[b]].tolist() == [BOS, *CharVocab().encode(text), EOS] and ids[b][~mask[b]].eq(PAD).all()
    assert seen == set(range(10))
    assert (dm.vocab_size, dm.pad_id, dm.blank_id, dm.bos_id, dm.eos_id) == (32, 0, 0, 1, 2)


def test_stereo_is_mixed_to_mono_and_resampled(corpus):
    dm = module(corpus)
    dm.setup("fit")
    item = dm.train_set[3]
    raw, _ = sf.read(item["key"], dtype="float32", always_2d=True)  # (T, 2) at 8 kHz, channel 1 twice channel 0
    assert raw.shape[1] == 2 and item["audio"].shape == (2 * len(raw),)
    mono = torch.from_numpy(raw.mean(axis=1))
    assert torch.allclose(item["audio"][::2][100:-100], mono[100:-100], atol=2e-2)  # same signal, twice the rate


def test_speed_perturbation_changes_training_audio_only(corpus):
    dm = module(corpus, speed_perturb=[1.25])
    dm.setup("fit")
    assert len(dm.train_set[0]["audio"]) == round(0.2 * 16000 / 1.25)  # 1.25 x faster: 0.16 s
    assert len(dm.val_set[0]["audio"]) == round(0.2 * 16000)  # validation untouched
    dm = module(corpus, speed_perturb=[0.9, 1.0, 1.1])
    dm.setup("fit")
    torch.manual_seed(0)
    lengths = {len(dm.train_set[5]["audio"]) for _ in range(30)}
    assert lengths == {math.ceil(0.7 * 16000 / s) for s in (0.9, 1.0, 1.1)}  # resample rounds up


def test_padded_seconds_stay_within_budget_with_the_slowest_speed(corpus):
    dm = module(corpus, max_batch_seconds=1.5, num_buckets=3, speed_perturb=[0.8, 1.0])
    dm.setup("fit")
    for batch in dm.train_dataloader():
        b, t = batch["audio"]["audio"].shape
        assert b == 1 or b * t <= 1.5 * 16000 + 2 * b  # + resampling's rounding
    fixed = module(corpus, batch_size=4, num_buckets=1)
    fixed.setup("fit")
    assert [len(b["key"]) for b in fixed.val_dataloader()] == [3]
    assert sorted(len(b["key"]) for b in fixed.train_dataloader()) == [3, 3, 4]  # near-equal batches of <= 4


def test_max_duration_drops_long_training_clips_only(corpus):
    dm = module(corpus, max_duration=0.55)
    dm.setup("fit")
    assert sorted(round(u.duration, 2) for u in dm.train_set.utterances) == [0.2, 0.3, 0.4, 0.5]
    assert len(dm.val_set) == 3
    with pytest.raises(ValueError, match="expected utterances in the train split, got none"):
        module(corpus, max_duration=0.1).setup("fit")


def test_subword_vocabulary_is_learned_in_setup(corpus):
    dm = module(corpus, vocab="subword", subword_size=40)
    assert dm.vocab is None and dm.vocab_size == 40  # the size is known before setup, for configs to link
    dm.setup("fit")
    assert isinstance(dm.vocab, SubwordVocab) and dm.vocab.vocab_size == 40
    batch = next(iter(dm.val_dataloader()))
    for ids, mask, text in zip(batch["target"]["ids"], batch["target"]["mask"], batch["text"], strict=True):
        real = ids[mask].tolist()
        assert real[0] == BOS and real[-1] == EOS and dm.vocab.decode(real) == text
    again = module(corpus, vocab="subword", subword_size=40)
    again.setup("test")  # a test run learns the same vocabulary from the training transcripts
    assert again.vocab.tokenizer.to_str() == dm.vocab.tokenizer.to_str()


def test_predict_reads_the_predict_manifest_else_the_test_one(corpus):
    dm = module(corpus)
    dm.setup("predict")
    keys = [k for b in dm.predict_dataloader() for k in b["key"]]
    assert sorted(Path(k).name for k in keys) == ["000.wav", "001.flac", "002.wav"] and "test" in keys[0]
    dm = ManifestDataModule(str(corpus / "train.jsonl"), str(corpus / "val.jsonl"), speed_perturb=None)
    dm.setup()  # train and val only: no test manifest needed
    with pytest.raises(ValueError, match="test_manifest: expected a manifest for the test split, got None"):
        dm.test_dataloader()
    with pytest.raises(ValueError, match="predict_manifest or test_manifest: expected a manifest"):
        dm.setup("predict")


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("{not json", r"train.jsonl:2: expected a JSON object per line, got '{not json'"),
        ('{"audio_filepath": "a.wav", "text": "x"}', r"train.jsonl:2: expected the keys audio_filepath, duration, "),
        ('{"audio_filepath": "a.wav", "duration": "1", "text": "x"}', r"train.jsonl:2: duration: expected a non-"),
        ('{"audio_filepath": 3, "duration": 1, "text": "x"}', r"train.jsonl:2: expected audio_filepath and text to"),
        ('{"audio_filepath": "nope.wav", "duration": 1, "text": "x"}', r"train.jsonl:2: audio_filepath: expected an "),
        ("[1, 2]", r"train.jsonl:2: expected the keys .*, got list"),
    ],
)
def test_bad_manifest_lines_name_the_file_and_line(corpus, line, match):
    good = (corpus / "train.jsonl").read_text().splitlines()[0]
    (corpus / "train.jsonl").write_text(f"{good}\n{line}\n")
    with pytest.raises(ValueError, match=match):
        read_manifest(corpus / "train.jsonl")
    with pytest.raises(ValueError, match=match):
        module(corpus).setup("fit")


def test_unreadable_audio_and_missing_manifest(corpus):
    (corpus / "audio" / "train" / "000.wav").write_text("not audio")
    dm = module(corpus)
    dm.setup("fit")
    with pytest.raises(ValueError, match=r"000.wav: expected an audio file soundfile can read \(listed at .*:1\)"):
        dm.train_set[0]
    with pytest.raises(ValueError, match="manifest: expected a JSON-lines file, got '.*missing.jsonl' "):
        ManifestDataModule(str(corpus / "missing.jsonl"), str(corpus / "val.jsonl")).setup("fit")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"vocab": "word"}, "vocab: expected one of 'char', 'subword', 'whisper', 'whisper.en', got 'word'"),
        ({"subword_size": 20}, "subword_size: expected an int >= 32"),
        ({"max_batch_seconds": -1.0}, "max_batch_seconds: expected a positive number of seconds"),
        ({"batch_size": 0}, "batch_size: expected >= 1, got 0"),
        ({"speed_perturb": [1.0, -0.5]}, r"speed_perturb: expected positive speed factors, got \[1.0, -0.5\]"),
        ({"max_duration": 0}, "max_duration: expected a positive number of seconds or None, got 0"),
        ({"sample_rate": 16000.0}, "sample_rate: expected a positive int in Hz, got 16000.0"),
    ],
)
def test_bad_arguments(corpus, kwargs, match):
    with pytest.raises(ValueError, match=match):
        module(corpus, **kwargs)


def test_lightning_keeps_the_bucket_sampler_under_ddp_and_sets_its_epoch(corpus):
    trainer = Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_checkpointing=False)
    assert trainer._accelerator_connector.is_distributed and trainer._accelerator_connector.use_distributed_sampler
    dm = module(corpus, max_batch_seconds=1.0)
    dm.trainer = trainer
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert (loader.sampler.num_replicas, loader.sampler.rank) == (2, 0)  # the trainer's world, read by the module
    assert trainer._data_connector._prepare_dataloader(loader, shuffle=True, mode=RunningStage.TRAINING) is loader
    first = [b["key"] for b in loader]
    _set_sampler_epoch(loader, 1)  # what the fit loop calls each epoch
    assert loader.sampler.epoch == 1 and [b["key"] for b in loader] != first
    predict = dm._loader(None, "val")
    redone = trainer._data_connector._prepare_dataloader(predict, shuffle=False, mode=RunningStage.PREDICTING)
    assert redone.sampler is predict.sampler and [b["key"] for b in redone] == [b["key"] for b in predict]
    # what the module avoids: a plain batch sampler gets a DistributedSampler injected, which it cannot take
    plain = DataLoader(dm.train_set, batch_sampler=list(loader.sampler), collate_fn=lambda x: x)
    with pytest.raises(TypeError, match="can't inject a \\(distributed\\) sampler"):
        trainer._data_connector._prepare_dataloader(plain, shuffle=True, mode=RunningStage.TRAINING)
    assert sorted(i for b in loader.sampler.batches() for i in b) == list(range(10))  # each clip once over 2 ranks


class KeyRecorder(LightningModule):
    """Records the keys of every batch it is given; learns nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[tuple[str, int, list[str]]] = []

    def training_step(self, batch: dict, i: int) -> torch.Tensor:
        self.seen.append(("train", self.current_epoch, batch["key"]))
        return self.w * batch["audio"]["audio"].mean()

    def validation_step(self, batch: dict, i: int) -> None:
        self.seen.append(("val", self.current_epoch, batch["key"]))

    def predict_step(self, batch: dict, i: int) -> list[str]:
        return batch["key"]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_lightning_fit_and_predict_see_every_utterance(corpus):
    dm = module(corpus, max_batch_seconds=1.2, num_buckets=3, speed_perturb=[0.9, 1.1])
    model = KeyRecorder()
    kw = {"accelerator": "cpu", "logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    trainer = Trainer(max_epochs=2, num_sanity_val_steps=0, enable_model_summary=False, **kw)
    trainer.fit(model, dm)
    for split, n in (("train", 10), ("val", 3)):
        epochs = [[k for s, e, b in model.seen if (s, e) == (split, epoch) for k in b] for epoch in (0, 1)]
        assert all(sorted(e) == sorted(set(e)) and len(e) == n for e in epochs)
    train = [[tuple(b) for s, e, b in model.seen if (s, e) == ("train", epoch)] for epoch in (0, 1)]
    assert train[0] != train[1]  # Lightning set the epoch: a new order
    keys = [k for batch in trainer.predict(model, dm) for k in batch]
    assert sorted(Path(k).name for k in keys) == ["000.wav", "001.flac", "002.wav"]


def test_train_fraction_keeps_the_same_share_of_training_utterances_and_every_val_and_test_one(corpus):
    full, cut = module(corpus), module(corpus, train_fraction=0.3)
    for dm in (full, cut):
        dm.setup("fit"), dm.setup("test")
    kept = [u.audio for u in cut.train_set.utterances]
    assert len(kept) == 3 and set(kept) < {u.audio for u in full.train_set.utterances}
    assert [u.audio for u in module(corpus, train_fraction=0.3)._train_list()] == kept  # the same cut
    keys = {k for b in cut.train_dataloader() for k in b["key"]}
    assert len(keys) == 3  # the loader serves the kept utterances only
    for split in ("val_set", "test_set"):
        assert [u.audio for u in getattr(cut, split).utterances] == [u.audio for u in getattr(full, split).utterances]
    with pytest.raises(ValueError, match="train_fraction"):
        module(corpus, train_fraction=0)
