"""Offline RL datasets into ``Episodes``: a Minari dataset by id, or a D4RL-format hdf5 file.

Shape legend (per episode)
    T steps   S observation size (flat observations only)   A action size (() for a discrete action index)

- ``load_minari(dataset_id, root)``: Minari stores T + 1 observations per episode (the last one after the last
  action); the last is dropped so every array has T rows.
- ``load_d4rl_hdf5(path, env_id)``: D4RL's flat arrays (``observations``, ``actions``, ``rewards``, ``terminals``,
  ``timeouts``), cut into episodes after every terminal or timeout step; a trailing unfinished episode is kept.
- ``load_episodes(source, root)``: a ``.hdf5``/``.h5`` file goes to the second, anything else is a Minari id.
"""

from __future__ import annotations

import json
import os
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from omni.data.episodes import Episodes

__all__ = ["D4RL_REF_SCORES", "load_d4rl_hdf5", "load_episodes", "load_minari", "minari_root"]

# D4RL's reference returns per environment family, (REF_MIN_SCORE, REF_MAX_SCORE): the same for every split and for
# v0/v1/v2. Values from D4RL's d4rl/infos.py (HOPPER_RANDOM_SCORE = -20.272305, HOPPER_EXPERT_SCORE = 3234.3, ...);
# CORL normalises its published hopper/halfcheetah/walker2d scores with these.
D4RL_REF_SCORES: dict[str, tuple[float, float]] = {
    "halfcheetah": (-280.178953, 12135.0),
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
}

_D4RL_REQUIRED = ("observations", "actions", "rewards", "terminals")
_HDF5_SUFFIXES = (".hdf5", ".h5")


def minari_root(root: str | Path | None = None) -> Path:
    """The folder Minari datasets live under: ``root``, else ``$MINARI_DATASETS_PATH``, else Minari's default."""
    if root is not None:
        return Path(root)
    env = os.environ.get("MINARI_DATASETS_PATH")
    return Path(env) if env else Path.home() / ".minari" / "datasets"


