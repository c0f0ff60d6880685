"""Greedy and beam search: cached greedy equals argmax over full forwards of the growing prefix; one beam is
greedy; enough beams find the exhaustive optimum; each example is searched as if alone. Joint CTC/attention search
with enough beams finds the brute-force best weighted score; an empty hypothesis (EOS first) is one EOS."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from omni.heads import TokenHead
from omni.model import EncoderDecoder, OmniModel
from omni.search import beam_search, greedy_search, text_io
from omni.tokenizers import SensorTokenizer, TextTokenizer
from omni.transformer import TransformerConfig

D = 32
PAD, BOS, EOS = 0, 1, 2


def encoder_decoder(vocab: int = 7, eos_bias: float = 0.0, seed: int = 2) -> EncoderDecoder:
    torch.manual_seed(seed)
    encoder = OmniModel({"source": TextTokenizer(D, vocab)}, TransformerConfig(dim=D, depth=1, heads=4))
    head = TokenHead(D, vocab, tokenizer="text")
    torch.nn.init.normal_(head.fc.weight, std=0.5)  # decisive logits: no near-ties for rounding to flip
    head.fc.bias.data[EOS] = eos_bias
    decoder = OmniModel(
        {"text": TextTokenizer(D, vocab)},
        TransformerConfig(dim=D, depth=2, heads=4, cross_attention=True, masks=["causal"]),
        heads={"lm": head},
    )
    for block in decoder.trunk.blocks:  # an untrained decoder barely reads its source: make it read it
        block.cross.proj.weight.data *= 20
    return EncoderDecoder(encoder, decoder).eval()


def sources(b: int = 4, s: int = 5, vocab: int = 7, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (b, s), generator=g)
    lengths = torch.randint(1, s + 1, (b,), generator=g)
    lengths[0] = s
    mask = torch.arange(s)[None] < lengths[:, None]
    return {"source": {"ids": ids.masked_fill(~mask, PAD), "mask": mask}}


def greedy_by_recomputation(model: EncoderDecoder, src: dict, max_len: int) -> torch.Tensor:
    """Argmax over a full teacher-forced forward of the whole prefix at every step (no cache)."""
    b = src["source"]["ids"].shape[0]
    prefix = torch.full((b, 1), BOS)
    done = torch.zeros(b, dtype=torch.bool)
    out = []
    with torch.no_grad():
        for _ in range(max_len):
            token = model(src, {"text": prefix})["lm"][:, -1].argmax(-1).masked_fill(done, PAD)
            out.append(token)
            done |= token == EOS
            if done.all():
                break
            prefix = torch.cat([prefix, token[:, None]], dim=1)
    return torch.stack(out, dim=1)


def test_cached_greedy_equals_greedy_by_full_recomputation():
    model, src = encoder_decoder(eos_bias=1.5), sources(b=6)
    hyp = greedy_search(model, src, prompt=BOS, eos_id=EOS, max_len=8)
    assert torch.equal(hyp.ids, greedy_by_recomputation(model, src, 8))
    assert hyp.lengths.unique().numel() > 1  # rows end at different steps: EOS handling is exercised
    for row, n in zip(hyp.ids, hyp.lengths.tolist(), strict=True):
        assert (row[: n - 1] != EOS).all() and (n == 8 or (row[n - 1] == EOS and row[n:].eq(PAD).all()))


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_one_beam_is_greedy(length_penalty):
    model, src = encoder_decoder(eos_bias=1.5), sources(b=6)
    greedy = greedy_search(model, src, prompt=BOS, eos_id=EOS, max_len=8)
    beam = beam_search(model, src, prompt=BOS, eos_id=EOS, max_len=8, beams=1, length_penalty=length_penalty)
    assert torch.equal(beam.ids, greedy.ids) and torch.equal(beam.lengths, greedy.lengths)
    if length_penalty == 0.0:
        torch.testing.assert_close(beam.scores, greedy.scores)


def log_prob(model: EncoderDecoder, src: dict, seq: list[int]) -> float:
    """log p(seq | source) of one example by a full forward of BOS + seq[:-1]."""
    with torch.no_grad():
        logits = model(src, {"text": torch.tensor([[BOS, *seq[:-1]]])})["lm"][0]
    return float(logits.log_softmax(-1)[torch.arange(len(seq)), torch.tensor(seq)].sum())


@pytest.mark.parametrize(("length_penalty", "seed", "eos_bias"), [(0.0, 5, -1.0), (1.0, 2, 0.0)])
def test_enough_beams_find_the_exhaustive_optimum(length_penalty, seed, eos_bias):
    vocab, max_len = 4, 3  # 3 ids besides EOS: at most 3**3 = 27 unfinished hypotheses, so 27 beams prune none
    model, src = encoder_decoder(vocab, eos_bias, seed), sources(b=2, vocab=vocab)
    hyp = beam_search(model, src, prompt=BOS, eos_id=EOS, max_len=max_len, beams=27, length_penalty=length_penalty)
    greedy = greedy_search(model, src, prompt=BOS, eos_id=EOS, max_len=max_len)
    others = [i for i in range(vocab) if i != EOS]
    for b in range(2):
        one = {"source": {k: v[b : b + 1] for k, v in src["source"].items()}}
        candidates = [[*body, EOS] for n in range(max_len) for body in itertools.product(others, repeat=n)]
        candidates += [list(body) for body in itertools.product(others, repeat=max_len)]  # cut at max_len
        scored = [(log_prob(model, one, seq) / len(seq) ** length_penalty, seq) for seq in candidates]
        best_score, best = max(scored)
        n = int(hyp.lengths[b])
        assert hyp.ids[b, :n].tolist() == best
        assert hyp.scores[b].item() == pytest.approx(best_score, abs=1e-4)
        assert greedy.ids[b, : int(greedy.lengths[b])].tolist() != best  # greedy misses it: the search matters


def test_each_example_is_searched_as_if_alone():
    model, src = encoder_decoder(eos_bias=1.0), sources(b=3)
    together = beam_search(model, src, prompt=BOS, eos_id=EOS, max_len=6, beams=3)
    for b in range(3):
        n = int(src["source"]["mask"][b].sum())
        one = {"source": {k: v[b : b + 1, :n] for k, v in src["source"].items()}}
        alone = beam_search(model, one, prompt=BOS, eos_id=EOS, max_len=6, beams=3)
        length = int(alone.lengths[0])
        assert together.lengths[b] == length and torch.equal(together.ids[b, :length], alone.ids[0, :length])
        torch.testing.assert_close(together.scores[b], alone.scores[0], atol=1e-5, rtol=1e-5)


def test_a_prompt_of_several_ids_and_errors():
    model, src = encoder_decoder(eos_bias=1.5), sources(b=2)
    prompt = torch.tensor([BOS, 5, 6])  # a Whisper-style start sequence, the same for every row
    hyp = greedy_search(model, src, prompt=prompt, eos_id=EOS, max_len=5)
    with torch.no_grad():
        first = model(src, {"text": prompt.expand(2, -1)})["lm"][:, -1].argmax(-1)
    assert torch.equal(hyp.ids[:, 0], first)
    with pytest.raises(ValueError, match=r"prompt: expected shape \(2, P\)"):
        greedy_search(model, src, prompt=torch.ones(3, 1, dtype=torch.long), eos_id=EOS, max_len=5)
    with pytest.raises(ValueError, match="max_len: expected a positive number"):
        greedy_search(model, src, prompt=BOS, eos_id=EOS, max_len=0)
    with pytest.raises(ValueError, match="beams: expected a positive int, got 0"):
        beam_search(model, src, prompt=BOS, eos_id=EOS, max_len=5, beams=0)
    with pytest.raises(ValueError, match="model: expected an EncoderDecoder"):
        greedy_search(model.decoder, src, prompt=BOS, eos_id=EOS, max_len=5)
    assert text_io(model.decoder) == ("text", "lm")
    with pytest.raises(ValueError, match="tokenizer: expected the decoder to have one TextTokenizer"):
        text_io(OmniModel({"p": SensorTokenizer(D, in_features=2)}, TransformerConfig(dim=D, depth=1, heads=4)))


# ---------------------------------------------------------------------------- joint CTC/attention search
def ctc_outputs(b: int, n: int, vocab: int, seed: int, scale: float = 2.0) -> torch.Tensor:
    """(B, N, V) CTC log-probabilities in which only the blank (PAD) and ids 3.. can be emitted."""
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(b, n, vocab, generator=g)
    logits[..., [BOS, EOS]] = float("-inf")
    return logits.log_softmax(-1)


def ctc_log_p(log_probs: torch.Tensor, seq: list[int]) -> float:
    """log p_ctc(labelling = seq) for one utterance (N, V), by torch's ctc_loss."""
    n = log_probs.shape[0]
    target = torch.tensor([seq or [3]])  # an empty labelling: length 0, the id is not read
    return -float(F.ctc_loss(log_probs[:, None], target, torch.tensor([n]), torch.tensor([len(seq)]), PAD, "sum"))


