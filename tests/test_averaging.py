"""The EMA callback: a checkpoint tested after fit (what `omni fit` does) gives the averaged weights."""

from pathlib import Path

import lightning as L
import pytest
import torch
from test_resume import _cli as resume_cli

from omni.averaging import EMA, UniformAverage
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


class _RecordWeights(L.Callback):
    """The module's weights after every optimizer step, by global step (1 = after the first)."""

    def __init__(self) -> None:
        self.after: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.after[trainer.global_step] = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


def test_uniform_average_is_the_mean_of_the_weights_it_took(tmp_path):
    cli = _cli(tmp_path)
    record = _RecordWeights()
    cli.trainer.callbacks[:0] = [record]  # before the average: it sees the same step's weights
    start, every = 3, 2
    cli.trainer.callbacks.append(UniformAverage(start_step=start, every_n_steps=every))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    steps = sorted(record.after)
    taken = [s for s in steps if s - 1 >= start and (s - 1 - start) % every == 0]  # zero-based step index s - 1
    assert len(taken) >= 3 and taken[0] == start + 1
    last = next(tmp_path.rglob("last.ckpt"))
    average = torch.load(last, weights_only=True)["state_dict"]
    for name, value in average.items():
        if value.is_floating_point():
            mean = torch.stack([record.after[s][name] for s in taken]).mean(dim=0)
            torch.testing.assert_close(value, mean, rtol=1e-5, atol=1e-6, msg=name)
    moved = [k for k, v in average.items() if v.is_floating_point() and not torch.equal(v, record.after[steps[-1]][k])]
    assert moved  # the mean is not the last weights


def test_uniform_average_before_its_start_is_the_current_weights(tmp_path):
    cli = _cli(tmp_path)
    record = _RecordWeights()
    cli.trainer.callbacks[:0] = [record]
    cli.trainer.callbacks.append(UniformAverage(start_step=10_000))  # never starts within this run
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    average = torch.load(next(tmp_path.rglob("last.ckpt")), weights_only=True)["state_dict"]
    final = record.after[max(record.after)]
    for name, value in average.items():
        assert torch.equal(value, final[name]), name


@pytest.mark.parametrize("kwargs", [{"start_step": -1}, {"every_n_steps": 0}, {"start_step": 1.5}])
def test_uniform_average_refuses_bad_settings(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        UniformAverage(**kwargs)


class _RecordValidationWeights(L.Callback):
    """The weights validation sees (placed after the average, which swaps itself in first), by global step."""

    def __init__(self) -> None:
        self.seen: dict[int, dict[str, torch.Tensor]] = {}

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.seen[trainer.global_step] = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


def test_uniform_average_before_its_start_validates_the_current_weights(tmp_path):
    cli = _cli(tmp_path)
    record, seen = _RecordWeights(), _RecordValidationWeights()
    cli.trainer.callbacks[:0] = [record]
    cli.trainer.callbacks += [UniformAverage(start_step=10_000), seen]  # copied where read, not after every step
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert len(seen.seen) == 2  # one validation per epoch
    for step, weights in seen.seen.items():
        for name, value in weights.items():
            assert torch.equal(value, record.after[step][name]), (step, name)
