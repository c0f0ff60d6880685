"""Windows of K steps from offline RL episodes, as the Decision Transformer trains on them (CORL's ``dt.py``).

Shape legend
    B batch   K context (steps per window)   S... an observation's shape   A action size (() when discrete)
    E episodes   F all steps of all episodes, flattened

A window starts at a step drawn uniformly over all F steps of the dataset (so an episode is drawn with probability
proportional to its length, and then a start inside it uniformly) and runs K steps; where it runs past the episode's
end it is padded on the right (zeros, the last real timestep repeated, ``mask`` False). Returns-to-go are the
undiscounted sums of the rewards still to come, times ``reward_scale``; states are normalised with the dataset's
mean and standard deviation. Training batches are drawn whole from ``(seed, epoch, batch)`` alone, so a run resumed
at epoch e (or at step s of it) sees the batches the uninterrupted run saw.

Under DDP (W ranks) ``batch_size`` is per rank, as everywhere in Lightning: global batch j of an epoch is the
``batch_size × W`` windows one process with that batch size draws from ``(seed, epoch, j)``, and rank r keeps rows
r, r + W, r + 2W, ... of it. An epoch is still ``steps_per_epoch`` optimizer steps, and W ranks at batch size B train
on exactly the windows one process at batch size B × W trains on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from omni.data.base import OmniDataModule, Split, check_train_fraction, kept_share
from omni.data.episodes import Episodes
from omni.data.resume import SkipOnResume

__all__ = ["TrajectoryDataModule", "Windows", "returns_to_go"]

VAL_SEED_OFFSET = 7_919  # validation/test windows are drawn from a stream of their own, fixed for the whole run


def returns_to_go(rewards: np.ndarray) -> np.ndarray:
    """(T,) rewards -> (T,) float64 sum of the rewards from each step to the episode's end."""
    return np.cumsum(np.asarray(rewards, dtype=np.float64)[::-1])[::-1].copy()


@dataclass
class Windows:
    """Every step of a dataset flattened into arrays, and the sampler of K-step windows over them.

    Attributes:
        states: (F, *S) float32 normalised states.
        actions: (F, *A) float32 actions or (F,) int64 indices.
        rtg: (F,) float32 scaled returns-to-go.
        timesteps: (F,) int64 step index inside its episode.
        starts: (E,) int64 flat index of each episode's first step.
        lengths: (E,) int64 steps per episode.
        context: K.
    """

    states: np.ndarray
    actions: np.ndarray
    rtg: np.ndarray
    timesteps: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    context: int

    @classmethod
    def build(cls, episodes: Episodes, context: int, reward_scale: float, mean: np.ndarray, std: np.ndarray) -> Windows:
        states = (np.concatenate(episodes.observations).astype(np.float64) - mean) / std
        actions = np.concatenate(episodes.actions)
        actions = actions.astype(np.int64 if episodes.discrete else np.float32)
        rtg = np.concatenate([returns_to_go(r) for r in episodes.rewards]) * reward_scale
        lengths = episodes.lengths
        return cls(
            states=states.astype(np.float32),
            actions=actions,
            rtg=rtg.astype(np.float32),
            timesteps=np.concatenate([np.arange(n) for n in lengths]).astype(np.int64),
            starts=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
            lengths=lengths,
            context=context,
        )

    def sample(self, rng: np.random.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        """B windows, each starting at a step drawn uniformly over all F steps.

        Returns:
            {"returns_to_go": (B, K, 1), "states": (B, K, *S), "actions": (B, K, *A), "timesteps": (B, K) long,
            "mask": (B, K) bool}
        """
        first = rng.integers(0, len(self.rtg), size=batch_size)  # (B,) flat index of each window's first step
        episode = np.searchsorted(self.starts, first, side="right") - 1
        end = self.starts[episode] + self.lengths[episode]  # (B,) one past each episode's last flat index
        index = first[:, None] + np.arange(self.context)[None]  # (B, K)
        mask = index < end[:, None]
        index = np.minimum(index, end[:, None] - 1)  # padding reads the last real step, then is zeroed
        states, actions, rtg = self.states[index], self.actions[index], self.rtg[index]
        states[~mask], actions[~mask], rtg[~mask] = 0, 0, 0
        return {
            "returns_to_go": torch.from_numpy(rtg[..., None]),
            "states": torch.from_numpy(states),
            "actions": torch.from_numpy(actions),
            "timesteps": torch.from_numpy(self.timesteps[index]),
            "mask": torch.from_numpy(mask),
        }


class WindowBatches(Dataset):
    """Item ``(epoch, j)`` is this rank's part of batch j of that epoch: the B × W windows drawn from a generator
    seeded by (seed, epoch, j), rows ``rank::world`` of them (all B of them in one process)."""

    def __init__(
        self, windows: Windows, batch_size: int, num_batches: int, seed: int, rank: int = 0, world: int = 1
    ) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank: expected 0 <= rank < world={world}, got {rank}")
        self.windows, self.batch_size, self.num_batches, self.seed = windows, batch_size, num_batches, seed
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, key: tuple[int, int]) -> dict[str, dict[str, torch.Tensor]]:
        epoch, j = key
        rng = np.random.default_rng([self.seed, epoch, j])
        batch = self.windows.sample(rng, self.batch_size * self.world)
        return {"trajectory": {k: v[self.rank :: self.world] for k, v in batch.items()}}


