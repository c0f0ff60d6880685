"""``omni transcribe --ckpt_path CKPT FILE...``: one transcript per audio file, from a ``SpeechRecognizer`` checkpoint.

Files are read with ``soundfile`` (WAV, FLAC, OGG, any sample rate), mixed down to mono and resampled by the model's
own front end. Long files are cut into windows of at most ``--window`` seconds, each cut at the quietest 10 ms
frame of the last 5 seconds before the limit, transcribed as one batch, and their transcripts joined with a space. A
file that cannot be read (missing, empty, corrupt, not audio) gets a clear error naming it on stderr; the other
files are still transcribed, and the command exits with status 1 at the end.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = ["load_audio", "main", "split_windows", "transcribe_files"]


def load_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """A file's samples, mixed down to mono: (T,) float32 in [-1, 1], and its sample rate.

    Raises:
        ValueError: the file is missing, not audio, corrupt or holds no samples (the message names the file).
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: expected an audio file, found none")
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as err:
        raise ValueError(f"{path}: expected audio soundfile can read (WAV, FLAC, OGG), got an error: {err}") from err
    if audio.shape[0] == 0:
        raise ValueError(f"{path}: expected some audio, got 0 samples")
    return audio.mean(axis=1), int(rate)


def split_windows(audio: np.ndarray, rate: int, window: float, search: float) -> list[np.ndarray]:
    """Cut a long clip into pieces of at most ``window`` seconds, each cut at the quietest 10 ms frame of the
    last ``search`` seconds before the limit (so a cut rarely falls inside a word).

    Raises:
        ValueError: ``window`` shorter than two frames (0.02 s) or ``search`` shorter than one (0.01 s).
    """
    size, frame = int(window * rate), max(1, rate // 100)
    if not size >= 2 * frame:
        raise ValueError(f"window: expected at least 0.02 s (two 10 ms frames), got {window} s")
    if not int(search * rate) >= frame:
        raise ValueError(f"search: expected at least one 10 ms frame, got {search} s")
    pieces, start = [], 0
    while audio.size - start > size:
        lo = start + max(size - int(search * rate), frame)
        region = audio[lo : start + size]
        n = region.size // frame
        energy = (region[: n * frame].reshape(n, frame) ** 2).sum(axis=1)
        cut = lo + int(energy.argmin()) * frame + frame // 2
        pieces.append(audio[start:cut])
        start = cut
    pieces.append(audio[start:])
    return pieces


def transcribe_files(
    task: torch.nn.Module, files: Sequence[str | Path], window: float = 30.0, search: float = 5.0
) -> dict[str, str | ValueError]:
    """{file: transcript, or the ValueError that explains why it could not be read}."""
    results: dict[str, str | ValueError] = {}
    tok = task.model.tokenizers[task.audio]
    for f in files:
        try:
            audio, rate = load_audio(f)
        except ValueError as err:
            results[str(f)] = err
            continue
        pieces = [p for p in split_windows(audio, rate, window, min(search, window / 2)) if p.size]
        min_samples = int(np.ceil(tok.hop_length * rate / tok.sample_rate)) + 1
        pieces = [np.pad(p, (0, max(0, min_samples - p.size))) for p in pieces]
        lengths = torch.tensor([p.size for p in pieces])
        batch = torch.zeros(len(pieces), int(lengths.max()))
        for i, p in enumerate(pieces):
            batch[i, : p.size] = torch.from_numpy(p)
        device = next(task.parameters()).device
        inputs = {task.audio: {"audio": batch.to(device), "lengths": lengths.to(device), "sample_rate": rate}}
        with torch.no_grad():
            texts = task.transcribe(inputs)
        results[str(f)] = " ".join(t for t in texts if t)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Entry of ``omni transcribe``; returns the exit status (1 if any file failed)."""
    from omni.checkpoints import load_task
    from omni.tasks.speech import DECODERS, SpeechRecognizer

    p = argparse.ArgumentParser(prog="omni transcribe", description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt_path", required=True, help="a SpeechRecognizer checkpoint (e.g. runs/.../best.ckpt)")
    p.add_argument("files", nargs="+", help="audio files (WAV, FLAC, OGG; any rate; stereo is mixed down)")
    p.add_argument("--decoder", choices=DECODERS, default=None, help="default: the checkpoint's own")
    p.add_argument("--window", type=float, default=30.0, help="seconds per window of a long file")
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    if not a.window >= 0.02:
        p.error(f"--window: expected at least 0.02 seconds, got {a.window}")
    if not Path(a.ckpt_path).is_file():
        raise SystemExit(f"--ckpt_path: expected a checkpoint file, found none at {a.ckpt_path}")
    task = load_task(SpeechRecognizer, a.ckpt_path, map_location=a.device)
    task.eval()
    if a.decoder:
        task.decoder_name = a.decoder
    status = 0
    for f, result in transcribe_files(task, a.files, window=a.window).items():
        if isinstance(result, ValueError):
            print(f"error: {result}", file=sys.stderr)
            status = 1
        else:
            print(f"{f}\t{result}")
    return status
