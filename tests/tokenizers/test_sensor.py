"""SensorTokenizer: point sets (radar) and vector readings (IMU): equivariance, Fourier coordinates, pad, checks."""

from __future__ import annotations

import pytest
import torch

from omni.tokenizers import SensorTokenizer

B, M, F, D = 2, 7, 4, 16


@pytest.fixture
def radar() -> SensorTokenizer:
    torch.manual_seed(0)
    return SensorTokenizer(D, in_features=F, coord_dims=2, fourier_features=8, name="radar")


@pytest.fixture
def imu() -> SensorTokenizer:
    torch.manual_seed(0)
    return SensorTokenizer(D, in_features=6, mode="vector", name="imu")


def points(b: int = B, m: int = M) -> torch.Tensor:
    return torch.randn(b, m, F, generator=torch.Generator().manual_seed(2))


def test_points_shapes_and_pos(radar):
    pts = points()
    out = radar(pts)
    assert out.x.shape == (B, M, D)
    assert out.pos.shape == (B, M, 2)
    torch.testing.assert_close(out.pos, pts[..., :2])  # (range, azimuth)
    assert out.pad.all() and out.modality.eq(0).all() and out.group.eq(0).all()


def test_permuting_points_permutes_tokens(radar):
    pts = points()
    mask = torch.rand(B, M, generator=torch.Generator().manual_seed(3)) > 0.3
    perm = torch.randperm(M, generator=torch.Generator().manual_seed(4))
    out = radar(pts, mask=mask)
    shuffled = radar(pts[:, perm], mask=mask[:, perm])
    torch.testing.assert_close(shuffled.x, out.x[:, perm])
    torch.testing.assert_close(shuffled.pos, out.pos[:, perm])
    assert torch.equal(shuffled.pad, out.pad[:, perm])


def test_each_point_is_embedded_alone(radar):
    """Changing (or padding) one point changes no other token: no leakage between points."""
    pts = points()
    other = pts.clone()
    other[0, 3] = torch.randn(F) * 100
    diff = (radar(pts).x - radar(other).x).abs().amax(dim=-1)
    assert diff[0, 3] > 0
    assert diff[0].clone().index_fill_(0, torch.tensor([3]), 0).eq(0).all() and diff[1].eq(0).all()


def test_fourier_features_make_nearby_coordinates_close():
    torch.manual_seed(0)
    tok = SensorTokenizer(D, in_features=2, coord_dims=2, fourier_features=32, fourier_scale=1.0)
    coords = torch.rand(1, 64, 2) * 10
    base = tok.fourier(coords)
    near = (tok.fourier(coords + 1e-3) - base).norm(dim=-1)
    far = (tok.fourier(coords + 1.0) - base).norm(dim=-1)
    assert (near < 0.1 * far).all()
    # and the embeddings (which read the Fourier features) follow
    x = tok(coords).x
    near_x = (tok(coords + 1e-3).x - x).norm(dim=-1)
    far_x = (tok(coords + 1.0).x - x).norm(dim=-1)
    assert near_x.mean() < 0.1 * far_x.mean()
    assert base.shape == (1, 64, 64)


def test_fourier_features_are_used(radar):
    """The MLP reads [features, Fourier(coords)]: removing the Fourier part changes the tokens."""
    pts = points()
    assert radar.mlp[0].in_features == F + 16
    plain = SensorTokenizer(D, in_features=F, fourier_features=0)
    assert plain.fourier is None and plain.mlp[0].in_features == F
    assert plain(pts).x.shape == (B, M, D)


def test_pad_respected(radar):
    mask = torch.tensor([[True] * 5 + [False] * 2, [True] * 7])
    out = radar(points(), mask=mask)
    assert torch.equal(out.pad, mask)


def test_instance_modalities():
    torch.manual_seed(0)
    a, b = SensorTokenizer(8, 4, name="radar"), SensorTokenizer(8, 6, mode="vector", name="imu")
    assert a.modalities == ("radar",) and b.modalities == ("imu",)
    assert SensorTokenizer.modalities == ("sensor",)
    assert SensorTokenizer(8, 4).modalities == ("sensor",)


