import pytest
import torch

from omni.data.toy_sequences import BOS, EOS, PAD, ToySequenceDataModule, make_pairs


@pytest.mark.parametrize("task", ["copy", "reverse"])
def test_targets_are_bos_source_or_its_reverse_eos(task):
    d = make_pairs(50, num_symbols=5, min_len=1, max_len=6, task=task, seed=0)
    assert torch.equal(make_pairs(50, 5, 1, 6, task, seed=0)["source"], d["source"])  # seeded
    for src, smask, tgt, tmask in zip(d["source"], d["source_mask"], d["target"], d["target_mask"], strict=True):
        body = src[smask].tolist()
        assert 1 <= len(body) <= 6 and all(3 <= s < 8 for s in body) and src[~smask].eq(PAD).all()
        want = [BOS, *(body if task == "copy" else body[::-1]), EOS]
        assert tgt[tmask].tolist() == want and tgt[~tmask].eq(PAD).all()
    lengths = d["source_mask"].sum(1)
    assert lengths.min() == 1 and lengths.max() == 6  # every length occurs among 50


def test_batches_and_vocabulary():
    dm = ToySequenceDataModule(num_symbols=4, max_len=5, num_train=20, num_val=8, num_test=8, batch_size=8)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["source"]["ids"].shape == (8, 5) and batch["source"]["mask"].dtype == torch.bool
    assert batch["target"]["ids"].shape == (8, 7) and batch["target"]["mask"].shape == (8, 7)
    assert (dm.vocab_size, dm.pad_id, dm.bos_id, dm.eos_id) == (7, PAD, BOS, EOS)
    with pytest.raises(ValueError, match="task: expected one of 'copy', 'reverse', got 'sort'"):
        ToySequenceDataModule(task="sort")
    with pytest.raises(ValueError, match="max_len: expected >= min_len=3, got 2"):
        ToySequenceDataModule(min_len=3, max_len=2)
    with pytest.raises(ValueError, match="num_val: expected a positive int, got 0"):
        ToySequenceDataModule(num_val=0)
