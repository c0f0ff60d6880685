"""Standard speech corpora in the folder layouts torchaudio's datasets download: LibriSpeech and Speech Commands.

Both list their utterances themselves (no manifest; durations from the audio files' headers) and batch them with
``SpeechDataModule``'s machinery. Download with ``torchaudio.datasets.LIBRISPEECH(root, url=split, download=True)``
or ``SPEECHCOMMANDS(root, download=True)``, or unpack the archives under ``root``.
"""

from __future__ import annotations

from pathlib import Path

import soundfile as sf

from omni.data.speech import SpeechDataModule, SpeechSplit, Utterance, VocabKind, unreadable

__all__ = ["LibriSpeechDataModule", "SpeechCommandsDataModule"]

SPEECH_COMMANDS = "SpeechCommands/speech_commands_v0.02"
BACKGROUND_NOISE = "_background_noise_"


def _folder(path: Path, name: str, what: str) -> Path:
    if not path.is_dir():
        raise ValueError(f"{name}: expected {what} at {path}, got no such folder")
    return path


def _utterance(file: Path, text: str, origin: str, speaker: str | None) -> Utterance:
    try:
        duration = sf.info(str(file)).duration
    except (sf.LibsndfileError, RuntimeError) as e:
        raise unreadable(file, origin, e) from None
    return Utterance(str(file), float(duration), text, origin, speaker)


class LibriSpeechDataModule(SpeechDataModule):
    """LibriSpeech (Panayotov et al., 2015) as ``torchaudio.datasets.LIBRISPEECH`` lays it out:
    ``root/LibriSpeech/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utterance>.flac`` with the transcripts in
    ``<speaker>-<chapter>.trans.txt`` (one ``<utterance id> <TEXT>`` per line). Predictions run on the test split."""

    def __init__(
        self,
        root: str,
        train_splits: list[str] = ["train-clean-100"],  # noqa: B006 (LightningCLI shows it; never mutated)
        val_split: str = "dev-clean",
        test_split: str = "test-clean",
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
            root: the folder holding ``LibriSpeech/``.
            train_splits: the training subsets, joined (``train-clean-100``, ``train-clean-360``,
                ``train-other-500``).
            val_split: the validation subset (``dev-clean`` or ``dev-other``).
            test_split: the test subset (``test-clean`` or ``test-other``), also what ``predict`` transcribes.
            vocab: ``char``, ``subword`` (a BPE learned from the training transcripts), ``whisper`` or ``whisper.en``.
            subword_size: ids of the subword vocabulary, specials included (>= 32).
            sample_rate: Hz every waveform is resampled to (LibriSpeech is recorded at 16 kHz).
            max_batch_seconds: the most padded audio per batch, in seconds.
            num_buckets: duration buckets batches are drawn from.
            batch_size: at most this many utterances per batch (near-equal batches) instead of ``max_batch_seconds``.
            max_duration: drop training utterances longer than this many seconds (LibriSpeech's reach 35 s).
            speed_perturb: speed factors for training audio; None or [] for none.
            num_workers: DataLoader worker processes; 0 loads in the main process.
            seed: seed of the batch order (with the epoch).
            train_fraction: keep this share of the training utterances (the same seeded cut in every run).
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
        if isinstance(train_splits, str) or not train_splits:
            raise ValueError(f"train_splits: expected a non-empty list of subset names, got {train_splits!r}")
        self.root = Path(root)
        self.splits: dict[SpeechSplit, list[str]] = {
            "train": list(train_splits),
            "val": [val_split],
            "test": [test_split],
            "predict": [test_split],
        }

    def utterances(self, split: SpeechSplit) -> list[Utterance]:
        return [u for subset in self.splits[split] for u in self._subset(subset)]

    def _subset(self, subset: str) -> list[Utterance]:
        folder = _folder(self.root / "LibriSpeech" / subset, "root", f"the LibriSpeech subset {subset!r}")
        out = []
        for trans in sorted(folder.glob("*/*/*.trans.txt")):
            for n, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                key, _, text = line.strip().partition(" ")
                where = f"{trans}:{n}"
                audio = trans.parent / f"{key}.flac"
                if not audio.is_file():
                    raise ValueError(f"{where}: expected the audio file {audio.name} next to it, got none")
                out.append(_utterance(audio, text, where, key.split("-")[0]))
        if not out:
            raise ValueError(f"root: expected <speaker>/<chapter>/*.trans.txt under {folder}, got none")
        return out


class SpeechCommandsDataModule(SpeechDataModule):
    """Speech Commands v0.02 (Warden, 2018) as ``torchaudio.datasets.SPEECHCOMMANDS`` lays it out:
    ``root/SpeechCommands/speech_commands_v0.02/<word>/<file>.wav``; the files in ``validation_list.txt`` and
    ``testing_list.txt`` are the validation and test splits, every other one (``_background_noise_`` aside) trains.
    The transcript of a clip is its word. Predictions run on the test split."""

    def __init__(
        self,
        root: str,
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
            root: the folder holding ``SpeechCommands/``.
            vocab: ``char``, ``subword`` (a BPE learned from the training words), ``whisper`` or ``whisper.en``.
            subword_size: ids of the subword vocabulary, specials included (>= 32).
            sample_rate: Hz every waveform is resampled to (the clips are 16 kHz).
            max_batch_seconds: the most padded audio per batch, in seconds (clips last at most 1 s).
            num_buckets: duration buckets batches are drawn from.
            batch_size: at most this many clips per batch (near-equal batches) instead of ``max_batch_seconds``.
            max_duration: drop training clips longer than this many seconds.
            speed_perturb: speed factors for training audio; None or [] for none.
            num_workers: DataLoader worker processes; 0 loads in the main process.
            seed: seed of the batch order (with the epoch).
            train_fraction: keep this share of the training utterances (the same seeded cut in every run).
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
        self.root = Path(root)

    def utterances(self, split: SpeechSplit) -> list[Utterance]:
        folder = _folder(self.root / SPEECH_COMMANDS, "root", "Speech Commands v0.02")
        held_out = {name: self._listed(folder, name) for name in ("validation_list.txt", "testing_list.txt")}
        if split == "train":
            skip = set().union(*held_out.values())
            files = [
                f.relative_to(folder).as_posix()
                for f in sorted(folder.glob("*/*.wav"))
                if f.parent.name != BACKGROUND_NOISE and f.relative_to(folder).as_posix() not in skip
            ]
            where = str(folder)
        else:
            name = "validation_list.txt" if split == "val" else "testing_list.txt"
            files, where = held_out[name], str(folder / name)
        return [_utterance(folder / f, f.split("/")[0], where, f.split("/")[1].split("_nohash_")[0]) for f in files]

    @staticmethod
    def _listed(folder: Path, name: str) -> list[str]:
        path = folder / name
        if not path.is_file():
            raise ValueError(f"root: expected {name} in {folder}, got no such file")
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
