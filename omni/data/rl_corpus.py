"""Offline RL datasets made on the CPU, in Minari's format: ``omni data rl --env Hopper-v5 --out DIR``.

A behaviour policy is trained with Stable-Baselines3 (PPO by default, SAC as an option) on any Gymnasium
environment with flat observations; every episode the learner collects is recorded with its *raw* observations and
rewards (VecNormalize only changes what the learner sees), and a checkpoint with its evaluated mean return (a few
episodes of the stochastic policy) is saved every ``--checkpoint_every`` steps. The tiers follow D4RL:

- ``expert``: episodes of the final policy (stochastic actions), ``--transitions`` steps (or ``--episodes``).
- ``medium``: episodes of the checkpoint whose evaluated return is closest to a third of the way from the random
  policy's return to the final policy's (normalised score 33), as many as ``expert``.
- ``medium-replay``: every episode the learner finished while training up to that checkpoint.
- ``medium-expert``: the ``medium`` and ``expert`` episodes together.

Each dataset is written under ``DIR`` (read it with ``MINARI_DATASETS_PATH=DIR``) as ``omni/<env lower>/<tier>-v0``,
e.g. ``omni/hopper-v5/medium-v0``, with ``ref_min_score`` (the mean return of a uniformly random policy,
``--random_episodes`` episodes) and ``ref_max_score`` (the ``expert`` episodes' mean return) in its metadata. A
summary per tier goes to ``DIR/<env lower>/summary.json``, next to the build's work files (checkpoints, episodes).

Deterministic from ``--seed`` (torch on one thread, seeded environments and samplers). Resumable: finished stages
are skipped, training continues from its last checkpoint, and every file and dataset is staged and renamed into
place, so a half-written one is never visible. A resumed training stage is not bit-identical to an uninterrupted one
(episodes running at the interruption are lost, and SAC's replay buffer starts empty); every stage after training is.

Defaults (Hopper-v5, PPO with 8 environments, 64x64 networks, VecNormalize, 1M steps, a checkpoint every 25k steps
evaluated over 5 episodes, 100k steps per collected tier) made Hopper's four datasets in 12:51 on two cores shared
with another job (training 11:37): expert return 2797 (ref_max_score), random 17.3 (ref_min_score), medium 38.4
normalised, medium-replay 22.0, medium-expert 56.1. HalfCheetah-v5 with the same defaults: 10:59, expert 1593, random
-284.8, medium 33.6, medium-replay 7.6 (medium is reached early, at step 106k), medium-expert 66.8.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np

__all__ = ["EpisodeLog", "RLCorpusSpec", "build_rl_corpus", "collect", "dataset_id", "main"]

TIERS = ("medium", "medium-replay", "expert", "medium-expert")
Policy = Callable[[np.ndarray], np.ndarray]  # (B, S) raw observations -> (B, *A) actions


@dataclass(frozen=True)
class RLCorpusSpec:
    """What a build is made of; stored as ``build.json`` so a resumed build checks it continues the same plan.

    Attributes:
        env_id: a Gymnasium id with a flat Box observation space and Box or Discrete actions.
        seed: seeds the learner, the environments and every sampler.
        algo: the behaviour learner: ``ppo`` (fast on CPU) or ``sac``.
        steps: environment steps the learner trains for.
        checkpoint_every: steps between checkpoints (rounded up to whole PPO rollouts).
        n_envs: environments the learner steps at once.
        eval_episodes: episodes that evaluate each checkpoint.
        random_episodes: episodes of a uniformly random policy behind ``ref_min_score``.
        transitions: steps per collected tier (``medium``, ``expert``); whole episodes, at least this many.
        episodes: episodes per collected tier instead of ``transitions``.
        medium_score: the normalised score (0 random, 100 expert) the ``medium`` checkpoint is chosen closest to.
        net: hidden sizes of the policy and value networks.
    """

    env_id: str = "Hopper-v5"
    seed: int = 0
    algo: Literal["ppo", "sac"] = "ppo"
    steps: int = 1_000_000
    checkpoint_every: int = 25_000
    n_envs: int = 8
    eval_episodes: int = 5
    random_episodes: int = 100
    transitions: int = 100_000
    episodes: int | None = None
    medium_score: float = 100.0 / 3
    net: tuple[int, ...] = field(default=(64, 64))


def dataset_id(env_id: str, tier: str) -> str:
    """``omni/hopper-v5/medium-v0`` for ``Hopper-v5`` and ``medium``."""
    return f"omni/{env_id.lower()}/{tier}-v0"


# ---------------------------------------------------------------------------------------------------- episodes
@dataclass
class EpisodeLog:
    """Finished episodes with Minari's layout: T + 1 observations, T actions, rewards, terminations, truncations."""

    observations: list[np.ndarray] = field(default_factory=list)  # (T + 1, S) each
    actions: list[np.ndarray] = field(default_factory=list)  # (T, *A)
    rewards: list[np.ndarray] = field(default_factory=list)  # (T,)
    terminations: list[np.ndarray] = field(default_factory=list)
    truncations: list[np.ndarray] = field(default_factory=list)

    def add(self, obs: list, act: list, rew: list, term: list, trunc: list) -> None:
        self.observations.append(np.asarray(obs, dtype=np.float32))
        self.actions.append(np.asarray(act))
        self.rewards.append(np.asarray(rew, dtype=np.float64))
        self.terminations.append(np.asarray(term, dtype=bool))
        self.truncations.append(np.asarray(trunc, dtype=bool))

    def extend(self, other: EpisodeLog) -> EpisodeLog:
        for name in ("observations", "actions", "rewards", "terminations", "truncations"):
            getattr(self, name).extend(getattr(other, name))
        return self

    def __len__(self) -> int:
        return len(self.rewards)

    def clear(self) -> None:
        for name in ("observations", "actions", "rewards", "terminations", "truncations"):
            getattr(self, name).clear()

    @property
    def returns(self) -> np.ndarray:
        return np.array([r.sum() for r in self.rewards], dtype=np.float64)

    @property
    def steps(self) -> int:
        return int(sum(len(r) for r in self.rewards))

    def save(self, path: Path) -> None:
        """One npz of concatenated arrays plus lengths, written atomically."""
        lengths = np.array([len(r) for r in self.rewards], dtype=np.int64)
        cat = (lambda xs: np.concatenate(xs)) if len(self) else (lambda xs: np.zeros(0))
        with _atomic(path) as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                lengths=lengths,
                observations=cat(self.observations),
                actions=cat(self.actions),
                rewards=cat(self.rewards),
                terminations=cat(self.terminations),
                truncations=cat(self.truncations),
            )

    @classmethod
    def load(cls, path: Path) -> EpisodeLog:
        z = np.load(path)
        lengths = z["lengths"]
        log = cls()
        if not len(lengths):
            return log
        obs_cuts = np.cumsum(lengths + 1)[:-1]
        cuts = np.cumsum(lengths)[:-1]
        log.observations = np.split(z["observations"], obs_cuts)
        for name in ("actions", "rewards", "terminations", "truncations"):
            setattr(log, name, np.split(z[name], cuts))
        return log


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; renamed onto ``path`` only if the block finishes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.is_dir():
        shutil.rmtree(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


class RecordEpisodes(gym.Wrapper):
    """Records every finished episode of the wrapped env (raw observations, actions as executed) into ``sink``."""

    def __init__(self, env: gym.Env, sink: EpisodeLog) -> None:
        super().__init__(env)
        self.sink = sink
        self._obs: list = []
        self._act: list = []
        self._rew: list = []
        self._term: list = []
        self._trunc: list = []

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        obs, info = self.env.reset(**kwargs)
        self._obs, self._act, self._rew, self._term, self._trunc = [obs], [], [], [], []
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs, rew, term, trunc, info = self.env.step(action)
        self._obs.append(obs)
        self._act.append(action)
        self._rew.append(float(rew))
        self._term.append(bool(term))
        self._trunc.append(bool(trunc))
        if term or trunc:
            self.sink.add(self._obs, self._act, self._rew, self._term, self._trunc)
        return obs, rew, term, trunc, info


def collect(
    env_id: str,
    policy: Policy,
    *,
    n_envs: int,
    seed: int,
    transitions: int | None = None,
    episodes: int | None = None,
    on_step: Callable[[int], None] | None = None,
) -> EpisodeLog:
    """Episodes of ``policy`` in ``n_envs`` environments stepped together (one batched policy call per step).

    With ``episodes``, each environment runs its share and the first ``episodes`` by round are kept (no bias to
    short episodes); with ``transitions``, collection stops once the finished episodes hold that many steps.
    """
    if (transitions is None) == (episodes is None):
        raise ValueError(f"collect: expected exactly one of transitions or episodes, got {transitions}, {episodes}")
    envs = [gym.make(env_id) for _ in range(n_envs)]
    box = isinstance(envs[0].action_space, gym.spaces.Box)
    per_env = math.ceil(episodes / n_envs) if episodes is not None else None
    obs = [e.reset(seed=seed + i)[0] for i, e in enumerate(envs)]
    open_eps: list[list[list]] = [[[o], [], [], [], []] for o in obs]
    finished: list[tuple[int, int, list[list]]] = []
    rounds, total = [0] * n_envs, 0
    active = list(range(n_envs))
    while active and (transitions is None or total < transitions):
        acts = np.asarray(policy(np.stack([obs[i] for i in active])))
        for a, i in zip(acts, active, strict=True):
            if box:
                a = np.clip(a, envs[i].action_space.low, envs[i].action_space.high)
            o, r, term, trunc, _ = envs[i].step(a)
            ep = open_eps[i]
            for part, v in zip(ep, (o, a, float(r), bool(term), bool(trunc)), strict=True):
                part.append(v)
            obs[i] = o
            if term or trunc:
                finished.append((rounds[i], i, ep))
                rounds[i] += 1
                total += len(ep[1])
                if on_step is not None:
                    on_step(len(ep[1]))
                obs[i] = envs[i].reset()[0]
                open_eps[i] = [[obs[i]], [], [], [], []]
        if per_env is not None:
            active = [i for i in active if rounds[i] < per_env]
    for e in envs:
        e.close()
    if episodes is not None:
        finished = sorted(finished, key=lambda f: (f[0], f[1]))[:episodes]
    log = EpisodeLog()
    for _, _, ep in finished:
        log.add(*ep)
    return log


def random_policy(space: gym.Space, seed: int) -> Policy:
    space.seed(seed)
    return lambda obs: np.stack([space.sample() for _ in range(len(obs))])


# ---------------------------------------------------------------------------------------------------- learner
def check_env(env_id: str) -> gym.Env:
    """The environment of ``--env``, checked: it exists, observations are a flat Box, actions Box or Discrete."""
    try:
        env = gym.make(env_id)
    except gym.error.Error as e:
        raise ValueError(f"--env: expected a Gymnasium environment id, got {env_id!r} ({e})") from e
    obs, act = env.observation_space, env.action_space
    if not (isinstance(obs, gym.spaces.Box) and len(obs.shape) == 1):
        raise ValueError(f"--env: {env_id}: expected a flat Box observation space, got {obs}")
    if not isinstance(act, gym.spaces.Box | gym.spaces.Discrete):
        raise ValueError(f"--env: {env_id}: expected a Box or Discrete action space, got {act}")
    return env


class _Learner:
    """An SB3 learner over recorded, normalised vector environments; saved and restored as one checkpoint folder."""

    def __init__(self, spec: RLCorpusSpec, sink: EpisodeLog, resume: Path | None) -> None:
        from stable_baselines3 import PPO, SAC
        from stable_baselines3.common.utils import set_random_seed
        from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

        self.spec = spec
        cls = PPO if spec.algo == "ppo" else SAC
        venv = DummyVecEnv([lambda: RecordEpisodes(gym.make(spec.env_id), sink) for _ in range(spec.n_envs)])
        if resume is None:
            set_random_seed(spec.seed)
            venv.seed(spec.seed)
            self.venv = VecNormalize(venv, norm_reward=spec.algo == "ppo")
            kwargs: dict[str, Any] = {"policy_kwargs": {"net_arch": list(spec.net)}, "seed": spec.seed}
            if spec.algo == "ppo":
                kwargs |= {"n_steps": self.rollout // spec.n_envs, "batch_size": 256, "n_epochs": 10}
            self.model = cls("MlpPolicy", self.venv, device="cpu", verbose=0, **kwargs)
        else:
            self.venv = VecNormalize.load(str(resume / "vecnormalize.pkl"), venv)
            self.model = cls.load(resume / "model.zip", env=self.venv, device="cpu")
            # A fresh seed for the rest of training: where this run stopped, episodes started again.
            step = int(self.model.num_timesteps)
            set_random_seed(spec.seed + step)
            venv.seed(spec.seed + step)

    @property
    def rollout(self) -> int:
        """Steps per PPO update (256 per environment), the unit checkpoints are rounded to; one vector step for SAC."""
        return self.spec.n_envs * (256 if self.spec.algo == "ppo" else 1)

    def learn_to(self, step: int, on_step: Callable[[int], None]) -> None:
        from stable_baselines3.common.callbacks import BaseCallback

        n = self.spec.n_envs

        class _Progress(BaseCallback):
            def _on_step(self) -> bool:
                on_step(n)
                return True

        self.model.learn(step - self.model.num_timesteps, reset_num_timesteps=False, callback=_Progress())

    def save(self, folder: Path) -> None:
        self.model.save(folder / "model.zip")
        self.venv.save(str(folder / "vecnormalize.pkl"))

    def policy(self, seed: int) -> Policy:
        return _sb3_policy(self.model, self.venv, seed)


def _sb3_policy(model: Any, venv: Any, seed: int) -> Policy:
    """Stochastic actions of ``model`` on raw observations, normalised with ``venv``'s frozen statistics."""
    import torch

    torch.manual_seed(seed)
    return lambda obs: model.predict(venv.normalize_obs(obs.astype(np.float32)), deterministic=False)[0]


def _load_policy(spec: RLCorpusSpec, folder: Path, seed: int) -> Policy:
    from stable_baselines3 import PPO, SAC
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    venv = VecNormalize.load(str(folder / "vecnormalize.pkl"), DummyVecEnv([lambda: gym.make(spec.env_id)]))
    venv.training = False
    model = (PPO if spec.algo == "ppo" else SAC).load(folder / "model.zip", device="cpu")
    return _sb3_policy(model, venv, seed)


def _checkpoints(train_dir: Path) -> list[dict]:
    """The finished checkpoints, by step: ``{"step", "mean_return", "returns", "folder"}``."""
    found = []
    for p in sorted(train_dir.glob("ckpt_*/eval.json")):
        found.append({**json.loads(p.read_text()), "folder": str(p.parent)})
    return sorted(found, key=lambda c: c["step"])


def train(spec: RLCorpusSpec, work: Path, progress: Any) -> list[dict]:
    """Train (or resume) the behaviour learner; one checkpoint folder per ``checkpoint_every`` steps, each with the
    model, the normalisation statistics, the episodes finished since the previous one and the evaluated return."""
    train_dir = work / "train"
    done = _checkpoints(train_dir)
    sink = EpisodeLog()
    learner = _Learner(spec, sink, Path(done[-1]["folder"]) if done else None)
    every = math.ceil(spec.checkpoint_every / learner.rollout) * learner.rollout
    last = math.ceil(spec.steps / learner.rollout) * learner.rollout
    targets = [*range(every, last, every), last]
    start = done[-1]["step"] if done else 0
    task = progress.add_task(f"train {spec.algo} on {spec.env_id}", total=last, completed=start)
    for k, target in enumerate(targets):
        if target <= start:
            continue
        learner.learn_to(target, lambda n: progress.advance(task, n))
        ev = collect(
            spec.env_id,
            learner.policy(spec.seed + 20_000 + k),
            n_envs=spec.eval_episodes,
            seed=spec.seed + 10_000 + 1_000 * k,
            episodes=spec.eval_episodes,
        )
        info = {"step": target, "mean_return": float(ev.returns.mean()), "returns": ev.returns.tolist()}
        with _atomic(train_dir / f"ckpt_{target:09d}") as tmp:
            tmp.mkdir()
            learner.save(tmp)
            sink.save(tmp / "episodes.npz")
            (tmp / "eval.json").write_text(json.dumps(info))
        sink.clear()  # the next checkpoint holds the episodes finished after this one
        progress.update(task, description=f"train {spec.algo} on {spec.env_id} (return {info['mean_return']:.0f})")
    return _checkpoints(train_dir)


# ---------------------------------------------------------------------------------------------------- datasets
@contextlib.contextmanager
def _minari_root(root: Path) -> Iterator[None]:
    """Minari's writers read ``$MINARI_DATASETS_PATH``; point it at ``root`` for the block only."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if old is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def write_dataset(
    out: Path, ds_id: str, log: EpisodeLog, spec: RLCorpusSpec, refs: tuple[float, float], about: dict[str, Any]
) -> Path:
    """A Minari dataset ``ds_id`` under ``out``, built in a hidden staging root and renamed into place."""
    from minari import create_dataset_from_buffers
    from minari.data_collector import EpisodeBuffer

    out = Path(out).absolute()  # Minari joins a relative root onto itself
    final = out / ds_id
    stage = out / f".staging-{ds_id.replace('/', '-')}"
    shutil.rmtree(stage, ignore_errors=True)
    buffers = [
        EpisodeBuffer(
            id=i,
            observations=log.observations[i],
            actions=log.actions[i],
            rewards=log.rewards[i].tolist(),
            terminations=log.terminations[i].tolist(),
            truncations=log.truncations[i].tolist(),
        )
        for i in range(len(log))
    ]
    with _minari_root(stage), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Minari warns about every optional field left unset
        ds = create_dataset_from_buffers(
            ds_id,
            buffers,
            env=spec.env_id,
            eval_env=spec.env_id,
            algorithm_name=f"omni data rl ({spec.algo}, stable-baselines3)",
            author="omni",
            code_permalink="omni/data/rl_corpus.py",
            ref_min_score=refs[0],
            ref_max_score=refs[1],
            description=about.pop("description"),
        )
        ds.storage.update_metadata({f"omni_{k}": v for k, v in about.items()})
    final.parent.mkdir(parents=True, exist_ok=True)
    for part in Path(ds_id).parents:  # Minari's namespace markers, if the staging root made any
        marker = stage / part / "namespace_metadata.json"
        if str(part) != "." and marker.exists() and not (out / part / marker.name).exists():
            shutil.copy(marker, out / part / marker.name)
    os.replace(stage / ds_id, final)
    shutil.rmtree(stage, ignore_errors=True)
    return final


def _tier_stats(log: EpisodeLog, refs: tuple[float, float]) -> dict[str, Any]:
    r = log.returns
    return {
        "episodes": len(log),
        "transitions": log.steps,
        "return_mean": float(r.mean()),
        "return_median": float(np.median(r)),
        "return_max": float(r.max()),
        "normalized_mean": float(100 * (r.mean() - refs[0]) / (refs[1] - refs[0])),
    }


def _progress() -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*cols, transient=False)


def build_rl_corpus(spec: RLCorpusSpec, out: str | Path) -> dict[str, Any]:
    """Build (or finish) the four datasets of ``spec`` under ``out``; returns the summary written next to them."""
    import torch

    check_env(spec.env_id).close()
    if spec.episodes is not None and spec.episodes < 1:
        raise ValueError(f"--episodes: expected a positive number of episodes per tier, got {spec.episodes}")
    out = Path(out).absolute()
    work = out / spec.env_id.lower()
    work.mkdir(parents=True, exist_ok=True)
    plan = json.loads(json.dumps(asdict(spec)))
    build_file = work / "build.json"
    if build_file.exists() and json.loads(build_file.read_text()) != plan:
        raise ValueError(
            f"--out: {build_file} holds a build with other settings ({build_file.read_text()}); "
            f"use another --out or remove {work} and the omni/{spec.env_id.lower()} datasets"
        )
    with _atomic(build_file) as tmp:
        tmp.write_text(json.dumps(plan, indent=1))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small networks: one thread is fastest and deterministic
    size = {"episodes": spec.episodes} if spec.episodes is not None else {"transitions": spec.transitions}
    try:
        with _progress() as progress:
            random_file = work / "random.json"
            if not random_file.exists():
                env = gym.make(spec.env_id)
                task = progress.add_task("random policy (ref_min_score)", total=spec.random_episodes)
                log = collect(
                    spec.env_id,
                    random_policy(env.action_space, spec.seed + 30_000),
                    n_envs=min(spec.random_episodes, 10),
                    seed=spec.seed + 40_000,
                    episodes=spec.random_episodes,
                    on_step=lambda _: progress.advance(task),
                )
                with _atomic(random_file) as tmp:
                    tmp.write_text(
                        json.dumps({"mean_return": float(log.returns.mean()), "returns": log.returns.tolist()})
                    )
            ref_min = json.loads(random_file.read_text())["mean_return"]

            ckpts = train(spec, work, progress)
            final = ckpts[-1]
            aim = ref_min + spec.medium_score / 100 * (final["mean_return"] - ref_min)
            medium = min(ckpts, key=lambda c: (abs(c["mean_return"] - aim), c["step"]))

            logs: dict[str, EpisodeLog] = {}
            for tier, ckpt, seed in (("expert", final, 50_000), ("medium", medium, 60_000)):
                path = work / f"{tier}.npz"
                if not path.exists():
                    total = spec.transitions if spec.episodes is None else None
                    task = progress.add_task(f"{tier}: policy of step {ckpt['step']}", total=total)
                    log = collect(
                        spec.env_id,
                        _load_policy(spec, Path(ckpt["folder"]), spec.seed + seed),
                        n_envs=spec.n_envs,
                        seed=spec.seed + seed,
                        on_step=lambda n, t=task: progress.advance(t, n),
                        **size,
                    )
                    log.save(path)
                logs[tier] = EpisodeLog.load(path)
            ref_max = float(logs["expert"].returns.mean())
            refs = (float(ref_min), ref_max)
            logs["medium-replay"] = EpisodeLog()
            for c in ckpts:
                if c["step"] <= medium["step"]:
                    logs["medium-replay"].extend(EpisodeLog.load(Path(c["folder"]) / "episodes.npz"))
            logs["medium-expert"] = EpisodeLog().extend(logs["medium"]).extend(logs["expert"])

            source = {
                "medium": f"the checkpoint at step {medium['step']} (evaluated return {medium['mean_return']:.1f})",
                "medium-replay": f"every episode the learner finished up to step {medium['step']}",
                "expert": f"the final policy at step {final['step']} (evaluated return {final['mean_return']:.1f})",
                "medium-expert": "the medium and expert episodes together",
            }
            summary: dict[str, Any] = {
                "env_id": spec.env_id,
                "ref_min_score": refs[0],
                "ref_max_score": refs[1],
                "medium_step": medium["step"],
                "expert_step": final["step"],
                "checkpoints": [{k: c[k] for k in ("step", "mean_return")} for c in ckpts],
                "tiers": {},
                "spec": plan,
            }
            for tier in TIERS:
                ds_id = dataset_id(spec.env_id, tier)
                if not (out / ds_id / "data" / "metadata.json").exists():
                    about = {"description": f"{tier} tier of {spec.env_id}: {source[tier]}; omni data rl, seed "
                             f"{spec.seed}.", "tier": tier, "seed": spec.seed, "source": source[tier]}  # fmt: skip
                    write_dataset(out, ds_id, logs[tier], spec, refs, about)
                summary["tiers"][tier] = {"dataset_id": ds_id, **_tier_stats(logs[tier], refs)}
        with _atomic(work / "summary.json") as tmp:
            tmp.write_text(json.dumps(summary, indent=1))
    finally:
        torch.set_num_threads(threads)
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(
        title=f"omni/{summary['env_id'].lower()}/*-v0: ref_min_score {summary['ref_min_score']:.1f}, "
        f"ref_max_score {summary['ref_max_score']:.1f}"
    )
    for col in ("tier", "episodes", "steps", "mean return", "median", "max", "normalised"):
        t.add_column(col, justify="left" if col == "tier" else "right")
    for tier, s in summary["tiers"].items():
        t.add_row(
            tier,
            str(s["episodes"]),
            str(s["transitions"]),
            f"{s['return_mean']:.1f}",
            f"{s['return_median']:.1f}",
            f"{s['return_max']:.1f}",
            f"{s['normalized_mean']:.1f}",
        )
    Console().print(t)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``omni data rl --env Hopper-v5 --out DIR``."""
    defaults = RLCorpusSpec()
    p = argparse.ArgumentParser(prog="omni data rl", description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default=defaults.env_id, help="a Gymnasium id, e.g. Hopper-v5 or HalfCheetah-v5")
    p.add_argument("--out", required=True, help="the datasets root (MINARI_DATASETS_PATH); a build there resumes")
    p.add_argument("--algo", choices=["ppo", "sac"], default=defaults.algo)
    for name in ("seed", "steps", "checkpoint_every", "n_envs", "eval_episodes", "random_episodes", "transitions"):
        p.add_argument(f"--{name}", type=int, default=getattr(defaults, name))
    p.add_argument("--episodes", type=int, default=None, help="episodes per collected tier instead of --transitions")
    p.add_argument("--medium_score", type=float, default=defaults.medium_score)
    a = vars(p.parse_args(argv))
    out = a.pop("out")
    spec = RLCorpusSpec(env_id=a.pop("env"), **a)
    summary = build_rl_corpus(spec, out)
    print_summary(summary)
    print(f"datasets: {Path(out)} (MINARI_DATASETS_PATH); summary: {Path(out) / spec.env_id.lower() / 'summary.json'}")
    return summary