def _plain(value: Any) -> Any:
    """Metadata made JSON-friendly (checkpoints and summaries store it): spaces and specs become strings."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted(_plain(v) for v in value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


def _action_kind(space: Any, where: str) -> tuple[bool, int | None]:
    """(discrete, num_actions) for a Box or Discrete action space; anything else is a ValueError."""
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        return True, int(space.n)
    if isinstance(space, spaces.Box):
        return False, None
    raise ValueError(f"{where}: action_space: expected a Box or Discrete space, got {space}")


def load_minari(dataset_id: str, root: str | Path | None = None) -> Episodes:
    """A Minari dataset as ``Episodes`` (T observations per episode: Minari's (T+1)th is dropped).

    Args:
        dataset_id: Minari's id, e.g. ``omni/hopper-v5/medium-v0`` or ``mujoco/hopper/medium-v0``.
        root: the datasets folder (as ``MINARI_DATASETS_PATH``); default ``$MINARI_DATASETS_PATH`` or
            Minari's own default (``~/.minari/datasets``).

    Returns:
        ``Episodes`` with observations (T, S) float32, actions (T, A) float32 or (T,) int64, rewards (T,) float32,
        terminations and truncations (T,) bool; ``env_id`` from the dataset's env spec; ``ref_min_score`` and
        ``ref_max_score`` from its metadata where present; the rest of the metadata in ``metadata``.
    """
    from gymnasium import spaces
    from minari import MinariDataset

    folder = minari_root(root)
    data_path = folder / dataset_id / "data"
    if not (data_path / "metadata.json").exists():
        raise ValueError(f"dataset_id: no Minari dataset {dataset_id!r} under {folder} (looked for {data_path})")
    # What minari.load_dataset does, at an explicit root rather than the process-wide environment variable.
    try:
        ds = MinariDataset(data_path)
        obs_space, act_space = ds.observation_space, ds.action_space
    except (AssertionError, OSError, KeyError, TypeError, ValueError) as e:  # h5py and Minari's own checks
        raise ValueError(
            f"{data_path}: expected a readable Minari dataset (metadata.json and main_data.hdf5), got "
            f"{type(e).__name__}: {e}"
        ) from None
    if not (isinstance(obs_space, spaces.Box) and len(obs_space.shape) == 1):
        raise ValueError(f"{dataset_id}: observation_space: expected a flat Box (one axis), got {obs_space} ({folder})")
    discrete, num_actions = _action_kind(act_space, dataset_id)
    start = int(act_space.start) if discrete else 0

    obs, act, rew, term, trunc = [], [], [], [], []
    try:
        episodes = list(ds.iterate_episodes())
    except (AssertionError, OSError, KeyError) as e:  # a truncated or damaged main_data.hdf5
        raise ValueError(
            f"{data_path}: expected readable episodes in main_data.hdf5, got {type(e).__name__}: {e}"
        ) from None
    for i, ep in enumerate(episodes):
        t = len(ep.rewards)
        o = np.asarray(ep.observations, dtype=np.float32)
        if len(o) != t + 1:
            raise ValueError(
                f"{dataset_id}: episode {i}: observations: expected {t + 1} (T + 1 for {t} rewards), got {len(o)}"
            )
        a = np.asarray(ep.actions)
        obs.append(o[:t])
        act.append(a.astype(np.int64).reshape(t) - start if discrete else a.astype(np.float32))
        rew.append(np.asarray(ep.rewards, dtype=np.float32).reshape(-1))
        term.append(np.asarray(ep.terminations, dtype=bool).reshape(-1))
        trunc.append(np.asarray(ep.truncations, dtype=bool).reshape(-1))
    if not obs:
        raise ValueError(f"{dataset_id}: expected at least one episode, got none ({data_path})")

    meta = {k: _plain(v) for k, v in ds.storage.metadata.items()}
    env_spec = ds.env_spec
    ref_min, ref_max = meta.get("ref_min_score"), meta.get("ref_max_score")
    return Episodes(
        observations=obs,
        actions=act,
        rewards=rew,
        terminations=term,
        truncations=trunc,
        env_id=env_spec.id if env_spec is not None else None,
        ref_min_score=float(ref_min) if ref_min is not None else None,
        ref_max_score=float(ref_max) if ref_max is not None else None,
        source=dataset_id,
        discrete=discrete,
        num_actions=num_actions,
        metadata=meta,
    )


def _d4rl_family(*names: str | None) -> str | None:
    """The D4RL environment family (``hopper``) named in an env id or a file name, if any."""
    for name in names:
        if not name:
            continue
        low = name.lower().replace("_", "").replace("-", "")
        # halfcheetah before hopper would not matter; walker2d also matches "walker2d-medium"
        for family in D4RL_REF_SCORES:
            if family in low:
                return family
    return None


def load_d4rl_hdf5(path: str | Path, env_id: str | None = None) -> Episodes:
    """A D4RL-format hdf5 file as ``Episodes``.

    The file holds flat arrays over all N steps: ``observations`` (N, S), ``actions`` (N, A) (or (N,) integers for
    discrete actions), ``rewards`` (N,) or (N, 1), ``terminals`` (N,) and optionally ``timeouts`` (N,). An episode ends
    after a step that is terminal or timed out; steps after the last end form a final, unfinished episode.

    Args:
        path: the hdf5 file.
        env_id: the Gymnasium id the data came from; default the file's ``env_id``/``env`` attribute, if any.

    Returns:
        ``Episodes``; reference scores from the file's ``ref_min_score``/``ref_max_score`` attributes, else from
        D4RL's table (``D4RL_REF_SCORES``) for hopper/halfcheetah/walker2d named by ``env_id`` or the file name.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path: expected a D4RL hdf5 file, got {path} (no such file)")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: expected an hdf5 file, could not open it ({e})") from e
    with f:
        missing = [k for k in _D4RL_REQUIRED if k not in f]
        if missing:
            raise ValueError(f"{path}: {missing[0]}: expected D4RL arrays {list(_D4RL_REQUIRED)}, missing {missing}")
        arrays = {k: np.asarray(f[k][()]) for k in (*_D4RL_REQUIRED, "timeouts") if k in f}
        attrs = {k: _plain(v) for k, v in f.attrs.items()}

    n = len(arrays["observations"])
    for name, arr in arrays.items():
        if arr.ndim == 0 or len(arr) != n:
            got = "a scalar" if arr.ndim == 0 else f"{len(arr)} rows"
            raise ValueError(f"{path}: {name}: expected {n} rows like observations, got {got}")
    if n == 0:
        raise ValueError(f"{path}: observations: expected at least one step, got none")
    obs = arrays["observations"].astype(np.float32)
    if obs.ndim != 2:
        raise ValueError(f"{path}: observations: expected flat observations (N, S), got shape {obs.shape}")
    rewards = arrays["rewards"].astype(np.float32).reshape(n, -1)
    if rewards.shape[1] != 1:
        raise ValueError(f"{path}: rewards: expected shape ({n},) or ({n}, 1), got {arrays['rewards'].shape}")
    rewards = rewards[:, 0]
    bad = np.flatnonzero(~np.isfinite(rewards))
    if bad.size:
        raise ValueError(f"{path}: rewards: expected finite numbers, got {rewards[bad[0]]} at step {bad[0]}")
    terminals = arrays["terminals"].astype(bool).reshape(n)
    timeouts = arrays["timeouts"].astype(bool).reshape(n) if "timeouts" in arrays else np.zeros(n, dtype=bool)

    raw_actions = arrays["actions"]
    discrete = np.issubdtype(raw_actions.dtype, np.integer) and raw_actions.ndim == 1
    if discrete:
        actions = raw_actions.astype(np.int64)
        if actions.min() < 0:
            raise ValueError(f"{path}: actions: expected discrete action indices >= 0, got {actions.min()}")
        num_actions = int(attrs.get("num_actions", actions.max() + 1))
    else:
        actions = raw_actions.astype(np.float32).reshape(n, -1)
        num_actions = None

    ends = np.flatnonzero(terminals | timeouts) + 1
    bounds = np.unique(np.concatenate([[0], ends, [n]]))
    spans = list(pairwise(bounds.tolist()))

    env_id = env_id or attrs.get("env_id") or attrs.get("env")
    if "ref_min_score" in attrs and "ref_max_score" in attrs:
        ref_min, ref_max = float(attrs["ref_min_score"]), float(attrs["ref_max_score"])
        ref_from = "hdf5 attributes"
    elif (family := _d4rl_family(env_id, path.name)) is not None:
        ref_min, ref_max = D4RL_REF_SCORES[family]
        ref_from = f"D4RL infos.py ({family})"
    else:
        ref_min = ref_max = None
        ref_from = None
    meta: dict[str, Any] = {**attrs, "format": "d4rl-hdf5", "ref_scores_from": ref_from}
    return Episodes(
        observations=[obs[a:b] for a, b in spans],
        actions=[actions[a:b] for a, b in spans],
        rewards=[rewards[a:b] for a, b in spans],
        terminations=[terminals[a:b] for a, b in spans],
        truncations=[timeouts[a:b] & ~terminals[a:b] for a, b in spans],
        env_id=env_id,
        ref_min_score=ref_min,
        ref_max_score=ref_max,
        source=str(path),
        discrete=discrete,
        num_actions=num_actions,
        metadata=json.loads(json.dumps(meta)),
    )


def load_episodes(source: str | Path, root: str | Path | None = None) -> Episodes:
    """Episodes from a D4RL hdf5 file (a path ending ``.hdf5``/``.h5``) or a Minari dataset id (under ``root``)."""
    if Path(source).suffix.lower() in _HDF5_SUFFIXES:
        return load_d4rl_hdf5(source)
    return load_minari(str(source), root=root)
