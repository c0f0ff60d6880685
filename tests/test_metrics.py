"""SafeWordErrorRate / SafeCharErrorRate: torchmetrics' rates on ordinary input, corpus sums of edits over
reference units, finite on empty references, and loud on inputs torchmetrics would silently mis-score."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from torchmetrics.text import CharErrorRate, WordErrorRate

from omni.metrics import SafeCharErrorRate, SafeWordErrorRate

WORDS = ["one", "two", "three", "oh", "a", "the", "ab"]
SAFE = {"wer": (SafeWordErrorRate, WordErrorRate), "cer": (SafeCharErrorRate, CharErrorRate)}


def levenshtein(a: list, b: list) -> int:
    """Edit distance (insertions, deletions, substitutions of cost 1), the textbook dynamic programme."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, start=1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def units(text: str, kind: str) -> list[str]:
    return text.split() if kind == "wer" else list(text)


def sentence(min_words: int) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(WORDS), min_size=min_words, max_size=6).map(" ".join)


@st.composite
def pairs(draw, min_ref_words: int = 1) -> tuple[list[str], list[str]]:
    refs = draw(st.lists(sentence(min_ref_words), min_size=1, max_size=5))
    hyps = [draw(sentence(0)) for _ in refs]
    return hyps, refs


def rate(kind: str, *updates: tuple[list[str], list[str]]) -> float:
    metric = SAFE[kind][0]()
    for hyps, refs in updates:
        metric.update(hyps, refs)
    return float(metric.compute())


@pytest.mark.parametrize("kind", ["wer", "cer"])
@settings(max_examples=40, deadline=None)
@given(data=pairs())
def test_equals_torchmetrics_and_the_corpus_ratio_on_ordinary_input(kind, data):
    hyps, refs = data
    ours = rate(kind, data)
    theirs = SAFE[kind][1]()
    theirs.update(hyps, refs)
    assert ours == pytest.approx(float(theirs.compute()), abs=1e-6)
    # the corpus rate: every edit over every reference unit (not a mean of per-utterance rates)
    edits = sum(levenshtein(units(r, kind), units(h, kind)) for h, r in zip(hyps, refs, strict=True))
    assert ours == pytest.approx(edits / sum(len(units(r, kind)) for r in refs), abs=1e-6)


@pytest.mark.parametrize("kind", ["wer", "cer"])
@settings(max_examples=40, deadline=None)
@given(first=pairs(min_ref_words=0), second=pairs(min_ref_words=0))
def test_two_updates_equal_one_update_over_the_concatenation(kind, first, second):
    together = (first[0] + second[0], first[1] + second[1])
    assert rate(kind, first, second) == pytest.approx(rate(kind, together), abs=1e-6)
    assert math.isfinite(rate(kind, first, second))


@pytest.mark.parametrize("kind", ["wer", "cer"])
def test_empty_references_score_zero_for_silence_and_count_insertions_otherwise(kind):
    assert rate(kind, (["", ""], ["", ""])) == 0.0  # nothing said on silence: perfect, not nan
    said = rate(kind, (["one two", ""], ["", ""]))  # every unit said on silence is an insertion, over 1
    assert said == len(units("one two", kind)) and math.isfinite(said)
    # mixed with real references, the silent clip's insertions add to the edits, not to the reference units
    assert rate(kind, (["one", "two"], ["one", ""])) == pytest.approx(len(units("two", kind)) / len(units("one", kind)))


@pytest.mark.parametrize("kind", ["wer", "cer"])
def test_mismatched_lengths_and_bare_strings_raise(kind):
    metric = SAFE[kind][0]()
    with pytest.raises(ValueError, match=r"preds: expected one hypothesis per reference \(2\), got 1"):
        metric.update(["one"], ["one", "two"])
    with pytest.raises(ValueError, match=r"preds: expected one hypothesis per reference \(1\), got 2"):
        metric.update(["one", "two"], ["one"])
    for preds, target in (("one two", ["one two"]), (["one two"], "one two"), ("one", "one")):
        with pytest.raises(ValueError, match="preds, target: expected lists of strings, got a single string"):
            metric.update(preds, target)
    assert int(metric.errors) == 0 and int(metric.total) == 0  # the refused updates counted nothing
