"""Offline RL test data: small datasets of random-policy episodes from real Gymnasium envs, in memory or as a D4RL
hdf5 file."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from omni.data.episodes import Episodes


def random_episodes(env_id: str, n: int, seed: int = 0, **make: object) -> Episodes:
    """``n`` episodes of a uniformly random policy; ref scores 0 and 100 so normalised score = return."""
    env = gym.make(env_id, **make)
    env.action_space.seed(seed)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "act", "rew", "term", "trunc")}
    for i in range(n):
        obs, _ = env.reset(seed=seed + i)
        rows: dict[str, list] = {k: [] for k in cols}
        done = False
        while not done:
            a = env.action_space.sample()
            nxt, r, term, trunc, _ = env.step(a)
            for k, v in zip(rows, (obs, a, r, term, trunc), strict=True):
                rows[k].append(v)
            obs, done = nxt, term or trunc
        for k in cols:
            cols[k].append(np.asarray(rows[k]))
    env.close()
    discrete = isinstance(env.action_space, gym.spaces.Discrete)
    return Episodes(
        observations=[o.astype(np.float32) for o in cols["obs"]],
        actions=[a.astype(np.int64 if discrete else np.float32) for a in cols["act"]],
        rewards=[r.astype(np.float32) for r in cols["rew"]],
        terminations=[t.astype(bool) for t in cols["term"]],
        truncations=[t.astype(bool) for t in cols["trunc"]],
        env_id=env_id,
        ref_min_score=0.0,
        ref_max_score=100.0,
        source=f"random {env_id}",
        discrete=discrete,
        num_actions=int(env.action_space.n) if discrete else None,
    )


def write_d4rl(episodes: Episodes, path) -> str:
    """``episodes`` as a D4RL-format hdf5 file: flat arrays, terminals/timeouts, env id and ref scores as attributes."""
    import h5py

    with h5py.File(path, "w") as f:
        f["observations"] = np.concatenate(episodes.observations)
        f["actions"] = np.concatenate(episodes.actions)
        f["rewards"] = np.concatenate(episodes.rewards)
        f["terminals"] = np.concatenate(episodes.terminations)
        f["timeouts"] = np.concatenate([tr | (np.arange(len(tr)) == len(tr) - 1) for tr in episodes.truncations])
        f.attrs["env_id"] = episodes.env_id
        f.attrs["ref_min_score"] = episodes.ref_min_score
        f.attrs["ref_max_score"] = episodes.ref_max_score
        if episodes.discrete:
            f.attrs["num_actions"] = episodes.num_actions
    return str(path)
