"""timm ViT weights in (and so omni's image model is a ViT): ``vit_from_timm`` reproduces the timm model's logits at
real ViT shapes (randomly initialised: nothing downloads here), and refuses variants it does not map, naming the
attribute."""

from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from omni.pretrained import vit_from_timm


@pytest.mark.parametrize(
    "sizes",
    [
        {"img_size": 224, "patch_size": 16, "embed_dim": 192, "depth": 2, "num_heads": 3},  # ViT-Ti/16's widths
        {"img_size": (32, 48), "patch_size": 8, "embed_dim": 48, "depth": 3, "num_heads": 4, "mlp_ratio": 2.0},
    ],
)
def test_vit_from_timm_gives_timms_logits(sizes) -> None:
    torch.manual_seed(0)
    ref = VisionTransformer(num_classes=10, **sizes).eval()
    for p in ref.parameters():  # timm zero-initialises the head and some biases: make every weight matter
        p.data.normal_(0, 0.05)
    ours = vit_from_timm(ref)
    h, w = (sizes["img_size"],) * 2 if isinstance(sizes["img_size"], int) else sizes["img_size"]
    x = torch.randn(2, 3, h, w)
    with torch.no_grad():
        torch.testing.assert_close(ours({"image": x})["logits"], ref(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"class_token": False, "global_pool": "avg"}, "a class token"),
        ({"init_values": 1e-5}, "no layer scale"),
        ({"reg_tokens": 2}, "no register tokens"),
        ({"num_classes": 0}, "a classifier head"),
    ],
)
def test_unsupported_variants_are_named(kwargs, message) -> None:
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, **kwargs)
    with pytest.raises(ValueError, match=f"vit: expected {message}"):
        vit_from_timm(vit)
