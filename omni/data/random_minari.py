"""Random-policy episodes as a Minari dataset: the small fixture of tests and throughput benchmarks (windows to
train on, not good behaviour)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from omni.data.rl_corpus import _minari_root

__all__ = ["random_minari_dataset"]


def random_minari_dataset(
    root: Path, dataset_id: str, env_id: str = "Hopper-v5", episodes: int = 2, max_steps: int | None = None
) -> Path:
    """Write ``episodes`` random-action episodes of ``env_id`` (at most ``max_steps`` steps each; None: the env's
    limit) as the Minari dataset ``dataset_id`` under ``root``; returns its ``main_data.hdf5``. Reference scores are
    0 and 1. Deterministic: episode e resets with seed e, actions come from the action space seeded with 0."""
    import gymnasium as gym
    from minari import create_dataset_from_buffers
    from minari.data_collector import EpisodeBuffer

    if episodes < 1:
        raise ValueError(f"episodes: expected a positive int, got {episodes!r}")
    env = gym.make(env_id, max_episode_steps=max_steps) if max_steps else gym.make(env_id)
    env.action_space.seed(0)
    buffers = []
    for e in range(episodes):
        obs, _ = env.reset(seed=e)
        o, a, r, te, tr, done = [obs], [], [], [], [], False
        while not done:
            act = env.action_space.sample()
            obs, rew, term, trunc, _ = env.step(act)
            o.append(obs), a.append(act), r.append(float(rew)), te.append(term), tr.append(trunc)
            done = term or trunc
        buffers.append(EpisodeBuffer(id=e, observations=np.asarray(o), actions=np.asarray(a), rewards=r,
                                     terminations=te, truncations=tr))  # fmt: skip
    env.close()
    root = Path(root).absolute()  # Minari joins a relative root onto itself
    with _minari_root(root), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Minari warns about every unset author/description field
        create_dataset_from_buffers(dataset_id, buffers, env=env_id, ref_min_score=0.0, ref_max_score=1.0)
    return root / dataset_id / "data/main_data.hdf5"
