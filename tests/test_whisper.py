"""OpenAI Whisper weights in: ``omni.whisper`` reproduces a Whisper model's front end, encoder output, decoder logits
and greedy ids at real shapes (randomly initialised: nothing downloads here), and ``omni import-whisper`` gives a
folder that ``omni.load`` reads and ``omni fit`` fine-tunes with Whisper's own tokenizer."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

whisper = pytest.importorskip("whisper", reason="the whisper extra (pip install -e '.[whisper]')")
from whisper.model import ModelDimensions, Whisper, sinusoids  # noqa: E402

from omni.cli import main as omni_main  # noqa: E402
from omni.data.whisper_vocab import WhisperVocab  # noqa: E402
from omni.layers import sincos_1d  # noqa: E402
from omni.search import greedy_search  # noqa: E402
from omni.whisper import recognizer_from_whisper  # noqa: E402

SR = 16000
TINY = ModelDimensions(  # whisper "tiny"'s real sizes, 4 + 4 layers
    n_mels=80, n_audio_ctx=1500, n_audio_state=384, n_audio_head=6, n_audio_layer=4,
    n_vocab=51865, n_text_ctx=448, n_text_state=384, n_text_head=6, n_text_layer=4,
)  # fmt: skip
SMALL_EN = ModelDimensions(  # an English-only vocabulary on a narrow model (fast)
    n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=1,
    n_vocab=51864, n_text_ctx=64, n_text_state=64, n_text_head=2, n_text_layer=1,
)  # fmt: skip


def random_whisper(dims: ModelDimensions, seed: int = 0) -> Whisper:
    torch.manual_seed(seed)
    model = Whisper(dims).eval()
    for p in model.parameters():  # the decoder's positions are torch.empty: give every weight a value that matters
        p.data.normal_(0, 0.05)
    return model


def clips() -> tuple[torch.Tensor, torch.Tensor]:
    """Two clips in a batch: 20 s of noise with a tone, and 12 s of it zero-padded to 20 s; (2, T), lengths (2,)."""
    g = torch.Generator().manual_seed(1)
    t = torch.arange(20 * SR) / SR
    wave = 0.1 * torch.randn(2, 20 * SR, generator=g) + 0.3 * torch.sin(2 * torch.pi * 440 * t)
    lengths = torch.tensor([20 * SR, 12 * SR])
    wave[1, 12 * SR :] = 0
    return wave, lengths


def whisper_mel(wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Whisper's input: each clip padded to 30 s, its log-mel alone (Whisper's floor is one max per call)."""
    return torch.stack(
        [whisper.log_mel_spectrogram(whisper.pad_or_trim(w[:n])) for w, n in zip(wave, lengths, strict=True)]
    )


def test_whisper_sinusoids_are_a_layout_of_sincos_and_omnis_own_is_unchanged() -> None:
    index = torch.arange(1500)
    for dim in (64, 384, 1280):
        torch.testing.assert_close(sincos_1d(index, dim, layout="whisper"), sinusoids(1500, dim), rtol=0, atol=0)
    half = 32
    freqs = 10_000.0 ** (-torch.arange(half, dtype=torch.float64) / half)
    angles = index[:, None].double() * freqs
    expected = torch.cat([angles.sin(), angles.cos()], dim=-1).float()
    torch.testing.assert_close(sincos_1d(index, 2 * half), expected, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="layout: expected one of"):
        sincos_1d(index, 64, layout="gpt")


@pytest.fixture(scope="module")
def tiny() -> tuple[Whisper, torch.nn.Module]:
    ref = random_whisper(TINY)
    return ref, recognizer_from_whisper(ref)


def test_the_front_end_is_whispers_log_mel(tiny) -> None:
    _, ours = tiny
    wave, lengths = clips()
    tok = ours.model.tokenizers["audio"]
    for w, n in zip(wave, lengths, strict=True):
        padded = whisper.pad_or_trim(w[:n])
        log_mel, frames = tok.log_mel(padded[None])
        assert frames.all() and log_mel.shape == (1, 80, 3000)
        torch.testing.assert_close(log_mel[0], whisper.log_mel_spectrogram(padded), rtol=0, atol=1e-4)


