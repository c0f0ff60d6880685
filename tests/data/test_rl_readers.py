"""Offline RL readers: Minari datasets (written here with Minari's own API) and D4RL hdf5 files (written with h5py)
read back into ``Episodes`` value for value; bad input is a ValueError naming the field or the file."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from minari import create_dataset_from_buffers
from minari.data_collector import EpisodeBuffer

from omni.data.rl_readers import D4RL_REF_SCORES, load_d4rl_hdf5, load_episodes, load_minari


def random_buffers(env_id: str, episodes: int, seed: int, max_steps: int | None = None) -> list[EpisodeBuffer]:
    """Episodes of a seeded random policy as Minari buffers (T + 1 observations, T of everything else)."""
    env = gym.make(env_id, max_episode_steps=max_steps) if max_steps else gym.make(env_id)
    env.action_space.seed(seed)
    out = []
    for e in range(episodes):
        obs, _ = env.reset(seed=seed + e)
        o, a, r, te, tr = [obs], [], [], [], []
        done = False
        while not done:
            act = env.action_space.sample()
            obs, rew, term, trunc, _ = env.step(act)
            o.append(obs)
            a.append(act)
            r.append(float(rew))
            te.append(bool(term))
            tr.append(bool(trunc))
            done = term or trunc
        out.append(
            EpisodeBuffer(
                id=e,
                observations=np.asarray(o),
                actions=np.asarray(a),
                rewards=r,
                terminations=te,
                truncations=tr,
            )
        )
    env.close()
    return out


def write_minari(root: Path, dataset_id: str, buffers: list[EpisodeBuffer], monkeypatch, **kwargs) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Minari warns about every unset author/description field
        create_dataset_from_buffers(dataset_id, buffers, **kwargs)


@pytest.fixture
def pendulum(tmp_path, monkeypatch) -> tuple[Path, list[EpisodeBuffer]]:
    buffers = random_buffers("Pendulum-v1", episodes=3, seed=0, max_steps=17)
    write_minari(
        tmp_path, "test/pendulum/random-v0", buffers, monkeypatch, env="Pendulum-v1", ref_min_score=-1500.0,
        ref_max_score=-150.0, algorithm_name="random",
    )  # fmt: skip
    return tmp_path, buffers


def test_minari_round_trip_drops_the_last_observation(pendulum):
    root, buffers = pendulum
    ep = load_minari("test/pendulum/random-v0")  # found through $MINARI_DATASETS_PATH
    assert len(ep) == len(buffers) and not ep.discrete and ep.env_id == "Pendulum-v1"
    for i, b in enumerate(buffers):
        t = len(b.rewards)
        assert len(b.observations) == t + 1
        np.testing.assert_array_equal(ep.observations[i], np.asarray(b.observations[:t], dtype=np.float32))
        np.testing.assert_array_equal(ep.actions[i], np.asarray(b.actions, dtype=np.float32))
        np.testing.assert_array_equal(ep.rewards[i], np.asarray(b.rewards, dtype=np.float32))
        np.testing.assert_array_equal(ep.terminations[i], b.terminations)
        np.testing.assert_array_equal(ep.truncations[i], b.truncations)
    assert ep.truncations[0][-1] and not ep.terminations[0].any()
    assert (ep.ref_min_score, ep.ref_max_score) == (-1500.0, -150.0)
    assert ep.metadata["algorithm_name"] == "random" and ep.metadata["dataset_id"] == "test/pendulum/random-v0"
    # an explicit root wins over the environment variable, and load_episodes dispatches ids to Minari
    again = load_episodes("test/pendulum/random-v0", root=root)
    np.testing.assert_array_equal(np.concatenate(again.observations), np.concatenate(ep.observations))


def test_minari_discrete_actions(tmp_path, monkeypatch):
    buffers = random_buffers("CartPole-v1", episodes=4, seed=3)
    write_minari(tmp_path, "test/cartpole/random-v0", buffers, monkeypatch, env="CartPole-v1")
    ep = load_minari("test/cartpole/random-v0", root=tmp_path)
    assert ep.discrete and ep.num_actions == 2 and ep.ref_min_score is None
    for i, b in enumerate(buffers):
        assert ep.actions[i].dtype == np.int64 and ep.actions[i].shape == (len(b.rewards),)
        np.testing.assert_array_equal(ep.actions[i], b.actions)
        assert ep.terminations[i][-1]  # CartPole falls long before its time limit under a random policy


def test_minari_unknown_id_names_the_id_and_folder(tmp_path):
    with pytest.raises(ValueError, match=r"test/nothing/here-v0.*" + str(tmp_path)):
        load_minari("test/nothing/here-v0", root=tmp_path)


def test_minari_non_flat_observations_name_the_space(tmp_path, monkeypatch):
    space = gym.spaces.Box(-1.0, 1.0, shape=(2, 3), dtype=np.float32)
    rng = np.random.default_rng(0)
    buffers = [
        EpisodeBuffer(
            id=0,
            observations=rng.uniform(-1, 1, (5, 2, 3)).astype(np.float32),
            actions=rng.integers(0, 2, 4),
            rewards=[1.0] * 4,
            terminations=[False, False, False, True],
            truncations=[False] * 4,
        )
    ]
    write_minari(
        tmp_path, "test/grid-v0", buffers, monkeypatch, observation_space=space, action_space=gym.spaces.Discrete(2)
    )
    with pytest.raises(ValueError, match=r"test/grid-v0: observation_space: expected a flat Box.*\(2, 3\)"):
        load_minari("test/grid-v0")


def test_minari_nan_reward_names_the_dataset_and_field(tmp_path, monkeypatch):
    buffers = random_buffers("Pendulum-v1", episodes=2, seed=1, max_steps=6)
    buffers[1].rewards[2] = float("nan")
    write_minari(tmp_path, "test/pendulum/nan-v0", buffers, monkeypatch, env="Pendulum-v1")
    with pytest.raises(ValueError, match=r"test/pendulum/nan-v0: episode 1: rewards"):
        load_minari("test/pendulum/nan-v0")


# ---------------------------------------------------------------------------------------------- D4RL hdf5


def write_d4rl(path: Path, arrays: dict[str, np.ndarray], attrs: dict | None = None) -> Path:
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)
        for k, v in (attrs or {}).items():
            f.attrs[k] = v
    return path


def flat_arrays(lengths: list[int], ends: list[str], seed: int = 0, act_dim: int = 3) -> dict[str, np.ndarray]:
    """D4RL arrays for episodes of ``lengths`` steps; ``ends[i]`` is how episode i ends: terminal, timeout, open."""
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    terminals, timeouts = np.zeros(n, bool), np.zeros(n, bool)
    for end, stop in zip(ends, np.cumsum(lengths), strict=True):
        if end == "terminal":
            terminals[stop - 1] = True
        elif end == "timeout":
            timeouts[stop - 1] = True
    return {
        "observations": rng.standard_normal((n, 5)).astype(np.float32),
        "actions": rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
        "rewards": rng.standard_normal(n).astype(np.float32),
        "terminals": terminals,
        "timeouts": timeouts,
    }


@settings(max_examples=30, deadline=None)
@given(
    episodes=st.lists(
        st.tuples(st.integers(1, 9), st.sampled_from(["terminal", "timeout", "open"])), min_size=1, max_size=6
    )
)
def test_d4rl_split_round_trips_any_episode_layout(episodes):
    # an "open" end inside the file joins that episode to the next; only the last may stay open
    lengths, ends = [n for n, _ in episodes], [e for _, e in episodes]
    arrays = flat_arrays(lengths, ends)
    expected_lengths, run = [], 0
    for n, e in episodes:
        run += n
        if e != "open":
            expected_lengths.append(run)
            run = 0
    if run:
        expected_lengths.append(run)
    with tempfile.TemporaryDirectory() as d:
        ep = load_d4rl_hdf5(write_d4rl(Path(d) / "x.hdf5", arrays))
    assert ep.lengths.tolist() == expected_lengths
    for name, key in (("observations", "observations"), ("actions", "actions"), ("rewards", "rewards")):
        np.testing.assert_array_equal(np.concatenate(getattr(ep, name)), arrays[key])
    np.testing.assert_array_equal(np.concatenate(ep.terminations), arrays["terminals"])
    np.testing.assert_array_equal(np.concatenate(ep.truncations), arrays["timeouts"])
    for te, tr in zip(ep.terminations, ep.truncations, strict=True):  # only an episode's last step can end it
        assert not te[:-1].any() and not tr[:-1].any()


def test_d4rl_reference_scores_from_name_env_or_attrs(tmp_path):
    arrays = flat_arrays([4, 3], ["timeout", "terminal"])
    by_name = load_d4rl_hdf5(write_d4rl(tmp_path / "hopper_medium-v2.hdf5", arrays))
    assert (by_name.ref_min_score, by_name.ref_max_score) == D4RL_REF_SCORES["hopper"] == (-20.272305, 3234.3)
    plain = write_d4rl(tmp_path / "data.h5", arrays)
    assert load_d4rl_hdf5(plain).ref_min_score is None
    by_env = load_d4rl_hdf5(plain, env_id="HalfCheetah-v5")
    assert by_env.env_id == "HalfCheetah-v5" and by_env.ref_max_score == 12135.0
    assert load_episodes(tmp_path / "data.h5").lengths.tolist() == [4, 3]
    attrs = write_d4rl(tmp_path / "walker2d.hdf5", arrays, {"ref_min_score": 1.5, "ref_max_score": 9.5, "env": "W"})
    got = load_d4rl_hdf5(attrs)
    assert (got.ref_min_score, got.ref_max_score, got.env_id) == (1.5, 9.5, "W")


def test_d4rl_discrete_actions(tmp_path):
    arrays = flat_arrays([3, 2], ["terminal", "terminal"])
    arrays["actions"] = np.array([0, 2, 1, 1, 0], dtype=np.int64)
    ep = load_d4rl_hdf5(write_d4rl(tmp_path / "d.hdf5", arrays))
    assert ep.discrete and ep.num_actions == 3 and ep.actions[0].tolist() == [0, 2, 1]


def test_d4rl_length_mismatch_names_file_and_field(tmp_path):
    arrays = flat_arrays([4, 3], ["terminal", "timeout"])
    arrays["actions"] = arrays["actions"][:-1]
    path = write_d4rl(tmp_path / "short.hdf5", arrays)
    with pytest.raises(ValueError, match=r"short\.hdf5: actions: expected 7 rows like observations, got 6"):
        load_d4rl_hdf5(path)


def test_d4rl_nan_reward_and_missing_field_name_file_and_field(tmp_path):
    arrays = flat_arrays([4], ["terminal"])
    arrays["rewards"][2] = np.nan
    with pytest.raises(ValueError, match=r"nan\.hdf5: rewards: expected finite numbers.*step 2"):
        load_d4rl_hdf5(write_d4rl(tmp_path / "nan.hdf5", arrays))
    del arrays["terminals"]
    with pytest.raises(ValueError, match=r"missing\.hdf5: terminals"):
        load_d4rl_hdf5(write_d4rl(tmp_path / "missing.hdf5", arrays))
    with pytest.raises(ValueError, match=r"path: .*absent\.hdf5"):
        load_episodes(tmp_path / "absent.hdf5")
