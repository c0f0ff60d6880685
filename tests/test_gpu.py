"""On a CUDA device: every task trains end to end from ``omni fit`` in bf16-mixed precision, with FlexAttention and
compiled trunks (``omni.compile.CompileTrunks``), and the compiled flex trunk computes what the eager dense one does.
Skipped where there is no CUDA device (``tests/conftest.py``)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from omni.cli import main

ROOT = Path(__file__).resolve().parents[1]
GPU = ["--trainer.accelerator", "gpu", "--trainer.devices", "1", "--trainer.precision", "bf16-mixed",
       "--trainer.callbacks+=omni.compile.CompileTrunks", "--model.init_args.trunk.attention", "flex"]  # fmt: skip
DECODER_FLEX = ["--model.init_args.decoder_trunk.attention", "flex"]


def gpu_fit(tmp_path: Path, name: str, *args: str) -> dict[str, float]:
    """``omni fit`` of the job's tiny overlay on the GPU; returns its test metrics (checked finite)."""
    job = ["--config", str(ROOT / f"configs/{name}.yaml"), "--config", str(ROOT / f"configs/{name}_tiny.yaml")]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", ["omni"])
        main(["fit", *job, *GPU, *args, "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
              "--trainer.enable_progress_bar", "false"])  # fmt: skip
    (result,) = (tmp_path / "runs").rglob("metrics.json")
    metrics = json.loads(result.read_text())["metrics"]
    assert metrics and all(math.isfinite(v) for v in metrics.values()), metrics
    return metrics


@pytest.mark.gpu
def test_digits_bf16_flex_compiled(tmp_path) -> None:
    assert "test/acc" in gpu_fit(tmp_path, "digits")


@pytest.mark.gpu
def test_fused_toy_bf16_flex_compiled(tmp_path) -> None:
    assert "test/acc" in gpu_fit(tmp_path, "fusion_toy")


@pytest.mark.gpu
def test_seq2seq_bf16_flex_compiled(tmp_path) -> None:
    assert "test/exact_match" in gpu_fit(tmp_path, "seq2seq_reverse", *DECODER_FLEX)


@pytest.mark.gpu
def test_speech_bf16_flex_compiled(tmp_path) -> None:
    from omni.data.speech_corpus import CorpusSpec, build_corpus

    corpus = build_corpus(CorpusSpec(num_train=4, num_val=1, num_test=2, seed=5), tmp_path / "corpus", 1, False)
    manifests = [
        a for s in ("train", "val", "test") for a in (f"--data.init_args.{s}_manifest", str(corpus / f"{s}.jsonl"))
    ]
    assert "test/wer" in gpu_fit(tmp_path, "speech_digits", *DECODER_FLEX, *manifests)


@pytest.mark.gpu
def test_decision_transformer_bf16_flex_compiled(tmp_path, hopper_minari) -> None:
    hopper_minari(tmp_path / "rl", "omni/hopper-v5/medium-v0", episodes=8, steps=40)
    metrics = gpu_fit(tmp_path, "dt_hopper", "--data.init_args.root", str(tmp_path / "rl"))
    assert any(k.startswith("test/") for k in metrics)


@pytest.mark.gpu
def test_fusion_detector_bf16_flex_compiled(tmp_path) -> None:
    from omni.data.fusion_sim import FusionCorpusSpec, build_fusion_corpus

    corpus = tmp_path / "fusion"
    build_fusion_corpus(corpus, FusionCorpusSpec(scenes=24, seed=0, shard_size=8), workers=1, progress=False)
    metrics = gpu_fit(tmp_path, "fusion", "--data.init_args.root", str(corpus))
    assert any("mAP" in k for k in metrics)


@pytest.mark.gpu
def test_a_compiled_flex_trunk_equals_the_eager_dense_one_forward_and_backward() -> None:
    from omni import OmniModel, TransformerConfig
    from omni.tokenizers import ImagePatchTokenizer

    def model(attention: str) -> OmniModel:
        torch.manual_seed(0)
        trunk = TransformerConfig(dim=64, depth=3, heads=4, masks=["local", "full"], attention=attention,
                                  mask_defs={"local": "local(radius=2) | global_tokens()"})  # fmt: skip
        return OmniModel({"image": ImagePatchTokenizer(64, patch_size=4, img_size=64)}, trunk, extra_tokens={"cls": 1})

    dense, flex = model("dense").cuda(), model("flex").cuda()
    flex.trunk.compile()
    images = torch.randn(3, 3, 64, 64, device="cuda")
    outs, grads = [], []
    for m in (dense, flex):
        x = m.encode({"image": images}).tokens.x
        outs.append(x)
        grads.append(torch.autograd.grad(x.square().sum(), list(m.trunk.parameters())))
    torch.testing.assert_close(outs[1], outs[0], atol=1e-4, rtol=1e-4)
    for g_flex, g_dense in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(g_flex, g_dense, atol=1e-3, rtol=1e-3)
