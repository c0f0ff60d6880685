"""``train_fraction``: the seeded share of the training data a run keeps (``kept_share``), and the digits module's
stratified cut. The speech, trajectory and fusion modules' cuts are tested beside their other tests."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omni.data.base import kept_share
from omni.data.digits import DigitsDataModule


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), fraction=st.floats(0.01, 1.0), seed=st.integers(0, 5))
def test_kept_share_is_a_seeded_subset_of_the_asked_size(n: int, fraction: float, seed: int) -> None:
    kept = kept_share(n, fraction, seed=seed)
    assert len(kept) == min(n, max(1, round(fraction * n)))
    assert len(set(kept.tolist())) == len(kept) and (np.diff(kept) > 0).all()  # sorted, no repeats
    assert 0 <= kept.min() and kept.max() < n
    np.testing.assert_array_equal(kept, kept_share(n, fraction, seed=seed))  # the same cut every time


def test_kept_share_draws_from_the_seed_and_keeps_every_class_when_stratified() -> None:
    assert not np.array_equal(kept_share(100, 0.25, seed=0), kept_share(100, 0.25, seed=1))
    labels = np.repeat(np.arange(10), 20)
    kept = kept_share(len(labels), 0.25, labels=labels, seed=3)
    assert len(kept) == 50
    np.testing.assert_array_equal(np.bincount(labels[kept]), np.full(10, 5))  # 5 of each class's 20
    np.testing.assert_array_equal(kept_share(7, 1.0), np.arange(7))


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5, True, "half"])
def test_a_bad_train_fraction_is_refused_by_name(bad: object) -> None:
    with pytest.raises(ValueError, match="train_fraction: expected a share of the training data in \\(0, 1\\]"):
        kept_share(10, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="train_fraction"):
        DigitsDataModule(train_fraction=bad)  # type: ignore[arg-type]


def test_digits_keeps_a_stratified_quarter_of_its_training_images_and_all_of_val_and_test() -> None:
    full, cut = DigitsDataModule(), DigitsDataModule(train_fraction=0.25)
    full.setup("fit"), cut.setup("fit")
    assert len(cut.train_set) == round(0.25 * len(full.train_set))
    counts = np.bincount(cut.train_set.labels.numpy(), minlength=10)
    assert counts.min() >= 0.8 * counts.mean()  # every digit keeps its share
    # every kept image is one of the full set's (up to the two sets' own normalisation)
    full_x = full.train_set.images * full.std + full.mean
    cut_x = cut.train_set.images * cut.std + cut.mean
    flat = {tuple(np.round(x.flatten().numpy(), 4)) for x in full_x}
    assert all(tuple(np.round(x.flatten().numpy(), 4)) in flat for x in cut_x)
    for split in ("val_set", "test_set"):
        a, b = getattr(full, split), getattr(cut, split)
        assert (a.labels == b.labels).all() and len(a) == len(b)
    again = DigitsDataModule(train_fraction=0.25)
    again.setup("fit")
    assert (again.train_set.labels == cut.train_set.labels).all() and (
        again.train_set.images == cut.train_set.images
    ).all()
