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
    import warnings
    from pathlib import Path

    import gymnasium as gym
    import numpy as np

    def write(root: Path, dataset_id: str, episodes: int = 2, steps: int = 10) -> Path:
        from minari import create_dataset_from_buffers
        from minari.data_collector import EpisodeBuffer

        env = gym.make("Hopper-v5", max_episode_steps=steps)
        env.action_space.seed(0)
        buffers = []
        for e in range(episodes):
            obs, _ = env.reset(seed=e)
            o, a, r, te, tr, done = [obs], [], [], [], [], False
            while not done:
                act = env.action_space.sample()
                obs, rew, term, trunc, _ = env.step(act)
                o.append(obs), a.append(act), r.append(float(rew)), te.append(term), tr.append(trunc)
                done = term or trunc
            buffers.append(EpisodeBuffer(id=e, observations=np.asarray(o), actions=np.asarray(a), rewards=r,
                                         terminations=te, truncations=tr))  # fmt: skip
        env.close()
        monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Minari warns about every unset author/description field
            create_dataset_from_buffers(dataset_id, buffers, env="Hopper-v5", ref_min_score=0.0, ref_max_score=1.0)
        return Path(root) / dataset_id / "data/main_data.hdf5"

    return write
