"""eSpeak NG through its C library (the one the ``espeakng-loader`` wheel ships, with its voice data): no root, no
system package, the same samples for the same call.

Shape legend
    T samples at ``ESpeak.sample_rate`` (22,050 Hz)
"""

from __future__ import annotations

import _ctypes
import ctypes
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np

__all__ = ["ESpeak", "english_voices"]

AUDIO_OUTPUT_SYNCHRONOUS = 2
POS_CHARACTER = 1
END_PAUSE = 0x1000  # espeakENDPAUSE: a short pause after the text
PARAM = {"rate": 1, "volume": 2, "pitch": 3, "range": 4, "wordgap": 7}  # espeak_PARAMETER
ENGLISH = ("en", "en-us", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc", "en-029")

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def _data_path() -> Path:
    import espeakng_loader

    return Path(espeakng_loader.get_data_path())


def english_voices() -> list[str]:
    """Every English voice: the 8 English base voices, each alone and with each voice variant (``en-us+f3``).

    Sorted, so a seed picks the same voices on every machine with the same eSpeak data.
    """
    variants = sorted(p.name for p in (_data_path() / "voices" / "!v").iterdir() if p.is_file())
    return sorted([*ENGLISH, *(f"{base}+{v}" for base in ENGLISH for v in variants)])


class ESpeak:
    """eSpeak NG, loaded afresh for every utterance, so that the same call gives the same samples.

    The library keeps state between utterances that ``espeak_Initialize`` does not reset (a static index into its
    pitch-flutter table, and libc's ``rand``): two syntheses of the same text with the same settings differ by a
    few samples when other utterances came between them. Each ``synth`` therefore loads the library, seeds libc's
    generator, speaks, and unloads it again (about 4 ms).
    """

    def __init__(self) -> None:
        import espeakng_loader

        self.library_path = espeakng_loader.get_library_path()
        self.data_path = str(_data_path()).encode()
        self._chunks: list[np.ndarray] = []

        def collect(wav: ctypes._Pointer, n: int, events: int) -> int:
            if n > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._callback = _CALLBACK(collect)  # kept alive as long as the synthesizer
        self._libc = ctypes.CDLL(None)
        self.sample_rate = self._with_library(lambda lib: None)[1]

    @staticmethod
    @cache
    def get() -> ESpeak:
        """The synthesizer of this process."""
        return ESpeak()

    def _with_library(self, speak: Callable[[ctypes.CDLL], None]) -> tuple[np.ndarray, int]:
        """Load and initialise the library, run ``speak``, unload it; the samples spoken and the rate."""
        lib = ctypes.CDLL(self.library_path)
        try:
            rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, self.data_path, 0)
            if rate <= 0:
                raise RuntimeError(f"eSpeak NG failed to initialise from {self.data_path!r} (returned {rate})")
            lib.espeak_SetSynthCallback(self._callback)
            self._chunks.clear()
            self._libc.srand(0)
            speak(lib)
            wave = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)
            lib.espeak_Terminate()
        finally:
            _ctypes.dlclose(lib._handle)
        return wave, int(rate)

    def synth(
        self, text: str, voice: str, rate: int = 175, pitch: int = 50, range_: int = 50, wordgap: int = 0
    ) -> np.ndarray:
        """Speak ``text`` with ``voice`` (``base`` or ``base+variant``).

        Args:
            rate: words per minute (80-450).
            pitch: base pitch, 0-100.
            range_: pitch range, 0-100 (0 = monotone).
            wordgap: extra pause between words, in 10 ms units.
        Returns:
            (T,) float32 in [-1, 1] at ``sample_rate``; empty for empty text. The same call gives the same samples.
        """
        if not text.strip():
            return np.zeros(0, dtype=np.float32)

        def speak(lib: ctypes.CDLL) -> None:
            if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ValueError(f"voice: expected an eSpeak NG voice such as 'en-us+f3', got {voice!r}")
            for name, value in (("rate", rate), ("pitch", pitch), ("range", range_), ("wordgap", wordgap)):
                lib.espeak_SetParameter(PARAM[name], int(value), 0)
            data = text.encode()
            lib.espeak_Synth(data, len(data) + 1, 0, POS_CHARACTER, 0, END_PAUSE, None, None)

        wave, _ = self._with_library(speak)
        return (wave.astype(np.float32) / 32768.0).clip(-1.0, 1.0)
