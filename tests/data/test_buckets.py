"""DurationBucketSampler: each utterance once per epoch, ranks dealt the rows of one process's batches (at W times the
budget), the seconds budget, bucket purity, (seed, epoch) order; BatchOf loads what batch_sampler= would."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from omni.data.buckets import BatchOf, DurationBucketSampler

durations = st.lists(st.floats(0.05, 30.0), min_size=1, max_size=150)
budgets = st.floats(0.5, 120.0)
buckets = st.integers(1, 12)


def flat(batches: list[list[int]]) -> list[int]:
    return [i for b in batches for i in b]


def ranks(d, world: int, epoch: int = 0, **kw) -> list[list[list[int]]]:
    out = []
    for r in range(world):
        s = DurationBucketSampler(d, num_replicas=world, rank=r, **kw)
        s.set_epoch(epoch)
        out.append(list(s))
        assert len(out[-1]) == len(s)  # __len__ is what iterating gives
    return out


@settings(max_examples=150, deadline=None)
@given(durations, budgets, buckets, st.integers(0, 3), st.integers(0, 5))
def test_one_rank_sees_every_utterance_once_per_epoch(d, budget, n_buckets, seed, epoch):
    s = DurationBucketSampler(d, budget, n_buckets, seed=seed, num_replicas=1, rank=0)
    s.set_epoch(epoch)
    batches = list(s)
    assert sorted(flat(batches)) == list(range(len(d))) and len(batches) == len(s) == s.num_batches


@settings(max_examples=150, deadline=None)
@given(durations, budgets, buckets, st.integers(1, 4), st.integers(0, 5))
def test_ranks_share_the_rows_of_one_processs_batches_at_w_times_the_budget(d, budget, n_buckets, world, epoch):
    per_rank = ranks(d, world, epoch, max_batch_seconds=budget, num_buckets=n_buckets, seed=7)
    one = DurationBucketSampler(d, budget * world, n_buckets, seed=7, num_replicas=1, rank=0)
    one.set_epoch(epoch)
    assert all(len(r) == len(one) for r in per_rank)  # every rank a share of every batch: the same count
    for j, batch in enumerate(one):
        shares = [r[j] for r in per_rank]
        if len(batch) >= world:  # rank r holds rows r, r + W, ...: together, the batch one process trains on
            assert [i for k in range(len(batch)) for i in shares[k % world][k // world : k // world + 1]] == batch
        else:  # fewer rows than ranks: rows repeat so every rank has one
            assert all(len(x) == 1 for x in shares) and {x[0] for x in shares} == set(batch)
    if all(len(b) >= world for b in one):
        assert sorted(flat([b for r in per_rank for b in r])) == list(range(len(d)))  # each utterance once


@settings(max_examples=150, deadline=None)
@given(durations, budgets, buckets, st.integers(1, 4))
def test_batches_respect_the_budget_and_stay_in_one_bucket(d, budget, n_buckets, world):
    s = DurationBucketSampler(d, budget, n_buckets, num_replicas=world, rank=0)
    bucket_of = {i: k for k, b in enumerate(s.buckets) for i in b.tolist()}
    for batch in s.batches():  # a global batch: W times the budget
        assert len(batch) == 1 or len(batch) * max(d[i] for i in batch) <= budget * world
        assert len({bucket_of[i] for i in batch}) == 1
    for share in s:  # a rank's share: at most one utterance over its budget
        assert len(share) == 1 or (len(share) - 1) * max(d[i] for i in share) <= budget


@settings(max_examples=60, deadline=None)
@given(durations, st.integers(1, 9), st.integers(1, 4))
def test_fixed_batch_size(d, size, world):
    s = DurationBucketSampler(d, max_batch_seconds=0.01, batch_size=size, num_replicas=world, rank=0)
    assert all(1 <= len(b) <= size * world for b in s.batches())  # the 0.01 s budget is ignored
    assert all(1 <= len(b) <= size for b in s)
    assert sorted(flat(s.batches())) == list(range(len(d)))


@settings(max_examples=60, deadline=None)
@given(durations, budgets, st.integers(1, 4))
def test_uneven_shares_never_repeat(d, budget, world):
    per_rank = ranks(d, world, max_batch_seconds=budget, even=False)
    assert sorted(flat([b for r in per_rank for b in r])) == list(range(len(d)))
    assert all(len(b) >= 1 for r in per_rank for b in r)


def test_epoch_changes_the_order_and_the_same_epoch_reproduces_it():
    d = torch.linspace(1.0, 20.0, 300).tolist()
    a, b = DurationBucketSampler(d, 40.0, seed=3), DurationBucketSampler(d, 40.0, seed=3)
    first = list(a)
    a.set_epoch(1)
    second = list(a)
    assert first != second and sorted(map(sorted, first)) != sorted(map(sorted, second))  # order and membership
    assert len(first) == len(second) == len(a)  # the count is fixed
    b.set_epoch(1)
    assert list(b) == second and list(b) == second  # same (seed, epoch), same batches, however often it is read
    assert list(DurationBucketSampler(d, 40.0, seed=4)) != first


def test_unshuffled_batches_follow_duration_and_bucketing_saves_padding():
    g = torch.Generator().manual_seed(0)
    d = (torch.rand(400, generator=g) * 19 + 1).tolist()
    s = DurationBucketSampler(d, 60.0, num_buckets=10, shuffle=False)
    longest = [max(d[i] for i in b) for b in s]
    assert longest == sorted(longest) and list(s) == list(s)

    def padded(num_buckets: int) -> float:
        return sum(len(b) * max(d[i] for i in b) for b in DurationBucketSampler(d, 60.0, num_buckets=num_buckets))

    assert padded(10) < 1.15 * sum(d) < 1.3 * sum(d) < padded(1)  # shuffled batches: buckets keep padding small


def test_batch_of_and_batch_sampler_load_the_same_batches():
    data = [torch.tensor([float(i)]) for i in range(23)]
    s = DurationBucketSampler([float(i % 5 + 1) for i in range(23)], 6.0, num_buckets=3, seed=1)
    via_batch_sampler = [b.flatten().tolist() for b in DataLoader(data, batch_sampler=s)]
    loader = DataLoader(BatchOf(data), sampler=s, batch_size=None, collate_fn=torch.utils.data.default_collate)
    via_sampler = [b.flatten().tolist() for b in loader]
    assert via_batch_sampler == via_sampler == [[float(i) for i in b] for b in s]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"durations": []}, "durations: expected one finite, non-negative duration per utterance"),
        ({"durations": [1.0, -2.0]}, "durations: expected one finite"),
        ({"durations": [1.0, float("nan")]}, "durations: expected one finite"),
        ({"max_batch_seconds": 0.0}, "max_batch_seconds: expected a positive number of seconds, got 0.0"),
        ({"num_buckets": 0}, "num_buckets: expected a positive int, got 0"),
        ({"batch_size": 2.5}, "batch_size: expected a positive int, got 2.5"),
        ({"num_replicas": 2, "rank": 2}, r"rank: expected an int in \[0, num_replicas=2\), got 2"),
        ({"num_replicas": 0}, "num_replicas: expected a positive int, got 0"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DurationBucketSampler(**{"durations": [1.0, 2.0], **kwargs})
