"""``RolloutCallback``: evaluate the policy in its environment every N epochs at validation, and once at test.

Logs ``{stage}/score_{target}`` (normalised score, or ``{stage}/return_{target}`` without reference scores) and
``{stage}/score`` (the first target's; behaviour cloning runs once), appends every episode to ``rollouts.csv`` in
the run directory and redraws ``score_curve.png`` (the learning curve of normalised score); at test, writes
``rollouts_test.csv`` and ``return_conditioning.png`` (target vs achieved return, the dataset's best and mean marked).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

from omni.rollout import Mode, check_targets, rollout
from omni.training import run_directory

__all__ = ["RolloutCallback"]


class RolloutCallback(Callback):
    """Rollouts of a ``DecisionTransformer`` at validation (every ``every_n_epochs``) and at test."""

    def __init__(
        self,
        targets: list[float],
        episodes: int | None = None,
        test_episodes: int | None = None,
        every_n_epochs: int = 1,
        mode: Mode = "window",
        seed: int = 1000,
        test_seed: int | None = None,
    ) -> None:
        """
        Args:
            targets: target returns in the env's units (CORL hopper: 3600, 1800).
            episodes: episodes per target at validation; default the data module's ``val_episodes``.
            test_episodes: episodes per target at test; default as at validation.
            every_n_epochs: run at the validation of every N-th epoch (the test after fit runs them once more).
            mode: ``window`` (CORL's evaluation), ``cache`` or ``recompute`` (see ``omni.rollout``).
            seed: the envs' first seed at validation (episode i is reset with seed + i).
            test_seed: the first seed at test; default ``seed + 100_000``: the test plays other episodes than the
                validations, so a checkpoint chosen by its validation score is scored on episodes it was not
                chosen by.
        """
        self.targets = check_targets(targets, "targets")
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs: expected a positive int, got {every_n_epochs}")
        self.episodes, self.test_episodes = episodes, test_episodes
        self.every_n_epochs, self.mode, self.seed = every_n_epochs, mode, seed
        self.test_seed = seed + 100_000 if test_seed is None else test_seed

    def _episodes(self, trainer: L.Trainer, stage: str) -> int:
        n = self.test_episodes if stage == "test" else None
        n = n or self.episodes or getattr(trainer.datamodule, "val_episodes", None) or 10
        return int(n)

    def _due(self, trainer: L.Trainer) -> bool:
        return (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self._due(trainer):
            return
        self._run(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._run(trainer, pl_module, "test")

    def _run(self, trainer: L.Trainer, task: L.LightningModule, stage: str) -> None:
        episodes = self._episodes(trainer, stage)
        if episodes < 1:
            return
        seed = self.test_seed if stage == "test" else self.seed
        result = rollout(task, self.targets, episodes, mode=self.mode, seed=seed)  # type: ignore[arg-type]
        metric = "score" if result.normalized is not None else "return"
        summary = result.by_target()
        for i, (target, stats) in enumerate(summary.items()):
            if task.layout != "bc":
                task.log(f"{stage}/{metric}_{target:g}", stats[metric], sync_dist=True)
            if i == 0:
                task.log(f"{stage}/{metric}", stats[metric], prog_bar=True, sync_dist=True)
        run_dir = run_directory(trainer)  # a collective under DDP: every rank, before the rank test
        if run_dir is None or not trainer.is_global_zero:
            return
        name = "rollouts.csv" if stage == "val" else "rollouts_test.csv"
        csv_path = result.write_csv(Path(run_dir) / name, {"epoch": trainer.current_epoch})
        from omni.rl_plots import plot_return_conditioning, plot_score_curve

        if stage == "val":
            plot_score_curve(csv_path, Path(run_dir) / "score_curve.png")
        elif task.layout == "dt":
            stats = task.rl.get("return_stats")
            plot_return_conditioning(summary, stats, Path(run_dir) / "return_conditioning.png")
