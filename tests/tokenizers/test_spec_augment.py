"""SpecAugment in MelSpectrogramTokenizer: identity in eval, masks of the expected size in training, masked values
and padding at each clip's floor."""

from __future__ import annotations

import pytest
import torch

from omni.tokenizers import MelSpectrogramTokenizer
from omni.tokenizers.audio import SpecAugment


def pair(spec_augment: dict | None) -> tuple[MelSpectrogramTokenizer, MelSpectrogramTokenizer]:
    torch.manual_seed(0)
    plain = MelSpectrogramTokenizer(16)
    torch.manual_seed(0)
    return plain, MelSpectrogramTokenizer(16, spec_augment=spec_augment)


def clips() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 8000, generator=g) * 0.3, torch.tensor([8000, 5000, 2000])


def test_eval_is_unchanged_and_training_masks():
    plain, augmented = pair({})
    audio, lengths = clips()
    ref = plain.eval()(audio, lengths)
    assert torch.equal(augmented.eval()(audio, lengths).x, ref.x)  # eval: bit for bit the same
    assert torch.equal(plain.train()(audio, lengths).x, ref.x)  # no augmentation, no randomness in training
    torch.manual_seed(1)
    trained = augmented.train()(audio, lengths)
    assert not torch.allclose(trained.x, ref.x) and torch.equal(trained.pad, ref.pad)
    solo = augmented.eval()(audio[2:, :2000])  # padded == unpadded still holds with augmentation configured
    assert torch.allclose(solo.x[0], ref.x[2][ref.pad[2]], atol=1e-5)


def test_masked_share_is_what_the_widths_give():
    aug = SpecAugment().train()
    torch.manual_seed(0)
    log_spec, floor = torch.rand(64, 80, 1000), torch.full((64, 1, 1), -1.0)  # nothing equals the floor by chance
    out = aug(log_spec, floor)
    masked = out == floor
    assert torch.equal(out[~masked], log_spec[~masked])  # what is not masked is untouched
    bins = masked.all(dim=2).float().mean(dim=1)  # (B,) share of mel bins masked over all frames
    frames = masked.all(dim=1).float().mean(dim=1)  # (B,) share of frames masked over all bins
    # 2 bands of U{0..26} bins of 80: 26 bins at most without overlap, ~0.3 on average; 10 spans of U{0..49} frames
    # of 1000: at most 0.49, ~0.22 on average once overlaps are counted
    assert (bins <= 52 / 80).all() and 0.24 < bins.mean() < 0.36
    assert (frames <= 0.49).all() and 0.17 < frames.mean() < 0.27
    assert (masked == (masked.all(2, keepdim=True) | masked.all(1, keepdim=True))).all()  # only whole bands, spans
    assert len({tuple(b.nonzero().flatten().tolist()) for b in masked.all(dim=2)}) > 32  # iid: each clip its own


def test_padding_frames_stay_as_they_were():
    tok = MelSpectrogramTokenizer(16, spec_augment={"time_masks": 40, "time_width_ratio": 0.2}).train()
    audio, lengths = clips()
    log_spec, frame_mask = tok.log_mel(audio, lengths)
    floor = log_spec.amax(dim=(1, 2), keepdim=True) - 2.0
    torch.manual_seed(0)
    out = tok.spec_augment(log_spec, floor)
    pad = ~frame_mask[:, None, :].expand_as(log_spec)
    assert torch.equal(out[pad], log_spec[pad]) and (out != log_spec).any()
    assert torch.equal(tok.spec_augment.eval()(log_spec, floor), log_spec)


@pytest.mark.parametrize(
    ("spec_augment", "match"),
    [
        ({"freq_mask": 2}, "spec_augment: expected None or a dict of freq_masks, freq_width, time_masks, time_width_"),
        ([2, 27], "spec_augment: expected None or a dict"),
        ({"time_masks": -1}, "spec_augment.time_masks: expected a non-negative int, got -1"),
        ({"time_width_ratio": 1.5}, r"spec_augment.time_width_ratio: expected a share in \[0, 1\], got 1.5"),
    ],
)
def test_bad_spec_augment(spec_augment, match):
    with pytest.raises(ValueError, match=match):
        MelSpectrogramTokenizer(16, spec_augment=spec_augment)
