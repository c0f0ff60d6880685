"""Packing: a packed forward equals per-sample forwards, on every attention path, for any modality mix."""

import pytest
import torch

from omni.model import OmniModel
from omni.tokenizers import ImagePatchTokenizer, MelSpectrogramTokenizer, SensorTokenizer
from omni.tokens import Tokens, pack, unpack
from omni.transformer import TransformerConfig

D = 32


def model(attention: str, masks=("local", "global")) -> OmniModel:
    torch.manual_seed(0)
    cfg = TransformerConfig(
        dim=D,
        depth=2,
        heads=4,
        masks=list(masks),
        mask_defs={"local": "local(radius=2) | global_tokens()", "global": "full"},
        attention=attention,
    )
    return OmniModel(
        tokenizers={
            "image": ImagePatchTokenizer(D, patch_size=4, in_chans=3, img_size=16),
            "audio": MelSpectrogramTokenizer(D),
            "radar": SensorTokenizer(D, in_features=4, name="radar"),
        },
        trunk=cfg,
        extra_tokens={"cls": 1},
    ).eval()


def samples(m: OmniModel) -> list[Tokens]:
    """Single samples of different modality mixes and lengths, tokenized by the model (batch size 1 each)."""
    g = torch.Generator().manual_seed(1)
    raw = [
        {"image": torch.randn(1, 3, 16, 16, generator=g)},
        {"audio": torch.randn(1, 4800, generator=g) * 0.1},
        {"image": torch.randn(1, 3, 8, 16, generator=g), "radar": {"x": torch.randn(1, 7, 4, generator=g)}},
        {"audio": torch.randn(1, 1600, generator=g) * 0.1, "radar": {"x": torch.randn(1, 3, 4, generator=g)}},
        {"radar": {"x": torch.randn(1, 5, 4, generator=g)}},
    ]
    return [m.tokenize(r)[0] for r in raw]


@pytest.mark.parametrize("attention", ["dense", "sparse", "flex"])
def test_packed_forward_equals_per_sample_forwards(attention):
    m = model(attention)
    items = samples(m)
    lengths = [t.num_tokens for t in items]
    packed, info = pack(items, max_len=max(lengths) + 20)
    assert info.num_rows < len(items)  # samples really share rows
    with torch.no_grad():
        out = unpack(m.mix(packed).x, info)
        for i, t in enumerate(items):
            alone = m.mix(t).x[0]
            torch.testing.assert_close(out[i], alone, atol=1e-5, rtol=1e-5)


def test_packed_gradients_equal_per_sample_gradients_on_the_sparse_path():
    m = model("sparse")
    items = samples(m)
    packed, info = pack(items, max_len=160)
    loss_packed = sum(o.square().mean() for o in unpack(m.mix(packed).x, info))
    g_packed = torch.autograd.grad(loss_packed, list(m.trunk.parameters()))
    loss_alone = sum(m.mix(t).x[0].square().mean() for t in items)
    g_alone = torch.autograd.grad(loss_alone, list(m.trunk.parameters()))
    for a, b in zip(g_packed, g_alone, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_pack_is_greedy_whole_samples_and_rejects_too_long():
    items = [Tokens.create(torch.randn(1, n, 4)) for n in (5, 3, 4, 2)]
    packed, info = pack(items, max_len=7)
    assert info.num_rows == 2  # first-fit, longest first: [5, 2] and [4, 3]
    assert packed.pad.sum().item() == 14
    for r in range(info.num_rows):  # samples in a row are numbered 0, 1, ... and positions restart per sample
        ids = packed.sample[r][packed.pad[r]].unique().tolist()
        assert ids == list(range(len(ids)))
    with pytest.raises(ValueError, match="max_len=4"):
        pack(items, max_len=4)
    with pytest.raises(ValueError, match="unpack: expected x of shape"):
        unpack(torch.zeros(3, 7, 4), info)


def test_schedule_layers_get_their_own_masks_and_paths_agree():
    m_dense, m_sparse = model("dense"), model("sparse")
    items = samples(m_dense)
    packed, _ = pack(items, max_len=200)
    plans = m_dense.attention_plans(packed, "dense")
    assert not torch.equal(plans[0], plans[1])  # local layer vs global layer
    with torch.no_grad():
        torch.testing.assert_close(m_dense.mix(packed).x, m_sparse.mix(packed).x, atol=1e-5, rtol=1e-5)
    cfg = m_dense.trunk.config
    assert [type(x).__name__ for x in cfg.layer_masks()] == ["Or", "Full"]
    with pytest.raises(ValueError, match="TransformerConfig.masks\\[0\\]"):
        TransformerConfig(dim=8, depth=2, heads=2, masks=["lokal"])
    with pytest.raises(ValueError, match="TransformerConfig.mask_defs.a"):
        TransformerConfig(dim=8, depth=2, heads=2, masks=["a"], mask_defs={"a": "local(r=1)"})
