"""The camera + radar detector: its set loss, sensor masking equal to leaving a sensor out, and every fusion config
end to end through ``omni fit`` on a tiny simulated corpus."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from omni.cli import main
from omni.data.fusion import FusionDataModule
from omni.data.fusion_scene import project_to_image
from omni.data.fusion_sim import FusionCorpusSpec, build_fusion_corpus
from omni.tasks.fusion import (
    FusionDetector,
    decode_boxes,
    encode_boxes,
    focal_class_cost,
    ground_point_patches,
    hungarian_match,
    query_positions,
    reference_pixels,
    sample_image,
    sigmoid_focal_loss,
)
from omni.tokenizers import ImagePatchTokenizer, SensorTokenizer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fusion_corpus")
    build_fusion_corpus(out, FusionCorpusSpec(scenes=24, seed=0, shard_size=8), workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def batch(corpus) -> dict:
    dm = FusionDataModule(str(corpus), batch_size=6)
    dm.setup("fit")
    return next(iter(dm.val_dataloader()))


NEAR = "| (query_modality('queries') & near(radius={'radar': [6.0, 6.0], 'camera': [99.0, 1.5]}, shift={'camera': 2}))"


def detector(local_extra: str = "", global_mask: str = "full", exits: dict | None = None, **kwargs) -> FusionDetector:
    torch.manual_seed(0)
    tokenizers = {
        "camera": lambda d: ImagePatchTokenizer(d, patch_size=16, img_size=(64, 128), pos_embed="sincos"),
        "radar": lambda d: SensorTokenizer(d, in_features=6, name="radar"),
        "ego": lambda d: SensorTokenizer(d, in_features=2, mode="vector", name="ego"),
    }
    trunk = {
        "dim": 16, "depth": 2, "heads": 2, "masks": ["local", "global"],
        "mask_defs": {"local": "local(radius={'camera': 1, 'radar': [5.0, 5.0]}) | global_tokens(modalities=['ego'])"
                               + local_extra, "global": global_mask}, "exits": exits or {},
    }  # fmt: skip
    return FusionDetector(trunk=trunk, tokenizers=tokenizers, **{"num_queries": 4, **kwargs})


def test_box_encoding_round_trips() -> None:
    box = torch.tensor([[12.0, -3.0, 4.0, 0.5, 2.5], [40.0, 7.0, -1.0, 0.0, -3.0]])
    torch.testing.assert_close(decode_boxes(encode_boxes(box)), box)


def test_hungarian_match_is_the_cheapest_assignment() -> None:
    g = torch.Generator().manual_seed(0)
    logits, reg = torch.randn(2, 5, 4, generator=g), torch.randn(2, 5, 6, generator=g)
    classes, targets = torch.tensor([[0, -1, 2, 1], [-1] * 4]), torch.randn(2, 4, 6, generator=g)
    mask = classes >= 0
    (q, t), (q_empty, _) = hungarian_match(logits, reg, classes, targets, mask, 1.0, 5.0)
    real = [0, 2, 3]  # slot 1 is padding
    cost = -logits[0].softmax(-1)[:, classes[0, real]] + 5 * torch.cdist(reg[0], targets[0, real], p=1)
    best = min(sum(cost[p[j], j] for j in range(3)) for p in itertools.permutations(range(5), 3))
    assert sorted(t.tolist()) == real
    got = sum(float(cost[qi, real.index(ti)]) for qi, ti in zip(q.tolist(), t.tolist(), strict=True))
    assert got == pytest.approx(float(best))
    assert len(q_empty) == 0


def test_focal_matching_is_the_cheapest_assignment_under_the_focal_cost() -> None:
    g = torch.Generator().manual_seed(1)
    logits, reg = torch.randn(1, 5, 3, generator=g), torch.randn(1, 5, 6, generator=g)
    classes, targets = torch.tensor([[2, 0, -1, 1]]), torch.randn(1, 4, 6, generator=g)
    ((q, t),) = hungarian_match(logits, reg, classes, targets, classes >= 0, 2.0, 5.0, class_loss="focal")
    real = [0, 1, 3]
    p = logits[0].sigmoid()[:, classes[0, real]]  # (Q, 3) probability of each object's class
    focal = 0.25 * (1 - p) ** 2 * -p.log() - 0.75 * p**2 * -(1 - p).log()  # worked out from Deformable DETR's cost
    cost = 2 * focal + 5 * torch.cdist(reg[0], targets[0, real], p=1)
    best = min(sum(cost[perm[j], j] for j in range(3)) for perm in itertools.permutations(range(5), 3))
    got = sum(float(cost[qi, real.index(ti)]) for qi, ti in zip(q.tolist(), t.tolist(), strict=True))
    assert sorted(t.tolist()) == real and got == pytest.approx(float(best), rel=1e-5)
    torch.testing.assert_close(focal_class_cost(logits[0])[:, classes[0, real]], focal, rtol=1e-4, atol=1e-6)


def test_sigmoid_focal_loss_matches_hand_values() -> None:
    """p = 0.5 on a positive: 0.25 · 0.5² · ln 2; p = 0.5 on a negative: 0.75 · 0.5² · ln 2; a confident right
    answer costs ~0."""
    logits, target = torch.tensor([[0.0, 0.0, 12.0, -12.0]]), torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    expected = (0.25 + 0.75) * 0.25 * math.log(2.0)
    assert float(sigmoid_focal_loss(logits, target)) == pytest.approx(expected, rel=1e-5)


def test_focal_set_loss_is_small_for_perfect_predictions_and_query_prior_moves_queries() -> None:
    model = detector(class_loss="focal", query_prior=True)
    assert model.class_head.out_features == 3  # no "no object" logit: all classes low
    targets, boxes = one_object_scene()
    logits = torch.full((2, 4, 3), -12.0)
    logits[0, 2, 1] = 12.0
    ce, l1 = model.set_loss(logits, boxes, targets)
    assert float(l1) == pytest.approx(0.0, abs=1e-6) and float(ce) < 1e-6
    wrong = logits.clone()
    wrong[0, 2, 1], wrong[1, 0, 0] = -12.0, 12.0  # the object missed, a false positive in the empty scene
    assert float(model.set_loss(wrong, boxes, targets)[0]) > 1.0
    # the prior is each query's own: queries with the same learned embedding still differ by their reference
    with torch.no_grad():
        model.model.extra_tokens["queries"].zero_()
    inputs = {"ego": {"x": torch.zeros(1, 2)}, "radar": {"x": torch.zeros(1, 3, 6), "mask": torch.zeros(1, 3).bool()}}
    out = model.eval()(inputs, sensors="radar")
    assert not torch.allclose(out["logits"][0, 0], out["logits"][0, 1])


def test_local_queries_read_only_the_radar_points_near_their_reference_in_local_layers() -> None:
    """With ``local_queries`` and a ``near`` term, moving a radar point far from every query's reference changes
    nothing after a local layer; moving it next to a reference does. (One layer: in a second one the queries would
    read the global ego token, which read the point.)"""
    torch.manual_seed(0)
    tokenizers = {
        "radar": lambda d: SensorTokenizer(d, in_features=6, name="radar"),
        "ego": lambda d: SensorTokenizer(d, in_features=2, mode="vector", name="ego"),
    }
    local = "global_tokens(modalities=['ego']) | (query_modality('queries') & near(radius={'radar': [3.0, 3.0]}))"
    trunk = {"dim": 16, "depth": 1, "heads": 2, "masks": ["local"], "mask_defs": {"local": local}}
    model = FusionDetector(trunk=trunk, tokenizers=tokenizers, num_queries=4, local_queries=True).eval()
    ref = model.reference.detach() * 10.0  # (Q, 2) metres

    def run(xy: list[float]) -> torch.Tensor:
        x = torch.zeros(1, 1, 6)
        x[0, 0, :2] = torch.tensor(xy)
        inputs = {"radar": {"x": x, "mask": torch.ones(1, 1, dtype=torch.bool)}, "ego": {"x": torch.zeros(1, 2)}}
        with torch.no_grad():
            return model(inputs, sensors="radar")["boxes"]

    far_a, far_b = run([-40.0, 80.0]), run([-45.0, -80.0])  # behind the ego: near no reference
    torch.testing.assert_close(far_a, far_b)
    near = run([float(ref[0, 0]) + 1.0, float(ref[0, 1])])
    assert not torch.allclose(near[0, 0], far_a[0, 0])  # query 0 reads the point ...
    assert (near[0, 1:] - far_a[0, 1:]).abs().max() < (near[0, 0] - far_a[0, 0]).abs().max()


def test_query_positions_are_metres_then_the_patch_where_the_ground_point_appears() -> None:
    ref = torch.tensor([[1.0, 0.0], [2.5, -0.8]])  # box units: (10 m, 0 m), (25 m, -8 m)
    pos = query_positions(ref, patch_size=8)
    torch.testing.assert_close(pos[:, :2], ref * 10)
    u, v = project_to_image(np.array([10.0, 25.0]), np.array([0.0, -8.0]))
    torch.testing.assert_close(pos[:, 2:], torch.tensor(np.stack([v, u], -1) / 8 - 0.5, dtype=torch.float32))
    assert abs(float(pos[0, 3]) - 7.5) < 1e-5  # straight ahead: between patch columns 7 and 8 of 16


def test_reference_pixels_are_the_simulators_projection_at_each_height() -> None:
    ref = torch.tensor([[1.0, 0.0], [2.5, -0.8], [0.6, 0.3]])  # box units
    pix = reference_pixels(ref, heights=(0.0, 0.75, 1.5))
    assert pix.shape == (3, 3, 2)
    for k, z in enumerate((0.0, 0.75, 1.5)):
        u, v = project_to_image(np.array([10.0, 25.0, 6.0]), np.array([0.0, -8.0, 3.0]), z)
        torch.testing.assert_close(pix[:, k], torch.tensor(np.stack([u, v], -1), dtype=torch.float32))


def test_sample_image_reads_a_patch_at_its_centre_blends_between_and_zeros_outside() -> None:
    features = torch.randn(2, 5, 8, 16)  # an 8 x 8 px patch grid over the 64 x 128 image
    pixels = torch.tensor([[[8 * 3 + 4.0, 8 * 2 + 4.0], [8 * 3 + 8.0, 8 * 2 + 4.0]], [[-30.0, 10.0], [64.0, 90.0]]])
    out = sample_image(features, pixels)  # (B, Q = 2, S = 2 samples x 5)
    assert out.shape == (2, 2, 10)
    torch.testing.assert_close(out[:, 0, :5], features[:, :, 2, 3])  # patch (row 2, col 3) at its centre
    torch.testing.assert_close(out[:, 0, 5:], (features[:, :, 2, 3] + features[:, :, 2, 4]) / 2)  # halfway
    assert (out[:, 1] == 0).all()  # left of and below the image


def test_camera_features_taken_from_the_tokens_equal_the_tokenizers_feature_map(batch) -> None:
    model = detector(camera_sampling=True).eval()
    images = batch["inputs"]["camera"]
    tokens, spans = model.model.tokenize(model.model_inputs(batch))
    got = model._camera_features(tokens.x[:, spans["camera"]], images.shape[-2:])
    torch.testing.assert_close(got, model.model.tokenizers["camera"].feature_map(images), atol=1e-5, rtol=1e-5)


def test_ground_point_patches_index_the_patch_of_each_centre_on_the_road() -> None:
    box = torch.zeros(1, 4, 5)
    box[0, :, :2] = torch.tensor([[10.0, 0.0], [25.0, -8.0], [-5.0, 0.0], [10.0, 0.0]])
    mask = torch.tensor([[True, True, True, False]])  # the last slot is padding
    got = ground_point_patches(box, mask, patch_size=8)
    u, v = project_to_image(np.array([10.0, 25.0]), np.array([0.0, -8.0]))
    expected = [int(v[i] // 8) * 16 + int(u[i] // 8) for i in range(2)]
    assert got.tolist() == [[*expected, -1, -1]]  # behind the camera: -1


def test_dense_loss_is_small_for_the_right_heat_map_and_ignores_a_dropped_camera() -> None:
    model = detector(camera_dense=1.0)  # 16 px patches: a 4 x 8 grid
    targets, _ = one_object_scene()
    patch = int(ground_point_patches(targets["box"], targets["mask"], 16)[0, 0])
    dense = torch.zeros(2, 32, 3)
    dense[..., 0] = -12.0
    dense[0, patch] = torch.cat([torch.tensor([12.0]), encode_boxes(targets["box"][0, 0])[:2]])
    seen = torch.tensor([True, True])
    assert float(model.dense_loss(dense, seen, targets)) < 1e-5
    missed = dense.clone()
    missed[0, patch, 0] = -12.0
    assert float(model.dense_loss(missed, seen, targets)) > 1.0
    assert float(model.dense_loss(missed, torch.tensor([False, True]), targets)) < 1e-5  # no camera, no loss


def one_object_scene() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Targets of two scenes (one object in the first, none in the second) and 4 query boxes per scene, query 2 of
    scene 0 exactly on the object."""
    targets = {
        "class": torch.tensor([[1, -1], [-1, -1]]),
        "box": torch.tensor([[[10.0, 2.0, 1.0, 0.0, 0.3], [0.0] * 5], [[0.0] * 5] * 2]),
        "mask": torch.tensor([[True, False], [False, False]]),
    }
    boxes = torch.zeros(2, 4, 6)
    boxes[0, 2] = encode_boxes(targets["box"][0, 0])
    return targets, boxes


