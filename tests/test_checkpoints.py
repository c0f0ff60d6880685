"""omni loads checkpoints with weights_only=True: a checkpoint carrying a pickled payload is refused before the
payload runs, through the loader, the task loader and ``omni fit --ckpt_path``; broken files get one line naming
them."""

from __future__ import annotations

import pathlib

import pytest
import torch

from omni.checkpoints import load_checkpoint, load_task
from omni.cli import main
from omni.tasks.classification import Classifier


class Payload:
    """Unpickling this calls ``Path.touch(marker)``: what a malicious checkpoint would do with ``os.system``."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.fixture
def evil(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "extra": Payload(marker)}, path)
    return path, marker


def test_the_payload_is_real_without_weights_only(evil) -> None:
    """The control: unpickling the file the unsafe way runs the payload (so the tests below could fail)."""
    path, marker = evil
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_load_checkpoint_refuses_the_payload_without_running_it(evil) -> None:
    path, marker = evil
    with pytest.raises(ValueError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: expected a checkpoint of tensors and plain values")
    assert "refused without running it" in msg and "\n" not in msg
    assert not marker.exists()


def test_load_task_refuses_the_payload_without_running_it(evil) -> None:
    path, marker = evil
    with pytest.raises(ValueError, match="refused without running it"):
        load_task(Classifier, path)
    assert not marker.exists()


def test_fit_refuses_a_payload_checkpoint_before_training(evil) -> None:
    path, marker = evil
    args = ["fit", "--config", "configs/digits.yaml", "--config", "configs/digits_tiny.yaml", "--ckpt_path", str(path)]
    with pytest.raises(ValueError, match="refused without running it"):
        main(args)
    assert not marker.exists()


def test_missing_and_corrupt_files_are_named(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(ValueError, match="ckpt_path: expected a checkpoint file, got .*nope.ckpt.*does not exist"):
        load_checkpoint(missing)
    corrupt = tmp_path / "half.ckpt"
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1000)}}, good)
    corrupt.write_bytes(good.read_bytes()[:300])
    with pytest.raises(ValueError, match=f"{corrupt}: expected a PyTorch checkpoint, got an unreadable file"):
        load_checkpoint(corrupt)
    assert torch.equal(load_checkpoint(good)["state_dict"]["w"], torch.ones(1000))
