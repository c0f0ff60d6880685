"""The ``omni`` command: Lightning's CLI (``omni fit|validate|test|predict --config configs/X.yaml``), plus
``omni viz masks --config configs/X.yaml --out masks.png``, ``omni viz scene --config configs/fusion.yaml
--ckpt_path CKPT`` (camera + radar and a bird's-eye view), ``omni data speech --kind digits
--out DIR`` (an offline spoken corpus, see ``omni.data.speech_corpus``), ``omni data rl --env Hopper-v5 --out DIR``
(offline RL datasets, ``omni.data.rl_corpus``), ``omni data fusion --out DIR`` (camera + radar scenes,
``omni.data.fusion_sim``), ``omni rollout --ckpt_path CKPT --target 3600`` (``omni.rollout_command``) and
``omni transcribe --ckpt_path CKPT FILE...``.

``fit`` tests a checkpoint when training ends (``--test_after_fit false`` to skip; ``--test_checkpoint best|last``
picks which) so that every run directory ends with ``metrics.json``; the command prints the test metrics and the
run directory. ``--checkpoint_every_n_steps N`` writes ``last.ckpt`` every N training steps too (not only at epoch
ends), for runs that may be killed mid-epoch.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from omni.cli_errors import OmniArgumentParser
from omni.ranks import all_ranks
from omni.training import run_directory

__all__ = ["BestCheckpoint", "OmniCLI", "main"]


class BestCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` of the best epoch by a metric that some validations do not log (rollout scores every N
    epochs): an epoch without the metric is skipped, where Lightning's would raise."""

    def _save_topk_checkpoint(self, trainer: Trainer, monitor_candidates: dict[str, torch.Tensor]) -> None:
        if self.monitor is not None and self.monitor not in monitor_candidates:
            return
        super()._save_topk_checkpoint(trainer, monitor_candidates)


