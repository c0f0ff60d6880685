"""Camera + radar object detection with velocities: camera patches, radar points, an ego token and N object
queries in one sequence; DETR's set loss on the queries' outputs.

Shape legend
    B batch   Q object queries   O ground-truth slots   C classes (+ 1 "no object")   D width   L trunk layers

Batches are ``omni.data.fusion.FusionDataModule``'s: ``inputs`` {camera, radar, ego}, ``targets`` {class (B, O),
box (B, O, 5) = (x, y, vx, vy, yaw), mask (B, O)}, ``condition`` (B,). Each query predicts class logits (B, Q, C + 1)
(``class_loss: softmax``) or (B, Q, C) (``focal``: sigmoid per class) and a box (B, Q, 6) = (x / 10 m, y / 10 m,
vx / 5 m/s, vy / 5 m/s, sin yaw, cos yaw).

A sensor is removed by masking its tokens out (their ``pad`` set False), so shapes never change: per sample while
training (**modality dropout**) and for the whole batch at evaluation (``eval_sensors``: ``both``, ``camera`` or
``radar``). Validation and test log mAP, mATE, mAVE, mAOE and NDS (``omni.detection_metrics``) per sensor set and
per condition: ``val/both/NDS``, ``test/radar/fog/mAP``...
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from omni.choices import check_choice
from omni.data.fusion_scene import CAMERA_HEIGHT, CLASSES, CONDITIONS, FOCAL_PX, IMAGE_HW
from omni.detection_metrics import DetectionAccumulator
from omni.ranks import all_ranks, global_count
from omni.tasks.fusion_heat import heat_boxes, heat_peaks
from omni.training import OmniTask, OptimConfig, Stage
from omni.transformer import TransformerConfig

__all__ = [
    "BOX_SCALE",
    "ClassLoss",
    "FusionDetector",
    "MatchOn",
    "SensorSet",
    "decode_boxes",
    "encode_boxes",
    "focal_class_cost",
    "hungarian_match",
    "reference_pixels",
    "sample_image",
    "sigmoid_focal_loss",
]

SensorSet = Literal["both", "camera", "radar"]
ClassLoss = Literal["softmax", "focal"]
MatchOn = Literal["box", "centre"]
FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0  # RetinaNet's focal loss, as Deformable DETR uses it
CAMERA, RADAR, QUERIES = "camera", "radar", "queries"
BOX_SCALE = (10.0, 10.0, 5.0, 5.0)  # x, y (m) and vx, vy (m/s) are predicted in these units
SAMPLE_HEIGHTS = (0.0, 0.75, 1.5)  # m above the ground where ``camera_sampling`` reads the image: foot, body, top


def encode_boxes(box: Tensor) -> Tensor:
    """(..., 5) (x, y, vx, vy, yaw) -> (..., 6) regression targets (scaled x, y, vx, vy, sin yaw, cos yaw)."""
    scale = box.new_tensor(BOX_SCALE)
    return torch.cat([box[..., :4] / scale, box[..., 4:].sin(), box[..., 4:].cos()], dim=-1)


def decode_boxes(reg: Tensor) -> Tensor:
    """(..., 6) regression outputs -> (..., 5) (x, y, vx, vy, yaw)."""
    scale = reg.new_tensor(BOX_SCALE)
    return torch.cat([reg[..., :4] * scale, torch.atan2(reg[..., 4:5], reg[..., 5:6])], dim=-1)


def focal_class_cost(logits: Tensor) -> Tensor:
    """(..., C) sigmoid logits -> (..., C) Deformable DETR's matching cost of calling each query each class: the
    focal loss of "this class" minus the focal loss of "not this class"."""
    p = logits.float().sigmoid()
    pos = FOCAL_ALPHA * (1 - p) ** FOCAL_GAMMA * -(p + 1e-8).log()
    neg = (1 - FOCAL_ALPHA) * p**FOCAL_GAMMA * -(1 - p + 1e-8).log()
    return pos - neg


def sigmoid_focal_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Summed sigmoid focal loss (RetinaNet) of logits (..., C) against one-hot targets (..., C) in {0, 1}."""
    logits, target = logits.float(), target.float()
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    alpha_t = FOCAL_ALPHA * target + (1 - FOCAL_ALPHA) * (1 - target)
    return (alpha_t * (1 - p_t) ** FOCAL_GAMMA * ce).sum()


@torch.no_grad()
def hungarian_match(
    logits: Tensor,
    reg: Tensor,
    classes: Tensor,
    targets: Tensor,
    mask: Tensor,
    class_weight: float,
    l1_weight: float,
    class_loss: ClassLoss = "softmax",
) -> list[tuple[np.ndarray, np.ndarray]]:
    """DETR's matching, per sample: cost = class_weight · class cost + l1_weight · L1(box), minimised by
    ``scipy.optimize.linear_sum_assignment``. The class cost is −p(class) (``softmax``, DETR) or
    ``focal_class_cost`` (``focal``, Deformable DETR). The costs of the whole batch are computed at once.

    Args:
        logits: (B, Q, C + 1) (``softmax``) or (B, Q, C) (``focal``); reg: (B, Q, 6); classes: (B, O) long;
        targets: (B, O, 6) encoded boxes; mask: (B, O) bool, True where a ground-truth slot is real.
    Returns:
        per sample, (query indices, slot indices) of its matched pairs, each (min(Q, real slots),).
    """
    per_class = focal_class_cost(logits) if class_loss == "focal" else -logits.float().softmax(-1)
    index = classes.clamp(min=0)[:, None, :].expand(-1, per_class.shape[1], -1)
    cls_cost = torch.gather(per_class, 2, index)  # (B, Q, O)
    cost = (class_weight * cls_cost + l1_weight * torch.cdist(reg.float(), targets.float(), p=1)).cpu().numpy()
    mask_np = mask.cpu().numpy()
    out = []
    for i in range(cost.shape[0]):
        slots = np.flatnonzero(mask_np[i])
        q, g = linear_sum_assignment(cost[i][:, slots])
        out.append((q.astype(np.int64), slots[g].astype(np.int64)))
    return out


