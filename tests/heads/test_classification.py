"""ClassificationHead: pooling, its loss and its checks."""

import pytest
import torch
import torch.nn.functional as F

from omni.heads import ClassificationHead
from omni.model import ModelOutput
from omni.tokens import Tokens


def _output(b: int = 3, n: int = 5, d: int = 8) -> ModelOutput:
    x = torch.randn(b, n, d)
    pad = torch.ones(b, n, dtype=torch.bool)
    pad[0, 3:] = False  # the first sample has two padded tokens
    return ModelOutput(tokens=Tokens.create(x, pad=pad), extras={"cls": torch.randn(b, 1, d)}, spans={"a": slice(0, n)})


def test_cls_pool_reads_the_cls_token_and_mean_pool_the_real_tokens():
    out = _output()
    cls, mean = ClassificationHead(8, 4, pool="cls"), ClassificationHead(8, 4, pool="mean")
    for head in (cls, mean):
        torch.nn.init.normal_(head.fc.weight)
    torch.testing.assert_close(cls(out), cls.fc(out.extras["cls"][:, 0]))
    x, pad = out.tokens.x, out.tokens.pad
    real_mean = torch.stack([x[i][pad[i]].mean(0) for i in range(3)])
    torch.testing.assert_close(mean(out), mean.fc(real_mean))  # padded tokens do not count


def test_starts_from_uniform_predictions():
    assert torch.equal(ClassificationHead(8, 5)(_output()), torch.zeros(3, 5))


def test_loss_is_cross_entropy_with_label_smoothing():
    logits, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    torch.testing.assert_close(ClassificationHead.loss(logits, labels), F.cross_entropy(logits, labels))
    smooth = ClassificationHead.loss(logits, labels, label_smoothing=0.1)
    torch.testing.assert_close(smooth, F.cross_entropy(logits, labels, label_smoothing=0.1))
    assert not torch.allclose(smooth, ClassificationHead.loss(logits, labels))


def test_bad_arguments_and_inputs_name_the_field():
    with pytest.raises(ValueError, match="pool: expected one of 'cls', 'mean', got 'max'"):
        ClassificationHead(8, 4, pool="max")
    with pytest.raises(ValueError, match="num_classes: expected >= 2"):
        ClassificationHead(8, 1)
    out = _output()
    out.extras.clear()
    with pytest.raises(ValueError, match="pool: 'cls' expected the model to have a `cls` extra token"):
        ClassificationHead(8, 4)(out)
    with pytest.raises(ValueError, match=r"labels: expected shape \(6,\)"):
        ClassificationHead.loss(torch.randn(6, 4), torch.zeros(5, dtype=torch.long))
