"""SpeechRecognizer and ``omni transcribe``: the tiny speech job end to end (metrics, errors.tsv, the alignment
picture, the transcribe command on good and bad files); the hybrid loss against torch's own losses; padded batches
score, and decode, as each utterance alone; the transcribe front end is invariant to the file's rate and channels
and windows long files at quiet points; silence decodes to nothing; bad settings name the field."""

from __future__ import annotations

import json
import math
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
import torchaudio.functional as AF
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from omni.checkpoints import load_task
from omni.cli import main as omni_main
from omni.data.speech import collate_speech
from omni.data.speech_corpus import CorpusSpec, build_corpus
from omni.data.text import BLANK, BOS, EOS, CharVocab
from omni.heads.ctc import CTCHead
from omni.heads.token import TokenHead
from omni.tasks.speech import DECODERS, SpeechRecognizer
from omni.tokenizers import MelSpectrogramTokenizer, TextTokenizer
from omni.transcribe import load_audio, split_windows

ROOT = Path(__file__).resolve().parents[2]
VOCAB = CharVocab()
TEXTS = ["one two", "", "seven", "three four five"]  # an empty transcript too: a clip of silence
SAMPLES = [8000, 3000, 12000, 5600]  # 0.19-0.75 s at 16 kHz: a padded batch of four lengths


def task(**overrides) -> SpeechRecognizer:
    """A tiny recognizer in eval mode, with dropout and SpecAugment configured (eval mode must switch both off)."""
    torch.manual_seed(0)
    args = {
        "trunk": {"dim": 32, "depth": 1, "heads": 2, "dropout": 0.1},
        "tokenizers": {"audio": partial(MelSpectrogramTokenizer, n_mels=40, spec_augment={})},
        "decoder_trunk": {"dim": 32, "depth": 1, "heads": 2, "dropout": 0.1, "cross_attention": True,
                          "masks": ["causal"]},
        "decoder_tokenizer": partial(TextTokenizer, vocab_size=VOCAB.vocab_size, max_len=64),
        "max_decode_len": 8,
        "beams": 2,
        "ctc_beams": 3,
    }  # fmt: skip
    model = SpeechRecognizer(**{**args, **overrides}).eval()
    model.vocab = VOCAB
    return model


def items(seed: int = 1) -> list[dict]:
    """Utterances as ``SpeechDataset`` gives them: noise of four lengths, BOS + ids + EOS."""
    g = torch.Generator().manual_seed(seed)
    return [
        {"audio": 0.1 * torch.randn(n, generator=g), "ids": torch.tensor([BOS, *VOCAB.encode(t), EOS]), "text": t,
         "key": str(i)}
        for i, (t, n) in enumerate(zip(TEXTS, SAMPLES, strict=True))
    ]  # fmt: skip


