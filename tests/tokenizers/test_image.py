import pytest
import torch
from timm.layers import PatchEmbed

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
@pytest.mark.parametrize("stem", ["patch", "conv"])
def test_any_size_divisible_by_the_patch(pos_embed, stem):
    tok = ImagePatchTokenizer(16, patch_size=4, in_chans=3, img_size=16, pos_embed=pos_embed, stem=stem).eval()
    for h, w in [(16, 16), (8, 24), (32, 12)]:
        t = tok(torch.randn(2, 3, h, w))
        assert t.x.shape == (2, (h // 4) * (w // 4), 16)
        assert torch.isfinite(t.x).all()


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
