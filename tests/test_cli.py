"""The `omni` command end to end on the tiny digits overlay, and every config in configs/ parses with its overlay."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from omni.cli import OmniCLI, main
from omni.data import digits_splits

ROOT = Path(__file__).resolve().parents[1]
OVERLAYS = sorted((ROOT / "configs").glob("*_tiny.yaml"))
CONFIGS = sorted(set((ROOT / "configs").glob("*.yaml")) - set(OVERLAYS))


def tiny(name: str) -> list[str]:
    """``--config`` arguments of a job and its tiny overlay."""
    return ["--config", str(ROOT / f"configs/{name}.yaml"), "--config", str(ROOT / f"configs/{name}_tiny.yaml")]


def test_every_config_has_a_tiny_overlay_that_only_overrides():
    assert {p.name for p in CONFIGS} >= {"digits.yaml", "fusion_toy.yaml"}
    for config in CONFIGS:
        overlay = config.with_name(f"{config.stem}_tiny.yaml")
        assert overlay in OVERLAYS, f"{config.name} has no tiny overlay"
        small = yaml.safe_load(overlay.read_text())
        assert "class_path" not in small.get("model", {}) and "class_path" not in small.get("data", {}), overlay.name


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_config_parses_and_instantiates_alone_and_with_its_overlay(config):
    for args in (["--config", str(config)], tiny(config.stem)):
        cli = OmniCLI(
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,
            run=False,
            args=args,
            save_config_callback=None,
        )
        assert isinstance(cli.model, torch.nn.Module)
        assert cli.datamodule is not None


def test_unknown_config_key_is_rejected(capsys):
    with pytest.raises(SystemExit):
        main(["fit", *tiny("digits"), "--model.init_args.trunk.dpeth", "3"])
    assert "dpeth" in capsys.readouterr().err


def test_a_plain_fit_prints_no_warning_that_omni_causes(tmp_path):
    # The console command as a user runs it: no `args` warning from LightningCLI, no checkpoint callback
    # overridden by configure_callbacks, and nothing raised from omni's own files.
    cmd = [sys.executable, "-W", "always", "-m", "omni.cli", "fit", *tiny("digits"), "--trainer.max_epochs", "1",
           "--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.enable_progress_bar", "false"]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    log = run.stdout + run.stderr
    assert "test metrics: test/acc=" in log
    for bad in ("args parameter", "configure_callbacks", "will override", f"{ROOT / 'omni'}"):
        assert bad not in log, f"{bad!r} in:\n{log[-3000:]}"


def test_fit_fills_the_run_directory_and_test_reproduces_its_metrics(tmp_path, capsys, export_round_trip):
    main(
        [
            "fit",
            *tiny("digits"),
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
    assert metrics["checkpoint"].endswith("last.ckpt")  # configs/digits.yaml: test_checkpoint: last
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["model"]["init_args"]["trunk"]["dim"] == 32  # the resolved config, defaults filled in
    assert resolved["model"]["init_args"]["trunk"]["norm"] == "layernorm"
    images = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    export_round_trip(run / "checkpoints/last.ckpt", lambda t: t(t.model_inputs({"image": images}))["logits"])

    # `omni test` on the saved last checkpoint gives the same accuracy as the test after fit.
    main(
        [
            "test",
            "--config",
            str(run / "config.yaml"),
            "--ckpt_path",
            str(run / "checkpoints/last.ckpt"),
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
            str(run / "checkpoints/last.ckpt"),
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
        "fit", *tiny("fusion_toy"), "--test_checkpoint", "last",
        "--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
    ])  # fmt: skip
    metrics = json.loads(next(tmp_path.rglob("metrics.json")).read_text())
    assert metrics["checkpoint"].endswith("last.ckpt") and Path(metrics["checkpoint"]).is_file()
    assert {"test/acc", "test/loss"} <= set(metrics["metrics"])
    assert "run directory:" in capsys.readouterr().out


def test_viz_masks_draws_each_distinct_layer_mask(tmp_path, capsys):
    out = tmp_path / "masks.png"
    main(["viz", "masks", *tiny("fusion_toy"), "--out", str(out)])
    assert "2 distinct masks" in capsys.readouterr().out  # [local, local, global]: two distinct
    import matplotlib.image

    img = matplotlib.image.imread(out)
    assert img.shape[1] > 1.5 * img.shape[0]  # two panels side by side
    with pytest.raises(SystemExit):
        main(["viz", "attention"])


CLASSIFIER = "model (omni.tasks.classification.Classifier): "


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--model.init_args.trunk.dpeth", "3"], CLASSIFIER + "unrecognized arguments: --trunk.dpeth=3"),
        (["--config", "{yaml}"], CLASSIFIER + "Group 'trunk' does not accept option 'dpeth'"),
        (["--model.class_path", "omni.tasks.nope.Task"], "model (omni.tasks.nope.Task): module 'omni.tasks' has no"),
        (["--config", "configs/nope.yaml"], "config: File does not exist:"),
        (["--data.init_args.batch_size", "abc"], "data (omni.data.DigitsDataModule): Expected a <class 'int'>"),
    ],
)
def test_a_bad_key_or_value_is_one_line_naming_it(args, expected, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["omni"])  # the program name in the message
    typo = tmp_path / "typo.yaml"
    typo.write_text("model:\n  init_args:\n    trunk:\n      dpeth: 3\n")
    args = [str(typo) if a == "{yaml}" else a for a in args]
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", "configs/digits.yaml", *args])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"omni fit: error: {expected}"), err
    assert err[0].endswith("(every key: omni fit --help)")


def test_the_console_prints_omnis_errors_in_one_line(tmp_path):
    """From the console a ValueError of omni's is one line and exit status 2, not a traceback."""
    missing = tmp_path / "nope.ckpt"
    cmd = [sys.executable, "-m", "omni.cli", "fit", "--config", str(ROOT / "configs/digits.yaml"),
           "--ckpt_path", str(missing)]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"omni fit: error: ckpt_path: expected a checkpoint file, got '{missing}', which does not exist"
    ]
