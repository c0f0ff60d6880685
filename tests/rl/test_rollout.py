"""Rollouts in Gymnasium vector envs: the rolling KV cache equals recomputation on a real env, where CORL's window
differs (and where it does not), behaviour cloning and discrete actions, scores, and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omni.rollout import check_targets, make_vector_env, normalized_score, rollout
from omni.rollout_command import parse_target
from omni.tasks.decision import DecisionTransformer

K = 3
FACTS = {"env_id": "Hopper-v5", "context": K, "reward_scale": 0.001, "ref_min_score": -20.0, "ref_max_score": 3000.0}


def policy(
    depth: int, layout: str = "dt", env: str = "Hopper-v5", discrete: bool = False, dims: tuple[int, int] = (11, 3)
) -> DecisionTransformer:
    torch.manual_seed(0)
    trunk = {"dim": 16, "depth": depth, "heads": 2, "masks": ["dt"],
             "mask_defs": {"dt": f"causal() & causal(by='group', window={K})"}}  # fmt: skip
    s, a = (4, 2) if discrete else dims
    task = DecisionTransformer(trunk, s, a, discrete=discrete, layout=layout, max_timestep=1000)
    with torch.no_grad():  # sharper attention and a stronger head: a policy whose actions depend on its context
        for name, w in task.named_parameters():
            if name.endswith(("qkv.weight", "proj.weight", "head.fc.weight")):
                w.mul_(4)
    task.rl = {**FACTS, "env_id": env}
    return task.eval()


def test_rolling_cache_equals_recomputation_on_hopper():
    task = policy(depth=2)
    runs = {m: rollout(task, [3000.0, 1000.0], 2, mode=m, max_steps=40, seed=3) for m in ("cache", "recompute")}
    cache, ref = runs["cache"], runs["recompute"]
    steps = min(cache.actions.shape[1], ref.actions.shape[1])
    assert steps > K * 2  # long enough for the window to roll
    np.testing.assert_allclose(cache.actions[:, :steps], ref.actions[:, :steps], atol=1e-4)
    np.testing.assert_allclose(cache.returns, ref.returns, atol=1e-3)
    assert cache.targets.tolist() == [3000.0, 3000.0, 1000.0, 1000.0]


def test_with_one_layer_the_cache_also_equals_corls_window():
    task = policy(depth=1)
    cache, window = (rollout(task, 3000.0, 2, mode=m, max_steps=30) for m in ("cache", "window"))
    steps = min(cache.actions.shape[1], window.actions.shape[1])
    np.testing.assert_allclose(cache.actions[:, :steps], window.actions[:, :steps], atol=1e-4)


def test_with_two_layers_the_cache_is_not_corls_window():
    """Layer 2's cached keys carry what their own step saw, up to K steps before the window: not CORL's evaluation."""
    task = policy(depth=2)
    cache, window = (rollout(task, 3000.0, 2, mode=m, max_steps=30) for m in ("cache", "window"))
    assert not np.allclose(cache.actions[:, K + 1 : K + 3], window.actions[:, K + 1 : K + 3], atol=1e-4)
    np.testing.assert_allclose(cache.actions[:, :K], window.actions[:, :K], atol=1e-4)  # equal until it rolls


def test_behaviour_cloning_runs_once_and_discrete_actions_step_cartpole():
    bc = rollout(policy(1, layout="bc"), [3000.0, 1000.0], 3, max_steps=20)
    assert np.isnan(bc.targets).all() and len(bc.returns) == 3 and len(bc.by_target()) == 1
    cart = rollout(policy(2, env="CartPole-v1", discrete=True), [100.0], 2, mode="cache", max_steps=25)
    assert cart.actions.dtype == np.int64 and set(np.unique(cart.actions)) <= {0, 1}
    assert (cart.lengths >= 1).all() and (cart.lengths <= 25).all()
    np.testing.assert_allclose(cart.normalized, 100 * (cart.returns + 20) / 3020)


def test_any_mujoco_env_by_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo writes MUJOCO_LOG.TXT (a deprecation warning of HalfCheetah's model) here
    cheetah = rollout(policy(1, env="HalfCheetah-v5", dims=(17, 6)), [6000.0], 2, max_steps=5)
    assert cheetah.actions.shape == (2, 5, 6) and (cheetah.lengths == 5).all()


def test_normalized_score_is_d4rls_scale():
    np.testing.assert_allclose(normalized_score(np.array([-20.0, 1490.0, 3000.0]), -20.0, 3000.0), [0, 50, 100])
    assert normalized_score(1.0, None, 3000.0) is None


def test_bad_inputs_raise_value_errors():
    with pytest.raises(ValueError, match="env_id: expected a registered Gymnasium environment id, got 'Hoper-v5'"):
        make_vector_env("Hoper-v5", 1)
    task = policy(1)
    with pytest.raises(ValueError, match="env_id: .*'NoSuchEnv-v0'"):
        rollout(task, 100.0, 1, env_id="NoSuchEnv-v0")
    for bad in ("3600", True, [100.0, None], float("nan"), []):
        with pytest.raises(ValueError, match="target: expected"):
            check_targets(bad)
    with pytest.raises(ValueError, match="--target: expected a number .* got 'abc'"):
        parse_target("abc")
    assert parse_target("3600") == 3600.0
    with pytest.raises(ValueError, match="episodes: expected a positive int"):
        rollout(task, 100.0, 0)
    with pytest.raises(ValueError, match="mode"):
        rollout(task, 100.0, 1, mode="fast")