def labellings(labels: list[int], max_len: int) -> list[list[int]]:
    return [list(s) for m in range(max_len + 1) for s in itertools.product(labels, repeat=m)]


def one_example(src: dict, b: int) -> dict:
    return {"source": {k: v[b : b + 1] for k, v in src["source"].items()}}


@pytest.mark.parametrize(("ctc_weight", "seed"), [(1.0, 3), (0.5, 1)])
def test_joint_search_with_enough_beams_maximises_the_weighted_score(ctc_weight, seed):
    vocab, frames = 5, 3  # labels 3 and 4: 15 labellings fit 3 frames, at most 8 unfinished: 10 beams prune none
    model, src = encoder_decoder(vocab, eos_bias=-1.0, seed=seed), sources(b=2, vocab=vocab)
    ctc = ctc_outputs(2, frames, vocab, seed)
    common = {"prompt": BOS, "eos_id": EOS, "max_len": frames + 1, "beams": 10, "length_penalty": 0.0}
    hyp = beam_search(model, src, **common, ctc_log_probs=ctc, ctc_weight=ctc_weight)
    attention_only = beam_search(model, src, **common)
    for b in range(2):
        scored = []
        for seq in labellings([3, 4], frames):
            att = log_prob(model, one_example(src, b), [*seq, EOS])
            scored.append(((1 - ctc_weight) * att + ctc_weight * ctc_log_p(ctc[b], seq), [*seq, EOS]))
        best_score, best = max(scored)
        assert hyp.ids[b, : int(hyp.lengths[b])].tolist() == best
        assert hyp.scores[b].item() == pytest.approx(best_score, abs=1e-4)
        # Attention alone picks something else: the CTC term decides.
        assert attention_only.ids[b, : int(attention_only.lengths[b])].tolist() != best


