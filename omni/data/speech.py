"""Speech recognition data: utterances (audio file, duration, transcript) -> padded batches in duration buckets.

``SpeechDataModule`` is the machinery every speech corpus shares: audio read with ``soundfile``, mixed to mono and
resampled to ``sample_rate``; transcripts normalised (``omni.data.text.normalize_text``) and encoded with a
character or a subword vocabulary; optional speed perturbation of training audio; batches from a
``DurationBucketSampler`` under a budget of padded seconds, sharded over DDP ranks. A corpus only says which
utterances each split holds (``utterances``): ``ManifestDataModule`` reads NeMo-style JSON-lines manifests, and
``omni.data.speech_corpora`` reads LibriSpeech and Speech Commands folders.

Every batch::

    {"audio":  {"audio": (B, T) float32 at sample_rate, zero padded, "lengths": (B,) long samples},
     "target": {"ids": (B, L) long = BOS, vocab.encode(text)..., EOS, padded with PAD = 0, "mask": (B, L) bool},
     "text":   list[str], the normalised references,
     "key":    list[str], the audio file of each utterance}
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf
import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from omni.choices import check_choice
from omni.data.base import OmniDataModule, check_train_fraction, kept_share
from omni.data.buckets import BatchOf, DurationBucketSampler
from omni.data.text import BLANK, BOS, EOS, PAD, CharVocab, SubwordVocab, Vocab, normalize_text
from omni.data.whisper_vocab import WhisperVocab

__all__ = [
    "ManifestDataModule",
    "SpeechDataModule",
    "SpeechDataset",
    "Utterance",
    "collate_speech",
    "load_audio",
    "read_manifest",
]

SpeechSplit = Literal["train", "val", "test", "predict"]
VocabKind = Literal["char", "subword", "whisper", "whisper.en"]
MANIFEST_KEYS = ("audio_filepath", "duration", "text")
STAGE_SPLITS: dict[str, tuple[SpeechSplit, ...]] = {
    "fit": ("train", "val"),
    "validate": ("val",),
    "test": ("test",),
    "predict": ("predict",),
}


@dataclass(frozen=True)
class Utterance:
    """One utterance: its audio file, length in seconds, raw transcript, and where it was listed (for errors)."""

    audio: str
    duration: float
    text: str
    origin: str
    speaker: str | None = None


def read_manifest(path: str | Path, name: str = "manifest") -> list[Utterance]:
    """The utterances of a NeMo JSON-lines manifest: one object per line with ``audio_filepath`` (absolute, or
    relative to the manifest's folder), ``duration`` (seconds), ``text`` and optionally ``speaker``; other keys are
    ignored, blank lines skipped. ``name`` is the argument that gave ``path``, for the error of a missing file.

    Raises:
        ValueError: naming the manifest and line: not JSON, a key missing or of the wrong type, a missing audio file.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{name}: expected a JSON-lines file, got {str(path)!r} (not found)")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: expected a JSON object per line, got {line!r:.100} ({e.msg})") from None
        if not isinstance(row, dict) or any(k not in row for k in MANIFEST_KEYS):
            keys = sorted(row) if isinstance(row, dict) else type(row).__name__
            raise ValueError(f"{where}: expected the keys {', '.join(MANIFEST_KEYS)}, got {keys}")
        audio, duration, text = (row[k] for k in MANIFEST_KEYS)
        if not isinstance(audio, str) or not isinstance(text, str):
            raise ValueError(f"{where}: expected audio_filepath and text to be strings, got {audio!r}, {text!r}")
        if isinstance(duration, bool) or not isinstance(duration, int | float) or not 0 <= duration < math.inf:
            raise ValueError(f"{where}: duration: expected a non-negative number of seconds, got {duration!r}")
        file = path.parent / audio  # an absolute audio_filepath stays as it is
        if not file.is_file():
            raise ValueError(f"{where}: audio_filepath: expected an existing audio file, got {audio!r} ({file})")
        speaker = row.get("speaker")
        out.append(Utterance(str(file), float(duration), text, where, None if speaker is None else str(speaker)))
    return out


def unreadable(audio: str | Path, origin: str, error: Exception) -> ValueError:
    """The error for an audio file ``soundfile`` cannot open, naming the file and where it was listed."""
    return ValueError(f"{audio}: expected an audio file soundfile can read (listed at {origin}), got: {error}")