def test_vector_single_reading(imu):
    reading = torch.randn(B, 6)
    out = imu(reading)
    assert out.x.shape == (B, 1, D)
    assert out.pos.shape == (B, 1, 1) and out.pos.eq(0).all() and out.group.eq(0).all()
    torch.testing.assert_close(out.x, imu(reading[:, None]).x)  # (B, F) is a sequence of one reading
    out = imu(reading, mask=torch.tensor([True, False]))
    assert out.pad[:, 0].tolist() == [True, False]


def test_vector_sequence(imu):
    seq = torch.randn(B, 5, 6)
    out = imu(seq, mask=torch.tensor([[True] * 5, [True] * 3 + [False] * 2]))
    assert out.x.shape == (B, 5, D)
    assert out.group[0].tolist() == [0, 1, 2, 3, 4] and out.group[1].tolist() == [0, 1, 2, 3, 4]
    torch.testing.assert_close(out.pos[..., 0], torch.arange(5.0).expand(B, 5))
    assert out.pad[1].tolist() == [True, True, True, False, False]
    # the same reading at two indices gets two different tokens (the index is encoded)
    same = imu(seq[:, :1].expand(B, 5, 6)).x
    assert not torch.allclose(same[:, 0], same[:, 1])


def test_gradients(radar):
    out = radar(points())
    out.x.sum().backward()
    for name, p in radar.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((torch.randn(B, F),), "x"),  # rank 2 in points mode
        ((torch.randn(B, M, F + 1),), "x"),  # feature count
        ((torch.zeros(B, M, F, dtype=torch.long),), "x"),  # dtype
        ((torch.full((B, M, F), float("nan")),), "x"),
        ((torch.full((B, M, F), float("inf")),), "x"),
        ((torch.zeros(B, 0, F),), "x"),  # empty set
        (("points",), "x"),  # not a tensor
        ((torch.randn(B, M, F), torch.ones(B, M)), "mask"),  # dtype
        ((torch.randn(B, M, F), torch.ones(B, M + 1, dtype=torch.bool)), "mask"),  # length mismatch
        ((torch.randn(B, M, F), torch.ones(B, dtype=torch.bool)), "mask"),  # rank
    ],
)
def test_bad_points_raise_value_error(radar, args, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        radar(*args)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((torch.randn(6),), "x"),
        ((torch.randn(B, 3, 4, 6),), "x"),
        ((torch.randn(B, 5),), "x"),
        ((torch.randn(B, 3, 7),), "x"),
        ((torch.zeros(B, 0, 6),), "x"),
        ((torch.zeros(B, 6, dtype=torch.int32),), "x"),
        ((torch.full((B, 6), float("nan")),), "x"),
        ((torch.randn(B, 6), torch.ones(B, 1, dtype=torch.bool)), "mask"),  # (B,) expected for one reading
        ((torch.randn(B, 3, 6), torch.ones(B, 4, dtype=torch.bool)), "mask"),
    ],
)
def test_bad_readings_raise_value_error(imu, args, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        imu(*args)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="mode"):
        SensorTokenizer(8, 4, mode="grid")
    with pytest.raises(ValueError, match="coord_dims"):
        SensorTokenizer(8, 4, coord_dims=5)
    with pytest.raises(ValueError, match="dim"):
        SensorTokenizer(7, 4, mode="vector")
    with pytest.raises(ValueError, match="fourier_features"):
        SensorTokenizer(8, 4, fourier_features=-1)


def test_feature_scale_scales_the_mlp_input_not_pos():
    """``feature_scale`` equals feeding pre-scaled features to the MLP (Fourier features still see the raw
    coordinates), and ``pos`` keeps the raw coordinates the local masks measure."""
    torch.manual_seed(0)
    scale = [0.1, 0.1, 1.0, 1.0]
    scaled = SensorTokenizer(dim=16, in_features=4, fourier_features=0, feature_scale=scale)
    plain = SensorTokenizer(dim=16, in_features=4, fourier_features=0)
    plain.load_state_dict(scaled.state_dict())
    x = points() * 30.0  # metres
    out = scaled(x)
    torch.testing.assert_close(out.x, plain(x * torch.tensor(scale)).x)
    torch.testing.assert_close(out.pos, x[..., :2])
    with pytest.raises(ValueError, match="feature_scale"):
        SensorTokenizer(dim=16, in_features=4, feature_scale=[1.0, 1.0])
