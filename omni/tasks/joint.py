"""``JointTask``: one trunk trained at once on several tasks (images, speech, trajectories, camera + radar).

Each member is built from its own config (``configs/digits.yaml``, ``configs/speech_digits.yaml`` ...; see
``omni.members``) with its tokenizers, heads, loss, metrics, callbacks and artifacts, at the joint trunk's
width and depth; then every member's trunk is replaced by the one shared ``Transformer`` and every member's modality
embedding by a view of one shared table (keyed by modality name: two tasks that name the same modality share its
tag). Each member keeps its own mask schedule.

Batches come two ways (``batching``):

- ``per_task``: one task a step, in a schedule drawn in proportion to each task's steps (``omni.data.joint``);
  the step is the member's own step, its loss scaled by the member's ``weight``.
- ``packed``: a batch of every task each step. The samples of the tasks whose forward is tokenizer -> trunk ->
  heads (``OmniTask.packable``: classification, speech, Decision Transformer) are packed together
  (``omni.tokens.pack``): one row may hold an image, an utterance and a trajectory, each token under its own task's
  mask for the layer. ``pack_attention`` says how they attend: one row without padding and attention sample by
  sample (``stream``, variable-length attention), or rows of ``pack_len`` under a mask that keeps samples apart by
  their ``sample`` numbers (``rows``). The others (the fusion detector edits its tokens inside the trunk) run on
  their own in the same step.

Metrics are logged under each member's name (``val/speech/wer``, ``test/hopper/score``); each member's artifacts go
to ``<run directory>/<name>/``.

Shape legend: B batch of one task, N its tokens, R packed rows, L = ``pack_len``, D width.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from omni.attention import masks as mask_lib
from omni.attention.plans import BUCKET, PlanCache, choose_path, segment_plan, stream_plan
from omni.choices import check_choice
from omni.members import Batching, MemberCallback, TaskRef, as_refs, attach, load_task
from omni.tokens import Tokens, pack, unpack_items
from omni.training import (
    ClipsByConfig,
    OmniTask,
    OptimConfig,
    RunArtifacts,
    Stage,
    _rng_state,
    _set_rng_state,
    make_adamw,
    param_groups,
    with_schedule,
)
from omni.transformer import Transformer, TransformerConfig

__all__ = ["Batching", "JointTask", "PackAttention", "TableView"]

PackAttention = Literal["auto", "rows", "segments", "stream"]

_EPOCH_HOOKS = (
    "on_train_epoch_start",
    "on_train_epoch_end",
    "on_validation_epoch_start",
    "on_validation_epoch_end",
    "on_test_epoch_start",
    "on_test_epoch_end",
)


class TableView(nn.Module):
    """A member's modality embedding as rows of the joint table: ``forward(ids)`` = ``table(index[ids])``; the table
    itself is the joint task's (not registered here)."""

    def __init__(self, table: nn.Embedding, index: Tensor) -> None:
        super().__init__()
        self.__dict__["table"] = table
        self.register_buffer("index", index, persistent=False)

    @property
    def weight(self) -> Tensor:
        """(M, D) this member's rows of the joint table."""
        return self.table.weight[self.index]

    def forward(self, ids: Tensor) -> Tensor:
        return self.table(self.index[ids])


def _member_prefix(name: str, metric: str) -> str:
    """``val/wer`` of member ``speech`` -> ``val/speech/wer``."""
    stage, sep, rest = metric.partition("/")
    return f"{stage}/{name}/{rest}" if sep else f"{name}/{metric}"


