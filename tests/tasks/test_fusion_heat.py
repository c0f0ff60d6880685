"""The camera heat map's detections (``camera_fallback``): peaks picked as CenterNet picks them, the class-aware
heat-map loss, and the fused detector answering from the heat map exactly when its radar is missing."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fusion import detector, one_object_scene

from omni.data.fusion import FusionDataModule
from omni.data.fusion_sim import FusionCorpusSpec, build_fusion_corpus
from omni.tasks.fusion import encode_boxes, ground_point_patches
from omni.tasks.fusion_heat import SUPPRESSED, heat_boxes, heat_peaks


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> dict:
    """A batch of 6 simulated scenes."""
    out = tmp_path_factory.mktemp("fusion_heat_corpus")
    build_fusion_corpus(out, FusionCorpusSpec(scenes=24, seed=1, shard_size=8), workers=1, progress=False)
    dm = FusionDataModule(str(out), batch_size=6)
    dm.setup("fit")
    return next(iter(dm.val_dataloader()))


def test_heat_peaks_picks_local_maxima_strongest_first_and_suppresses_the_rest() -> None:
    # a 3 x 4 grid, 2 classes: peaks at (0, 0) (class 1, 2.0) and (2, 3) (class 0, 3.0); (0, 1) is 1.5, next to
    # the first peak, so not a peak; everything else -5
    logits = torch.full((1, 12, 2), -5.0)
    logits[0, 0, 1], logits[0, 1, 0], logits[0, 11, 0] = 2.0, 1.5, 3.0
    reg = torch.arange(12 * 6, dtype=torch.float32).reshape(1, 12, 6)
    picked, boxes = heat_peaks(logits, reg, (3, 4), k=4)
    torch.testing.assert_close(picked[0, 0], logits[0, 11])
    torch.testing.assert_close(picked[0, 1], logits[0, 0])
    torch.testing.assert_close(boxes[0, :2, :4], reg[0, [11, 0], :4])
    torch.testing.assert_close(boxes[..., 4:].norm(dim=-1), torch.ones(1, 4))  # a unit (sin, cos)
    # then patches of the flat -5 background (a plateau is its own maximum, as in CenterNet), never the 1.5
    # neighbour of the first peak
    assert bool((picked[0, 2:] == -5.0).all())
    # a single patch far above its neighbours: the one peak; the other picks are suppressed
    one = torch.arange(12.0).neg().reshape(1, 12, 1).expand(1, 12, 2).clone()  # falls away from patch 0
    picked, _ = heat_peaks(one, reg, (3, 4), k=3)
    torch.testing.assert_close(picked[0, 0], one[0, 0])
    assert bool((picked[0, 1:] == SUPPRESSED).all())


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 4), st.integers(1, 5), st.integers(1, 20))
def test_heat_peaks_are_the_local_maxima_of_the_class_max_map(seed: int, h: int, w: int, k: int) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, h * w, 3, generator=g)
    picked, _ = heat_peaks(logits, torch.randn(2, h * w, 6, generator=g), (h, w), k)
    score = logits.amax(-1).reshape(2, h, w)
    for b in range(2):
        peaks = sorted(
            (float(score[b, i, j]) for i in range(h) for j in range(w)
             if score[b, i, j] >= score[b, max(0, i - 1): i + 2, max(0, j - 1): j + 2].max()),
            reverse=True,
        )  # fmt: skip
        real = picked[b].amax(-1)
        kept = real[real > SUPPRESSED]
        assert len(kept) == min(k, h * w, len(peaks))
        torch.testing.assert_close(kept, torch.tensor(peaks[: len(kept)]))


def test_heat_peaks_refuses_a_grid_that_does_not_tile_the_patches() -> None:
    with pytest.raises(ValueError, match="grid: expected h \\* w = N = 12"):
        heat_peaks(torch.zeros(1, 12, 3), torch.zeros(1, 12, 6), (3, 5), k=2)


def test_class_heat_map_loss_is_small_for_the_right_map_and_large_for_the_wrong_class() -> None:
    weights = [1.0, 1.0, 0.5, 0.5, 0.5, 0.5]
    model = detector(camera_dense=1.0, camera_fallback=True, class_loss="focal", box_weights=weights)  # 4 x 8 grid
    c = model.num_classes
    targets, _ = one_object_scene()  # one object of class 1 in scene 0
    patch = int(ground_point_patches(targets["box"], targets["mask"], 16)[0, 0])
    dense = torch.zeros(2, 32, c + 6)
    dense[..., :c] = -12.0
    dense[..., c + 5] = 1.0  # cos yaw 1 where nothing is
    dense[0, patch, 1] = 12.0
    dense[0, patch, c:] = encode_boxes(targets["box"][0, 0])
    seen = torch.tensor([True, True])
    assert float(model.dense_loss(dense, seen, targets)) < 1e-5
    wrong = dense.clone()
    wrong[0, patch, 1], wrong[0, patch, 2] = -12.0, 12.0  # the right place, the wrong class
    assert float(model.dense_loss(wrong, seen, targets)) > 1.0
    moved = dense.clone()
    moved[0, patch, c + 2] += 1.0  # vx off by 5 m/s
    assert float(model.dense_loss(moved, seen, targets)) == pytest.approx(0.5, abs=1e-4)  # |1| x vx's weight
    assert float(model.dense_loss(wrong, torch.tensor([False, True]), targets)) < 1e-5  # no camera, no loss


def test_the_fused_model_answers_from_the_heat_map_only_without_its_radar(scenes) -> None:
    model = detector(camera_dense=1.0, camera_fallback=True, class_loss="focal").eval()
    inputs = {k: v for k, v in scenes["inputs"].items()}
    with torch.no_grad():
        both = model(inputs, sensors="both")
        alone = model({k: v for k, v in inputs.items() if k != "radar"}, sensors="camera")
        masked = model(inputs, sensors="camera")  # the radar masked out rather than left out: the same answer
    c = model.num_classes
    assert "query_logits" not in both and both["logits"].shape == (6, model.num_queries, c)
    expected = heat_peaks(alone["dense"][..., :c], alone["dense"][..., c:], (4, 8), model.num_queries)
    torch.testing.assert_close(alone["logits"], expected[0])
    torch.testing.assert_close(alone["boxes"], expected[1])
    torch.testing.assert_close(masked["logits"], alone["logits"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(heat_boxes(alone["boxes"]), alone["boxes"])


def test_camera_fallback_trains_the_class_heat_map(scenes) -> None:
    model = detector(camera_dense=1.0, camera_fallback=True, class_loss="focal", modality_dropout=0.3).train()
    out = model(model.model_inputs(scenes))
    assert out["dense"].shape == (6, 32, model.num_classes + 6) and "query_logits" not in out  # training: queries
    losses = model.loss(out, scenes, "train")
    losses["loss"].backward()
    assert torch.isfinite(losses["dense"]) and model.dense_head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs", [{"camera_dense": 0.0, "class_loss": "focal"}, {"camera_dense": 1.0}])
def test_camera_fallback_needs_the_heat_map_and_focal_classes(kwargs) -> None:
    with pytest.raises(ValueError, match="camera_fallback: needs camera_dense > 0 and class_loss: focal"):
        detector(camera_fallback=True, **kwargs)
