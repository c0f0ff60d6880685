"""Audio waveforms -> log-mel tokens (Whisper's front end and conv stem, any clip length).

Shape legend
    B batch   T samples   F = T // HOP mel frames (10 ms each)   M mel bins
    N = ceil(F / stride) tokens (20 ms each at stride 2, 40 ms at 4, 80 ms at 8)   D width
"""

from __future__ import annotations

import math
import numbers
from typing import Literal

import torch
import torch.nn.functional as F
import torchaudio.functional as AF
import torchaudio.transforms as AT
from einops import rearrange
from torch import Tensor, nn

from omni.choices import check_choice
from omni.layers import sincos_1d
from omni.tokenizers.checks import check_tensor
from omni.tokens import Tokens

__all__ = ["AudioLevel", "AudioPositions", "AudioStem", "ConvModule", "MelSpectrogramTokenizer", "SpecAugment"]

AudioStem = Literal["whisper", "conv2d"]
AudioLevel = Literal["whisper", "peak"]
AudioPositions = Literal["sincos", "whisper"]

SAMPLE_RATE = 16000  # Hz, Whisper's rate
N_FFT = 400  # 25 ms window at 16 kHz
HOP = 160  # 10 ms at 16 kHz: one mel frame
N_MELS = 80  # Whisper's mel bins (large-v3 uses 128)
STEM_STRIDE = 2  # the second conv halves the frame rate: one token per 20 ms
LOG_FLOOR = 1e-10  # clamp before log10, as Whisper does
DYNAMIC_RANGE = 8.0  # log10 units kept below each clip's loudest value (80 dB)


def _frames(num_samples: Tensor | int, hop: int) -> Tensor | int:
    """Mel frames Whisper keeps for a clip: one per full hop (its STFT's last, centred frame is dropped)."""
    return num_samples // hop


class SpecAugment(nn.Module):
    """SpecAugment's masks (Park et al., 2019) with NeMo's defaults, in training mode only (identity in eval).

    ``freq_masks`` bands of 0 to ``freq_width - 1`` mel bins and ``time_masks`` spans of 0 to
    ``time_width_ratio`` x F - 1 frames, each drawn per clip (``torchaudio.transforms.FrequencyMasking`` /
    ``TimeMasking`` with ``iid_masks=True``), are set to the clip's floor: the value of silence, which is also what
    padding frames hold, so padding stays exactly as it was. F is the batch's frame count: time masks are placed
    and sized over the padded length, and one that falls past a clip's end changes nothing (duration-bucketed
    batches keep that small).
    """

    def __init__(
        self, freq_masks: int = 2, freq_width: int = 27, time_masks: int = 10, time_width_ratio: float = 0.05
    ) -> None:
        """
        Args:
            freq_masks: frequency bands masked per clip.
            freq_width: the widest band, in mel bins (widths are uniform in [0, freq_width)).
            time_masks: time spans masked per clip.
            time_width_ratio: the widest span, as a share of the frames (widths uniform in [0, ratio x F)).
        """
        super().__init__()
        for name, value in (("freq_masks", freq_masks), ("freq_width", freq_width), ("time_masks", time_masks)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"spec_augment.{name}: expected a non-negative int, got {value!r}")
        if not 0.0 <= time_width_ratio <= 1.0:
            raise ValueError(f"spec_augment.time_width_ratio: expected a share in [0, 1], got {time_width_ratio!r}")
        self.freq_masks, self.time_masks, self.time_width_ratio = freq_masks, time_masks, time_width_ratio
        self.freq = AT.FrequencyMasking(freq_width, iid_masks=True)

    def forward(self, log_spec: Tensor, floor: Tensor) -> Tensor:
        """Mask ``log_spec`` (B, M, F) to ``floor`` (B, 1, 1) in training mode; returns (B, M, F)."""
        if not self.training:
            return log_spec
        keep = torch.ones_like(log_spec)  # masks drawn on ones (masked -> 0), then applied: unmasked values exact
        for _ in range(self.freq_masks):
            keep = self.freq(keep)
        time = AT.TimeMasking(int(self.time_width_ratio * log_spec.shape[-1]), iid_masks=True)
        for _ in range(self.time_masks):
            keep = time(keep)
        return torch.where(keep.bool(), log_spec, floor)


