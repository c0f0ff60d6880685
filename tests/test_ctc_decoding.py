"""CTC decoding: greedy by hand; prefix beam search equals greedy with one beam on peaky outputs and finds the most
probable labelling (brute force over every labelling, each scored by torch's ctc_loss) with enough beams; the prefix
scorer's ψ equals brute-force prefix sums and its end-of-sentence score equals -ctc_loss of the labelling."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from omni.ctc import LOGZERO, CTCPrefixScorer, ctc_greedy, ctc_prefix_beam_search

BLANK = 0


def labellings(labels: list[int], max_len: int) -> list[list[int]]:
    return [list(s) for m in range(max_len + 1) for s in itertools.product(labels, repeat=m)]


def log_p(log_probs: torch.Tensor, seqs: list[list[int]], blank: int = BLANK) -> torch.Tensor:
    """(M,) log p(labelling) of each sequence under one utterance's (N, V) log-probabilities, by torch's ctc_loss
    (-inf where a labelling cannot be aligned to N frames)."""
    m, n = len(seqs), log_probs.shape[0]
    if not m:
        return torch.empty(0, dtype=torch.double)
    width = max(1, *map(len, seqs))
    targets = torch.tensor([s + [blank] * (width - len(s)) for s in seqs])
    lengths = torch.tensor([len(s) for s in seqs])
    nll = F.ctc_loss(log_probs[:, None].expand(n, m, -1), targets, torch.full((m,), n), lengths, blank, "none")
    return -nll.double()


def assert_log_close(got: torch.Tensor, want: torch.Tensor) -> None:
    """A scorer's log-probability against a reference; an impossible event is ``LOGZERO`` (or below) there."""
    if torch.isinf(want):
        assert got < LOGZERO / 2
    else:
        assert got.item() == pytest.approx(want.item(), abs=1e-4)


def random_log_probs(seed: int, b: int, n: int, v: int, scale: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(b, n, v, generator=g)).log_softmax(-1)


def test_greedy_merges_repeats_and_drops_blanks_by_hand():
    best = torch.tensor([[1, 1, 0, 1, 2, 2, 0, 3], [0, 0, 0, 0, 0, 0, 0, 0], [2, 0, 2, 2, 1, 1, 1, 1]])
    log_probs = F.one_hot(best, 4).float().log_softmax(-1)
    got = ctc_greedy(log_probs, torch.tensor([8, 8, 3]))
    assert got == [[1, 1, 2, 3], [], [2, 2]]  # the last row stops after 3 frames
    assert ctc_greedy(F.one_hot(best, 4).float(), torch.tensor([8, 8, 8]), blank_id=1) == [
        [0, 2, 0, 3],
        [0],
        [2, 0, 2],
    ]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 12), v=st.integers(2, 6))
def test_one_beam_is_greedy_on_peaky_outputs(seed, n, v):
    g = torch.Generator().manual_seed(seed)
    winner = F.one_hot(torch.randint(0, v, (3, n), generator=g), v)  # one label takes nearly all of each frame
    log_probs = (torch.randn(3, n, v, generator=g) + 12.0 * winner).log_softmax(-1)
    lengths = torch.randint(1, n + 1, (3,), generator=torch.Generator().manual_seed(seed))
    assert ctc_prefix_beam_search(log_probs, lengths, beams=1) == ctc_greedy(log_probs, lengths)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 5), v=st.integers(2, 4), blank=st.integers(0, 3))
def test_enough_beams_find_the_most_probable_labelling(seed, n, v, blank):
    blank = blank % v
    labels = [i for i in range(v) if i != blank]
    candidates = labellings(labels, n)  # every labelling that fits n frames: no beam is ever pruned
    log_probs = random_log_probs(seed, 2, n, v)
    lengths = torch.tensor([n, max(1, n - 2)])
    found = ctc_prefix_beam_search(log_probs, lengths, beams=len(candidates), blank_id=blank)
    for b in range(2):
        scores = log_p(log_probs[b, : int(lengths[b])], candidates, blank)
        best = log_p(log_probs[b, : int(lengths[b])], [found[b]], blank)[0]
        assert best == pytest.approx(float(scores.max()), abs=1e-5)