class OmniCLI(LightningCLI):
    """LightningCLI with omni's defaults: any ``OmniTask`` and any data module, given by ``class_path``; a bad key or
    value is reported in one line (``omni.cli_errors``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("parser_class", OmniArgumentParser)
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--test_after_fit", type=bool, default=True, help="After fit, test a checkpoint (fit only)."
        )
        parser.add_argument(
            "--test_checkpoint",
            type=Literal["best", "last"],
            default="best",
            help="Which checkpoint the test after fit reads: `best` by the task's monitor on the validation split, or "
            "`last` (the end of training: steadier where the validation split is small and the schedule anneals).",
        )

        parser.add_argument(
            "--checkpoint_every_n_steps",
            type=int | None,
            default=None,
            help="Also write `last.ckpt` every N training steps (fit only), so a run killed mid-epoch resumes from "
            "at most N steps back with `--ckpt_path .../last.ckpt`, exactly where it was (samplers and RNG included).",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Lightning's parsing, then: checkpoints named by ``--ckpt_path`` load with ``weights_only=True`` unless the
        command says otherwise, and a missing, corrupt or code-carrying one is refused with one ``ValueError`` naming
        it before anything reads it (``omni.checkpoints``), as is a checkpoint of another task than the config's
        (Lightning would otherwise rebuild the model from the checkpoint's hyperparameters and fail on the data)."""
        super().parse_arguments(parser, args)
        sub = self.config.get("subcommand")
        config = self.config.get(sub) if sub else None
        if config is None or "weights_only" not in config:
            return
        if config["weights_only"] is None:
            config["weights_only"] = True
        ckpt = config.get("ckpt_path")
        if config["weights_only"] and ckpt and ckpt not in ("best", "last", "hpc", "registry"):
            from omni.checkpoints import load_checkpoint

            theirs = (load_checkpoint(ckpt).get("hyper_parameters") or {}).get("_class_path")
            model = config.get("model")
            mine = model.get("class_path") if hasattr(model, "get") else None
            if (
                isinstance(theirs, str)
                and isinstance(mine, str)
                and theirs.rpartition(".")[2] != mine.rpartition(".")[2]
            ):
                raise ValueError(f"ckpt_path: expected a checkpoint of the config's {mine}, got one of {theirs}")

    def instantiate_classes(self) -> None:
        """Lightning's instantiation; a ``ValueError`` of a class's constructor (a bad mask expression, a missing data
        folder), which jsonargparse wraps in its union report with the whole config, becomes one line naming the
        part (model / data), its class and the constructor's own message (``omni.cli_errors.condense``)."""
        from omni.cli_errors import condense

        try:
            super().instantiate_classes()
        except ValueError as e:
            text = str(e)
            if "\n" not in text.strip():
                raise
            raise ValueError(condense(text)) from None

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The configured trainer, plus omni's defaults where the config names none of their kind: ``best`` and
        ``last`` checkpoints (best by the task's ``monitor``) and Rich's progress bar."""
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer = config.get("trainer") or {}
        given = list(kwargs.pop("callbacks", None) or trainer.get("callbacks") or [])
        if not isinstance(given, list):
            given = [given]
        extra: list[Callback] = []
        if trainer.get("enable_checkpointing", True) is not False and not any(
            isinstance(c, ModelCheckpoint) for c in given
        ):
            monitor = getattr(self.model, "monitor", None)
            mode = getattr(self.model, "monitor_mode", "min")
            # Two callbacks: Lightning 2.6 writes `save_last` only when a top-k checkpoint was written too, and a
            # resumable run needs the last epoch whether or not it was the best.
            best = BestCheckpoint(filename="best", monitor=monitor, mode=mode, enable_version_counter=False)
            extra.append(best)
            extra.append(ModelCheckpoint(filename="last", monitor=None, enable_version_counter=False))
            parsed = self.config.get(self.subcommand) if self.subcommand else self.config
            every = (parsed or {}).get("checkpoint_every_n_steps")
            if every:  # a third: Lightning saves either on steps or at epoch ends, and last.ckpt is both
                extra.append(
                    ModelCheckpoint(
                        filename="last", monitor=None, every_n_train_steps=every, enable_version_counter=False
                    )
                )
        if trainer.get("enable_progress_bar", True) is not False and not any(isinstance(c, ProgressBar) for c in given):
            extra.append(RichProgressBar())
        return super().instantiate_trainer(callbacks=given + extra, **kwargs)

    def after_fit(self) -> None:
        if not self.config.get(self.subcommand, {}).get("test_after_fit", True):
            self._report()
            return
        if self.trainer.interrupted:
            return
        has_test = callable(getattr(self.datamodule, "test_dataloader", None))
        if has_test:
            which = self.config.get(self.subcommand, {}).get("test_checkpoint", "best")
            self.trainer.test(
                self.model, datamodule=self.datamodule, ckpt_path=self._checkpoint(which), weights_only=True
            )
        self._report()

    def _checkpoint(self, which: str) -> str | None:
        """The path of omni's ``best`` or ``last`` checkpoint of this fit; None (the weights in memory) if absent."""
        for cb in self.trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.filename == which and cb.best_model_path:
                return cb.best_model_path
        return None

    def after_test(self) -> None:
        self._report()

    def after_predict(self) -> None:
        """Save what ``predict`` returned as ``predictions.pt`` in the run directory (Lightning discards it).

        Under DDP every rank predicts its share (rank r the rows r, r + W, r + 2W, ... of the order one process
        predicts in, as the samplers deal them); the shares are gathered and interleaved back into that order. That
        order is exact when every batch's rows divide by W; duration buckets need not (speech predictions carry each
        utterance's key), and the fusion scene sampler leaves out the last scenes when W does not divide their
        number."""
        batches = self.trainer.predict_loop.predictions
        if batches and isinstance(batches[0], list):  # several dataloaders: keep the first
            batches = batches[0]
        mine = None
        if batches:
            mine = {k: _concat([b[k] for b in batches]) for k in batches[0]} if isinstance(batches[0], dict) else (
                _concat(list(batches)))  # fmt: skip
        shares = all_ranks(mine)  # a collective under DDP: every rank, before the rank test
        run_dir = run_directory(self.trainer)
        if not self.trainer.is_global_zero or run_dir is None or any(share is None for share in shares):
            return
        merged = _interleave(shares)
        run_dir.mkdir(parents=True, exist_ok=True)
        torch.save(merged, run_dir / "predictions.pt")
        print(f"predictions: {run_dir / 'predictions.pt'}")

    def _report(self) -> None:
        run_dir = run_directory(self.trainer)  # a collective under DDP: every rank, before the rank test
        if not self.trainer.is_global_zero or run_dir is None:
            return
        metrics_file = run_dir / "metrics.json"
        if metrics_file.exists():
            metrics = json.loads(metrics_file.read_text())["metrics"]
            shown = "  ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
            print(f"test metrics: {shown}")
        print(f"run directory: {run_dir}")


def _concat(parts: list[Any]) -> Any:
    """Per-batch predictions joined along the batch: tensors concatenated, lists (keys, transcripts) chained."""
    if isinstance(parts[0], list | tuple):
        return [item for part in parts for item in part]
    return torch.cat(parts)


def _interleave(shares: list[Any]) -> Any:
    """Every rank's predictions back in one order: row i of rank r is row i * W + r (W ranks). Dicts per key."""
    if len(shares) == 1:
        return shares[0]
    if isinstance(shares[0], dict):
        return {k: _interleave([share[k] for share in shares]) for k in shares[0]}
    rows = [share[i] for i in range(max(len(share) for share in shares)) for share in shares if i < len(share)]
    return rows if isinstance(shares[0], list | tuple) else torch.stack(rows)


def viz_masks(argv: list[str]) -> Path:
    """``omni viz masks --config X.yaml --out masks.png``: each distinct layer mask for one batch of the config's
    data, with the tokens' modalities coloured along both axes."""
    import argparse

    from omni.viz import plot_masks

    p = argparse.ArgumentParser(prog="omni viz masks", description=viz_masks.__doc__)
    p.add_argument("--config", required=True, action="append", help="a config of `omni fit` (repeat for overlays)")
    p.add_argument("--out", default="masks.png", help="PNG to write")
    p.add_argument("--sample", type=int, default=0, help="which sample of the batch to draw")
    p.add_argument("--split", choices=["train", "val", "test"], default="val", help="the data split to draw from")
    a = p.parse_args(argv)
    cli = OmniCLI(
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,  # optimizer and schedule are the task's own (OmniTask.optim)
        run=False,
        save_config_callback=None,
        args=[*config_args(a.config), "--trainer.logger", "false"],
    )
    task, dm = cli.model, cli.datamodule
    model = getattr(task, "model", None)
    if not hasattr(model, "mask_panels") or not hasattr(task, "model_inputs"):
        raise ValueError(f"--config: expected an omni task with an OmniModel `model`, got {type(task).__name__}")
    dm.prepare_data()
    dm.setup("fit" if a.split != "test" else "test")
    batch = next(iter(getattr(dm, f"{a.split}_dataloader")()))
    with torch.no_grad():
        view = model.mask_panels(task.model_inputs(batch), sample=a.sample)
    drawn = view.panels
    out = plot_masks(drawn, view.modality, view.names, a.out, pad=view.pad)
    print(f"masks: {out} ({len(drawn)} distinct masks, {view.modality.numel()} tokens)")
    return out


FIT_ONLY_KEYS = ("ckpt_path", "weights_only")  # keys of a run's config.yaml that only `omni fit` takes (Trainer.fit's)


def config_args(paths: list[str]) -> list[str]:
    """``--config`` arguments for a command that builds a task and its data without fitting (``omni viz``): a run
    directory's ``config.yaml`` works as well as the config it was fitted from (its ``ckpt_path`` and
    ``weights_only``, which only ``omni fit`` takes, are left out: a filtered copy, removed when the process ends)."""
    import atexit
    import tempfile

    import yaml

    out: list[str] = []
    for path in paths:
        try:
            cfg = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError):
            cfg = None  # the parser reports a missing or broken file itself
        if isinstance(cfg, dict) and any(k in cfg for k in FIT_ONLY_KEYS):
            fd, copy = tempfile.mkstemp(prefix=f"{Path(path).stem}_", suffix=".yaml")
            with os.fdopen(fd, "w") as f:
                yaml.safe_dump({k: v for k, v in cfg.items() if k not in FIT_ONLY_KEYS}, f, sort_keys=False)
            atexit.register(Path(copy).unlink, missing_ok=True)
            path = copy
        out += ["--config", path]
    return out


