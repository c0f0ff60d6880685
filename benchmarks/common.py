"""Shared by every benchmark: a description of the machine and the one way results are recorded."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=RESULTS.parent, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    info: dict[str, Any] = {
        "host_cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "commit": commit,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            info["host_cpu"] = names[0]
        with open("/proc/cpuinfo") as f:
            flags = next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
        # bf16 matmuls run on AMX tiles or AVX-512 BF16 where the CPU has them, emulated (slower than fp32) elsewhere
        info["cpu_bf16"] = sorted(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        pass
    return info


def record(name: str, result: dict[str, Any], save: bool = True) -> dict[str, Any]:
    """Print the result as one JSON line (the benchmark's last line) and append it, with the machine, to
    ``benchmarks/results/<name>.jsonl`` (unless ``save`` is False: a smoke run)."""
    row = {"benchmark": name, **result, "machine": machine()}
    if save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        with open(RESULTS / f"{name}.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)
    return row
