"""Our image model is a ViT: with timm's weights copied in, it gives timm's logits."""

import torch
from timm.models.vision_transformer import VisionTransformer

from omni.heads import ClassificationHead
from omni.model import OmniModel
from omni.tokenizers import ImagePatchTokenizer
from omni.transformer import TransformerConfig


def test_same_weights_same_logits_as_timm_vit():
    torch.manual_seed(0)
    dim, depth, heads, classes = 48, 3, 4, 7
    ref = VisionTransformer(
        img_size=32, patch_size=8, in_chans=3, num_classes=classes, embed_dim=dim, depth=depth, num_heads=heads
    ).eval()
    ours = OmniModel(
        tokenizers={"image": ImagePatchTokenizer(dim, patch_size=8, in_chans=3, img_size=32)},
        trunk=TransformerConfig(dim=dim, depth=depth, heads=heads),
        heads={"logits": ClassificationHead(dim, classes)},
        extra_tokens={"cls": 1},
    ).eval()
    sd = ref.state_dict()
    mapped = {
        "tokenizers.image.proj.weight": sd["patch_embed.proj.weight"],
        "tokenizers.image.proj.bias": sd["patch_embed.proj.bias"],
        "tokenizers.image.pos_embed": sd["pos_embed"][:, 1:],
        # timm adds pos_embed[0] to its CLS token; ours has no position for CLS, so fold it in.
        "extra_tokens.cls": sd["cls_token"][0] + sd["pos_embed"][0, :1],
        "modality_embed.weight": torch.zeros_like(ours.modality_embed.weight),
        "trunk.norm.weight": sd["norm.weight"],
        "trunk.norm.bias": sd["norm.bias"],
        "heads.logits.fc.weight": torch.randn(classes, dim),
        "heads.logits.fc.bias": torch.randn(classes),
    }
    ref.head.weight.data.copy_(mapped["heads.logits.fc.weight"])
    ref.head.bias.data.copy_(mapped["heads.logits.fc.bias"])
    for i in range(depth):
        for name in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
            for p in ("weight", "bias"):
                mapped[f"trunk.blocks.{i}.{name}.{p}"] = sd[f"blocks.{i}.{name}.{p}"]
    missing, unexpected = ours.load_state_dict(mapped, strict=True)
    assert not missing and not unexpected
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(ours({"image": x})["logits"], ref(x), atol=1e-5, rtol=1e-5)
