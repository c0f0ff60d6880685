"""Greedy and beam search for any ``EncoderDecoder`` whose decoder reads ids through a ``TextTokenizer`` and
predicts the next id with a ``TokenHead`` (a Whisper-style text decoder; a toy copy/reverse model).

Both encode once and then step the decoder on the new ids only, against its KV cache (``OmniModel.step``). Beam
search runs every example's beams as rows of one batch (``DecodeState.expand`` / ``reorder``), keeps the ``beams``
best unfinished hypotheses per example at each step and collects finished ones (those ending in EOS) until each
example has ``beams`` of them, as Whisper's and fairseq's beam searches do; the answer is the finished hypothesis
with the best length-normalised score. With one beam it is greedy search.

Given a CTC head's output over the encoder's frames, beam search is joint CTC/attention decoding (Watanabe et al.
2017, ESPnet): a hypothesis g scores ``(1 - w) · log p_att(g) + w · log ψ_ctc(g)``, where ψ_ctc is the CTC prefix
probability (``omni.ctc.CTCPrefixScorer``); ending with EOS scores the CTC probability of exactly g. Only each
beam's attention top ``ceil(1.5 · K)`` ids are scored by CTC (ESPnet's pre-beam). ``ctc_weight = 0`` is plain
attention beam search.

Shape legend
    B examples   K beams   P prompt ids   T generated ids (EOS included)   V vocabulary size
    C candidate ids per beam (V; ceil(1.5 K) with CTC)   N CTC frames
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from einops import rearrange, repeat
from torch import Tensor

from omni.ctc import CTCPrefixScorer, check_ctc_inputs
from omni.decoding import DecodeState
from omni.heads.token import TokenHead
from omni.model import EncoderDecoder, ModelOutput, OmniModel
from omni.tokenizers.text import TextTokenizer

__all__ = ["Hypotheses", "beam_search", "greedy_search", "text_io"]

PRE_BEAM = 1.5  # with CTC, each beam's candidates are its attention's top ceil(PRE_BEAM * K) ids (ESPnet's ratio)


@dataclass
class Hypotheses:
    """The chosen hypothesis of every example.

    Attributes:
        ids: (B, T) long generated ids after the prompt, EOS included; after EOS, the tokenizer's ``pad_id`` (EOS
            when it has none). T is the longest chosen hypothesis.
        lengths: (B,) long ids generated, EOS included (``max_len`` when EOS never came); 1 for an empty
            hypothesis (EOS first: an empty transcript).
        scores: (B,) float: the sum of the ids' log-probabilities (with CTC, the joint score); for beam search
            divided by ``length ** length_penalty``.
    """

    ids: Tensor
    lengths: Tensor
    scores: Tensor


def text_io(decoder: OmniModel, tokenizer: str | None = None, head: str | None = None) -> tuple[str, str]:
    """The names of the decoder's ``TextTokenizer`` and of the ``TokenHead`` that reads it; each found by type
    when not given (it must then be the only one)."""
    if tokenizer is None:
        found = [k for k, m in decoder.tokenizers.items() if isinstance(m, TextTokenizer)]
        if len(found) != 1:
            raise ValueError(f"tokenizer: expected the decoder to have one TextTokenizer (or a name), got {found}")
        tokenizer = found[0]
    if not isinstance(dict(decoder.tokenizers.items()).get(tokenizer), TextTokenizer):
        raise ValueError(f"tokenizer: expected the name of a TextTokenizer of the decoder, got {tokenizer!r}")
    if head is None:
        found = [k for k, m in decoder.heads.items() if isinstance(m, TokenHead) and m.tokenizer == tokenizer]
        if len(found) != 1:
            raise ValueError(f"head: expected the decoder to have one TokenHead reading {tokenizer!r}, got {found}")
        head = found[0]
    if head not in decoder.heads:
        raise ValueError(f"head: expected one of the decoder's heads {sorted(decoder.heads)}, got {head!r}")
    return tokenizer, head


class _Stepper:
    """Feeds ids to the decoder one step at a time and returns the log-probabilities of the next id."""

    def __init__(
        self,
        model: EncoderDecoder,
        enc_inputs: Mapping[str, Any] | ModelOutput,
        tokenizer: str | None,
        head: str | None,
    ):
        if not isinstance(model, EncoderDecoder):
            raise ValueError(f"model: expected an EncoderDecoder, got {type(model).__name__}")
        self.model = model
        self.tokenizer, self.head = text_io(model.decoder, tokenizer, head)
        tok = model.decoder.tokenizers[self.tokenizer]
        self.vocab_size, self.pad_id = tok.vocab_size, tok.pad_id
        self.state: DecodeState = model.start_decoding(enc_inputs)
        self.start = 0

    def __call__(self, ids: Tensor) -> Tensor:
        """(R, N) new ids -> (R, V) float log-probabilities of the id after them."""
        out = self.model.step({self.tokenizer: {"ids": ids, "start": self.start}}, self.state)
        self.start += ids.shape[1]
        return out[self.head][:, -1].float().log_softmax(dim=-1)


def _prompt(prompt: int | Tensor, batch: int, device: torch.device) -> Tensor:
    """(B, P) long prompt ids from one start id or a (B, P) / (P,) tensor."""
    if isinstance(prompt, int) and not isinstance(prompt, bool):
        return torch.full((batch, 1), prompt, dtype=torch.long, device=device)
    if not isinstance(prompt, Tensor) or prompt.ndim not in (1, 2) or prompt.is_floating_point():
        got = f"{tuple(prompt.shape)} {prompt.dtype}" if isinstance(prompt, Tensor) else type(prompt).__name__
        raise ValueError(f"prompt: expected a start id or a (B, P) integer tensor, got {got}")
    prompt = prompt.to(device=device, dtype=torch.long)
    if prompt.ndim == 1:
        prompt = repeat(prompt, "p -> b p", b=batch)
    if prompt.shape[0] != batch or prompt.shape[1] < 1:
        raise ValueError(f"prompt: expected shape ({batch}, P) with P >= 1, got {tuple(prompt.shape)}")
    return prompt


def _check(max_len: int, eos_id: int, vocab_size: int) -> None:
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"max_len: expected a positive number of ids to generate, got {max_len!r}")
    if not 0 <= eos_id < vocab_size:
        raise ValueError(f"eos_id: expected an id in [0, vocab_size={vocab_size}), got {eos_id}")


@torch.no_grad()
def greedy_search(
    model: EncoderDecoder,
    enc_inputs: Mapping[str, Any] | ModelOutput,
    *,
    prompt: int | Tensor,
    eos_id: int,
    max_len: int,
    tokenizer: str | None = None,
    head: str | None = None,
) -> Hypotheses:
    """The most likely next id at every step, until EOS or ``max_len`` ids.

    Args:
        model: the encoder–decoder (put it in eval mode first).
        enc_inputs: the encoder's raw inputs for B examples, or its ``ModelOutput`` already computed.
        prompt: the start id (BOS) of every example, or (B, P) ids every example starts with (Whisper's
            start-of-transcript sequence).
        eos_id: the id that ends a hypothesis.
        max_len: the most ids generated per example, EOS included.
        tokenizer: the decoder's ``TextTokenizer`` name; default the only one.
        head: the name of the ``TokenHead`` reading it; default the only one.
    """
    step = _Stepper(model, enc_inputs, tokenizer, head)
    _check(max_len, eos_id, step.vocab_size)
    b = step.state.batch_size
    fill = eos_id if step.pad_id is None else step.pad_id
    device = next(model.decoder.parameters()).device
    ids = _prompt(prompt, b, device)
    done = torch.zeros(b, dtype=torch.bool, device=device)
    lengths = torch.full((b,), max_len, dtype=torch.long, device=device)
    scores = torch.zeros(b, device=device)
    out: list[Tensor] = []
    for t in range(max_len):
        logp = step(ids)  # (B, V)
        best, token = logp.max(dim=-1)
        token = token.masked_fill(done, fill)
        scores = scores + best.masked_fill(done, 0.0)
        out.append(token)
        ended = ~done & (token == eos_id)
        lengths = lengths.masked_fill(ended, t + 1)
        done = done | ended
        if bool(done.all()):
            break
        ids = token[:, None]
    return Hypotheses(ids=torch.stack(out, dim=1), lengths=lengths, scores=scores)


@torch.no_grad()
def beam_search(
    model: EncoderDecoder,
    enc_inputs: Mapping[str, Any] | ModelOutput,
    *,
    prompt: int | Tensor,
    eos_id: int,
    max_len: int,
    beams: int = 4,
    length_penalty: float = 1.0,
    tokenizer: str | None = None,
    head: str | None = None,
    ctc_log_probs: Tensor | None = None,
    ctc_lengths: Tensor | None = None,
    ctc_weight: float = 0.0,
    blank_id: int = 0,
) -> Hypotheses:
    """Beam search, batched over examples × beams; joint CTC/attention decoding when given CTC log-probabilities.

    At each step every example keeps its ``beams`` best unfinished hypotheses (by summed log-probability); a
    hypothesis ending in EOS that ranks before the last of them is finished. An example is done once it has
    ``beams`` finished hypotheses (those still unfinished at ``max_len`` count when it has fewer), and its answer
    is the one with the best ``sum of log-probabilities / length ** length_penalty``.

    Args:
        model: the encoder–decoder (put it in eval mode first).
        enc_inputs: the encoder's raw inputs for B examples, or its ``ModelOutput`` already computed.
        prompt: the start id (BOS) of every example, or (B, P) ids every example starts with.
        eos_id: the id that ends a hypothesis.
        max_len: the most ids generated per example, EOS included.
        beams: K, hypotheses kept per example; 1 is greedy search.
        length_penalty: α >= 0 of the length normalisation (0: raw log-probabilities, which favour short
            hypotheses; 1: the mean log-probability per id, as Whisper does).
        tokenizer: the decoder's ``TextTokenizer`` name; default the only one.
        head: the name of the ``TokenHead`` reading it; default the only one.
        ctc_log_probs: (B, N, V) per-frame log-probabilities of a CTC head over the encoder's frames, in the
            decoder's vocabulary (``CTCHead``); used when ``ctc_weight`` > 0.
        ctc_lengths: (B,) real frames per example, at least 1; default all N.
        ctc_weight: w in [0, 1]: the hypothesis score is (1 - w) · attention + w · CTC prefix log-probability
            (ESPnet's recipes use 0.3); 0 ignores the CTC input, 1 ranks by CTC alone (among the attention's
            candidates).
        blank_id: the CTC blank; it is never emitted.
    """
    if isinstance(beams, bool) or not isinstance(beams, int) or beams < 1:
        raise ValueError(f"beams: expected a positive int, got {beams!r}")
    if length_penalty < 0:
        raise ValueError(f"length_penalty: expected >= 0, got {length_penalty}")
    if isinstance(ctc_weight, bool) or not isinstance(ctc_weight, int | float) or not 0 <= ctc_weight <= 1:
        raise ValueError(f"ctc_weight: expected a number in [0, 1], got {ctc_weight!r}")
    step = _Stepper(model, enc_inputs, tokenizer, head)
    _check(max_len, eos_id, step.vocab_size)
    b, k, v = step.state.batch_size, beams, step.vocab_size
    fill = eos_id if step.pad_id is None else step.pad_id
    device = next(model.decoder.parameters()).device
    ctc = _ctc_scorer(ctc_log_probs, ctc_lengths, ctc_weight, blank_id, eos_id, b, v, device)
    ids = repeat(_prompt(prompt, b, device), "b p -> (b k) p", k=k)
    step.state.expand(k)
    if ctc is not None:
        ctc.expand(k)
    rows = torch.arange(b, device=device)
    scores = torch.full((b, k), float("-inf"), device=device)  # (B, K) the ranking score: joint with CTC
    scores[:, 0] = 0.0  # the K copies are one hypothesis until the first step
    att = scores.clone()  # (B, K) attention log-probabilities
    seqs = torch.zeros(b, k, 0, dtype=torch.long, device=device)  # (B, K, t) unfinished hypotheses
    best = torch.full((b,), float("-inf"), device=device)
    best_ids = torch.full((b, max_len), fill, dtype=torch.long, device=device)
    best_len = torch.full((b,), max_len, dtype=torch.long, device=device)
    finished = torch.zeros(b, dtype=torch.long, device=device)  # finished hypotheses collected per example
    for t in range(max_len):
        att_cand = att[..., None] + rearrange(step(ids), "(b k) v -> b k v", k=k)  # (B, K, V)
        tokens = None  # (B, K, C) the candidate ids; None: all V
        joint = att_cand
        if ctc is not None:
            att_cand, tokens = att_cand.topk(min(v, math.ceil(PRE_BEAM * k)), dim=-1)
            psi = rearrange(ctc.score(rearrange(tokens, "b k c -> (b k) c")), "(b k) c -> b k c", k=k)
            joint = psi if ctc_weight == 1 else (1 - ctc_weight) * att_cand + ctc_weight * psi
            joint = joint.masked_fill(scores[..., None] == float("-inf"), float("-inf"))  # the copies at t = 0
        c = joint.shape[-1]
        cand, flat = joint.flatten(1).topk(min(2 * k, k * c), dim=1)  # (B, 2K) best first
        beam, col = flat // c, flat % c
        token = col if tokens is None else tokens.flatten(1).gather(1, flat)
        is_eos = token == eos_id
        # Finished: an EOS candidate ranked before the K-th unfinished one, while the example collects (<= K).
        before_kth = (~is_eos).cumsum(dim=1) < k
        new = is_eos & before_kth & torch.isfinite(cand)
        new = new & (finished[:, None] + new.cumsum(dim=1) <= k)
        finished = finished + new.sum(dim=1)
        normed = torch.where(new, cand / float(t + 1) ** length_penalty, float("-inf"))
        top, j = normed.max(dim=1)
        better = top > best
        if bool(better.any()):
            prefix = seqs[rows, beam[rows, j]]  # (B, t)
            hyp = torch.cat([prefix, torch.full((b, max_len - t), fill, dtype=torch.long, device=device)], dim=1)
            hyp[:, t] = eos_id
            best_ids = torch.where(better[:, None], hyp, best_ids)
            best_len = torch.where(better, t + 1, best_len)
            best = torch.where(better, top, best)
        if bool((finished >= k).all()):
            break
        # Unfinished: the K best non-EOS candidates (a stable sort puts them first, best first).
        keep = torch.sort(is_eos.int(), dim=1, stable=True).indices[:, :k]  # (B, K) of 2K
        scores, beam, token = cand.gather(1, keep), beam.gather(1, keep), token.gather(1, keep)
        att = att_cand.flatten(1).gather(1, flat.gather(1, keep))
        seqs = torch.cat([seqs.gather(1, repeat(beam, "b k -> b k t", t=t)), token[..., None]], dim=2)
        survivors = rearrange(rows[:, None] * k + beam, "b k -> (b k)")
        step.state.reorder(survivors)
        if ctc is not None:
            ctc.select(survivors, rearrange(col.gather(1, keep), "b k -> (b k)"))
        ids = rearrange(token, "b k -> (b k) 1")
    else:  # max_len reached: an example short of K finished hypotheses also considers its unfinished ones
        normed = (scores / float(max_len) ** length_penalty).masked_fill((finished >= k)[:, None], float("-inf"))
        top, j = normed.max(dim=1)
        better = top > best
        best_ids = torch.where(better[:, None], seqs[rows, j], best_ids)
        best_len = best_len.masked_fill(better, max_len)
        best = torch.where(better, top, best)
    return Hypotheses(ids=best_ids[:, : int(best_len.max())], lengths=best_len, scores=best)


def _ctc_scorer(
    log_probs: Tensor | None,
    lengths: Tensor | None,
    weight: float,
    blank_id: int,
    eos_id: int,
    batch: int,
    vocab_size: int,
    device: torch.device,
) -> CTCPrefixScorer | None:
    """The CTC prefix scorer of a joint search (None when ``weight`` is 0), its inputs checked by their names."""
    if weight == 0:
        return None
    if log_probs is None:
        raise ValueError(f"ctc_log_probs: expected (B, N, V) CTC log-probabilities for ctc_weight={weight}, got None")
    log_probs, lengths = check_ctc_inputs(log_probs, lengths, blank_id, min_length=1, prefix="ctc_")
    if log_probs.shape[0] != batch or log_probs.shape[2] != vocab_size:
        raise ValueError(
            f"ctc_log_probs: expected shape (B={batch}, N, V={vocab_size}) like the examples and the decoder's "
            f"vocabulary, got {tuple(log_probs.shape)}"
        )
    if blank_id == eos_id:
        raise ValueError(f"blank_id: expected an id other than eos_id={eos_id}, got {blank_id}")
    return CTCPrefixScorer(log_probs.to(device), lengths.to(device), blank_id=blank_id, eos_id=eos_id)