def test_joint_search_at_weight_zero_is_attention_search_and_examples_are_searched_alone():
    model, src = encoder_decoder(eos_bias=1.0), sources(b=3)
    common = {"prompt": BOS, "eos_id": EOS, "max_len": 6, "beams": 3}
    ctc = ctc_outputs(3, 7, 7, seed=0)
    plain = beam_search(model, src, **common)
    zero = beam_search(model, src, **common, ctc_log_probs=ctc, ctc_weight=0.0)
    assert torch.equal(plain.ids, zero.ids) and torch.equal(plain.scores, zero.scores)
    lengths = torch.tensor([7, 4, 2])
    together = beam_search(model, src, **common, ctc_log_probs=ctc, ctc_lengths=lengths, ctc_weight=0.3)
    assert not torch.equal(together.ids, plain.ids)  # CTC changes the answer
    for b in range(3):
        n = int(src["source"]["mask"][b].sum())
        one = {"source": {k: v[b : b + 1, :n] for k, v in src["source"].items()}}
        alone = beam_search(model, one, **common, ctc_log_probs=ctc[b : b + 1, : int(lengths[b])], ctc_weight=0.3)
        length = int(alone.lengths[0])
        assert together.lengths[b] == length and torch.equal(together.ids[b, :length], alone.ids[0, :length])
        torch.testing.assert_close(together.scores[b], alone.scores[0], atol=1e-4, rtol=1e-5)


def test_an_empty_hypothesis_is_a_lone_eos():
    model, src = encoder_decoder(eos_bias=50.0), sources(b=2)  # EOS first: an empty transcript
    common = {"prompt": BOS, "eos_id": EOS, "max_len": 5}
    greedy = greedy_search(model, src, **common)
    beam = beam_search(model, src, **common, beams=3)
    for hyp in (greedy, beam):
        assert hyp.ids.tolist() == [[EOS], [EOS]] and hyp.lengths.tolist() == [1, 1]
    silence = torch.full((2, 6, 7), -30.0)
    silence[..., PAD] = 0.0  # every frame blank: CTC says the transcript is empty too
    joint = beam_search(model, src, **common, beams=3, ctc_log_probs=silence.log_softmax(-1), ctc_weight=0.5)
    assert joint.ids.tolist() == [[EOS], [EOS]] and joint.lengths.tolist() == [1, 1]
    assert torch.isfinite(joint.scores).all()


def test_joint_search_errors_are_named():
    model, src = encoder_decoder(), sources(b=2)
    common = {"prompt": BOS, "eos_id": EOS, "max_len": 4}
    ctc = ctc_outputs(2, 5, 7, seed=0)
    with pytest.raises(ValueError, match=r"ctc_weight: expected a number in \[0, 1\], got 1.5"):
        beam_search(model, src, **common, ctc_log_probs=ctc, ctc_weight=1.5)
    with pytest.raises(ValueError, match="ctc_log_probs: expected .* for ctc_weight=0.3, got None"):
        beam_search(model, src, **common, ctc_weight=0.3)
    with pytest.raises(ValueError, match=r"ctc_log_probs: expected shape \(B=2, N, V=7\) .* got \(2, 5, 6\)"):
        beam_search(model, src, **common, ctc_log_probs=ctc[..., :6], ctc_weight=0.3)
    with pytest.raises(ValueError, match=r"ctc_lengths: expected frame counts in \[1, N=5\], got min 0, max 5"):
        beam_search(model, src, **common, ctc_log_probs=ctc, ctc_lengths=torch.tensor([0, 5]), ctc_weight=0.3)
