"""Offline RL episodes in memory: the one structure every reader fills and every trajectory data module reads.

Shape legend (per episode)
    T steps   S... an observation's shape   A... an action's shape (() for a discrete action index)

Minari stores T + 1 observations per episode (the last one after the last action); ``Episodes`` keeps the T
observations that an action was taken from, so every array of an episode has T rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

__all__ = ["Episodes"]


@dataclass
class Episodes:
    """A dataset of episodes, each a dict of aligned arrays, with the metadata normalised scores need.

    Attributes:
        observations: per episode (T, *S) float32, the observation each action was taken from.
        actions: per episode (T, *A) float32 (continuous) or (T,) int64 (discrete).
        rewards: per episode (T,) float32.
        terminations: per episode (T,) bool, True at a step that ended the episode in a terminal state.
        truncations: per episode (T,) bool, True at a step where the episode was cut by a time limit.
        env_id: the Gymnasium id the data came from (``Hopper-v5``), or None.
        ref_min_score, ref_max_score: the returns that normalise to 0 and 100 (a random and an expert policy).
        source: where the data came from (a Minari id or a file path), named in errors.
        discrete: actions are indices into ``num_actions`` choices.
        num_actions: the number of discrete actions (None for continuous actions).
        metadata: anything else the reader found (Minari's dataset metadata, hdf5 attributes).
    """

    observations: list[np.ndarray]
    actions: list[np.ndarray]
    rewards: list[np.ndarray]
    terminations: list[np.ndarray]
    truncations: list[np.ndarray]
    env_id: str | None = None
    ref_min_score: float | None = None
    ref_max_score: float | None = None
    source: str = "<memory>"
    discrete: bool = False
    num_actions: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.observations)
        for name in ("actions", "rewards", "terminations", "truncations"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"{self.source}: {name}: expected {n} episodes like observations, got {len(getattr(self, name))}"
                )
        if n == 0:
            raise ValueError(f"{self.source}: expected at least one episode, got none")
        for i in range(n):
            t = len(self.observations[i])
            if t == 0:
                raise ValueError(f"{self.source}: episode {i}: expected at least one step, got none")
            for name in ("actions", "rewards", "terminations", "truncations"):
                got = len(getattr(self, name)[i])
                if got != t:
                    raise ValueError(
                        f"{self.source}: episode {i}: {name}: expected {t} steps like observations, got {got}"
                    )
            if not np.isfinite(self.rewards[i]).all():
                raise ValueError(f"{self.source}: episode {i}: rewards: expected finite numbers, got NaN or inf")
            if not np.isfinite(self.observations[i]).all():
                raise ValueError(f"{self.source}: episode {i}: observations: expected finite numbers, got NaN or inf")
        if self.discrete and (self.num_actions is None or self.num_actions < 1):
            raise ValueError(f"{self.source}: num_actions: expected a positive int for discrete actions, got none")

    def select(self, indices: np.ndarray | list[int]) -> Episodes:
        """These episodes at ``indices`` (in that order), with the same metadata."""
        idx = [int(i) for i in indices]
        if any(not 0 <= i < len(self) for i in idx):
            raise ValueError(f"{self.source}: episode indices: expected 0..{len(self) - 1}, got {idx}")
        pick = lambda xs: [xs[i] for i in idx]  # noqa: E731
        return replace(
            self,
            observations=pick(self.observations),
            actions=pick(self.actions),
            rewards=pick(self.rewards),
            terminations=pick(self.terminations),
            truncations=pick(self.truncations),
        )

    # ------------------------------------------------------------------ sizes and statistics
    def __len__(self) -> int:
        return len(self.observations)

    @property
    def lengths(self) -> np.ndarray:
        """(E,) int64 steps per episode."""
        return np.array([len(o) for o in self.observations], dtype=np.int64)

    @property
    def returns(self) -> np.ndarray:
        """(E,) float64 undiscounted return per episode."""
        return np.array([float(np.sum(r, dtype=np.float64)) for r in self.rewards])

    @property
    def state_shape(self) -> tuple[int, ...]:
        return tuple(self.observations[0].shape[1:])

    @property
    def action_shape(self) -> tuple[int, ...]:
        return tuple(self.actions[0].shape[1:])

    def state_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation (+1e-6) of every observation, as CORL normalises states."""
        states = np.concatenate(self.observations).astype(np.float64)
        return states.mean(axis=0), states.std(axis=0) + 1e-6

    def normalized_score(self, returns: np.ndarray | float) -> np.ndarray:
        """100 x (return - ref_min) / (ref_max - ref_min), D4RL's scale; needs both reference scores."""
        if self.ref_min_score is None or self.ref_max_score is None:
            raise ValueError(f"{self.source}: ref_min_score, ref_max_score: expected both reference scores, got none")
        return (
            100.0
            * (np.asarray(returns, dtype=np.float64) - self.ref_min_score)
            / (self.ref_max_score - self.ref_min_score)
        )
