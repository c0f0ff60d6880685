"""Encoder–decoder and step-by-step decoding: every cached path equals a full forward under the same masks."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from omni import masks
from omni.attention.kernels import attend
from omni.attention.plans import SparsePlan, plan, sparse_plan
from omni.decoding import DecodeState
from omni.model import EncoderDecoder, ModelOutput, OmniModel
from omni.tokenizers import SensorTokenizer, TrajectoryTokenizer
from omni.tokens import Tokens
from omni.transformer import TransformerConfig

D = 32
VOCAB = 11
ATOL = 1e-5


class SymbolTokenizer(nn.Module):
    """Symbol ids -> one token each: an id embedding plus a learned embedding of the absolute position."""

    def __init__(self, dim: int, vocab: int = VOCAB, max_len: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.position = nn.Embedding(max_len, dim)

    def forward(self, ids: torch.Tensor, start: int = 0, mask: torch.Tensor | None = None) -> Tokens:
        positions = start + torch.arange(ids.shape[1])
        x = self.embed(ids) + self.position(positions)
        return Tokens.create(x, pos=positions.float()[:, None], pad=mask)


def encoder_decoder(dec_masks=("causal",), mask_defs=None) -> EncoderDecoder:
    torch.manual_seed(0)
    encoder = OmniModel(
        tokenizers={"points": SensorTokenizer(D, in_features=4, name="points")},
        trunk=TransformerConfig(dim=D, depth=2, heads=4),
    )
    decoder = OmniModel(
        tokenizers={"text": SymbolTokenizer(D)},
        trunk=TransformerConfig(
            dim=D, depth=3, heads=4, cross_attention=True, masks=list(dec_masks), mask_defs=mask_defs or {}
        ),
        extra_tokens={"bos": 1},
    )
    return EncoderDecoder(encoder, decoder).eval()


def source(b=2, m=6):
    """Encoder inputs with padded memory: row 1 has only 3 real points."""
    mask = torch.ones(b, m, dtype=torch.bool)
    mask[1, 3:] = False
    return {"points": {"x": torch.randn(b, m, 4), "mask": mask}}


def rows_of(tokens: Tokens, index: torch.Tensor) -> Tokens:
    return Tokens(**{k: getattr(tokens, k)[index] for k in Tokens.__dataclass_fields__})


# ---------------------------------------------------------------------------- (a) teacher forcing vs cache
def test_cached_decoding_with_padded_memory_equals_teacher_forced_forward():
    # two distinct layer masks: plain causal, and causal within 2 positions (by index)
    model = encoder_decoder(["causal", "near"], {"near": "causal(window=2)"})
    src = source()
    ids = torch.randint(0, VOCAB, (2, 7))
    tgt_pad = torch.ones(2, 7, dtype=torch.bool)
    tgt_pad[1, 5:] = False  # a shorter target in row 1
    with torch.no_grad():
        full = model(src, {"text": {"ids": ids, "mask": tgt_pad}})["output"].tokens.x  # (2, 1 + 7, D)
        memory = model.encode(src)
        state = model.decoder.start_decoding(memory)
        outs = [model.step({"text": {"ids": ids[:, :3], "mask": tgt_pad[:, :3]}}, state)]  # BOS + a 3-token prefill
        for t in range(3, 7):
            new = {"ids": ids[:, t : t + 1], "start": t, "mask": tgt_pad[:, t : t + 1]}
            outs.append(model.step({"text": new}, state))
    assert "bos" in outs[0]["output"].extras and "bos" not in outs[1]["output"].extras
    assert state.length == 8 and state.steps == 5
    got = torch.cat([o["output"].tokens.x for o in outs], dim=1)
    torch.testing.assert_close(got, full, atol=ATOL, rtol=ATOL)


def test_padded_memory_is_never_attended():
    model = encoder_decoder()
    src = source()
    ids = torch.randint(0, VOCAB, (2, 4))
    with torch.no_grad():
        memory = model.encode(src)
        garbage = memory.tokens.x.clone()
        garbage[1, memory.tokens.pad[1].logical_not()] = 1e3
        a = model.decoder({"text": ids}, context=memory)["output"].tokens.x
        b = model.decoder({"text": ids}, context=memory.tokens.replace(x=garbage))["output"].tokens.x
    torch.testing.assert_close(a, b, atol=ATOL, rtol=ATOL)


# ---------------------------------------------------------------------------- (b) beam search
def test_beam_search_reorders_equal_full_recomputation_of_each_hypothesis():
    model = encoder_decoder()
    beams, b = 3, 2
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        memory = model.encode(source(b))
        state = model.decoder.start_decoding(memory)
        assert isinstance(state, DecodeState) and state.batch_size == b
        state.expand(beams)
        source_of = torch.arange(b).repeat_interleave(beams)  # (6,) the source row of each hypothesis
        prefix = torch.zeros(b * beams, 0, dtype=torch.long)
        for t in range(5):
            new = torch.randint(0, VOCAB, (b * beams, 1), generator=g)
            out = model.step({"text": {"ids": new, "start": t}}, state)["output"]
            prefix = torch.cat([prefix, new], dim=1)
            ref = model.decoder({"text": prefix}, context=rows_of(memory.tokens, source_of))["output"].tokens.x
            torch.testing.assert_close(out.tokens.x[:, -1], ref[:, -1], atol=ATOL, rtol=ATOL)
            if t % 2:  # any permutation (even across sources) ...
                index = torch.randperm(b * beams, generator=g)
            else:  # ... or beam search's choice: hypotheses of the same source, some kept twice, some dropped
                index = source_of * beams + torch.randint(0, beams, (b * beams,), generator=g)
            state.reorder(index)
            source_of, prefix = source_of[index], prefix[index]
    assert state.batch_size == b * beams


def test_state_checks_its_arguments():
    model = encoder_decoder()
    state = model.start_decoding(source())
    with pytest.raises(ValueError, match="beams: expected a positive int"):
        state.expand(0)
    with pytest.raises(ValueError, match="index: expected rows in \\[0, 2\\)"):
        state.reorder(torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="index: expected a \\(R,\\) long tensor"):
        state.reorder(torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="inputs: expected batch size 2"):
        model.step({"text": torch.zeros(3, 1, dtype=torch.long)}, state)
    with pytest.raises(ValueError, match="window: expected a positive number"):
        model.decoder.start_decoding(model.encode(source()), window=0)
    with pytest.raises(ValueError, match="state: expected a DecodeState"):
        model.step({"text": torch.zeros(2, 1, dtype=torch.long)}, object())


# ---------------------------------------------------------------------------- encoder–decoder wiring
def test_encoder_decoder_forward_and_errors():
    model = encoder_decoder()
    src, ids = source(), torch.randint(0, VOCAB, (2, 5))
    with torch.no_grad():
        out = model(src, {"text": ids})
        again = model.decoder({"text": ids}, context=model.encoder(src)["output"])
    assert isinstance(out["encoder"]["output"], ModelOutput)
    torch.testing.assert_close(out["output"].tokens.x, again["output"].tokens.x)
    with pytest.raises(ValueError, match="cross_attention: true\\) and expected a context"):
        model.decoder({"text": ids})
    with pytest.raises(ValueError, match="no cross-attention"):
        model.encoder(src, context=out["output"])
    with pytest.raises(ValueError, match="context: expected an encoder's ModelOutput or Tokens"):
        model.decoder({"text": ids}, context=torch.zeros(2, 3, D))
    narrow = OmniModel({"points": SensorTokenizer(16, in_features=4)}, TransformerConfig(dim=16, depth=1, heads=2))
    with pytest.raises(ValueError, match="decoder: expected width dim=16 like the encoder, got dim=32"):
        EncoderDecoder(narrow, model.decoder)
    with pytest.raises(ValueError, match="decoder: expected a trunk with cross_attention: true"):
        EncoderDecoder(model.encoder, model.encoder)
    with pytest.raises(ValueError, match="context.x: expected width D=32"):
        model.decoder({"text": ids}, context=narrow.encode(src))


# ---------------------------------------------------------------------------- (c) Decision Transformer rollout
S, A = 3, 2


def decision_transformer(mask: str) -> OmniModel:
    torch.manual_seed(0)
    return OmniModel(
        tokenizers={"traj": TrajectoryTokenizer(D, state_dim=S, act_dim=A, max_timestep=256)},
        trunk=TransformerConfig(dim=D, depth=2, heads=4, masks=[mask]),
    ).eval()


def episode(b: int, t: int) -> dict:
    """Row 0 steps through timesteps 0, 1, 2, ...; row 1 through 0, 2, 4, ... (so it keeps fewer steps in a
    window of groups) and has its first step padded."""
    timesteps = torch.stack([torch.arange(t), 2 * torch.arange(t)])[:b]
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[1:, 0] = False
    return {
        "returns_to_go": torch.randn(b, t, 1),
        "states": torch.randn(b, t, S),
        "actions": torch.randn(b, t, A),
        "timesteps": timesteps,
        "mask": mask,
    }


def window_of(data: dict, t: int) -> dict:
    return {k: v[:, t : t + 1] for k, v in data.items()}


@pytest.mark.parametrize("k", [1, 3])
def test_rolling_window_rollout_equals_full_forward_with_sliding_window_mask(k):
    model = decision_transformer(f"causal(by='group', window={k})")
    steps = 8
    data = episode(2, steps)
    with torch.no_grad():
        full = model({"traj": data})["output"].tokens.x  # (2, 3T, D)
        state = model.start_decoding(window=k)
        for t in range(steps):  # one timestep (R_t, s_t, a_t) at a time: the three see each other
            out = model.step({"traj": window_of(data, t)}, state)["output"]
            torch.testing.assert_close(out.tokens.x, full[:, 3 * t : 3 * t + 3], atol=ATOL, rtol=ATOL)
            assert state.length <= 3 * k  # the cache never holds more than the window
    assert state.cache.length == state.length


def test_partial_steps_with_index_causal_window():
    """DT's own order: predict a_t from (R_t, s_t), then add a_t. Causal by index within a window of groups."""
    k = 2
    model = decision_transformer(f"causal() & causal(by='group', window={k})")
    steps = 6
    data = episode(2, steps)
    with torch.no_grad():
        full = model({"traj": data})["output"].tokens.x
        state = model.start_decoding(window=k)
        for t in range(steps):
            tokens, _ = model.tokenize({"traj": window_of(data, t)})  # R_t, s_t, a_t
            rs = model.step(tokens[0:2], state)["output"].tokens.x  # a_t would be predicted from s_t here
            a = model.step(tokens[2:3], state)["output"].tokens.x
            torch.testing.assert_close(torch.cat([rs, a], dim=1), full[:, 3 * t : 3 * t + 3], atol=ATOL, rtol=ATOL)
            assert state.length <= 3 * k