NEG = float("-inf")


def logadd(a: float, b: float) -> float:
    return b if a == NEG else a if b == NEG else max(a, b) + math.log1p(math.exp(-abs(a - b)))


def put(beam: dict[tuple[int, ...], tuple[float, float]], prefix: tuple[int, ...], pb: float, pnb: float) -> None:
    ob, onb = beam.get(prefix, (NEG, NEG))
    beam[prefix] = (logadd(ob, pb), logadd(onb, pnb))


def textbook_prefix_beam_search(log_probs: torch.Tensor, beams: int, blank: int) -> list[int]:
    """Hannun et al.'s prefix beam search for one utterance (N, V), with dicts: the reference for the batched one."""
    beam = {(): (0.0, NEG)}  # prefix: (log p ending in a blank, log p ending in its last label)
    for frame in log_probs.double().tolist():
        new: dict[tuple[int, ...], tuple[float, float]] = {}
        for prefix, (pb, pnb) in beam.items():
            put(new, prefix, logadd(pb, pnb) + frame[blank], NEG)
            if prefix:
                put(new, prefix, NEG, pnb + frame[prefix[-1]])
            for c, lc in enumerate(frame):
                if c != blank:
                    put(new, (*prefix, c), NEG, (pb if prefix and c == prefix[-1] else logadd(pb, pnb)) + lc)
        beam = dict(sorted(new.items(), key=lambda kv: -logadd(*kv[1]))[:beams])
    return list(max(beam.items(), key=lambda kv: logadd(*kv[1]))[0])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(4, 10), v=st.integers(2, 5), beams=st.integers(1, 4))
def test_the_batched_search_equals_the_textbook_one_at_every_width(seed, n, v, beams):
    log_probs = random_log_probs(seed, 3, n, v, scale=1.0)  # flat outputs: pruning decides a lot
    lengths = torch.tensor([n, n // 2, 1])
    blank = seed % v
    got = ctc_prefix_beam_search(log_probs, lengths, beams=beams, blank_id=blank)
    for b in range(3):
        assert got[b] == textbook_prefix_beam_search(log_probs[b, : int(lengths[b])], beams, blank)


def test_a_narrow_beam_beats_greedy_where_alignments_add_up():
    # Frame by frame the blank wins (greedy: nothing), but the label "1" collects more mass over its alignments.
    p = torch.tensor([[0.4, 0.35, 0.25], [0.4, 0.35, 0.25]])
    log_probs = p.log()[None]
    assert ctc_greedy(log_probs, torch.tensor([2])) == [[]]
    assert ctc_prefix_beam_search(log_probs, torch.tensor([2]), beams=3) == [[1]]  # 0.35² + 2·0.4·0.35 > 0.4²


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 4), steps=st.integers(1, 4))
def test_scorer_prefix_scores_equal_brute_force_sums(seed, n, steps):
    v, eos = 4, 3  # labels 1, 2 and 3 (the EOS id is a label like any other to the CTC output)
    log_probs = random_log_probs(seed, 2, n, v)
    lengths = torch.tensor([n, max(1, n - 1)])
    g = torch.Generator().manual_seed(seed)
    scorer = CTCPrefixScorer(log_probs, lengths, blank_id=BLANK, eos_id=eos)
    scorer.expand(2)  # rows: example 0 twice, example 1 twice
    prefixes: list[list[int]] = [[] for _ in range(4)]
    examples = [0, 0, 1, 1]
    tokens = torch.arange(v).expand(4, v)
    for _ in range(steps):
        psi = scorer.score(tokens)
        for r, b in enumerate(examples):
            lp = log_probs[b, : int(lengths[b])]
            for c in (1, 2):
                starting = [
                    s for s in labellings([1, 2, 3], int(lengths[b])) if s[: len(prefixes[r]) + 1] == [*prefixes[r], c]
                ]
                assert_log_close(psi[r, c], torch.logsumexp(log_p(lp, starting), 0))
            assert_log_close(psi[r, eos], log_p(lp, [prefixes[r]])[0])
            assert psi[r, BLANK] == LOGZERO
        # Beam search's reorder: keep rows in any order, some twice, each extended by label 1 or 2.
        rows = torch.randint(0, 4, (4,), generator=g)
        cols = torch.randint(1, 3, (4,), generator=g)
        prefixes = [[*prefixes[r], int(c)] for r, c in zip(rows.tolist(), cols.tolist(), strict=True)]
        examples = [examples[r] for r in rows.tolist()]
        scorer.select(rows, cols)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 8), data=st.data())
