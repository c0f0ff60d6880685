"""Training runs resume exactly, and mixed precision runs on CPU: through the same CLI objects `omni fit` builds."""

from pathlib import Path

import lightning as L
import pytest
import torch

from omni.cli import OmniCLI

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
    # The tiny overlay keeps the recipe's shuffling and random affine augmentation: both draw from the RNG.
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
