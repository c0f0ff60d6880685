"""Evaluate a Decision Transformer (or its behaviour-cloning twin) in Gymnasium: many episodes at once in one vector
env, one batched model call per env step, at several target returns.

Shape legend
    E rows = episodes x targets, all stepped together   K context (steps)   S state size   A action size
    H the most steps an episode may take (the env's time limit)

Three ways to give the model its context at step t; they agree exactly only where noted:

- ``window`` (default, CORL's evaluation): re-run the model on the last K steps, as it was trained. The first of
  those K steps sees nothing before it, exactly as at training.
- ``cache``: a rolling KV cache over the last K steps (``OmniModel.start_decoding(window=K)``), one new step per
  call. Equal to a forward over the whole episode under the model's masks, which with a group window of K
  (``causal() & causal(by='group', window=K)``) is what ``recompute`` computes. With one layer it also equals
  ``window``; with more it does not (a cached key of layer 2 carries what its own step saw, up to K steps further
  back), so the trained model meets a context it never saw: training evaluation uses ``window``.
- ``recompute``: re-run the last ``depth * (K - 1) + 1`` steps (the receptive field of ``depth`` layers that each
  look back K steps); the reference the cache must equal.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from omni.choices import check_choice

if TYPE_CHECKING:
    from omni.tasks.decision import DecisionTransformer

__all__ = ["Mode", "RolloutResult", "check_targets", "make_vector_env", "normalized_score", "rollout", "run_episodes"]

Mode = Literal["window", "cache", "recompute"]


def check_targets(targets: object, name: str = "target") -> list[float]:
    """Target returns as floats: a number or a sequence of numbers (not bools, not strings), finite."""
    items = [targets] if isinstance(targets, int | float | str) else targets
    if not isinstance(items, Sequence) or isinstance(items, str) or not items:
        raise ValueError(f"{name}: expected a number or a non-empty list of numbers, got {targets!r}")
    out = []
    for t in items:
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
            raise ValueError(
                f"{name}: expected a finite number (a return such as 3600), got {t!r} ({type(t).__name__})"
            )
        out.append(float(t))
    return out


def normalized_score(returns: np.ndarray | float, ref_min: float | None, ref_max: float | None) -> np.ndarray | None:
    """100 x (return - ref_min) / (ref_max - ref_min), D4RL's scale; None without both references."""
    if ref_min is None or ref_max is None:
        return None
    return 100.0 * (np.asarray(returns, dtype=np.float64) - ref_min) / (ref_max - ref_min)


def make_vector_env(env_id: str, num_envs: int) -> Any:
    """``num_envs`` copies of a Gymnasium env stepped in this process; an unknown id raises ValueError naming it."""
    import gymnasium as gym

    try:
        gym.spec(env_id)
    except gym.error.Error as e:
        raise ValueError(f"env_id: expected a registered Gymnasium environment id, got {env_id!r} ({e})") from None
    return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync")