# ---------------------------------------------------------------------------- (d) windowed masks on every path
@st.composite
def metadata(draw):
    b, n = draw(st.integers(1, 2)), draw(st.integers(1, 150))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    return Tokens.create(
        torch.zeros(b, n, 4),
        modality=torch.randint(0, 3, (b, n), generator=g),
        group=torch.randint(0, 12, (b, n), generator=g).sort(-1).values,
        sample=torch.randint(0, 2, (b, n), generator=g).sort(-1).values,
        pad=torch.rand(b, n, generator=g) > 0.2,
        is_global=torch.rand(b, n, generator=g) > 0.95,
    )


@settings(max_examples=30, deadline=None)
@given(tokens=metadata(), by=st.sampled_from(["index", "group"]), window=st.integers(1, 20), glob=st.booleans())
def test_windowed_causal_dense_equals_reference_and_sparse_equals_dense(tokens, by, window, glob):
    mask = masks.parse(f"causal(by={by!r}, window={window})")
    if glob:
        mask = mask | masks.global_tokens()
    dense = mask.dense(tokens)
    key = torch.arange(tokens.num_tokens) if by == "index" else tokens.group
    qk = (key.unsqueeze(-1), key.unsqueeze(-2)) if by == "group" else (key[:, None], key[None, :])
    ref = (qk[1] <= qk[0]) & (qk[1] > qk[0] - window)
    if glob:
        ref = ref | tokens.is_global.unsqueeze(-1) | tokens.is_global.unsqueeze(-2)
    ref = ref & tokens.pad.unsqueeze(1) & (tokens.sample.unsqueeze(-1) == tokens.sample.unsqueeze(-2))
    assert torch.equal(dense, ref.expand_as(dense))
    b, n = tokens.pad.shape
    q, k_, v = torch.randn(3, b, 2, n, 8).unbind(0)
    torch.testing.assert_close(
        attend(q, k_, v, sparse_plan(mask, tokens)), attend(q, k_, v, dense), atol=ATOL, rtol=ATOL
    )