class JointTask(ClipsByConfig):
    """Several tasks, one shared trunk and modality table, trained at once (see the module's doc)."""

    monitor: str | None = None  # the members' validation losses are on different scales: keep the last epoch
    monitor_mode: Literal["min", "max"] = "min"

    def __init__(
        self,
        tasks: dict[str, TaskRef],
        trunk: TransformerConfig,
        batching: Batching = "per_task",
        pack_len: int = 256,
        optim: OptimConfig | None = None,
        pack_attention: PackAttention = "auto",
    ) -> None:
        """
        Args:
            tasks: {name: the member's config files, overrides, loss weight, steps per epoch}; the same mapping the
                data module (``omni.data.JointDataModule``) is given.
            trunk: the shared transformer's sizes; each member keeps its own ``masks`` / ``mask_defs``.
            batching: ``per_task`` (one task a step) or ``packed`` (every task each step, packed rows).
            pack_len: tokens per packed row (``pack_attention`` rows and segments); the longest sample must fit.
            pack_attention: how packed samples attend. ``stream``: every sample of the step in one row without a
                single padded slot, attention sample by sample (variable-length attention, as FlashAttention's
                ``cu_seqlens``): each task's full-length samples attend as a view of the row, its padded ones
                gathered into their layout and back (``omni.attention.plans.stream_plan``). ``segments``: rows of
                ``pack_len``, attention sample by sample through gathers (``segment_plan``). ``rows``: rows of
                ``pack_len``, each under one mask that keeps its samples apart (every (query, key) pair of the row
                computed, or skipped block by block on the flex path). ``auto``: ``rows`` where the flex path runs
                (CUDA), else ``stream``.
            optim: the shared trunk's and table's optimizer settings (and the schedule and clipping of all); each
                member's own parameters keep its config's learning rate and weight decay.
        """
        super().__init__()
        self.save_hyperparameters()
        refs = as_refs(tasks)
        check_choice("batching", batching, Batching)
        if pack_len < 1:
            raise ValueError(f"pack_len: expected a positive number of tokens, got {pack_len}")
        check_choice("pack_attention", pack_attention, PackAttention)
        self.batching, self.pack_len, self.pack_attention = batching, pack_len, pack_attention
        self.optim = optim if optim is not None else OptimConfig()
        cfg = trunk if isinstance(trunk, TransformerConfig) else TransformerConfig.from_dict(trunk)
        self.trunk = Transformer(cfg)
        self.weights = {name: r.weight for name, r in refs.items()}
        members: dict[str, OmniTask] = {}
        self.member_callbacks: dict[str, list[Callback]] = {}
        for name, ref in refs.items():
            parts = load_task(ref, data=False, trunk=cfg)
            if not isinstance(parts.task, OmniTask):
                raise ValueError(f"tasks.{name}: expected a config of an omni task, got {type(parts.task).__name__}")
            members[name] = parts.task
            self.member_callbacks[name] = parts.callbacks
        self.members = nn.ModuleDict(members)

        # One modality table over every member's names; each member's tags index rows of it.
        names: list[str] = []
        for sub in members.values():
            names += [n for n in sub.model.modality_names if n not in names]
        self.modality_names = names
        self.modality_embed = nn.Embedding(len(names), cfg.dim)
        nn.init.normal_(self.modality_embed.weight, std=0.02)
        self._masks: dict[str, list[mask_lib.Mask]] = {}
        for name, sub in members.items():
            self._masks[name] = sub.model.trunk.config.layer_masks()  # unbound: bound to the joint table when packing
            index = torch.tensor([names.index(n) for n in sub.model.modality_names])
            sub.model.modality_embed = TableView(self.modality_embed, index)
            del sub.model._modules["trunk"]
            sub.model.__dict__["trunk"] = self.trunk  # shared, not registered again: one copy in the state dict
            sub.__dict__["_joint"] = weakref.ref(self)
        self.plans = PlanCache()
        self._packed_masks: list[mask_lib.Mask] | None = None

    # ------------------------------------------------------------------ members
    @property
    def names(self) -> list[str]:
        return list(self.members)

    def log_member(self, sub: OmniTask, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        """A member's ``self.log``: under its name, never suffixed with a dataloader index."""
        member = next(k for k, m in self.members.items() if m is sub)
        kwargs["add_dataloader_idx"] = False
        L.LightningModule.log(self, _member_prefix(member, name), value, *args, **kwargs)

    def setup(self, stage: str) -> None:
        data = getattr(self.trainer, "datamodule", None)
        theirs = list(getattr(data, "members", {}) or {})
        if theirs and theirs != self.names:
            raise ValueError(f"data.tasks: expected the model's tasks {self.names}, got {theirs}")
        for name, sub in self.members.items():
            attach(sub, name, self.trainer)
            sub.setup(stage)
        if stage == "fit":
            self._let_ddp_skip_idle_members()

    def _let_ddp_skip_idle_members(self) -> None:
        """Under DDP, a ``per_task`` step trains one member: the others' weights take no part in its loss, which DDP
        refuses unless it looks for unused parameters. Turned on here, before the strategy wraps the model (every
        rank runs the same task each step, so an idle member's gradients stay None and AdamW leaves it alone)."""
        from lightning.pytorch.strategies import DDPStrategy

        strategy = self.trainer.strategy
        if self.batching != "per_task" or not isinstance(strategy, DDPStrategy):
            return
        kwargs = getattr(strategy, "_ddp_kwargs", None)
        if not isinstance(kwargs, dict):
            raise ValueError(
                "trainer.strategy: expected ddp_find_unused_parameters_true for a per_task joint run (each step trains "
                f"one task's weights), got {type(strategy).__name__} without DDP arguments to set"
            )
        if not kwargs.get("find_unused_parameters"):
            kwargs["find_unused_parameters"] = True
            rank_zero_info("JointTask: DDP looks for unused parameters (a per_task step trains one task's weights)")

    def configure_callbacks(self) -> list[Callback]:
        have = self._trainer is not None and any(isinstance(c, RunArtifacts) for c in self.trainer.callbacks)
        own = [MemberCallback(name, cb, self) for name, cbs in self.member_callbacks.items() for cb in cbs]
        return own + ([] if have else [RunArtifacts()])

    def write_artifacts(self, stage: Stage, run_dir: Path | None) -> None:
        """Each member's artifacts in ``run_dir/<name>/``."""
        for name, sub in self.members.items():
            out = None
            if run_dir is not None:
                out = run_dir / name
                out.mkdir(parents=True, exist_ok=True)
            sub.write_artifacts(stage, out)

    # ------------------------------------------------------------------ packed rows
    def packed_masks(self) -> list[mask_lib.Mask]:
        """Per layer: each packable member's mask for its own queries, ``query_modality(member's tags) & mask``, or-ed
        and bound to the joint table (packed rows keep samples apart by themselves)."""
        if self._packed_masks is None:
            packable = [n for n in self.names if self.members[n].packable]
            owners: dict[str, str] = {}
            for n in packable:
                for tag in self.members[n].model.modality_names:
                    if tag in owners and self._masks[owners[tag]] != self._masks[n]:
                        raise ValueError(
                            f"tasks: packed rows need each modality name in one task or under the same masks; "
                            f"{tag!r} is in {owners[tag]!r} and {n!r} with other masks"
                        )
                    owners.setdefault(tag, n)
            layers = []
            for i in range(self.trunk.config.depth):
                parts = [mask_lib.query_modality(*self.members[n].model.modality_names) & self._masks[n][i]
                         for n in packable]  # fmt: skip
                combined = parts[0]
                for p in parts[1:]:
                    combined = combined | p
                layers.append(combined.bind(self.modality_names))
            self._packed_masks = layers
        return self._packed_masks

    def forward_packed(self, inputs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        """Every packable member's ``forward`` at once, its samples packed with the others' into rows of
        ``pack_len`` tokens through the shared trunk.

        Args:
            inputs: {member name: its model inputs (``model_inputs`` of its batch)}; members that are not packable
                are refused.
        Returns:
            {member name: what its ``forward`` returns}: the same outputs as alone, up to rounding (a test).
        """
        if self.trunk.config.exits:
            raise ValueError("trunk.exits: packed rows run every token through every layer; give exits only to a "
                             "trunk that runs one task's batches (batching: task)")  # fmt: skip
        parts: dict[str, tuple[Tokens, dict[str, slice]]] = {}
        for name, raw in inputs.items():
            sub = self.members[name]
            if not sub.packable:
                raise ValueError(f"inputs.{name}: expected a packable task, got {type(sub).__name__} (runs alone)")
            parts[name] = sub.trunk_inputs(raw)
        shared = [t.replace(modality=self.members[n].model.modality_embed.index[t.modality]) for n, (t, _) in
                  parts.items()]  # fmt: skip
        path = choose_path(self.trunk.config.attention, self.pack_len, shared[0].x.device, torch.is_grad_enabled())
        mode = self.pack_attention
        if mode == "auto":
            mode = "rows" if path == "flex" else "stream"
        rows, info = pack(shared, None if mode == "stream" else self.pack_len)  # (R, L, D); a stream: (1, T, D)
        rows = rows.replace(x=rows.x + self.modality_embed(rows.modality).to(rows.x.dtype))
        if mode == "rows" and path == "flex":
            rows = rows.pad_to(-(-self.pack_len // BUCKET) * BUCKET)
        built: dict[mask_lib.Mask, Any] = {}
        plans = []
        for m in self.packed_masks():
            if m not in built:
                if mode == "rows":
                    built[m] = self.plans.get(m, rows, path)
                else:  # each item's mask in its own layout (cached like a per-task step's)
                    own = [self.plans.get(m, t, "dense") for t in shared]
                    built[m] = stream_plan(own, info) if mode == "stream" else segment_plan(own, info)
            plans.append(built[m])
        y = self.trunk(rows.x, plans)[:, : info.max_len]
        mixed = unpack_items(y, info)  # per task (B, N, D) in its own layout; padded tokens 0
        out: dict[str, dict[str, Any]] = {}
        for (name, (tokens, spans)), x in zip(parts.items(), mixed, strict=True):
            out[name] = self.members[name].outputs_from(tokens.replace(x=x.to(tokens.x.dtype)), spans, inputs[name])
        return out

    # ------------------------------------------------------------------ the loop
    def _weighted(self, name: str, loss: Tensor) -> Tensor:
        return self.weights[name] * loss

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        if self.batching == "per_task":
            name, task_batch = batch
            loss = self._weighted(name, self.members[name].step(task_batch, "train"))
        else:
            loss = self.packed_step(batch, "train")
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=1)
        return loss

    def packed_step(self, batches: Mapping[str, Any], stage: Stage) -> Tensor:
        """One step on a batch of every task: the packable ones through packed rows, the others alone."""
        packable = [n for n in batches if self.members[n].packable]
        inputs = {n: self.members[n].model_inputs(batches[n]) for n in packable}
        outputs = self.forward_packed(inputs) if inputs else {}
        losses = [self._weighted(n, self.members[n].finish_step(inputs[n], outputs[n], batches[n], stage))
                  for n in packable]  # fmt: skip
        losses += [self._weighted(n, self.members[n].step(b, stage)) for n, b in batches.items() if n not in inputs]
        return torch.stack(losses).sum()

    def _eval_member(self, stage: Stage, dataloader_idx: int) -> OmniTask:
        data = getattr(self.trainer, "datamodule", None)
        names = (getattr(data, "eval_names", None) or {}).get(stage) or self.names
        return self.members[names[dataloader_idx]]

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self._eval_member("val", dataloader_idx).step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self._eval_member("test", dataloader_idx).step(batch, "test")

    def _call_members(self, hook: str) -> None:
        for sub in self.members.values():
            if getattr(type(sub), hook) is not getattr(L.LightningModule, hook):
                getattr(sub, hook)()

    def on_train_epoch_start(self) -> None:
        self._restore_rng()
        self._call_members("on_train_epoch_start")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._restore_rng()

    def on_train_epoch_end(self) -> None:
        self._call_members("on_train_epoch_end")

    def on_validation_epoch_start(self) -> None:
        self._call_members("on_validation_epoch_start")

    def on_validation_epoch_end(self) -> None:
        self._call_members("on_validation_epoch_end")

    def on_test_epoch_start(self) -> None:
        self._call_members("on_test_epoch_start")

    def on_test_epoch_end(self) -> None:
        self._call_members("on_test_epoch_end")

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW: the shared trunk and table at the joint ``optim``; each member's own parameters at its config's
        learning rate and weight decay. One warmup + cosine schedule scales them all."""
        cfg = self.optim
        mixed = "mixed" in str(self.trainer.precision)
        opt = make_adamw(self.trunk, cfg, mixed_precision=mixed)  # fused where every parameter allows it
        opt.add_param_group({"params": [self.modality_embed.weight], "weight_decay": 0.0, "lr": cfg.lr})
        for sub in self.members.values():
            for group in param_groups(sub, sub.optim.weight_decay):
                if group["params"]:
                    opt.add_param_group({**group, "lr": sub.optim.lr, "betas": tuple(sub.optim.betas)})
        return with_schedule(opt, cfg, self.trainer)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The RNG states, and each member's own checkpoint entries (a vocabulary, RL statistics) under its name."""
        checkpoint["omni_rng"] = _rng_state()
        members = {}
        for name, sub in self.members.items():
            own: dict[str, Any] = {}
            sub.on_save_checkpoint(own)
            own.pop("omni_rng", None)
            members[name] = own
        checkpoint["omni_members"] = members

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._resume_rng = checkpoint.get("omni_rng")
        members = checkpoint.get("omni_members") or {}
        for name, sub in self.members.items():
            sub.on_load_checkpoint(dict(members.get(name) or {}))

    def _restore_rng(self) -> None:
        state = self.__dict__.get("_resume_rng")
        if state is not None:
            _set_rng_state(state)
            self._resume_rng = None

    @property
    def run_dir(self) -> Path | None:
        from omni.training import run_directory

        return None if self._trainer is None else run_directory(self.trainer)
