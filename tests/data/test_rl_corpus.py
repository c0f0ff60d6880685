"""``omni data rl`` at a tiny scale: four Minari datasets with reference scores, tiers made of the right episodes,
the same datasets from the same seed, resumption after an interruption without redoing finished stages."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omni.cli import main as omni_main
from omni.data import rl_corpus
from omni.data.episodes import Episodes
from omni.data.rl_corpus import TIERS, EpisodeLog, RLCorpusSpec, build_rl_corpus, collect, dataset_id, random_policy
from omni.data.rl_readers import load_minari

ENV = "InvertedPendulum-v5"  # MuJoCo, short episodes while the policy is poor: a whole build in seconds
TINY = RLCorpusSpec(
    env_id=ENV, steps=4096, checkpoint_every=2048, n_envs=4, eval_episodes=2, random_episodes=4, episodes=3
)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("rl")
    return out, build_rl_corpus(TINY, out)


def load_all(out: Path) -> dict[str, Episodes]:
    return {tier: load_minari(dataset_id(ENV, tier), root=out) for tier in TIERS}


def assert_same(a: Episodes, b: Episodes) -> None:
    assert len(a) == len(b)
    for name in ("observations", "actions", "rewards", "terminations", "truncations"):
        for x, y in zip(getattr(a, name), getattr(b, name), strict=True):
            np.testing.assert_array_equal(x, y)
    assert (a.ref_min_score, a.ref_max_score) == (b.ref_min_score, b.ref_max_score)


def test_four_datasets_with_reference_scores(built):
    out, summary = built
    data = load_all(out)
    work = out / ENV.lower()
    ref_min = json.loads((work / "random.json").read_text())["mean_return"]
    for tier, ep in data.items():
        assert ep.env_id == ENV and ep.source == f"omni/invertedpendulum-v5/{tier}-v0"
        assert (ep.ref_min_score, ep.ref_max_score) == (ref_min, summary["ref_max_score"])
        assert ep.metadata["omni_tier"] == tier and ep.metadata["omni_seed"] == 0
        assert summary["tiers"][tier]["episodes"] == len(ep)
        assert summary["tiers"][tier]["transitions"] == int(ep.lengths.sum())
    # the expert's mean return is ref_max_score: its normalised score is 100 by construction
    assert data["expert"].normalized_score(data["expert"].returns.mean()) == pytest.approx(100.0)
    assert len(data["medium"]) == len(data["expert"]) == TINY.episodes
    # medium-expert is medium then expert, episode for episode
    both = data["medium-expert"]
    assert len(both) == len(data["medium"]) + len(data["expert"])
    for name in ("observations", "actions", "rewards"):
        joined = getattr(data["medium"], name) + getattr(data["expert"], name)
        for x, y in zip(getattr(both, name), joined, strict=True):
            np.testing.assert_array_equal(x, y)
    # medium-replay is every episode the learner finished up to the medium checkpoint
    replay = sum(
        len(EpisodeLog.load(p / "episodes.npz"))
        for p in sorted((work / "train").glob("ckpt_*"))
        if int(p.name.split("_")[1]) <= summary["medium_step"]
    )
    assert len(data["medium-replay"]) == replay > 0
    assert json.loads((work / "summary.json").read_text())["tiers"] == summary["tiers"]


def test_an_interrupted_build_resumes_and_equals_an_uninterrupted_one(built, tmp_path, monkeypatch):
    out, _ = built
    write = rl_corpus.write_dataset

    def failing(out_: Path, ds_id: str, *args, **kwargs):
        if ds_id.endswith("expert-v0") and "medium" not in ds_id:
            raise KeyboardInterrupt  # killed while the expert dataset is being written
        return write(out_, ds_id, *args, **kwargs)

    monkeypatch.setattr(rl_corpus, "write_dataset", failing)
    with pytest.raises(KeyboardInterrupt):
        build_rl_corpus(TINY, tmp_path)
    assert (tmp_path / dataset_id(ENV, "medium") / "data").is_dir()
    assert not (tmp_path / dataset_id(ENV, "expert")).exists()  # nothing half-written is visible
    monkeypatch.setattr(rl_corpus, "write_dataset", write)
    # training is finished: a resumed build must not train again
    monkeypatch.setattr(rl_corpus._Learner, "learn_to", lambda *a: pytest.fail("training ran again"))
    build_rl_corpus(TINY, tmp_path)
    got, want = load_all(tmp_path), load_all(out)
    for tier in TIERS:
        assert_same(got[tier], want[tier])


def test_training_resumes_from_its_last_checkpoint(built, tmp_path, monkeypatch):
    out, _ = built
    shutil.copytree(out, tmp_path, dirs_exist_ok=True)
    work = tmp_path / ENV.lower()
    shutil.rmtree(work / "train" / "ckpt_000004096")
    shutil.rmtree(tmp_path / "omni")
    for name in ("expert.npz", "medium.npz", "summary.json"):
        (work / name).unlink()
    first = (work / "train" / "ckpt_000002048" / "model.zip").stat().st_mtime_ns
    seen = []
    init = rl_corpus._Learner.__init__

    def spy(self, spec: RLCorpusSpec, sink: EpisodeLog, resume: Path | None) -> None:
        seen.append(resume)
        init(self, spec, sink, resume)

    monkeypatch.setattr(rl_corpus._Learner, "__init__", spy)
    summary = build_rl_corpus(TINY, tmp_path)
    assert seen == [work / "train" / "ckpt_000002048"]
    assert (work / "train" / "ckpt_000002048" / "model.zip").stat().st_mtime_ns == first
    assert (work / "train" / "ckpt_000004096" / "eval.json").exists()
    assert set(summary["tiers"]) == set(TIERS)
    assert all(len(ep) for ep in load_all(tmp_path).values())


def test_other_settings_in_the_same_folder_are_refused(built):
    out, _ = built
    with pytest.raises(ValueError, match=r"--out: .*build\.json holds a build with other settings"):
        build_rl_corpus(replace(TINY, seed=1), out)


def test_unknown_env_names_the_flag_and_id(tmp_path):
    with pytest.raises(ValueError, match=r"--env: .*'NoSuchEnv-v0'"):
        omni_main(["data", "rl", "--env", "NoSuchEnv-v0", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match=r"--env: Blackjack-v1: expected a flat Box observation space, got Tuple"):
        build_rl_corpus(replace(TINY, env_id="Blackjack-v1"), tmp_path)


def test_discrete_actions_round_trip_through_minari(tmp_path, monkeypatch):
    """CartPole's action indices survive Minari, written under a relative root (``--out data/rl``)."""
    import gymnasium as gym

    monkeypatch.chdir(tmp_path)

    space = gym.make("CartPole-v1").action_space
    log = collect("CartPole-v1", random_policy(space, 0), n_envs=2, seed=0, episodes=3)
    assert [len(o) for o in log.observations] == [len(r) + 1 for r in log.rewards]
    spec = replace(TINY, env_id="CartPole-v1")
    about = {"description": "test", "tier": "random"}
    rl_corpus.write_dataset(Path("rl"), "omni/cartpole-v1/random-v0", log, spec, (10.0, 500.0), about)
    tmp_path = tmp_path / "rl"
    ep = load_minari("omni/cartpole-v1/random-v0", root=tmp_path)
    assert ep.discrete and ep.num_actions == 2 and (ep.ref_min_score, ep.ref_max_score) == (10.0, 500.0)
    for i in range(3):
        np.testing.assert_array_equal(ep.actions[i], log.actions[i])
        np.testing.assert_array_equal(ep.observations[i], log.observations[i][:-1])
    assert not list(tmp_path.glob(".staging*"))


@settings(max_examples=20, deadline=None)
@given(lengths=st.lists(st.integers(1, 6), max_size=5), seed=st.integers(0, 9))
def test_episode_log_save_load_round_trip(lengths, seed):
    rng = np.random.default_rng(seed)
    log = EpisodeLog()
    for t in lengths:
        log.add(rng.standard_normal((t + 1, 3)), rng.standard_normal((t, 2)), rng.standard_normal(t),
                rng.random(t) < 0.3, rng.random(t) < 0.3)  # fmt: skip
    with tempfile.TemporaryDirectory() as d:
        log.save(Path(d) / "e.npz")
        back = EpisodeLog.load(Path(d) / "e.npz")
    assert len(back) == len(log) and back.steps == sum(lengths)
    for name in ("observations", "actions", "rewards", "terminations", "truncations"):
        for x, y in zip(getattr(back, name), getattr(log, name), strict=True):
            np.testing.assert_array_equal(x, y)
