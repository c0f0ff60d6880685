"""normalize_text, CharVocab, SubwordVocab, vocab_from_dict: normalisation rules, round trips, fixed special ids."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omni.data.text import (
    ALPHABET,
    BLANK,
    BOS,
    EOS,
    PAD,
    UNK,
    CharVocab,
    SubwordVocab,
    normalize_text,
    vocab_from_dict,
)

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "And God said, Let there be light: and there was light.",
    "Don't stop me now, I'm having such a good time!",
    "one two three four five six seven eight nine zero oh",
    "In the beginning God created the heaven and the earth.",
] * 3

# Anything a transcript may hold: letters, digits, punctuation, curly quotes, accents, other scripts, odd spaces.
any_text = st.text(
    alphabet=st.sampled_from(list("abcXYZ'’‘ \t\n.,!?-0179éßİﬁ２Ωж\u00a0\u2003")) | st.characters(), max_size=60
)


@pytest.fixture(scope="module")
def subword() -> SubwordVocab:
    return SubwordVocab.train(TEXTS, vocab_size=80)


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("Hello, World!", "hello world"),
        ("\u2018Tis 7 o\u2019clock", "tis seven o'clock"),
        ("rock 'n' roll, the students' books", "rock n roll the students books"),
        ("Room 42B", "room four two b"),
        ("ＦＵＬＬ１ ﬁne", "full one fine"),  # NFKC: full-width letters and digits, the "ﬁ" ligature
        ("  tabs\tand\nnew lines  ", "tabs and new lines"),
        ("café ''' x", "caf x"),  # accents are not folded; lone apostrophes go
        ("", ""),
    ],
)
def test_normalize_examples(raw, want):
    assert normalize_text(raw) == want


@settings(max_examples=300, deadline=None)
@given(any_text)
def test_normalize_is_idempotent_and_stays_in_the_alphabet(s):
    n = normalize_text(s)
    assert normalize_text(n) == n
    assert set(n) <= set(ALPHABET) and n == n.strip() and "  " not in n
    for i, c in enumerate(n):  # every apostrophe kept is inside a word
        if c == "'":
            assert 0 < i < len(n) - 1 and n[i - 1].isalpha() and n[i + 1].isalpha()


@settings(max_examples=300, deadline=None)
@given(any_text)
def test_char_round_trip(s):
    v = CharVocab()
    ids = v.encode(normalize_text(s))
    assert all(4 <= i < v.vocab_size for i in ids)  # never a special
    assert v.decode(ids) == normalize_text(s)
    assert v.encode(s) == ids  # encode normalises itself
    assert v.decode([PAD, BOS, *ids, EOS, UNK, BLANK]) == normalize_text(s)  # specials are dropped


@settings(max_examples=200, deadline=None)
@given(any_text)
def test_subword_round_trip(subword, s):
    ids = subword.encode(normalize_text(s))
    assert UNK not in ids and all(4 <= i < subword.vocab_size for i in ids)  # every letter is a token: no <unk>
    assert subword.decode(ids) == normalize_text(s)
    assert subword.decode([BOS, *ids, EOS, PAD]) == normalize_text(s)


def test_subword_learns_merges_and_is_deterministic(subword):
    shuffled = random.Random(0).sample(TEXTS, len(TEXTS))
    assert SubwordVocab.train(shuffled, vocab_size=80).tokenizer.to_str() == subword.tokenizer.to_str()
    assert len(subword.encode("the")) == 1 and len(subword.encode("light")) <= 2  # frequent words: few tokens
    text = normalize_text(" ".join(TEXTS))
    assert len(subword.encode(text)) < 0.7 * len(CharVocab().encode(text))
    assert subword.vocab_size == 80 and subword.tokenizer.get_vocab_size() <= 80


@settings(max_examples=30, deadline=None)
@given(any_text)
def test_to_dict_round_trip(subword, s):
    for v in (CharVocab(), subword):
        back = vocab_from_dict(json.loads(json.dumps(v.to_dict())))  # what a checkpoint stores is plain JSON
        assert type(back) is type(v) and back.vocab_size == v.vocab_size
        assert back.encode(s) == v.encode(s) and back.decode(v.encode(s)) == normalize_text(s)


def test_special_ids_are_fixed(subword):
    assert (PAD, BLANK, BOS, EOS, UNK) == (0, 0, 1, 2, 3)
    assert CharVocab().vocab_size == 32 and CharVocab().encode(" a b'c ") == [5, 4, 6, 31, 7]
    for i, name in enumerate(["<pad>", "<bos>", "<eos>", "<unk>"]):
        assert subword.tokenizer.token_to_id(name) == i


@pytest.mark.parametrize("bad", [None, 7, b"bytes", ["a"]])
def test_non_str_raises_value_error_naming_the_argument(subword, bad):
    with pytest.raises(ValueError, match="text: expected a str, got"):
        normalize_text(bad)
    for v in (CharVocab(), subword):
        with pytest.raises(ValueError, match="text: expected a str"):
            v.encode(bad)
    with pytest.raises(ValueError, match="texts: expected a str"):
        SubwordVocab.train(["fine", bad], vocab_size=40)


def test_bad_ids_and_dicts(subword):
    with pytest.raises(ValueError, match=r"ids: expected ids in \[0, vocab_size=32\), got \[32, -1\]"):
        CharVocab().decode([4, 32, -1])
    with pytest.raises(ValueError, match="ids: expected a sequence of ints, got str"):
        subword.decode("abc")
    with pytest.raises(ValueError, match="vocab_size: expected an int >= 32, got 20"):
        SubwordVocab.train(TEXTS, vocab_size=20)
    with pytest.raises(ValueError, match="d: expected a dict with kind 'char' or 'subword', got 'word'"):
        vocab_from_dict({"kind": "word"})
    with pytest.raises(ValueError, match="d: expected the key 'tokenizer'"):
        vocab_from_dict({"kind": "subword", "vocab_size": 80})