def levenshtein(a: list, b: list) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, start=1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def sensitive(model: SpeechRecognizer) -> SpeechRecognizer:
    """Larger random weights, so that an untrained model depends on its input: at the default initialisation every
    clip decodes to the same string and the decoder barely reads the encoder (padding leaking into cross-attention
    moves its loss by less than the tolerance), so padding invariance would prove little."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.normal_(0.0, 1.5 / math.sqrt(p[0].numel()))
    return model


# ---------------------------------------------------------------------------------------------------- the loss
@pytest.mark.parametrize("stage", ["train", "val"])
def test_the_hybrid_loss_mixes_decoder_cross_entropy_and_ctc_without_bos_and_eos(stage):
    model, batch = task(), collate_speech(items())
    with torch.no_grad():
        out = model(model.model_inputs(batch))
    # the decoder's cross-entropy by hand: each utterance's mean over its real next ids (EOS included), then the
    # mean over utterances; label smoothing while training only
    smoothing = 0.1 if stage == "train" else 0.0
    att = []
    for i, it in enumerate(items()):
        n = len(it["ids"]) - 1  # predicted ids: everything after BOS
        att.append(F.cross_entropy(out["logits"][i, :n], it["ids"][1:], label_smoothing=smoothing))
    att = torch.stack(att).mean()
    # CTC by hand: torch's ctc_loss on the head's log-probs, against the transcript alone (no BOS, no EOS), over
    # the frames the tokenizer makes of each clip; torch's "mean": each loss over its target length (at least 1)
    tok = model.model.tokenizers["audio"]
    frames = torch.tensor([tok.num_tokens(n) for n in SAMPLES])
    labels = [torch.tensor(VOCAB.encode(t), dtype=torch.long) for t in TEXTS]
    label_lengths = torch.tensor([len(x) for x in labels])
    each = F.ctc_loss(out["encoder"]["ctc"].transpose(0, 1), torch.cat(labels), frames, label_lengths, blank=BLANK,
                      reduction="none", zero_infinity=True)  # fmt: skip
    ctc = (each / label_lengths.clamp(min=1)).mean()
    for weight, expected in ((0.0, att), (1.0, ctc), (0.3, 0.3 * ctc + 0.7 * att)):
        model.ctc_weight = weight
        loss = model.loss(out, batch, stage)
        torch.testing.assert_close(loss["loss"], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss["ctc"], ctc, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss["att"], att, atol=1e-5, rtol=1e-5)


def per_utterance_losses(model: SpeechRecognizer, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B,) CTC losses, (B,) decoder cross-entropies (summed over each row's real ids), and the task's loss."""
    with torch.no_grad():
        out = model(model.model_inputs(batch))
        ids, mask = batch["target"]["ids"], batch["target"]["mask"]
        frames = model.model.heads["ctc"].lengths(out["encoder"]["output"])
        ctc = CTCHead.loss(out["encoder"]["ctc"], frames, ids[:, 1:], mask.sum(1) - 2, BLANK, reduction="none")
        att = TokenHead.loss(out["logits"], ids[:, 1:], mask[:, 1:], reduction="none").sum(dim=1)
        return ctc, att, model.loss(out, batch, "val")["loss"]


