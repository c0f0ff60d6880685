import math
from itertools import pairwise

import pytest
import torch

from omni.tasks.classification import Classifier
from omni.tokenizers import ImagePatchTokenizer, TrajectoryTokenizer
from omni.training import OptimConfig, make_adamw, param_groups, warmup_cosine
from omni.transformer import TransformerConfig


def test_warmup_then_cosine_schedule():
    total, warmup = 100, 10
    lrs = [warmup_cosine(s, total, warmup, 0.1) for s in range(total + 1)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)  # linear warmup
    assert all(a <= b for a, b in pairwise(lrs[:10]))
    assert all(a >= b for a, b in pairwise(lrs[10:]))  # then monotone decay
    assert lrs[-1] == pytest.approx(0.1)  # ends at min_lr_ratio
    mid = warmup + (total - warmup) // 2
    assert lrs[mid] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def _task(**optim):
    return Classifier(
        num_classes=3,
        trunk=TransformerConfig(dim=16, depth=1, heads=2),
        tokenizers={"image": lambda dim: ImagePatchTokenizer(dim, patch_size=2, in_chans=1, img_size=4, stem="conv")},
        optim=OptimConfig(**optim),
    )


def _decayed(module: torch.nn.Module) -> set[str]:
    decay, keep = param_groups(module, 0.1)
    names = {id(p): n for n, p in module.named_parameters()}
    assert len(decay["params"]) + len(keep["params"]) == sum(1 for _ in module.parameters())  # each param once
    return {names[id(p)] for p in decay["params"]}


def test_weight_decay_by_module_type():
    decayed = _decayed(_task().model)
    # Linear and Conv weights decay, wherever they sit and whatever they are called ...
    assert {"trunk.blocks.0.attn.qkv.weight", "trunk.blocks.0.mlp.fc1.weight", "heads.logits.fc.weight"} <= decayed
    assert any(n.startswith("tokenizers.image.") and "stem" in n for n in decayed)
    # ... biases, norms, embedding tables, position tables and learned tokens do not.
    assert not any(n.endswith(".bias") or "norm" in n for n in decayed)
    assert "modality_embed.weight" not in decayed and not any("extra_tokens" in n or "pos_embed" in n for n in decayed)
    # A Decision Transformer's state / return / action embeddings are Linear layers: they decay, although named embed_*
    traj = _decayed(TrajectoryTokenizer(16, state_dim=3, act_dim=2))
    assert {"embed_state.weight", "embed_return.weight", "embed_action.weight"} <= traj


def test_no_weight_decay_hook_excludes_named_parameters():
    class Tokenizer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(4, 4)
            self.scale = torch.nn.Linear(4, 4)

        def no_weight_decay(self) -> set[str]:  # timm's hook, relative to this module
            return {"scale.weight"}

    model = torch.nn.Sequential(Tokenizer())
    assert _decayed(model) == {"0.proj.weight"}


def test_optimizer_uses_the_module_type_groups():
    task = _task(weight_decay=0.1)

    class FakeTrainer:
        estimated_stepping_batches = 10
        precision = "32-true"

    task._trainer = FakeTrainer()  # configure_optimizers reads the number of steps from the trainer
    opt = task.configure_optimizers()["optimizer"]
    assert opt.defaults["fused"]  # OptimConfig.fused, on CPU
    FakeTrainer.precision = "bf16-mixed"  # Lightning's AMP plugin cannot clip a fused optimizer's gradients
    assert not task.configure_optimizers()["optimizer"].defaults["fused"]
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in task.named_parameters()}
    assert {names[id(p)] for p in decay["params"]} == {f"model.{n}" for n in _decayed(task.model)}


def test_fused_adamw_makes_the_for_loop_update():
    """OptimConfig.fused swaps the kernel, not the maths: a few steps of each end at the same weights."""
    results = []
    for fused in (True, False):
        torch.manual_seed(0)
        task = _task(weight_decay=0.1)
        opt = make_adamw(task, OptimConfig(lr=1e-2, weight_decay=0.1, fused=fused))
        assert bool(opt.defaults["fused"]) is fused
        for _ in range(3):
            opt.zero_grad()
            task({"image": torch.randn(4, 1, 4, 4)})["logits"].square().mean().backward()
            opt.step()
        results.append(torch.cat([p.detach().flatten() for p in task.parameters()]))
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-6)


def test_optim_config_rejects_bad_values():
    with pytest.raises(ValueError, match="optim.lr"):
        OptimConfig(lr=0)
    with pytest.raises(ValueError, match="optim.grad_clip"):
        OptimConfig(grad_clip=-1.0)


def test_classifier_forward_and_shape_errors():
    task = _task()
    assert task({"image": torch.randn(2, 1, 4, 4)})["logits"].shape == (2, 3)
    with pytest.raises(ValueError, match="images: expected size 1 in dimension 1"):
        task({"image": torch.randn(2, 3, 4, 4)})


def test_mean_pool_head_uses_no_cls_token_and_ignores_nothing_real():
    task = Classifier(
        num_classes=3,
        trunk=TransformerConfig(dim=16, depth=1, heads=2),
        tokenizers={"image": lambda dim: ImagePatchTokenizer(dim, patch_size=2, in_chans=1, img_size=4)},
        pool="mean",
    )
    assert "cls" not in task.model.extra_tokens
    torch.nn.init.normal_(task.model.heads["logits"].fc.weight)
    x = torch.randn(2, 1, 4, 4)
    out = task.model({"image": x})
    expected = task.model.heads["logits"].fc(out["output"].tokens.x.mean(1))
    torch.testing.assert_close(out["logits"], expected)
