"""OmniModel: tokenizers + modality tags + learnable extra tokens + one trunk + heads.

Shape legend
    B batch   N tokens in the joint sequence   D width   E extra tokens of one name (CLS: 1)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from omni.attention import masks as mask_lib
from omni.attention.plans import BUCKET, AttentionPath, Plan, PlanCache, choose_path
from omni.tokens import Tokens
from omni.transformer import Transformer, TransformerConfig

__all__ = ["ModelOutput", "OmniModel"]


@dataclass
class ModelOutput:
    """What heads read.

    Attributes:
        tokens: the joint sequence after the trunk (``x`` (B, N, D) replaced by the trunk's output).
        extras: {name: (B, E, D)} outputs at the learnable extra tokens (``"cls"``, queries).
        spans: {tokenizer name: slice of N} where each tokenizer's tokens sit in the sequence.
    """

    tokens: Tokens
    extras: dict[str, Tensor]
    spans: dict[str, slice]

    def mean(self, name: str | None = None) -> Tensor:
        """(B, D) mean over real tokens of one tokenizer (or of all tokenizers' tokens when ``name`` is None)."""
        if name is None:
            start = min((s.start for s in self.spans.values()), default=0)
            part = self.tokens[slice(start, None)]
        else:
            part = self.tokens[self.spans[name]]
        weight = part.pad.unsqueeze(-1).to(part.x.dtype)
        return (part.x * weight).sum(1) / weight.sum(1).clamp(min=1.0)


class OmniModel(nn.Module):
    """Any mix of modalities through one transformer.

    Each tokenizer turns its raw input into ``Tokens``; the model tags every token with a learned modality
    embedding, puts the extra tokens (CLS, queries) first, joins everything into one sequence, builds the
    attention mask once from the tokens' metadata and runs the trunk; each head reads the ``ModelOutput``.
    A tokenizer whose input is absent from a batch is skipped (a sensor may be missing).
    """

    def __init__(
        self,
        tokenizers: Mapping[str, nn.Module],
        trunk: Transformer | TransformerConfig | Mapping[str, Any],
        heads: Mapping[str, nn.Module] | None = None,
        extra_tokens: Mapping[str, int] | None = None,
        mask: str | mask_lib.Mask | None = None,
    ) -> None:
        """
        Args:
            tokenizers: {name: tokenizer}; the name is the key of that modality's raw input in ``forward``.
            trunk: the transformer, or its config.
            heads: {name: head}; each head is called with the ``ModelOutput`` and its result is returned under
                its name.
            extra_tokens: {name: count} learnable tokens put first in every sequence, e.g. ``{"cls": 1}``.
            mask: one attention mask for every layer (a ``Mask``, a name or an expression string); None uses the
                trunk config's per-layer schedule (``TransformerConfig.masks``).
        """
        super().__init__()
        if not tokenizers:
            raise ValueError("tokenizers: expected at least one tokenizer, got none")
        self.trunk = trunk if isinstance(trunk, Transformer) else Transformer(trunk)
        dim = self.trunk.config.dim
        self.tokenizers = nn.ModuleDict(dict(tokenizers))
        self.heads = nn.ModuleDict(dict(heads or {}))

        # The modality table: every tag of every tokenizer, then one per extra-token name.
        names: list[str] = []
        self.modality_offset: dict[str, int] = {}
        for key, tok in self.tokenizers.items():
            tags = tuple(getattr(tok, "modalities", (key,)))
            self.modality_offset[key] = len(names)
            names += [key if len(tags) == 1 else f"{key}.{tag}" for tag in tags]
        extra = dict(extra_tokens or {})
        for key, count in extra.items():
            if not isinstance(count, int) or count < 1:
                raise ValueError(f"extra_tokens.{key}: expected a positive count, got {count!r}")
            self.modality_offset[key] = len(names)
            names.append(key)
        self.modality_names = names
        cfg = self.trunk.config
        if mask is not None:
            self.layer_masks = [mask_lib.from_name(mask).bind(names)] * cfg.depth
            self.layer_mask_names = [mask if isinstance(mask, str) else "mask"] * cfg.depth
        else:
            self.layer_masks = [m.bind(names) for m in cfg.layer_masks()]
            self.layer_mask_names = [cfg.masks[i % len(cfg.masks)] for i in range(cfg.depth)]
        self.plans = PlanCache()
        self.modality_embed = nn.Embedding(len(names), dim)
        nn.init.normal_(self.modality_embed.weight, std=0.02)
        self.extra_tokens = nn.ParameterDict(
            {key: nn.Parameter(torch.randn(count, dim) * 0.02) for key, count in extra.items()}
        )

    @property
    def dim(self) -> int:
        return self.trunk.config.dim

    def tokenize(self, inputs: Mapping[str, Any]) -> tuple[Tokens, dict[str, slice]]:
        """Run every tokenizer whose input is present and join the results after the extra tokens.

        Args:
            inputs: {tokenizer name: raw input}; a dict value is passed as keyword arguments.
        Returns:
            the joint ``Tokens`` (modality tags already mapped onto the model's table, embeddings not yet added)
            and {name: slice of N} for every extra-token name and present tokenizer.
        """
        if not isinstance(inputs, Mapping):
            raise ValueError(f"inputs: expected a dict {{modality name: raw input}}, got {type(inputs).__name__}")
        unknown = sorted(set(inputs) - set(self.tokenizers))
        if unknown:
            raise ValueError(f"inputs: unknown modality keys {unknown}; expected some of {sorted(self.tokenizers)}")
        parts: list[tuple[str, Tokens]] = []
        for key, tok in self.tokenizers.items():
            if key not in inputs or inputs[key] is None:
                continue
            raw = inputs[key]
            t = tok(**raw) if isinstance(raw, Mapping) else tok(raw)
            parts.append((key, t.replace(modality=t.modality + self.modality_offset[key])))
        if not parts:
            raise ValueError(f"inputs: expected at least one of {sorted(self.tokenizers)}, got none")
        first, ref_tokens = parts[0]
        batch, ref = ref_tokens.batch_size, ref_tokens.x
        for key, t in parts[1:]:
            if t.batch_size != batch:
                raise ValueError(f"inputs.{key}: expected batch size {batch} like inputs.{first}, got {t.batch_size}")
        extras = [
            (
                key,
                Tokens.create(
                    p.to(ref.dtype).unsqueeze(0).expand(batch, -1, -1),
                    modality=self.modality_offset[key],
                    is_global=True,
                ),
            )
            for key, p in self.extra_tokens.items()
        ]
        parts = extras + parts  # extra tokens first, as ViT puts its CLS token
        spans: dict[str, slice] = {}
        start = 0
        for key, t in parts:
            spans[key] = slice(start, start + t.num_tokens)
            start += t.num_tokens
        return Tokens.cat([t for _, t in parts]), spans

    def attention_plans(self, tokens: Tokens, path: AttentionPath) -> list[Plan]:
        """One mask plan per layer: each distinct mask is built once (or fetched from the cache) and shared."""
        built: dict[mask_lib.Mask, Plan] = {}
        for m in self.layer_masks:
            if m not in built:
                built[m] = self.plans.get(m, tokens, path)
        return [built[m] for m in self.layer_masks]

    def mix(self, tokens: Tokens) -> Tokens:
        """Tag, mask, run the trunk: the joint (or packed) Tokens in, the same Tokens with the trunk's output
        ``x`` (B, N, D) out. Masks are built once here (or fetched from the cache) and shared by the layers."""
        n = tokens.num_tokens
        x = tokens.x + self.modality_embed(tokens.modality).to(tokens.x.dtype)
        tokens = tokens.replace(x=x)
        path = choose_path(self.trunk.config.attention, n, x.device, torch.is_grad_enabled())
        if path == "flex":  # round the length up so that a changing length does not recompile every step
            tokens = tokens.pad_to(-(-n // BUCKET) * BUCKET)
        layer_plans = self.attention_plans(tokens, path)
        return tokens.replace(x=self.trunk(tokens.x, layer_plans))[slice(0, n)]

    def forward(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Tokenize, tag, mix, read out.

        Args:
            inputs: {tokenizer name: raw input (a tensor, or a dict of keyword arguments)}.
        Returns:
            {head name: head output}, plus ``"output"``: the ``ModelOutput`` itself.
        """
        tokens, spans = self.tokenize(inputs)
        tokens = self.mix(tokens)
        extras = {key: tokens.x[:, spans[key]] for key in self.extra_tokens}
        token_spans = {key: s for key, s in spans.items() if key in self.tokenizers}
        out = ModelOutput(tokens=tokens, extras=extras, spans=token_spans)
        result: dict[str, Any] = {name: head(out) for name, head in self.heads.items()}
        result["output"] = out
        return result