def _reference_grid(num_queries: int) -> Tensor:
    """(Q, 2) starting reference points, in box units (x / 10 m, y / 10 m): a range x azimuth grid ahead."""
    rows = max(1, round(math.sqrt(num_queries)))
    cols = -(-num_queries // rows)
    ranges = torch.linspace(5.0, 50.0, rows)
    azimuths = torch.linspace(-0.6, 0.6, cols)
    grid = torch.stack(torch.meshgrid(ranges, azimuths, indexing="ij"), dim=-1).reshape(-1, 2)[:num_queries]
    xy = torch.stack([grid[:, 0] * torch.cos(grid[:, 1]), grid[:, 0] * torch.sin(grid[:, 1])], dim=-1)
    return xy / torch.tensor(BOX_SCALE[:2])


def reference_features(ref: Tensor, octaves: int = 5) -> Tensor:
    """(Q, 2) reference points in box units -> (Q, 6 · octaves) sin-cos features of (x, y, azimuth) at frequencies
    1, 2, 4... cycles per unit (10 m; a radian): what a query's positional prior is computed from."""
    az = torch.atan2(ref[:, 1], ref[:, 0])
    coords = torch.stack([ref[:, 0], ref[:, 1], az], dim=-1)  # (Q, 3)
    freqs = 2.0 ** torch.arange(octaves, device=ref.device, dtype=ref.dtype)
    angles = math.pi * coords[..., None] * freqs  # (Q, 3, octaves)
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(1)


def query_positions(ref: Tensor, patch_size: int) -> Tensor:
    """(Q, 2) reference points in box units -> (Q, 4) query ``pos``: (x, y) in metres, then the (row, col) in patch
    cells of the camera patch where that ground point appears (the simulator's pinhole camera; points ahead only),
    for ``near(..., shift={'camera': 2})``."""
    xy = ref * ref.new_tensor(BOX_SCALE[:2])
    ahead = xy[:, 0].clamp(min=0.5)
    u = IMAGE_HW[1] / 2 - FOCAL_PX * xy[:, 1] / ahead  # pixel column
    v = IMAGE_HW[0] / 2 + FOCAL_PX * CAMERA_HEIGHT / ahead  # pixel row of the ground point
    cells = torch.stack([v, u], dim=-1) / patch_size - 0.5  # patch (i, j) is centred at pixel (8 i + 4, 8 j + 4)
    return torch.cat([xy, cells], dim=-1)


def reference_pixels(ref: Tensor, heights: tuple[float, ...] = SAMPLE_HEIGHTS) -> Tensor:
    """(..., 2) BEV points in box units -> (..., S, 2) pixel (u, v) (u right, v down; pixel i spans [i, i + 1))
    where the points at ``heights`` (S of them, metres) above each appear in the simulator's pinhole camera
    (``omni.data.fusion_scene.project_to_image``); points less than 0.5 m ahead are taken at 0.5 m."""
    xy = ref * ref.new_tensor(BOX_SCALE[:2])
    ahead = xy[..., :1].clamp(min=0.5)  # (..., 1)
    z = ref.new_tensor(heights)  # (S,)
    u = (IMAGE_HW[1] / 2 - FOCAL_PX * xy[..., 1:2] / ahead).expand(*xy.shape[:-1], len(heights))
    v = IMAGE_HW[0] / 2 - FOCAL_PX * (z - CAMERA_HEIGHT) / ahead
    return torch.stack([u, v], dim=-1)


def sample_image(features: Tensor, pixels: Tensor) -> Tensor:
    """Bilinear samples of a patch-embedding map at pixel points: features (B, D, h, w) of an image of
    ``IMAGE_HW`` pixels, pixels (Q, S, 2) (the same points in every sample) or (B, Q, S, 2) (u, v) -> (B, Q, S · D);
    points outside the image read zeros."""
    size = pixels.new_tensor([IMAGE_HW[1], IMAGE_HW[0]])
    grid = (2 * pixels / size - 1).to(features.dtype)  # [-1, 1] over the image's outer edges (align_corners=False)
    if grid.ndim == 3:
        grid = grid.unsqueeze(0).expand(features.shape[0], -1, -1, -1)  # (B, Q, S, 2)
    out = F.grid_sample(features, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (B, D, Q, S)
    return rearrange(out, "b d q s -> b q (s d)")


def ground_point_patches(box: Tensor, mask: Tensor, patch_size: int) -> Tensor:
    """(B, O, 5) boxes, (B, O) mask -> (B, O) long: the index (row-major over the camera's patch grid) of the
    patch where each object's BEV centre on the ground appears, -1 for padding and points outside the image."""
    x, y = box[..., 0], box[..., 1]
    ahead = x.clamp(min=0.1)
    u = IMAGE_HW[1] / 2 - FOCAL_PX * y / ahead
    v = IMAGE_HW[0] / 2 + FOCAL_PX * CAMERA_HEIGHT / ahead
    inside = mask & (x > 0.1) & (u >= 0) & (u < IMAGE_HW[1]) & (v >= 0) & (v < IMAGE_HW[0])
    row = (v / patch_size).floor().clamp(0, IMAGE_HW[0] // patch_size - 1).long()
    col = (u / patch_size).floor().clamp(0, IMAGE_HW[1] // patch_size - 1).long()
    return torch.where(inside, row * (IMAGE_HW[1] // patch_size) + col, -1)


class FusionDetector(OmniTask):
    """DETR-style detection from any of camera, radar and ego tokens, with modality dropout."""

    monitor, monitor_mode, agree_with_data = "val/NDS", "max", ("num_classes",)

    def __init__(
        self,
        trunk: TransformerConfig,
        tokenizers: dict[str, Callable[[int], nn.Module]],
        num_queries: int = 16,
        num_classes: int = len(CLASSES),
        class_weight: float = 1.0,
        l1_weight: float = 5.0,
        eos_coef: float = 0.1,
        class_loss: ClassLoss = "softmax",
        query_prior: bool = False,
        local_queries: bool = False,
        camera_sampling: bool = False,
        camera_dense: float = 0.0,
        camera_resample: list[int] | None = None,
        camera_alone_gate: bool = False,
        camera_fallback: bool = False,
        match_on: MatchOn = "box",
        box_weights: list[float] | None = None,
        aux_loss: bool = True,
        modality_dropout: float | dict[str, float] = 0.0,
        radar_warmup: float = 0.0,
        eval_sensors: list[SensorSet] | None = None,
        optim: OptimConfig | None = None,
    ) -> None:
        """
        Args:
            trunk: the transformer's sizes and per-layer masks (``local`` in early layers, ``full`` later).
            tokenizers: {name: tokenizer} of ``camera``, ``radar`` and ``ego`` (any subset), each as ``class_path`` +
                ``init_args`` without ``dim``.
            num_queries: Q learnable object queries (global tokens: they attend to everything).
            num_classes: object classes C; a further "no object" class is added.
            class_weight: weight of the class term in the matching cost and the loss (DETR: 1).
            l1_weight: weight of the L1 box term in the matching cost and the loss (DETR: 5).
            eos_coef: cross-entropy weight of the "no object" class (DETR: 0.1); ``softmax`` only.
            class_loss: ``softmax`` (DETR: C + 1 logits, cross-entropy with a "no object" class) or ``focal``
                (Deformable DETR: C sigmoid logits, all low = no object; focal loss summed over queries and classes,
                divided by the number of objects; the focal matching cost).
            query_prior: add to each query an embedding of its reference point (DAB-DETR's positional prior: a query
                knows where it looks from the first layer on, so matching is stable from the start).
            local_queries: the queries are placed at their reference points (``pos`` = (x, y) in metres, then the
                camera patch (row, col) where that point appears: ``query_positions``) and are not global tokens,
                so the trunk's masks decide what they read: ``query_modality('queries') & near(radius={'radar':
                [6.0, 6.0], 'camera': [99.0, 1.5]}, shift={'camera': 2})`` keeps a query to the radar points near it
                and the image columns around it in the local layers (Deformable DETR's locality around a reference
                point); ``full`` layers still see everything.
            camera_sampling: add to each query what the camera shows at its reference point (DETR3D's 3D-to-2D
                query: the point, at ``SAMPLE_HEIGHTS`` above the ground, projected into the image through the
                simulator's camera and the camera tokenizer's patch embeddings sampled there bilinearly, then a
                linear map). Without it a query must learn from attention alone which image patch shows its
                bird's-eye-view location, and in the probes it did not (camera-only mAP 0.000).
            camera_dense: weight of a dense auxiliary loss on the camera's patch tokens (CenterNet's heat map on the
                patch grid): each patch's trunk output predicts whether an object's ground point (its BEV centre on
                the road) appears in it (sigmoid focal loss per object) and, where one does, the nearest such
                object's (x, y) in box units (L1). The 2-D position of an object is unambiguous where its depth is
                not, so the camera features learn where objects are before the queries learn to read them. 0: off.
            camera_resample: trunk layers (indices >= 1) before which each query reads the camera where its *current*
                centre estimate appears (the shared heads on the previous layer's output, as for the auxiliary
                losses; the point detached): the camera tokens of that layer's input (their trunk features, not only
                the tokenizer's) sampled bilinearly at ``SAMPLE_HEIGHTS`` above that centre, layer-normed, mapped
                linearly and scaled by tanh of a learned gate that starts at 0 (Flamingo's gated cross-attention), so
                the model starts as the one without it and the camera's reads grow only as they help (Deformable
                DETR's and DETR3D's iterative refinement: a query looks again where it now thinks its object is,
                rather than at its fixed reference point). An ungated map starting at zero was not enough: its weights
                get the largest gradients of the model, Adam moves them at full speed, and the fused model learned
                slower than the radar-only one. None: off.
            camera_alone_gate: ``camera_resample`` scales its reads by a second gate of its own in the samples whose
                radar is masked out (modality dropout; the ``camera`` sensor set), starting at tanh(0.5): the fused
                samples' gate stays small (about 0.06 after training: the radar answers most), which left the
                camera-alone path reading the camera at that scale too.
            camera_fallback: when the radar is missing (left out of the inputs, or the ``camera`` sensor set), answer
                with the camera heat map's detections instead of the queries': ``camera_dense``'s head then predicts
                per patch a focal-loss heat map per class and the nearest object's whole box (L1 with
                ``box_weights``), and the detections are the heat map's K = ``num_queries`` strongest local maxima
                (CenterNet's 3 x 3 max-pool in place of NMS; ``omni.tasks.fusion_heat``). The heat map learns from
                every sample whose camera is seen, with or without radar, where the queries' camera-alone path learns
                only from the samples whose radar is dropped. Needs ``camera_dense`` and ``class_loss: focal``. A
                camera-only model (no radar tokenizer) with it always answers from its heat map.
            match_on: the L1 term of the matching cost over the whole box (``box``, DETR) or the centre alone
                (``centre``: early on, velocity and yaw errors are large and random, and matching on them reshuffles
                which query answers for which object from step to step).
            box_weights: weights of the 6 box terms (x, y, vx, vy, sin yaw, cos yaw) in the L1 loss; default all 1.
                DETR3D weights velocity 0.2.
            aux_loss: add the same loss on every earlier layer's queries (through the shared heads).
            modality_dropout: while training, the chance per sample that the camera's tokens are masked out, and
                (separately, never both) that the radar's are; needs both sensors. A number is the same chance for
                each (at most 0.5); ``{camera: 0.2, radar: 0.1}`` sets them apart (summing to at most 1; a sensor
                not named is never dropped): a sensor that learns slowly alone costs the fused model the steps in
                which it is all there is.
            radar_warmup: train on the radar (and ego) alone first, for this fraction of all training steps (< 1)
                or this number of steps (>= 1), like ``optim.warmup``; then on every sensor with
                ``modality_dropout``. The camera's input is left out of those steps (not only masked: they cost
                what a radar-only step costs). A curriculum within the same budget: the radar is what localises
                objects, and with ``camera_resample`` (whose gate starts closed) the fused model starts its second
                phase as the radar-only model it has become and adds the camera's reads as they help. In the
                probes (seed 2, lr 2e-3) 0.25 of the steps gave test mAP 0.238 against 0.198 without. 0: off.
            eval_sensors: sensor sets evaluated at validation and test; the first one picks the best checkpoint.
                Default: ``both``, ``camera`` and ``radar`` for a model that has both, else the one it has.
            optim: optimizer and schedule settings.
        """
        if isinstance(modality_dropout, Mapping):
            drop_p = {CAMERA: 0.0, RADAR: 0.0, **modality_dropout}
            numbers = all(isinstance(p, int | float) and not isinstance(p, bool) for p in drop_p.values())
            if set(drop_p) != {CAMERA, RADAR} or not numbers or min(drop_p.values()) < 0 or sum(drop_p.values()) > 1:
                raise ValueError(
                    f"modality_dropout: expected {{camera: p, radar: p}} with p >= 0 summing to <= 1, got "
                    f"{dict(modality_dropout)}"
                )
        elif not 0.0 <= modality_dropout <= 0.5:
            raise ValueError(f"modality_dropout: expected a probability in [0, 0.5], got {modality_dropout}")
        else:
            drop_p = {CAMERA: float(modality_dropout), RADAR: float(modality_dropout)}
        if isinstance(radar_warmup, bool) or not isinstance(radar_warmup, int | float) or radar_warmup < 0:
            raise ValueError(
                f"radar_warmup: expected a fraction of the steps (< 1) or a step count >= 0, got {radar_warmup!r}"
            )
        super().__init__(trunk, tokenizers, None, {QUERIES: num_queries}, None, optim)
        self.save_hyperparameters()
        have = [s for s in (CAMERA, RADAR) if s in self.model.tokenizers]
        if not have:
            raise ValueError(f"tokenizers: expected a camera or a radar tokenizer, got {sorted(tokenizers)}")
        if radar_warmup and len(have) < 2:
            raise ValueError("radar_warmup: needs both a camera and a radar tokenizer")
        self.radar_warmup = float(radar_warmup)
        self._warmup_for: object = None  # the trainer _warmup_steps was resolved for
        self._warmup_steps = 0
        if any(drop_p.values()) and len(have) < 2:
            raise ValueError("modality_dropout: needs both a camera and a radar tokenizer")
        default: list[SensorSet] = ["both", CAMERA, RADAR] if len(have) == 2 else [have[0]]  # type: ignore[list-item]
        self.eval_sensors: list[SensorSet] = list(eval_sensors or default)
        for s in self.eval_sensors:
            if s not in ("both", *have) or (s == "both" and len(have) < 2):
                raise ValueError(f"eval_sensors: {s!r} needs sensors this model lacks (it has {have})")
        self.num_classes, self.num_queries = num_classes, num_queries
        self.class_weight, self.l1_weight, self.eos_coef = class_weight, l1_weight, eos_coef
        self.aux_loss, self.modality_dropout = aux_loss, drop_p
        check_choice("match_on", match_on, MatchOn)
        self.match_on = match_on
        if box_weights is not None and (len(box_weights) != 6 or min(box_weights) < 0):
            raise ValueError(f"box_weights: expected 6 weights >= 0 (x, y, vx, vy, sin, cos), got {box_weights}")
        self.register_buffer("box_weights", torch.tensor(box_weights or [1.0] * 6), persistent=False)
        dim = self.model.dim
        check_choice("class_loss", class_loss, ClassLoss)
        self.class_loss = class_loss
        self.local_queries = local_queries
        self.class_head = nn.Linear(dim, num_classes + (class_loss == "softmax"))
        # Each query owns a learnable BEV reference point and regresses its centre as an offset from it (the
        # anchors of Anchor DETR / Deformable DETR's reference points: set prediction converges far sooner).
        # Start: a range x azimuth grid over the sensors' field of view (5-50 m, ±35°), in the box units.
        self.reference = nn.Parameter(_reference_grid(num_queries))
        self.box_head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 6))
        if query_prior:
            feats = reference_features(self.reference.detach()).shape[-1]
            self.query_pos: nn.Module | None = nn.Sequential(nn.Linear(feats, dim), nn.GELU(), nn.Linear(dim, dim))
        else:
            self.query_pos = None
        self.camera_sampling: nn.Module | None = None
        if camera_sampling:
            cam = self.model.tokenizers[CAMERA] if CAMERA in self.model.tokenizers else None
            if cam is None or not callable(getattr(cam, "position", None)):
                raise ValueError("camera_sampling: needs a camera tokenizer with patch positions (ImagePatchTokenizer)")
            self.camera_sampling = nn.Linear(len(SAMPLE_HEIGHTS) * dim, dim)
        self.camera_resample_layers = sorted(set(camera_resample or []))
        self.camera_resample: nn.Module | None = None
        if self.camera_resample_layers:
            depth = len(self.model.trunk.blocks)
            if CAMERA not in self.model.tokenizers or not hasattr(self.model.tokenizers[CAMERA], "patch_size"):
                raise ValueError("camera_resample: needs a camera tokenizer with a patch_size (ImagePatchTokenizer)")
            if min(self.camera_resample_layers) < 1 or max(self.camera_resample_layers) >= depth:
                raise ValueError(f"camera_resample: expected layer indices in [1, {depth - 1}], got {camera_resample}")
            reads = len(SAMPLE_HEIGHTS) * dim
            self.camera_resample = nn.Sequential(nn.LayerNorm(reads), nn.Linear(reads, dim))
            self.camera_gate = nn.Parameter(torch.zeros(()))  # tanh(0) = 0: no camera read at the start
        if camera_alone_gate and self.camera_resample is None:
            raise ValueError("camera_alone_gate: gates camera_resample's reads; set camera_resample too")
        self.camera_alone_gate = nn.Parameter(torch.tensor(0.5)) if camera_alone_gate else None
        if camera_dense < 0:
            raise ValueError(f"camera_dense: expected a weight >= 0, got {camera_dense}")
        self.camera_dense = camera_dense
        if camera_fallback and (not camera_dense or class_loss != "focal"):
            raise ValueError(
                f"camera_fallback: needs camera_dense > 0 and class_loss: focal, got camera_dense={camera_dense}, "
                f"class_loss={class_loss!r}"
            )
        self.camera_fallback = camera_fallback
        self.dense_head: nn.Module | None = None
        if camera_dense:
            if CAMERA not in self.model.tokenizers or not hasattr(self.model.tokenizers[CAMERA], "patch_size"):
                raise ValueError("camera_dense: needs a camera tokenizer with a patch_size (ImagePatchTokenizer)")
            # (objectness logit, x / 10 m, y / 10 m); with camera_fallback (C class logits, the box's 6 terms)
            self.dense_head = nn.Linear(dim, num_classes + 6 if camera_fallback else 3)
            nn.init.constant_(self.dense_head.bias[: num_classes if camera_fallback else 1], -math.log(99.0))
        if class_loss == "focal":  # RetinaNet's prior: every class starts at p = 0.01
            nn.init.constant_(self.class_head.bias, -math.log(99.0))
        weight = torch.ones(num_classes + 1)
        weight[-1] = eos_coef
        self.register_buffer("ce_weight", weight, persistent=False)
        self.accumulator = DetectionAccumulator(num_classes)
        self.sensors: SensorSet = self.eval_sensors[0]  # what ``forward`` uses outside training

    # ------------------------------------------------------------------ the model
    def model_inputs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The batch's ``inputs`` this model has tokenizers for."""
        return {k: v for k, v in batch["inputs"].items() if k in self.model.tokenizers}

    def _dropped(self, batch: int, device: torch.device, sensors: SensorSet | None) -> dict[str, Tensor]:
        """{sensor: (B,) bool, True where its tokens are masked out}."""
        if sensors is not None:
            return {s: torch.full((batch,), sensors not in ("both", s), device=device) for s in (CAMERA, RADAR)}
        u = torch.rand(batch, device=device)
        p_camera, p_radar = self.modality_dropout[CAMERA], self.modality_dropout[RADAR]
        return {CAMERA: u < p_camera, RADAR: (u >= p_camera) & (u < p_camera + p_radar)}

    def forward(self, inputs: Mapping[str, Any], sensors: SensorSet | None = None) -> dict[str, Any]:
        """Inputs -> {"logits": (B, Q, C + 1), "boxes": (B, Q, 6), "aux": [(logits, boxes)] of earlier layers}.

        ``sensors``: which sensors the model may see (``both`` / ``camera`` / ``radar``); None while training draws
        modality dropout per sample, and outside training uses ``self.sensors``. With ``camera_dense`` and a camera
        input, also "dense": (B, N_camera, 3) per-patch (logit, x, y) ((B, N_camera, C + 6) with ``camera_fallback``)
        and "camera_seen": (B,) bool, False where the camera was masked out. With ``camera_fallback``, outside
        training and without the radar, "logits" and "boxes" are the heat map's peaks (``heat_peaks``) and the
        queries' own are kept as "query_logits" and "query_boxes".
        """
        if sensors is None and not self.training:
            sensors = self.sensors
        tokens, spans = self.model.tokenize(inputs)
        q = spans[QUERIES]
        if self.query_pos is not None:
            x = tokens.x.clone()
            x[:, q] = x[:, q] + self.query_pos(reference_features(self.reference)).to(x.dtype)
            tokens = tokens.replace(x=x)
        if self.local_queries:
            cam = self.model.tokenizers[CAMERA] if CAMERA in self.model.tokenizers else None
            qpos = query_positions(self.reference.detach(), getattr(cam, "patch_size", 8))  # (Q, 4)
            pos = tokens.pos.new_zeros(*tokens.pos.shape[:2], max(4, tokens.pos.shape[-1]))
            pos[..., : tokens.pos.shape[-1]] = tokens.pos
            pos[:, q, :4] = qpos.to(pos.dtype)
            is_global = tokens.is_global.clone()
            is_global[:, q] = False
            tokens = tokens.replace(pos=pos, is_global=is_global)
        drop = self._dropped(tokens.batch_size, tokens.x.device, sensors)
        if self.camera_sampling is not None and CAMERA in spans:
            features = self._camera_features(tokens.x[:, spans[CAMERA]], inputs[CAMERA].shape[-2:])  # (B, D, h, w)
            seen = self.camera_sampling(sample_image(features, reference_pixels(self.reference.detach())))
            seen = seen * (~drop[CAMERA]).to(seen.dtype)[:, None, None]  # a dropped camera shows nothing
            x = tokens.x.clone()
            x[:, q] = x[:, q] + seen.to(x.dtype)
            tokens = tokens.replace(x=x)
        pad = tokens.pad.clone()
        for name, dropped in drop.items():
            if name in spans:
                pad[:, spans[name]] &= ~dropped[:, None]
        hidden: list[Tensor] = []
        hooks = []
        blocks = self.model.trunk.blocks
        if self.aux_loss and self.training:
            hooks = [b.register_forward_hook(lambda _m, _i, out: hidden.append(out)) for b in list(blocks)[:-1]]
        if self.camera_resample is not None and CAMERA in spans:
            look = self._resample_hook(q, spans[CAMERA], inputs[CAMERA].shape[-2:], ~drop[CAMERA], drop[RADAR])
            hooks += [blocks[i].register_forward_pre_hook(look) for i in self.camera_resample_layers]
        try:
            mixed = self.model.mix(tokens.replace(pad=pad))
        finally:
            for h in hooks:
                h.remove()
        logits, boxes = self._heads(mixed.x[:, q])
        aux = [self._heads(self.model.trunk.norm(h[:, q])) for h in hidden]
        out = {"logits": logits, "boxes": boxes, "aux": aux}
        if self.dense_head is not None and CAMERA in spans:
            out["dense"] = self.dense_head(mixed.x[:, spans[CAMERA]])  # (B, N_camera, 3 or C + 6)
            out["camera_seen"] = ~drop[CAMERA]  # (B,)
            if self.camera_fallback and not self.training and (sensors == CAMERA or RADAR not in spans):
                patch, c = self.model.tokenizers[CAMERA].patch_size, self.num_classes
                grid = (inputs[CAMERA].shape[-2] // patch, inputs[CAMERA].shape[-1] // patch)
                out["query_logits"], out["query_boxes"] = logits, boxes
                out["logits"], out["boxes"] = heat_peaks(out["dense"][..., :c], out["dense"][..., c:], grid,
                                                         self.num_queries)  # fmt: skip
        return out

    def _resample_hook(
        self, q: slice, cam: slice, image_hw: torch.Size, seen: Tensor, alone: Tensor
    ) -> Callable[..., Any]:
        """A forward pre-hook for a trunk block: ``camera_resample``'s read of the camera at each query's current
        centre, added to the queries' rows of the block's input x (B, N, D); ``seen`` (B,) False where the camera
        is masked out (those samples read nothing); ``alone`` (B,) True where the radar is (``camera_alone_gate``)."""

        def hook(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            x = args[0]
            with torch.no_grad():
                centre = self._heads(self.model.trunk.norm(x[:, q]))[1][..., :2]  # (B, Q, 2) box units
            patch = self.model.tokenizers[CAMERA].patch_size
            features = rearrange(x[:, cam], "b (h w) d -> b d h w", h=image_hw[0] // patch)  # the trunk's, (B, D, h, w)
            read = self.camera_resample(sample_image(features, reference_pixels(centre.float())))  # (B, Q, D)
            gate = self.camera_gate.tanh().expand(x.shape[0])  # (B,)
            if self.camera_alone_gate is not None:
                gate = torch.where(alone, self.camera_alone_gate.tanh(), gate)
            read = read * (gate * seen.to(read.dtype))[:, None, None]
            x = x.clone()
            x[:, q] = x[:, q] + read.to(x.dtype)
            return (x, *args[1:])

        return hook

    def _camera_features(self, x: Tensor, image_hw: torch.Size) -> Tensor:
        """The camera tokens' x (B, h*w, D) -> (B, D, h, w) the tokenizer's feature map (its position encoding taken
        back off: the same map as ``feature_map``, without running the stem a second time)."""
        cam = self.model.tokenizers[CAMERA]
        h, w = image_hw[0] // cam.patch_size, image_hw[1] // cam.patch_size
        pos = cam.position(h, w, x.device)
        return rearrange(x if pos is None else x - pos.to(x.dtype), "b (h w) d -> b d h w", h=h, w=w)

    def _heads(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, Q, D) query outputs -> class logits (B, Q, C + 1), boxes (B, Q, 6): centre = the query's reference
        point + an offset, a unit (sin, cos)."""
        reg = self.box_head(x)
        yaw = F.normalize(reg[..., 4:], dim=-1, eps=1e-6)
        centre = self.reference.to(reg.dtype) + reg[..., :2]
        return self.class_head(x), torch.cat([centre, reg[..., 2:4], yaw], dim=-1)

    # ------------------------------------------------------------------ the set loss
    def set_loss(self, logits: Tensor, boxes: Tensor, targets: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(class loss over all queries: cross-entropy, or focal loss per ground-truth object; L1 over matched boxes
        per ground-truth object)."""
        b, q, _ = logits.shape
        target_class = torch.full((b, q), self.num_classes, dtype=torch.long, device=logits.device)
        enc = encode_boxes(targets["box"].float())  # (B, O, 6)
        k = 2 if self.match_on == "centre" else 6
        pairs = hungarian_match(
            logits, boxes[..., :k], targets["class"], enc[..., :k], targets["mask"], self.class_weight,
            self.l1_weight, self.class_loss,
        )  # fmt: skip
        batch_q = torch.cat([torch.full((len(q),), i) for i, (q, _) in enumerate(pairs)]).to(logits.device)
        query = torch.from_numpy(np.concatenate([q for q, _ in pairs])).to(logits.device)
        slot = torch.from_numpy(np.concatenate([g for _, g in pairs])).to(logits.device)
        target_class[batch_q, query] = targets["class"][batch_q, slot]
        num = global_count(targets["mask"].sum()).to(logits.device)  # the global batch's objects (omni.ranks)
        if self.class_loss == "focal":
            one_hot = F.one_hot(target_class, self.num_classes + 1)[..., : self.num_classes]  # no object: all 0
            ce = sigmoid_focal_loss(logits, one_hot) / num
        else:  # torch's weighted mean, with the weights summed over the global batch
            flat, classes = rearrange(logits, "b q c -> (b q) c"), target_class.flatten()
            weights = global_count(self.ce_weight[classes].sum(), minimum=1e-12).to(logits.device)
            ce = F.cross_entropy(flat, classes, weight=self.ce_weight, reduction="sum") / weights
        l1 = ((boxes[batch_q, query] - enc[batch_q, slot]).abs() * self.box_weights).sum() / num
        return ce, l1

    def dense_loss(self, dense: Tensor, seen: Tensor, targets: Mapping[str, Tensor]) -> Tensor:
        """``camera_dense``'s loss: dense (B, N, 3) per-patch (logit, x, y) outputs, seen (B,) bool (samples whose
        camera was not dropped) -> focal loss of the ground-point heat map + L1 of (x, y) where it is 1, per
        object. See ``ground_point_patches``. With ``camera_fallback``, dense (B, N, C + 6): the focal loss of one
        heat map per class (a patch's class is its nearest object's) + L1 of the whole box with ``box_weights``."""
        cam = self.model.tokenizers[CAMERA]
        patch = ground_point_patches(targets["box"].float(), targets["mask"] & seen[:, None], cam.patch_size)
        hit = F.one_hot(patch.clamp(min=0), dense.shape[1]).bool() & (patch >= 0)[..., None]  # (B, O, N)
        heat = hit.any(1)  # (B, N)
        rng = targets["box"][..., :2].float().norm(dim=-1)  # (B, O)
        nearest = torch.where(hit, -rng[..., None], -math.inf).argmax(1)  # (B, N): the nearest object in a patch
        box = torch.gather(encode_boxes(targets["box"].float()), 1, nearest[..., None].expand(-1, -1, 6))  # (B, N, 6)
        num = global_count(heat.sum()).to(dense.device)  # the global batch's heat-map cells (omni.ranks)
        if self.camera_fallback:  # a heat map per class and the nearest object's whole box
            c = self.num_classes
            cls = torch.gather(targets["class"].clamp(min=0), 1, nearest)  # (B, N)
            target = F.one_hot(cls, c) * heat[..., None]  # (B, N, C)
            focal = sigmoid_focal_loss(dense[..., :c][seen], target[seen]) / num
            err = (heat_boxes(dense[..., c:].float()) - box).abs() * self.box_weights
            return focal + (err.sum(-1) * heat).sum() / num
        focal = sigmoid_focal_loss(dense[..., 0][seen], heat[seen].float()) / num  # dropped cameras: no loss
        l1 = ((dense[..., 1:].float() - box[..., :2]).abs().sum(-1) * heat).sum() / num
        return focal + l1

    def loss(self, outputs: dict[str, Any], batch: Mapping[str, Any], stage: Stage) -> dict[str, Tensor]:
        ce, l1 = self.set_loss(outputs["logits"], outputs["boxes"], batch["targets"])
        total = self.class_weight * ce + self.l1_weight * l1
        for logits, boxes in outputs["aux"]:
            a_ce, a_l1 = self.set_loss(logits, boxes, batch["targets"])
            total = total + self.class_weight * a_ce + self.l1_weight * a_l1
        out = {"loss": total, "ce": ce, "l1": l1}
        if "dense" in outputs:
            out["dense"] = self.dense_loss(outputs["dense"], outputs["camera_seen"], batch["targets"])
            out["loss"] = total + self.camera_dense * out["dense"]
        return out

    # ------------------------------------------------------------------ evaluation per sensor set and condition
    def radar_warmup_steps(self) -> int:
        """How many of the first training steps see the radar alone (``radar_warmup`` resolved; 0 without a
        trainer)."""
        if not self.radar_warmup:
            return 0
        if self.radar_warmup >= 1:
            return int(self.radar_warmup)
        trainer = self._trainer
        if trainer is None:
            return 0
        if self._warmup_for is not trainer:  # estimated_stepping_batches is not free: once per trainer
            self._warmup_for = trainer
            self._warmup_steps = int(self.radar_warmup * max(1, int(trainer.estimated_stepping_batches)))
        return self._warmup_steps

    def step(self, batch: Any, stage: Stage) -> Tensor:
        inputs = self.model_inputs(batch)
        if stage == "train":
            if self.global_step < self.radar_warmup_steps():  # radar alone: the camera's input is left out
                inputs = {k: v for k, v in inputs.items() if k != CAMERA}
                return self.finish_step(inputs, self(inputs, sensors=RADAR), batch, stage)
            return self.finish_step(inputs, self(inputs), batch, stage)
        first = None
        for sensors in self.eval_sensors:
            # A sensor the set lacks is left out rather than masked: the same outputs (a test), fewer tokens to mix
            seen = {k: v for k, v in inputs.items() if sensors == "both" or k not in (CAMERA, RADAR) or k == sensors}
            outputs = self(seen, sensors=sensors)
            if first is None:
                first = self.loss(outputs, batch, stage)
            self._accumulate(sensors, outputs, batch)
        assert first is not None
        size = self.batch_size_of(inputs)
        for name, value in first.items():
            self.log(f"{stage}/{name}", value, on_epoch=True, prog_bar=name == "loss", batch_size=size, sync_dist=True)
        return first["loss"]

    def detections(self, outputs: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Per query: score (B, Q) and class (B, Q) of the best real class, box (B, Q, 5) in metres."""
        logits = outputs["logits"].float()
        probs = logits.sigmoid() if self.class_loss == "focal" else logits.softmax(-1)[..., : self.num_classes]
        score, cls = probs.max(-1)
        return score, cls, decode_boxes(outputs["boxes"].float())

    def _accumulate(self, sensors: str, outputs: Mapping[str, Tensor], batch: Mapping[str, Any]) -> None:
        score, cls, box = (t.cpu().numpy() for t in self.detections(outputs))
        t = batch["targets"]
        mask, gt_cls, gt_box = t["mask"].cpu().numpy(), t["class"].cpu().numpy(), t["box"].float().cpu().numpy()
        for i, cond in enumerate(batch["condition"].tolist()):
            pred = {"class": cls[i], "score": score[i], "box": box[i]}
            gt = {"class": gt_cls[i][mask[i]], "box": gt_box[i][mask[i]]}
            self.accumulator.add(sensors, pred, gt)
            self.accumulator.add(f"{sensors}/{CONDITIONS[cond]}", pred, gt)

    def _log_detection(self, stage: Stage) -> None:
        acc = self.accumulator
        gathered = all_ranks((acc.preds, acc.gts))
        if len(gathered) > 1:
            acc.reset()
            for preds, gts in gathered:
                for key in preds:
                    for p, g in zip(preds[key], gts[key], strict=True):
                        acc.add(key, p, g)
        for key in acc.keys():
            for name, value in acc.compute(key).items():
                if not name.startswith("AP_") and not math.isnan(value):
                    self.log(f"{stage}/{key}/{name}", value, sync_dist=False)
        main = acc.compute(self.eval_sensors[0]) if acc.keys() else {}
        if "NDS" in main:
            self.log(f"{stage}/NDS", main["NDS"], prog_bar=True)
            self.log(f"{stage}/mAP", main["mAP"], prog_bar=True)
        acc.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_detection("val")

    def on_test_epoch_end(self) -> None:
        self._log_detection("test")

    def predict(self, outputs: dict[str, Any], batch: Any) -> dict[str, Tensor]:
        score, cls, box = self.detections(outputs)
        return {"score": score, "class": cls, "box": box}