def test_set_loss_is_zero_l1_for_perfect_boxes_and_handles_empty_scenes() -> None:
    model = detector()
    targets, boxes = one_object_scene()
    logits = torch.full((2, 4, 4), -10.0)
    logits[..., 3] = 10.0  # "no object" everywhere ...
    logits[0, 2, 1], logits[0, 2, 3] = 10.0, -10.0  # ... but query 2 of scene 0 is the object
    ce, l1 = model.set_loss(logits, boxes, targets)
    assert float(l1) == pytest.approx(0.0, abs=1e-6) and float(ce) < 1e-3


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"class_loss": "focal", "query_prior": True, "local_queries": True, "local_extra": NEAR, "num_queries": 9},
        {"camera_sampling": True, "camera_dense": 1.0},
    ],
)
def test_masking_a_sensor_equals_leaving_it_out(batch, kwargs) -> None:
    """Modality dropout masks tokens out rather than removing them: the queries' outputs must be those of a
    forward without that sensor's tokens at all."""
    model = detector(**kwargs).eval()
    inputs = model.model_inputs(batch)
    with torch.no_grad():
        masked = model(inputs, sensors="camera")
        absent = model({k: v for k, v in inputs.items() if k != "radar"}, sensors="camera")
        torch.testing.assert_close(masked["boxes"], absent["boxes"])
        torch.testing.assert_close(masked["logits"], absent["logits"])
        masked = model(inputs, sensors="radar")
        absent = model({k: v for k, v in inputs.items() if k != "camera"}, sensors="radar")
        torch.testing.assert_close(masked["boxes"], absent["boxes"])
        both = model(inputs, sensors="both")
        assert not torch.allclose(both["boxes"], masked["boxes"])


