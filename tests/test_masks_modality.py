"""Masks that name modalities: ``local`` with a radius per modality (and per coordinate dim), and the one-way
predicates ``query_modality`` / ``key_modality``. Each equals a naive per-pair reference; the dense, sparse and
flex (CPU forward) paths agree; and on real camera + radar tokenizer output each modality is local in its own units.
"""

import math
from pathlib import Path
from unittest import mock

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omni import masks
from omni.attention import plans
from omni.attention.kernels import attend, masked_sdpa
from omni.attention.masks import Side, flex_unsupported
from omni.attention.plans import sparse_plan
from omni.model import OmniModel
from omni.tokenizers import ImagePatchTokenizer, SensorTokenizer
from omni.tokens import Tokens
from omni.transformer import TransformerConfig

NAMES = ["image", "radar", "traj.state", "traj.action"]  # a model's modality table; index 4 is outside it
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def indices(key: str | int) -> list[int]:
    """The reference name resolution: an index, an exact name, or every ``name.tag`` of a tokenizer."""
    if isinstance(key, int):
        return [key]
    return [i for i, m in enumerate(NAMES) if m == key or m.startswith(f"{key}.")]


# ---------------------------------------------------------------------------- random metadata and expressions


@st.composite
def metadata(draw, max_n=40, min_n=1):
    b = draw(st.integers(1, 2))
    n = draw(st.integers(min_n, max_n))
    p = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    return Tokens.create(
        torch.zeros(b, n, 4),
        modality=torch.randint(0, 5, (b, n), generator=g),
        pos=torch.randint(0, 12, (b, n, p), generator=g).float() / 2,  # halves: exact comparisons
        group=torch.randint(0, 5, (b, n), generator=g).sort(-1).values,
        sample=torch.randint(0, 2, (b, n), generator=g).sort(-1).values,
        pad=torch.rand(b, n, generator=g) > 0.2,
        is_global=torch.rand(b, n, generator=g) > 0.9,
    )


keys = st.sampled_from(["image", "radar", "traj", "traj.action", 0, 3])
radius_values = st.one_of(
    st.integers(0, 6).map(lambda r: r / 2),
    st.lists(st.integers(0, 6).map(lambda r: r / 2), min_size=1, max_size=4),
)


def reference_local(radius: dict, across: bool = False) -> object:
    """Per-pair rule: same modality, and every coordinate within the query modality's radius for that dim. With
    ``across`` (``near``): any query modality, and the key modality's radius."""
    per: dict[int, float | list[float]] = {}
    for key, r in radius.items():  # prefixes first, so that an exact name wins
        if isinstance(key, str) and key not in NAMES:
            per.update({i: r for i in indices(key)})
    for key, r in radius.items():
        if isinstance(key, int) or key in NAMES:
            per.update({i: r for i in indices(key)})

    def fn(m, i, j):
        mod = m["modality"][j if across else i]
        if (not across and mod != m["modality"][j]) or mod not in per:
            return False
        pi, pj = m["pos"][i], m["pos"][j]
        r = per[mod]
        radii = [r] * len(pi) if isinstance(r, float) else (list(r) + [math.inf] * len(pi))[: len(pi)]
        return all(abs(a - b) <= rr for a, b, rr in zip(pi, pj, radii, strict=True))

    return fn


def reference_near_shifted(radius: dict, key: str | int, dims: int) -> object:
    """``near`` with ``shift={key: dims}``: for keys of ``key``'s modalities the query's coordinates from ``dims``
    on (zeros past its P) stand in for its own."""
    rule, shifted = reference_local(radius, across=True), set(indices(key))

    def fn(m, i, j):
        if m["modality"][j] not in shifted:
            return rule(m, i, j)
        n = len(m["pos"])  # the query's shifted coordinates as one more token, n; the key stays itself
        pos = m["pos"][i]
        moved = {**m, "pos": [*m["pos"], pos[dims:] + [0.0] * min(dims, len(pos))], "modality": [*m["modality"], -1]}
        return rule(moved, n, j)

    return fn


