import os

import pytest
import torch

# Two cores: keep torch from oversubscribing when pytest-xdist runs workers side by side.
torch.set_num_threads(max(1, int(os.environ.get("OMNI_TEST_THREADS", "1"))))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def export_round_trip(tmp_path_factory: pytest.TempPathFactory):
    """``check(ckpt, run)``: ``omni export`` the checkpoint, ``omni.load`` it back, and assert that ``run(task)`` (a
    tensor) is identical for the checkpoint's task and the exported one; returns the exported task."""
    import torch

    from omni.checkpoints import load_task
    from omni.cli import main
    from omni.export import load

    def check(ckpt, run):
        out = tmp_path_factory.mktemp("exported")
        main(["export", "--ckpt_path", str(ckpt), "--out", str(out)])
        assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "model.safetensors"]
        exported = load(out)
        original = load_task(type(exported), ckpt).eval()
        with torch.no_grad():
            torch.manual_seed(0)
            expected = run(original)
            torch.manual_seed(0)
            got = run(exported)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        return exported

    return check


@pytest.fixture
def hopper_minari(monkeypatch: pytest.MonkeyPatch):
    """``write(root, dataset_id, episodes=2, steps=10)``: random-policy Hopper-v5 episodes of at most ``steps`` steps
    as a Minari dataset under ``root`` (``$MINARI_DATASETS_PATH`` set to it); returns its ``main_data.hdf5``."""
    from pathlib import Path

    from omni.data.random_minari import random_minari_dataset

    def write(root: Path, dataset_id: str, episodes: int = 2, steps: int = 10) -> Path:
        monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
        return random_minari_dataset(root, dataset_id, episodes=episodes, max_steps=steps)

    return write