def test_a_padded_batch_scores_each_utterance_as_if_it_were_alone():
    model, utts = sensitive(task()), items()
    assert not model.training  # dropout and SpecAugment off: what is compared is padding alone
    ctc, att, loss = per_utterance_losses(model, collate_speech(utts))
    alone = [per_utterance_losses(model, collate_speech([u])) for u in utts]
    torch.testing.assert_close(ctc, torch.cat([a[0] for a in alone]), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(att, torch.cat([a[1] for a in alone]), atol=1e-4, rtol=1e-4)
    # both parts are means over utterances, so the batch's loss is the mean of the utterances' own
    torch.testing.assert_close(loss, torch.stack([a[2] for a in alone]).mean(), atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------------------- decoding
def test_every_decoder_transcribes_a_padded_batch_as_each_utterance_alone():
    model, utts = sensitive(task()), items()
    with torch.no_grad():
        batch = model.transcribe_all(model.encoder_inputs(collate_speech(utts)), DECODERS)
        alone = [model.transcribe_all(model.encoder_inputs(collate_speech([u])), DECODERS) for u in utts]
    for d in DECODERS:
        assert batch[d] == [a[d][0] for a in alone], d
        assert len(set(batch[d])) > 1, f"{d}: every clip decoded alike, the comparison shows nothing"


def test_one_beam_is_greedy_and_joint_at_ctc_weight_zero_is_attention_beam_search():
    model, inputs = sensitive(task(beams=1)), collate_speech(items())
    with torch.no_grad():
        out = model.transcribe_all(model.encoder_inputs(inputs), ["greedy", "beam"])
        assert out["greedy"] == out["beam"]
        model.beams, model.joint_ctc_weight = 3, 0.0
        out = model.transcribe_all(model.encoder_inputs(inputs), ["beam", "joint"])
        assert out["beam"] == out["joint"]
        model.joint_ctc_weight = 0.5  # the CTC scores do change the joint search's answers
        assert model.transcribe_all(model.encoder_inputs(inputs), ["joint"])["joint"] != out["joint"]


def prefer(head: torch.nn.Module, label: int) -> None:
    """Make a head's output layer prefer ``label`` at every position, whatever it reads."""
    with torch.no_grad():
        head.fc.weight.zero_()
        head.fc.bias.fill_(-10.0)
        head.fc.bias[label] = 10.0


def test_silence_decodes_to_nothing_under_every_decoder_and_scores_zero():
    # What is covered: the decoders' handling of a CTC head that says blank at every frame and a decoder that says
    # EOS first (the two heads are forced to, whatever the audio); a trained model that actually hears silence
    # as silence is measured by benchmarks/speech.py, not here.
    model = task()
    prefer(model.model.heads["ctc"], BLANK)
    prefer(model.decoder.heads["logits"], EOS)
    batch = collate_speech(items())
    with torch.no_grad():
        out = model.transcribe_all(model.encoder_inputs(batch), DECODERS)
    assert out == {d: [""] * len(TEXTS) for d in DECODERS}
    silent = {**batch, "text": [""] * len(TEXTS)}  # nothing said, nothing heard: every error rate is 0, not nan
    model.update_metrics({}, silent, "test")
    metrics = {k: float(m.compute()) for k, m in model.stage_metrics("test").items() if k[:3] in ("wer", "cer")}
    assert metrics and all(v == 0.0 for v in metrics.values()), metrics
    assert model.rows == [(str(i), "", "") for i in range(len(TEXTS))]


def test_a_transcript_cut_at_max_decode_len_keeps_its_last_id():
    model = task(max_decode_len=6)
    prefer(model.decoder.heads["logits"], VOCAB.encode("a")[0])  # never EOS: every hypothesis runs to the limit
    with torch.no_grad():
        out = model.transcribe_all(model.encoder_inputs(collate_speech(items())), ["greedy", "beam"])
    assert out == {"greedy": ["aaaaaa"] * len(TEXTS), "beam": ["aaaaaa"] * len(TEXTS)}


# ---------------------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"decoder": "viterbi"}, r"decoder: expected one of 'ctc_greedy', .* got 'viterbi'"),
        ({"val_decoder": "beams"}, r"val_decoder: expected one of .* got 'beams'"),
        ({"test_decoders": ["greedy", "gredy"]}, r"test_decoders: expected one of .* got 'gredy'"),
        ({"ctc_weight": -0.1}, r"ctc_weight: expected a number in \[0, 1\], got -0.1"),
        ({"ctc_weight": 1.5}, r"ctc_weight: expected a number in \[0, 1\], got 1.5"),
        ({"joint_ctc_weight": 2.0}, r"joint_ctc_weight: expected a number in \[0, 1\], got 2.0"),
        ({"decoder_trunk": {"dim": 32, "depth": 1, "heads": 2, "masks": ["causal"]}},
         "decoder_trunk.cross_attention: expected true"),
        ({"ctc_beams": 0}, "ctc_beams: expected >= 1, got 0"),
        ({"audio": "speech"}, r"audio: expected one of the encoder's tokenizers \['audio'\], got 'speech'"),
    ],
)  # fmt: skip
def test_bad_settings_name_the_field(overrides, match):
    with pytest.raises(ValueError, match=match):
        task(**overrides)


