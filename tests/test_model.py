import pytest
import torch
from torch import nn

from omni.model import ModelOutput, OmniModel
from omni.tokenizers import ImagePatchTokenizer, MelSpectrogramTokenizer, SensorTokenizer, TrajectoryTokenizer
from omni.transformer import TransformerConfig

D = 32


class MeanHead(nn.Module):
    def __init__(self, name: str | None = None) -> None:
        super().__init__()
        self.name = name
        self.fc = nn.Linear(D, 3)

    def forward(self, out: ModelOutput) -> torch.Tensor:
        return self.fc(out.mean(self.name))


def build(mask="full"):
    torch.manual_seed(0)
    return OmniModel(
        tokenizers={
            "image": ImagePatchTokenizer(D, patch_size=4, in_chans=3, img_size=8),
            "audio": MelSpectrogramTokenizer(D),
            "trajectory": TrajectoryTokenizer(D, state_dim=5, act_dim=2),
            "radar": SensorTokenizer(D, in_features=4, name="radar"),
        },
        trunk=TransformerConfig(dim=D, depth=2, heads=4),
        heads={"pooled": MeanHead(), "radar_only": MeanHead("radar")},
        extra_tokens={"cls": 1, "query": 2},
        mask=mask,
    )


def inputs(b=2):
    k = 3
    return {
        "image": torch.randn(b, 3, 8, 8),
        "audio": {"audio": torch.randn(b, 1600) * 0.1, "lengths": torch.tensor([1600, 960])[:b]},
        "trajectory": {
            "returns_to_go": torch.randn(b, k, 1),
            "states": torch.randn(b, k, 5),
            "actions": torch.randn(b, k, 2),
            "timesteps": torch.arange(k).expand(b, k),
        },
        "radar": {"x": torch.randn(b, 6, 4), "mask": torch.tensor([[True] * 6, [True] * 4 + [False] * 2])[:b]},
    }


def test_four_modalities_in_one_sequence_with_gradients_to_every_tokenizer():
    model = build()
    out = model(inputs())
    seq = out["output"]
    n_img, n_audio, n_traj, n_radar = 4, 5, 9, 6
    assert seq.tokens.x.shape == (2, 3 + n_img + n_audio + n_traj + n_radar, D)
    assert out["pooled"].shape == (2, 3) and out["radar_only"].shape == (2, 3)
    assert seq.extras["cls"].shape == (2, 1, D) and seq.extras["query"].shape == (2, 2, D)
    assert [seq.spans[k].stop - seq.spans[k].start for k in ("image", "audio", "trajectory", "radar")] == [
        n_img,
        n_audio,
        n_traj,
        n_radar,
    ]
    # every token carries the model-wide modality tag of its tokenizer
    names = model.modality_names
    tags = seq.tokens.modality[0]
    assert {names[i] for i in tags[seq.spans["trajectory"]].tolist()} == {
        "trajectory.return",
        "trajectory.state",
        "trajectory.action",
    }
    assert {names[i] for i in tags[seq.spans["radar"]].tolist()} == {"radar"}
    assert {names[i] for i in tags[:3].tolist()} == {"cls", "query"}
    (out["pooled"].sum() + out["radar_only"].sum()).backward()
    for key, tok in model.tokenizers.items():
        grads = [p.grad for p in tok.parameters() if p.requires_grad]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads), key
    assert model.modality_embed.weight.grad.abs().sum() > 0


def test_padded_tokens_change_no_real_output():
    model = build().eval()
    a = inputs()
    b = inputs()
    for key in ("image", "audio", "trajectory"):
        b[key] = a[key]
    b["radar"] = {"x": a["radar"]["x"].clone(), "mask": a["radar"]["mask"]}
    b["radar"]["x"][1, 4:] = 1e3  # garbage only in sample 1's padded radar points
    o1, o2 = model(a)["output"], model(b)["output"]
    real = o1.tokens.pad
    torch.testing.assert_close(o1.tokens.x[real], o2.tokens.x[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(a)["radar_only"], model(b)["radar_only"], atol=1e-5, rtol=1e-5)


def test_a_missing_modality_is_skipped_and_causal_mask_works():
    model = build(mask="causal").eval()
    x = inputs()
    del x["audio"], x["image"]
    out = model(x)["output"]
    assert set(out.spans) == {"trajectory", "radar"}
    assert torch.isfinite(out.tokens.x).all()


def test_bad_inputs_raise_value_errors():
    model = build()
    with pytest.raises(ValueError, match="unknown modality keys \\['lidar'\\]"):
        model({"lidar": torch.randn(2, 3)})
    with pytest.raises(ValueError, match="expected at least one of"):
        model({})
    with pytest.raises(ValueError, match="images: expected size 3 in dimension 1"):
        model({"image": torch.randn(2, 1, 8, 8)})
    with pytest.raises(ValueError, match="inputs.audio: expected batch size 3 like inputs.image, got 2"):
        x = inputs()
        x["image"] = torch.randn(3, 3, 8, 8)
        model(x)


def test_mask_panels_one_per_distinct_layer_mask():
    torch.manual_seed(0)
    model = OmniModel(
        tokenizers={"trajectory": TrajectoryTokenizer(D, state_dim=5, act_dim=2), "radar": SensorTokenizer(D, 4)},
        trunk=TransformerConfig(
            dim=D,
            depth=3,
            heads=4,
            masks=["local", "local", "global"],
            mask_defs={"local": "causal(by='group', window=1) | global_tokens()", "global": "full"},
        ),
        extra_tokens={"cls": 1},
    )
    x = inputs()
    del x["image"], x["audio"]
    got = model.mask_panels(x, sample=1)
    assert [title for title, _ in got.panels] == ["layers 0, 1: local", "layers 2: global"]
    tokens, _ = model.tokenize(x)
    for (_, panel), mask in zip(got.panels, [model.layer_masks[0], model.layer_masks[2]], strict=True):
        assert panel.shape == (1 + 9 + 6, 1 + 9 + 6) and panel.dtype == torch.bool
        assert torch.equal(panel, mask.dense(tokens)[1])
    assert torch.equal(got.pad, tokens.pad[1]) and not got.pad.all()  # sample 1 has two padded radar points
    assert torch.equal(got.modality, tokens.modality[1])
    assert got.names == model.modality_names
    with pytest.raises(ValueError, match="sample: expected an index in \\[0, 2\\), got 2"):
        model.mask_panels(x, sample=2)