def test_modality_dropout_draws_per_sample_never_both() -> None:
    model = detector(modality_dropout=0.3).train()
    drop = model._dropped(10_000, torch.device("cpu"), None)
    assert not (drop["camera"] & drop["radar"]).any()
    assert drop["camera"].float().mean() == pytest.approx(0.3, abs=0.02)
    assert drop["radar"].float().mean() == pytest.approx(0.3, abs=0.02)
    with pytest.raises(ValueError, match="eval_sensors"):
        detector(eval_sensors=["lidar"])


def test_modality_dropout_per_sensor() -> None:
    """``{camera: p, radar: p'}`` drops each sensor at its own rate (never both); a number means the same for each,
    and draws exactly as the per-sensor form with that number twice."""
    model = detector(modality_dropout={"camera": 0.3, "radar": 0.1}).train()
    drop = model._dropped(10_000, torch.device("cpu"), None)
    assert not (drop["camera"] & drop["radar"]).any()
    assert drop["camera"].float().mean() == pytest.approx(0.3, abs=0.02)
    assert drop["radar"].float().mean() == pytest.approx(0.1, abs=0.02)
    assert not detector(modality_dropout={"camera": 0.2})._dropped(1000, torch.device("cpu"), None)["radar"].any()
    same, apart = detector(modality_dropout=0.2), detector(modality_dropout={"camera": 0.2, "radar": 0.2})
    torch.manual_seed(1)
    a = same._dropped(100, torch.device("cpu"), None)
    torch.manual_seed(1)
    b = apart._dropped(100, torch.device("cpu"), None)
    assert all(torch.equal(a[k], b[k]) for k in ("camera", "radar"))
    for bad in ({"camera": 0.7, "radar": 0.4}, {"lidar": 0.1}, {"camera": -0.1}, {"camera": "0.1"}):
        with pytest.raises(ValueError, match="modality_dropout: expected {camera: p, radar: p}"):
            detector(modality_dropout=bad)


