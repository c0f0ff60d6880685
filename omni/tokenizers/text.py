"""Token ids -> one token per id, with its position (text, symbol sequences; a decoder's input).

Id level only: a vocabulary (characters, subwords) and its normalisation live with the data that needs them.

Shape legend
    B batch   N ids (new ids when decoding step by step)   D width   V vocabulary size
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from omni.choices import check_choice
from omni.layers import sincos_1d
from omni.tokenizers.checks import check_tensor
from omni.tokens import Tokens

__all__ = ["PosEmbed", "TextTokenizer"]

PosEmbed = Literal["learned", "sincos"]


class TextTokenizer(nn.Module):
    """Embed token ids (GPT-2 / Whisper's decoder): an id embedding plus a position embedding per index.

    Every token's ``pos`` (one coordinate) and ``group`` are its index in the sequence, so ``causal`` masks work
    by index or by group. Step-by-step decoding passes ``start`` (the number of tokens already cached) and the new
    ids only: their positions continue from there, and a step equals the full forward at those tokens.
    """

    modalities: tuple[str, ...] = ("text",)

    def __init__(
        self,
        dim: int,
        vocab_size: int,
        max_len: int = 512,
        pad_id: int | None = 0,
        pos_embed: PosEmbed = "learned",
    ) -> None:
        """
        Args:
            dim: model width D.
            vocab_size: V; ids must lie in [0, V).
            max_len: the longest sequence (``start`` + N) accepted: the size of the learned position table.
            pad_id: the padding id: without ``mask`` or ``lengths``, tokens with this id are padding. None: no
                id is reserved, every token is real unless ``mask`` or ``lengths`` say otherwise.
            pos_embed: ``learned`` (a table of ``max_len`` positions, GPT-2, Whisper's decoder) or ``sincos``
                (fixed sin-cos of the index, Vaswani et al.).
        """
        super().__init__()
        for name, value in (("dim", dim), ("vocab_size", vocab_size), ("max_len", max_len)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if pad_id is not None and not 0 <= pad_id < vocab_size:
            raise ValueError(f"pad_id: expected an id in [0, vocab_size={vocab_size}) or None, got {pad_id}")
        check_choice("pos_embed", pos_embed, PosEmbed)
        if pos_embed == "sincos" and dim % 2:
            raise ValueError(f"dim: expected an even width for pos_embed='sincos', got {dim}")
        self.dim, self.vocab_size, self.max_len, self.pad_id = dim, vocab_size, max_len, pad_id
        self.pos_embed_kind = pos_embed
        self.embed = nn.Embedding(vocab_size, dim)
        if pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.randn(max_len, dim) * 0.02)
        else:
            self.register_parameter("pos_embed", None)

    def _check(self, ids: object, mask: object, lengths: object, start: object) -> tuple[Tensor, Tensor | None]:
        """The checked ids (B, N) and the (B, N) bool mask of real tokens (None: decided by ``pad_id``)."""
        ids = check_tensor("ids", ids, ndim=2, layout="(B, N)", dtype="int")
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError(f"start: expected a non-negative int (tokens already decoded), got {start!r}")
        b, n = ids.shape
        if start + n > self.max_len:
            raise ValueError(f"ids: expected start + N <= max_len={self.max_len}, got start={start}, N={n}")
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= self.vocab_size:
            raise ValueError(f"ids: expected ids in [0, vocab_size={self.vocab_size}), got min {lo}, max {hi}")
        if mask is not None and lengths is not None:
            raise ValueError("mask: expected either mask or lengths, got both")
        if mask is not None:
            mask = check_tensor("mask", mask, ndim=2, layout="(B, N)", dtype="bool")
            if mask.shape != ids.shape:
                raise ValueError(f"mask: expected shape {(b, n)} = (B, N) like ids, got {tuple(mask.shape)}")
        if lengths is not None:
            lengths = check_tensor("lengths", lengths, ndim=1, layout="(B,)", dtype="int", sizes={0: b})
            if int(lengths.min()) < 0 or int(lengths.max()) > n:
                got = f"min {int(lengths.min())}, max {int(lengths.max())}"
                raise ValueError(f"lengths: expected values in [0, N={n}], got {got}")
            mask = torch.arange(n, device=ids.device) < lengths.to(ids.device)[:, None]
        return ids, mask

    def forward(self, ids: Tensor, mask: Tensor | None = None, lengths: Tensor | None = None, start: int = 0) -> Tokens:
        """Tokenize a batch of id sequences.

        Args:
            ids: (B, N) integer ids in [0, V).
            mask: (B, N) bool, True where the token is real.
            lengths: (B,) real tokens per row (the rest is padding); instead of ``mask``. With neither, tokens
                equal to ``pad_id`` are padding.
            start: the index of the first id: tokens already decoded (and cached) before these.
        Returns:
            Tokens with x (B, N, D) = id embedding + position embedding; pos (B, N, 1) and group (B, N) = the
            index start, start + 1, ...; pad (B, N) from ``mask``, ``lengths`` or ``pad_id``.
        """
        ids, mask = self._check(ids, mask, lengths, start)
        if mask is None and self.pad_id is not None:
            mask = ids != self.pad_id
        index = torch.arange(start, start + ids.shape[1], device=ids.device)  # (N,)
        x = self.embed(ids.long())  # (B, N, D)
        pos = self.pos_embed[index] if self.pos_embed is not None else sincos_1d(index, self.dim)
        x = x + pos.to(x.dtype)
        return Tokens.create(x, pos=index.float()[:, None], pad=mask, group=index)