# ---------------------------------------------------------------------------------------------------- front end
def test_a_44k_stereo_file_gives_the_features_of_its_16k_mono_original(tmp_path):
    t = torch.arange(16000) / 16000
    torch.manual_seed(0)
    original = 0.2 * torch.sin(2 * math.pi * (300 + 2000 * t) * t) * (0.6 + 0.4 * torch.sin(2 * math.pi * 3 * t))
    original += AF.resample(0.05 * torch.randn(12000), 12000, 16000)  # noise below 6 kHz: nothing near Nyquist
    high = AF.resample(original, 16000, 44100)
    sf.write(tmp_path / "x.wav", np.stack([high.numpy()] * 2, axis=1), 44100, subtype="PCM_16")
    audio, rate = load_audio(tmp_path / "x.wav")
    assert rate == 44100 and audio.shape == (44100,)
    tok = MelSpectrogramTokenizer(32).eval()
    mel0, _ = tok.log_mel(original[None])
    wave, lengths = tok._resample(torch.from_numpy(audio)[None], torch.tensor([audio.size]), rate)
    assert lengths.tolist() == [16000]
    mel1, _ = tok.log_mel(wave, lengths)
    # Within 30 dB of the loudest bin the two agree to 0.1 dB-ish (0.02 normalised = 0.08 log10 units); the
    # quietest bins are rounding noise of the 16-bit file. A 2x gain (stereo summed, not averaged) moves them 0.15.
    loud = mel0 > mel0.max() - 0.75
    assert loud.float().mean() > 0.5
    assert (mel1 - mel0)[loud].abs().max() < 0.02
    assert (mel1 - mel0).abs().mean() < 0.02
    with torch.no_grad():  # what transcribe hands the model: tokens at the file's own rate
        tokens1, tokens0 = tok(torch.from_numpy(audio)[None], sample_rate=rate), tok(original[None])
    torch.testing.assert_close(tokens1.x, tokens0.x, atol=0.03, rtol=0.0)


@st.composite
def gappy_clips(draw) -> tuple[np.ndarray, float, float]:
    """Noise at 1 kHz (never silent on its own) with silent gaps of 30-300 samples; a window and a search span."""
    n = draw(st.integers(100, 8000))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    audio = (rng.uniform(0.1, 1.0, n) * rng.choice([-1.0, 1.0], n)).astype(np.float32)
    for _ in range(draw(st.integers(0, 40))):
        start, size = draw(st.integers(0, n - 1)), draw(st.integers(30, 300))
        audio[start : start + size] = 0.0
    window = draw(st.floats(0.1, 2.0))
    search = draw(st.floats(0.02, window / 2))
    return audio, window, search


@settings(max_examples=150, deadline=None)
@given(clip=gappy_clips())
def test_long_clips_are_cut_into_windows_at_the_quietest_frame_and_join_back_exactly(clip):
    audio, window, search = clip
    rate, frame = 1000, 10  # 10 ms frames at 1 kHz
    size = int(window * rate)
    pieces = split_windows(audio, rate, window, search)
    assert np.array_equal(np.concatenate(pieces), audio)
    assert all(0 < p.size <= size for p in pieces)
    assert len(pieces) == 1 or audio.size > size
    start = 0
    for piece in pieces[:-1]:
        cut = start + piece.size
        # the frames searched: 10 ms steps over the last `search` seconds before the window's limit
        lo, hi = start + max(size - int(search * rate), frame), start + size
        frames = range(lo, hi - frame + 1, frame)
        energy = [float(np.sum(audio[a : a + frame].astype(np.float64) ** 2)) for a in frames]
        chosen = cut - frame // 2  # a cut is the middle of its frame
        assert chosen in frames
        assert energy[frames.index(chosen)] == pytest.approx(min(energy), rel=1e-5, abs=1e-12)
        if min(energy) == 0.0:  # a silent frame was there to be found: the cut falls in silence
            assert not audio[chosen : chosen + frame].any()
        start = cut


def test_bad_windows_are_refused(capsys):
    with pytest.raises(ValueError, match=r"window: expected at least 0.02 s \(two 10 ms frames\), got 0.0 s"):
        split_windows(np.zeros(1000, np.float32), 1000, 0.0, 0.0)
    with pytest.raises(ValueError, match="search: expected at least one 10 ms frame, got 0.001 s"):
        split_windows(np.zeros(1000, np.float32), 1000, 0.5, 0.001)
    with pytest.raises(SystemExit) as exit_:  # before any checkpoint is read
        omni_main(["transcribe", "--ckpt_path", "missing.ckpt", "--window", "0", "a.wav"])
    assert exit_.value.code == 2 and "--window: expected at least 0.02 seconds, got 0.0" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """The tiny speech job fit on a corpus of seven utterances; every test utterance tested (a batch each)."""
    root = tmp_path_factory.mktemp("speech")
    corpus = build_corpus(CorpusSpec(num_train=3, num_val=1, num_test=3, seed=5), root / "corpus", 1, False)
    with pytest.MonkeyPatch.context() as mp:  # LightningCLI warns when sys.argv (pytest's) holds arguments too
        mp.setattr(sys, "argv", ["omni"])
        fit(root, corpus)
    return root


