"""OpenAI Whisper weights in: a ``whisper.model.Whisper`` as omni's ``SpeechRecognizer``, with the same outputs.

``recognizer_from_whisper(model)`` reads the sizes off ``model.dims`` (``ModelDimensions``), builds the task from
``whisper_recognizer_args`` and copies every weight (``whisper_state_dict``):

    Whisper                              omni (``SpeechRecognizer``)
    encoder.conv1, conv2                 model.tokenizers.audio.conv1, conv2 (``stem: whisper``, ``stride: 2``)
    encoder.positional_embedding         Whisper's sinusoids, computed (``positions: whisper``)
    encoder.blocks.i (attn, mlp, lns)    model.trunk.blocks.i (query/key/value -> one qkv; the key has no bias in
                                         Whisper: a zero bias, which changes nothing and gets no gradient)
    encoder.ln_post                      model.trunk.norm
    decoder.token_embedding              decoder.tokenizers.target.embed, and the tied output layer
    decoder.positional_embedding         decoder.tokenizers.target.pos_embed (learned, n_text_ctx rows)
    decoder.blocks.i (+ cross_attn)      decoder.trunk.blocks.i (cross_attn -> cross: query -> q, key/value -> kv)
    decoder.ln                           decoder.trunk.norm

The modality embeddings are zero (one modality per model: a constant, which a fine-tune can learn). Whisper has no
CTC head, so neither has the task (``ctc_weight: 0``, attention decoders only; a ``ctc_weight`` above 0 adds a new
one). The tokenizer takes Whisper's 30 s window
(``window_seconds: 30``, all 1,500 tokens real, as Whisper attends its padding); with ``window_seconds: null`` a clip
is not padded (faster, but not what the checkpoint was trained on). Whisper's checkpoints store the encoder's
sinusoids in fp16: they are checked against the computed ones (within fp16 rounding, 2.5e-4), which omni uses.

``omni import-whisper --checkpoint tiny.pt --out DIR`` turns a checkpoint on disk (``whisper.load_model(path)``)
into ``DIR/model.safetensors`` + ``DIR/config.yaml`` (``omni.load(DIR)``) and ``DIR/fit.yaml``, a config that
``omni fit`` fine-tunes from those weights on a manifest's transcripts (Whisper's own tokenizer: ``vocab: whisper``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from omni.data.whisper_vocab import WhisperVocab
from omni.layers import sincos_1d

__all__ = ["main", "recognizer_from_whisper", "whisper_recognizer_args", "whisper_state_dict"]

WINDOW_SECONDS = 30.0  # Whisper's input: 30 s = 3,000 mel frames = 1,500 tokens
ENGLISH_ONLY_VOCAB = 51864  # n_vocab of the .en models; multilingual ones have 51865 (large-v3: 51866, not mapped)
POSITION_TOLERANCE = 1e-3  # fp16 checkpoints round the sinusoids by up to 2.5e-4


def _dims(model: nn.Module) -> Any:
    dims = getattr(model, "dims", None)
    if dims is None or not hasattr(dims, "n_audio_state") or not hasattr(model, "encoder"):
        raise ValueError(f"model: expected a whisper.model.Whisper (with .dims), got {type(model).__name__}")
    return dims


def _vocab(dims: Any) -> WhisperVocab:
    vocab = WhisperVocab(multilingual=dims.n_vocab != ENGLISH_ONLY_VOCAB)
    if vocab.vocab_size != dims.n_vocab:
        raise ValueError(
            f"dims.n_vocab: expected {ENGLISH_ONLY_VOCAB} (English-only) or 51865 (multilingual, 99 languages), "
            f"got {dims.n_vocab}"
        )
    return vocab


def whisper_recognizer_args(dims: Any, window_seconds: float | None = WINDOW_SECONDS) -> dict[str, Any]:
    """``SpeechRecognizer``'s ``init_args`` (plain YAML values) for a Whisper of these ``ModelDimensions``."""
    if dims.n_text_state != dims.n_audio_state:
        raise ValueError(
            f"dims.n_text_state: expected the encoder's width {dims.n_audio_state} (omni's decoder shares it), "
            f"got {dims.n_text_state}"
        )
    vocab = _vocab(dims)
    common = {"mlp_ratio": 4.0, "norm_eps": 1e-5}  # Whisper: 4x MLP, torch's LayerNorm eps
    audio = {"n_mels": dims.n_mels, "stem": "whisper", "stride": 2, "positions": "whisper"}
    return {
        "trunk": {"dim": dims.n_audio_state, "depth": dims.n_audio_layer, "heads": dims.n_audio_head, **common},
        "tokenizers": {
            "audio": {
                "class_path": "omni.tokenizers.MelSpectrogramTokenizer",
                "init_args": {**audio, "window_seconds": window_seconds},
            }
        },
        "decoder_trunk": {
            "dim": dims.n_text_state,
            "depth": dims.n_text_layer,
            "heads": dims.n_text_head,
            "cross_attention": True,
            "masks": ["causal"],
            **common,
        },
        "decoder_tokenizer": {
            "class_path": "omni.tokenizers.TextTokenizer",
            "init_args": {"vocab_size": dims.n_vocab, "max_len": dims.n_text_ctx, "pad_id": vocab.pad_id},
        },
        "tie_embeddings": True,
        "bos_id": vocab.bos_id,
        "eos_id": vocab.eos_id,
        "blank_id": vocab.blank_id,
        "ctc_weight": 0.0,
        "decoder": "beam",
        "val_decoder": "greedy",
        "test_decoders": ["greedy", "beam"],
        "max_decode_len": dims.n_text_ctx // 2,  # Whisper's sample_len
        "label_smoothing": 0.0,
    }


