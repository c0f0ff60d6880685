"""Offline RL fixtures: small datasets of random-policy episodes from real Gymnasium envs, built in memory."""

from __future__ import annotations

import pytest
from rl_episodes import random_episodes

from omni.data.episodes import Episodes


@pytest.fixture(scope="session")
def hopper_episodes() -> Episodes:
    return random_episodes("Hopper-v5", 12)


@pytest.fixture(scope="session")
def cartpole_episodes() -> Episodes:
    return random_episodes("CartPole-v1", 12)