@dataclass
class RolloutResult:
    """Per-episode outcomes of one rollout.

    Attributes:
        targets: (E,) the target return each episode was conditioned on (NaN for behaviour cloning).
        returns: (E,) undiscounted return.
        lengths: (E,) steps taken.
        normalized: (E,) normalised score, or None without reference scores.
        actions: (E, H', *A) the actions chosen at every step (H' = steps until the last episode ended).
    """

    targets: np.ndarray
    returns: np.ndarray
    lengths: np.ndarray
    normalized: np.ndarray | None
    actions: np.ndarray = field(repr=False)

    def by_target(self) -> dict[float, dict[str, float]]:
        """{target: {"return", "return_std", "score" (if known), "length"}} means over that target's episodes."""
        out: dict[float, dict[str, float]] = {}
        unique = dict.fromkeys(math.nan if math.isnan(t) else t for t in self.targets.tolist())  # one NaN key
        for target in unique:
            rows = np.isnan(self.targets) if math.isnan(target) else self.targets == target
            stats = {
                "return": float(self.returns[rows].mean()),
                "return_std": float(self.returns[rows].std()),
                "length": float(self.lengths[rows].mean()),
            }
            if self.normalized is not None:
                stats["score"] = float(self.normalized[rows].mean())
            out[target] = stats
        return out

    def write_csv(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Append one row per episode (target, episode, return, length, normalized_score, plus ``extra`` columns);
        the header is written when the file is new."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        extra = dict(extra or {})
        header = [*extra, "target", "episode", "return", "length", "normalized_score"]
        new = not path.exists()
        with path.open("a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(header)
            for i in range(len(self.returns)):
                score = "" if self.normalized is None else f"{self.normalized[i]:.4f}"
                w.writerow([*extra.values(), self.targets[i], i, f"{self.returns[i]:.4f}", self.lengths[i], score])
        return path


@torch.no_grad()
def rollout(
    task: DecisionTransformer,
    targets: Sequence[float] | float,
    episodes: int,
    mode: Mode = "window",
    env_id: str | None = None,
    seed: int = 0,
    max_steps: int | None = None,
    progress: bool = False,
) -> RolloutResult:
    """Run ``episodes`` episodes per target return, all at once, and return what each achieved.

    Args:
        task: a trained ``DecisionTransformer`` (its checkpoint's facts: env id, context, reward scale, references).
        targets: target returns in the env's units (3600); ignored by behaviour cloning (run once, NaN).
        episodes: episodes per target.
        mode: ``window``, ``cache`` or ``recompute`` (see the module docstring).
        env_id: the Gymnasium id; default the dataset's.
        seed: env i is reset with seed + i.
        max_steps: stop after this many steps (default the env's time limit, else the model's ``max_timestep``).
        progress: show a Rich progress bar.
    """
    check_choice("mode", mode, Mode)
    target_list = check_targets(targets)
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes: expected a positive int, got {episodes!r}")
    env_id = env_id or task.rl.get("env_id")
    if not env_id:
        raise ValueError("env_id: expected a Gymnasium id (the dataset names none, and none was given), got None")
    if task.layout == "bc":
        target_list = [math.nan]
    context, scale = int(task.rl.get("context", 20)), float(task.rl.get("reward_scale", 1.0))
    rows = len(target_list) * episodes
    env = make_vector_env(env_id, rows)
    try:
        limit = env.spec.max_episode_steps if env.spec is not None else None
        horizon = max_steps or limit or task.max_timestep
        return run_episodes(task, env, np.repeat(target_list, episodes), mode, context, scale, seed, horizon, progress)
    finally:
        env.close()


def run_episodes(
    task: DecisionTransformer,
    env: Any,
    targets: np.ndarray,
    mode: Mode,
    context: int,
    scale: float,
    seed: int,
    horizon: int,
    progress: bool,
) -> RolloutResult:
    """The rollout loop on any vector env (``reset(seed)``, ``step(actions)`` as Gymnasium's): one row per entry of
    ``targets`` (in the env's units), ``horizon`` steps at most, the policy's context given by ``mode``; gradients
    are the caller's to disable (``rollout`` does)."""
    was_training = task.training
    task.eval()
    device, dtype = task.state_mean.device, task.state_mean.dtype
    tok = task.tokenizer
    rows = len(targets)
    obs, _ = env.reset(seed=seed)
    act_shape = () if task.discrete else (task.act_dim,)
    states = torch.zeros(rows, horizon, *obs.shape[1:], device=device, dtype=dtype)
    actions = torch.zeros(rows, horizon, *act_shape, device=device, dtype=torch.long if task.discrete else dtype)
    rtg = torch.zeros(rows, horizon, device=device, dtype=dtype)
    rtg_now = torch.as_tensor(np.nan_to_num(targets) * scale, device=device, dtype=dtype)
    returns, lengths = np.zeros(rows), np.zeros(rows, dtype=np.int64)
    done = np.zeros(rows, dtype=bool)
    reach = context if mode == "window" else task.model.trunk.config.depth * (context - 1) + 1
    cache = task.model.start_decoding(window=context) if mode == "cache" else None
    before_action = tok.tokens_per_step - 1  # tokens of a step up to its (last) state token

    def window(lo: int, hi: int) -> dict[str, Any]:
        steps = torch.arange(lo, hi, device=device).clamp(max=task.max_timestep - 1)
        return {
            "returns_to_go": rtg[:, lo:hi, None] if tok.returns else None,
            "states": states[:, lo:hi],
            "actions": actions[:, lo:hi],
            "timesteps": steps[None].expand(rows, -1),
        }

    bar = _progress(progress, horizon)
    t = 0
    for t in range(horizon):
        states[:, t] = task.normalize(torch.as_tensor(obs, device=device, dtype=dtype))
        rtg[:, t] = rtg_now
        if cache is None:
            lo = max(0, t + 1 - reach)
            pred = task({"trajectory": window(lo, t + 1)})["actions"][:, -1]  # a_t's slot holds a dummy, unseen
        else:  # one call per step: the previous step's action token, then this step's tokens up to its state
            tokens, _ = task.model.tokenize({"trajectory": window(max(0, t - 1), t + 1)})
            new = tokens[0:before_action] if t == 0 else tokens[before_action : tok.tokens_per_step + before_action]
            out = task.model.step(new, cache)["output"].tokens.x
            pred = task.head(out[:, -1:])[:, 0]
        action = task.head.act(pred)
        actions[:, t] = action
        obs, reward, terminated, truncated, _ = env.step(action.cpu().numpy())
        live = ~done
        returns[live] += reward[live]
        lengths[live] += 1
        rtg_now = rtg_now - torch.as_tensor(reward * scale, device=device, dtype=dtype)
        done |= np.asarray(terminated) | np.asarray(truncated)
        if bar is not None:
            bar[0].update(bar[1], advance=1)
        if done.all():
            break
    if bar is not None:
        bar[0].stop()
    task.train(was_training)
    ref_min, ref_max = task.rl.get("ref_min_score"), task.rl.get("ref_max_score")
    return RolloutResult(
        targets=np.asarray(targets, dtype=np.float64),
        returns=returns,
        lengths=lengths,
        normalized=normalized_score(returns, ref_min, ref_max),
        actions=actions[:, : t + 1].cpu().numpy(),
    )


def _progress(show: bool, total: int) -> tuple[Any, Any] | None:
    if not show:
        return None
    from rich.progress import Progress

    bar = Progress(transient=True)
    bar.start()
    return bar, bar.add_task("rollout steps", total=total)
