"""The EMA callback: a checkpoint tested after fit (what `omni fit` does) gives the averaged weights."""

from pathlib import Path

import torch
from test_resume import _cli as resume_cli

from omni.averaging import EMA
from omni.cli import OmniCLI


def _cli(save_dir: Path) -> OmniCLI:
    """The digits tiny job of the resume tests, 2 epochs, no test after fit."""
    return resume_cli(save_dir, "--trainer.max_epochs", "2")


def test_testing_after_fit_reads_the_average_and_resuming_reads_both(tmp_path):
    cli = _cli(tmp_path)
    cli.trainer.callbacks.append(EMA(decay=0.9))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    last = next(tmp_path.rglob("last.ckpt"))
    ckpt = torch.load(last, weights_only=True)
    average, raw = ckpt["state_dict"], ckpt["current_model_state"]
    assert any(not torch.equal(average[k], raw[k]) for k in average)  # the average is not the last weights

    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=str(last), weights_only=True)
    got = cli.model.state_dict()
    for name, value in average.items():
        assert torch.equal(got[name], value), name

    # a resumed fit starts from the raw weights, with the average restored beside them
    again = _cli(tmp_path / "again")
    ema = EMA(decay=0.9)
    again.trainer.callbacks.append(ema)
    again.trainer.fit_loop.max_epochs = 2  # nothing left to train: restore only
    again.trainer.fit(again.model, datamodule=again.datamodule, ckpt_path=str(last))
    assert ema._average_model is not None
    restored = {k[len("module.") :]: v for k, v in ema._average_model.state_dict().items() if k.startswith("module.")}
    for name, value in average.items():
        assert torch.equal(restored[name], value), name