@pytest.mark.parametrize("camera", [{}, {"camera_sampling": True, "camera_dense": 1.0}])
def test_training_step_with_aux_losses_backpropagates(batch, camera) -> None:
    model = detector(aux_loss=True, modality_dropout=0.2, **camera).train()
    out = model(model.model_inputs(batch))
    assert len(out["aux"]) == 1 and out["logits"].shape == (6, 4, 4) and out["boxes"].shape == (6, 4, 6)
    losses = model.loss(out, batch, "train")
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"]) and model.class_head.weight.grad is not None
    if camera:
        assert out["dense"].shape == (6, 4 * 8, 3) and torch.isfinite(losses["dense"])
        assert model.camera_sampling.weight.grad.abs().sum() > 0 and model.dense_head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["fusion", "fusion_camera", "fusion_radar"])
def test_config_fits_end_to_end(name, corpus, batch, tmp_path, export_round_trip) -> None:
    args = ["fit", "--config", str(ROOT / f"configs/{name}.yaml"), "--config", str(ROOT / f"configs/{name}_tiny.yaml"),
            "--data.init_args.root", str(corpus), "--trainer.logger.init_args.save_dir", str(tmp_path),
            "--trainer.enable_progress_bar", "false"]  # fmt: skip
    main(args)
    run = tmp_path / f"{name}_tiny" / "version_0"
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    sensors = {"fusion": ["both", "camera", "radar"], "fusion_camera": ["camera"], "fusion_radar": ["radar"]}[name]
    for s in sensors:
        for m in ("mAP", "mATE", "mAVE", "mAOE", "NDS"):
            assert np.isfinite(metrics[f"test/{s}/{m}"]), (s, m)
    assert any(k.startswith(f"test/{sensors[0]}/") and k.count("/") == 3 for k in metrics)  # per condition
    ckpt = run / "checkpoints" / "last.ckpt"
    assert ckpt.exists()
    export_round_trip(ckpt, lambda t: torch.cat([x.flatten() for x in t.detections(t(t.model_inputs(batch)))]))
    if name == "fusion":  # the picture of a scene with the trained weights
        out = tmp_path / "scene.png"  # from the run directory's own config.yaml (it holds fit's ckpt_path too)
        assert "ckpt_path" in (run / "config.yaml").read_text()
        main(["viz", "scene", "--config", str(run / "config.yaml"), "--root", str(corpus), "--ckpt_path", str(ckpt),
              "--out", str(out), "--min_score", "0"])  # fmt: skip
        import matplotlib.image

        img = matplotlib.image.imread(out)
        assert img.shape[1] > 2 * img.shape[0]  # camera and bird's-eye view side by side
        with pytest.raises(
            ValueError, match=r"--sample: expected a scene of the first test batch, in \[0, \d+\), got 999"
        ):
            main(["viz", "scene", "--config", str(ROOT / "configs/fusion.yaml"), "--config",
                  str(ROOT / "configs/fusion_tiny.yaml"), "--root", str(corpus), "--sample", "999"])  # fmt: skip