def load_audio(utt: Utterance, sample_rate: int) -> Tensor:
    """(T,) float32 mono waveform of ``utt`` at ``sample_rate`` (channels averaged, resampled if needed)."""
    try:
        wave, rate = sf.read(utt.audio, dtype="float32", always_2d=True)  # (T, C)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise unreadable(utt.audio, utt.origin, e) from None
    mono = wave[:, 0] if wave.shape[1] == 1 else wave.mean(axis=1)
    return resample(torch.from_numpy(np.ascontiguousarray(mono)), rate, sample_rate)


def resample(wave: Tensor, orig: int, new: int) -> Tensor:
    """``wave`` (T,) at ``orig`` Hz resampled to ``new`` Hz: polyphase filtering (``scipy.signal.resample_poly``, a
    Kaiser-windowed sinc) with the rates reduced by their gcd.

    In a data loader this runs once per utterance on a short clip: scipy's C loop takes well under a millisecond
    where ``torchaudio.functional.resample`` spends 20-30 ms building its kernel and launching small ops.
    """
    if orig == new:
        return wave
    from scipy.signal import resample_poly

    g = math.gcd(orig, new)
    return torch.from_numpy(resample_poly(wave.numpy(), new // g, orig // g).astype(np.float32))


class SpeechDataset(Dataset):
    """Utterances as ``{"audio": (T,) float32, "ids": (L,) long = BOS ... EOS, "text": str, "key": str}``."""

    def __init__(
        self, utterances: Sequence[Utterance], vocab: Vocab, sample_rate: int, speeds: Sequence[float] | None = None
    ) -> None:
        """
        Args:
            utterances: what the dataset holds.
            vocab: encodes the normalised transcripts.
            sample_rate: the rate every waveform is brought to.
            speeds: speed perturbation: each item is played at a factor drawn uniformly from these (the global
                torch RNG, seeded per worker) by resampling, which changes tempo and pitch as Kaldi and NeMo do.
                None: none.
        """
        self.utterances, self.sample_rate, self.speeds = list(utterances), sample_rate, speeds
        self.texts = [normalize_text(u.text) for u in self.utterances]
        self.ids = [torch.tensor([vocab.bos_id, *vocab.encode(t), vocab.eos_id]) for t in self.texts]

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, i: int) -> dict[str, Any]:
        utt = self.utterances[i]
        wave = load_audio(utt, self.sample_rate)
        if self.speeds:
            speed = self.speeds[int(torch.randint(len(self.speeds), ()))]
            # played `speed` times faster: the samples are read as if recorded at speed x the rate
            wave = resample(wave, round(self.sample_rate * speed), self.sample_rate)
        return {"audio": wave, "ids": self.ids[i], "text": self.texts[i], "key": utt.audio}


def collate_speech(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Items of ``SpeechDataset`` -> the batch layout of the module docstring."""
    ids = [it["ids"] for it in items]
    target_lengths = torch.tensor([len(x) for x in ids])
    return {
        "audio": {
            "audio": pad_sequence([it["audio"] for it in items], batch_first=True),  # (B, T)
            "lengths": torch.tensor([len(it["audio"]) for it in items], dtype=torch.long),
        },
        "target": {
            "ids": pad_sequence(ids, batch_first=True, padding_value=PAD),  # (B, L)
            "mask": torch.arange(int(target_lengths.max()))[None] < target_lengths[:, None],
        },
        "text": [it["text"] for it in items],
        "key": [it["key"] for it in items],
    }


class SpeechDataModule(OmniDataModule):
    """Shared machinery of the speech data modules (see the module docstring); a subclass implements
    ``utterances(split)``.

    ``vocab`` (the object) is there after construction for ``vocab="char"`` and after ``setup`` for ``"subword"``
    (it is learned from the training transcripts); ``vocab_size`` is known after construction for both (a subword
    vocabulary has at most ``subword_size`` ids). ``pad_id`` = ``blank_id`` = 0, ``bos_id`` = 1, ``eos_id`` = 2;
    ``whisper`` / ``whisper.en`` (Whisper's own tokenizer, to fine-tune a Whisper checkpoint) has its own ids (see
    ``omni.data.whisper_vocab``).
    """

    pad_id, blank_id, bos_id, eos_id = PAD, BLANK, BOS, EOS

    def __init__(
        self,
        vocab: VocabKind = "char",
        subword_size: int = 256,
        sample_rate: int = 16000,
        max_batch_seconds: float = 200.0,
        num_buckets: int = 10,
        batch_size: int | None = None,
        max_duration: float | None = None,
        speed_perturb: list[float] | None = [0.9, 1.0, 1.1],  # noqa: B006 (LightningCLI shows it; never mutated)
        num_workers: int = 0,
        seed: int = 0,
        train_fraction: float = 1.0,
    ) -> None:
        """
        Args:
            vocab: ``char`` (letters, space and apostrophe), ``subword`` (a BPE learned from the training
                transcripts in ``setup``), or Whisper's tokenizer: ``whisper`` (multilingual models) or
                ``whisper.en`` (English-only models); needs the ``whisper`` extra.
            subword_size: ids of the subword vocabulary, specials included (>= 32).
            sample_rate: Hz every waveform is resampled to.
            max_batch_seconds: the most padded audio per batch, in seconds (batch size x its longest utterance;
                speed perturbation counted); a longer utterance is a batch alone.
            num_buckets: duration buckets batches are drawn from (see ``DurationBucketSampler``).
            batch_size: at most this many utterances per batch (near-equal batches) instead of ``max_batch_seconds``.
            max_duration: drop training utterances longer than this many seconds; None keeps all.
            speed_perturb: speed factors for training audio, one drawn per utterance (resampling: tempo and pitch
                change together); None or [] for none.
            num_workers: DataLoader worker processes; 0 loads in the main process.
            seed: seed of the batch order (with the epoch) and of nothing else.
            train_fraction: keep this share of the training utterances (after ``max_duration``), drawn with a fixed
                seed: the same cut in every run. Validation and test are untouched.
        """
        super().__init__(1 if batch_size is None else batch_size, num_workers)  # checks both
        check_choice("vocab", vocab, VocabKind)
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < 1:
            raise ValueError(f"sample_rate: expected a positive int in Hz, got {sample_rate!r}")
        if isinstance(subword_size, bool) or not isinstance(subword_size, int) or subword_size < 32:
            raise ValueError(f"subword_size: expected an int >= 32 (4 specials and 28 symbols), got {subword_size!r}")
        if max_duration is not None and not max_duration > 0:
            raise ValueError(f"max_duration: expected a positive number of seconds or None, got {max_duration!r}")
        if speed_perturb and not all(isinstance(s, int | float) and 0 < s < math.inf for s in speed_perturb):
            raise ValueError(f"speed_perturb: expected positive speed factors, got {speed_perturb!r}")
        check_train_fraction(train_fraction)
        self.train_fraction = train_fraction
        DurationBucketSampler([1.0], max_batch_seconds, num_buckets, batch_size, num_replicas=1, rank=0)  # checks
        self.vocab_kind, self.subword_size, self.sample_rate, self.seed = vocab, subword_size, sample_rate, seed
        self.max_batch_seconds, self.num_buckets, self.batch_size = max_batch_seconds, num_buckets, batch_size
        self.max_duration, self.speed_perturb = max_duration, list(speed_perturb or [])
        self.vocab: Vocab | WhisperVocab | None = CharVocab() if vocab == "char" else None
        self.vocab_size = CharVocab().vocab_size if vocab == "char" else subword_size
        if vocab in ("whisper", "whisper.en"):
            self.vocab = WhisperVocab.from_kind(vocab)
            self.vocab_size = self.vocab.vocab_size
            self.pad_id, self.blank_id, self.bos_id, self.eos_id = (
                self.vocab.pad_id,
                self.vocab.blank_id,
                self.vocab.bos_id,
                self.vocab.eos_id,
            )
        self.predict_set: SpeechDataset | None = None
        self._train_utts: list[Utterance] | None = None

    # ------------------------------------------------------------------ what a corpus provides
    def utterances(self, split: SpeechSplit) -> list[Utterance]:
        """The utterances of ``split`` (``predict``: what ``omni predict`` transcribes); a ``ValueError`` naming
        the argument when the corpus was given none for it."""
        raise NotImplementedError

    def _dataset(self, split: SpeechSplit) -> SpeechDataset:
        """The dataset of ``split``, built on first use (the subword vocabulary first, from the training texts)."""
        if self.vocab is None:
            self.vocab = SubwordVocab.train([u.text for u in self._train_list()], self.subword_size)
        if getattr(self, f"{split}_set") is None:
            utts = self._train_list() if split == "train" else self.utterances(split)
            if not utts:
                raise ValueError(f"{type(self).__name__}: expected utterances in the {split} split, got none")
            speeds = self.speed_perturb if split == "train" else None
            setattr(self, f"{split}_set", SpeechDataset(utts, self.vocab, self.sample_rate, speeds))
        return getattr(self, f"{split}_set")

    def _train_list(self) -> list[Utterance]:
        if self._train_utts is None:
            utts = self.utterances("train")
            utts = [u for u in utts if self.max_duration is None or u.duration <= self.max_duration]
            self._train_utts = [utts[i] for i in kept_share(len(utts), self.train_fraction)]
        return self._train_utts

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        """Build the datasets ``stage`` needs: train and val for ``fit`` (and None), the split of the others."""
        for split in STAGE_SPLITS.get(stage, ("train", "val")):
            self._dataset(split)

    def _loader(self, ds: Dataset | None, split: str) -> DataLoader:
        """The loader of ``split`` (its dataset is built if ``setup`` has not; the base's ``ds`` is not needed):
        duration-bucketed batches, sharded with the trainer's world size and rank when there is a trainer (else
        torch.distributed's, when initialised)."""
        dataset = self._dataset(split)  # type: ignore[arg-type]
        train = split == "train"
        durations = [u.duration for u in dataset.utterances]
        if train and self.speed_perturb:  # the slowest speed makes the longest audio
            durations = [d / min(self.speed_perturb) for d in durations]
        shards = (self.trainer.distributed_sampler_kwargs if self.trainer is not None else None) or {}
        sampler = DurationBucketSampler(
            durations,
            self.max_batch_seconds,
            self.num_buckets,
            self.batch_size,
            shuffle=train,
            seed=self.seed,
            num_replicas=shards.get("num_replicas"),
            rank=shards.get("rank"),
            even=split != "predict",  # a prediction is made once per utterance; uneven ranks are fine there
        )
        if train:
            self.resume_sampler(sampler, 1)
        return DataLoader(
            BatchOf(dataset),
            sampler=sampler,  # a DistributedSampler of batches: Lightning keeps it under DDP
            batch_size=None,
            generator=torch.Generator().manual_seed(torch.initial_seed() % 2**31),  # worker seeds
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_speech,
        )

    def predict_dataloader(self) -> DataLoader:
        return self._loader(None, "predict")


class ManifestDataModule(SpeechDataModule):
    """Speech from NeMo-style JSON-lines manifests (``audio_filepath``, ``duration``, ``text``, optional
    ``speaker``), such as the ones ``omni data speech`` writes. Predictions run on ``predict_manifest``, else on
    ``test_manifest``."""

    def __init__(
        self,
        train_manifest: str,
        val_manifest: str,
        test_manifest: str | None = None,
        predict_manifest: str | None = None,
        vocab: VocabKind = "char",
        subword_size: int = 256,
        sample_rate: int = 16000,
        max_batch_seconds: float = 200.0,
        num_buckets: int = 10,
        batch_size: int | None = None,
        max_duration: float | None = None,
        speed_perturb: list[float] | None = [0.9, 1.0, 1.1],  # noqa: B006
        num_workers: int = 0,
        seed: int = 0,
        train_fraction: float = 1.0,
    ) -> None:
        """
        Args:
            train_manifest: the training manifest (its transcripts also train a subword vocabulary).
            val_manifest: the validation manifest.
            test_manifest: the test manifest; needed by ``test``.
            predict_manifest: what ``predict`` transcribes; None: the test manifest.
            vocab: ``char``, ``subword``, ``whisper`` or ``whisper.en``; see ``SpeechDataModule``.
            subword_size: ids of the subword vocabulary, specials included (>= 32).
            sample_rate: Hz every waveform is resampled to.
            max_batch_seconds: the most padded audio per batch, in seconds.
            num_buckets: duration buckets batches are drawn from.
            batch_size: at most this many utterances per batch (near-equal batches) instead of ``max_batch_seconds``.
            max_duration: drop training utterances longer than this many seconds; None keeps all.
            speed_perturb: speed factors for training audio; None or [] for none.
            num_workers: DataLoader worker processes; 0 loads in the main process.
            seed: seed of the batch order (with the epoch).
            train_fraction: keep this share of the training utterances (the same cut in every run).
        """
        super().__init__(
            vocab=vocab,
            subword_size=subword_size,
            sample_rate=sample_rate,
            max_batch_seconds=max_batch_seconds,
            num_buckets=num_buckets,
            batch_size=batch_size,
            max_duration=max_duration,
            speed_perturb=speed_perturb,
            num_workers=num_workers,
            seed=seed,
            train_fraction=train_fraction,
        )
        self.manifests: dict[SpeechSplit, str | None] = {
            "train": train_manifest,
            "val": val_manifest,
            "test": test_manifest,
            "predict": predict_manifest or test_manifest,
        }

    def utterances(self, split: SpeechSplit) -> list[Utterance]:
        path = self.manifests[split]
        if path is None:
            name = "test_manifest" if split == "test" else "predict_manifest or test_manifest"
            raise ValueError(f"{name}: expected a manifest for the {split} split, got None")
        return read_manifest(path, "predict_manifest (or test_manifest)" if split == "predict" else f"{split}_manifest")
