"""InitWeights: matching weights copied, the rest kept new, a resumed run keeps its own checkpoint."""

from __future__ import annotations

import lightning.pytorch as L
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel
from safetensors.torch import save_file
from torch import nn

from omni.init_weights import InitWeights, copy_matching


class Donor(nn.Module):
    def __init__(self, out: int) -> None:
        super().__init__()
        self.body = nn.Linear(4, 8)
        self.head = nn.Linear(8, out)


class Taker(Donor):
    def __init__(self, out: int) -> None:
        super().__init__(out)
        self.gate = nn.Parameter(torch.zeros(()))  # not in the donor: stays as initialised


def test_copy_matching_copies_by_name_and_shape():
    torch.manual_seed(0)
    donor, taker = Donor(out=3), Taker(out=5)
    before = {k: v.clone() for k, v in taker.state_dict().items()}
    copied, skipped, missing = copy_matching(taker, donor.state_dict())
    assert sorted(copied) == ["body.bias", "body.weight"]
    assert torch.equal(taker.body.weight, donor.body.weight) and torch.equal(taker.body.bias, donor.body.bias)
    assert torch.equal(taker.head.weight, before["head.weight"])  # another shape: kept
    assert [s.split()[0] for s in skipped] == ["head.weight", "head.bias"]
    assert missing == ["gate"]


def _trainer(tmp_path, **kw) -> L.Trainer:
    return L.Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, accelerator="cpu", **kw)  # fmt: skip


@pytest.mark.parametrize("fmt", ["ckpt", "safetensors"])
def test_fit_starts_from_the_file(tmp_path, fmt):
    torch.manual_seed(1)
    donor = BoringModel()
    if fmt == "ckpt":
        trainer = _trainer(tmp_path, max_steps=2, enable_checkpointing=False)
        trainer.fit(donor)
        path = tmp_path / "donor.ckpt"
        trainer.save_checkpoint(path)
    else:
        path = tmp_path / "donor.safetensors"
        save_file(donor.state_dict(), str(path))
    torch.manual_seed(2)
    taker = BoringModel()
    assert not torch.equal(taker.layer.weight, donor.layer.weight)
    cb = InitWeights(str(path), strict=True)
    seen = {}

    class Spy(L.Callback):  # the weights when training starts
        def on_train_start(self, trainer, pl_module):
            seen["w"] = pl_module.layer.weight.detach().clone()

    _trainer(tmp_path, max_steps=1, callbacks=[cb, Spy()], enable_checkpointing=False).fit(taker)
    assert torch.equal(seen["w"], donor.layer.weight.detach())
    assert sorted(cb.copied) == ["layer.bias", "layer.weight"] and cb.missing == []


def test_resume_keeps_its_own_checkpoint(tmp_path):
    torch.manual_seed(3)
    run = BoringModel()
    trainer = _trainer(tmp_path, max_steps=2, enable_checkpointing=False)
    trainer.fit(run)
    resume = tmp_path / "run.ckpt"
    trainer.save_checkpoint(resume)
    other = tmp_path / "other.safetensors"
    save_file(BoringModel().state_dict(), str(other))
    seen = {}

    class Spy(L.Callback):  # the weights when the resumed run trains on
        def on_train_start(self, trainer, pl_module):
            seen["w"] = pl_module.layer.weight.detach().clone()

    callbacks = [InitWeights(str(other)), Spy()]
    _trainer(tmp_path, max_steps=3, callbacks=callbacks, enable_checkpointing=False).fit(
        BoringModel(), ckpt_path=resume
    )
    assert torch.equal(seen["w"], run.layer.weight.detach())


def test_bad_files_are_named(tmp_path):
    with pytest.raises(ValueError, match="nothing.ckpt.*found no file"):
        InitWeights(str(tmp_path / "nothing.ckpt")).setup(None, BoringModel(), "fit")
    unrelated = tmp_path / "unrelated.safetensors"
    save_file({"encoder.w": torch.zeros(3)}, str(unrelated))
    with pytest.raises(ValueError, match="unrelated.safetensors.*none matched"):
        InitWeights(str(unrelated)).setup(None, BoringModel(), "fit")
    partial = tmp_path / "partial.safetensors"
    save_file({"layer.weight": torch.zeros(2, 32)}, str(partial))
    with pytest.raises(ValueError, match=r"strict.*1 missing \['layer.bias'\]"):
        InitWeights(str(partial), strict=True).setup(None, BoringModel(), "fit")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a tensor file")
    with pytest.raises(ValueError, match="broken.safetensors: expected a safetensors file"):
        InitWeights(str(broken)).setup(None, BoringModel(), "fit")
    plain = tmp_path / "plain.ckpt"
    torch.save([torch.zeros(2)], plain)
    with pytest.raises(ValueError, match="plain.ckpt: expected a Lightning checkpoint with a state_dict, got a list"):
        InitWeights(str(plain)).setup(None, BoringModel(), "fit")
