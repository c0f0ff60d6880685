"""Whisper's own tokenizer as a speech vocabulary, so that a Whisper checkpoint can be fine-tuned on omni's data.

The byte-level BPE (tiktoken files shipped in the ``openai-whisper`` package; nothing downloads) of the multilingual
models (``whisper``: 51,865 ids, 99 languages, every multilingual model before large-v3) or of the English-only ones
(``whisper.en``: 51,864 ids). A transcript is normalised (``omni.data.text.normalize_text``: the one normaliser of
targets and WER) and encoded as Whisper writes it: after the start-of-transcript id (``bos_id``) come Whisper's task
ids (language ``<|en|>``, ``<|transcribe|>``, ``<|notimestamps|>``; none for English-only models), then the text
with its leading space; end-of-text (``eos_id``) closes it. The end-of-text id is also the CTC blank and the
padding id (it never occurs inside a transcript). ``decode`` drops every special id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from omni.data.text import CharVocab, SubwordVocab, _check_ids, _check_text, normalize_text, vocab_from_dict

__all__ = ["WhisperVocab", "WhisperVocabKind", "load_vocab"]

WhisperVocabKind = Literal["whisper", "whisper.en"]


class WhisperVocab:
    """Whisper's tokenizer (``whisper.tokenizer.get_tokenizer``) with omni's vocabulary interface."""

    kind = "whisper"

    def __init__(self, multilingual: bool = True, language: str = "en") -> None:
        """
        Args:
            multilingual: the multilingual models' vocabulary (99 languages); False: the English-only models'.
            language: the transcripts' language code (multilingual only): it is the first task id of a target.
        """
        try:
            from whisper.tokenizer import LANGUAGES, get_tokenizer
        except ImportError:
            raise ValueError(
                "vocab: expected the openai-whisper package for Whisper's tokenizer (pip install -e '.[whisper]'), "
                "got no module 'whisper'"
            ) from None
        if multilingual and language not in LANGUAGES:
            raise ValueError(f"language: expected one of Whisper's language codes ('en', 'de', ...), got {language!r}")
        self.multilingual, self.language = bool(multilingual), language
        kwargs: dict[str, Any] = {"language": language, "task": "transcribe"} if multilingual else {}
        self.tokenizer = get_tokenizer(self.multilingual, num_languages=99, **kwargs)
        self.vocab_size = self.tokenizer.encoding.n_vocab
        self.bos_id = self.tokenizer.sot
        self.eos_id = self.pad_id = self.blank_id = self.tokenizer.eot
        self.prefix = list(self.tokenizer.sot_sequence_including_notimestamps[1:])  # the task ids after BOS

    def encode(self, text: str) -> list[int]:
        """The task ids, then the ids of ``" " + normalize_text(text)``; without BOS/EOS."""
        words = normalize_text(_check_text("text", text))
        return self.prefix + (self.tokenizer.encode(" " + words) if words else [])

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``, every special id (end-of-text and above) dropped, stripped."""
        kept = [i for i in _check_ids(ids, self.vocab_size) if i < self.eos_id]
        return self.tokenizer.decode(kept).strip()

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "multilingual": self.multilingual, "language": self.language}

    @classmethod
    def from_kind(cls, kind: WhisperVocabKind) -> WhisperVocab:
        """``whisper`` (multilingual, English transcripts) or ``whisper.en`` (the English-only models')."""
        return cls(multilingual=kind == "whisper")

    def __repr__(self) -> str:
        return f"WhisperVocab(vocab_size={self.vocab_size}, multilingual={self.multilingual})"


def load_vocab(d: dict[str, Any]) -> CharVocab | SubwordVocab | WhisperVocab:
    """The vocabulary ``vocab.to_dict()`` describes (what a checkpoint stores), Whisper's included."""
    if isinstance(d, dict) and d.get("kind") == WhisperVocab.kind:
        return WhisperVocab(multilingual=bool(d.get("multilingual", True)), language=str(d.get("language", "en")))
    return vocab_from_dict(d)