def test_camera_options_need_a_camera_tokenizer() -> None:
    radar_only = {"radar": lambda d: SensorTokenizer(d, in_features=6, name="radar")}
    trunk = {"dim": 16, "depth": 1, "heads": 2}
    with pytest.raises(ValueError, match="camera_sampling: needs a camera tokenizer"):
        FusionDetector(trunk=trunk, tokenizers=radar_only, camera_sampling=True)
    with pytest.raises(ValueError, match="camera_dense: needs a camera tokenizer"):
        FusionDetector(trunk=trunk, tokenizers=radar_only, camera_dense=1.0)
    with pytest.raises(ValueError, match="camera_dense: expected a weight >= 0, got -1.0"):
        detector(camera_dense=-1.0)


def test_camera_resample_starts_as_the_model_without_it_and_reads_the_camera_at_the_current_centre(batch) -> None:
    """``camera_resample``'s gate starts at zero: the same weights give the same outputs as without it. Once it is
    open, the queries read the camera (outputs change), a masked camera still equals an absent one, and each
    query reads its own point per sample."""
    plain = detector(camera_sampling=True, local_queries=True, query_prior=True).eval()
    model = detector(camera_sampling=True, local_queries=True, query_prior=True, camera_resample=[1]).eval()
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == [
        "camera_gate", "camera_resample.0.bias", "camera_resample.0.weight", "camera_resample.1.bias",
        "camera_resample.1.weight",
    ] and not unexpected  # fmt: skip
    inputs = model.model_inputs(batch)
    with torch.no_grad():
        torch.testing.assert_close(model(inputs, sensors="both")["boxes"], plain(inputs, sensors="both")["boxes"])
        model.camera_gate.fill_(0.5)
        both = model(inputs, sensors="both")
        assert not torch.allclose(both["boxes"], plain(inputs, sensors="both")["boxes"])
        masked = model(inputs, sensors="radar")
        absent = model({k: v for k, v in inputs.items() if k != "camera"}, sensors="radar")
        torch.testing.assert_close(masked["boxes"], absent["boxes"])
        torch.testing.assert_close(masked["logits"], absent["logits"])
    seen = []
    hook = model.camera_resample.register_forward_hook(lambda _m, i, _o: seen.append(i[0]))
    with torch.no_grad():
        model(inputs, sensors="both")
    hook.remove()
    assert seen[0].shape == (6, 4, 3 * 16)  # (B, Q, S · D): one read per query, its own point per sample


