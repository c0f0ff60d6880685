"""Subnormal floats are flushed to zero in every intra-op thread of an ``omni`` process (``omni.denormals``)."""

from __future__ import annotations

import os
import subprocess
import sys

# In a fresh process: run the omni command's entry (``--help`` exits at once), then halve subnormal numbers across
# two intra-op threads. Flushed, every product is 0; kept, each is a subnormal 5e-40. Prints the count of nonzeros.
SCRIPT = """
import sys, torch
torch.set_num_threads(2)
from omni.cli import main
sys.argv = ["omni", "fit", "--help"]
try:
    main()
except SystemExit as e:
    if e.code not in (0, None):
        raise
x = torch.full((4_000_000,), 1e-39)
print(int(((x * 0.5) != 0).sum()))
"""


def run(env_value: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OMNI_FLUSH_DENORMAL"}
    if env_value is not None:
        env["OMNI_FLUSH_DENORMAL"] = env_value
    return subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, check=False)


def test_the_command_flushes_subnormals_in_every_thread() -> None:
    proc = run(None)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "0"


def test_switched_off_the_subnormals_stay() -> None:
    proc = run("0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "4000000"


def test_a_bad_switch_is_named() -> None:
    proc = run("yes")
    assert proc.returncode == 2
    assert "OMNI_FLUSH_DENORMAL: expected 0 or 1" in proc.stderr


def test_called_from_python_the_callers_float_mode_is_kept() -> None:
    """``omni.cli.main(args)`` in a test suite's process must leave subnormals alone (hypothesis refuses to run
    float strategies in a process that flushes them)."""
    console = 'sys.argv = ["omni", "fit", "--help"]\ntry:\n    main()'
    script = SCRIPT.replace(console, 'try:\n    main(["fit", "--help"])')
    assert script != SCRIPT
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "4000000"
