"""TrajectoryTokenizer: Decision Transformer token layout, timestep embedding, discrete actions, input checks."""

from __future__ import annotations

import pytest
import torch

from omni.tokenizers import TrajectoryTokenizer

B, K, S, A, D = 2, 4, 5, 3, 16


@pytest.fixture
def tok() -> TrajectoryTokenizer:
    torch.manual_seed(0)
    return TrajectoryTokenizer(D, state_dim=S, act_dim=A, max_timestep=100)


@pytest.fixture
def dtok() -> TrajectoryTokenizer:
    torch.manual_seed(0)
    return TrajectoryTokenizer(D, state_dim=S, act_dim=6, discrete_actions=True, max_timestep=100)


def inputs(discrete: bool = False, act_dim: int = A) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    actions = torch.randint(0, act_dim, (B, K), generator=g) if discrete else torch.randn(B, K, act_dim, generator=g)
    return {
        "returns_to_go": torch.randn(B, K, 1, generator=g),
        "states": torch.randn(B, K, S, generator=g),
        "actions": actions,
        "timesteps": torch.arange(K).repeat(B, 1) + torch.tensor([[0], [40]]),
    }


def changed_tokens(tok: TrajectoryTokenizer, base: dict, **changes: torch.Tensor) -> set[int]:
    """Token indices (in row 0) whose embedding differs when some inputs change."""
    before = tok(**base).x[0]
    after = tok(**{**base, **changes}).x[0]
    return set((before - after).abs().amax(dim=-1).gt(1e-6).nonzero().flatten().tolist())


def test_shapes_and_metadata(tok):
    batch = inputs()
    out = tok(**batch)
    assert out.x.shape == (B, 3 * K, D)
    assert out.modality[0].tolist() == [0, 1, 2] * K
    expected_t = batch["timesteps"].repeat_interleave(3, dim=1)
    assert torch.equal(out.group, expected_t)
    assert torch.equal(out.pos[..., 0], expected_t.float())
    assert out.pos.shape == (B, 3 * K, 1)
    assert out.pad.all()
    assert tok.modalities == ("return", "state", "action")


@pytest.mark.parametrize("step", range(K))
def test_interleaving_order(tok, step):
    base = inputs()
    rtg = base["returns_to_go"].clone()
    rtg[0, step] += 1.0
    states = base["states"].clone()
    states[0, step] += 1.0
    actions = base["actions"].clone()
    actions[0, step] += 1.0
    assert changed_tokens(tok, base, returns_to_go=rtg) == {3 * step}
    assert changed_tokens(tok, base, states=states) == {3 * step + 1}
    assert changed_tokens(tok, base, actions=actions) == {3 * step + 2}


def test_matches_decision_transformer_reference(tok):
    """The embedding of kzl/decision-transformer's gym DecisionTransformer.forward, written out."""
    batch = inputs()
    time = tok.embed_timestep(batch["timesteps"])
    r = tok.embed_return(batch["returns_to_go"]) + time
    s = tok.embed_state(batch["states"]) + time
    a = tok.embed_action(batch["actions"]) + time
    stacked = torch.stack((r, s, a), dim=1).permute(0, 2, 1, 3).reshape(B, 3 * K, D)
    torch.testing.assert_close(tok(**batch).x, tok.embed_ln(stacked))


def test_timestep_embedding_shared_by_the_three_tokens_of_a_step(tok):
    base = inputs()
    t = base["timesteps"].clone()
    t[0, 2] = 77
    assert changed_tokens(tok, base, timesteps=t) == {6, 7, 8}
    # With the content embeddings silenced, the three tokens of a step are LayerNorm(timestep embedding).
    with torch.no_grad():
        for layer in (tok.embed_return, tok.embed_state, tok.embed_action):
            layer.weight.zero_()
            layer.bias.zero_()
    out = tok(**base).x.reshape(B, K, 3, D)
    torch.testing.assert_close(out[:, :, 0], out[:, :, 1])
    torch.testing.assert_close(out[:, :, 0], out[:, :, 2])
    torch.testing.assert_close(out[:, :, 0], tok.embed_ln(tok.embed_timestep(base["timesteps"])))
    assert not torch.allclose(out[0, 0, 0], out[0, 1, 0])  # different timesteps, different tokens


def test_discrete_actions(dtok):
    base = inputs(discrete=True, act_dim=6)
    assert isinstance(dtok.embed_action, torch.nn.Embedding)
    out = dtok(**base)
    assert out.x.shape == (B, 3 * K, D)
    actions = base["actions"].clone()
    actions[0, 1] = (actions[0, 1] + 1) % 6
    assert changed_tokens(dtok, base, actions=actions) == {5}
    # (B, K, 1) indices and int32 are the same actions
    same = dtok(**{**base, "actions": base["actions"][..., None].int()})
    torch.testing.assert_close(same.x, out.x)