def test_camera_resample_learns_and_checks_its_layers(batch) -> None:
    model = detector(camera_resample=[1], aux_loss=True, modality_dropout=0.2).train()
    out = model(model.model_inputs(batch))
    model.loss(out, batch, "train")["loss"].backward()
    assert model.camera_gate.grad.abs() > 0  # a closed gate, but a gradient
    with pytest.raises(ValueError, match=r"camera_resample: expected layer indices in \[1, 1\], got \[0\]"):
        detector(camera_resample=[0])
    radar_only = {"radar": lambda d: SensorTokenizer(d, in_features=6, name="radar")}
    trunk = {"dim": 16, "depth": 2, "heads": 2}
    with pytest.raises(ValueError, match="camera_resample: needs a camera tokenizer"):
        FusionDetector(trunk=trunk, tokenizers=radar_only, camera_resample=[1])


def test_camera_alone_gate_scales_the_reads_of_samples_without_radar_only(batch) -> None:
    """With the fused gate closed, only the samples whose radar is masked out read the camera (their own gate); a
    model without the second gate reads nothing in either."""
    model = detector(local_queries=True, query_prior=True, camera_resample=[1], camera_alone_gate=True).eval()
    plain = detector(local_queries=True, query_prior=True, camera_resample=[1]).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k != "camera_alone_gate"})
    inputs = model.model_inputs(batch)
    with torch.no_grad():
        torch.testing.assert_close(model(inputs, sensors="both")["boxes"], plain(inputs, sensors="both")["boxes"])
        assert not torch.allclose(model(inputs, sensors="camera")["boxes"], plain(inputs, sensors="camera")["boxes"])
        model.camera_alone_gate.fill_(0.0)
        torch.testing.assert_close(model(inputs, sensors="camera")["boxes"], plain(inputs, sensors="camera")["boxes"])
    with pytest.raises(ValueError, match="camera_alone_gate: gates camera_resample's reads"):
        detector(camera_alone_gate=True)