def fit(root: Path, corpus: Path) -> None:
    omni_main([
        "fit", "--config", str(ROOT / "configs/speech_digits.yaml"),
        "--config", str(ROOT / "configs/speech_digits_tiny.yaml"),
        *(a for s in ("train", "val", "test") for a in (f"--data.init_args.{s}_manifest", str(corpus / f"{s}.jsonl"))),
        "--data.init_args.batch_size", "1", "--trainer.limit_test_batches", "null",
        "--trainer.logger.init_args.save_dir", str(root / "runs"), "--trainer.enable_progress_bar", "false",
    ])  # fmt: skip


def read_errors(path: Path) -> list[dict]:
    lines = path.read_text().splitlines()
    assert lines[0] == "key\treference\thypothesis\tedits\twords"
    cols = lines[0].split("\t")
    return [dict(zip(cols, line.split("\t"), strict=True)) for line in lines[1:]]


def test_the_tiny_job_scores_every_decoder_and_writes_its_errors_and_alignment(run, export_round_trip):
    out = run / "runs/speech_digits_tiny/version_0"
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert {"test/wer", "test/cer"} | {f"test/{m}_{d}" for m in ("wer", "cer") for d in DECODERS} <= set(metrics)
    assert all(math.isfinite(v) for v in metrics.values())
    test = [json.loads(line) for line in (run / "corpus/test.jsonl").read_text().splitlines()]
    rows = read_errors(out / "errors.tsv")
    assert sorted(r["key"] for r in rows) == sorted(str(run / "corpus" / t["audio_filepath"]) for t in test)
    assert sorted(r["reference"] for r in rows) == sorted(t["text"] for t in test)  # digits: already normalised
    for r in rows:
        assert int(r["edits"]) == levenshtein(r["reference"].split(), r["hypothesis"].split())
        assert int(r["words"]) == len(r["reference"].split())
    assert [int(r["edits"]) for r in rows] == sorted((int(r["edits"]) for r in rows), reverse=True)  # worst first
    # the table holds the hypotheses test/wer scored (by the decoder speech_digits.yaml names)
    words = sum(int(r["words"]) for r in rows)
    assert metrics["test/wer"] == pytest.approx(sum(int(r["edits"]) for r in rows) / max(words, 1), abs=1e-6)
    decoder = yaml.safe_load((ROOT / "configs/speech_digits.yaml").read_text())["model"]["init_args"]["decoder"]
    assert metrics["test/wer"] == metrics[f"test/wer_{decoder}"]
    assert metrics["test/cer"] == metrics[f"test/cer_{decoder}"]
    chars = sum(len(r["reference"]) for r in rows)
    char_edits = sum(levenshtein(list(r["reference"]), list(r["hypothesis"])) for r in rows)
    assert metrics["test/cer"] == pytest.approx(char_edits / max(chars, 1), abs=1e-6)
    assert (out / "alignment.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # omni export -> omni.load: the same CTC log-probabilities, and the vocabulary rides along (transcripts)
    wave = torch.from_numpy(load_audio(run / "corpus" / test[0]["audio_filepath"])[0])[None]
    exported = export_round_trip(out / "checkpoints/last.ckpt", lambda t: t.model({"audio": wave})["ctc"])
    assert exported.text_of([5, 6]) == load_task(type(exported), out / "checkpoints/last.ckpt").text_of([5, 6])


def test_predict_saves_the_transcripts_the_test_scored(run, capsys):
    out = run / "runs/speech_digits_tiny/version_0"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", ["omni"])
        omni_main([
            "predict", "--config", str(out / "config.yaml"), "--ckpt_path", str(out / "checkpoints/last.ckpt"),
            "--trainer.logger.init_args.save_dir", str(run / "pred"), "--trainer.enable_progress_bar", "false",
        ])  # fmt: skip
    preds = torch.load(next((run / "pred").rglob("predictions.pt")))
    # the predict split defaults to the test manifest: one transcript per test utterance, by the config's decoder
    assert dict(zip(preds["key"], preds["text"], strict=True)) == {
        r["key"]: r["hypothesis"] for r in read_errors(out / "errors.tsv")
    }
    assert "predictions:" in capsys.readouterr().out


def test_transcribe_prints_the_good_files_and_names_the_bad_ones(run, tmp_path, capsys):
    out = run / "runs/speech_digits_tiny/version_0"
    tested = {r["key"]: r["hypothesis"] for r in read_errors(out / "errors.tsv")}
    good = sorted(tested)[:2]
    longest = max(sf.info(f).duration for f in good)
    # a long stereo file at 44.1 kHz: cut into windows, transcribed, and still one line
    speech, rate = sf.read(good[0], dtype="float32")
    long = np.tile(AF.resample(torch.from_numpy(speech), rate, 44100).numpy(), 4)
    sf.write(tmp_path / "long.wav", np.stack([long, long], axis=1), 44100)
    (tmp_path / "notes.txt").write_text("not audio")
    (tmp_path / "empty.wav").write_bytes(b"")
    sf.write(tmp_path / "no_samples.wav", np.zeros((0, 1), np.float32), 16000)
    bad = [tmp_path / "notes.txt", tmp_path / "empty.wav", tmp_path / "no_samples.wav", tmp_path / "missing.wav"]
    files = [good[0], *map(str, bad[:2]), str(tmp_path / "long.wav"), *map(str, bad[2:]), good[1]]
    with pytest.raises(SystemExit) as exit_:
        omni_main(["transcribe", "--ckpt_path", str(out / "checkpoints/last.ckpt"), "--window", str(longest + 0.5),
                   *files])  # fmt: skip
    assert exit_.value.code == 1
    printed = capsys.readouterr()
    lines = printed.out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [good[0], str(tmp_path / "long.wav"), good[1]]
    # the last checkpoint is the one tested, its decoder the one errors.tsv shows, the clip alone as it was tested
    for line in lines:
        name, text = line.split("\t")
        if name in tested:
            assert text == tested[name]
    errors = printed.err.splitlines()
    assert len(errors) == len(bad)
    for path, error in zip(bad, errors, strict=True):
        assert error.startswith(f"error: {path}: expected")


def test_the_sentences_job_runs_tiny_on_characters(tmp_path, monkeypatch):
    """``speech_sentences.yaml`` + its tiny overlay on a corpus of sentences from a text the test writes: every
    decoder scored, and the run's vocabulary is the one the config names (characters: 32 ids)."""
    text = tmp_path / "book.txt"
    people, places = ["the old man", "a young girl", "the farmer", "my brother", "the captain"], [
        "by the river", "in the town", "at the market", "near the hill", "under the bridge", "on the road"]  # fmt: skip
    text.write_text(" ".join(f"{p.capitalize()} waited {q} until night came." for p in people for q in places))
    spec = CorpusSpec(kind="sentences", text=str(text), num_train=3, num_val=1, num_test=2, seed=3)
    corpus = build_corpus(spec, tmp_path / "corpus", 1, False)
    monkeypatch.setattr(sys, "argv", ["omni"])
    omni_main([
        "fit", "--config", str(ROOT / "configs/speech_sentences.yaml"),
        "--config", str(ROOT / "configs/speech_sentences_tiny.yaml"),
        *(a for s in ("train", "val", "test") for a in (f"--data.init_args.{s}_manifest", str(corpus / f"{s}.jsonl"))),
        "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"), "--trainer.enable_progress_bar", "false",
    ])  # fmt: skip
    out = tmp_path / "runs/speech_sentences_tiny/version_0"
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert {f"test/{m}_{d}" for m in ("wer", "cer") for d in DECODERS} <= set(metrics)
    assert all(math.isfinite(v) for v in metrics.values())
    task = load_task(SpeechRecognizer, out / "checkpoints/last.ckpt")
    assert task.vocab_size == CharVocab().vocab_size
    assert task.text_of(CharVocab().encode("the cat")) == "the cat"
