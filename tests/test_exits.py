"""``TransformerConfig.exits``: a modality's tokens leave the trunk after some layers (late fusion)."""

import pytest
import torch

from omni.model import OmniModel
from omni.tokenizers import ImagePatchTokenizer, SensorTokenizer
from omni.tokens import Tokens
from omni.transformer import TransformerConfig

D = 32


def build(depth=3, exits=None, masks=("full",), mask_defs=None):
    torch.manual_seed(0)
    return OmniModel(
        tokenizers={
            "image": ImagePatchTokenizer(D, patch_size=4, in_chans=3, img_size=8),
            "radar": SensorTokenizer(D, in_features=4, name="radar"),
        },
        trunk=TransformerConfig(
            dim=D, depth=depth, heads=4, masks=list(masks), mask_defs=dict(mask_defs or {}), exits=dict(exits or {})
        ),
        extra_tokens={"query": 3},
    )


def inputs(b=2):
    g = torch.Generator().manual_seed(1)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])[:b]
    return {
        "image": torch.randn(b, 3, 8, 8, generator=g),
        "radar": {"x": torch.randn(b, 6, 4, generator=g), "mask": mask},
    }


def test_exits_at_full_depth_change_nothing():
    plain, late = build(), build(exits={"image": 3})
    late.load_state_dict(plain.state_dict())
    x = inputs()
    torch.testing.assert_close(late(x)["output"].tokens.x, plain(x)["output"].tokens.x, rtol=0, atol=0)


def test_exited_tokens_keep_their_state_and_later_layers_run_without_them():
    """Against two models without exits and the same weights: the staying tokens' outputs equal a model whose later
    layers hide the image keys from them (by mask); the image tokens' outputs equal a one-layer trunk's."""
    late = build(exits={"image": 1}, masks=("local", "rest"), mask_defs={"local": "local(radius=1)", "rest": "full"})
    masked = build(
        masks=("local", "rest"),
        mask_defs={"local": "local(radius=1)", "rest": "~key_modality('image') | query_modality('image')"},
    )
    one = build(depth=1, masks=("local",), mask_defs={"local": "local(radius=1)"})
    masked.load_state_dict(late.state_dict())
    one.load_state_dict(
        {k: v for k, v in late.state_dict().items() if not k.startswith(("trunk.blocks.1", "trunk.blocks.2"))}
    )
    x = inputs()
    got = late(x)["output"]
    image = got.spans["image"]
    stay = torch.ones(got.tokens.num_tokens, dtype=torch.bool)
    stay[image] = False
    real = got.tokens.pad
    want = masked(x)["output"].tokens.x
    torch.testing.assert_close(got.tokens.x[:, stay][real[:, stay]], want[:, stay][real[:, stay]], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.tokens.x[:, image], one(x)["output"].tokens.x[:, image], atol=1e-5, rtol=1e-5)
    # the exited image tokens see nothing of the later layers: another radar input leaves them as they were
    y = inputs()
    y["radar"] = {"x": y["radar"]["x"] + 1.0, "mask": y["radar"]["mask"]}
    moved = late(y)["output"].tokens.x
    torch.testing.assert_close(moved[:, image], got.tokens.x[:, image], rtol=0, atol=0)
    assert not torch.allclose(moved[:, stay], got.tokens.x[:, stay])  # the staying tokens did see it
    assert not torch.allclose(masked(y)["output"].tokens.x[:, image], want[:, image])  # without exits they move


def test_gradients_reach_an_exited_tokenizer_and_every_block():
    model = build(exits={"image": 1})
    model(inputs())["output"].tokens.x.square().sum().backward()
    for name, p in model.named_parameters():
        if name.startswith("modality_embed"):
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_exits_raise_value_errors():
    with pytest.raises(ValueError, match=r"exits.image: expected a number of layers in \[1, depth=3\], got 0"):
        build(exits={"image": 0})
    with pytest.raises(ValueError, match=r"exits.image: expected a number of layers in \[1, depth=3\], got 4"):
        build(exits={"image": 4})
    with pytest.raises(ValueError, match="exits: unknown modality 'camera'"):
        build(exits={"camera": 1})
    model = build(exits={"image": 1})
    with pytest.raises(ValueError, match="step-by-step decoding runs every token through every layer"):
        model.step(inputs(), model.start_decoding())
    tokens, _ = model.tokenize(inputs())
    swapped = tokens.modality.clone()
    swapped[1] = swapped[1].flip(0)  # the rows' layouts differ, as in packed rows of different samples
    with pytest.raises(ValueError, match="exiting modalities at the same positions in every row"):
        model.layer_tokens(Tokens(**{**tokens.meta(), "x": tokens.x, "modality": swapped}))
