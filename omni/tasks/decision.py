"""Offline RL with one trunk: the Decision Transformer (return-to-go, state, action tokens) or behaviour cloning
(state, action tokens: the same tokenizer, trunk and budget with the returns left out).

``TrajectoryTokenizer`` -> a causal trunk -> ``ActionHead`` at each step's state token: a_t is predicted from
everything up to s_t. Batches hold ``trajectory``: {"returns_to_go" (B, K, 1), "states" (B, K, S), "actions"
(B, K, A) or (B, K), "timesteps" (B, K), "mask" (B, K)}, states already normalised by the data module. The dataset's
state statistics and action bounds are buffers and the rollout facts (env id, reference scores, reward scale,
context, the dataset's returns) ride in the checkpoint, so ``omni rollout`` needs only the checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from omni.choices import check_choice
from omni.heads.action import ActionHead
from omni.tokenizers.trajectory import TrajectoryTokenizer
from omni.tokens import Tokens
from omni.training import OmniTask, OptimConfig, Stage
from omni.transformer import TransformerConfig

__all__ = ["DecisionTransformer", "Layout"]

Layout = Literal["dt", "bc"]
SelectBy = Literal["loss", "score"]
TRAJECTORY = "trajectory"  # the batch key and the tokenizer's name
RL_FACTS = ("env_id", "ref_min_score", "ref_max_score", "reward_scale", "context", "return_stats", "dataset")


class DecisionTransformer(OmniTask):
    """Decision Transformer (Chen et al. 2021) or behaviour cloning on offline episodes, by ``layout``."""

    monitor, monitor_mode = "val/loss", "min"
    agree_with_data = ("state_dim", "act_dim", "discrete")

    def __init__(
        self,
        trunk: TransformerConfig,
        state_dim: int,
        act_dim: int,
        discrete: bool = False,
        layout: Layout = "dt",
        max_timestep: int = 1000,
        state_encoder: Callable[[int], nn.Module] | None = None,
        head_dropout: float = 0.0,
        embed_dropout: float = 0.0,
        select_by: SelectBy = "loss",
        optim: OptimConfig | None = None,
    ) -> None:
        """
        Args:
            trunk: the transformer's sizes and masks; the masks must be causal (no token attends a later one), e.g.
                ``causal() & causal(by='group', window=20)``.
            state_dim: S, the size of a state (channels of an image observation); must match the data's.
            act_dim: A, the action size or the number of discrete actions; must match the data's.
            discrete: discrete actions (logits and cross-entropy) instead of continuous ones (tanh and MSE).
            layout: ``dt`` (R̂, s, a tokens) or ``bc`` (s, a tokens: behaviour cloning, returns left out).
            max_timestep: size of the timestep table; at least the data's longest episode and the env's time limit.
            state_encoder: for image observations, a tokenizer given as ``class_path`` + ``init_args`` without
                ``dim`` (``omni.tokenizers.ImagePatchTokenizer``) that turns each observation into patch tokens.
            head_dropout: dropout before the action head's linear layer.
            embed_dropout: dropout on the token embeddings (CORL's ``embedding_dropout``, 0.1 there).
            select_by: what picks the ``best`` checkpoint: ``loss`` (the validation action loss) or ``score`` (the
                validation rollouts' normalised score at the first target, on episodes the test never plays: an
                online choice of the policy, so a run that uses it says so).
            optim: optimizer and schedule settings (CORL: AdamW, warmup, clip 0.25 via the trainer's
                ``gradient_clip_val`` or ``optim.grad_clip``).
        """
        check_choice("layout", layout, Layout)
        check_choice("select_by", select_by, SelectBy)
        tokenizer = partial(
            TrajectoryTokenizer,
            state_dim=state_dim,
            act_dim=act_dim,
            discrete_actions=discrete,
            max_timestep=max_timestep,
            returns=layout == "dt",
            state_encoder=state_encoder,
            embed_dropout=embed_dropout,
        )
        super().__init__(trunk, {TRAJECTORY: tokenizer}, None, None, None, optim)
        self.save_hyperparameters()
        self.state_dim, self.act_dim, self.discrete = state_dim, act_dim, discrete
        self.layout, self.max_timestep = layout, max_timestep
        if select_by == "score":  # the rollout callback logs it at validation (every N epochs; others skipped)
            self.monitor, self.monitor_mode = "val/score", "max"
        self.head = ActionHead(self.model.dim, act_dim, discrete, head_dropout)
        shape = (state_dim,) if state_encoder is None else (1,)
        self.register_buffer("state_mean", torch.zeros(shape))
        self.register_buffer("state_std", torch.ones(shape))
        self.rl: dict[str, Any] = {}  # RL_FACTS, from the data module (fit) or the checkpoint
        self._check_causal()
        if discrete:
            self.add_metric("action_acc", MeanMetric)

    @property
    def tokenizer(self) -> TrajectoryTokenizer:
        return self.model.tokenizers[TRAJECTORY]  # type: ignore[return-value]

    def _check_causal(self) -> None:
        """Predicting a_t from s_t is only honest if no token sees a later one: check every layer's mask."""
        n = 6
        index = torch.arange(n)
        probe = Tokens.create(torch.zeros(1, n, 1), pos=index.float()[:, None], group=index // 3)
        for i, (mask, name) in enumerate(zip(self.model.layer_masks, self.model.layer_mask_names, strict=True)):
            if bool(mask.dense(probe).triu(diagonal=1).any()):
                raise ValueError(
                    f"trunk.masks: expected causal masks (no token attends a later one), got {name!r} at layer {i}"
                )

    # ------------------------------------------------------------------ data agreement and checkpoints
    def setup(self, stage: str) -> None:
        super().setup(stage)
        data = getattr(self.trainer, "datamodule", None)
        if stage != "fit" or getattr(data, "windows", None) is None:
            return
        if data.max_timestep > self.max_timestep:
            raise ValueError(
                f"model.max_timestep: expected >= {data.max_timestep} (the data's longest episode or the env's time "
                f"limit), got {self.max_timestep}"
            )
        mean, std = torch.as_tensor(data.state_mean).flatten(), torch.as_tensor(data.state_std).flatten()
        if mean.numel() == self.state_mean.numel():
            self.state_mean.copy_(mean)
            self.state_std.copy_(std)
        if not self.discrete:
            self.head.set_bounds(*data.action_bounds)
        self.rl = {
            "env_id": data.env_id,
            "ref_min_score": data.ref_min_score,
            "ref_max_score": data.ref_max_score,
            "reward_scale": float(data.reward_scale),
            "context": int(data.context),
            "return_stats": data.return_stats,
            "dataset": str(data.dataset),
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["omni_rl"] = dict(self.rl)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.rl = dict(checkpoint.get("omni_rl") or {})

    # ------------------------------------------------------------------ the policy
    def normalize(self, states: Tensor) -> Tensor:
        """Raw env observations (..., S) -> the normalised states the model was trained on."""
        return (states - self.state_mean.to(states.dtype)) / self.state_std.to(states.dtype)

    def model_inputs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The tokenizer's keyword arguments from a batch; behaviour cloning gets no returns."""
        traj = dict(batch[TRAJECTORY])
        if self.layout == "bc":  # moved last: the batch size is read from the first tensor
            traj = {k: v for k, v in traj.items() if k != "returns_to_go"} | {"returns_to_go": None}
        return {TRAJECTORY: traj}

    def outputs_from(self, mixed: Tokens, spans: dict[str, slice], inputs: Mapping[str, Any]) -> dict[str, Any]:
        """{"trajectory": window} -> {"actions": (B, K, A) actions or logits at every step, "output"}"""
        result = self.model.read_out(mixed, spans)
        out = result["output"]
        x = out.tokens.x[:, out.spans[TRAJECTORY]]  # (B, T*K, D)
        k = inputs[TRAJECTORY]["timesteps"].shape[1]
        result["actions"] = self.head(x[:, self.tokenizer.state_positions(k).to(x.device)])
        return result

    # ------------------------------------------------------------------ the task's part
    def loss(self, outputs: dict[str, Any], batch: Mapping[str, Any], stage: Stage) -> Tensor:
        traj = batch[TRAJECTORY]
        return self.head.loss(outputs["actions"], traj["actions"], traj.get("mask"))

    def update_metrics(self, outputs: dict[str, Any], batch: Mapping[str, Any], stage: Stage) -> None:
        if self.discrete:
            traj = batch[TRAJECTORY]
            actions = traj["actions"][..., 0] if traj["actions"].ndim == 3 else traj["actions"]
            right = self.head.act(outputs["actions"]) == actions
            mask = traj.get("mask")
            self.stage_metrics(stage)["action_acc"].update((right if mask is None else right[mask]).float())

    def predict(self, outputs: dict[str, Any], batch: Any) -> dict[str, Tensor]:
        return {"actions": self.head.act(outputs["actions"])}