class _Taken(dict):
    """A state dict that remembers which keys were read, so that a weight left unmapped is an error, not a silent
    loss."""

    def __init__(self, values: dict[str, Tensor]) -> None:
        super().__init__(values)
        self.taken: set[str] = set()

    def __getitem__(self, key: str) -> Tensor:
        self.taken.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Tensor | None = None) -> Tensor | None:  # type: ignore[override]
        if key in self:
            return self[key]
        return default


def _qkv(sd: dict[str, Tensor], prefix: str, names: Sequence[str]) -> tuple[Tensor, Tensor]:
    """Whisper's separate projections ``prefix.{query,key,value}`` as one (weight, bias); the key's bias is zero."""
    weights = [sd[f"{prefix}.{n}.weight"] for n in names]
    biases = [sd.get(f"{prefix}.{n}.bias", torch.zeros(w.shape[0])) for n, w in zip(names, weights, strict=True)]
    return torch.cat(weights), torch.cat(biases)


def _block(sd: dict[str, Tensor], src: str, dst: str, cross: bool) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    pairs = [("attn_ln", "norm1"), ("attn.out", "attn.proj"), ("mlp_ln", "norm2"), ("mlp.0", "mlp.fc1")]
    pairs += [("mlp.2", "mlp.fc2")]
    if cross:
        pairs += [("cross_attn_ln", "norm_cross"), ("cross_attn.query", "cross.q"), ("cross_attn.out", "cross.proj")]
        out[f"{dst}.cross.kv.weight"], out[f"{dst}.cross.kv.bias"] = _qkv(sd, f"{src}.cross_attn", ("key", "value"))
    for a, b in pairs:
        for p in ("weight", "bias"):
            out[f"{dst}.{b}.{p}"] = sd[f"{src}.{a}.{p}"]
    out[f"{dst}.attn.qkv.weight"], out[f"{dst}.attn.qkv.bias"] = _qkv(sd, f"{src}.attn", ("query", "key", "value"))
    return out


def whisper_state_dict(model: nn.Module, task: nn.Module) -> dict[str, Tensor]:
    """``task``'s state dict (a ``SpeechRecognizer`` of ``whisper_recognizer_args``) filled from the Whisper ``model``:
    every Whisper weight is used; omni's own buffers (mel filters), the zero modality embeddings (and a new CTC head,
    if the task has one) keep the task's values."""
    dims = _dims(model)
    sd = _Taken({k: v.detach().float() for k, v in model.state_dict().items()})
    table = sd["encoder.positional_embedding"]
    computed = sincos_1d(torch.arange(table.shape[0]), table.shape[1], layout="whisper")
    if not torch.allclose(table, computed, atol=POSITION_TOLERANCE, rtol=0):
        diff = float((table - computed).abs().max())
        raise ValueError(f"encoder.positional_embedding: expected Whisper's sinusoids, got values {diff:.2g} away")
    mapped = dict(task.state_dict())
    for name in ("model", "decoder"):
        mapped[f"{name}.modality_embed.weight"] = torch.zeros_like(mapped[f"{name}.modality_embed.weight"])
    for conv in ("conv1", "conv2"):
        for p in ("weight", "bias"):
            mapped[f"model.tokenizers.audio.{conv}.{p}"] = sd[f"encoder.{conv}.{p}"]
    for i in range(dims.n_audio_layer):
        mapped.update(_block(sd, f"encoder.blocks.{i}", f"model.trunk.blocks.{i}", cross=False))
    for i in range(dims.n_text_layer):
        mapped.update(_block(sd, f"decoder.blocks.{i}", f"decoder.trunk.blocks.{i}", cross=True))
    for p in ("weight", "bias"):
        mapped[f"model.trunk.norm.{p}"] = sd[f"encoder.ln_post.{p}"]
        mapped[f"decoder.trunk.norm.{p}"] = sd[f"decoder.ln.{p}"]
    embed = sd["decoder.token_embedding.weight"]
    mapped["decoder.tokenizers.target.embed.weight"] = embed
    mapped["decoder.heads.logits.fc.weight"] = embed  # tied, as Whisper's logits are x @ embedding.T
    mapped["decoder.tokenizers.target.pos_embed"] = sd["decoder.positional_embedding"]
    left = sorted(set(sd) - sd.taken)
    if left:
        raise ValueError(
            f"model: expected only the weights of Whisper's layout, got ones this import does not map: {left[:5]}"
        )
    for key, value in mapped.items():
        want = task.state_dict()[key].shape
        if value.shape != want:
            raise ValueError(f"{key}: expected shape {tuple(want)} for this Whisper's dims, got {tuple(value.shape)}")
    return mapped


