"""TrajectoryDataModule: windows drawn in proportion to episode length, padding and masks, returns-to-go against a
direct sum, state normalisation, per-epoch determinism, and bad datasets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from rl_episodes import write_d4rl

from omni.data.episodes import Episodes
from omni.data.trajectories import TrajectoryDataModule, returns_to_go


def labelled(lengths: list[int], seed: int = 0) -> Episodes:
    """Episodes whose observation at step t of episode e is (e, t, noise): every window can be traced back."""
    rng = np.random.default_rng(seed)
    obs = [
        np.stack([np.full(n, e), np.arange(n), rng.normal(size=n)], 1).astype(np.float32) for e, n in enumerate(lengths)
    ]
    return Episodes(
        observations=obs,
        actions=[rng.uniform(-1, 1, size=(n, 2)).astype(np.float32) for n in lengths],
        rewards=[rng.normal(size=n).astype(np.float32) for n in lengths],
        terminations=[np.arange(n) == n - 1 for n in lengths],
        truncations=[np.zeros(n, dtype=bool) for n in lengths],
        env_id="Hopper-v5",
        source="labelled",
    )


def module(episodes: Episodes, **kw) -> TrajectoryDataModule:
    args = {"context": 4, "batch_size": 16, "steps_per_epoch": 3, "seed": 0, "normalize_states": False, **kw}
    dm = TrajectoryDataModule.from_episodes(episodes, **args)
    dm.setup("fit")
    return dm


def test_windows_are_drawn_in_proportion_to_episode_length():
    lengths = [5, 20, 75]
    dm = module(labelled(lengths), batch_size=4000)
    traj = dm.train_set[(0, 0)]["trajectory"]
    episode = traj["states"][:, 0, 0].long()  # the first step is always real
    freq = torch.bincount(episode, minlength=3).double() / len(episode)
    expected = torch.tensor(lengths, dtype=torch.float64) / sum(lengths)
    # 4000 draws: the standard error of each frequency is below 0.008; 4 of them is a loose but real bound
    torch.testing.assert_close(freq, expected, atol=0.03, rtol=0)
    # inside an episode, every start is equally likely
    starts = traj["timesteps"][episode == 2, 0]
    counts = torch.bincount(starts, minlength=75).double()
    assert counts.min() > 0 and counts.max() / counts.mean() < 2.0


@settings(max_examples=20, deadline=None)
@given(lengths=st.lists(st.integers(1, 12), min_size=1, max_size=5), k=st.integers(1, 6), scale=st.floats(0.001, 1))
def test_every_window_matches_its_episode(lengths, k, scale):
    eps = labelled(lengths)
    dm = module(eps, context=k, reward_scale=scale, batch_size=32)
    traj = dm.train_set[(1, 2)]["trajectory"]
    assert traj["states"].shape == (32, k, 3) and traj["actions"].shape == (32, k, 2)
    assert traj["returns_to_go"].shape == (32, k, 1) and traj["mask"].dtype == torch.bool
    for row in range(32):
        e, t0 = int(traj["states"][row, 0, 0]), int(traj["states"][row, 0, 1])
        n = lengths[e]
        real = min(k, n - t0)
        mask = traj["mask"][row]
        assert mask[:real].all() and not mask[real:].any()  # padding only past the episode's end
        rtg = np.cumsum(eps.rewards[e][::-1].astype(np.float64))[::-1] * scale  # a direct suffix sum
        for j in range(real):
            assert int(traj["timesteps"][row, j]) == t0 + j
            assert float(traj["states"][row, j, 1]) == t0 + j
            np.testing.assert_allclose(traj["actions"][row, j].numpy(), eps.actions[e][t0 + j])
            np.testing.assert_allclose(float(traj["returns_to_go"][row, j, 0]), rtg[t0 + j], rtol=1e-5, atol=1e-6)
        pad = ~mask
        assert (traj["states"][row][pad] == 0).all() and (traj["actions"][row][pad] == 0).all()
        assert (traj["returns_to_go"][row][pad] == 0).all()
        assert (traj["timesteps"][row][pad] == n - 1).all()  # the last real timestep, repeated


def test_returns_to_go_is_the_suffix_sum():
    r = np.array([1.0, -2.0, 3.5, 0.25])
    np.testing.assert_allclose(returns_to_go(r), [2.75, 1.75, 3.75, 0.25])


def test_states_are_normalised_with_the_dataset_statistics(hopper_episodes):
    dm = module(hopper_episodes, normalize_states=True)
    mean, std = hopper_episodes.state_stats()
    np.testing.assert_allclose(dm.state_mean, mean, rtol=1e-5)
    np.testing.assert_allclose(dm.state_std, std, rtol=1e-5)
    flat = dm.windows.states.astype(np.float64)
    np.testing.assert_allclose(flat.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(flat.std(0), 1, atol=1e-3)
    assert (dm.state_dim, dm.act_dim, dm.discrete, dm.env_id) == (11, 3, False, "Hopper-v5")
    assert dm.max_timestep == 1000  # Hopper-v5's time limit, longer than any random episode
    low, high = dm.action_bounds
    assert low.tolist() == [-1, -1, -1] and high.tolist() == [1, 1, 1]
    assert dm.return_stats["max"] == pytest.approx(hopper_episodes.returns.max())


def test_batches_depend_on_seed_and_epoch_only(cartpole_episodes):
    a, b = module(cartpole_episodes), module(cartpole_episodes)
    la, lb = a.train_dataloader(), b.train_dataloader()
    la.sampler.set_epoch(3)
    lb.sampler.set_epoch(3)
    for x, y in zip(la, lb, strict=True):
        assert all(torch.equal(x["trajectory"][k], y["trajectory"][k]) for k in x["trajectory"])
    lb.sampler.set_epoch(4)
    assert not torch.equal(next(iter(la))["trajectory"]["states"], next(iter(lb))["trajectory"]["states"])
    val = a.val_dataloader()
    val.sampler.set_epoch(5)  # held-out windows never change
    assert torch.equal(next(iter(val))["trajectory"]["states"], a.val_set[(0, 0)]["trajectory"]["states"])
    assert (
        cartpole_episodes.discrete
        and a.act_dim == 2
        and a.train_set[(0, 0)]["trajectory"]["actions"].dtype == torch.long
    )


def test_bad_datasets_raise_value_errors_naming_the_file(tmp_path, hopper_episodes):
    import h5py

    path = write_d4rl(hopper_episodes, tmp_path / "nan.hdf5")
    with h5py.File(path, "a") as f:
        r = f["rewards"][()]
        r[3] = np.nan
        del f["rewards"]
        f["rewards"] = r
    with pytest.raises(ValueError, match="nan.hdf5: rewards: expected finite"):
        TrajectoryDataModule(dataset=path).setup("fit")
    short = write_d4rl(hopper_episodes, tmp_path / "short.hdf5")
    with h5py.File(short, "a") as f:
        a = f["actions"][()]
        del f["actions"]
        f["actions"] = a[:-2]
    with pytest.raises(ValueError, match="short.hdf5: actions: expected .* rows like observations"):
        TrajectoryDataModule(dataset=short).setup("fit")
    with pytest.raises(ValueError, match="context: expected a positive int"):
        TrajectoryDataModule(dataset=path, context=0)
    with pytest.raises(ValueError, match="reward_scale: expected > 0"):
        TrajectoryDataModule(dataset=path, reward_scale=0.0)


def test_train_fraction_keeps_a_fixed_share_of_the_episodes_and_draws_windows_only_from_them() -> None:
    episodes = labelled([30, 25, 40, 35, 20, 45, 30, 50])
    dm = module(episodes, train_fraction=0.25, normalize_states=True)
    kept = sorted(int(o[0, 0]) for o in dm.episodes.observations)
    assert len(kept) == 2 and kept == sorted(
        int(o[0, 0]) for o in module(episodes, train_fraction=0.25).episodes.observations
    )
    states = np.concatenate([episodes.observations[e] for e in kept]).astype(np.float64)
    np.testing.assert_allclose(dm.state_mean, states.mean(0), rtol=1e-5)  # statistics of the kept episodes only
    seen = set()
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        for batch in loader:
            t = batch["trajectory"]
            raw = t["states"] * torch.from_numpy(dm.state_std) + torch.from_numpy(dm.state_mean)
            seen |= {round(float(e)) for e in raw[..., 0][t["mask"]]}
    assert seen == set(kept)
    with pytest.raises(ValueError, match="train_fraction"):
        TrajectoryDataModule.from_episodes(episodes, train_fraction=2.0)
