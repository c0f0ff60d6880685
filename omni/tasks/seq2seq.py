"""Sequence to sequence: an encoder of any tokenizers (``self.model``) and a text decoder that attends it
(``self.decoder``: a ``TextTokenizer``, a causal trunk with cross-attention, a ``TokenHead``), trained
teacher-forced and decoded greedily or by beam search for its metrics and predictions.

Batches hold the encoder's inputs (``{"source": {"ids": (B, S), "mask": (B, S)}}``, or ``{"inputs": {...}}``) and
``target``: ``{"ids": (B, T), "mask": (B, T)}`` (or the ids alone, padded with ``pad_id``), each row BOS, the
target, EOS. The decoder reads ``target[:, :-1]`` and predicts ``target[:, 1:]``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from omni.heads.token import TokenHead
from omni.model import EncoderDecoder, OmniModel
from omni.search import Hypotheses, beam_search, greedy_search
from omni.tokenizers.text import TextTokenizer
from omni.tokens import Tokens
from omni.training import OmniTask, OptimConfig, Stage
from omni.transformer import TransformerConfig

__all__ = ["Seq2Seq"]

TARGET = "target"  # the batch key of the target ids, and the name of the decoder's tokenizer


class Seq2Seq(OmniTask):
    """An encoder–decoder (Vaswani et al.; Whisper) built from config: cross-entropy of the next target id,
    ``exact_match`` (whole decoded sequences) and ``token_acc`` (teacher-forced next ids) as metrics."""

    monitor, monitor_mode = "val/exact_match", "max"
    agree_with_data = ("vocab_size", "pad_id", "bos_id", "eos_id")

    def __init__(
        self,
        trunk: TransformerConfig,
        tokenizers: dict[str, Callable[[int], nn.Module]],
        decoder_trunk: TransformerConfig,
        decoder_tokenizer: Callable[[int], TextTokenizer],
        bos_id: int = 1,
        eos_id: int = 2,
        beams: int = 1,
        length_penalty: float = 1.0,
        max_decode_len: int = 64,
        label_smoothing: float = 0.0,
        inputs: dict[str, str] | None = None,
        optim: OptimConfig | None = None,
        tie_embeddings: bool = False,
    ) -> None:
        """
        Args:
            trunk: the encoder's sizes and mask schedule; ``dim`` is shared with every tokenizer and the decoder.
            tokenizers: the encoder's {name: tokenizer as ``class_path`` + ``init_args`` without ``dim``}, e.g.
                ``source: omni.tokenizers.TextTokenizer``.
            decoder_trunk: the decoder's sizes: ``cross_attention: true``, causal masks, ``dim`` as the encoder's.
            decoder_tokenizer: the target's ``TextTokenizer`` (without ``dim``); its ``vocab_size`` is the output
                vocabulary and its ``pad_id`` the padding of targets.
            bos_id: the id every target starts with; decoding starts from it.
            eos_id: the id every target ends with; decoding stops at it.
            beams: 1 decodes greedily; more runs a beam search of that width (metrics and predictions).
            length_penalty: beam search's length normalisation: score = log-probability / length ** this.
            max_decode_len: the most ids a decoded hypothesis has, EOS included.
            label_smoothing: cross-entropy label smoothing while training.
            inputs: {encoder tokenizer name: batch key}; default the batch's ``inputs`` dict or the tokenizer's name.
            optim: optimizer and schedule settings.
            tie_embeddings: the output layer is the decoder's id embedding, transposed, without a bias (GPT-2,
                Whisper); False: a layer of its own.
        """
        super().__init__(trunk, tokenizers, None, None, inputs, optim)
        self.save_hyperparameters()
        if TARGET in self.model.tokenizers:
            raise ValueError(f"tokenizers: expected no encoder tokenizer named {TARGET!r} (the decoder's), got one")
        cfg = decoder_trunk
        if not isinstance(cfg, TransformerConfig):
            cfg = TransformerConfig.from_dict(cfg)
        if not cfg.cross_attention:
            raise ValueError("decoder_trunk.cross_attention: expected true (the decoder reads the encoder), got false")
        if cfg.dim != self.model.dim:
            raise ValueError(f"decoder_trunk.dim: expected {self.model.dim} like trunk.dim, got {cfg.dim}")
        tok = decoder_tokenizer(cfg.dim)
        if not isinstance(tok, TextTokenizer):
            raise ValueError(f"decoder_tokenizer: expected a TextTokenizer, got {type(tok).__name__}")
        if not 1 <= max_decode_len < tok.max_len:
            raise ValueError(
                f"max_decode_len: expected in [1, decoder_tokenizer.max_len={tok.max_len}), got {max_decode_len}"
            )
        if beams < 1 or length_penalty < 0:
            raise ValueError(f"beams, length_penalty: expected >= 1 and >= 0, got {beams}, {length_penalty}")
        for name, value in (("bos_id", bos_id), ("eos_id", eos_id)):
            if not 0 <= value < tok.vocab_size:
                raise ValueError(f"{name}: expected an id in [0, vocab_size={tok.vocab_size}), got {value}")
        head = TokenHead(cfg.dim, tok.vocab_size, TARGET, bias=not tie_embeddings)
        if tie_embeddings:
            head.fc.weight = tok.embed.weight
        self.decoder = OmniModel({TARGET: tok}, cfg, heads={"logits": head})
        self._check_causal()
        self.vocab_size, self.pad_id, self.bos_id, self.eos_id = tok.vocab_size, tok.pad_id, bos_id, eos_id
        self.beams, self.length_penalty, self.max_decode_len = beams, length_penalty, max_decode_len
        self.label_smoothing = label_smoothing
        self.add_metric("token_acc", MeanMetric)
        self.add_metric("exact_match", MeanMetric, stages=("val", "test"))

    def _check_causal(self) -> None:
        """Teacher forcing is only honest if no target token sees a later one: check every decoder layer's mask."""
        n = 4
        index = torch.arange(n)
        probe = Tokens.create(torch.zeros(1, n, 1), pos=index.float()[:, None], group=index)
        for i, (mask, name) in enumerate(zip(self.decoder.layer_masks, self.decoder.layer_mask_names, strict=True)):
            if bool(mask.dense(probe).triu(diagonal=1).any()):
                raise ValueError(
                    f"decoder_trunk.masks: expected causal masks (no token attends a later one), got {name!r} "
                    f"at layer {i}"
                )

    @property
    def seq2seq(self) -> EncoderDecoder:
        """``self.model`` (the encoder) and ``self.decoder`` as one ``EncoderDecoder`` (a view: no parameters of its
        own, so the checkpoint holds each weight once)."""
        return EncoderDecoder(self.model, self.decoder)

    # ------------------------------------------------------------------ inputs
    def target(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
        """The batch's target ids (B, T) and mask (B, T) bool, True where the id is real."""
        t = batch[TARGET]
        ids = t["ids"] if isinstance(t, Mapping) else t
        mask = t.get("mask") if isinstance(t, Mapping) else None
        return ids, (ids != self.pad_id if mask is None else mask)

    def encoder_inputs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The encoder's {tokenizer name: raw input} from a batch (see ``inputs``)."""
        return super().model_inputs(batch)

    def model_inputs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The encoder's inputs, plus the decoder's teacher-forced input ``target[:, :-1]`` when there is a target."""
        inputs = self.encoder_inputs(batch)
        if TARGET in batch:
            ids, mask = self.target(batch)
            inputs[TARGET] = {"ids": ids[:, :-1], "mask": mask[:, :-1]}
        return inputs

    def trunk_inputs(self, inputs: Mapping[str, Any]) -> tuple[Tokens, dict[str, slice]]:
        """The encoder's tokens: every input but the decoder's target."""
        return self.model.tokenize({k: v for k, v in inputs.items() if k != TARGET})

    def outputs_from(self, mixed: Tokens, spans: dict[str, slice], inputs: Mapping[str, Any]) -> dict[str, Any]:
        """{encoder tokenizer name: raw input, "target": decoder input} -> the decoder's {"logits": (B, T, V),
        "output"} and "encoder": the encoder's outputs (only "encoder" when predicting without a target)."""
        enc = self.model.read_out(mixed, spans)
        if TARGET not in inputs:  # predicting without targets: nothing to teacher-force
            return {"encoder": enc}
        result = self.seq2seq.decoder({TARGET: inputs[TARGET]}, context=enc["output"])
        result["encoder"] = enc
        return result

    def decode(self, enc_inputs: Mapping[str, Any]) -> Hypotheses:
        """Greedy (``beams`` = 1) or beam search from BOS: ids (B, T) after BOS, EOS included, padded after it."""
        common = {"prompt": self.bos_id, "eos_id": self.eos_id, "max_len": self.max_decode_len}
        if self.beams == 1:
            return greedy_search(self.seq2seq, enc_inputs, **common)
        return beam_search(self.seq2seq, enc_inputs, beams=self.beams, length_penalty=self.length_penalty, **common)

    # ------------------------------------------------------------------ the task's part
    def loss(self, outputs: dict[str, Any], batch: Mapping[str, Any], stage: Stage) -> Tensor:
        ids, mask = self.target(batch)
        smoothing = self.label_smoothing if stage == "train" else 0.0
        return TokenHead.loss(outputs["logits"], ids[:, 1:], mask[:, 1:], smoothing)

    def update_metrics(self, outputs: dict[str, Any], batch: Mapping[str, Any], stage: Stage) -> None:
        ids, mask = self.target(batch)
        labels, real = ids[:, 1:], mask[:, 1:]
        metrics = self.stage_metrics(stage)
        metrics["token_acc"].update((outputs["logits"].argmax(-1) == labels)[real].float())
        if "exact_match" in metrics:
            hyp = self.decode(self.encoder_inputs(batch))
            pred = hyp.ids[:, : labels.shape[1]]  # past the reference only a wrong length can differ
            pred = nn.functional.pad(pred, (0, labels.shape[1] - pred.shape[1]), value=-1)
            same = ((pred == labels) | ~real).all(dim=1) & (hyp.lengths == real.sum(dim=1))
            metrics["exact_match"].update(same.float())

    def predict(self, outputs: dict[str, Any], batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """Decoded ids (B, max_decode_len) after BOS (EOS included, then padding), their lengths and scores."""
        hyp = self.decode(self.encoder_inputs(batch))
        fill = self.eos_id if self.pad_id is None else self.pad_id
        ids = nn.functional.pad(hyp.ids, (0, self.max_decode_len - hyp.ids.shape[1]), value=fill)
        return {"ids": ids, "lengths": hyp.lengths, "scores": hyp.scores}