def test_encoder_output_and_decoder_logits_equal_whispers(tiny) -> None:
    ref, ours = tiny
    wave, lengths = clips()
    ids = torch.tensor([[50258, 50259, 50359, 50363, 7751, 1002, 13], [50258, 50259, 50359, 50363, 50257, 0, 1]])
    with torch.no_grad():
        audio = ref.encoder(whisper_mel(wave, lengths))  # (2, 1500, 384)
        logits = ref.decoder(ids, audio)
        enc = ours.model.encode({"audio": {"audio": wave, "lengths": lengths}})  # padded to 30 s by the tokenizer
        target = {"ids": ids, "mask": torch.ones_like(ids, dtype=torch.bool)}
        got = ours.decoder({"target": target}, context=enc)["logits"]
    assert enc.tokens.x.shape == audio.shape and bool(enc.tokens.pad.all())
    torch.testing.assert_close(enc.tokens.x, audio, rtol=0, atol=1e-4)
    torch.testing.assert_close(got, logits, rtol=0, atol=1e-4)


def test_cached_greedy_decoding_picks_whispers_argmax_ids(tiny) -> None:
    ref, ours = tiny
    wave, lengths = clips()
    steps = 6
    with torch.no_grad():
        audio = ref.encoder(whisper_mel(wave, lengths))
        ids = torch.full((2, 1), 50258)
        for _ in range(steps):  # Whisper's decoder, recomputing the prefix every step
            ids = torch.cat([ids, ref.decoder(ids, audio)[:, -1].argmax(-1, keepdim=True)], dim=1)
        enc = {"audio": {"audio": wave, "lengths": lengths}}
        hyp = greedy_search(ours.seq2seq, enc, prompt=50258, eos_id=50257, max_len=steps)
    for row in range(2):  # the same ids, up to and including end-of-text if Whisper reached it
        n, expected = int(hyp.lengths[row]), ids[row, 1:].tolist()
        assert n == (expected.index(50257) + 1 if 50257 in expected else steps)
        assert hyp.ids[row, :n].tolist() == expected[:n]


def test_an_english_only_whisper_maps_too_and_other_models_are_refused() -> None:
    ref = random_whisper(SMALL_EN, seed=3)
    ours = recognizer_from_whisper(ref)
    wave, lengths = clips()
    ids = torch.tensor([[50257, 50362, 7751, 1002]] * 2)
    with torch.no_grad():
        audio = ref.encoder(whisper_mel(wave, lengths))
        enc = ours.model.encode({"audio": {"audio": wave, "lengths": lengths}})
        got = ours.decoder({"target": {"ids": ids, "mask": torch.ones_like(ids, dtype=torch.bool)}}, context=enc)
    torch.testing.assert_close(enc.tokens.x, audio, rtol=0, atol=1e-4)
    torch.testing.assert_close(got["logits"], ref.decoder(ids, audio).detach(), rtol=0, atol=1e-4)
    assert ours.vocab.to_dict() == {"kind": "whisper", "multilingual": False, "language": "en"}
    assert "ctc" not in ours.model.heads  # Whisper has none; nothing reads one at ctc_weight 0
    with pytest.raises(ValueError, match="decoder: expected an attention decoder .this model has no CTC head."):
        ours.transcribe({"audio": {"audio": wave[:1, :SR]}}, decoder="ctc_greedy")
    with pytest.raises(ValueError, match=r"model: expected a whisper.model.Whisper \(with .dims\), got Linear"):
        recognizer_from_whisper(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="dims.n_vocab: expected 51864 .* got 51866"):
        recognizer_from_whisper(Whisper(dataclasses.replace(SMALL_EN, n_vocab=51866)))
    extra = random_whisper(SMALL_EN)
    extra.decoder.register_parameter("gate", torch.nn.Parameter(torch.zeros(1)))  # a variant's weight: not dropped
    with pytest.raises(ValueError, match=r"model: expected only the weights of Whisper's layout, .*\['decoder.gate'\]"):
        recognizer_from_whisper(extra)
    odd = random_whisper(SMALL_EN)
    odd.encoder.positional_embedding.add_(0.01)
    with pytest.raises(ValueError, match="encoder.positional_embedding: expected Whisper's sinusoids, got values"):
        recognizer_from_whisper(odd)


def test_a_longer_clip_than_the_window_is_refused_by_name(tiny) -> None:
    _, ours = tiny
    with pytest.raises(ValueError, match=r"audio: expected clips of at most window_seconds=30.0 s \(480000 samples"):
        ours.model.encode({"audio": {"audio": torch.zeros(1, 31 * SR)}})


