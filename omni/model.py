"""OmniModel: tokenizers + modality tags + learnable extra tokens + one trunk + heads; an encoder–decoder of two.

Shape legend
    B batch   N tokens in the joint sequence (new tokens when decoding)   C cached tokens   D width
    E extra tokens of one name (CLS: 1)   M context (memory) tokens: an encoder's output, for cross-attention
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

from omni.attention import masks as mask_lib
from omni.attention.plans import BUCKET, AttentionPath, Plan, PlanCache, choose_path
from omni.decoding import DecodeState
from omni.tokens import Tokens
from omni.transformer import Transformer, TransformerConfig

__all__ = ["EncoderDecoder", "MaskPanels", "ModelOutput", "OmniModel"]


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


Context = ModelOutput | Tokens
"""A decoder's memory: an encoder's ``ModelOutput`` or ``Tokens``; its ``x`` (B, M, D) and ``pad`` (B, M) are used."""


@dataclass
class MaskPanels:
    """Each distinct layer mask of one sample, for drawing (``omni.viz.plot_masks``).

    Attributes:
        panels: [(title, (N, N) bool mask)], one per distinct mask, titled by the layers using it
            ("layers 0, 1: local"); True = may attend.
        modality: (N,) long index into ``names`` of every token.
        pad: (N,) bool, True where the token is real.
        names: the model's modality table.
    """

    panels: list[tuple[str, Tensor]]
    modality: Tensor
    pad: Tensor
    names: list[str]


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
        self.layer_exited = self._exits(cfg.exits, names, cfg.depth)
        self.plans = PlanCache()
        self.modality_embed = nn.Embedding(len(names), dim)
        nn.init.normal_(self.modality_embed.weight, std=0.02)
        self.extra_tokens = nn.ParameterDict(
            {key: nn.Parameter(torch.randn(count, dim) * 0.02) for key, count in extra.items()}
        )

    @property
    def dim(self) -> int:
        return self.trunk.config.dim

    def tokenize(self, inputs: Mapping[str, Any], extras: bool = True) -> tuple[Tokens, dict[str, slice]]:
        """Run every tokenizer whose input is present and join the results after the extra tokens.

        Args:
            inputs: {tokenizer name: raw input}; a dict value is passed as keyword arguments.
            extras: put the learnable extra tokens first (False when decoding past the first step).
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
            if extras
        ]
        parts = extras + parts  # extra tokens first, as ViT puts its CLS token
        spans: dict[str, slice] = {}
        start = 0
        for key, t in parts:
            spans[key] = slice(start, start + t.num_tokens)
            start += t.num_tokens
        return Tokens.cat([t for _, t in parts]), spans

    @staticmethod
    def _exits(exits: Mapping[str, int], names: list[str], depth: int) -> list[tuple[int, ...]]:
        """``TransformerConfig.exits`` -> per layer, the modality indices whose tokens have left the trunk."""
        for name in exits:
            if name not in names:
                raise ValueError(f"TransformerConfig.exits: unknown modality {name!r}; expected some of {names}")
        return [tuple(sorted(names.index(n) for n, layers in exits.items() if i >= layers)) for i in range(depth)]

    def layer_tokens(self, tokens: Tokens) -> list[Tensor | None]:
        """Per layer, None (every token takes part) or the (N_l,) indices of the tokens that do (``exits``)."""
        out: list[Tensor | None] = []
        made: dict[tuple[int, ...], Tensor | None] = {(): None}
        for exited in self.layer_exited:
            if exited not in made:
                keep = ~torch.isin(tokens.modality, tokens.modality.new_tensor(exited))  # (B, N)
                if not bool((keep == keep[:1]).all()):
                    raise ValueError(
                        "TransformerConfig.exits: expected the exiting modalities at the same positions in every row "
                        "(one layout per batch, not packed rows of different samples), got rows that differ"
                    )
                made[exited] = keep[0].nonzero().squeeze(-1)
            out.append(made[exited])
        return out

    def attention_plans(
        self, tokens: Tokens, path: AttentionPath, active: list[Tensor | None] | None = None
    ) -> list[Plan]:
        """One mask plan per layer: each distinct mask is built once (or fetched from the cache) and shared. With
        ``active`` (``layer_tokens``), a layer's mask is built on the tokens that layer runs on."""
        active = active or [None] * len(self.layer_masks)
        built: dict[tuple[mask_lib.Mask, int], Plan] = {}
        subsets: dict[int, Tokens] = {}
        plans = []
        for m, rows in zip(self.layer_masks, active, strict=True):
            key = (m, id(rows))
            if key not in built:
                if rows is not None and id(rows) not in subsets:
                    subsets[id(rows)] = tokens[rows]
                built[key] = self.plans.get(m, tokens if rows is None else subsets[id(rows)], path)
            plans.append(built[key])
        return plans

    def _memory(self, context: Context | None) -> tuple[Tensor | None, Tensor | None]:
        """The context's (x (B, M, D), pad (B, M)) for cross-attention, checked against this model's trunk."""
        cross = self.trunk.config.cross_attention
        if context is None:
            if cross:
                raise ValueError(
                    "context: this model's trunk has cross-attention (cross_attention: true) and expected a context "
                    "(an encoder's ModelOutput or Tokens), got None"
                )
            return None, None
        if not cross:
            raise ValueError("context: this model's trunk has no cross-attention (cross_attention: false), got one")
        tokens = context.tokens if isinstance(context, ModelOutput) else context
        if not isinstance(tokens, Tokens):
            raise ValueError(f"context: expected an encoder's ModelOutput or Tokens, got {type(context).__name__}")
        if tokens.dim != self.dim:
            raise ValueError(f"context.x: expected width D={self.dim} like this model's trunk, got {tokens.dim}")
        return tokens.x, tokens.pad

    def mix(self, tokens: Tokens, context: Context | None = None) -> Tokens:
        """Tag, mask, run the trunk: the joint (or packed) Tokens in, the same Tokens with the trunk's output
        ``x`` (B, N, D) out. Masks are built once here (or fetched from the cache) and shared by the layers.
        ``context``: the memory (B, M, D) that a cross-attention trunk attends (padded memory is never attended)."""
        memory, memory_pad = self._memory(context)
        n = tokens.num_tokens
        x = tokens.x + self.modality_embed(tokens.modality).to(tokens.x.dtype)
        tokens = tokens.replace(x=x)
        path = choose_path(self.trunk.config.attention, n, x.device, torch.is_grad_enabled())
        if path == "flex":  # round the length up so that a changing length does not recompile every step
            tokens = tokens.pad_to(-(-n // BUCKET) * BUCKET)
        active = self.layer_tokens(tokens)
        layer_plans = self.attention_plans(tokens, path, active)
        y = self.trunk(tokens.x, layer_plans, context=memory, context_pad=memory_pad, active=active)
        return tokens.replace(x=y)[slice(0, n)]

    def _output(self, tokens: Tokens, spans: dict[str, slice]) -> ModelOutput:
        extras = {key: tokens.x[:, spans[key]] for key in self.extra_tokens if key in spans}
        token_spans = {key: s for key, s in spans.items() if key in self.tokenizers}
        return ModelOutput(tokens=tokens, extras=extras, spans=token_spans)

    def _read_out(self, out: ModelOutput) -> dict[str, Any]:
        result: dict[str, Any] = {name: head(out) for name, head in self.heads.items()}
        result["output"] = out
        return result

    def read_out(self, mixed: Tokens, spans: dict[str, slice]) -> dict[str, Any]:
        """The heads on the trunk's output: ``mixed`` (B, N, D) as ``mix`` returns it for the tokens and ``spans`` of
        ``tokenize``. ``forward`` is ``read_out(mix(tokens), spans)``; a caller that runs the trunk itself (on packed
        rows, ``omni.tasks.joint``) gives each sample's rows back here."""
        return self._read_out(self._output(mixed, spans))

    def encode(self, inputs: Mapping[str, Any], context: Context | None = None) -> ModelOutput:
        """Tokenize, tag, mix; no heads. An encoder's output is a decoder's ``context``.

        Args:
            inputs: {tokenizer name: raw input (a tensor, or a dict of keyword arguments)}.
            context: for a cross-attention trunk, the memory: another model's ``ModelOutput`` or ``Tokens``
                (x (B, M, D), pad (B, M)).
        Returns:
            the ``ModelOutput``: tokens x (B, N, D), extras, spans.
        """
        tokens, spans = self.tokenize(inputs)
        return self._output(self.mix(tokens, context), spans)

    def forward(self, inputs: Mapping[str, Any], context: Context | None = None) -> dict[str, Any]:
        """Tokenize, tag, mix, read out.

        Args:
            inputs: {tokenizer name: raw input (a tensor, or a dict of keyword arguments)}.
            context: for a cross-attention trunk (a decoder), the memory it attends: an encoder's ``ModelOutput``
                or ``Tokens`` (x (B, M, D), pad (B, M)); see ``encode``.
        Returns:
            {head name: head output}, plus ``"output"``: the ``ModelOutput`` (tokens x (B, N, D)) itself.
        """
        return self._read_out(self.encode(inputs, context))

    # ------------------------------------------------------------------ decoding step by step
    def start_decoding(self, context: Context | None = None, *, window: int | None = None) -> DecodeState:
        """An empty decoding state; a cross-attention trunk's keys/values of ``context`` are computed here, once.

        Args:
            context: the memory (x (B, M, D), pad (B, M)) of an encoder; required when the trunk has
                cross-attention. ``state.expand(beams)`` repeats it for a beam search.
            window: keep only the tokens of the newest ``window`` groups (RL timesteps) in the cache: a rolling
                window. Equal to a full forward when the layer masks themselves look back at most ``window``
                groups, e.g. ``causal(by="group", window=window)``.
        """
        memory, memory_pad = self._memory(context)
        return DecodeState(cache=self.trunk.new_cache(memory, memory_pad), window=window)

    def step(self, inputs: Mapping[str, Any] | Tokens, state: DecodeState) -> dict[str, Any]:
        """Run the trunk on new tokens only, against every cached key, and add them to ``state``.

        Each layer's mask rows for the N new queries against the C cached + N new keys come from the model's own
        layer masks over the cached and new tokens' metadata, so a step gives what a full forward over the whole
        sequence gives at those tokens, as long as no earlier token may attend a later one (causal masks).

        Args:
            inputs: raw inputs as in ``forward`` for the new tokens only (the extra tokens enter on the first
                step); or ``Tokens`` from ``tokenize`` (modality tags already on the model's table), e.g. a slice
                of them for a partial step such as a Decision Transformer's (R_t, s_t) before a_t is chosen.
            state: from ``start_decoding``; extended in place (and rolled when it has a window).
        Returns:
            {head name: head output on the new tokens}, plus ``"output"``: the ``ModelOutput`` of the new tokens
            (tokens x (B, N, D); spans relative to them).
        """
        if not isinstance(state, DecodeState):
            raise ValueError(f"state: expected a DecodeState from start_decoding(), got {type(state).__name__}")
        if self.trunk.config.exits:
            raise ValueError("TransformerConfig.exits: step-by-step decoding runs every token through every layer")
        if isinstance(inputs, Tokens):
            new, spans = inputs, {}
        else:
            new, spans = self.tokenize(inputs, extras=state.steps == 0)
        new = new.replace(x=new.x + self.modality_embed(new.modality).to(new.x.dtype))
        past = state.length
        seen = state.append(new)  # metadata of the C + N tokens
        rows = torch.arange(past, past + new.num_tokens, device=new.x.device)
        one_sample = bool((seen.sample == seen.sample[:, :1]).all())
        nothing_masked = bool(seen.pad.all()) and one_sample
        built: dict[mask_lib.Mask, Plan] = {}
        for m in self.layer_masks:
            if m not in built:
                built[m] = None if m.is_full and nothing_masked else m.dense(seen, rows)  # (B, N, C + N)
        y = self.trunk(new.x, [built[m] for m in self.layer_masks], cache=state.cache)
        state.roll()
        return self._read_out(self._output(new.replace(x=y), spans))

    # ------------------------------------------------------------------ pictures
    def mask_panels(self, inputs: Mapping[str, Any], sample: int = 0) -> MaskPanels:
        """Each distinct layer mask of one sample of a batch, as dense (N, N) bool pictures.

        Args:
            inputs: {tokenizer name: raw input}, as in ``forward``.
            sample: which batch row to draw.
        """
        with torch.no_grad():
            tokens, _ = self.tokenize(inputs)
        if isinstance(sample, bool) or not isinstance(sample, int) or not 0 <= sample < tokens.batch_size:
            raise ValueError(f"sample: expected an index in [0, {tokens.batch_size}), got {sample!r}")
        one = Tokens(**{f.name: getattr(tokens, f.name)[sample : sample + 1] for f in fields(tokens)})
        layers: dict[mask_lib.Mask, tuple[list[int], str]] = {}
        for i, (m, name) in enumerate(zip(self.layer_masks, self.layer_mask_names, strict=True)):
            layers.setdefault(m, ([], name))[0].append(i)
        panels = [(f"layers {', '.join(map(str, ids))}: {name}", m.dense(one)[0]) for m, (ids, name) in layers.items()]
        return MaskPanels(panels=panels, modality=one.modality[0], pad=one.pad[0], names=list(self.modality_names))


class EncoderDecoder(nn.Module):
    """An encoder ``OmniModel`` whose output is the memory of a decoder ``OmniModel`` with cross-attention
    (Whisper: audio encoder, text decoder). Encode once, decode many times: ``start_decoding`` then ``step``."""

    def __init__(self, encoder: OmniModel, decoder: OmniModel) -> None:
        """
        Args:
            encoder: reads the source (audio, images, ...); its heads (e.g. CTC) run in ``forward`` too.
            decoder: a model whose trunk has ``cross_attention: true`` and the encoder's width.
        """
        super().__init__()
        for name, m in (("encoder", encoder), ("decoder", decoder)):
            if not isinstance(m, OmniModel):
                raise ValueError(f"{name}: expected an OmniModel, got {type(m).__name__}")
        if not decoder.trunk.config.cross_attention:
            raise ValueError("decoder: expected a trunk with cross_attention: true, got cross_attention: false")
        if encoder.dim != decoder.dim:
            raise ValueError(f"decoder: expected width dim={encoder.dim} like the encoder, got dim={decoder.dim}")
        self.encoder = encoder
        self.decoder = decoder

    def encode(self, enc_inputs: Mapping[str, Any]) -> ModelOutput:
        """The memory: the encoder's ``ModelOutput`` (tokens x (B, M, D), pad (B, M))."""
        return self.encoder.encode(enc_inputs)

    def forward(self, enc_inputs: Mapping[str, Any], dec_inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Teacher-forced: encode the source, decode the whole target under the decoder's (causal) masks.

        Args:
            enc_inputs: the encoder's raw inputs; its tokens become the memory (B, M, D).
            dec_inputs: the decoder's raw inputs (B, N) for the whole target.
        Returns:
            the decoder's {head name: output} and ``"output"`` (tokens x (B, N, D)), plus ``"encoder"``: the
            encoder's own {head name: output, "output": ModelOutput}.
        """
        enc = self.encoder(enc_inputs)
        result = self.decoder(dec_inputs, context=enc["output"])
        result["encoder"] = enc
        return result

    def start_decoding(self, enc_inputs: Mapping[str, Any] | ModelOutput, *, window: int | None = None) -> DecodeState:
        """Encode once (or take the encoder's ``ModelOutput`` already computed, e.g. by a task that also reads the
        encoder's CTC head); a decoding state whose cross-attention keys/values hold the memory."""
        memory = enc_inputs if isinstance(enc_inputs, ModelOutput) else self.encode(enc_inputs)
        return self.decoder.start_decoding(memory, window=window)

    def step(self, dec_inputs: Mapping[str, Any] | Tokens, state: DecodeState) -> dict[str, Any]:
        """One decoder step on new tokens (B, N); see ``OmniModel.step``."""
        return self.decoder.step(dec_inputs, state)