def _leaf():
    def one_side(side):
        build = masks.query_modality if side == "query" else masks.key_modality
        at = 0 if side == "query" else 1
        return st.lists(keys, min_size=1, max_size=2).map(
            lambda ks: (
                build(*ks),
                lambda m, i, j: m["modality"][(i, j)[at]] in {x for k in ks for x in indices(k)},
            )
        )

    return st.one_of(
        st.dictionaries(keys, radius_values, max_size=3).map(lambda d: (masks.local(radius=d), reference_local(d))),
        st.integers(0, 3).map(
            lambda r: (
                masks.local(radius=r),
                lambda m, i, j: (
                    m["modality"][i] == m["modality"][j]
                    and max(abs(a - b) for a, b in zip(m["pos"][i], m["pos"][j], strict=True)) <= r
                ),
            )
        ),
        st.dictionaries(keys, radius_values, max_size=3).map(
            lambda d: (masks.near(radius=d), reference_local(d, across=True))
        ),
        st.tuples(st.dictionaries(keys, radius_values, min_size=1, max_size=2), keys, st.integers(1, 2)).map(
            lambda t: (masks.near(radius=t[0], shift={t[1]: t[2]}), reference_near_shifted(t[0], t[1], t[2]))
        ),
        st.integers(0, 3).map(
            lambda r: (
                masks.near(radius=r),
                lambda m, i, j: max(abs(a - b) for a, b in zip(m["pos"][i], m["pos"][j], strict=True)) <= r,
            )
        ),
        one_side("query"),
        one_side("key"),
        st.just((masks.same_modality(), lambda m, i, j: m["modality"][i] == m["modality"][j])),
        st.just((masks.causal(), lambda m, i, j: j <= i)),
        st.just((masks.global_tokens(), lambda m, i, j: m["is_global"][i] or m["is_global"][j])),
    )


def _combine(children):
    pair = st.tuples(children, children)
    return st.one_of(
        pair.map(lambda ab: (ab[0][0] & ab[1][0], lambda m, i, j: ab[0][1](m, i, j) and ab[1][1](m, i, j))),
        pair.map(lambda ab: (ab[0][0] | ab[1][0], lambda m, i, j: ab[0][1](m, i, j) or ab[1][1](m, i, j))),
        children.map(lambda a: (~a[0], lambda m, i, j: not a[1](m, i, j))),
    )


expressions = st.recursive(_leaf(), _combine, max_leaves=4).map(lambda e: (e[0].bind(NAMES), e[1]))


def naive(fn, tokens: Tokens) -> torch.Tensor:
    """Per-pair Python loops over plain lists: padding and sample boundaries always applied."""
    b, n = tokens.pad.shape
    out = torch.zeros(b, n, n, dtype=torch.bool)
    for r in range(b):
        m = {k: getattr(tokens, k)[r].tolist() for k in ("modality", "pos", "sample", "pad", "is_global")}
        for i in range(n):
            for j in range(n):
                out[r, i, j] = fn(m, i, j) and m["pad"][j] and m["sample"][i] == m["sample"][j]
    return out


def qkv(tokens: Tokens, heads=2, d=8, seed=0, grad=True):
    g = torch.Generator().manual_seed(seed)
    b, n = tokens.pad.shape
    return [torch.randn(b, heads, n, d, generator=g).requires_grad_(grad) for _ in range(3)]


# ---------------------------------------------------------------------------- equal to the reference, on every path


@settings(max_examples=80, deadline=None)
@given(tokens=metadata(), expr=expressions)
def test_dense_equals_naive_reference(tokens, expr):
    mask, fn = expr
    assert torch.equal(mask.dense(tokens), naive(fn, tokens))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tokens=metadata(max_n=300, min_n=100), expr=expressions)
def test_sparse_path_evaluated_by_rows_equals_dense(tokens, expr):
    mask, _ = expr
    dense = mask.dense(tokens)
    b, n = tokens.pad.shape
    rows = torch.randint(0, n + 1, (b, 70))  # the sparse path's row evaluation, N = a padding slot
    got = plans._rows_mask(mask.prepared(tokens), tokens, rows, Side.of(tokens, "key"))
    want = dense.gather(1, rows.clamp(max=n - 1).unsqueeze(-1).expand(-1, -1, n)) & (rows < n).unsqueeze(-1)
    assert torch.equal(got, want)
    with mock.patch.object(plans, "MATERIALIZE", 0):  # never the whole mask at once: row chunks only
        p = sparse_plan(mask, tokens)
    q, k, v = qkv(tokens)
    ref = masked_sdpa(q, k, v, dense)
    out = attend(q, k, v, p)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    grads_ref = torch.autograd.grad(ref.square().sum(), (q, k, v))
    for g, gr in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, gr, atol=1e-5, rtol=1e-5)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tokens=metadata(max_n=256, min_n=256), expr=expressions)