def test_whispers_tokenizer_as_a_vocabulary() -> None:
    vocab = WhisperVocab()
    ids = vocab.encode("Hello, World 7!")
    assert ids[:3] == [50259, 50359, 50363] and vocab.decode([vocab.bos_id, *ids, vocab.eos_id]) == "hello world seven"
    assert (vocab.vocab_size, vocab.bos_id, vocab.eos_id, vocab.blank_id) == (51865, 50258, 50257, 50257)
    assert vocab.encode("") == [50259, 50359, 50363] and vocab.decode(vocab.encode("")) == ""
    english = WhisperVocab.from_kind("whisper.en")
    assert english.prefix == [50362] and english.decode(english.encode("oh two")) == "oh two"
    with pytest.raises(ValueError, match="language: expected one of Whisper's language codes"):
        WhisperVocab(language="klingon")


# ---------------------------------------------------------------------------------------------------- end to end
def write_manifest(folder: Path, name: str, texts: list[str]) -> Path:
    rows = []
    for i, text in enumerate(texts):
        path = folder / f"{name}{i}.wav"
        wave = 0.2 * np.sin(2 * np.pi * (300 + 50 * i) * np.arange(SR) / SR)
        sf.write(str(path), wave.astype(np.float32), SR)
        rows.append(json.dumps({"audio_filepath": str(path), "duration": 1.0, "text": text}))
    (folder / f"{name}.jsonl").write_text("\n".join(rows) + "\n")
    return folder / f"{name}.jsonl"


def test_import_whisper_then_load_and_fit(tmp_path, monkeypatch) -> None:
    ref = random_whisper(SMALL_EN, seed=4)
    ckpt = tmp_path / "small.en.pt"
    torch.save({"dims": dataclasses.asdict(SMALL_EN), "model_state_dict": ref.state_dict()}, ckpt)
    out = tmp_path / "imported"
    omni_main(["import-whisper", "--checkpoint", str(ckpt), "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "fit.yaml", "model.safetensors"]

    from omni.export import load

    loaded = load(out)
    wave = clips()[0][:1, : 5 * SR]
    ids = torch.tensor([[50257, 50362, 7751]])
    with torch.no_grad():
        audio = ref.encoder(whisper_mel(wave, torch.tensor([5 * SR])))
        enc = loaded.model.encode({"audio": {"audio": wave}})
        got = loaded.decoder({"target": {"ids": ids, "mask": torch.ones_like(ids, dtype=torch.bool)}}, context=enc)
    torch.testing.assert_close(got["logits"], ref.decoder(ids, audio), rtol=0, atol=1e-4)
    assert loaded.text_of([50257, 50362, 7751, 50256]) == ref_text(7751)

    data = tmp_path / "data"
    data.mkdir()
    train = write_manifest(data, "train", ["one two", "three"])
    val = write_manifest(data, "val", ["four"])
    monkeypatch.setattr(sys, "argv", ["omni"])
    unpadded = tmp_path / "unpadded"  # 1 s clips not padded to 30 s: a fast fit
    omni_main(["import-whisper", "--checkpoint", str(ckpt), "--out", str(unpadded), "--window_seconds", "0"])
    omni_main([
        "fit", "--config", str(unpadded / "fit.yaml"),
        "--data.init_args.train_manifest", str(train), "--data.init_args.val_manifest", str(val),
        "--data.init_args.test_manifest", str(val), "--trainer.limit_test_batches", "1",
        "--data.init_args.batch_size", "2", "--trainer.max_epochs", "1", "--trainer.accelerator", "cpu",
        "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1",
        "--model.init_args.max_decode_len", "4", "--model.init_args.test_decoders", "[greedy]",
        "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"), "--trainer.enable_progress_bar", "false",
    ])  # fmt: skip
    (result,) = (tmp_path / "runs").rglob("metrics.json")
    assert {"test/wer_greedy"} <= set(json.loads(result.read_text())["metrics"])
    (last,) = (tmp_path / "runs").rglob("last.ckpt")
    trained = torch.load(last, weights_only=True)["state_dict"]  # one step at lr <= 1e-5 from the imported weights
    for key in ("decoder.tokenizers.target.pos_embed", "model.trunk.blocks.0.attn.qkv.weight"):
        torch.testing.assert_close(trained[key], loaded.state_dict()[key], rtol=0, atol=1e-3)
    with pytest.raises(ValueError, match="--checkpoint: expected a Whisper checkpoint file on disk, got 'nope.pt'"):
        omni_main(["import-whisper", "--checkpoint", "nope.pt", "--out", str(out)])


def ref_text(token: int) -> str:
    return WhisperVocab.from_kind("whisper.en").tokenizer.decode([token]).strip()
