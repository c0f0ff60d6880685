"""Speech recognition: an audio encoder with a CTC head and a Whisper-style text decoder (hybrid CTC/attention,
as ESPnet trains it), scored by word and character error rate under every decoder.

Batches are those of ``omni.data.speech``: ``{"audio": {"audio", "lengths"}, "target": {"ids", "mask"}, "text",
"key"}`` with targets BOS, the transcript's ids, EOS. The encoder's tokens feed the CTC head; the decoder reads the
target teacher-forced and attends the encoder. The loss is ``ctc_weight * CTC + (1 - ctc_weight) * cross-entropy``.

Decoders (``decoder`` for predictions and ``wer``; ``val_decoder`` during validation; ``test_decoders`` each get
``test/wer_<name>`` and ``test/cer_<name>``):
    ctc_greedy    best path of the CTC head, repeats merged, blanks removed
    ctc_beam      CTC prefix beam search (``ctc_beams`` wide)
    greedy        the attention decoder, greedily, with its KV cache
    beam          the attention decoder's beam search (``beams`` wide, length-normalised; Whisper's default 5)
    joint         the attention beam search rescored by the CTC prefix score (``joint_ctc_weight``, ESPnet's
                  joint CTC/attention decoding)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from omni.choices import check_choice
from omni.ctc import ctc_greedy, ctc_prefix_beam_search
from omni.heads.ctc import CTCHead
from omni.metrics import SafeCharErrorRate, SafeWordErrorRate
from omni.ranks import all_ranks
from omni.search import beam_search, greedy_search
from omni.tasks.seq2seq import Seq2Seq
from omni.tokenizers.text import TextTokenizer
from omni.training import OptimConfig, Stage
from omni.transformer import TransformerConfig

__all__ = ["Decoder", "SpeechRecognizer"]

Decoder = Literal["ctc_greedy", "ctc_beam", "greedy", "beam", "joint"]
DECODERS: tuple[str, ...] = ("ctc_greedy", "ctc_beam", "greedy", "beam", "joint")
CTC_DECODERS: tuple[str, ...] = ("ctc_greedy", "ctc_beam", "joint")  # the decoders that read the CTC head


class SpeechRecognizer(Seq2Seq):
    """Hybrid CTC/attention speech recognition (Watanabe et al. 2017; Whisper's decoder) built from config."""

    monitor, monitor_mode = "val/wer", "min"
    agree_with_data = ("vocab_size", "pad_id", "bos_id", "eos_id", "blank_id")

    def __init__(
        self,
        trunk: TransformerConfig,
        tokenizers: dict[str, Callable[[int], nn.Module]],
        decoder_trunk: TransformerConfig,
        decoder_tokenizer: Callable[[int], TextTokenizer],
        ctc_weight: float = 0.3,
        decoder: Decoder = "joint",
        val_decoder: Decoder = "ctc_greedy",
        test_decoders: list[Decoder] | None = None,
        beams: int = 5,
        ctc_beams: int = 8,
        joint_ctc_weight: float = 0.3,
        length_penalty: float = 1.0,
        max_decode_len: int = 128,
        label_smoothing: float = 0.1,
        bos_id: int = 1,
        eos_id: int = 2,
        blank_id: int = 0,
        audio: str = "audio",
        inputs: dict[str, str] | None = None,
        optim: OptimConfig | None = None,
        tie_embeddings: bool = False,
        init_weights: str | None = None,
    ) -> None:
        """
        Args:
            trunk: the encoder's sizes and masks (``dim`` shared with every tokenizer and the decoder).
            tokenizers: the encoder's tokenizers, e.g. ``audio: omni.tokenizers.MelSpectrogramTokenizer``.
            decoder_trunk: the decoder's sizes (``cross_attention: true``, causal masks).
            decoder_tokenizer: the transcript's ``TextTokenizer``; its ``vocab_size`` is the data's vocabulary.
            ctc_weight: the CTC share of the training loss (ESPnet: 0.3); 1 trains the CTC head alone; 0 with only
                attention decoders (``greedy``, ``beam``) builds no CTC head at all.
            decoder: the decoder of predictions, ``omni transcribe`` and ``test/wer``.
            val_decoder: the decoder of ``val/wer`` (the cheap CTC best path by default).
            test_decoders: decoders scored at test (default: all five).
            beams: the attention beam width (``beam``, ``joint``).
            ctc_beams: the CTC prefix beam width (``ctc_beam``).
            joint_ctc_weight: the CTC share of ``joint`` scores.
            length_penalty: beam scores are divided by length ** this.
            max_decode_len: the most ids a transcript has (EOS included).
            label_smoothing: the decoder's label smoothing while training (ESPnet: 0.1).
            bos_id, eos_id: the transcript's start and end ids.
            blank_id: the CTC blank (the padding id of every omni vocabulary).
            audio: the name of the encoder tokenizer the CTC head reads.
            inputs, optim: as every task's.
            tie_embeddings: the decoder's output layer is its id embedding (Whisper's); see ``Seq2Seq``.
            init_weights: a ``model.safetensors`` of this same model (``omni import-whisper``, ``omni export``) to
                start from: every weight is loaded, strictly, when a trainer first sets the task up (before a
                ``--ckpt_path`` is restored over it; a checkpoint loaded without a trainer does not read it).
                None: a fresh initialisation.
        """
        super().__init__(
            trunk, tokenizers, decoder_trunk, decoder_tokenizer, bos_id, eos_id, beams, length_penalty,
            max_decode_len, label_smoothing, inputs, optim, tie_embeddings,
        )  # fmt: skip
        self.save_hyperparameters()
        for name, weight in (("ctc_weight", ctc_weight), ("joint_ctc_weight", joint_ctc_weight)):
            if not 0.0 <= weight <= 1.0:
                raise ValueError(f"{name}: expected a number in [0, 1], got {weight}")
        self.test_decoders = list(test_decoders if test_decoders is not None else DECODERS)
        for name, value in [("decoder", decoder), ("val_decoder", val_decoder)] + [
            ("test_decoders", d) for d in self.test_decoders
        ]:
            check_choice(name, value, Decoder)
        if audio not in self.model.tokenizers:
            raise ValueError(
                f"audio: expected one of the encoder's tokenizers {sorted(self.model.tokenizers)}, got {audio!r}"
            )
        if ctc_beams < 1:
            raise ValueError(f"ctc_beams: expected >= 1, got {ctc_beams}")
        # No CTC head where nothing reads it (ctc_weight 0 and only attention decoders, as for an imported Whisper):
        # its log-softmax over every frame and a 51,865-id vocabulary would cost more than the decoder.
        self.has_ctc = ctc_weight > 0 or bool({decoder, val_decoder, *self.test_decoders} & set(CTC_DECODERS))
        if self.has_ctc:
            self.model.heads["ctc"] = CTCHead(self.model.dim, self.vocab_size, tokenizer=audio, blank_id=blank_id)
        self.ctc_weight, self.joint_ctc_weight, self.blank_id, self.audio = (
            ctc_weight,
            joint_ctc_weight,
            blank_id,
            audio,
        )
        self.decoder_name, self.val_decoder, self.ctc_beams = decoder, val_decoder, ctc_beams
        self.vocab: Any = None  # the data's vocabulary (ids <-> text): from the data module, or the checkpoint
        self.rows: list[tuple[str, str, str]] = []  # (key, reference, hypothesis) of the test, for errors.tsv
        for metric in ("wer", "cer"):
            self.add_metric(metric, SafeWordErrorRate if metric == "wer" else SafeCharErrorRate, stages=("val", "test"))
            for d in self.test_decoders:
                make = SafeWordErrorRate if metric == "wer" else SafeCharErrorRate
                self.add_metric(f"{metric}_{d}", make, stages=("test",))
        self.init_weights = init_weights

    def _load_weights(self, path: str) -> None:
        """Load a safetensors state dict of this model, strictly; a one-line ValueError names the file and keys."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(path)
        except (OSError, SafetensorError) as e:
            raise ValueError(f"init_weights: expected a readable model.safetensors, got {path!r} ({e})") from None
        mine = self.state_dict()
        missing, unknown = sorted(set(mine) - set(state)), sorted(set(state) - set(mine))
        wrong = [k for k in mine if k in state and state[k].shape != mine[k].shape]
        if missing or unknown or wrong:
            got = f"missing {missing[:3]}, unknown {unknown[:3]}, other shapes {wrong[:3]}"
            raise ValueError(f"init_weights: expected the weights of this model's config in {path}, got {got}")
        self.load_state_dict(state, strict=True)

    # ------------------------------------------------------------------ vocabulary
    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.init_weights is not None:
            self._load_weights(self.init_weights)
            self.init_weights = None  # once: a later stage of the same run keeps the trained weights
        data = getattr(self.trainer, "datamodule", None)
        if getattr(data, "vocab", None) is not None:
            self.vocab = data.vocab

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.vocab is not None:
            checkpoint["omni_vocab"] = self.vocab.to_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if "omni_vocab" in checkpoint:
            from omni.data.whisper_vocab import load_vocab

            self.vocab = load_vocab(checkpoint["omni_vocab"])

    def text_of(self, ids: Sequence[int]) -> str:
        if self.vocab is None:
            raise ValueError("vocab: expected the data module's vocabulary or a checkpoint that holds one, got none")
        return self.vocab.decode(list(ids))

    # ------------------------------------------------------------------ training
    def loss(self, outputs: dict[str, Any], batch: Mapping[str, Any], stage: Stage) -> dict[str, Tensor]:
        ids, mask = self.target(batch)
        enc = outputs["encoder"]
        att = super().loss(outputs, batch, stage)
        if not self.has_ctc:
            return {"loss": att, "att": att}
        frames = self.model.heads["ctc"].lengths(enc["output"])
        # CTC targets: the transcript without BOS and EOS (ids past each length are ignored)
        ctc = CTCHead.loss(enc["ctc"], frames, ids[:, 1:], mask.sum(dim=1) - 2, self.blank_id)
        return {"loss": self.ctc_weight * ctc + (1.0 - self.ctc_weight) * att, "ctc": ctc, "att": att}

    # ------------------------------------------------------------------ decoding
    def transcribe(self, enc_inputs: Mapping[str, Any], decoder: Decoder | None = None) -> list[str]:
        """Transcripts of a batch of audio inputs ({tokenizer name: raw input}) with one decoder."""
        return self.transcribe_all(enc_inputs, [decoder or self.decoder_name])[decoder or self.decoder_name]

    def transcribe_all(self, enc_inputs: Mapping[str, Any], decoders: Sequence[str]) -> dict[str, list[str]]:
        """{decoder: transcripts}: the encoder runs once for all of them."""
        enc = self.model(enc_inputs)
        if not self.has_ctc and set(decoders) & set(CTC_DECODERS):
            raise ValueError(f"decoder: expected an attention decoder (this model has no CTC head), got {decoders}")
        log_probs = enc.get("ctc")
        lengths = self.model.heads["ctc"].lengths(enc["output"]) if self.has_ctc else None
        out: dict[str, list[str]] = {}
        common = {"prompt": self.bos_id, "eos_id": self.eos_id, "max_len": self.max_decode_len}
        for d in decoders:
            if d == "ctc_greedy":
                hyps = ctc_greedy(log_probs, lengths, self.blank_id)
            elif d == "ctc_beam":
                hyps = ctc_prefix_beam_search(log_probs, lengths, self.ctc_beams, self.blank_id)
            else:
                memory = enc["output"]
                if d == "greedy":
                    h = greedy_search(self.seq2seq, memory, **common)
                else:
                    joint = {
                        "ctc_log_probs": log_probs,
                        "ctc_lengths": lengths,
                        "ctc_weight": self.joint_ctc_weight,
                        "blank_id": self.blank_id,
                    }
                    extra = joint if d == "joint" else {}
                    h = beam_search(
                        self.seq2seq, memory, beams=self.beams, length_penalty=self.length_penalty, **common, **extra
                    )
                # a hypothesis ends with EOS, or is cut at max_decode_len without one: keep all its other ids
                hyps = [row[: int(n)].tolist() for row, n in zip(h.ids, h.lengths, strict=True)]
                hyps = [ids[:-1] if ids and ids[-1] == self.eos_id else ids for ids in hyps]
            out[d] = [self.text_of(ids) for ids in hyps]
        return out

    # ------------------------------------------------------------------ metrics and outputs
    def update_metrics(self, outputs: dict[str, Any], batch: Mapping[str, Any], stage: Stage) -> None:
        if stage == "train":
            return
        metrics = self.stage_metrics(stage)
        refs = list(batch["text"])
        wanted = [self.val_decoder] if stage == "val" else sorted({self.decoder_name, *self.test_decoders})
        hyps = self.transcribe_all(self.encoder_inputs(batch), wanted)
        main = hyps[self.val_decoder if stage == "val" else self.decoder_name]
        metrics["wer"].update(main, refs)
        metrics["cer"].update(main, refs)
        for d, texts in hyps.items():
            if f"wer_{d}" in metrics:
                metrics[f"wer_{d}"].update(texts, refs)
                metrics[f"cer_{d}"].update(texts, refs)
        if stage == "test":
            self.rows += list(zip(batch.get("key", [""] * len(refs)), refs, main, strict=True))

    def on_test_epoch_start(self) -> None:
        self.rows = []

    def predict(self, outputs: dict[str, Any], batch: Mapping[str, Any]) -> dict[str, list[str]]:
        """{"key": the utterances' keys, "text": their transcripts by ``decoder``}."""
        texts = self.transcribe(self.encoder_inputs(batch))
        return {"key": list(batch.get("key", [str(i) for i in range(len(texts))])), "text": texts}

    def predict_step(self, batch: Any, batch_idx: int) -> Any:
        return self.predict({}, batch)  # the decoders run the encoder themselves: no teacher-forced pass

    def write_artifacts(self, stage: Stage, run_dir: Path | None) -> None:
        """``errors.tsv``: key, reference, hypothesis, word edits, reference words per test utterance (worst first),
        every rank's; ``alignment.png``: the first spoken test utterance's log-mel and its CTC posteriors."""
        if stage != "test":
            return
        self.rows = [row for rows in all_ranks(self.rows) for row in rows]  # every rank calls this
        if run_dir is None or not self.rows:
            return
        import torchaudio.functional as AF

        rows = []
        for key, ref, hyp in self.rows:
            rows.append((AF.edit_distance(ref.split(), hyp.split()), key, ref, hyp, len(ref.split())))
        rows.sort(key=lambda r: (-r[0], r[1]))
        lines = ["key\treference\thypothesis\tedits\twords"]
        lines += [f"{key}\t{ref}\t{hyp}\t{edits}\t{words}" for edits, key, ref, hyp, words in rows]
        (run_dir / "errors.tsv").write_text("\n".join(lines) + "\n")
        if self.has_ctc:
            self._plot_alignment(run_dir / "alignment.png")

    def _plot_alignment(self, path: Path) -> None:
        data = getattr(self.trainer, "datamodule", None)
        loader = data.test_dataloader() if data is not None else None
        if loader is None:
            return
        from omni.viz import plot_ctc_alignment

        batch = next(iter(loader))
        spoken = [i for i, text in enumerate(batch["text"]) if text.strip()]
        i = spoken[0] if spoken else 0  # a silent clip's picture shows nothing: pick one with words
        audio = batch["audio"]
        wave, length = audio["audio"][i : i + 1].to(self.device), audio["lengths"][i : i + 1].to(self.device)
        with torch.no_grad():
            tok = self.model.tokenizers[self.audio]
            log_mel, _ = tok.log_mel(wave, length)
            enc = self.model({self.audio: {"audio": wave, "lengths": length}})
            log_probs, n = enc["ctc"], int(self.model.heads["ctc"].lengths(enc["output"])[0])
        labels = [self.vocab.decode([i]) or "·" for i in range(self.vocab_size)]  # specials decode to nothing
        plot_ctc_alignment(
            log_mel[0].cpu(), log_probs[0, :n].float().cpu(), batch["text"][i], path, labels=labels, blank=self.blank_id
        )
