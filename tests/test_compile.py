"""``omni.compile.CompileTrunks`` compiles every trunk of a task in place (the state dict keeps its keys), and
``benchmarks/gpu.py`` refuses in one line where there is no CUDA device. (The compiled trunks train on a GPU in
``tests/test_gpu.py``.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from omni.compile import CompileTrunks
from omni.tasks.seq2seq import Seq2Seq
from omni.tokenizers import TextTokenizer
from omni.transformer import Transformer, TransformerConfig

ROOT = Path(__file__).resolve().parents[1]


def test_every_trunk_is_compiled_in_place_once_and_the_state_dict_keeps_its_keys() -> None:
    def text(dim: int) -> TextTokenizer:
        return TextTokenizer(dim, vocab_size=12, max_len=16)

    task = Seq2Seq(
        TransformerConfig(dim=16, depth=1, heads=2),
        {"source": text},
        TransformerConfig(dim=16, depth=1, heads=2, cross_attention=True, masks=["causal"]),
        text,
        max_decode_len=8,
    )
    keys = list(task.state_dict())
    callback = CompileTrunks()
    callback.setup(None, task, "fit")  # type: ignore[arg-type]
    callback.setup(None, task, "test")  # type: ignore[arg-type]
    assert callback.compiled == ["model.trunk", "decoder.trunk"]
    trunks = [m for m in task.modules() if isinstance(m, Transformer)]
    assert len(trunks) == 2 and all(m._compiled_call_impl is not None for m in trunks)
    assert list(task.state_dict()) == keys
    with pytest.raises(ValueError, match="mode: expected one of 'default', 'reduce-overhead'"):
        CompileTrunks(mode="fast")  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the benchmark runs for real (minutes)")
def test_the_gpu_benchmark_refuses_in_one_line_without_cuda() -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/gpu.py")], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.strip().splitlines() == [
        "benchmarks/gpu.py: error: expected a CUDA device, got none (torch.cuda.is_available() is False); "
        "--cpu-smoke checks the script on the CPU"
    ]
