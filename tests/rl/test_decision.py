"""DecisionTransformer: a fit through the real CLI with the tiny overlay, a checkpoint that carries the state
statistics and rollout facts, ``omni rollout`` from it, the BC layout, image observations, and bad set-ups."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from rl_episodes import write_d4rl

from omni.cli import main
from omni.data.trajectories import TrajectoryDataModule
from omni.tasks.decision import DecisionTransformer
from omni.tokenizers import ImagePatchTokenizer

ROOT = Path(__file__).resolve().parents[2]
D, K = 16, 4
TRUNK = {
    "dim": D,
    "depth": 2,
    "heads": 2,
    "masks": ["dt"],
    "mask_defs": {"dt": "causal() & causal(by='group', window=4)"},
}


def window(b: int = 2, s: int = 11, a: int = 3) -> dict:
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(b, K, dtype=torch.bool)
    mask[1, 2:] = False
    return {
        "trajectory": {
            "returns_to_go": torch.randn(b, K, 1, generator=g),
            "states": torch.randn(b, K, s, generator=g),
            "actions": torch.rand(b, K, a, generator=g) * 2 - 1,
            "timesteps": torch.arange(K).repeat(b, 1),
            "mask": mask,
        }
    }


def test_fit_through_the_cli_then_rollout_from_the_checkpoint(tmp_path, hopper_episodes, capsys, export_round_trip):
    data = write_d4rl(hopper_episodes, tmp_path / "hopper.hdf5")
    configs = ["--config", str(ROOT / "configs/dt_hopper.yaml"), "--config", str(ROOT / "configs/dt_hopper_tiny.yaml")]
    main(["fit", *configs, "--data.init_args.dataset", data, "--trainer.logger.init_args.save_dir", str(tmp_path),
          "--trainer.enable_progress_bar", "false"])  # fmt: skip
    run = tmp_path / "dt_hopper_tiny" / "version_0"
    for name in (
        "rollouts.csv",
        "rollouts_test.csv",
        "score_curve.png",
        "return_conditioning.png",
        "metrics.json",
        "checkpoints/last.ckpt",
    ):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert {"test/loss", "test/score", "test/score_50", "test/score_20"} <= set(metrics)

    ckpt = torch.load(run / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    mean, std = hopper_episodes.state_stats()
    torch.testing.assert_close(ckpt["state_dict"]["state_mean"], torch.as_tensor(mean, dtype=torch.float32))
    torch.testing.assert_close(ckpt["state_dict"]["state_std"], torch.as_tensor(std, dtype=torch.float32))
    facts = ckpt["omni_rl"]
    assert facts["env_id"] == "Hopper-v5" and facts["context"] == 5 and facts["reward_scale"] == 0.001
    assert facts["ref_max_score"] == 100.0 and facts["return_stats"]["max"] == pytest.approx(
        hopper_episodes.returns.max()
    )

    g = torch.Generator().manual_seed(1)
    window = {"trajectory": {"returns_to_go": torch.rand(3, 5, 1, generator=g),
                             "states": torch.randn(3, 5, 11, generator=g),
                             "actions": torch.rand(3, 5, 3, generator=g) * 2 - 1,
                             "timesteps": torch.arange(5).repeat(3, 1),
                             "mask": torch.ones(3, 5, dtype=torch.bool)}}  # fmt: skip
    exported = export_round_trip(run / "checkpoints/last.ckpt", lambda t: t(t.model_inputs(window))["actions"])
    assert exported.rl == facts  # the RL facts ride in config.yaml's extras
    torch.testing.assert_close(exported.state_mean, ckpt["state_dict"]["state_mean"])

    out = tmp_path / "rollout"
    capsys.readouterr()
    main(["rollout", "--ckpt_path", str(run / "checkpoints/last.ckpt"), "--target", "40", "--target", "80",
          "--episodes", "2", "--mode", "cache", "--out", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    assert "normalised score" in printed
    rows = (out / "rollouts.csv").read_text().splitlines()
    assert rows[0] == "mode,target,episode,return,length,normalized_score" and len(rows) == 1 + 4
    assert (out / "return_conditioning.png").stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["targets"]) == {"40", "80"} and summary["env_id"] == "Hopper-v5"
    with pytest.raises(ValueError, match="--target: expected a number"):
        main(["rollout", "--ckpt_path", str(run / "checkpoints/last.ckpt"), "--target", "high"])


def test_bc_fits_through_the_cli(tmp_path, hopper_episodes):
    data = write_d4rl(hopper_episodes, tmp_path / "hopper.hdf5")
    configs = ["--config", str(ROOT / "configs/bc_hopper.yaml"), "--config", str(ROOT / "configs/bc_hopper_tiny.yaml")]
    main(["fit", *configs, "--data.init_args.dataset", data, "--trainer.logger.init_args.save_dir", str(tmp_path),
          "--trainer.enable_progress_bar", "false", "--trainer.max_epochs", "1"])  # fmt: skip
    metrics = json.loads((tmp_path / "bc_hopper_tiny/version_0/metrics.json").read_text())["metrics"]
    assert {"test/loss", "test/score"} <= set(metrics) and not any(k.startswith("test/score_") for k in metrics)


def test_bc_layout_leaves_the_returns_out():
    torch.manual_seed(0)
    dt = DecisionTransformer(TRUNK, 11, 3, layout="dt", max_timestep=100)
    torch.manual_seed(0)
    bc = DecisionTransformer(TRUNK, 11, 3, layout="bc", max_timestep=100)
    batch = window()
    tokens, _ = bc.model.tokenize(bc.model_inputs(batch))
    assert tokens.num_tokens == 2 * K and tokens.modality[0].tolist() == [1, 2] * K  # (s, a) per step
    assert dt.model.tokenize(dt.model_inputs(batch))[0].num_tokens == 3 * K
    bc.eval()
    other = {"trajectory": {**batch["trajectory"], "returns_to_go": torch.randn(2, K, 1) * 100}}
    torch.testing.assert_close(bc(bc.model_inputs(batch))["actions"], bc(bc.model_inputs(other))["actions"])
    # the same trunk and budget: BC only lacks the return embedding (D + D weights)
    n_dt, n_bc = (sum(p.numel() for p in m.parameters()) for m in (dt, bc))
    assert n_dt - n_bc == 2 * D


def test_action_predicted_from_the_state_token_sees_no_later_token():
    torch.manual_seed(0)
    task = DecisionTransformer(TRUNK, 11, 3, max_timestep=100).eval()
    batch = window()
    base = task(batch)["actions"]
    changed = {k: v.clone() for k, v in batch["trajectory"].items()}
    changed["actions"][:, 2] += 1.0  # a_2 (and later steps) must not change a_0..a_2's predictions
    changed["states"][:, 3] += 1.0
    after = task({"trajectory": changed})["actions"]
    torch.testing.assert_close(after[:, :3], base[:, :3])
    assert not torch.allclose(after[:, 3], base[:, 3])


def test_image_observations_go_through_patch_tokens_in_the_trajectory_layout():
    torch.manual_seed(0)

    def patches(dim: int) -> ImagePatchTokenizer:
        return ImagePatchTokenizer(dim, patch_size=4, in_chans=3, img_size=8, pos_embed="sincos")

    task = DecisionTransformer(TRUNK, 3, 2, discrete=True, state_encoder=patches, max_timestep=100)
    b, p = 2, 4  # an 8x8 image in 4x4 patches: 4 state tokens per step
    images = torch.randn(b, K, 3, 8, 8)
    batch = {
        "trajectory": {
            "returns_to_go": torch.randn(b, K, 1),
            "states": images,
            "actions": torch.randint(0, 2, (b, K)),
            "timesteps": torch.arange(K).repeat(b, 1),
        }
    }
    tok = task.tokenizer
    tokens, _ = task.model.tokenize(task.model_inputs(batch))
    assert tok.tokens_per_step == 1 + p + 1 and tokens.num_tokens == K * (p + 2)
    assert tokens.modality[0].tolist() == ([0] + [1] * p + [2]) * K
    assert tok.state_positions(K).tolist() == [p + 6 * i for i in range(K)]
    # changing the image of step 2 changes exactly its patch tokens
    other = images.clone()
    other[:, 2] += 1.0
    x0 = tok(**batch["trajectory"]).x
    x1 = tok(**{**batch["trajectory"], "states": other}).x
    changed = (x0 - x1).abs().amax(-1)[0].gt(1e-6).nonzero().flatten().tolist()
    assert changed == list(range(2 * (p + 2) + 1, 2 * (p + 2) + 1 + p))
    out = task(batch)
    loss = task.loss(out, batch, "train")
    loss.backward()
    assert out["actions"].shape == (b, K, 2)
    assert task.tokenizer.embed_state.proj.weight.grad.abs().sum() > 0  # gradients reach the patch embedding


def test_bad_set_ups_raise_value_errors(hopper_episodes):
    with pytest.raises(ValueError, match="trunk.masks: expected causal masks"):
        DecisionTransformer({"dim": D, "depth": 1, "heads": 1}, 11, 3)
    with pytest.raises(ValueError, match="layout"):
        DecisionTransformer(TRUNK, 11, 3, layout="cql")
    task = DecisionTransformer(TRUNK, 11, 3, max_timestep=100)

    class Trainer:  # just enough of a trainer for setup
        datamodule = TrajectoryDataModule.from_episodes(hopper_episodes, context=K)

    Trainer.datamodule.setup("fit")
    task._trainer = Trainer()
    with pytest.raises(ValueError, match="model.max_timestep: expected >= 1000"):
        task.setup("fit")
    wrong = DecisionTransformer(TRUNK, 12, 3, max_timestep=1000)
    wrong._trainer = Trainer()
    with pytest.raises(ValueError, match="model.state_dim: expected the data module's state_dim=11, got 12"):
        wrong.setup("fit")


def test_select_by_score_tests_the_best_validation_rollout_on_other_episodes(tmp_path, hopper_episodes, monkeypatch):
    import csv

    import omni.tasks.rollouts as rollouts

    seeds: list[tuple[int, int]] = []  # (episodes, first seed) of every rollout

    def recording(task, targets, episodes, **kwargs):
        seeds.append((episodes, kwargs["seed"]))
        return real(task, targets, episodes, **kwargs)

    real = rollouts.rollout
    monkeypatch.setattr(rollouts, "rollout", recording)
    data = write_d4rl(hopper_episodes, tmp_path / "hopper.hdf5")
    configs = ["--config", str(ROOT / "configs/dt_hopper.yaml"), "--config", str(ROOT / "configs/dt_hopper_tiny.yaml")]
    callback = {
        "class_path": "omni.tasks.rollouts.RolloutCallback",
        "init_args": {"targets": [50], "episodes": 2, "test_episodes": 3, "every_n_epochs": 2, "seed": 7},
    }
    main(["fit", *configs, "--data.init_args.dataset", data, "--trainer.logger.init_args.save_dir", str(tmp_path),
          "--trainer.enable_progress_bar", "false", "--trainer.max_epochs", "4", "--model.init_args.select_by", "score",
          "--trainer.callbacks", json.dumps([callback]), "--test_checkpoint", "best"])  # fmt: skip
    run = tmp_path / "dt_hopper_tiny" / "version_0"
    # validations at epochs 1 and 3 (0-based) on seeds 7, 8; the test on 3 episodes from 100007
    assert seeds == [(2, 7), (2, 7), (3, 100_007)]
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    scores = {int(r["epoch"]): float(r["val/score"]) for r in rows if r.get("val/score")}
    assert sorted(scores) == [1, 3]
    best = torch.load(run / "checkpoints/best.ckpt", map_location="cpu", weights_only=True)
    assert best["epoch"] == max(scores, key=lambda e: (scores[e], -e))  # the first of equal scores stays
    assert json.loads((run / "metrics.json").read_text())["checkpoint"].endswith("best.ckpt")
    with pytest.raises(ValueError, match="select_by"):
        DecisionTransformer(TRUNK, state_dim=11, act_dim=3, select_by="return")
