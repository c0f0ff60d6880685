import torch

from omni.data.fusion_toy import NEAR_FAR_M, SyntheticFusionDataModule, make_scenes


def test_scenes_are_seeded_and_labels_follow_the_objects_radar_return():
    a, b = make_scenes(64, 32, 12, seed=3), make_scenes(64, 32, 12, seed=3)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(make_scenes(64, 32, 12, seed=4)["camera"], a["camera"])
    # the strongest return (RCS) is the object's: its range and azimuth give the label
    strongest = (a["radar"][..., 3] * a["radar_mask"] - 100 * ~a["radar_mask"]).argmax(-1)
    obj = a["radar"][torch.arange(64), strongest]
    far = obj[:, 0] * 50 > NEAR_FAR_M
    right = obj[:, 1] > 0
    agree = (far.long() * 2 + right.long()) == a["label"]
    assert agree.float().mean() > 0.9  # range noise may flip a few near the threshold
    assert a["radar_mask"].any(-1).all() and not a["radar_mask"].all()


def test_camera_blob_is_on_the_objects_side():
    s = make_scenes(128, 32, 8, seed=0)
    brightness = s["camera"].mean(1)  # (n, H, W)
    right_half = brightness[..., 16:].sum((-1, -2)) > brightness[..., :16].sum((-1, -2))
    assert (right_half == (s["label"] % 2 == 1)).float().mean() > 0.95


def test_batches_have_the_multimodal_layout():
    dm = SyntheticFusionDataModule(num_train=10, num_val=4, num_test=4, batch_size=5)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["inputs"]["camera"].shape == (5, 3, 32, 32)
    assert batch["inputs"]["radar"]["x"].shape == (5, 24, 4) and batch["inputs"]["radar"]["mask"].dtype == torch.bool
    assert batch["inputs"]["ego"]["x"].shape == (5, 2)
    assert batch["label"].dtype == torch.long