class ConvModule(nn.Module):
    """The Conformer's convolution module as a residual block over tokens, exact under padding.

    ``x + Linear(SiLU(LayerNorm(DepthwiseConv(GLU(Linear(LayerNorm(x)))))))``, the depthwise conv ``kernel`` tokens
    wide along time. Tokens past each clip's end are zeroed before the depthwise conv, so a padded clip's real tokens
    equal the clip's alone (its own zero padding). LayerNorm stands in for the Conformer's BatchNorm: no statistics
    shared across a batch, its padding or DDP ranks.
    """

    def __init__(self, dim: int, kernel: int = 15) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"conv_kernel: expected an odd positive int (a centred window), got {kernel!r}")
        self.norm = nn.LayerNorm(dim)
        self.pointwise_in = nn.Linear(dim, 2 * dim)
        self.depthwise = nn.Conv1d(dim, dim, kernel_size=kernel, padding=kernel // 2, groups=dim)
        self.mid_norm = nn.LayerNorm(dim)
        self.pointwise_out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, pad: Tensor) -> Tensor:
        """x: (B, N, D) tokens, pad: (B, N) bool, True for a real token -> (B, N, D)."""
        h = F.glu(self.pointwise_in(self.norm(x)), dim=-1) * pad[..., None]  # (B, N, D), zeros past the end
        h = rearrange(self._depthwise(rearrange(h, "b n d -> b d 1 n")), "b d 1 n -> b n d")
        return x + self.pointwise_out(F.silu(self.mid_norm(h)))

    def _depthwise(self, h: Tensor) -> Tensor:
        """(B, D, 1, N) -> (B, D, 1, N): ``self.depthwise`` as a 1 x kernel 2-D convolution.

        ``h`` is a view of (B, N, D) tokens, which is the channels-last layout of (B, D, 1, N): oneDNN's channels-last
        depthwise kernel reads it in place, about twice as fast forward + backward on the CPU as ``Conv1d`` over a
        (B, D, N) copy, with the same outputs to the bit (``benchmarks/cpu_kernels.py``)."""
        conv = self.depthwise
        weight = rearrange(conv.weight, "d 1 k -> d 1 1 k")
        return F.conv2d(h, weight, conv.bias, padding=(0, conv.padding[0]), groups=conv.groups)


