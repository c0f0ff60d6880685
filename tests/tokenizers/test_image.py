import pytest
import torch
from einops import rearrange
from hypothesis import given, settings
from hypothesis import strategies as st
from timm.layers import PatchEmbed
from torch import nn

from omni.tokenizers import ImagePatchTokenizer
from omni.tokenizers.image import local_contrast


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


@settings(max_examples=25, deadline=None)
@given(gain=st.floats(0.1, 1.0), offset=st.floats(-0.4, 0.4), seed=st.integers(0, 2**16))
def test_local_contrast_undoes_a_loss_of_contrast_and_a_shift(gain, offset, seed):
    """What fog does to a window of pixels (I = a J + b, a and b constant over it) normalises away."""
    image = torch.rand(1, 3, 12, 16, generator=torch.Generator().manual_seed(seed)) - 0.5
    clear = local_contrast(image, 5, 1e-4)
    fogged = local_contrast(gain * image + offset, 5, 1e-4 * gain)
    torch.testing.assert_close(fogged, clear, atol=1e-3, rtol=1e-3)


def test_local_contrast_by_hand():
    image = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 12.0]]).view(1, 1, 3, 3)
    out = local_contrast(image, 3, 0.5)
    centre = image.flatten()  # the centre pixel's window is the whole image
    want = (5.0 - centre.mean()) / (centre.var(unbiased=False) + 0.25).sqrt()
    torch.testing.assert_close(out[0, 0, 1, 1], want)
    corner = torch.tensor([1.0, 2.0, 4.0, 5.0])  # the corner's window: the 2 x 2 pixels inside the image
    want = (1.0 - corner.mean()) / (corner.var(unbiased=False) + 0.25).sqrt()
    torch.testing.assert_close(out[0, 0, 0, 0], want)
    assert local_contrast(torch.full((1, 3, 4, 4), 0.3), 3, 0.02).abs().max() < 1e-5  # flat: nothing to see


def test_local_contrast_channels_join_the_image():
    torch.manual_seed(0)
    tok = ImagePatchTokenizer(16, patch_size=4, in_chans=3, img_size=8, stem="strided", stem_channels=8,
                              local_contrast=3)  # fmt: skip
    assert tok.stem[0].in_channels == 6
    x = torch.rand(2, 3, 8, 8) - 0.5
    seen = []
    hook = tok.stem.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    tok(x)
    hook.remove()
    torch.testing.assert_close(seen[0], torch.cat([x, local_contrast(x, 3, 0.02)], 1))
    with pytest.raises(ValueError, match="local_contrast: expected 0 \\(off\\) or an odd window >= 3 pixels, got 4"):
        ImagePatchTokenizer(16, patch_size=4, img_size=8, local_contrast=4)
    with pytest.raises(ValueError, match="contrast_floor: expected > 0, got 0"):
        ImagePatchTokenizer(16, patch_size=4, img_size=8, local_contrast=3, contrast_floor=0)