def test_returns_without_trailing_dim(tok):
    base = inputs()
    torch.testing.assert_close(tok(**{**base, "returns_to_go": base["returns_to_go"][..., 0]}).x, tok(**base).x)


def test_pad_repeated_three_times(tok):
    mask = torch.tensor([[True, True, True, False], [False, True, True, True]])
    out = tok(**inputs(), mask=mask)
    assert out.pad[0].tolist() == [True] * 9 + [False] * 3
    assert out.pad[1].tolist() == [False] * 3 + [True] * 9


def test_state_positions(tok):
    out = tok(**inputs())
    pos = tok.state_positions(K)
    assert pos.tolist() == [1, 4, 7, 10]
    assert out.modality[:, pos].eq(1).all()
    assert out.modality[:, tok.action_positions(K)].eq(2).all()
    assert out.modality[:, tok.return_positions(K)].eq(0).all()


@pytest.mark.parametrize("discrete", [False, True])
def test_gradients_reach_every_embedding(discrete):
    torch.manual_seed(0)
    tok = TrajectoryTokenizer(D, S, 6 if discrete else A, discrete_actions=discrete, max_timestep=100)
    out = tok(**inputs(discrete, 6 if discrete else A))
    (out.x * torch.randn_like(out.x)).sum().backward()
    for name, p in tok.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def bad(**changes):
    return changes


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        (bad(states=torch.randn(B, K)), "states"),  # rank
        (bad(states=torch.randn(B, K, S + 1)), "states"),  # state_dim
        (bad(states=torch.zeros(B, K, S, dtype=torch.long)), "states"),  # dtype
        (bad(states=torch.full((B, K, S), float("nan"))), "states"),
        (bad(states=torch.zeros(B, 0, S)), "states"),  # empty K
        (bad(returns_to_go=torch.randn(B, K, 2)), "returns_to_go"),
        (bad(returns_to_go=torch.randn(B, K + 1, 1)), "returns_to_go"),  # K mismatch
        (bad(returns_to_go=torch.full((B, K), float("inf"))), "returns_to_go"),
        (bad(returns_to_go=torch.ones(B, K, 1, dtype=torch.long)), "returns_to_go"),
        (bad(actions=torch.randn(B, K, A + 1)), "actions"),  # act_dim
        (bad(actions=torch.randn(B, K)), "actions"),  # rank
        (bad(actions=torch.zeros(B, K, A, dtype=torch.long)), "actions"),  # dtype for continuous actions
        (bad(actions=torch.randn(B + 1, K, A)), "actions"),  # batch mismatch
        (bad(actions=torch.full((B, K, A), float("nan"))), "actions"),
        (bad(timesteps=torch.zeros(B, K)), "timesteps"),  # float timesteps
        (bad(timesteps=torch.zeros(B, K - 1, dtype=torch.long)), "timesteps"),  # K mismatch
        (bad(timesteps=torch.full((B, K), 100)), "timesteps"),  # >= max_timestep
        (bad(timesteps=torch.full((B, K), -1)), "timesteps"),
        (bad(timesteps=torch.zeros(B, K, 1, dtype=torch.long)), "timesteps"),  # rank
        (bad(mask=torch.ones(B, K, dtype=torch.long)), "mask"),  # dtype
        (bad(mask=torch.ones(B, K + 1, dtype=torch.bool)), "mask"),
    ],
)
def test_bad_inputs_raise_value_error(tok, changes, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        tok(**{**inputs(), **changes})


@pytest.mark.parametrize(
    ("actions", "message"),
    [
        (torch.full((B, K), 6), "actions"),  # == act_dim
        (torch.full((B, K), -1), "actions"),
        (torch.zeros(B, K), "actions"),  # float indices
        (torch.zeros(B, K, 2, dtype=torch.long), "actions"),
        (torch.zeros(B, K - 1, dtype=torch.long), "actions"),
    ],
)
def test_bad_discrete_actions(dtok, actions, message):
    with pytest.raises(ValueError, match=f"^{message}:"):
        dtok(**{**inputs(discrete=True, act_dim=6), "actions": actions})


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="state_dim"):
        TrajectoryTokenizer(D, 0, A)
    with pytest.raises(ValueError, match="max_timestep"):
        TrajectoryTokenizer(D, S, A, max_timestep=0)