class EpochBatches(SkipOnResume, DistributedSampler):
    """Yields (epoch, 0), (epoch, 1), ...: the epoch Lightning sets (``follow_epoch``), or always 0 (held-out
    splits: the same windows every time). Every rank yields every batch index (``WindowBatches`` splits each batch
    by rows); a ``DistributedSampler`` only so that Lightning does not deal the indices over the ranks again."""

    def __init__(self, num_batches: int, follow_epoch: bool) -> None:
        super().__init__(range(num_batches), num_replicas=1, rank=0, shuffle=False)
        self.num_batches, self.follow_epoch, self.epoch = num_batches, follow_epoch, 0

    def set_epoch(self, epoch: int) -> None:
        if self.follow_epoch:
            self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        return self.resumed(iter((self.epoch, j) for j in range(self.num_batches)))


class TrajectoryDataModule(OmniDataModule):
    """Offline RL episodes (a Minari dataset id, a D4RL-format hdf5 file, or ``Episodes`` in memory) as batches of
    K-step windows: ``{"trajectory": {"returns_to_go", "states", "actions", "timesteps", "mask"}}``.

    After ``setup`` it exposes what the task must agree with (``state_dim``, ``act_dim``, ``discrete``,
    ``max_timestep``), what the task keeps in its checkpoint (``state_mean``, ``state_std``, ``action_low``,
    ``action_high``) and what rollouts need (``env_id``, ``ref_min_score``, ``ref_max_score``, ``return_stats``).
    """

    def __init__(
        self,
        dataset: str | Path,
        root: str | Path | None = None,
        context: int = 20,
        batch_size: int = 64,
        steps_per_epoch: int = 1000,
        val_batches: int = 4,
        reward_scale: float = 0.001,
        normalize_states: bool = True,
        val_episodes: int = 10,
        env_id: str | None = None,
        seed: int | None = None,
        num_workers: int = 0,
        train_fraction: float = 1.0,
    ) -> None:
        """
        Args:
            dataset: a Minari dataset id (``omni/hopper-v5/medium-v0``) under ``root``, or a D4RL-format ``.hdf5``
                file.
            root: the Minari datasets folder; default ``$MINARI_DATASETS_PATH`` (then Minari's own default).
            context: K, steps per window (CORL: 20).
            batch_size: windows per batch.
            steps_per_epoch: training batches per epoch (an epoch is that many sampled batches).
            val_batches: batches of fixed windows in the validation and test splits (their loss is a fit check; the
                policy's score comes from rollouts, see ``RolloutCallback``).
            reward_scale: returns-to-go are multiplied by this (CORL: 0.001).
            normalize_states: normalise states with the dataset's mean and std (CORL does); False keeps them raw
                (images).
            val_episodes: episodes per target return that the rollout callback runs at validation.
            env_id: the Gymnasium id rollouts run in; default the dataset's own.
            seed: seed of the window sampling; default the run's (``seed_everything``).
            num_workers: DataLoader worker processes; 0 samples in the main process.
            train_fraction: keep this share of the episodes (drawn with a fixed seed: the same cut in every run);
                windows, state statistics and the validation windows all come from the kept episodes.
        """
        super().__init__(batch_size, num_workers)
        if not isinstance(dataset, Episodes) and not str(dataset).strip():
            raise ValueError("dataset: expected a Minari dataset id or an hdf5 path, got an empty string")
        for name, value in (("context", context), ("steps_per_epoch", steps_per_epoch), ("val_batches", val_batches)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if not reward_scale > 0:
            raise ValueError(f"reward_scale: expected > 0, got {reward_scale}")
        if val_episodes < 0:
            raise ValueError(f"val_episodes: expected >= 0, got {val_episodes}")
        self.dataset, self.root = dataset, root
        self.context, self.steps_per_epoch, self.val_batches = context, steps_per_epoch, val_batches
        self.reward_scale, self.normalize_states, self.val_episodes = reward_scale, normalize_states, val_episodes
        self._env_id, self.seed = env_id, seed
        check_train_fraction(train_fraction)
        self.train_fraction = train_fraction
        self.episodes: Episodes | None = None
        self.windows: Windows | None = None

    @classmethod
    def from_episodes(cls, episodes: Episodes, **kwargs: Any) -> TrajectoryDataModule:
        """A data module over episodes already in memory (tests, notebooks); ``kwargs`` as in ``__init__``."""
        dm = cls(dataset=episodes.source, **kwargs)
        dm.episodes = episodes
        return dm

    # ------------------------------------------------------------------ loading
    def load(self) -> Episodes:
        """The episodes (read once)."""
        if self.episodes is None:
            from omni.data.rl_readers import load_episodes

            self.episodes = load_episodes(self.dataset, self.root)
        return self.episodes

    def setup(self, stage: str | None = None) -> None:
        if self.windows is not None:
            return
        episodes = self.load()
        if self.train_fraction < 1.0:
            episodes = self.episodes = episodes.select(kept_share(len(episodes), self.train_fraction))
        if episodes.discrete and episodes.action_shape != ():
            raise ValueError(f"{episodes.source}: actions: expected (T,) indices for discrete actions, got (T, ...)")
        if self.normalize_states:
            mean, std = episodes.state_stats()
        else:
            mean, std = np.zeros(episodes.state_shape), np.ones(episodes.state_shape)
        self.state_mean, self.state_std = mean.astype(np.float32), std.astype(np.float32)
        self.windows = Windows.build(episodes, self.context, self.reward_scale, mean, std)
        seed = self.seed if self.seed is not None else torch.initial_seed() % 2**31
        self.train_set = WindowBatches(self.windows, self.batch_size, self.steps_per_epoch, seed)
        self.val_set = WindowBatches(self.windows, self.batch_size, self.val_batches, seed + VAL_SEED_OFFSET)
        self.test_set = self.val_set

    def _loader(self, ds: Dataset | None, split: Split) -> DataLoader:
        if not isinstance(ds, WindowBatches):
            raise RuntimeError(f"{type(self).__name__}: call setup() before asking for the {split} data loader")
        rank, world = self.replicas()
        ds = WindowBatches(ds.windows, ds.batch_size, ds.num_batches, ds.seed, rank, world)  # this rank's rows
        sampler = EpochBatches(len(ds), follow_epoch=split == "train")
        if split == "train":
            self.resume_sampler(sampler, 1)
        return DataLoader(
            ds,
            batch_size=None,  # items are whole batches
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    # ------------------------------------------------------------------ what the task and rollouts read
    def _episodes(self) -> Episodes:
        if self.episodes is None:
            raise RuntimeError(f"{type(self).__name__}: call setup() before reading the dataset's properties")
        return self.episodes

    @property
    def discrete(self) -> bool:
        return self._episodes().discrete

    @property
    def state_dim(self) -> int:
        """S: the size of a flat state (the channels of an image observation)."""
        return int(self._episodes().state_shape[0])

    @property
    def act_dim(self) -> int:
        """A: the action size, or the number of discrete actions."""
        e = self._episodes()
        return int(e.num_actions) if e.discrete else int(np.prod(e.action_shape))

    @property
    def max_timestep(self) -> int:
        """The timestep table a model needs: the longest episode of the data, or the env's time limit if longer."""
        longest = int(self._episodes().lengths.max())
        limit = env_time_limit(self.env_id) if self.env_id else None
        return max(longest, limit or 0)

    @property
    def env_id(self) -> str | None:
        return self._env_id or self._episodes().env_id

    @property
    def ref_min_score(self) -> float | None:
        return self._episodes().ref_min_score

    @property
    def ref_max_score(self) -> float | None:
        return self._episodes().ref_max_score

    @property
    def return_stats(self) -> dict[str, float]:
        """The dataset's episode returns: mean, median, max, min."""
        r = self._episodes().returns
        return {"mean": float(r.mean()), "median": float(np.median(r)), "max": float(r.max()), "min": float(r.min())}

    @property
    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(A,), (A,): the env's action box when it can be made and is bounded, else the data's range (widened a
        little where an action never varies)."""
        e = self._episodes()
        if e.discrete:
            return np.zeros(self.act_dim), np.ones(self.act_dim)
        box = env_action_box(self.env_id) if self.env_id else None
        if box is not None:
            return box
        acts = np.concatenate(e.actions).reshape(-1, self.act_dim)
        low, high = acts.min(axis=0), acts.max(axis=0)
        same = high - low < 1e-6
        return np.where(same, low - 1, low), np.where(same, high + 1, high)


def env_time_limit(env_id: str) -> int | None:
    """The registered ``max_episode_steps`` of a Gymnasium id, or None (unknown id, no limit)."""
    import gymnasium as gym

    try:
        return gym.spec(env_id).max_episode_steps
    except gym.error.Error:
        return None


def env_action_box(env_id: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(low, high) of a Gymnasium env's finite Box action space, or None."""
    import gymnasium as gym

    try:
        env = gym.make(env_id)
    except (gym.error.Error, ImportError):
        return None
    space = env.action_space
    env.close()
    if not isinstance(space, gym.spaces.Box) or not (np.isfinite(space.low).all() and np.isfinite(space.high).all()):
        return None
    return space.low.astype(np.float64).flatten(), space.high.astype(np.float64).flatten()