def test_camera_exit_leaves_the_queries_outputs_as_hiding_the_camera_by_mask(batch) -> None:
    """``trunk.exits: {camera: 1}`` on a detector whose global layer hides the camera from the other tokens: the
    queries' outputs (boxes, logits) equal the model without exits; only the camera tokens' own outputs change."""
    hide = "~key_modality('camera') | query_modality('camera')"
    kwargs = dict(local_queries=True, query_prior=True, camera_resample=[1], camera_dense=1.0)
    masked = detector(global_mask=hide, **kwargs).eval()
    late = detector(global_mask=hide, exits={"camera": 1}, **kwargs).eval()
    late.load_state_dict(masked.state_dict())
    inputs = masked.model_inputs(batch)
    with torch.no_grad():
        late.camera_gate.fill_(0.5), masked.camera_gate.fill_(0.5)  # the queries read the camera before layer 1
        got, want = late(inputs), masked(inputs)
    torch.testing.assert_close(got["boxes"], want["boxes"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got["logits"], want["logits"], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got["dense"], want["dense"])  # the camera tokens skipped the global layer


class _Snapshots(L.Callback):
    """The camera tokenizer's and the radar tokenizer's weights after every training step."""

    def __init__(self) -> None:
        self.camera: list[torch.Tensor] = []
        self.radar: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        flat = {k: torch.cat([p.detach().flatten().clone() for p in t.parameters()])
                for k, t in module.model.tokenizers.items()}  # fmt: skip
        self.camera.append(flat["camera"])
        self.radar.append(flat["radar"])


@pytest.mark.parametrize("warmup", [2, 0.5])
def test_radar_warmup_trains_the_radar_alone_for_its_steps_then_every_sensor(corpus, warmup) -> None:
    """``radar_warmup``: the first steps (a count, or a fraction of the trainer's steps) leave the camera out, so its
    tokenizer does not move while the radar's does; from then on the camera trains too."""
    model = detector(radar_warmup=warmup, camera_resample=[1], modality_dropout={"camera": 0.2, "radar": 0.05})
    seen: list[set[str]] = []
    original = model.forward
    model.forward = lambda inputs, sensors=None: (seen.append(set(inputs)), original(inputs, sensors))[1]
    snaps = _Snapshots()
    trainer = L.Trainer(max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, callbacks=[snaps],
                        accelerator="cpu")  # fmt: skip
    before = torch.cat([p.detach().flatten().clone() for p in model.model.tokenizers["camera"].parameters()])
    trainer.fit(model, FusionDataModule(str(corpus), batch_size=4, val_shards=1, test_shards=1))
    assert model.radar_warmup_steps() == 2
    assert seen == [{"radar", "ego"}] * 2 + [{"camera", "radar", "ego"}] * 2
    assert torch.equal(snaps.camera[0], before) and torch.equal(snaps.camera[1], before)  # untouched while warming
    assert not torch.equal(snaps.camera[2], before)  # then trained
    assert not torch.equal(snaps.radar[0], snaps.radar[1])  # the radar trains from the first step


def test_radar_warmup_checks_its_value_and_needs_both_sensors() -> None:
    for bad in (-1, True, "0.5"):
        with pytest.raises(ValueError, match="radar_warmup: expected a fraction of the steps"):
            detector(radar_warmup=bad)
    radar_only = {"radar": lambda d: SensorTokenizer(d, in_features=6, name="radar")}
    with pytest.raises(ValueError, match="radar_warmup: needs both a camera and a radar tokenizer"):
        FusionDetector(trunk={"dim": 16, "depth": 1, "heads": 2}, tokenizers=radar_only, radar_warmup=0.5)
    assert detector(radar_warmup=0.5).radar_warmup_steps() == 0  # no trainer, no steps to take a fraction of
