"""Transcripts -> ids and back: the one text normaliser, a character vocabulary and a trained subword (BPE) one.

Both vocabularies share the special ids ``PAD = BLANK = 0`` (padding and the CTC blank), ``BOS = 1``, ``EOS = 2``
and ``UNK = 3``; symbols start at id 4. ``encode`` normalises its input first (``normalize_text`` is idempotent, so
already normalised text is unchanged) and adds no BOS/EOS; ``decode`` drops the specials. A checkpoint stores
``vocab.to_dict()`` (plain JSON) and ``vocab_from_dict`` rebuilds the vocabulary from it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

__all__ = [
    "BLANK",
    "BOS",
    "EOS",
    "PAD",
    "UNK",
    "CharVocab",
    "SubwordVocab",
    "Vocab",
    "normalize_text",
    "vocab_from_dict",
]

PAD = BLANK = 0  # padding and the CTC blank share id 0
BOS, EOS, UNK = 1, 2, 3
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")  # ids 0..3, in this order
ALPHABET = " abcdefghijklmnopqrstuvwxyz'"  # what normalize_text leaves; CharVocab ids 4..31
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
QUOTES = str.maketrans(dict.fromkeys("\u2018\u2019\u201b\u02bc\u2032", "'"))  # ‘ ’ ‛ ʼ ′ -> '
WORD_BOUNDARY = "\u2581"  # "▁": SentencePiece's mark of a word start, used by the subword vocabulary

_NOT_ALPHABET = re.compile(r"[^a-z' ]+")
_LONE_APOSTROPHE = re.compile(r"(?<![a-z])'|'(?![a-z])")  # an apostrophe without a letter on both sides
_DIGIT = re.compile(r"[0-9]")


def _check_text(name: str, text: object) -> str:
    if not isinstance(text, str):
        raise ValueError(f"{name}: expected a str, got {type(text).__name__} {text!r:.80}")
    return text


def normalize_text(text: str) -> str:
    """The one normaliser of transcripts (training targets and WER alike): lowercase words of ``[a-z']`` joined by
    single spaces.

    NFKC, lowercase, curly quotes to ``'``, each digit spelled out as a word (``"7"`` -> ``"seven"``, ``"42"`` ->
    ``"four two"``), everything else outside ``[a-z' ]`` becomes a space, apostrophes not inside a word are removed
    (``"'tis the students' don't"`` -> ``"tis the students don't"``), whitespace collapsed and stripped. Letters
    with accents are not folded: ``"café"`` -> ``"caf"``. Idempotent.

    Raises:
        ValueError: ``text`` is not a str.
    """
    text = unicodedata.normalize("NFKC", _check_text("text", text)).lower().translate(QUOTES)
    text = _DIGIT.sub(lambda m: f" {DIGIT_WORDS[int(m.group())]} ", text)
    text = _LONE_APOSTROPHE.sub("", _NOT_ALPHABET.sub(" ", text))
    return " ".join(text.split())


def _check_ids(ids: object, vocab_size: int) -> list[int]:
    if isinstance(ids, str | bytes) or not isinstance(ids, Sequence):
        raise ValueError(f"ids: expected a sequence of ints, got {type(ids).__name__}")
    out = [int(i) for i in ids]
    bad = [i for i in out if not 0 <= i < vocab_size]
    if bad:
        raise ValueError(f"ids: expected ids in [0, vocab_size={vocab_size}), got {bad[:5]}")
    return out


class CharVocab:
    """Characters: the specials (0-3), then ``" abcdefghijklmnopqrstuvwxyz'"`` (ids 4-31); ``vocab_size`` = 32."""

    kind = "char"
    pad_id, blank_id, bos_id, eos_id = PAD, BLANK, BOS, EOS

    def __init__(self) -> None:
        self.symbols = ALPHABET
        self.vocab_size = len(SPECIALS) + len(ALPHABET)
        self._id = {c: i + len(SPECIALS) for i, c in enumerate(ALPHABET)}

    def encode(self, text: str) -> list[int]:
        """Ids of ``normalize_text(text)``, one per character, without BOS/EOS."""
        return [self._id[c] for c in normalize_text(_check_text("text", text))]

    def decode(self, ids: Sequence[int]) -> str:
        """The characters of ``ids``, specials dropped."""
        first = len(SPECIALS)
        return "".join(ALPHABET[i - first] for i in _check_ids(ids, self.vocab_size) if i >= first)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "symbols": self.symbols}

    def __repr__(self) -> str:
        return f"CharVocab(vocab_size={self.vocab_size})"


class SubwordVocab:
    """Byte-pair encoding (Hugging Face ``tokenizers``) learned from transcripts; words start with ``▁``
    (SentencePiece's convention), so decoding restores the spaces.

    ``SubwordVocab.train(texts, vocab_size)`` learns it (deterministic: the same texts in any order give the same
    vocabulary). ``vocab_size`` is the size asked for: a small corpus may saturate below it, and the ids past the
    learned ones are never produced (a model sized by ``vocab_size`` just has a few unused rows). This keeps
    ``vocab_size`` known before training, when a config links it to a model.
    """

    kind = "subword"
    pad_id, blank_id, bos_id, eos_id = PAD, BLANK, BOS, EOS

    def __init__(self, tokenizer: Tokenizer, vocab_size: int) -> None:
        """
        Args:
            tokenizer: a trained ``tokenizers.Tokenizer`` whose first four ids are ``<pad> <bos> <eos> <unk>``.
            vocab_size: the vocabulary's size, at least the tokenizer's.
        """
        for i, name in enumerate(SPECIALS):
            if tokenizer.token_to_id(name) != i:
                raise ValueError(f"tokenizer: expected {name} at id {i}, got {tokenizer.token_to_id(name)}")
        if vocab_size < tokenizer.get_vocab_size():
            raise ValueError(f"vocab_size: expected >= the tokenizer's {tokenizer.get_vocab_size()}, got {vocab_size}")
        self.tokenizer, self.vocab_size = tokenizer, vocab_size

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 256) -> SubwordVocab:
        """Learn a BPE of ``vocab_size`` ids from ``texts`` (normalised first). The specials, the 26 letters, ``'``
        and ``▁`` are always tokens, so every normalised text encodes without ``<unk>``."""
        minimum = len(SPECIALS) + len(ALPHABET)  # the 27 symbols other than the space, and "▁"
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < minimum:
            raise ValueError(f"vocab_size: expected an int >= {minimum}, got {vocab_size!r}")
        tokenizer = Tokenizer(models.BPE(unk_token=SPECIALS[UNK]))
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=WORD_BOUNDARY, prepend_scheme="always")
        tokenizer.decoder = decoders.Metaspace(replacement=WORD_BOUNDARY, prepend_scheme="always")
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(SPECIALS),
            initial_alphabet=[*ALPHABET.replace(" ", ""), WORD_BOUNDARY],
            show_progress=False,
        )
        normalized = sorted(normalize_text(_check_text("texts", t)) for t in texts)  # sorted: order-independent
        tokenizer.train_from_iterator(normalized, trainer)
        return cls(tokenizer, vocab_size)

    def encode(self, text: str) -> list[int]:
        """Subword ids of ``normalize_text(text)``, without BOS/EOS."""
        return self.tokenizer.encode(normalize_text(_check_text("text", text)), add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``, specials (and unused ids past the learned ones) dropped."""
        return self.tokenizer.decode(_check_ids(ids, self.vocab_size), skip_special_tokens=True)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "vocab_size": self.vocab_size, "tokenizer": self.tokenizer.to_str()}

    def __repr__(self) -> str:
        return f"SubwordVocab(vocab_size={self.vocab_size}, learned={self.tokenizer.get_vocab_size()})"


Vocab = CharVocab | SubwordVocab


def vocab_from_dict(d: dict[str, Any]) -> CharVocab | SubwordVocab:
    """The vocabulary ``vocab.to_dict()`` describes (what a checkpoint stores); Whisper's: see
    ``omni.data.whisper_vocab.load_vocab``."""
    if not isinstance(d, dict) or d.get("kind") not in ("char", "subword"):
        got = d.get("kind") if isinstance(d, dict) else type(d).__name__
        raise ValueError(f"d: expected a dict with kind 'char' or 'subword', got {got!r}")
    if d["kind"] == "char":
        if d.get("symbols", ALPHABET) != ALPHABET:
            raise ValueError(f"d: expected the symbols {ALPHABET!r}, got {d.get('symbols')!r}")
        return CharVocab()
    for key in ("tokenizer", "vocab_size"):
        if key not in d:
            raise ValueError(f"d: expected the key {key!r} of a subword vocabulary, got keys {sorted(d)}")
    return SubwordVocab(Tokenizer.from_str(d["tokenizer"]), int(d["vocab_size"]))
