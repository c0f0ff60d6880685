"""Pretrained weights in: a timm ``VisionTransformer`` as an omni image model with the same logits.

``vit_from_timm(vit)`` reads the sizes off the timm model, builds ``OmniModel`` (``ImagePatchTokenizer`` + trunk +
``ClassificationHead`` on a CLS token) and copies every weight: patch projection, position table (timm adds the
CLS position to the CLS token; omni gives extra tokens no position, so it is folded into the learned CLS), blocks,
final norm, head. The modality embedding is zeroed (a lone modality: a constant, which a fine-tune can learn). Only
the classic ViT layout is mapped; other timm variants are refused with the attribute that differs.

With timm's pretrained weights on disk (``timm.create_model("vit_tiny_patch16_224", pretrained=True,
pretrained_cfg_overlay={"file": PATH})``), ``vit_from_timm`` gives a model ``omni fit`` can fine-tune.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from omni.heads import ClassificationHead
from omni.model import OmniModel
from omni.tokenizers import ImagePatchTokenizer
from omni.transformer import TransformerConfig

__all__ = ["timm_vit_state_dict", "vit_from_timm"]


def _require(ok: bool, what: str, got: object) -> None:
    if not ok:
        raise ValueError(f"vit: expected {what}, got {got!r}")


def _check_layout(vit: nn.Module) -> None:
    """Refuse timm variants whose computation omni's ViT does not reproduce, naming the attribute."""
    _require(getattr(vit, "cls_token", None) is not None, "a class token (class_token=True)", None)
    _require(getattr(vit, "global_pool", "token") == "token", "global_pool='token'", getattr(vit, "global_pool", None))
    _require(getattr(vit, "num_reg_tokens", 0) == 0, "no register tokens", getattr(vit, "num_reg_tokens", None))
    _require(not getattr(vit, "no_embed_class", False), "no_embed_class=False", True)
    _require(isinstance(vit.norm_pre, nn.Identity), "no pre-norm (pre_norm=False)", type(vit.norm_pre).__name__)
    _require(isinstance(vit.fc_norm, nn.Identity), "fc_norm off", type(vit.fc_norm).__name__)
    block = vit.blocks[0]
    _require(isinstance(block.ls1, nn.Identity), "no layer scale (init_values=None)", type(block.ls1).__name__)
    _require(isinstance(block.norm1, nn.LayerNorm), "LayerNorm blocks", type(block.norm1).__name__)
    _require(block.attn.qkv.bias is not None, "qkv_bias=True", False)
    _require(isinstance(block.attn.q_norm, nn.Identity), "no qk-norm", type(block.attn.q_norm).__name__)


def timm_vit_state_dict(vit: nn.Module, model: OmniModel, head: str = "logits") -> dict[str, Tensor]:
    """``model``'s state dict filled from the timm ``vit`` (the layout of ``vit_from_timm``'s model)."""
    _check_layout(vit)
    sd = vit.state_dict()
    mapped = {
        "tokenizers.image.proj.weight": sd["patch_embed.proj.weight"],
        "tokenizers.image.proj.bias": sd["patch_embed.proj.bias"],
        "tokenizers.image.pos_embed": sd["pos_embed"][:, 1:],
        "extra_tokens.cls": sd["cls_token"][0] + sd["pos_embed"][0, :1],
        "modality_embed.weight": torch.zeros_like(model.modality_embed.weight),
        "trunk.norm.weight": sd["norm.weight"],
        "trunk.norm.bias": sd["norm.bias"],
        f"heads.{head}.fc.weight": sd["head.weight"],
        f"heads.{head}.fc.bias": sd["head.bias"],
    }
    for i in range(len(vit.blocks)):
        for name in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
            for p in ("weight", "bias"):
                mapped[f"trunk.blocks.{i}.{name}.{p}"] = sd[f"blocks.{i}.{name}.{p}"]
    return mapped


def vit_from_timm(vit: nn.Module) -> OmniModel:
    """An ``OmniModel`` with the timm ``VisionTransformer``'s sizes and weights: the same logits (fp32, ~1e-6).

    The image goes in under the key ``image`` and the logits come out under ``logits``.
    """
    _check_layout(vit)
    if not hasattr(vit, "head") or not isinstance(vit.head, nn.Linear):
        raise ValueError(f"vit: expected a classifier head (num_classes > 0), got {type(vit.head).__name__}")
    patch = vit.patch_embed
    dim = vit.embed_dim
    block = vit.blocks[0]
    model = OmniModel(
        tokenizers={
            "image": ImagePatchTokenizer(
                dim,
                patch_size=patch.patch_size[0],
                in_chans=patch.proj.in_channels,
                img_size=tuple(patch.img_size),
            )
        },
        trunk=TransformerConfig(
            dim=dim,
            depth=len(vit.blocks),
            heads=block.attn.num_heads,
            mlp_ratio=block.mlp.fc1.out_features / dim,
        ),
        heads={"logits": ClassificationHead(dim, vit.head.out_features)},
        extra_tokens={"cls": 1},
    )
    model.load_state_dict(timm_vit_state_dict(vit, model), strict=True)
    return model.eval()