def viz_scene(argv: list[str]) -> Path:
    """``omni viz scene --config X.yaml [--ckpt_path CKPT] --out scene.png``: one scene of the config's data, drawn
    with a FusionDetector's predictions (the checkpoint's weights; without one, an untrained model's)."""
    import argparse

    from omni.checkpoints import load_checkpoint
    from omni.data.fusion import DOPPLER_SCALE
    from omni.data.fusion_scene import CONDITIONS
    from omni.fusion_plots import plot_scene

    p = argparse.ArgumentParser(prog="omni viz scene", description=viz_scene.__doc__)
    p.add_argument("--config", required=True, action="append", help="a fusion config of `omni fit` (repeatable)")
    p.add_argument("--ckpt_path", default=None, help="a FusionDetector checkpoint")
    p.add_argument("--out", default="scene.png", help="PNG to write")
    p.add_argument("--split", choices=["train", "val", "test"], default="test", help="the data split")
    p.add_argument("--sample", type=int, default=0, help="which scene of the split's first batch")
    p.add_argument("--sensors", choices=["both", "camera", "radar"], default=None, help="default: the model's")
    p.add_argument("--min_score", type=float, default=0.3, help="predictions below this score are not drawn")
    p.add_argument("--root", default=None, help="the corpus folder, instead of the config's data.init_args.root")
    a = p.parse_args(argv)
    args = [*config_args(a.config), "--trainer.logger", "false"]
    if a.root:
        args += ["--data.init_args.root", a.root]
    cli = OmniCLI(subclass_mode_model=True, subclass_mode_data=True, auto_configure_optimizers=False, run=False,
                  save_config_callback=None, args=args)  # fmt: skip
    task, dm = cli.model, cli.datamodule
    if not hasattr(task, "detections"):
        raise ValueError(f"--config: expected a FusionDetector task, got {type(task).__name__}")
    if a.ckpt_path:
        state = load_checkpoint(a.ckpt_path)["state_dict"]
        task.load_state_dict(state)
    dm.setup("fit" if a.split != "test" else "test")
    batch = next(iter(getattr(dm, f"{a.split}_dataloader")()))
    size = len(batch["index"])
    if not 0 <= a.sample < size:
        raise ValueError(f"--sample: expected a scene of the first {a.split} batch, in [0, {size}), got {a.sample}")
    task.eval()
    with torch.no_grad():
        score, cls, box = (t[a.sample].numpy() for t in task.detections(task(task.model_inputs(batch), a.sensors)))
    i = a.sample
    radar = batch["inputs"]["radar"]
    mask = radar["mask"][i].numpy()
    feats = radar["x"][i].numpy()[mask]
    t = batch["targets"]
    real = t["mask"][i].numpy()
    camera = batch["inputs"]["camera"][i].permute(1, 2, 0).numpy() + 0.5
    title = f"(scene {int(batch['index'][i])}, {CONDITIONS[int(batch['condition'][i])]})"
    doppler = feats[:, 4] * DOPPLER_SCALE
    out = plot_scene(camera, feats[:, :2], doppler, t["class"][i].numpy()[real], t["box"][i].numpy()[real], cls, box,
                     score, a.out, title=title, min_score=a.min_score)  # fmt: skip
    print(f"scene: {out}")
    return out


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``omni`` console command.

    From the console (``args`` None), a ``ValueError`` (omni's errors name the key, field or file, what was expected and
    what came) is printed as one line and the command exits with status 2; ``OMNI_DEBUG=1`` shows the traceback.
    Called with ``args``, errors propagate to the caller. From the console, subnormal floats are flushed to zero
    first (``omni.denormals``); a caller's process keeps its floating-point mode.
    """
    if args is not None:
        _main(list(args), args)
        return
    argv = sys.argv[1:]
    try:
        from omni.denormals import flush_denormals
        from omni.ranks import close_process_group

        flush_denormals()  # the console command only: a caller's process (a test suite's) keeps its float mode
        _main(argv, None)
        close_process_group()  # a DDP run's ranks end together (see omni.ranks)
    except ValueError as e:
        if os.environ.get("OMNI_DEBUG"):
            raise
        from omni.cli_errors import one_line

        command = " ".join(["omni", *argv[:1]])
        sys.stderr.write(f"{command}: error: {one_line(e)}\n")
        raise SystemExit(2) from None


def _main(argv: list[str], args: list[str] | None) -> None:
    if argv[:1] == ["data"]:
        if argv[1:2] == ["fusion"]:
            from omni.data.fusion_sim import main as fusion_corpus

            fusion_corpus(argv[2:])
            return
        if argv[1:2] == ["rl"]:
            from omni.data.rl_corpus import main as rl_corpus

            rl_corpus(argv[2:])
            return
        if argv[1:2] != ["speech"]:
            raise SystemExit(
                "usage: omni data speech --kind digits|sentences --out DIR | omni data rl --env ID --out DIR | "
                "omni data fusion --out DIR"
            )
        from omni.data.speech_corpus import main as speech_corpus

        speech_corpus(argv[2:])
        return
    if argv[:1] == ["export"]:
        from omni.export import main as export_command

        export_command(argv[1:])
        return
    if argv[:1] == ["import-whisper"]:
        from omni.whisper import main as import_whisper

        import_whisper(argv[1:])
        return
    if argv[:1] == ["rollout"]:
        from omni.rollout_command import main as rollout_command

        rollout_command(argv[1:])
        return
    if argv[:1] == ["transcribe"]:
        from omni.transcribe import main as transcribe

        raise SystemExit(transcribe(argv[1:]))
    if argv[:1] == ["viz"]:
        if argv[1:2] == ["scene"]:
            viz_scene(argv[2:])
            return
        if argv[1:2] != ["masks"]:
            raise SystemExit(
                "usage: omni viz masks --config X.yaml --out masks.png | omni viz scene --config X.yaml --ckpt_path C"
            )
        viz_masks(argv[2:])
        return
    OmniCLI(
        model_class=None,
        datamodule_class=None,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,  # optimizer and schedule are the task's own (OmniTask.optim)
        save_config_kwargs={"overwrite": True},
        args=args,  # None reads sys.argv (passing it explicitly makes LightningCLI warn)
    )


if __name__ == "__main__":
    main()
