"""The `omni` command end to end on the tiny digits config, and every config in configs/ parses."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from omni.cli import OmniCLI, main
from omni.data import digits_splits

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def test_there_are_configs():
    assert {p.name for p in CONFIGS} >= {"digits.yaml", "digits_tiny.yaml"}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_config_parses_and_instantiates(config):
    cli = OmniCLI(
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        run=False,
        args=["--config", str(config)],
        save_config_callback=None,
    )
    assert isinstance(cli.model, torch.nn.Module)
    assert cli.datamodule is not None


def test_unknown_config_key_is_rejected(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(ROOT / "configs/digits_tiny.yaml"), "--model.init_args.trunk.dpeth", "3"])
    assert "dpeth" in capsys.readouterr().err


def test_fit_fills_the_run_directory_and_test_reproduces_its_metrics(tmp_path, capsys):
    main(
        [
            "fit",
            "--config",
            str(ROOT / "configs/digits_tiny.yaml"),
            "--trainer.logger.init_args.save_dir",
            str(tmp_path),
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    out = capsys.readouterr().out
    run = tmp_path / "digits_tiny" / "version_0"
    assert f"run directory: {run}" in out and "test metrics: test/acc=" in out
    for name in (
        "config.yaml",
        "metrics.csv",
        "metrics.json",
        "training_curves.png",
        "confusion_matrix.png",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
    ):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    acc = metrics["metrics"]["test/acc"]
    assert 0.0 <= acc <= 1.0 and metrics["checkpoint"].endswith("best.ckpt")
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["model"]["init_args"]["trunk"]["dim"] == 32  # the resolved config, defaults filled in
    assert resolved["model"]["init_args"]["trunk"]["norm"] == "layernorm"

    # `omni test` on the saved best checkpoint gives the same accuracy as the test after fit.
    main(
        [
            "test",
            "--config",
            str(run / "config.yaml"),
            "--ckpt_path",
            str(run / "checkpoints/best.ckpt"),
            "--trainer.logger.init_args.save_dir",
            str(tmp_path / "again"),
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    again = json.loads(next((tmp_path / "again").rglob("metrics.json")).read_text())
    assert again["metrics"]["test/acc"] == pytest.approx(acc, abs=1e-6)

    # `omni predict` writes predictions.pt; on the test images they score the test accuracy.
    main(
        [
            "predict",
            "--config",
            str(run / "config.yaml"),
            "--ckpt_path",
            str(run / "checkpoints/best.ckpt"),
            "--trainer.logger.init_args.save_dir",
            str(tmp_path / "pred"),
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    preds = torch.load(next((tmp_path / "pred").rglob("predictions.pt")))
    labels = torch.from_numpy(digits_splits()["test"][1])
    assert preds["probs"].shape == (len(labels), 10)
    assert (preds["pred"] == labels).float().mean().item() == pytest.approx(acc, abs=1e-6)


def test_fused_config_trains_with_a_mask_schedule(tmp_path, capsys):
    main([
        "fit", "--config", str(ROOT / "configs/fusion_toy_tiny.yaml"),
        "--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
    ])  # fmt: skip
    metrics = json.loads(next(tmp_path.rglob("metrics.json")).read_text())["metrics"]
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert "run directory:" in capsys.readouterr().out


def test_viz_masks_draws_each_distinct_layer_mask(tmp_path, capsys):
    out = tmp_path / "masks.png"
    main(["viz", "masks", "--config", str(ROOT / "configs/fusion_toy_tiny.yaml"), "--out", str(out)])
    assert "2 distinct masks" in capsys.readouterr().out  # [local, local, global]: two distinct
    import matplotlib.image

    img = matplotlib.image.imread(out)
    assert img.shape[1] > 1.5 * img.shape[0]  # two panels side by side
    with pytest.raises(SystemExit):
        main(["viz", "attention"])