def test_flex_path_equals_dense_in_inference(tokens, expr):
    mask, _ = expr
    q, k, v = qkv(tokens, grad=False)
    if flex_unsupported(mask):  # near(shift=...): refused by name; plan() runs it on the sparse path instead
        with pytest.raises(ValueError, match="FlexAttention can compile, got near"):
            mask.block_mask(tokens)
        assert isinstance(plans.plan(mask, tokens, "flex"), plans.SparsePlan | torch.Tensor)  # not a BlockMask
        return
    with torch.no_grad():
        out = attend(q, k, v, mask.block_mask(tokens))
    torch.testing.assert_close(out, masked_sdpa(q, k, v, mask.dense(tokens)), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------- real tokenizers, each in its own units

D = 16


def camera_radar_model(mask_def: str) -> OmniModel:
    torch.manual_seed(0)
    return OmniModel(
        tokenizers={
            "camera": ImagePatchTokenizer(D, patch_size=4, in_chans=3, img_size=16),  # a 4 x 4 grid of patches
            "radar": SensorTokenizer(D, in_features=4, coord_dims=2, name="radar"),  # pos = (x, y) in metres
        },
        trunk=TransformerConfig(dim=D, depth=1, heads=2, masks=["local"], mask_defs={"local": mask_def}),
    )


def test_local_radius_per_modality_on_real_camera_and_radar_tokens():
    model = camera_radar_model("local(radius={'camera': 1, 'radar': 5})")
    points = torch.tensor([[[0.0, 0.0, 1.0, 1.0], [3.0, 0.0, 1.0, 1.0], [30.0, 0.0, 1.0, 1.0], [2.5, 4.0, 1.0, 1.0]]])
    tokens, spans = model.tokenize({"camera": torch.randn(1, 3, 16, 16), "radar": {"x": points}})
    mask = model.layer_masks[0]
    allowed = mask.dense(tokens)[0]
    cam, rad = spans["camera"].start, spans["radar"].start
    assert model.modality_names == ["camera", "radar"]
    assert torch.equal(tokens.pos[0, rad : rad + 4], points[0, :, :2])  # radar pos really is metres
    assert allowed[rad, rad + 1]  # a radar point 3 m away is local
    assert not allowed[rad, rad + 2]  # one 30 m away is not
    assert allowed[rad, rad + 3]  # (2.5 m, 4 m): within 5 m on each axis
    assert tokens.pos[0, cam + 2].tolist() == [0.0, 2.0]  # camera pos is (row, col) in patch cells
    assert allowed[cam, cam + 1] and allowed[cam, cam + 5]  # the adjacent patch, and the diagonal one
    assert not allowed[cam, cam + 2] and not allowed[cam, cam + 8]  # two cells away, across or down
    assert not allowed[cam, rad] and not allowed[rad, cam]  # local stays within a modality
    # The same radar points under one radius of 1: 3 m apart is no longer local (the units matter).
    one = camera_radar_model("local(radius=1)").layer_masks[0].dense(tokens)[0]
    assert one[cam, cam + 1] and not one[rad, rad + 1]

    # Dense, sparse (rows evaluated in chunks) and flex (CPU forward, length bucketed to 128) agree.
    q, k, v = qkv(tokens, grad=False)
    ref = masked_sdpa(q, k, v, mask.dense(tokens))
    with mock.patch.object(plans, "MATERIALIZE", 0):
        sparse = attend(q, k, v, sparse_plan(mask, tokens))
    torch.testing.assert_close(sparse, ref, atol=1e-5, rtol=1e-5)
    n, bucket = tokens.num_tokens, tokens.pad_to(128)
    qb, kb, vb = (torch.nn.functional.pad(t, (0, 0, 0, 128 - n)) for t in (q, k, v))
    with torch.no_grad():
        flex = attend(qb, kb, vb, mask.block_mask(bucket))[:, :, :n]
    torch.testing.assert_close(flex, ref, atol=1e-5, rtol=1e-5)


def test_one_way_predicates_read_as_written():
    names = ["camera", "radar", "ego"]
    t = Tokens.create(torch.zeros(1, 6, 2), modality=torch.tensor([[0, 0, 1, 1, 2, 2]]))
    m = ((masks.query_modality("radar") & masks.key_modality("camera")) | masks.same_modality()).bind(names)
    allowed = m.dense(t)[0]
    is_ = {name: t.modality[0] == i for i, name in enumerate(names)}
    for a in names:
        for b in names:
            block = allowed[is_[a]][:, is_[b]]
            assert block.all() if a == b or (a, b) == ("radar", "camera") else not block.any(), (a, b)
    prefix = masks.parse("key_modality('camera') | causal()").bind(names).dense(t)[0]
    assert prefix[:, :2].all() and not prefix[0, 2:].any()  # every token reads the camera prefix


def test_unnamed_modalities_get_no_local_neighbours():
    t = Tokens.create(torch.zeros(1, 4, 2), modality=torch.tensor([[0, 0, 1, 1]]))  # all at one position
    allowed = masks.local(radius={"camera": 1}).bind(["camera", "radar"]).dense(t)[0]
    assert allowed[:2, :2].all() and not allowed[2:].any()
    with_global = (masks.local(radius={"camera": 1}) | masks.key_modality("camera")).bind(["camera", "radar"])
    assert with_global.dense(t)[0, 2:, :2].all()  # other terms still open what they allow


def test_radius_binds_by_name_prefix_and_exact_names_win():
    names = ["image", "trajectory.return", "trajectory.state", "trajectory.action"]
    m = masks.local(radius={"trajectory": 2, "trajectory.action": [1, 0], 0: 3}).bind(names)
    assert m.radii == (3.0, 2.0, 2.0, (1.0, 0.0))
    assert masks.query_modality("trajectory").bind(names).indices == (1, 2, 3)
    assert masks.key_modality(["image", 3]).bind(names).indices == (0, 3)


def test_parse_reads_radius_dicts_and_lists_and_one_way_predicates():
    text = "local(radius={'camera': 1, 'radar': [5.0, 0.1]}) | (query_modality('radar') & key_modality('camera'))"
    parsed = masks.parse(text)
    built = masks.local(radius={"camera": 1, "radar": [5.0, 0.1]}) | (
        masks.query_modality("radar") & masks.key_modality("camera")
    )
    assert parsed == built and hash(parsed) == hash(built)  # masks are plan-cache keys
    assert parsed.bind(["camera", "radar"]) == built.bind(["camera", "radar"])
    cfg = TransformerConfig(dim=8, depth=1, heads=2, masks=["local"], mask_defs={"local": text})
    assert cfg.layer_masks()[0] == built


def test_fusion_configs_give_each_modality_a_radius_in_its_own_units():
    names = ["camera", "radar", "ego", "cls"]  # the fusion model's table: its tokenizers, then its CLS token
    for path in ("fusion_toy.yaml",):  # fusion_toy_tiny.yaml is an overlay: it keeps these mask_defs
        trunk = yaml.safe_load((CONFIGS / path).read_text())["model"]["init_args"]["trunk"]
        local = masks.parse(trunk["mask_defs"]["local"]).bind(names)
        (term,) = [t for t in (local.a, local.b) if isinstance(t, masks.Local)]
        assert term.radii[0] == 1.0 and isinstance(term.radii[1], tuple), path  # a patch cell; per radar axis


def test_errors_name_the_field():
    with pytest.raises(ValueError, match="local.radius: expected table indices, got modality names \\['radar'\\]"):
        masks.local(radius={"radar": 5}).dense(Tokens.create(torch.zeros(1, 2, 2)))
    with pytest.raises(ValueError, match="local.radius: expected names among \\['camera'\\], got 'lidar'"):
        masks.local(radius={"lidar": 5}).bind(["camera"])
    with pytest.raises(ValueError, match="local.radius\\['radar'\\]: expected a number >= 0 or a list"):
        masks.parse("local(radius={'radar': [5, -1]})")
    with pytest.raises(ValueError, match="local.radius: expected a number >= 0 or a dict"):
        masks.local(radius=[1, 2])
    with pytest.raises(ValueError, match="query_modality.modalities: expected modality names"):
        masks.query_modality()
    with pytest.raises(ValueError, match="key_modality.modalities: expected table indices"):
        masks.key_modality("audio").dense(Tokens.create(torch.zeros(1, 2, 2)))
    with pytest.raises(ValueError, match="key_modality.modalities: expected names among"):
        masks.key_modality("audio").bind(["camera"])


@pytest.mark.gpu
def test_flex_path_with_radius_per_modality_equals_dense_forward_and_backward_on_cuda():
    g = torch.Generator().manual_seed(0)
    tokens = Tokens.create(
        torch.zeros(2, 512, 4),
        modality=torch.randint(0, 3, (2, 512), generator=g),
        pos=torch.randint(0, 40, (2, 512, 2), generator=g).float() / 4,
        pad=torch.rand(2, 512, generator=g) > 0.1,
    ).to("cuda")
    mask = (
        masks.local(radius={"image": 1, "radar": [2.0, 0.5]}) | (masks.query_modality(2) & masks.key_modality(0))
    ).bind(NAMES)
    q, k, v = (torch.randn(2, 4, 512, 32, device="cuda", requires_grad=True) for _ in range(3))
    ref = masked_sdpa(q, k, v, mask.dense(tokens))
    grads_ref = torch.autograd.grad(ref.square().sum(), (q, k, v))
    out = attend(q, k, v, mask.block_mask(tokens))
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=2e-5)
    for g_, gr in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g_, gr, atol=1e-4, rtol=1e-4)
