"""MelSpectrogramTokenizer: Whisper's log-mel front end, token counts, exact padding, resampling, input checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st

from omni.layers import sincos_1d
from omni.tokenizers import MelSpectrogramTokenizer
from omni.tokenizers.audio import ConvModule

SR = 16000
DIM = 16


@pytest.fixture(scope="module")
def tok() -> MelSpectrogramTokenizer:
    torch.manual_seed(0)
    return MelSpectrogramTokenizer(DIM).eval()


def sine(freq: float, seconds: float, sr: int = SR, amp: float = 0.5) -> torch.Tensor:
    t = torch.arange(round(seconds * sr), dtype=torch.float64) / sr
    return (amp * torch.sin(2 * math.pi * freq * t)).float()


# ---------------------------------------------------------------------------- a hand-written Whisper front end
def slaney_mel_filters(sr: int, n_fft: int, n_mels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """librosa.filters.mel(sr, n_fft, n_mels) defaults (htk=False, norm="slaney"): (M, n_fft // 2 + 1), centres (M,)."""

    def hz_to_mel(f: torch.Tensor) -> torch.Tensor:
        f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
        mel = f / f_sp
        return torch.where(f >= min_log_hz, min_log_hz / f_sp + torch.log(f / min_log_hz) / logstep, mel)

    def mel_to_hz(m: torch.Tensor) -> torch.Tensor:
        f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
        min_log_mel = min_log_hz / f_sp
        return torch.where(m >= min_log_mel, min_log_hz * torch.exp(logstep * (m - min_log_mel)), f_sp * m)

    fft_freqs = torch.linspace(0, sr / 2, n_fft // 2 + 1, dtype=torch.float64)
    lo, hi = hz_to_mel(torch.tensor(0.0, dtype=torch.float64)), hz_to_mel(torch.tensor(sr / 2, dtype=torch.float64))
    mel_f = mel_to_hz(torch.linspace(float(lo), float(hi), n_mels + 2, dtype=torch.float64))
    fdiff = mel_f.diff()
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = torch.clamp(torch.minimum(lower, upper), min=0)
    enorm = 2.0 / (mel_f[2:] - mel_f[:-2])
    return weights * enorm[:, None], mel_f[1:-1]


def whisper_log_mel(audio: torch.Tensor, n_mels: int = 80) -> torch.Tensor:
    """Whisper's log_mel_spectrogram(audio, padding=...) for one clip, without the 30 s cut: (n_mels, T // 160)."""
    n_frames = audio.shape[-1] // 160
    padded = F.pad(audio.double(), (0, 400))  # Whisper zero-pads the clip before its centred STFT
    stft = torch.stft(padded, 400, 160, window=torch.hann_window(400, dtype=torch.float64), return_complex=True)
    power = stft.abs() ** 2
    filters, _ = slaney_mel_filters(SR, 400, n_mels)
    mel = filters @ power[..., :n_frames]
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).float()


def test_mel_filters_are_librosa_slaney(tok):
    filters, _ = slaney_mel_filters(SR, 400, 80)
    fb = tok.frontend.mel_scale.fb.T.double()  # torchaudio stores (freqs, mels)
    torch.testing.assert_close(fb, filters, atol=1e-6, rtol=1e-4)


def test_log_mel_matches_whisper_on_a_sine(tok):
    audio = sine(1000.0, 0.5)  # 8000 samples -> 50 frames
    log_spec, frame_mask = tok.log_mel(audio[None])
    assert log_spec.shape == (1, 80, 50) and bool(frame_mask.all())
    expected = whisper_log_mel(audio)
    torch.testing.assert_close(log_spec[0], expected, atol=2e-4, rtol=1e-4)
    # Whisper's range: the loudest value is (log10(max mel) + 4) / 4 and nothing is more than 8/4 below it.
    _, centers = slaney_mel_filters(SR, 400, 80)
    peak_bin = int(log_spec[0].amax(dim=1).argmax())
    assert abs(float(centers[peak_bin]) - 1000.0) < 60.0  # the sine's energy sits in the mel bin around 1 kHz
    top, bottom = float(log_spec.max()), float(log_spec.min())
    assert top - bottom == pytest.approx(2.0, abs=1e-5)
    mel = tok.frontend(F.pad(audio[None], (0, 200)))[..., :50]
    assert top == pytest.approx((math.log10(float(mel.max())) + 4) / 4, abs=1e-5)
    assert 0.0 < top < 2.0


def test_log_mel_stays_float32_under_bf16_autocast(tok):
    """bf16-mixed training runs the tokenizer under autocast: the features must not go through a bf16 matmul."""
    g = torch.Generator().manual_seed(0)
    audio = torch.randn(2, 8000, generator=g) * 0.1 + sine(440.0, 0.5)[None]
    plain, _ = tok.log_mel(audio)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed, _ = tok.log_mel(audio)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, plain, atol=0.0, rtol=0.0)


