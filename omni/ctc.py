"""Decoding CTC outputs: greedy, prefix beam search, and prefix scores for joint CTC/attention beam search.

``ctc_greedy`` takes the best label of every frame, merges repeats and drops blanks. ``ctc_prefix_beam_search`` is
the frame-synchronous prefix beam search (Hannun et al. 2014): each hypothesis is a label prefix with the log
probabilities of its alignments so far ending in a blank and in a label; extensions that land on a prefix already
in the beam are merged into it, so every hypothesis is scored by the sum over its alignments. ``CTCPrefixScorer``
is ESPnet's ``CTCPrefixScoreTH`` (Watanabe et al. 2017): for label-synchronous decoders (``omni.search``), the
log probability that the labelling starts with a hypothesis plus one more label, for a set of candidate labels,
vectorised over examples × beams; the end of sentence is scored with the whole labelling's probability.

Log-probabilities are float32 with ``LOGZERO`` for impossible events (a finite floor, as ESPnet uses, so that no
difference or product of impossible scores turns into NaN).

Shape legend
    B examples   N frames   V vocabulary (blank included)   K beams   L prefix labels
    R hypothesis rows (examples × beams)   S candidate labels scored per row
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor

from omni.tokenizers.checks import check_tensor

__all__ = ["LOGZERO", "CTCPrefixScorer", "check_ctc_inputs", "ctc_greedy", "ctc_prefix_beam_search"]

LOGZERO = -1e10  # log of an impossible event: finite, so sums of impossible scores stay comparable (ESPnet)
DEAD = -2  # prefix length of an unused beam slot: no real prefix is one label longer or shorter than it


def check_ctc_inputs(
    log_probs: object, lengths: object, blank_id: object, min_length: int = 0, prefix: str = ""
) -> tuple[Tensor, Tensor]:
    """Check CTC log-probabilities (B, N, V), frame counts (B,) and the blank id; return them as float32 and long.

    Raises ``ValueError`` naming the argument (``prefix`` + ``log_probs`` / ``lengths``), what was expected and what
    came. ``lengths`` may be None: every frame is real.
    """
    log_probs = check_tensor(f"{prefix}log_probs", log_probs, ndim=3, layout="(B, N, V)", finite=False)
    b, n, v = log_probs.shape
    if bool(torch.isnan(log_probs).any()):
        raise ValueError(f"{prefix}log_probs: expected log-probabilities, got NaN")
    if lengths is None:
        lengths = torch.full((b,), n, dtype=torch.long, device=log_probs.device)
    lengths = check_tensor(f"{prefix}lengths", lengths, ndim=1, layout="(B,)", dtype="int", sizes={0: b})
    lo, hi = int(lengths.min()), int(lengths.max())
    if lo < min_length or hi > n:
        raise ValueError(f"{prefix}lengths: expected frame counts in [{min_length}, N={n}], got min {lo}, max {hi}")
    if isinstance(blank_id, bool) or not isinstance(blank_id, int) or not 0 <= blank_id < v:
        raise ValueError(f"blank_id: expected an id in [0, V={v}), got {blank_id!r}")
    return log_probs.float(), lengths.to(device=log_probs.device, dtype=torch.long)


def _frames(lengths: Tensor, n: int) -> Tensor:
    """(B, N) bool: True at the frames within each example's length."""
    return torch.arange(n, device=lengths.device) < lengths[:, None]


def ctc_greedy(log_probs: Tensor, lengths: Tensor, blank_id: int = 0) -> list[list[int]]:
    """The best label of every frame, repeats merged, blanks dropped.

    Args:
        log_probs: (B, N, V) per-frame log-probabilities (or any scores: only their argmax is used).
        lengths: (B,) real frames per example; frames after them are ignored.
        blank_id: the blank label.
    Returns:
        B label sequences (an empty list when every frame is blank).
    """
    log_probs, lengths = check_ctc_inputs(log_probs, lengths, blank_id)
    best = log_probs.argmax(dim=-1)  # (B, N)
    previous = F.pad(best[:, :-1], (1, 0), value=-1)
    keep = (best != blank_id) & (best != previous) & _frames(lengths, best.shape[1])
    return [row[k].tolist() for row, k in zip(best.cpu(), keep.cpu(), strict=True)]


