"""Seq2Seq: the reverse toy trains from its YAML to 100 % exact match; the loss ignores padding; bad configs fail
with the field named."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from omni.checkpoints import load_task
from omni.cli import main
from omni.data.toy_sequences import PAD, ToySequenceDataModule
from omni.search import Hypotheses
from omni.tasks.seq2seq import Seq2Seq
from omni.tokenizers import SensorTokenizer, TextTokenizer

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs/seq2seq_reverse.yaml")
V = 9


def task(**overrides) -> Seq2Seq:
    torch.manual_seed(0)
    args = {
        "trunk": {"dim": 32, "depth": 1, "heads": 4},
        "tokenizers": {"source": partial(TextTokenizer, vocab_size=V, max_len=16)},
        "decoder_trunk": {"dim": 32, "depth": 2, "heads": 4, "cross_attention": True, "masks": ["causal"]},
        "decoder_tokenizer": partial(TextTokenizer, vocab_size=V, max_len=16),
        "max_decode_len": 8,
    }
    return Seq2Seq(**{**args, **overrides}).eval()


def toy_batch() -> dict:
    dm = ToySequenceDataModule(num_symbols=V - 3, min_len=1, max_len=6, num_train=8, batch_size=8, seed=3)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["source"]["mask"].sum(1).unique().numel() > 2  # lengths differ: padding matters
    return batch


def test_the_batch_loss_is_the_mean_of_each_examples_own_loss():
    model, batch = task(), toy_batch()
    with torch.no_grad():
        loss = model.loss(model(model.model_inputs(batch)), batch, "val")
        each = []
        for i in range(len(batch["source"]["ids"])):  # every example alone, its padding cut off
            one = {
                key: {k: v[i : i + 1, : int(part["mask"][i].sum())] for k, v in part.items()}
                for key, part in batch.items()
            }
            each.append(model.loss(model(model.model_inputs(one)), one, "val"))
    torch.testing.assert_close(loss, torch.stack(each).mean(), atol=1e-5, rtol=1e-5)


def test_exact_match_counts_whole_sequences_only(monkeypatch):
    model = task()
    target = torch.tensor([[1, 5, 6, 2, 0], [1, 7, 2, 0, 0]]).repeat(3, 1)  # BOS 5 6 EOS / BOS 7 EOS, padded
    batch = {"source": {"ids": torch.full((6, 2), 3)}, "target": {"ids": target, "mask": target != 0}}
    decoded = [
        [5, 6, 2],  # right
        [7, 2],  # right
        [5, 7, 2],  # a wrong id
        [2],  # EOS too early
        [5, 6, 3, 3, 2],  # too long, past the reference's width
        [7, 3, 3, 3, 3, 3],  # no EOS by max_decode_len
    ]
    ids = torch.tensor([row + [0] * (6 - len(row)) for row in decoded])
    lengths = torch.tensor([3, 2, 3, 1, 5, 6])
    monkeypatch.setattr(model, "decode", lambda enc: Hypotheses(ids=ids, lengths=lengths, scores=torch.zeros(6)))
    model.update_metrics({"logits": torch.zeros(6, 4, V)}, batch, "val")
    assert model.stage_metrics("val")["exact_match"].compute() == pytest.approx(2 / 6)


def test_predict_decodes_fixed_width_ids():
    model, batch = task(beams=2), toy_batch()
    with torch.no_grad():
        out = model.predict_step(batch, 0)
    assert out["ids"].shape == (8, 8) and out["lengths"].shape == (8,) and out["scores"].shape == (8,)
    with torch.no_grad():  # without targets too
        out = model.predict_step({"source": batch["source"]}, 0)
    assert out["ids"].shape == (8, 8)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (
            {"decoder_trunk": {"dim": 32, "depth": 1, "heads": 4, "masks": ["causal"]}},
            "decoder_trunk.cross_attention: expected true",
        ),
        (
            {"decoder_trunk": {"dim": 32, "depth": 2, "heads": 4, "cross_attention": True, "masks": ["causal", "all"],
                               "mask_defs": {"all": "full"}}},
            "decoder_trunk.masks: expected causal masks .* got 'all' at layer 1",
        ),
        (
            {"decoder_trunk": {"dim": 16, "depth": 1, "heads": 4, "cross_attention": True, "masks": ["causal"]}},
            "decoder_trunk.dim: expected 32 like trunk.dim, got 16",
        ),
        ({"decoder_tokenizer": partial(SensorTokenizer, in_features=2)}, "decoder_tokenizer: expected a TextTokenizer"),
        ({"tokenizers": {"target": partial(TextTokenizer, vocab_size=V)}}, "tokenizers: expected no encoder tokenizer"),
        ({"max_decode_len": 16}, r"max_decode_len: expected in \[1, decoder_tokenizer.max_len=16\), got 16"),
        ({"eos_id": V}, r"eos_id: expected an id in \[0, vocab_size=9\)"),
        ({"beams": 0}, "beams, length_penalty: expected >= 1 and >= 0, got 0, 1.0"),
    ],
)  # fmt: skip
def test_bad_config_names_the_field(overrides, match):
    with pytest.raises(ValueError, match=match):
        task(**overrides)


def test_a_decoder_without_cross_attention_in_the_yaml_fails_clearly():
    with pytest.raises(ValueError, match="decoder_trunk.cross_attention: expected true"):
        main(["fit", "--config", CONFIG, "--model.init_args.decoder_trunk.cross_attention", "false"])


def test_the_reverse_yaml_trains_to_every_test_sequence_exactly_and_predicts_them(tmp_path, capsys, export_round_trip):
    main([
        "fit", "--config", CONFIG,
        "--trainer.logger.init_args.save_dir", str(tmp_path / "fit"), "--trainer.enable_progress_bar", "false",
    ])  # fmt: skip
    run = next((tmp_path / "fit").rglob("metrics.json")).parent
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert metrics["test/exact_match"] == 1.0 and metrics["test/token_acc"] == 1.0
    assert "run directory:" in capsys.readouterr().out

    # `omni predict` decodes the test split from the checkpoint: every source comes back reversed, then EOS.
    main([
        "predict", "--config", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints/last.ckpt"),
        "--trainer.logger.init_args.save_dir", str(tmp_path / "pred"), "--trainer.enable_progress_bar", "false",
    ])  # fmt: skip
    preds = torch.load(next((tmp_path / "pred").rglob("predictions.pt")))
    data = ToySequenceDataModule(**yaml.safe_load((run / "config.yaml").read_text())["data"]["init_args"])
    data.setup("test")
    targets = torch.stack([data.test_set[i]["target"]["ids"] for i in range(len(data.test_set))])
    lengths = (targets != PAD).sum(1) - 1  # after BOS, EOS included
    assert torch.equal(preds["lengths"], lengths)
    width = preds["ids"].shape[1]
    assert torch.equal(preds["ids"], nn.functional.pad(targets[:, 1:], (0, width - targets.shape[1] + 1)))

    # `omni export` -> `omni.load`: the same teacher-forced logits and the same decoded ids, without a pickle
    batch = next(iter(data.test_dataloader()))
    exported = export_round_trip(run / "checkpoints/last.ckpt", lambda t: t(t.model_inputs(batch))["logits"])
    original = load_task(type(exported), run / "checkpoints/last.ckpt").eval()
    with torch.no_grad():
        want, got = original.decode(original.encoder_inputs(batch)), exported.decode(exported.encoder_inputs(batch))
    assert torch.equal(got.ids, want.ids) and torch.equal(got.lengths, want.lengths)
