"""The joint task: one trunk for several tasks. Packed mixed-task rows against each sample alone, what is shared and
what is not, the one-task-a-step schedule, and whole runs through ``omni fit`` on fixtures the tests build."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from omni.cli import main as omni_main
from omni.data.fusion_sim import FusionCorpusSpec, build_fusion_corpus
from omni.data.joint import JointDataModule, TaskSchedule
from omni.data.speech import collate_speech
from omni.data.speech_corpus import CorpusSpec, build_corpus
from omni.tasks.joint import JointTask
from omni.tokens import pack

ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "digits": ["configs/digits.yaml", "configs/digits_tiny.yaml"],
    "speech": ["configs/speech_digits.yaml", "configs/speech_digits_tiny.yaml"],
    "hopper": ["configs/dt_hopper.yaml", "configs/dt_hopper_tiny.yaml"],
    "fusion": ["configs/fusion.yaml", "configs/fusion_tiny.yaml"],
}
TRUNK = {"dim": 32, "depth": 2, "heads": 2}


def refs(names: tuple[str, ...] = ("digits", "speech", "hopper"), **args: dict) -> dict[str, dict]:
    return {n: {"config": [str(ROOT / f) for f in TINY[n]], "args": args.get(n, {})} for n in names}


@pytest.fixture(scope="module")
def joint() -> JointTask:
    torch.manual_seed(0)
    return JointTask(refs(), TRUNK, batching="packed", pack_len=64).eval()


def model_inputs(joint: JointTask, seed: int) -> dict[str, dict]:
    """A batch of each packable task, with padding inside (utterances and episodes of several lengths)."""
    g = torch.Generator().manual_seed(seed)
    items = [{"audio": 0.1 * torch.randn(n, generator=g), "ids": torch.tensor([1, 5, 6, 7, 2][: 3 + i % 3]),
              "text": "x", "key": str(i)} for i, n in enumerate([8000, 3000, 12000, 4000])]  # fmt: skip
    steps = 5
    mask = torch.ones(3, steps, dtype=torch.bool)
    mask[1, :2] = False  # an episode's first window: left-padded
    trajectory = {
        "returns_to_go": torch.rand(3, steps, 1, generator=g),
        "states": torch.randn(3, steps, 11, generator=g),
        "actions": torch.rand(3, steps, 3, generator=g) * 2 - 1,
        "timesteps": torch.arange(steps).expand(3, steps),
        "mask": mask,
    }
    return {
        "digits": {"image": torch.rand(5, 1, 8, 8, generator=g)},
        "speech": joint.members["speech"].model_inputs(collate_speech(items)),
        "hopper": joint.members["hopper"].model_inputs({"trajectory": trajectory}),
    }


def real_rows(name: str, joint: JointTask, inputs: dict, out: dict) -> list[torch.Tensor]:
    """The outputs that depend on real tokens only: padded frames and steps are left out."""
    if name == "digits":
        return [out["logits"]]
    if name == "hopper":
        keep = inputs["trajectory"]["mask"]
        return [out["actions"][keep]]
    frames = joint.members["speech"].model.heads["ctc"].lengths(out["encoder"]["output"])
    real = torch.arange(out["encoder"]["ctc"].shape[1])[None] < frames[:, None]
    target = inputs["target"]["mask"]
    return [out["encoder"]["ctc"][real], out["logits"][target]]


# ---------------------------------------------------------------------------------------------------- packed rows
@pytest.mark.parametrize("pack_len", [40, 64, 200])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("attention", ["rows", "segments", "stream"])
def test_a_packed_mixed_row_gives_each_sample_what_it_gets_alone(joint, pack_len, seed, attention) -> None:
    inputs = model_inputs(joint, seed)
    tokens = [joint.members[n].trunk_inputs(x)[0] for n, x in inputs.items()]
    _, info = pack(tokens, pack_len)
    task_of = [n for n, t in zip(inputs, tokens, strict=True) for _ in range(t.batch_size)]
    tasks_per_row = [{task_of[i] for i, r in enumerate(info.rows) if r == row} for row in range(info.num_rows)]
    assert max(len(s) for s in tasks_per_row) >= 2  # some row really holds samples of several tasks
    joint.pack_len, joint.pack_attention = pack_len, attention
    joint._packed_masks = None
    with torch.no_grad():
        packed = joint.forward_packed(inputs)
        for name, x in inputs.items():
            alone = joint.members[name](x)
            for got, want in zip(real_rows(name, joint, x, packed[name]), real_rows(name, joint, x, alone),
                                 strict=True):  # fmt: skip
                torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


def test_attention_sample_by_sample_trains_like_the_whole_row_under_its_mask(joint) -> None:
    """``segments`` (each sample's keys gathered out of the rows), ``stream`` (one row, no padding, views and
    gathers) and ``rows`` (the row's dense mask): the same loss and the same gradient of every shared weight, with
    autograd on (the gathers' own backwards)."""
    inputs = model_inputs(joint, 2)
    grads = {}
    for attention in ("rows", "segments", "stream"):
        joint.pack_len, joint.pack_attention, joint._packed_masks = 64, attention, None
        joint.zero_grad(set_to_none=True)
        out = joint.forward_packed(inputs)
        loss = sum((t.float() ** 2).mean() for name, x in inputs.items() for t in real_rows(name, joint, x, out[name]))
        loss.backward()
        grads[attention] = (loss.detach(), {n: p.grad.clone() for n, p in joint.trunk.named_parameters()})
    joint.zero_grad(set_to_none=True)
    for attention in ("segments", "stream"):
        torch.testing.assert_close(grads[attention][0], grads["rows"][0], atol=1e-6, rtol=1e-5)
        for n, g in grads["rows"][1].items():
            torch.testing.assert_close(grads[attention][1][n], g, atol=1e-6, rtol=1e-4, msg=f"{attention}: {n}")


def test_pack_attention_is_checked() -> None:
    with pytest.raises(ValueError, match="pack_attention"):
        JointTask(refs(("digits",)), TRUNK, batching="packed", pack_attention="varlen")


def test_one_tasks_inputs_do_not_reach_anothers_outputs_in_a_packed_row(joint) -> None:
    inputs = model_inputs(joint, 0)
    other = {**inputs, "hopper": {"trajectory": {**inputs["hopper"]["trajectory"],
                                                 "states": torch.randn(3, 5, 11)}}}  # fmt: skip
    joint.pack_len, joint._packed_masks = 200, None
    with torch.no_grad():
        a, b = joint.forward_packed(inputs), joint.forward_packed(other)
    torch.testing.assert_close(a["digits"]["logits"], b["digits"]["logits"], atol=0, rtol=0)
    assert not torch.allclose(a["hopper"]["actions"], b["hopper"]["actions"])


def test_a_task_that_edits_its_tokens_inside_the_trunk_is_not_packed() -> None:
    j = JointTask(refs(("digits", "fusion")), TRUNK, batching="packed")
    assert j.members["digits"].packable and not j.members["fusion"].packable
    with pytest.raises(ValueError, match=r"inputs.fusion: expected a packable task"):
        j.forward_packed({"fusion": {}})


# ---------------------------------------------------------------------------------------------------- sharing
def test_members_share_one_trunk_and_one_modality_table(joint) -> None:
    trunk_params = sum(p.numel() for p in joint.trunk.parameters())
    for sub in joint.members.values():
        assert sub.model.trunk is joint.trunk
        assert not any(p is q for p in sub.parameters() for q in joint.trunk.parameters())  # not registered twice
    keys = list(joint.state_dict())
    assert "trunk.blocks.0.attn.qkv.weight" in keys
    assert not any("model.trunk." in k or "encoder.trunk." in k for k in keys)  # one copy (speech's decoder: its own)
    separate = JointTask(refs(("digits",)), TRUNK)
    assert sum(p.numel() for p in separate.trunk.parameters()) == trunk_params
    # each member's tags are rows of the one table
    names = joint.modality_names
    for sub in joint.members.values():
        rows = [names[i] for i in sub.model.modality_embed.index.tolist()]
        assert rows == sub.model.modality_names
        index = sub.model.modality_embed.index
        torch.testing.assert_close(sub.model.modality_embed.weight, joint.modality_embed.weight[index])


def test_two_tasks_with_the_same_modality_share_its_tag() -> None:
    j = JointTask({"a": refs(("digits",))["digits"], "b": refs(("digits",))["digits"]}, TRUNK)
    assert j.modality_names == ["image", "cls"]
    assert j.members["a"].model.modality_embed.index.tolist() == j.members["b"].model.modality_embed.index.tolist()


def test_a_step_of_one_task_moves_the_shared_trunk_and_only_that_tasks_own_weights(joint) -> None:
    j = JointTask(refs(("digits", "hopper")), TRUNK)
    before = {k: v.clone() for k, v in j.state_dict().items()}
    opt = torch.optim.SGD(j.parameters(), lr=0.1)
    batch = {"image": torch.rand(4, 1, 8, 8), "label": torch.tensor([0, 1, 2, 3])}
    j.members["digits"].log = lambda *a, **k: None  # no trainer here
    for _ in range(2):  # the classifier's head starts at zero: the trunk gets a gradient from the second step
        opt.zero_grad()
        j.members["digits"].step(batch, "train").backward()
        opt.step()
    moved = {k for k, v in j.state_dict().items() if not torch.equal(v, before[k])}
    assert any(k.startswith("trunk.") for k in moved)
    assert any(k.startswith("members.digits.") for k in moved)
    assert not any(k.startswith("members.hopper.") for k in moved)
    assert "modality_embed.weight" in moved


# ---------------------------------------------------------------------------------------------------- the schedule
def test_the_schedule_runs_each_task_its_steps_in_a_seeded_order_and_loaders_go_on_across_epochs() -> None:
    loaders = {"a": list(range(10)), "b": [100, 101, 102]}
    epoch = {"now": 0}
    s = TaskSchedule(loaders, {"a": 4, "b": None}, seed=3, epoch_of=lambda: epoch["now"])
    first = [item for item, _, _ in s]
    assert len(s) == 7 and len(first) == 7
    assert [n for n, _ in first].count("a") == 4 and [n for n, _ in first].count("b") == 3
    assert [b for n, b in first if n == "a"] == [0, 1, 2, 3]
    epoch["now"] = 1
    second = [item for item, _, _ in s]
    assert [b for n, b in second if n == "a"] == [4, 5, 6, 7]  # goes on where it stopped
    assert [b for n, b in second if n == "b"] == [100, 101, 102]  # ran out: starts over
    again = TaskSchedule(loaders, {"a": 4, "b": None}, seed=3, epoch_of=lambda: 1)
    assert again.order(1) == [n for n, _ in second] and again.order(0) == [n for n, _ in first]
    assert s.order(0) != s.order(1) or s.order(0) != s.order(2)
    s.limits = [10, 3]  # what Lightning sets: each loader's length; a task's steps are not capped by it
    assert s.counts() == {"a": 4, "b": 3}
    more = TaskSchedule(loaders, {"a": 20, "b": 5}, seed=0)
    more.limits = [10, 3]
    assert more.counts() == {"a": 20, "b": 5} and len(more) == 25  # more steps than batches: loaders start over
    assert [b for n, b in (item for item, _, _ in more) if n == "b"] == [100, 101, 102, 100, 101]
    assert TaskSchedule(loaders, {"a": 20, "b": 5}, limit=2).counts() == {"a": 2, "b": 2}  # limit_train_batches=2
    assert TaskSchedule(loaders, {"a": 20, "b": 5}, limit=0.5).counts() == {"a": 10, "b": 2}  # =0.5
    endless = TaskSchedule({"a": iter(range(3))}, {"a": None})  # no length: its steps must be given
    with pytest.raises(ValueError, match=r"tasks.a.steps: expected a number"):
        endless.counts()


# ---------------------------------------------------------------------------------------------------- bad input
def test_bad_joint_configs_are_one_clear_error(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"tasks.config: expected a config file, got '.*nope.yaml' \(no such file\)"):
        JointTask({"x": {"config": str(tmp_path / "nope.yaml")}}, TRUNK)
    with pytest.raises(ValueError, match="tasks: expected at least one task"):
        JointTask({}, TRUNK)
    with pytest.raises(ValueError, match="batching"):
        JointTask(refs(("digits",)), TRUNK, batching="mixed")
    with pytest.raises(ValueError, match=r"tasks.x: expected keys among .*, got \['cfg'\]"):
        JointTask({"x": {"cfg": "configs/digits.yaml"}}, TRUNK)
    with pytest.raises(ValueError, match=r"tasks.x: expected \{config: FILE, ...\}, got str"):
        JointDataModule({"x": "configs/digits.yaml"})
    j = JointTask(refs(("digits",)), TRUNK)
    j.trainer = SimpleNamespace(datamodule=SimpleNamespace(members={"mnist": None}))
    with pytest.raises(ValueError, match=r"data.tasks: expected the model's tasks \['digits'\], got \['mnist'\]"):
        j.setup("fit")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  class_path: omni.tasks.classification.Classifier\n  init_args: {no_such_arg: 1}\n")
    with pytest.raises(ValueError, match=r"tasks.config: .*bad.yaml"):
        JointTask({"x": {"config": str(bad)}}, TRUNK)


# ---------------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("joint")
    speech = build_corpus(CorpusSpec(num_train=3, num_val=1, num_test=2, seed=5), root / "speech", 1, False)
    build_fusion_corpus(root / "fusion", FusionCorpusSpec(scenes=24, seed=0, shard_size=8), workers=1, progress=False)
    from omni.data.random_minari import random_minari_dataset

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root / "rl"))
        random_minari_dataset(root / "rl", "omni/hopper-v5/medium-v0", episodes=3, max_steps=30)
    return {"root": root, "speech": speech, "fusion": root / "fusion", "rl": root / "rl"}