def _children(prefix: Tensor, length: Tensor) -> tuple[Tensor, Tensor]:
    """For every beam j, the beam k whose prefix is j's without its last label, if one is in the beam.

    Args:
        prefix: (B, K, L) labels of each beam's prefix (anything after its length).
        length: (B, K) labels in each prefix; ``DEAD`` for unused slots.
    Returns:
        parent (B, K) long (any value where there is none) and has_parent (B, K) bool.
    """
    positions = torch.arange(prefix.shape[-1], device=prefix.device)
    before = positions < length[..., None]  # (B, K, L): the parent's own labels
    same = (prefix[:, :, None, :] == prefix[:, None, :, :]) | ~before[:, :, None, :]  # (B, Kparent, Kchild, L)
    is_child = same.all(dim=-1) & (length[:, :, None] + 1 == length[:, None, :]) & (length[:, :, None] >= 0)
    return is_child.int().argmax(dim=1), is_child.any(dim=1)


def ctc_prefix_beam_search(log_probs: Tensor, lengths: Tensor, beams: int = 8, blank_id: int = 0) -> list[list[int]]:
    """The most probable labelling by CTC prefix beam search, all examples at once.

    Each beam is a label prefix with two log-probabilities: of its alignments so far that end in a blank and that
    end in its last label. At every frame each beam stays (a blank, or its last label repeated) or is extended by
    a label (after a blank, a label equal to the last one starts a new label); an extension equal to a prefix
    already in the beam is merged into it. The ``beams`` most probable prefixes (blank + label ending) are kept.
    Without pruning (enough beams) the answer is the labelling of highest total probability.

    Args:
        log_probs: (B, N, V) per-frame log-probabilities.
        lengths: (B,) real frames per example.
        beams: K, prefixes kept per example; 1 is close to greedy.
        blank_id: the blank label.
    Returns:
        B label sequences, the best of each example's final beam.
    """
    log_probs, lengths = check_ctc_inputs(log_probs, lengths, blank_id)
    log_probs = log_probs.clamp(min=LOGZERO)
    if isinstance(beams, bool) or not isinstance(beams, int) or beams < 1:
        raise ValueError(f"beams: expected a positive int, got {beams!r}")
    b, n, v = log_probs.shape
    k, device = beams, log_probs.device
    valid = _frames(lengths, n)  # (B, N)
    is_blank = torch.arange(v, device=device) == blank_id  # (V,)
    prefix = torch.zeros(b, k, 0, dtype=torch.long, device=device)
    column = torch.full((b, k, 1), -1, dtype=torch.long, device=device)  # room for one more label
    length = torch.full((b, k), DEAD, dtype=torch.long, device=device)
    length[:, 0] = 0  # one beam: the empty prefix, all of whose probability ends in a blank so far
    ends_blank = torch.full((b, k), LOGZERO, device=device)
    ends_blank[:, 0] = 0.0
    ends_label = torch.full((b, k), LOGZERO, device=device)
    for t in range(n):
        lp = log_probs[:, t]  # (B, V)
        last = prefix.gather(2, (length - 1).clamp(min=0)[..., None]).squeeze(-1) if prefix.shape[2] else length
        last = last.masked_fill(length < 1, -1)  # (B, K); -1: no label yet
        total = torch.logaddexp(ends_blank, ends_label)
        stay_blank = total + lp[:, blank_id, None]
        stay_label = torch.where(last >= 0, ends_label + lp.gather(1, last.clamp(min=0)), LOGZERO)
        # Extend by c: after anything, or only after a blank when c repeats the last label.
        after = torch.where(last[..., None] == torch.arange(v, device=device), ends_blank[..., None], total[..., None])
        extend = (after + lp[:, None, :]).masked_fill(is_blank, LOGZERO)  # (B, K, V)
        extend = extend.masked_fill((length == DEAD)[..., None], LOGZERO)
        # An extension that is already a beam's prefix adds to that beam's label ending and leaves the candidates.
        parent, has_parent = _children(prefix, length)
        slot = parent * v + last.clamp(min=0)  # (B, K) index into extend (B, K * V)
        flat = extend.flatten(1)
        stay_label = torch.where(has_parent, torch.logaddexp(stay_label, flat.gather(1, slot)), stay_label)
        merged = torch.zeros_like(flat).scatter_add(1, slot, has_parent.float()) > 0
        flat = flat.masked_fill(merged, LOGZERO)
        stay = torch.logaddexp(stay_blank, stay_label).masked_fill(length == DEAD, LOGZERO)
        score, pick = torch.cat([stay, flat], dim=1).topk(k, dim=1)  # (B, K) of K + K * V candidates
        extended = pick >= k
        source = torch.where(extended, (pick - k) // v, pick)
        label = torch.where(extended, (pick - k) % v, -1)
        new_length = length.gather(1, source) + extended.long()
        new_prefix = torch.cat([prefix.gather(1, repeat(source, "b k -> b k l", l=prefix.shape[2])), column], 2)
        at_end = torch.arange(new_prefix.shape[2], device=device) == (new_length - 1)[..., None]
        new_prefix = torch.where(at_end & extended[..., None], label[..., None], new_prefix)
        new_blank = torch.where(extended, LOGZERO, stay_blank.gather(1, source))
        new_label = torch.where(extended, flat.gather(1, (pick - k).clamp(min=0)), stay_label.gather(1, source))
        new_length = new_length.masked_fill(score <= LOGZERO / 2, DEAD)  # an impossible candidate holds no prefix
        keep = valid[:, t, None]  # examples past their last frame keep their beams
        length = torch.where(keep, new_length, length)
        prefix = torch.where(keep[..., None], new_prefix, torch.cat([prefix, column], 2))
        ends_blank = torch.where(keep, new_blank, ends_blank)
        ends_label = torch.where(keep, new_label, ends_label)
        prefix = prefix[:, :, : max(int(length.max()), 0)]
    best = torch.logaddexp(ends_blank, ends_label).masked_fill(length == DEAD, 2 * LOGZERO).argmax(dim=1)
    rows = torch.arange(b, device=device)
    best_length = length[rows, best].clamp(min=0).tolist()
    return [p[:m].tolist() for p, m in zip(prefix[rows, best].cpu(), best_length, strict=True)]


class CTCPrefixScorer:
    """CTC prefix scores of label-synchronous hypotheses: ESPnet's ``CTCPrefixScoreTH``, vectorised over rows.

    A row is one hypothesis of one example (examples × beams in a beam search). For its label prefix g the scorer
    keeps the forward log-probabilities r_t^n(g) (the first t + 1 frames emit g, ending in its last label) and
    r_t^b(g) (ending in a blank), and ψ(g): the log probability that the labelling of the utterance starts with g.
    ``score`` gives ψ(g + c) for candidate labels c of each row (one pass over the frames for all rows and
    candidates); the end of sentence gets log p(g), the probability that the labelling is exactly g; the blank is
    impossible. ``select`` keeps the chosen extensions as the new rows. In a joint CTC/attention beam search the
    hypothesis score is ``(1 - w) · log p_att(g) + w · ψ(g)`` (Watanabe et al. 2017).

    Frames past an example's length emit a blank with probability 1 (ESPnet's padding), so they change nothing.
    """

    def __init__(self, log_probs: Tensor, lengths: Tensor, *, blank_id: int = 0, eos_id: int) -> None:
        """
        Args:
            log_probs: (B, N, V) per-frame log-probabilities of the CTC head.
            lengths: (B,) real frames per example, at least 1.
            blank_id: the blank label.
            eos_id: the end-of-sentence id of the decoder (scored with the whole labelling's probability).
        """
        log_probs, lengths = check_ctc_inputs(log_probs, lengths, blank_id, min_length=1)
        b, n, v = log_probs.shape
        if isinstance(eos_id, bool) or not isinstance(eos_id, int) or not 0 <= eos_id < v or eos_id == blank_id:
            raise ValueError(f"eos_id: expected an id in [0, V={v}) other than blank_id={blank_id}, got {eos_id!r}")
        device = log_probs.device
        x = log_probs.clamp(min=LOGZERO)
        padding = ~_frames(lengths, n)  # (B, N)
        x = x.masked_fill(padding[..., None], LOGZERO)
        x[..., blank_id] = x[..., blank_id].masked_fill(padding, 0.0)
        self.x = rearrange(x, "b n v -> n b v")  # (N, B, V)
        self.blank_id, self.eos_id, self.vocab_size = blank_id, eos_id, v
        self.end = lengths - 1  # (B,) last real frame
        self.example = torch.arange(b, device=device)  # (R,) the example of each row
        blank_path = self.x[:, :, blank_id].cumsum(dim=0)  # (N, B): all blanks so far
        self.r = torch.stack([torch.full_like(blank_path, LOGZERO), blank_path], dim=1)  # (N, 2, R): r^n, r^b
        self.psi = torch.zeros(b, device=device)  # (R,) ψ of the empty prefix: log 1
        self.last = torch.full((b,), -1, dtype=torch.long, device=device)  # (R,) last label; -1 when empty
        self.length = 0  # labels in every row's prefix
        self._pending: tuple[Tensor, Tensor, Tensor] | None = None

    @property
    def rows(self) -> int:
        """R: hypotheses held."""
        return self.example.shape[0]

    def expand(self, beams: int) -> None:
        """Repeat every row ``beams`` times (R -> R * beams; rows r * beams ... r * beams + beams - 1 copy row r),
        as ``DecodeState.expand`` does when a beam search starts."""
        if isinstance(beams, bool) or not isinstance(beams, int) or beams < 1:
            raise ValueError(f"beams: expected a positive int, got {beams!r}")
        self.example = self.example.repeat_interleave(beams)
        self.r = self.r.repeat_interleave(beams, dim=2)
        self.psi = self.psi.repeat_interleave(beams)
        self.last = self.last.repeat_interleave(beams)
        self._pending = None

    def score(self, tokens: Tensor) -> Tensor:
        """ψ(g + c) of every candidate label c of every row.

        Args:
            tokens: (R, S) candidate ids in [0, V).
        Returns:
            (R, S) float32 log prefix probabilities: ``LOGZERO`` for the blank, log p(labelling = g) for the
            end-of-sentence id; kept (with the forward probabilities) for ``select``.
        """
        tokens = check_tensor("tokens", tokens, ndim=2, layout="(R, S)", dtype="int", sizes={0: self.rows})
        tokens = tokens.to(self.x.device, torch.long)
        if int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size:
            got = f"min {int(tokens.min())}, max {int(tokens.max())}"
            raise ValueError(f"tokens: expected ids in [0, V={self.vocab_size}), got {got}")
        n, r, s = self.x.shape[0], self.rows, tokens.shape[1]
        # The blank as a "label" is impossible: its forward probabilities must not revive a prefix that holds it.
        x_label = self.x[:, self.example[:, None], tokens].masked_fill(tokens == self.blank_id, LOGZERO)  # (N, R, S)
        x_blank = repeat(self.x[:, self.example, self.blank_id], "n r -> n r s", s=s)
        x_both = torch.stack([x_label, x_blank], dim=1)  # (N, 2, R, S)
        r_label, r_blank = self.r[:, 0], self.r[:, 1]  # (N, R)
        total = torch.logaddexp(r_label, r_blank)
        # φ: paths of g after which c can start; a repeat of g's last label needs a blank between.
        phi = torch.where(tokens == self.last[:, None], r_blank[..., None], total[..., None])  # (N, R, S)
        start = min(max(self.length, 1), n)  # g + c needs len(g) + 1 frames; none fit once len(g) >= N
        fwd = torch.full((n, 2, r, s), LOGZERO, device=self.x.device)
        if self.length == 0:
            fwd[0, 0] = x_label[0]
        for t in range(start, n):
            prev = fwd[t - 1]
            fwd[t] = torch.logsumexp(torch.stack([prev[0], phi[t - 1], prev[0], prev[1]]).view(2, 2, r, s), 1)
            fwd[t] += x_both[t]
        psi = torch.logsumexp(torch.cat([phi[start - 1 : n - 1] + x_label[start:], fwd[start - 1, :1]]), dim=0)
        whole = total[self.end[self.example], torch.arange(r, device=self.x.device)]  # (R,) log p(labelling = g)
        psi = torch.where(tokens == self.eos_id, whole[:, None], psi).masked_fill(tokens == self.blank_id, LOGZERO)
        self._pending = (tokens, fwd, psi)
        return psi

    def select(self, rows: Tensor, cols: Tensor) -> None:
        """Keep hypotheses extended by the last ``score`` call's candidates: new row i is old row ``rows[i]`` with
        label ``tokens[rows[i], cols[i]]`` appended (a beam search's survivors, in their new order).

        Args:
            rows: (R',) long rows of the last ``score`` call.
            cols: (R',) long candidate columns of those rows.
        """
        if self._pending is None:
            raise ValueError("select: expected a score() call first (it computes the candidates kept here), got none")
        tokens, fwd, psi = self._pending
        for name, index, size in (("rows", rows, tokens.shape[0]), ("cols", cols, tokens.shape[1])):
            index = check_tensor(name, index, ndim=1, layout="(R',)", dtype="int", nonempty=False)
            if index.numel() and not (0 <= int(index.min()) and int(index.max()) < size):
                raise ValueError(f"{name}: expected indices in [0, {size}), got {index.tolist()}")
        if rows.shape != cols.shape:
            raise ValueError(f"cols: expected shape {tuple(rows.shape)} like rows, got {tuple(cols.shape)}")
        rows, cols = rows.to(self.x.device, torch.long), cols.to(self.x.device, torch.long)
        self.r = fwd[:, :, rows, cols]
        self.psi = psi[rows, cols]
        self.last = tokens[rows, cols]
        self.example = self.example[rows]
        self.length += 1
        self._pending = None