@pytest.fixture(scope="module")
def tok4() -> MelSpectrogramTokenizer:
    torch.manual_seed(1)
    return MelSpectrogramTokenizer(DIM, stride=4).eval()


@pytest.fixture(scope="module")
def stems(tok, tok4) -> dict[tuple[str, int], MelSpectrogramTokenizer]:
    """Every stem at each of its strides: Whisper's 1-D convs (2, 4) and ESPnet's 2-D subsampling (2, 4, 8)."""
    torch.manual_seed(2)
    conv2d = {
        (s, "conv2d"): MelSpectrogramTokenizer(DIM, stride=s, stem="conv2d", stem_channels=8).eval() for s in (2, 4, 8)
    }
    conformer = {  # the conv2d stem followed by two Conformer convolution modules
        (s, "conv2d+conv"): MelSpectrogramTokenizer(
            DIM, stride=s, stem="conv2d", stem_channels=8, conv_blocks=2, conv_kernel=5
        ).eval()
        for s in (2, 4, 8)
    }
    return {(2, "whisper"): tok, (4, "whisper"): tok4, **conv2d, **conformer}


@settings(max_examples=12, deadline=None)
@given(
    num_samples=st.integers(min_value=160, max_value=6000),
    stride=st.sampled_from([2, 4, 8]),
    stem=st.sampled_from(["whisper", "conv2d"]),
)
@example(num_samples=1440, stride=8, stem="conv2d")  # 9 frames: 2 tokens (a stride-16 stem gave 1)
@example(num_samples=6000, stride=8, stem="conv2d")  # 37 frames: 5 tokens
def test_token_count(stems, num_samples, stride, stem):
    tok = stems[(min(stride, 4) if stem == "whisper" else stride, stem)]
    out = tok(torch.randn(1, num_samples) * 0.1)
    expected = math.ceil((num_samples // 160) / tok.stride)
    assert out.x.shape == (1, expected, DIM)
    assert tok.num_tokens(num_samples) == expected
    assert bool(out.pad.all())


def test_num_tokens_rejects_less_than_one_hop(tok):
    with pytest.raises(ValueError, match="num_samples"):
        tok.num_tokens(159)


def test_pos_is_seconds_of_each_token_start(tok, tok4):
    out = tok(torch.randn(2, 3200) * 0.1)
    assert out.pos.shape == (2, 10, 1)
    torch.testing.assert_close(out.pos[0, :, 0], torch.arange(10) * 0.02)
    torch.testing.assert_close(tok4(torch.randn(2, 3200) * 0.1).pos[0, :, 0], torch.arange(5) * 0.04)
    assert out.modality.eq(0).all() and out.group.eq(0).all()


def test_pad_from_lengths(tok):
    lengths = torch.tensor([3200, 1000, 330, 170, 1])
    out = tok(torch.randn(5, 3200) * 0.1, lengths=lengths)
    # frames = max(1, length // 160); tokens = ceil(frames / 2)
    assert out.pad.sum(dim=1).tolist() == [10, 3, 1, 1, 1]
    assert out.pad[:, 0].all()  # real tokens come first
    assert (out.pad.long().diff(dim=1) <= 0).all()


@settings(max_examples=8, deadline=None)
@given(
    length=st.integers(min_value=160, max_value=3000),
    extra=st.integers(min_value=1, max_value=1500),
    noise=st.booleans(),
    stride=st.sampled_from([2, 4, 8]),
    stem=st.sampled_from(["whisper", "conv2d", "conv2d+conv"]),
)
def test_padding_does_not_change_real_tokens(stems, length, extra, noise, stride, stem):
    tok = stems[(min(stride, 4) if stem == "whisper" else stride, stem)]
    torch.manual_seed(length)
    clip = torch.randn(length) * 0.1 + sine(440.0, length / SR)
    alone = tok(clip[None])
    tail = torch.randn(extra) if noise else torch.zeros(extra)  # anything past the end must be ignored
    other = torch.randn(length + extra) * 0.3
    batch = torch.stack([other, torch.cat([clip, tail])])
    padded = tok(batch, lengths=torch.tensor([length + extra, length]))
    n = alone.num_tokens
    assert int(padded.pad[1].sum()) == n
    torch.testing.assert_close(padded.x[1, :n], alone.x[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(padded.x[0], tok(other[None]).x[0], atol=1e-5, rtol=0)


def test_channel_dim_accepted(tok):
    audio = torch.randn(2, 1, 1600) * 0.1
    torch.testing.assert_close(tok(audio).x, tok(audio[:, 0]).x)


def test_resampling_from_8khz(tok):
    audio_8k = sine(440.0, 0.5, sr=8000)[None].repeat(2, 1)  # 4000 samples = 8000 at 16 kHz
    out = tok(audio_8k, lengths=torch.tensor([4000, 2000]), sample_rate=8000)
    assert out.num_tokens == tok.num_tokens(8000) == 25
    assert out.pad.sum(dim=1).tolist() == [25, 13]  # 2000 samples at 8 kHz = 4000 at 16 kHz -> 25 frames
    # The resampled sine tokenizes like the same sine recorded at 16 kHz (away from the clip edges).
    native = tok(sine(440.0, 0.5)[None])
    torch.testing.assert_close(out.x[0, 2:-2], native.x[0, 2:-2], atol=0.05, rtol=0)


def test_float64_and_gradients(tok):
    audio = (torch.randn(2, 1600, dtype=torch.float64) * 0.1).requires_grad_()
    out = tok(audio)
    assert out.x.dtype == torch.float32
    out.x.sum().backward()
    assert tok.conv1.weight.grad is not None and tok.conv1.weight.grad.abs().sum() > 0
    assert audio.grad is not None and torch.isfinite(audio.grad).all()
    tok.zero_grad()


def test_conv2d_stem_slides_along_mel_bins():
    """A pattern moved two mel bins up gives the first conv's same activations moved one bin (stride 2) up."""
    tok = MelSpectrogramTokenizer(DIM, stride=4, stem="conv2d", stem_channels=4).eval()
    spec = torch.zeros(1, 1, 20, 80)
    spec[..., 10:14, 30:34] = 1.0
    moved = torch.roll(spec, shifts=2, dims=-1)
    a, b = tok.conv1(spec), tok.conv1(moved)
    torch.testing.assert_close(b[..., 16:19], a[..., 15:18])
    with pytest.raises(ValueError, match="stem"):
        MelSpectrogramTokenizer(DIM, stem="resnet")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stem_channels"):
        MelSpectrogramTokenizer(DIM, stem="conv2d", stem_channels=0)


def test_conv_module_mixes_exactly_the_kernels_neighbours():
    """A change at token t reaches tokens t - k//2 .. t + k//2 through one ConvModule, and no other token."""
    torch.manual_seed(0)
    block = ConvModule(DIM, kernel=5).eval()
    x, pad = torch.randn(1, 20, DIM), torch.ones(1, 20, dtype=torch.bool)
    moved = x.clone()
    moved[0, 9] += torch.randn(DIM)
    changed = (block(moved, pad) - block(x, pad)).abs().amax(dim=-1)[0] > 1e-6
    assert changed.nonzero()[:, 0].tolist() == [7, 8, 9, 10, 11]
    with pytest.raises(ValueError, match="^conv_kernel:"):
        ConvModule(DIM, kernel=4)
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError, match="^conv_blocks:"):
            MelSpectrogramTokenizer(DIM, conv_blocks=bad)
    with pytest.raises(ValueError, match="^conv_kernel:"):  # checked even where no module is built
        MelSpectrogramTokenizer(DIM, conv_blocks=0, conv_kernel=4)


@settings(max_examples=15, deadline=None)
@given(batch=st.integers(1, 3), tokens=st.integers(1, 40), kernel=st.sampled_from([1, 3, 15]), seed=st.integers(0, 99))
def test_conv_module_matches_the_conformer_formula_with_conv1d(batch, tokens, kernel, seed):
    """The channels-last 2-D depthwise path gives the textbook ``Conv1d`` block's outputs and gradients."""
    torch.manual_seed(seed)
    block = ConvModule(DIM, kernel=kernel)
    x = torch.randn(batch, tokens, DIM, requires_grad=True)
    pad = torch.arange(tokens) < torch.randint(1, tokens + 1, (batch, 1))

    def reference(x: torch.Tensor) -> torch.Tensor:
        h = F.glu(block.pointwise_in(block.norm(x)), dim=-1) * pad[..., None]
        h = block.depthwise(h.transpose(1, 2)).transpose(1, 2)
        return x + block.pointwise_out(F.silu(block.mid_norm(h)))

    out, want = block(x, pad), reference(x)
    torch.testing.assert_close(out, want, rtol=1e-6, atol=1e-6)
    params = [x, block.depthwise.weight, block.depthwise.bias, block.pointwise_in.weight]
    got = torch.autograd.grad(out.square().sum(), params)
    expected = torch.autograd.grad(want.square().sum(), params)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stem", ["conv2d", "whisper"])
def test_content_scale_multiplies_the_stem_output_not_the_positions(stem):
    """Tokens = content_scale x stem output + sin-cos positions; conv2d's default is ESPnet's sqrt(D), Whisper's 1."""
    torch.manual_seed(0)
    wave = torch.randn(2, 4000) * 0.1
    lengths = torch.tensor([4000, 2500])
    base = MelSpectrogramTokenizer(DIM, stem=stem, stride=4, content_scale=1.0).eval()
    default = MelSpectrogramTokenizer(DIM, stem=stem, stride=4).eval()
    default.load_state_dict(base.state_dict())
    want = {"conv2d": DIM**0.5, "whisper": 1.0}[stem]
    a, b = base(wave, lengths), default(wave, lengths)
    pos = sincos_1d(torch.arange(a.x.shape[1]), DIM)
    torch.testing.assert_close((b.x - pos) * b.pad[..., None], want * (a.x - pos) * a.pad[..., None])
    with pytest.raises(ValueError, match="^content_scale:"):
        MelSpectrogramTokenizer(DIM, content_scale=-1.0)


@settings(max_examples=10, deadline=None)
@given(gain_db=st.floats(-30.0, 0.0), seed=st.integers(0, 2**16))
def test_peak_level_ignores_the_clip_gain(gain_db, seed):
    """``level="peak"``: a clip played louder or softer gives the same log-mel (its loudest bin at 1); Whisper's
    fixed scale shifts the whole spectrogram instead."""
    g = torch.Generator().manual_seed(seed)
    clip = sine(440.0, 0.5) + 0.05 * torch.randn(8000, generator=g)
    peak = MelSpectrogramTokenizer(DIM, level="peak")
    whisper = MelSpectrogramTokenizer(DIM)
    gain = 10 ** (gain_db / 20)
    a, _ = peak.log_mel(clip[None] * 0.9)
    b, _ = peak.log_mel(clip[None] * 0.9 * gain)
    torch.testing.assert_close(b, a, atol=1e-4, rtol=0)
    assert float(a.amax()) == pytest.approx(1.0)
    wa, _ = whisper.log_mel(clip[None] * 0.9)
    wb, _ = whisper.log_mel(clip[None] * 0.9 * gain)
    assert float(wa.amax() - wb.amax()) == pytest.approx(-gain_db / 10 / 4, abs=1e-3)
    with pytest.raises(ValueError, match="level"):
        MelSpectrogramTokenizer(DIM, level="rms")  # type: ignore[arg-type]


def test_other_hop_and_rate():
    tok = MelSpectrogramTokenizer(8, sample_rate=8000, n_mels=40)
    assert (tok.n_fft, tok.hop_length) == (200, 80)
    out = tok(torch.randn(1, 800) * 0.1)  # 10 frames of 10 ms -> 5 tokens of 20 ms
    assert out.num_tokens == 5
    torch.testing.assert_close(out.pos[0, :, 0], torch.arange(5) * 0.02)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"audio": torch.randn(1600)}, "audio"),  # rank 1
        ({"audio": torch.randn(1, 1, 1, 1600)}, "audio"),  # rank 4
        ({"audio": torch.randn(2, 2, 1600)}, "audio"),  # two channels
        ({"audio": torch.full((1, 1600), float("nan"))}, "audio"),
        ({"audio": torch.full((1, 1600), float("inf"))}, "audio"),
        ({"audio": torch.zeros(1, 0)}, "audio"),  # empty
        ({"audio": torch.zeros(0, 1600)}, "audio"),  # empty batch
        ({"audio": torch.zeros(1, 1600, dtype=torch.int16)}, "audio"),  # integer PCM
        ({"audio": torch.zeros(1, 100)}, "audio"),  # shorter than one hop
        ({"audio": torch.zeros(1, 1600), "lengths": torch.tensor([1600.0])}, "lengths"),  # float lengths
        ({"audio": torch.zeros(2, 1600), "lengths": torch.tensor([1600])}, "lengths"),  # one length for two clips
        ({"audio": torch.zeros(1, 1600), "lengths": torch.tensor([[1600]])}, "lengths"),  # rank 2
        ({"audio": torch.zeros(1, 1600), "lengths": torch.tensor([1601])}, "lengths"),  # longer than T
        ({"audio": torch.zeros(1, 1600), "lengths": torch.tensor([0])}, "lengths"),
        ({"audio": torch.zeros(1, 1600), "sample_rate": 0}, "sample_rate"),
        ({"audio": torch.zeros(1, 1600), "sample_rate": 16000.0}, "sample_rate"),
        ({"audio": [0.0] * 1600}, "audio"),  # not a tensor
    ],
)
def test_bad_inputs_raise_value_error(tok, kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        tok(**kwargs)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="dim"):
        MelSpectrogramTokenizer(7)
    with pytest.raises(ValueError, match="sample_rate"):
        MelSpectrogramTokenizer(8, sample_rate=-1)
    with pytest.raises(ValueError, match="n_mels"):
        MelSpectrogramTokenizer(8, n_mels=0)
    with pytest.raises(ValueError, match="^stride:"):
        MelSpectrogramTokenizer(8, stride=8)  # Whisper's stem stops at 4
    with pytest.raises(ValueError, match="^stride:"):
        MelSpectrogramTokenizer(8, stride=3, stem="conv2d")
