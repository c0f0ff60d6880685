"""Two DDP processes on CPU (gloo) train every task as one process does at the same global batch.

Each task's tiny config is fit with ``--trainer.strategy ddp --trainer.devices 2 --trainer.accelerator cpu`` at batch
size B per rank (one ``tests/ddp_fits.py`` process pair runs them all, through ``omni fit`` and so through the test
of a checkpoint after training that used to hang) and in this process at batch size 2B. The samplers deal one
process's global batch over the ranks by rows, gradients are averaged over the ranks and epoch metrics reduced over
them, so validation and test metrics and the final weights agree. The joint case trains one trunk on four tasks, one
task a step, the same task on every rank: the idle members' weights take no part in a step's loss, and ``JointTask``
has DDP look for unused parameters so that it does not refuse them.

The tolerances are not zero because floats are summed in another order (B rows on each rank, then the ranks
averaged): ~1e-7, which Adam's first steps can amplify where a gradient is near zero. Losses that are a mean over a
count inside the batch (real steps of a window, objects of a scene) divide by the global batch's count
(``omni.ranks.global_count``): divided by each rank's own, the average of the ranks' ratios is not the ratio of the
sums (DT's validation loss was 0.680 against 0.685). Random regularisers are off in the runs compared
(augmentation, dropout, modality dropout): each rank draws its own noise, so with them on the runs are equal in
distribution only. The digits and fusion runs use the patch stem: the conv stems' batch norm takes its statistics from
each rank's batch, and torch's ``SyncBatchNorm`` (``--trainer.sync_batchnorm true``, which gives it the global batch's
statistics) runs on CUDA only.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from omni.checkpoints import load_task
from omni.cli import main
from omni.data import DigitsDataModule
from omni.data.fusion_sim import FusionCorpusSpec, build_fusion_corpus
from omni.data.speech_corpus import CorpusSpec, build_corpus
from omni.tasks.classification import Classifier

ROOT = Path(__file__).resolve().parents[1]
METRICS_ATOL = 1e-5  # validation (every epoch) and test metrics; measured <= 5e-7
DDP = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def configs(name: str) -> list[str]:
    return ["--config", str(ROOT / f"configs/{name}.yaml"), "--config", str(ROOT / f"configs/{name}_tiny.yaml")]


def cases(data: dict[str, Path]) -> dict[str, dict]:
    """{case: {"args": the fit's, "batch": B per rank, "atol": of the final weights}} for every task. The metrics
    must agree within ``METRICS_ATOL``. The weights' tolerance is ~10x the difference measured on 2 cores."""
    manifests = [a for s in ("train", "val", "test") for a in (f"--data.init_args.{s}_manifest", str(data[s]))]
    no_dropout = "--model.init_args.trunk.dropout 0 --model.init_args.trunk.attn_dropout 0".split()
    speech = "--model.init_args.decoder_trunk.dropout 0 --data.init_args.num_buckets 1".split()
    return {
        "digits": {  # Classifier on images, with the patch stem (see the module docstring); measured 5e-7
            "args": [*configs("digits"), "--config", str(data["patch_stem"]), "--data.init_args.augment", "false"],
            "batch": 16,
            "atol": 1e-5,
        },
        "fusion_toy": {"args": configs("fusion_toy"), "batch": 16, "atol": 1e-5},  # camera + radar + ego; 5e-7
        "seq2seq": {"args": configs("seq2seq_reverse"), "batch": 32, "atol": 3e-5},  # 3e-6
        "speech": {  # CTC + decoder, 8 utterances; 4e-5: Adam's first steps divide near-zero gradients by their size
            "args": [*configs("speech_digits"), *manifests, *no_dropout, *speech, "--trainer.limit_train_batches=null"],
            "batch": 2,
            "atol": 2e-4,
        },
        "decision": {  # Decision Transformer, discrete actions, a mean over the real steps; 7e-8
            "args": [*configs("dt_cartpole"), *no_dropout, "--data.init_args.dataset", str(data["rl"])],
            "batch": 4,
            "atol": 1e-6,
        },
        "fusion": {  # the detector on the simulated corpus, a set loss over the objects; 9e-7
            "args": [
                *configs("fusion"),
                "--model.init_args.modality_dropout=0",
                # The whole box in the matching cost: on the centre alone, two untrained queries with nearly the same
                # centre are a near-tie that rounding (DDP's or one process's) settles either way, and their
                # velocities and yaws then give another L1 (seen on a fresh install, 2026-12-01)
                "--model.init_args.match_on=box",
                "--config",
                str(data["fusion_patch_stem"]),
                f"--data.init_args.root={data['fusion']}",
            ],
            "batch": 2,
            "atol": 1e-5,
        },
        "joint": {  # one trunk on digits, spoken digits, a DT and the detector, one task a step; measured 5e-6
            "args": configs("omni_all"),
            "batch_args": lambda b: joint_tasks(data, b),
            "batch": 2,
            "atol": 5e-5,
        },
    }


def joint_tasks(data: dict[str, Path], batch: int) -> list[str]:
    """The joint case's members, each as its own case above runs it (no random regulariser, patch stems), at
    ``batch`` per rank; the same mapping for the model and the data module."""
    tiny = lambda name, *more: [f"configs/{name}.yaml", f"configs/{name}_tiny.yaml", *map(str, more)]  # noqa: E731
    size = {"data.init_args.batch_size": batch}
    tasks = {
        "digits": {"config": tiny("digits", data["patch_stem"]), "steps": 2,
                   "args": {**size, "data.init_args.augment": False}},
        "speech": {"config": tiny("speech_digits"), "steps": 2,
                   "args": {**size, "data.init_args.num_buckets": 1, "model.init_args.decoder_trunk.dropout": 0.0,
                            **{f"data.init_args.{s}_manifest": str(data[s]) for s in ("train", "val", "test")}}},
        "decision": {"config": tiny("dt_cartpole"), "steps": 2,
                     "args": {**size, "data.init_args.dataset": str(data["rl"])}},
        "fusion": {"config": tiny("fusion", data["fusion_patch_stem"]), "steps": 2,
                   "args": {**size, "model.init_args.modality_dropout": 0.0, "model.init_args.match_on": "box",
                            "data.init_args.root": str(data["fusion"])}},
    }  # fmt: skip
    text = json.dumps(tasks)
    return ["--model.init_args.tasks", text, "--data.init_args.tasks", text]


def batch_args(case: dict, batch: int) -> list[str]:
    """The arguments that set a case's batch size: the data module's, or the joint members' each."""
    if "batch_args" in case:
        return case["batch_args"](batch)
    return ["--data.init_args.batch_size", str(batch)]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    sys.path.insert(0, str(ROOT / "tests/rl"))
    from rl_episodes import random_episodes, write_d4rl

    root = tmp_path_factory.mktemp("ddp_data")
    corpus = build_corpus(CorpusSpec(num_train=8, num_val=4, num_test=4, seed=5), root / "speech", 1, False)
    build_fusion_corpus(root / "fusion", FusionCorpusSpec(scenes=24, seed=0, shard_size=8), workers=1, progress=False)
    rl = write_d4rl(random_episodes("CartPole-v1", 12), root / "cartpole.hdf5")
    patch_stem = root / "patch_stem.yaml"
    patch_stem.write_text(
        "model:\n  init_args:\n    tokenizers:\n      image:\n        class_path: omni.tokenizers.ImagePatchTokenizer\n"
        "        init_args: {stem: patch}\n"
    )
    # The strided stem's batch norm is per rank (see above). Local contrast off too: per sample, nothing per rank,
    # but with it the two runs' metrics differed by 6e-5 instead of <= 1e-6 (taken for rounding that Adam's first
    # steps amplify, as in the speech case; not traced further).
    fusion_patch_stem = root / "fusion_patch_stem.yaml"
    fusion_patch_stem.write_text(
        "model:\n  init_args:\n    tokenizers:\n"
        "      camera:\n        class_path: omni.tokenizers.ImagePatchTokenizer\n"
        "        init_args: {patch_size: 16, img_size: [64, 128], pos_embed: sincos, stem: patch, local_contrast: 0}\n"
        "      radar:\n        class_path: omni.tokenizers.SensorTokenizer\n"
        "        init_args: {in_features: 6, coord_dims: 2, fourier_scale: 0.1, name: radar}\n"
        "      ego:\n        class_path: omni.tokenizers.SensorTokenizer\n"
        "        init_args: {in_features: 2, mode: vector, name: ego}\n"
    )
    return {
        "fusion_patch_stem": fusion_patch_stem,
        "patch_stem": patch_stem,
        **{s: corpus / f"{s}.jsonl" for s in ("train", "val", "test")},
        "rl": Path(rl),
        "fusion": root / "fusion",
    }


def run_dir(out: Path) -> Path:
    """The first run directory under a logger's save_dir (the fit's; a predict after it is version_1)."""
    (config,) = out.rglob("version_0/config.yaml")
    return config.parent


@pytest.fixture(scope="module")
def ddp_runs(data, tmp_path_factory) -> dict[str, Path]:
    """Every case fit by one DDP process pair (B per rank), and the digits' checkpoint predicted under DDP too."""
    out = tmp_path_factory.mktemp("ddp_runs")
    jobs = []
    for name, case in cases(data).items():
        save = ["--trainer.logger.init_args.save_dir", str(out / name)]
        jobs.append(["fit", *case["args"], *DDP, *QUIET, *save, *batch_args(case, case["batch"])])
    digits = out / "digits" / "digits_tiny" / "version_0"
    ckpt = str(digits / "checkpoints/last.ckpt")
    jobs.append(["predict", "--config", str(digits / "config.yaml"), "--ckpt_path", ckpt])
    (out / "jobs.json").write_text(json.dumps(jobs))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "tests/ddp_fits.py"), str(out / "jobs.json")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run directory:") == len(jobs) - 1  # every fit reached its test, and reported
    return {name: run_dir(out / name) for name in cases(data)}


def one_process(case: dict, out: Path, monkeypatch) -> Path:
    monkeypatch.setattr(sys, "argv", ["omni"])  # LightningCLI warns when pytest's own arguments are there too
    main(["fit", *case["args"], *QUIET, "--trainer.logger.init_args.save_dir", str(out),
          *batch_args(case, 2 * case["batch"])])  # fmt: skip
    return run_dir(out)


def epoch_metrics(run: Path) -> list[dict[str, float]]:
    """The epoch-level validation rows of metrics.csv (the values that every rank reduced)."""
    with (run / "metrics.csv").open() as f:
        rows = [{k: float(v) for k, v in r.items() if v and k.startswith("val/")} for r in csv.DictReader(f)]
    return [r for r in rows if r]


@pytest.mark.parametrize("name", ["digits", "fusion_toy", "seq2seq", "speech", "decision", "fusion", "joint"])
def test_two_ddp_processes_train_as_one_at_the_same_global_batch(name, data, ddp_runs, tmp_path, monkeypatch):
    case = cases(data)[name]
    ddp, one = ddp_runs[name], one_process(case, tmp_path, monkeypatch)
    atol = METRICS_ATOL

    want, got = epoch_metrics(one), epoch_metrics(ddp)
    assert len(want) == len(got) > 0 and [sorted(r) for r in want] == [sorted(r) for r in got]
    for w, g in zip(want, got, strict=True):
        for key in w:
            assert g[key] == pytest.approx(w[key], abs=atol), (key, w, g)
    tested = json.loads((one / "metrics.json").read_text())["metrics"]
    ddp_tested = json.loads((ddp / "metrics.json").read_text())["metrics"]
    assert sorted(tested) == sorted(ddp_tested) and tested
    for key, value in tested.items():
        assert ddp_tested[key] == pytest.approx(value, abs=atol), key

    w_one = torch.load(one / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    w_ddp = torch.load(ddp / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    assert w_one.keys() == w_ddp.keys()
    for key in w_one:
        torch.testing.assert_close(w_ddp[key], w_one[key], rtol=0, atol=case["atol"], msg=key)


def test_ddp_predict_gathers_every_rank_in_one_processs_order(ddp_runs):
    run = ddp_runs["digits"]
    got = torch.load(run.parent / "version_1/predictions.pt", weights_only=True)
    task = load_task(Classifier, run / "checkpoints/last.ckpt").eval()
    dm = DigitsDataModule(batch_size=64, augment=False)
    dm.setup("test")
    with torch.no_grad():
        probs = torch.cat([task(task.model_inputs(b))["logits"].softmax(-1) for b in dm.test_dataloader()])
    assert got["probs"].shape == probs.shape == (360, 10)
    torch.testing.assert_close(got["probs"], probs, rtol=0, atol=1e-6)
    assert torch.equal(got["pred"], probs.argmax(-1))


@pytest.mark.gpu
def test_the_fsdp_overlay_fits_and_writes_a_whole_checkpoint(tmp_path):
    devices = str(min(2, torch.cuda.device_count()))
    fsdp = ["--config", str(ROOT / "configs/strategies/fsdp.yaml"), "--trainer.devices", devices]
    cmd = [sys.executable, "-m", "omni.cli", "fit", *configs("digits"), *fsdp, *QUIET,
           "--trainer.logger.init_args.save_dir", str(tmp_path)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = run_dir(tmp_path)
    assert "test/acc" in json.loads((run / "metrics.json").read_text())["metrics"]
    state = torch.load(run / "checkpoints/last.ckpt", weights_only=True, map_location="cpu")["state_dict"]
    task = load_task(Classifier, run / "checkpoints/last.ckpt")  # a whole checkpoint: loads into one process's model
    assert state.keys() == task.state_dict().keys()


def test_close_process_group_ends_the_group_and_is_a_no_op_without_one(tmp_path):
    import torch.distributed as dist

    from omni.ranks import close_process_group

    close_process_group()  # no group: nothing to do, nothing raised
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert dist.is_initialized()
        close_process_group()
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
