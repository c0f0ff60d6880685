"""Every error case of a user's first runs, through the real entry point (``omni fit`` in-process, and the console in a
subprocess where the console's own formatting matters): a bad mask expression, a data folder that does not exist,
a corrupt image / audio / dataset file for each task's data module, a checkpoint of another task. Each is one line
naming the key or file, what was expected and what came. (A YAML key typo and a wrong ``class_path``:
``tests/test_cli.py``.)"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from omni.cli import main

ROOT = Path(__file__).resolve().parents[1]


def job(name: str) -> list[str]:
    return ["--config", str(ROOT / f"configs/{name}.yaml"), "--config", str(ROOT / f"configs/{name}_tiny.yaml")]


def fit_error(tmp_path: Path, *args: str) -> str:
    """The message of the ValueError ``omni fit ARGS`` raises (in-process), checked to be one line."""
    quiet = ["--trainer.logger.init_args.save_dir", str(tmp_path / "runs"), "--trainer.enable_progress_bar", "false"]
    with pytest.raises(ValueError) as e:
        main(["fit", *args, *quiet])
    message = str(e.value)
    assert "\n" not in message, message
    return message


@pytest.fixture(autouse=True)
def _argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["omni"])  # LightningCLI warns when sys.argv (pytest's) holds arguments too


# ---------------------------------------------------------------------------------------------------- masks
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            [
                "--model.init_args.trunk.mask_defs",
                "{local: 'local(radius=)'}",
                "--model.init_args.trunk.masks",
                "[local]",
            ],
            "TransformerConfig.mask_defs.local: mask: expected an expression like 'local(radius=1) | global_tokens()', "
            "got 'local(radius=)'",
        ),
        (
            ["--model.init_args.trunk.masks", "[lcal]"],
            "TransformerConfig.masks[0]: mask: unknown name 'lcal' in 'lcal'",
        ),
    ],
)
def test_a_bad_mask_expression_is_one_line(tmp_path, args, expected) -> None:
    message = fit_error(tmp_path, *job("digits"), *args)
    assert message.startswith(f"model (omni.tasks.classification.Classifier): {expected}")


# ---------------------------------------------------------------------------------------------------- images
@pytest.fixture
def image_folder(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "images" / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / f"images/{cls}/{i}.png")
    overlay = tmp_path / "images.yaml"
    overlay.write_text(
        "model:\n  init_args:\n    num_classes: 2\n    tokenizers:\n      image:\n"
        "        class_path: omni.tokenizers.ImagePatchTokenizer\n"
        "        init_args: {patch_size: 2, in_chans: 3, img_size: 8}\n"
        "data:\n  class_path: omni.data.ImageFolderDataModule\n"
        f"  init_args: {{root: {tmp_path / 'images'}, img_size: 8, batch_size: 16, num_workers: 0, augment: false}}\n"
    )
    return overlay


def test_image_folder_missing_and_a_corrupt_image(tmp_path, image_folder) -> None:
    missing = tmp_path / "nope"
    message = fit_error(tmp_path, *job("digits"), "--config", str(image_folder), "--data.init_args.root", str(missing))
    assert message == (
        f"data (omni.data.ImageFolderDataModule): root: expected an existing folder of class subfolders, got "
        f"'{missing}' (not found)"
    )
    bad = tmp_path / "images/dog/bad.png"
    bad.write_bytes(b"not a png")
    message = fit_error(tmp_path, *job("digits"), "--config", str(image_folder))
    assert message.startswith(f"{bad}: expected an image file PIL can read, got UnidentifiedImageError: cannot ")


def test_the_console_prints_a_data_loader_workers_error_as_its_last_line(tmp_path, image_folder) -> None:
    bad = tmp_path / "images/dog/bad.png"
    bad.write_bytes(b"not a png")
    cmd = [sys.executable, "-m", "omni.cli", "fit", *job("digits"), "--config", str(image_folder),
           "--data.init_args.num_workers", "1", "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
           "--trainer.enable_progress_bar", "false"]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 2, run.stderr[-2000:]
    lines = run.stderr.strip().splitlines()  # Lightning's own notes come first
    assert not any("Traceback" in line for line in lines)
    assert [line for line in lines if "error" in line] == lines[-1:]
    assert lines[-1].startswith(f"omni fit: error: {bad}: expected an image file PIL can read, got UnidentifiedImage")


# ---------------------------------------------------------------------------------------------------- speech
def test_speech_manifest_missing_and_a_corrupt_wav(tmp_path) -> None:
    sf.write(str(tmp_path / "good.wav"), 0.1 * np.sin(np.arange(16000) / 5.0).astype(np.float32), 16000)
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    for split, names in (("train", ["good", "bad"]), ("val", ["good"])):
        rows = [{"audio_filepath": str(tmp_path / f"{n}.wav"), "duration": 1.0, "text": "one"} for n in names]
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    val = str(tmp_path / "val.jsonl")
    common = [*job("speech_digits"), "--data.init_args.val_manifest", val, "--data.init_args.test_manifest", val,
              "--data.init_args.batch_size", "2", "--data.init_args.vocab", "char",
              "--model.init_args.decoder_tokenizer.init_args.vocab_size", "32"]  # fmt: skip
    missing = tmp_path / "nope/train.jsonl"
    message = fit_error(tmp_path, *common, "--data.init_args.train_manifest", str(missing))
    assert message == f"train_manifest: expected a JSON-lines file, got '{missing}' (not found)"
    message = fit_error(tmp_path, *common, "--data.init_args.train_manifest", str(tmp_path / "train.jsonl"))
    assert message.startswith(
        f"{tmp_path / 'bad.wav'}: expected an audio file soundfile can read (listed at {tmp_path / 'train.jsonl'}:2), "
        "got: "
    )


# ---------------------------------------------------------------------------------------------------- offline RL
def test_minari_dataset_missing_and_corrupt(tmp_path, hopper_minari) -> None:
    rl = tmp_path / "rl"
    message = fit_error(tmp_path, *job("dt_hopper"), "--data.init_args.root", str(rl))
    data = rl / "omni/hopper-v5/medium-v0/data"
    assert message == f"dataset_id: no Minari dataset 'omni/hopper-v5/medium-v0' under {rl} (looked for {data})"
    hdf5 = hopper_minari(rl, "omni/hopper-v5/medium-v0")
    hdf5.write_bytes(hdf5.read_bytes()[:2000])  # a copy cut short
    message = fit_error(tmp_path, *job("dt_hopper"), "--data.init_args.root", str(rl))
    assert message.startswith(f"{data}: expected readable episodes in main_data.hdf5, got OSError: Unable to ")


# ---------------------------------------------------------------------------------------------------- fusion
def test_fusion_corpus_missing_and_a_truncated_shard(tmp_path) -> None:
    from omni.data.fusion_sim import FusionCorpusSpec, build_fusion_corpus, shard_path

    missing = tmp_path / "nope"
    message = fit_error(tmp_path, *job("fusion"), "--data.init_args.root", str(missing))
    assert message == f"root: {missing}/meta.json not found; build the corpus with `omni data fusion --out {missing}`"
    corpus = tmp_path / "fusion"
    build_fusion_corpus(corpus, FusionCorpusSpec(scenes=12, seed=0, shard_size=4), workers=1, progress=False)
    shard = shard_path(corpus, 0)
    shard.write_bytes(shard.read_bytes()[:1000])
    message = fit_error(tmp_path, *job("fusion"), "--data.init_args.root", str(corpus))
    assert message.startswith(f"{shard}: expected a shard written by `omni data fusion`, got an unreadable file")


# ---------------------------------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("digits")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", ["omni"])
        main(["fit", *job("digits"), "--trainer.logger.init_args.save_dir", str(out), "--test_after_fit", "false",
              "--trainer.enable_progress_bar", "false"])  # fmt: skip
    (ckpt,) = out.rglob("last.ckpt")
    return ckpt


def test_a_checkpoint_of_another_task_or_other_sizes_is_named(tmp_path, digits_ckpt) -> None:
    message = fit_error(tmp_path, *job("seq2seq_reverse"), "--ckpt_path", str(digits_ckpt))
    assert message == (
        "ckpt_path: expected a checkpoint of the config's omni.tasks.seq2seq.Seq2Seq, got one of "
        "omni.tasks.classification.Classifier"
    )
    with pytest.raises(ValueError) as e:
        main(["transcribe", "--ckpt_path", str(digits_ckpt), "a.wav"])
    assert str(e.value) == (
        f"{digits_ckpt}: expected a checkpoint of omni.tasks.speech.SpeechRecognizer, got one of "
        "omni.tasks.classification.Classifier"
    )
    # `omni fit` takes a checkpoint's sizes over the config's (Lightning); from Python, other sizes are named too
    from omni.checkpoints import load_checkpoint, load_task
    from omni.tasks.classification import Classifier

    ckpt = load_checkpoint(digits_ckpt)
    task = load_task(Classifier, digits_ckpt)
    wider = Classifier(**{**task.hparams, "trunk": dataclasses.replace(task.hparams["trunk"], depth=3)})
    with pytest.raises(ValueError, match=r"^ckpt_path: expected the weights of this config's Classifier, got missing"):
        wider.on_load_checkpoint(ckpt)