def recognizer_from_whisper(model: nn.Module, window_seconds: float | None = WINDOW_SECONDS) -> nn.Module:
    """A ``SpeechRecognizer`` with the Whisper ``model``'s sizes and weights (eval mode) and Whisper's vocabulary:
    the same encoder output and decoder logits (fp32, atol 1e-4) on a 30 s window."""
    from lightning.pytorch.cli import instantiate_module

    from omni.tasks.speech import SpeechRecognizer

    dims = _dims(model)
    args = whisper_recognizer_args(dims, window_seconds)
    task = instantiate_module(SpeechRecognizer, {"_class_path": "omni.tasks.speech.SpeechRecognizer", **args})
    task.load_state_dict(whisper_state_dict(model, task), strict=True)
    task.vocab = _vocab(dims)
    return task.eval()


def _fit_config(args: dict[str, Any], weights: Path, vocab: str) -> dict[str, Any]:
    """A config for ``omni fit`` that starts from ``weights``; the manifests come on the command line."""
    return {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": 3,
            "accelerator": "auto",
            "precision": "32-true",
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": "runs", "name": "whisper_finetune"},
            },
        },
        "model": {
            "class_path": "omni.tasks.speech.SpeechRecognizer",
            "init_args": {**args, "init_weights": str(weights.resolve()), "optim": {"lr": 1e-5, "warmup": 0.1}},
        },
        "data": {
            "class_path": "omni.data.ManifestDataModule",
            "init_args": {"vocab": vocab, "batch_size": 8, "speed_perturb": None, "max_duration": WINDOW_SECONDS},
        },
    }


def main(argv: Sequence[str] | None = None) -> Path:
    """``omni import-whisper --checkpoint tiny.pt --out DIR``."""
    p = argparse.ArgumentParser(
        prog="omni import-whisper", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--checkpoint", required=True, help="a Whisper checkpoint file (tiny.pt, base.en.pt, ...)")
    p.add_argument("--out", required=True, help="the folder to write model.safetensors, config.yaml and fit.yaml into")
    p.add_argument("--window_seconds", type=float, default=WINDOW_SECONDS, help="0: clips not padded to 30 s")
    a = p.parse_args(argv)
    path = Path(a.checkpoint)
    if not path.is_file():
        raise ValueError(f"--checkpoint: expected a Whisper checkpoint file on disk, got {a.checkpoint!r} (none there)")
    import whisper
    from safetensors.torch import save_file

    try:
        source = whisper.load_model(str(path), device="cpu")  # torch.load(weights_only=True)
    except Exception as e:  # any failure to read it is a bad file for the user
        got = f"{type(e).__name__}: {e}"
        raise ValueError(f"{path}: expected a Whisper checkpoint (dims + model_state_dict), got {got}") from None
    window = a.window_seconds if a.window_seconds and a.window_seconds > 0 else None
    task = recognizer_from_whisper(source, window)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone().contiguous() for k, v in task.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    args = whisper_recognizer_args(source.dims, window)
    extras = {"omni_vocab": task.vocab.to_dict()}
    config = {"class_path": "omni.tasks.speech.SpeechRecognizer", "init_args": args, "extras": extras}
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    vocab = "whisper" if task.vocab.multilingual else "whisper.en"
    (out / "fit.yaml").write_text(yaml.safe_dump(_fit_config(args, out / "model.safetensors", vocab), sort_keys=False))
    print(
        f"imported: {out / 'model.safetensors'}, {out / 'config.yaml'} (omni.load), {out / 'fit.yaml'}: "
        f"omni fit --config {out / 'fit.yaml'} --data.init_args.train_manifest T.jsonl --data.init_args.val_manifest "
        "V.jsonl --data.init_args.test_manifest E.jsonl"
    )
    return out
