import pytest
import torch
from einops import rearrange
from timm.layers import PatchEmbed
from torch import nn

from omni.tokenizers import ImagePatchTokenizer


def test_patch_stem_equals_timm_patch_embed():
    torch.manual_seed(0)
    ours = ImagePatchTokenizer(32, patch_size=4, in_chans=3, img_size=16, pos_embed="none")
    ref = PatchEmbed(img_size=16, patch_size=4, in_chans=3, embed_dim=32)
    ref.proj.load_state_dict(ours.proj.state_dict())
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(ours(x).x, ref(x))


def test_positions_are_patch_grid_coordinates_row_major():
    tok = ImagePatchTokenizer(16, patch_size=2, in_chans=1, img_size=(4, 6))
    t = tok(torch.randn(1, 1, 4, 6))
    assert t.num_tokens == 2 * 3
    assert t.pos[0].tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]


@pytest.mark.parametrize("pos_embed", ["learned", "sincos", "none"])
@pytest.mark.parametrize("stem", ["patch", "conv", "strided"])
def test_any_size_divisible_by_the_patch(pos_embed, stem):
    tok = ImagePatchTokenizer(16, patch_size=4, in_chans=3, img_size=16, pos_embed=pos_embed, stem=stem).eval()
    for h, w in [(16, 16), (8, 24), (32, 12)]:
        t = tok(torch.randn(2, 3, h, w))
        assert t.x.shape == (2, (h // 4) * (w // 4), 16)
        assert torch.isfinite(t.x).all()


def test_strided_stem_halves_the_image_down_to_the_patch_grid():
    """Xiao et al.'s stem for p = 8: three stride-2 3x3 convs (16, 32, 64 channels), then a 1x1 projection; the
    token grid is the patch grid, row-major like the patch stem's."""
    tok = ImagePatchTokenizer(24, patch_size=8, img_size=(64, 128), stem="strided", stem_channels=64)
    convs = [m for m in tok.stem if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.stride, c.kernel_size) for c in convs] == [(16, (2, 2), (3, 3)), (32, (2, 2), (3, 3)),
                                                                          (64, (2, 2), (3, 3))]  # fmt: skip
    assert tok.proj.kernel_size == (1, 1) and tok.proj.in_channels == 64
    t = tok.eval()(torch.randn(2, 3, 64, 128))
    assert t.x.shape == (2, 8 * 16, 24) and t.pos[0, 17].tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="patch_size: expected a power of 2 with stem='strided', got 6"):
        ImagePatchTokenizer(16, patch_size=6, img_size=12, stem="strided")


@pytest.mark.parametrize("stem", ["patch", "strided"])
def test_feature_map_is_the_tokens_before_the_position_encoding(stem):
    torch.manual_seed(0)
    tok = ImagePatchTokenizer(16, patch_size=4, img_size=(8, 12), pos_embed="sincos", stem=stem).eval()
    images = torch.randn(2, 3, 8, 12)
    features = tok.feature_map(images)
    assert features.shape == (2, 16, 2, 3)
    pos = tok(torch.zeros(1, 3, 8, 12)).x - rearrange(tok.feature_map(torch.zeros(1, 3, 8, 12)), "b d h w -> b (h w) d")
    torch.testing.assert_close(tok(images).x, rearrange(features, "b d h w -> b (h w) d") + pos)


def test_learned_table_is_used_as_is_at_its_own_size_and_interpolated_otherwise():
    tok = ImagePatchTokenizer(16, patch_size=4, in_chans=1, img_size=8)
    zero = torch.zeros(1, 1, 8, 8)
    torch.testing.assert_close(tok(zero).x - tok.proj.bias, tok.pos_embed)
    # at double size, the interpolated table still varies smoothly and matches the corners roughly
    big = tok(torch.zeros(1, 1, 16, 16)).x - tok.proj.bias
    assert big.shape == (1, 16, 16)
    assert not torch.allclose(big[0, 0], big[0, -1])


BAD = [
    (torch.randn(3, 16, 16), "images: expected a 4-D tensor"),  # wrong rank
    (torch.randn(2, 1, 16, 16), "images: expected size 3 in dimension 1"),  # wrong channels
    (torch.randn(2, 3, 15, 16), "images: expected H divisible by patch_size=4"),
    (torch.randn(2, 3, 16, 18), "images: expected W divisible by patch_size=4"),
    (torch.full((2, 3, 16, 16), float("nan")), "images: expected finite values, got NaN"),
    (torch.full((2, 3, 16, 16), float("inf")), "images: expected finite values, got inf"),
    (torch.zeros(0, 3, 16, 16), "images: expected a non-empty tensor"),
    (torch.zeros(2, 3, 16, 16, dtype=torch.uint8), "images: expected a floating dtype, got torch.uint8"),
    ([[1.0]], "images: expected a torch.Tensor"),
]


@pytest.mark.parametrize(("images", "message"), BAD)
def test_bad_images_raise_value_error_naming_the_field(images, message):
    tok = ImagePatchTokenizer(16, patch_size=4, in_chans=3, img_size=16)
    with pytest.raises(ValueError, match=message.replace("(", "\\(")):
        tok(images)


def test_bad_construction():
    with pytest.raises(ValueError, match="img_size: expected H divisible"):
        ImagePatchTokenizer(16, patch_size=3, img_size=16)
    with pytest.raises(ValueError, match="pos_embed"):
        ImagePatchTokenizer(16, pos_embed="rope")
