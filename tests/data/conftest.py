from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


def write_tone(path: Path, seconds: float, rate: int = 16000, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    """A sine (plus a little seeded noise) written with soundfile in the format of ``path``'s suffix; (T, C)."""
    t = np.arange(round(seconds * rate)) / rate
    rng = np.random.default_rng(round(seconds * 1000 + freq))
    wave = 0.3 * np.sin(2 * math.pi * freq * t) + 0.01 * rng.standard_normal(t.size)
    wave = np.stack([wave * (c + 1) / channels for c in range(channels)], axis=1).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave, rate, subtype="PCM_16")
    return wave


@pytest.fixture
def tone() -> Callable[..., np.ndarray]:
    """``tone(path, seconds, rate=16000, channels=1, freq=440.0)`` writes a small audio file; returns (T, C)."""
    return write_tone