def fixture_refs(f: dict[str, Path]) -> dict[str, dict]:
    args = {
        "speech": {f"data.init_args.{s}_manifest": str(f["speech"] / f"{s}.jsonl") for s in ("train", "val", "test")},
        "hopper": {"data.init_args.root": str(f["rl"])},
        "fusion": {"data.init_args.root": str(f["fusion"])},
    }
    return refs(("digits", "speech", "hopper", "fusion"), **args)


@pytest.mark.parametrize("batching", ["per_task", "packed"])
def test_one_fit_trains_every_task_and_writes_each_tasks_metrics_and_artifacts(fixtures, batching, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["omni"])
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(fixtures["rl"]))
    # 4 steps of hopper against its loader's 3 batches: a task's steps are not capped by its loader's length
    tasks = json.dumps({n: {**r, "steps": 4 if n == "hopper" else 2} for n, r in fixture_refs(fixtures).items()})
    save = fixtures["root"] / batching
    omni_main([
        "fit", "--config", str(ROOT / "configs/omni_all.yaml"), "--config", str(ROOT / "configs/omni_all_tiny.yaml"),
        "--model.init_args.tasks", tasks, "--data.init_args.tasks", tasks, "--model.init_args.batching", batching,
        "--data.init_args.batching", batching, "--trainer.logger.init_args.save_dir", str(save),
        "--trainer.enable_progress_bar", "false",
    ])  # fmt: skip
    run = save / "omni_all_tiny" / "version_0"
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    for key in ("test/digits/acc", "test/speech/wer", "test/hopper/score", "test/fusion/mAP", "test/speech/loss"):
        assert key in metrics, (key, sorted(metrics))
        assert math.isfinite(metrics[key])
    for path in ("hopper/rollouts_test.csv", "speech/errors.tsv", "digits/confusion_matrix.png"):
        assert (run / path).is_file(), path
    rows = (run / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert "train/loss_step" in header and "train/digits/loss_step" in header and "train/fusion/loss_step" in header
    ckpt = torch.load(run / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    if batching == "per_task":  # every task its steps: 2 + 2 + 4 + 2
        assert ckpt["global_step"] == 10
    assert {"speech", "hopper"} <= set(ckpt["omni_members"])
    assert "omni_vocab" in ckpt["omni_members"]["speech"] and "omni_rl" in ckpt["omni_members"]["hopper"]
    assert not any("model.trunk." in k for k in ckpt["state_dict"]) and "trunk.norm.weight" in ckpt["state_dict"]


# ---------------------------------------------------------------------------------------------------- the benchmark
def benchmark():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_joint", ROOT / "benchmarks" / "joint.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_joint"] = bench
    spec.loader.exec_module(bench)
    return bench


def test_the_benchmark_compares_scores_as_ratios_and_errors_as_multiples() -> None:
    bench = benchmark()
    p = bench.plan([str(ROOT / "configs/omni_all.yaml")], [])
    joint = [{"metrics": {"test/digits/acc": 0.9, "test/speech/wer": 0.05, "test/hopper/score": 40.0,
                          "test/fusion/mAP": 0.10}}]  # fmt: skip
    single = {"digits": [{"metrics": {"test/acc": 0.95}}], "speech": [{"metrics": {"test/wer": 0.04}}],
              "hopper": [{"metrics": {"test/score": 50.0}}], "fusion": [{"metrics": {"test/mAP": 0.11}}]}  # fmt: skip
    rows = bench.compare(p, joint, single)
    assert rows["digits"]["holds"] and rows["digits"]["joint_over_single"] == pytest.approx(0.947, abs=1e-3)
    assert not rows["speech"]["holds"] and rows["speech"]["better"] == "lower"  # 1.25 x the error
    assert not rows["hopper"]["holds"]  # 0.8 of the score
    assert rows["fusion"]["holds"]  # 0.909


def test_the_benchmark_judges_the_means_over_seeds_and_keeps_each_seed() -> None:
    bench = benchmark()
    p = bench.plan([str(ROOT / "configs/omni_all.yaml")], [])
    maps = {"joint": [0.145, 0.124], "single": [0.172, 0.052]}  # seed 0 alone fails, the means hold
    metrics = {"test/digits/acc": 0.9, "test/speech/wer": 0.05, "test/hopper/score": 40.0}
    joint = [{"metrics": {**metrics, "test/fusion/mAP": m}} for m in maps["joint"]]
    single = {"fusion": [{"metrics": {"test/mAP": m}} for m in maps["single"]]}
    row = bench.compare(p, joint, single)["fusion"]
    assert row["joint_per_seed"] == maps["joint"] and row["single_per_seed"] == maps["single"]
    assert row["joint"] == pytest.approx(0.1345) and row["single"] == pytest.approx(0.112)
    assert row["holds"] and row["joint_over_single"] == pytest.approx(1.201, abs=1e-3)
    assert "single" not in bench.compare(p, joint, single)["digits"]  # no single run: no ratio, no verdict
    assert "holds" not in bench.compare(p, joint, single)["digits"]


def test_the_joint_model_has_a_quarter_of_four_models_trunk_parameters() -> None:
    bench = benchmark()
    counts = bench.parameters(bench.plan([str(ROOT / "configs/omni_all.yaml")], []))
    assert counts["trunk_fraction"] == 0.25 and counts["joint_trunk"] * 4 == counts["single_trunks_sum"]
    assert counts["joint_total"] < counts["single_total_sum"]


def test_the_throughput_benchmark_times_the_packable_tasks_and_reports_consistent_figures(fixtures, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(fixtures["rl"]))
    bench = benchmark()
    tasks = json.dumps(fixture_refs(fixtures))
    configs = [str(ROOT / "configs/omni_all.yaml"), str(ROOT / "configs/omni_all_tiny.yaml")]
    row = bench.main(["--config", *configs, "--runs", "throughput", "--seeds", "0", "--batches", "1", "--repeats", "1",
                      "--arg", f"--model.init_args.tasks={tasks}"])  # fmt: skip
    assert row["throughput"]["tasks"] == ["digits", "speech", "hopper"]  # fusion runs on its own
    for draw in ("bucketed", "random"):
        t = row["throughput"][draw]
        assert 0 < t["padding_efficiency_per_task"] <= 1 and 0 < t["padding_efficiency_packed_rows"] <= 1
        for mode in ("stream", "segments", "rows"):
            ratio = t[f"tokens_per_s_packed_{mode}"] / t["tokens_per_s_per_task"]
            assert t[f"packed_{mode}_speedup"] == pytest.approx(ratio, rel=1e-2)
        assert row["throughput"]["packed"] == "pack_attention: stream (auto)"  # what a CPU run packs with
        assert t["packed_speedup"] == t["packed_stream_speedup"]


def test_the_transfer_benchmark_cuts_every_tasks_data_the_same_way_for_the_joint_and_the_single_runs() -> None:
    from omni.members import member_argv, task_parser

    bench = benchmark()
    configs = [str(ROOT / "configs/omni_all.yaml")]
    p = bench.plan(configs, [])
    extra = bench.with_fraction(p, [], 0.25)
    joint = bench.plan(configs, extra)  # what the joint `omni fit` parses
    assert joint["tasks"] == p["tasks"]
    for name, ref in p["tasks"].items():
        single = task_parser().parse_args(member_argv(ref, p["trunk"]))
        assert single.data.init_args.train_fraction == 0.25, name
        assert ref.steps == bench.plan(configs, [])["tasks"][name].steps  # same steps: only the data is cut