def test_long_rollout_dense_and_sparse_paths_agree_with_a_windowed_mask():
    mask = "causal(by='group', window=4)"
    data = episode(2, 100)  # 300 tokens
    outs = {}
    for path in ("dense", "sparse"):
        model = decision_transformer(mask)
        model.trunk.config.attention = path
        tokens, _ = model.tokenize({"traj": data})
        if path == "sparse":
            assert isinstance(plan(model.layer_masks[0], tokens, "sparse"), SparsePlan)  # not the dense fallback
        with torch.no_grad():
            outs[path] = model({"traj": data})["output"].tokens.x
    torch.testing.assert_close(outs["sparse"], outs["dense"], atol=ATOL, rtol=ATOL)


@pytest.mark.gpu
def test_windowed_causal_flex_equals_dense_on_cuda():
    n = 384
    tokens = Tokens.create(
        torch.zeros(2, n, 4),
        group=torch.arange(n)[None].expand(2, -1) // 3,
        pad=torch.rand(2, n) > 0.1,
        is_global=torch.arange(n)[None].expand(2, -1) < 2,
    ).to("cuda")
    for mask in (masks.causal(by="group", window=4) | masks.global_tokens(), masks.causal(window=20)):
        q, k, v = (torch.randn(2, 4, n, 32, device="cuda") for _ in range(3))
        ref = attend(q, k, v, mask.dense(tokens))
        torch.testing.assert_close(attend(q, k, v, mask.block_mask(tokens)), ref, atol=2e-5, rtol=2e-5)


def test_causal_window_is_checked():
    with pytest.raises(ValueError, match="causal.window: expected a positive int or None, got 0"):
        masks.causal(window=0)
    assert masks.parse("causal(by='group', window=20)") == masks.Causal(by="group", window=20)
