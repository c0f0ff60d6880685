"""The fusion data module: splits by shard, batches with padding masks, condition filter, DDP sharding, and clear
errors for bad shards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omni.data.fusion import FusionDataModule, ShardSampler, load_shard, radar_features
from omni.data.fusion_scene import CONDITIONS, IMAGE_HW, MAX_OBJECTS, MAX_RADAR_POINTS
from omni.data.fusion_sim import FusionCorpusSpec, build_fusion_corpus, shard_path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("fusion")
    build_fusion_corpus(out, FusionCorpusSpec(scenes=20, seed=0, shard_size=5), workers=1, progress=False)
    return out


def test_batches_splits_and_masks(corpus) -> None:
    dm = FusionDataModule(str(corpus), batch_size=4)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (10, 5, 5)
    batch = next(iter(dm.train_dataloader()))
    cam, radar = batch["inputs"]["camera"], batch["inputs"]["radar"]
    assert cam.shape == (4, 3, *IMAGE_HW) and -0.5 <= cam.min() and cam.max() <= 0.5
    assert radar["x"].shape == (4, MAX_RADAR_POINTS, 6) and radar["mask"].dtype == torch.bool
    t = batch["targets"]
    assert t["box"].shape == (4, MAX_OBJECTS, 5)
    assert (t["mask"] == (t["class"] >= 0)).all()
    assert not radar["x"][~radar["mask"]].any()  # padded points are zero
    test_index = {int(i) for b in dm.test_dataloader() for i in b["index"]}
    assert test_index == set(range(15, 20))  # the last shard


def test_radar_features_put_metres_first() -> None:
    f = radar_features(np.array([[10.0, np.pi / 2, -3.0, 5.0]]))
    np.testing.assert_allclose(f[0], [0.0, 10.0, 0.2, np.pi / 2, -0.3, 0.5], atol=1e-12)


def test_condition_filter(corpus) -> None:
    dm = FusionDataModule(str(corpus), batch_size=4, conditions=["fog"])
    dm.setup("fit")
    conds = [int(c) for b in dm.train_dataloader() for c in b["condition"]]
    assert conds and set(conds) == {CONDITIONS.index("fog")}
    with pytest.raises(ValueError, match="conditions"):
        FusionDataModule(str(corpus), conditions=["snow"])


def test_shard_sampler_deals_one_processs_order_over_the_ranks_in_equal_disjoint_shares() -> None:
    groups = [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10]]
    one = list(ShardSampler(groups, shuffle=True, seed=1))
    per_rank = [list(ShardSampler(groups, shuffle=True, seed=1, rank=r, world_size=2)) for r in range(2)]
    assert len(per_rank[0]) == len(per_rank[1]) == 5  # 11 scenes: the last one of the order is cut
    assert [i for pair in zip(*per_rank, strict=True) for i in pair] == one[:10]  # rank r: positions r, r + 2, ...
    shard_of = [next(k for k, g in enumerate(groups) if i in g) for i in one]  # scenes of one shard come together
    assert shard_of == sorted(shard_of, key=shard_of.index)
    s = ShardSampler(groups, shuffle=True, seed=1)
    first = list(s)
    s.set_epoch(1)
    assert sorted(list(s)) == sorted(first) == list(range(11)) and list(s) != first
    assert list(ShardSampler(groups, shuffle=False)) == list(range(11))


def test_bad_shards_name_the_file_and_field(corpus, tmp_path) -> None:
    good = load_shard(shard_path(corpus, 0))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(shard_path(corpus, 0).read_bytes()[:1000])
    with pytest.raises(ValueError, match="truncated.npz"):
        load_shard(truncated)
    nan = dict(good)
    nan["radar"] = good["radar"].copy()
    nan["radar"][1, 0, 2] = np.nan
    np.savez(tmp_path / "nan.npz", **nan)
    with pytest.raises(ValueError, match=r"nan.npz: field 'radar' holds NaN"):
        load_shard(tmp_path / "nan.npz")
    small = dict(good)
    small["camera"] = good["camera"][:, :32]
    np.savez(tmp_path / "small.npz", **small)
    with pytest.raises(ValueError, match=r"small.npz: field 'camera' expected shape"):
        load_shard(tmp_path / "small.npz")
    with pytest.raises(ValueError, match="meta.json"):
        FusionDataModule(str(tmp_path)).setup("fit")


def test_train_fraction_cuts_each_training_shard_the_same_way_every_time_and_leaves_val_and_test(corpus) -> None:
    full, cut = (
        FusionDataModule(str(corpus), batch_size=2),
        FusionDataModule(str(corpus), batch_size=2, train_fraction=0.4),
    )
    full.setup("fit"), cut.setup("fit")
    assert [len(g) for g in cut.groups["train"]] == [2, 2]  # 40 % of each 5-scene training shard
    assert set(cut.train_set.rows) < set(full.train_set.rows)
    again = FusionDataModule(str(corpus), train_fraction=0.4)
    again.setup("fit")
    assert again.train_set.rows == cut.train_set.rows
    served = {int(i) for b in cut.train_dataloader() for i in b["index"]}
    assert len(served) == 4 and served < set(range(10))
    assert cut.val_set.rows == full.val_set.rows and cut.test_set.rows == full.test_set.rows
    with pytest.raises(ValueError, match="train_fraction"):
        FusionDataModule(str(corpus), train_fraction=0.0)


def test_lightning_keeps_the_shard_sampler_under_ddp_whatever_use_distributed_sampler_says(corpus) -> None:
    from lightning import Trainer
    from lightning.pytorch.trainer.states import RunningStage

    for use in (True, False):
        trainer = Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, use_distributed_sampler=use)
        dm = FusionDataModule(str(corpus), batch_size=2)
        dm.trainer = trainer
        dm.setup("fit")
        for loader, mode in (
            (dm.train_dataloader(), RunningStage.TRAINING),
            (dm.val_dataloader(), RunningStage.VALIDATING),
        ):
            assert (loader.sampler.rank, loader.sampler.world) == (0, 2)  # the module dealt the scenes itself
            kept = trainer._data_connector._prepare_dataloader(loader, shuffle=mode == RunningStage.TRAINING, mode=mode)
            assert kept.sampler is loader.sampler  # not sharded a second time
            assert len(kept.sampler) == len(loader.dataset) // 2