class MelSpectrogramTokenizer(nn.Module):
    """Log-mel spectrogram and Whisper's two-convolution stem, without Whisper's 30-second padding.

    The front end follows Whisper's ``log_mel_spectrogram``: a 25 ms Hann window every 10 ms (centred STFT,
    reflect-padded at the start), power spectrum, Slaney-style mel filters (librosa's defaults), the last STFT
    frame dropped, then ``log10(clamp(mel, 1e-10))``, a floor 8 below the clip's maximum and ``(x + 4) / 4``. The
    end of each clip is followed by zeros, exactly what Whisper's zero-padding to 30 s puts there.

    The stem is Whisper's: ``Conv1d(M, D, 3) + GELU``, ``Conv1d(D, D, 3, stride 2) + GELU``; a fixed sin-cos
    encoding of the token index is added. Padding is exact: a clip padded with anything after its ``length`` gives
    the same real tokens as the clip alone (frames past the end are set to the clip's floor, and stem activations
    past the end are zeroed after each conv).

    ``stem="conv2d"`` is ESPnet's ``Conv2dSubsampling`` instead: two 3x3 convolutions of stride 2 over time and
    mel bins (``stem_channels`` wide, GELU), then a linear map of channels x M/4 bins to D. Its kernels slide
    along the mel axis, so a formant or pitch moved a few bins up is the same pattern moved: a prior for voices
    unlike the training voices that Whisper's per-bin first conv lacks. Padding stays exact the same way.

    Every token's ``pos`` is the (seconds,) at which its 20 ms window starts; ``group`` and ``sample`` are 0.

    Whisper's own input, to run a Whisper checkpoint exactly (``omni.whisper``): ``window_seconds=30`` zero-pads
    every clip to 30 s (3,000 frames, 1,500 tokens, all of them real, as Whisper attends its padding) and lets the
    stem's first conv see zeros past the window's edge, as Whisper's does; ``positions="whisper"`` adds Whisper's
    ``sinusoids`` instead of omni's sin-cos (their frequencies are spaced differently).
    """

    modalities: tuple[str, ...] = ("audio",)

    def __init__(
        self,
        dim: int,
        sample_rate: int = SAMPLE_RATE,
        n_mels: int = N_MELS,
        n_fft: int | None = None,
        hop_length: int | None = None,
        spec_augment: dict[str, int | float] | None = None,
        stride: int = STEM_STRIDE,
        stem: AudioStem = "whisper",
        stem_channels: int = 64,
        level: AudioLevel = "whisper",
        positions: AudioPositions = "sincos",
        window_seconds: float | None = None,
        content_scale: float | None = None,
        conv_blocks: int = 0,
        conv_kernel: int = 15,
    ) -> None:
        """
        Args:
            dim: model width D, even (the sin-cos position encoding needs it).
            sample_rate: the rate the front end runs at; other input rates are resampled to it.
            n_mels: mel bins M (80 for Whisper up to large-v2, 128 for large-v3).
            n_fft: STFT window in samples; default 25 ms at ``sample_rate`` (400 at 16 kHz).
            hop_length: samples between mel frames; default 10 ms at ``sample_rate`` (160 at 16 kHz).
            spec_augment: SpecAugment on the normalised log-mel in training mode, masked to each clip's floor:
                ``{}`` for NeMo's defaults or any of ``freq_masks`` (2), ``freq_width`` (27), ``time_masks`` (10),
                ``time_width_ratio`` (0.05); see ``SpecAugment``. None: no augmentation.
            stride: mel frames per token: 2 (Whisper's stem, 20 ms tokens) or 4 (a third conv of stride 2, 40 ms
                tokens, the 4x subsampling of Conformer / ESPnet encoders: half the tokens, a quarter the attention).
            stem: ``whisper`` (1-D convs over time, each mel bin a channel) or ``conv2d`` (ESPnet's 2-D
                subsampling over time and mel bins; ``stride`` is then its time subsampling, 2, 4 or 8: 8 adds a
                third 3x3 conv of stride 2, the 8x subsampling of NeMo's FastConformer, which halves every later
                layer's tokens again; a token is then 80 ms: 12.5 a second, too few for CTC over characters at
                speaking rate (8-17 a second), enough for words or subwords).
            stem_channels: channels of the ``conv2d`` stem's two convolutions.
            level: ``whisper`` (``(x + 4) / 4``: Whisper's fixed scale, so a louder clip is a shifted one) or
                ``peak`` (``(x - peak) / 4 + 1``: each clip's loudest bin at 1, its floor at -1, whatever its gain).
            positions: the fixed encoding added to token i: ``sincos`` (``omni.layers.sincos_1d``) or ``whisper``
                (Whisper's ``sinusoids``: the same with its frequencies spaced by dim / 2 - 1).
            window_seconds: None: each clip as long as it is (padding in a batch is exact). A number: every clip
                is zero-padded to this many seconds and all the window's tokens are real (Whisper: 30); a longer
                clip raises.
            content_scale: the stem's output is multiplied by this before the position encoding is added. None:
                sqrt(D) for ``conv2d`` (ESPnet's ``PositionalEncoding.xscale``: at initialisation the stem's output
                is ~0.04 RMS against the encoding's 0.71, and an encoder that sees mostly positions learns slowly)
                and 1 for ``whisper`` (Whisper's own stem, whose weights import unchanged).
            conv_blocks: Conformer convolution modules (``ConvModule``) after the stem and its ``content_scale``,
                before the positions: each mixes ``conv_kernel`` neighbouring tokens (15 x 40 ms = 0.6 s at stride
                4, about a spoken word), the local acoustic context a transformer trunk otherwise learns slowly
                through attention. 0: none.
            conv_kernel: the depthwise kernel of each convolution module, in tokens (odd).
        """
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"dim: expected an even width >= 2 for the sin-cos position encoding, got {dim}")
        if not isinstance(sample_rate, int) or isinstance(sample_rate, bool) or sample_rate < 1:
            raise ValueError(f"sample_rate: expected a positive int in Hz, got {sample_rate!r}")
        if n_mels < 1:
            raise ValueError(f"n_mels: expected a positive int, got {n_mels}")
        self.dim = dim
        self.sample_rate = sample_rate
        self.n_mels = n_mels
        self.n_fft = n_fft if n_fft is not None else round(sample_rate * N_FFT / SAMPLE_RATE)
        self.hop_length = hop_length if hop_length is not None else round(sample_rate * HOP / SAMPLE_RATE)
        if self.hop_length < 1 or self.n_fft < 2:
            raise ValueError(
                f"n_fft, hop_length: expected n_fft >= 2 and hop_length >= 1, got {self.n_fft}, {self.hop_length}"
            )
        if stride not in ((2, 4, 8) if stem == "conv2d" else (2, 4)):
            raise ValueError(
                f"stride: expected 2 (Whisper) or 4 (a third stride-2 conv), or 8 with stem='conv2d', got {stride!r}"
            )
        self.stride = stride
        self.token_seconds = stride * self.hop_length / sample_rate  # 0.02 s at the defaults
        self.frontend = AT.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            n_mels=n_mels,
            power=2.0,
            center=True,
            pad_mode="reflect",
            norm="slaney",
            mel_scale="slaney",
        )
        allowed = ("freq_masks", "freq_width", "time_masks", "time_width_ratio")
        if spec_augment is not None and (not isinstance(spec_augment, dict) or set(spec_augment) - set(allowed)):
            raise ValueError(f"spec_augment: expected None or a dict of {', '.join(allowed)}, got {spec_augment!r}")
        self.spec_augment = SpecAugment(**spec_augment) if spec_augment is not None else None
        check_choice("stem", stem, AudioStem)
        if stem_channels < 1:
            raise ValueError(f"stem_channels: expected a positive int, got {stem_channels!r}")
        self.stem = stem
        check_choice("positions", positions, AudioPositions)
        self.positions = positions
        if window_seconds is not None and not window_seconds * sample_rate >= self.hop_length * stride:
            raise ValueError(f"window_seconds: expected None or at least one token's seconds, got {window_seconds!r}")
        self.window_seconds = window_seconds
        check_choice("level", level, AudioLevel)
        self.level = level
        if content_scale is not None and not content_scale > 0:
            raise ValueError(f"content_scale: expected a positive number or None, got {content_scale!r}")
        self.content_scale = float(content_scale or (math.sqrt(dim) if stem == "conv2d" else 1.0))
        self.act = nn.GELU()
        if not isinstance(conv_blocks, int) or isinstance(conv_blocks, bool) or conv_blocks < 0:
            raise ValueError(f"conv_blocks: expected an int >= 0, got {conv_blocks!r}")
        if not isinstance(conv_kernel, int) or isinstance(conv_kernel, bool) or conv_kernel < 1 or conv_kernel % 2 == 0:
            raise ValueError(f"conv_kernel: expected an odd positive int (a centred window), got {conv_kernel!r}")
        self.conv_blocks = nn.ModuleList(ConvModule(dim, conv_kernel) for _ in range(conv_blocks))
        if stem == "conv2d":
            self.conv1 = nn.Conv2d(1, stem_channels, kernel_size=3, stride=2, padding=1)
            time_stride = 1 if stride == 2 else 2  # stride 8 takes its third halving from conv3
            self.conv2 = nn.Conv2d(stem_channels, stem_channels, kernel_size=3, stride=(time_stride, 2), padding=1)
            self.conv3 = None
            bins = (n_mels + 1) // 2  # mel bins after the first conv
            bins = (bins + 1) // 2  # ... and after the second
            if stride == 8:
                self.conv3 = nn.Conv2d(stem_channels, stem_channels, kernel_size=3, stride=2, padding=1)
                bins = (bins + 1) // 2
            self.proj = nn.Linear(stem_channels * bins, dim)
            return
        self.conv1 = nn.Conv1d(n_mels, dim, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(dim, dim, kernel_size=3, stride=STEM_STRIDE, padding=1)
        self.conv3 = nn.Conv1d(dim, dim, kernel_size=3, stride=2, padding=1) if stride == 4 else None

    # ------------------------------------------------------------------ sizes
    def num_tokens(self, num_samples: int) -> int:
        """Tokens for a clip of ``num_samples`` samples at the tokenizer's rate: ceil((samples // hop) / stride)
        (with ``window_seconds``: the window's, whatever the clip's length)."""
        if self.window_seconds is not None:
            num_samples = round(self.window_seconds * self.sample_rate)
        frames = _frames(int(num_samples), self.hop_length)
        if frames < 1:
            raise ValueError(
                f"num_samples: expected at least {self.hop_length} samples (one hop at {self.sample_rate} Hz), "
                f"got {num_samples}"
            )
        return math.ceil(frames / self.stride)

    # ------------------------------------------------------------------ front end
    def log_mel(self, audio: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Whisper's normalised log-mel spectrogram of clips already at the tokenizer's rate.

        Args:
            audio: (B, T) float waveform.
            lengths: (B,) long samples that are real per clip; None = all T.
        Returns:
            log_spec: (B, M, F) float32, frames past each clip's end set to that clip's floor.
            frame_mask: (B, F) bool, True for a real frame (at least frame 0).
        """
        b, t = audio.shape
        n_frames = _frames(t, self.hop_length)
        if lengths is None:
            lengths = torch.full((b,), t, dtype=torch.long, device=audio.device)
        audio = audio.float()
        idx = torch.arange(t, device=audio.device)
        audio = audio * (idx < lengths[:, None])  # zeros after each clip's end, like Whisper's padding
        audio = F.pad(audio, (0, self.n_fft // 2))  # Whisper pads with zeros before its centred STFT
        # the features in float32 under autocast too (bf16-mixed): its mel matmul in bf16 would round the power
        with torch.autocast(audio.device.type, enabled=False):
            mel = self.frontend(audio)[..., :n_frames]  # (B, M, F): keep one frame per full hop
        log_spec = torch.clamp(mel, min=LOG_FLOOR).log10()
        frames_real = _frames(lengths, self.hop_length).clamp(min=1)
        frame_mask = torch.arange(n_frames, device=audio.device) < frames_real[:, None]  # (B, F)
        peak = log_spec.masked_fill(~frame_mask[:, None, :], -torch.inf).amax(dim=(1, 2), keepdim=True)  # (B, 1, 1)
        floor = peak - DYNAMIC_RANGE
        log_spec = torch.maximum(log_spec, floor)
        log_spec = torch.where(frame_mask[:, None, :], log_spec, floor)
        if self.level == "peak":
            return (log_spec - peak) / 4.0 + 1.0, frame_mask
        return (log_spec + 4.0) / 4.0, frame_mask

    # ------------------------------------------------------------------ checks
    def _check(self, audio: object, lengths: object, sample_rate: object) -> tuple[Tensor, Tensor | None, int]:
        check_tensor("audio", audio, ndim=(2, 3), layout="(B, T) or (B, 1, T)")
        assert isinstance(audio, Tensor)
        if audio.ndim == 3:
            check_tensor("audio", audio, ndim=3, layout="(B, 1, T)", sizes={1: 1})
            audio = audio[:, 0]
        b, t = audio.shape
        if sample_rate is None:
            sample_rate = self.sample_rate
        if not isinstance(sample_rate, numbers.Integral) or isinstance(sample_rate, bool) or sample_rate < 1:
            raise ValueError(f"sample_rate: expected a positive int in Hz, got {sample_rate!r}")
        sample_rate = int(sample_rate)
        if lengths is not None:
            check_tensor("lengths", lengths, ndim=1, layout="(B,)", dtype="int")
            assert isinstance(lengths, Tensor)
            if lengths.shape[0] != b:
                raise ValueError(f"lengths: expected {b} lengths to match audio's batch size, got {lengths.shape[0]}")
            lo, hi = int(lengths.min()), int(lengths.max())
            if lo < 1 or hi > t:
                raise ValueError(f"lengths: expected values in [1, T={t}] samples, got min {lo}, max {hi}")
            lengths = lengths.to(device=audio.device, dtype=torch.long)
        min_samples = math.ceil(self.hop_length * sample_rate / self.sample_rate)
        if t < min_samples:
            raise ValueError(
                f"audio: expected at least {min_samples} samples at {sample_rate} Hz (one {self.hop_length}-sample "
                f"hop at {self.sample_rate} Hz), got shape {tuple(audio.shape)}"
            )
        return audio, lengths, sample_rate

    def _resample(self, audio: Tensor, lengths: Tensor | None, sample_rate: int) -> tuple[Tensor, Tensor | None]:
        """Bring clips at ``sample_rate`` to the tokenizer's rate; lengths scale with them (rounded up)."""
        if sample_rate == self.sample_rate:
            return audio, lengths
        if lengths is not None:  # zeros past each end, so a padded clip resamples like the clip alone
            audio = audio * (torch.arange(audio.shape[1], device=audio.device) < lengths[:, None])
        g = math.gcd(sample_rate, self.sample_rate)
        orig, new = sample_rate // g, self.sample_rate // g
        audio = AF.resample(audio.float(), orig, new)
        if lengths is not None:
            lengths = ((lengths * new + orig - 1) // orig).clamp(max=audio.shape[1])
        return audio, lengths

    # ------------------------------------------------------------------ forward
    def forward(self, audio: Tensor, lengths: Tensor | None = None, sample_rate: int | None = None) -> Tokens:
        """Tokenize waveforms.

        Args:
            audio: (B, T) or (B, 1, T) float waveform in [-1, 1].
            lengths: (B,) long real samples per clip (the rest is padding); None = all T are real.
            sample_rate: the rate of ``audio`` in Hz; None = the tokenizer's rate. Others are resampled.
        Returns:
            Tokens with x (B, N, D), pos (B, N, 1) = seconds at each token's start, pad (B, N) from ``lengths``.
        """
        audio, lengths, sample_rate = self._check(audio, lengths, sample_rate)
        audio, lengths = self._resample(audio, lengths, sample_rate)
        if self.window_seconds is not None:
            audio, lengths = self._to_window(audio, lengths), None
        log_spec, frame_mask = self.log_mel(audio, lengths)  # (B, M, F), (B, F)
        n_frames = log_spec.shape[-1]
        floor = log_spec.amax(dim=(1, 2), keepdim=True) - DYNAMIC_RANGE / 4.0  # (B, 1, 1), normalised units
        if self.spec_augment is not None:
            log_spec = self.spec_augment(log_spec, floor)  # identity in eval mode
        # One extra frame at the floor: the first conv then sees the clip's silence past its end, whether the clip
        # is alone or padded in a batch (its own zero padding would differ from the floor the padding holds).
        # (Whisper's window ends at its edge: its conv pads with zeros there.)
        edge = floor if self.window_seconds is None else torch.zeros_like(floor)
        x = torch.cat([log_spec, edge.expand(-1, self.n_mels, 1)], dim=-1).to(self.conv1.weight.dtype)
        if self.stem == "conv2d":
            x, n_real = self._conv2d_stem(x, frame_mask)
        else:
            x, n_real = self._whisper_stem(x, frame_mask, n_frames)
        token_idx = torch.arange(x.shape[1], device=x.device)
        pad = token_idx < n_real[:, None]  # (B, N)
        x = x * self.content_scale
        for block in self.conv_blocks:
            x = block(x, pad)
        x = x * pad[..., None]
        layout = "vaswani" if self.positions == "sincos" else "whisper"
        x = x + sincos_1d(token_idx, self.dim, layout=layout).to(x.dtype)
        seconds = (token_idx.float() * self.token_seconds)[:, None]  # (N, 1)
        return Tokens.create(x, modality=0, pos=seconds, pad=pad)

    def _to_window(self, audio: Tensor, lengths: Tensor | None) -> Tensor:
        """(B, T) clips -> (B, W) clips zero-padded to ``window_seconds`` (W samples): zeros past each length."""
        size = round(self.window_seconds * self.sample_rate)
        longest = audio.shape[1] if lengths is None else int(lengths.max())
        if longest > size:
            raise ValueError(
                f"audio: expected clips of at most window_seconds={self.window_seconds} s ({size} samples at "
                f"{self.sample_rate} Hz), got {longest} samples"
            )
        if lengths is not None:
            audio = audio * (torch.arange(audio.shape[1], device=audio.device) < lengths[:, None])
        return F.pad(audio[:, :size], (0, size - min(size, audio.shape[1])))

    def _conv2d_stem(self, x: Tensor, frame_mask: Tensor) -> tuple[Tensor, Tensor]:
        """(B, M, F + 1) log-mel with one floor frame appended -> (B, N, D) tokens and (B,) real token counts.

        Each conv's output t reads input frames 2t - 1 .. 2t + 1: the last real output reads one frame past the
        end, which is the appended floor frame alone and a floor padding frame in a batch; activations past the
        end are zeroed before the second conv, matching the zeros its own padding adds to a clip alone."""
        n_frames = frame_mask.shape[1]
        n_real = (frame_mask.sum(dim=1) + 1) // 2  # (B,) ceil(frames / 2)
        x = self.act(self.conv1(rearrange(x, "b m f -> b 1 f m")))[:, :, : (n_frames + 1) // 2]  # (B, C, F/2, M/2)
        x = x * (torch.arange(x.shape[2], device=x.device) < n_real[:, None])[:, None, :, None]
        x = self.act(self.conv2(x))  # (B, C, F/4, M/4) (F/2 at stride 2)
        if self.stride >= 4:
            n_real = (n_real + 1) // 2
        if self.conv3 is not None:  # stride 8: zero past the end again, then halve time and bins once more
            x = x * (torch.arange(x.shape[2], device=x.device) < n_real[:, None])[:, None, :, None]
            x = self.act(self.conv3(x))  # (B, C, F/8, M/8)
            n_real = (n_real + 1) // 2
        return self.proj(rearrange(x, "b c n m -> b n (c m)")), n_real

    def _whisper_stem(self, x: Tensor, frame_mask: Tensor, n_frames: int) -> tuple[Tensor, Tensor]:
        """(B, M, F + 1) log-mel with one floor frame appended -> (B, N, D) tokens and (B,) real token counts."""
        x = self.act(self.conv1(x))[..., :n_frames]  # (B, D, F)
        x = x * frame_mask[:, None, :]  # past-the-end frames must not reach real tokens through conv2
        x = self.act(self.conv2(x))  # (B, D, ceil(F / 2))
        n_real = (frame_mask.sum(dim=1) + STEM_STRIDE - 1) // STEM_STRIDE  # ceil(frames / 2)
        if self.conv3 is not None:  # the same again: zero past the end, then halve
            x = x * (torch.arange(x.shape[-1], device=x.device) < n_real[:, None])[:, None, :]
            x = self.act(self.conv3(x))  # (B, D, ceil(F / 4))
            n_real = (n_real + 1) // 2
        return rearrange(x, "b d n -> b n d"), n_real