def test_scorer_complete_hypothesis_plus_eos_equals_minus_ctc_loss(seed, n, data):
    v, eos = 6, 5
    log_probs = random_log_probs(seed, 3, n, v)
    lengths = torch.tensor([n, max(1, n // 2), 1])
    labels = [data.draw(st.lists(st.integers(1, 4), max_size=n)) for _ in range(3)]
    scorer = CTCPrefixScorer(log_probs, lengths, eos_id=eos)
    for t in range(max(map(len, labels)) + 1):
        # Rows whose labelling is complete just re-score EOS; the others step on.
        tokens = torch.tensor([[lab[t] if t < len(lab) else eos] for lab in labels])
        psi = scorer.score(tokens)
        for b, lab in enumerate(labels):
            if t == len(lab):
                assert_log_close(psi[b, 0], log_p(log_probs[b, : int(lengths[b])], [lab])[0])
        scorer.select(torch.arange(3), torch.zeros(3, dtype=torch.long))


def test_a_prefix_holding_the_blank_stays_impossible():
    log_probs = random_log_probs(5, 1, 6, 4)
    scorer = CTCPrefixScorer(log_probs, torch.tensor([6]), eos_id=3)
    assert scorer.score(torch.tensor([[BLANK, 1]]))[0, 0] == LOGZERO
    scorer.select(torch.tensor([0]), torch.tensor([0]))  # a search that keeps it anyway (no better candidate)
    assert (scorer.score(torch.tensor([[1, 2, 3]])) < LOGZERO / 2).all()


def test_bad_arguments_are_named():
    log_probs = random_log_probs(0, 2, 5, 4)
    with pytest.raises(ValueError, match=r"lengths: expected a 1-D tensor \(B,\)"):
        ctc_greedy(log_probs, torch.tensor(5))
    with pytest.raises(ValueError, match=r"lengths: expected size 2 in dimension 0"):
        ctc_greedy(log_probs, torch.tensor([5, 5, 5]))
    with pytest.raises(ValueError, match=r"blank_id: expected an id in \[0, V=4\), got 4"):
        ctc_prefix_beam_search(log_probs, torch.tensor([5, 5]), blank_id=4)
    with pytest.raises(ValueError, match="beams: expected a positive int, got 0"):
        ctc_prefix_beam_search(log_probs, torch.tensor([5, 5]), beams=0)
    with pytest.raises(ValueError, match="log_probs: expected log-probabilities, got NaN"):
        ctc_greedy(
            log_probs.masked_fill(torch.ones_like(log_probs, dtype=torch.bool), float("nan")), torch.tensor([5, 5])
        )
    with pytest.raises(ValueError, match=r"lengths: expected frame counts in \[1, N=5\], got min 0"):
        CTCPrefixScorer(log_probs, torch.tensor([0, 5]), eos_id=3)
    with pytest.raises(ValueError, match="eos_id: expected an id in \\[0, V=4\\) other than blank_id=0, got 0"):
        CTCPrefixScorer(log_probs, torch.tensor([5, 5]), eos_id=0)
    scorer = CTCPrefixScorer(log_probs, torch.tensor([5, 5]), eos_id=3)
    with pytest.raises(ValueError, match="select: expected a score\\(\\) call first"):
        scorer.select(torch.tensor([0]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"tokens: expected size 2 in dimension 0 of \(R, S\)"):
        scorer.score(torch.ones(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"tokens: expected ids in \[0, V=4\), got min 1, max 4"):
        scorer.score(torch.tensor([[1], [4]]))
    scorer.score(torch.tensor([[1, 2], [2, 3]]))
    with pytest.raises(ValueError, match=r"cols: expected indices in \[0, 2\), got \[2\]"):
        scorer.select(torch.tensor([0]), torch.tensor([2]))
