"""Training runs resume exactly (killed at an epoch's end, or SIGKILLed mid-epoch), and mixed precision runs on CPU:
through the same CLI objects `omni fit` builds, or the `omni fit` command itself."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from omni.cli import OmniCLI, main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--config", str(ROOT / "configs/digits.yaml"), "--config", str(ROOT / "configs/digits_tiny.yaml")]


class Killed(Exception):
    pass


class KillAtEpoch(L.Callback):
    """Dies when epoch ``n`` starts, as a pre-empted job would: what was checkpointed before is all that is left."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.n:
            raise Killed


def _cli(save_dir: Path, *extra: str) -> OmniCLI:
    return OmniCLI(
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        run=False,
        save_config_callback=None,
        args=[*TINY, "--trainer.logger.init_args.save_dir", str(save_dir), "--trainer.enable_progress_bar", "false",
              "--test_after_fit", "false", *extra],
    )  # fmt: skip


def test_resumed_run_ends_with_the_uninterrupted_runs_weights(tmp_path):
    # The tiny overlay keeps the recipe's shuffling and random affine augmentation.
    full = _cli(tmp_path / "full", "--trainer.max_epochs", "4")
    full.trainer.fit(full.model, datamodule=full.datamodule)

    first = _cli(tmp_path / "cut", "--trainer.max_epochs", "4")
    first.trainer.callbacks.append(KillAtEpoch(2))
    with pytest.raises(Killed):
        first.trainer.fit(first.model, datamodule=first.datamodule)
    last = next((tmp_path / "cut").rglob("last.ckpt"))
    assert torch.load(last, weights_only=True)["epoch"] == 1  # the checkpoint of the second epoch
    cut = first.model.state_dict()
    assert any(not torch.equal(cut[k], v) for k, v in full.model.state_dict().items())  # the runs did part

    resumed = _cli(tmp_path / "resumed", "--trainer.max_epochs", "4")
    resumed.trainer.fit(resumed.model, datamodule=resumed.datamodule, ckpt_path=str(last))
    want, got = full.model.state_dict(), resumed.model.state_dict()
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(want[name], got[name]), name
    lr = [s.get_last_lr() for s in (full.trainer.lr_scheduler_configs[0].scheduler,)]
    assert lr == [resumed.trainer.lr_scheduler_configs[0].scheduler.get_last_lr()]  # the schedule went on


def test_bf16_mixed_fit_runs_on_cpu(tmp_path):
    cli = _cli(tmp_path, "--trainer.precision", "bf16-mixed", "--trainer.max_epochs", "1")
    seen: list[torch.dtype] = []
    block = cli.model.model.trunk.blocks[0]
    block.mlp.fc1.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    before = {k: v.clone() for k, v in cli.model.state_dict().items()}
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert torch.bfloat16 in seen  # autocast ran the trunk's matmuls in bf16
    after = cli.model.state_dict()
    assert all(v.dtype == before[k].dtype for k, v in after.items())  # weights stay fp32
    assert any(not torch.equal(before[k], v) for k, v in after.items())  # and they trained
    assert all(bool(torch.isfinite(v).all()) for v in after.values() if v.is_floating_point())


# ---------------------------------------------------------------------------------------------------- killed runs
def killed_then_resumed(tmp_path: Path, args: list[str], step: int) -> tuple[dict, dict, int]:
    """``omni fit`` with step checkpoints, SIGKILLed in a subprocess once step ``step``'s checkpoint is written, then
    resumed from its ``last.ckpt``; and the same fit uninterrupted. Returns (uninterrupted, resumed) final weights and
    the killed checkpoint's epoch-relative batch."""
    args = [*args, "--checkpoint_every_n_steps", "1", "--trainer.enable_progress_bar", "false", "--test_after_fit",
            "false"]  # fmt: skip
    marker = tmp_path / "stalled"
    stall = json.dumps({"class_path": "killable.Stall", "init_args": {"step": step, "marker": str(marker)}})
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "omni.cli", "fit", *args, "--trainer.logger.init_args.save_dir", str(tmp_path / "cut"),
           f"--trainer.callbacks+={stall}"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:] if proc.stderr else ""
            assert time.monotonic() < deadline, "the run never reached the step"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)  # no handler runs: what is on disk is all that is left
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    (last,) = (tmp_path / "cut").rglob("last.ckpt")
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == step

    with pytest.MonkeyPatch.context() as mp:  # LightningCLI warns when sys.argv holds pytest's arguments
        mp.setattr(sys, "argv", ["omni"])
        main(["fit", *args, "--trainer.logger.init_args.save_dir", str(tmp_path / "resumed"), "--ckpt_path", str(last)])
        main(["fit", *args, "--trainer.logger.init_args.save_dir", str(tmp_path / "full")])
    weights = [
        torch.load(next((tmp_path / run).rglob("last.ckpt")), weights_only=True)["state_dict"]
        for run in ("full", "resumed")
    ]
    (position,) = [v for k, v in ckpt.items() if k.endswith("DataModule")]  # the data module's state_dict
    return weights[0], weights[1], position["batches"]


def assert_equal_weights(want: dict, got: dict) -> None:
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(want[name], got[name]), name


def test_a_run_sigkilled_mid_epoch_resumes_to_the_uninterrupted_runs_weights(tmp_path):
    # digits_tiny: 4 batches an epoch, 2 epochs, shuffling and random affine augmentation on; killed 2 batches into
    # the second epoch
    want, got, batch = killed_then_resumed(tmp_path, TINY, step=6)
    assert batch == 2  # mid-epoch
    assert_equal_weights(want, got)


def test_a_decision_transformer_sigkilled_mid_epoch_resumes_to_the_uninterrupted_runs_weights(tmp_path):
    sys.path.insert(0, str(ROOT / "tests/rl"))
    from rl_episodes import random_episodes, write_d4rl

    data = write_d4rl(random_episodes("CartPole-v1", 12), tmp_path / "cartpole.hdf5")
    # 3 windows' batches an epoch, 2 epochs, dropout 0.1 on; killed after the first batch of the second epoch
    args = ["--config", str(ROOT / "configs/dt_cartpole.yaml"), "--config", str(ROOT / "configs/dt_cartpole_tiny.yaml"),
            "--data.init_args.dataset", data]  # fmt: skip
    want, got, batch = killed_then_resumed(tmp_path, args, step=4)
    assert batch == 1
    assert_equal_weights(want, got)
