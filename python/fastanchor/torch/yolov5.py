"""Learned anchors for YOLOv5 models (the ``yolov5`` package, 7.0.x), without editing its source.

>>> from yolov5.models.yolo import Model
>>> from yolov5.utils.loss import ComputeLoss
>>> from fastanchor.torch.yolov5 import YOLOv5Anchors
>>> model = Model("yolov5n.yaml", nc=80); model.hyp = hyp
>>> anchors = YOLOv5Anchors(model)                    # starts from the model's anchors
>>> compute_loss = anchors.wrap_loss(ComputeLoss(model))
>>> optimizer.add_param_group({"params": anchors.parameters(), "weight_decay": 0.0})
>>> loss, items = compute_loss(model(imgs), targets)   # as YOLOv5's ComputeLoss
>>> loss.backward(); optimizer.step(); anchors.advance()
>>> anchors.write_yaml("yolov5n-learned.yaml", template="yolov5n.yaml")

What it does to the model: a forward pre-hook on the ``Detect`` head copies the current learned
anchors into its ``anchors`` buffer (grid units, so ``ModelEMA`` and checkpoints carry them) and
drops its cached ``anchor_grid`` when they changed, so inference always uses the current anchors.
The wrapped loss gives YOLOv5's own box loss differentiable anchors (its hard matching is the
method's hard assignment) and adds the warm-up terms computed from the batch's targets and the network's
predicted offsets at their cells.
"""

from __future__ import annotations

import math
import weakref
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..export import write_anchors
from ._anchors import LearnedAnchors, ShiftFreeOutputs, WarmupSchedule, _offset_channels

__all__ = ["YOLOv5Anchors", "find_detect"]


def find_detect(model: nn.Module) -> nn.Module:
    """The model's ``Detect`` (or ``Segment``) head: the last module with ``anchors``, ``stride``
    and ``anchor_grid`` (a ``DetectionModel``'s ``model[-1]``)."""
    inner = getattr(model, "module", model)  # DataParallel / DDP
    found = None
    for m in inner.modules():
        if hasattr(m, "anchor_grid") and isinstance(getattr(m, "anchors", None), torch.Tensor) and hasattr(m, "na"):
            found = m
    if found is None:
        raise ValueError(f"no YOLOv5 Detect head (a module with anchors, anchor_grid and na) in {type(model).__name__}")
    if found.stride is None:
        raise ValueError("the Detect head has no strides yet: build the model through yolov5's Model/DetectionModel")
    return found


class _SyncHook:
    """Forward pre-hook of the Detect head; holds its adapter weakly, and pickles (checkpoints) and
    deep-copies (ModelEMA) as an inert or shared hook, never as a copy of the adapter."""

    def __init__(self, adapter: YOLOv5Anchors) -> None:
        self._ref: Callable[[], Optional[YOLOv5Anchors]] = weakref.ref(adapter)

    def __call__(self, module: nn.Module, args: Any) -> None:
        adapter = self._ref()
        if adapter is not None:
            adapter.sync(module)

    def __deepcopy__(self, memo: dict) -> _SyncHook:
        return self

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self._ref = lambda: None


class YOLOv5Anchors(nn.Module):
    """A YOLOv5 model's anchors as learnable log-space parameters.

    Parameters
    ----------
    model : yolov5 DetectionModel
        A model built by yolov5 (its ``Detect`` head has strides).
    init : optional
        Starting anchors in pixels, (nl * na, 2) in the model's level order, or anything
        :class:`~fastanchor.torch.LearnedAnchors` takes. Default: the model's current anchors.
    schedule : WarmupSchedule, optional
        The warm-ups (default ``WarmupSchedule()``).
    warmup_weight : float, optional
        Multiplies the warm-up terms, which are added as ``warmup_weight * batch_size * terms``
        like YOLOv5's own ``lbox * hyp["box"] * batch_size``. Default: ``model.hyp["box"]`` if the
        model has hyperparameters, else 0.05.
    shift_free_norm : bool
        Put batch normalization without shift (:class:`~fastanchor.torch.ShiftFreeOutputs`, one
        :class:`~fastanchor.torch.ShiftFreeNorm` per level over its anchors' ``t_w, t_h``
        channels) on the Detect head's outputs, so that the anchors carry the mean offset. The
        norms become part of the model (its ``parameters()``, checkpoints and ``ModelEMA``
        copies): switch this on before building the optimizer. It changes a trained head's
        outputs, so it is meant for training from scratch.
    train_offsets : bool
        The soft-assignment warm-up term ``(D_ij + a_i - g_j)^2`` takes the network's predicted
        offsets ``D_ij`` at each target's cell, for every anchor. False (default): they are
        detached, so the term moves the anchors only and the network learns from YOLOv5's own
        loss alone. True: the term also trains those offsets, as in the method, where the soft
        assignment replaces the detector's own during the warm-up (here it is added to it).
    **kwargs
        Passed to :class:`~fastanchor.torch.LearnedAnchors` (``k``, ``wh``, ``jitter``, ``seed``).

    The parameters are not registered in the model: add them to the optimizer in their own group
    without weight decay (YOLOv5's groups would decay them towards 1 pixel).
    """

    def __init__(
        self,
        model: nn.Module,
        init: Any = None,
        *,
        schedule: Optional[WarmupSchedule] = None,
        warmup_weight: Optional[float] = None,
        shift_free_norm: bool = False,
        train_offsets: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        detect = find_detect(model)
        self.nl, self.na = int(detect.nl), int(detect.na)
        if shift_free_norm:
            for i, layer in enumerate(detect.m):
                if not isinstance(layer, ShiftFreeOutputs):
                    ref = next(layer.parameters())
                    detect.m[i] = ShiftFreeOutputs(layer, _offset_channels(self.na, int(detect.no), 2)).to(
                        device=ref.device, dtype=ref.dtype
                    )
        stride = detect.stride.detach().double().cpu()
        current = (detect.anchors.detach().double().cpu() * stride.view(-1, 1, 1)).reshape(-1, 2).numpy()
        self.anchors = LearnedAnchors(
            current if init is None else init, strides=stride.tolist(), schedule=schedule, **kwargs
        )
        if self.anchors.num_anchors != self.nl * self.na:
            raise ValueError(
                f"the model has {self.nl} levels x {self.na} anchors but {self.anchors.num_anchors} "
                f"initial anchors were given"
            )
        self.register_buffer("stride", detect.stride.detach().float().clone())
        hyp = getattr(model, "hyp", None)
        self.warmup_weight = float(
            warmup_weight
            if warmup_weight is not None
            else (hyp["box"] if isinstance(hyp, dict) and "box" in hyp else 0.05)
        )
        self.train_offsets = bool(train_offsets)
        self._detect_ref = weakref.ref(detect)
        self._hook = detect.register_forward_pre_hook(_SyncHook(self))
        self.sync(detect)

    # -- values
    @property
    def schedule(self) -> WarmupSchedule:
        return self.anchors.schedule

    @property
    def step(self) -> int:
        return self.anchors.step

    def advance(self, steps: int = 1) -> None:
        """Count optimizer steps on the warm-up schedule."""
        self.anchors.advance(steps)

    def pixels(self) -> np.ndarray:
        """The current anchors in pixels, (nl * na, 2), in the model's level order."""
        return self.anchors.numpy()

    def levels(self) -> List[np.ndarray]:
        """The current anchors of each level, in pixels."""
        return self.anchors.levels()

    def grid_anchors(self, scale: float = 1.0) -> torch.Tensor:
        """(nl, na, 2) anchors in grid units (pixels / stride), as ``Detect.anchors`` holds them;
        differentiable, with the gradient to the parameters multiplied by ``scale``."""
        a = self.anchors.scaled(scale).view(self.nl, self.na, 2)
        return a / self.stride.to(a).view(-1, 1, 1)

    # -- keeping the model in sync
    @torch.no_grad()
    def sync(self, detect: Optional[nn.Module] = None) -> None:
        """Copy the current anchors into the Detect head's ``anchors`` buffer (and drop its cached
        grids if they changed). Runs before every forward of the head; call it after loading
        parameters into this module if you run the model without a forward in between."""
        detect = detect if detect is not None else self._detect_ref()
        if detect is None:
            return
        new = self.grid_anchors().to(detect.anchors.device, detect.anchors.dtype)
        if new.shape != detect.anchors.shape:
            raise ValueError(
                f"the Detect head's anchors have shape {tuple(detect.anchors.shape)}, the learned "
                f"ones {tuple(new.shape)}"
            )
        if not torch.equal(new, detect.anchors):
            detect.anchors.copy_(new)
            for i in range(len(detect.anchor_grid)):
                detect.grid[i] = torch.empty(0, device=detect.anchors.device)
                detect.anchor_grid[i] = torch.empty(0, device=detect.anchors.device)

    def remove(self) -> None:
        """Remove the hook from the model (its anchors buffer keeps the last learned values)."""
        self._hook.remove()

    # -- the loss
    def target_wh(self, targets: torch.Tensor, img_hw: Sequence[int]) -> torch.Tensor:
        """The boxes' (w, h) in pixels from YOLOv5 targets ``(image, class, x, y, w, h)`` (normalized)."""
        return self._target_rows(targets, img_hw)[0]

    def _target_rows(self, targets: torch.Tensor, img_hw: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """(w, h) in pixels of the targets with positive sides, and those rows' indices."""
        if targets.dim() != 2 or targets.shape[1] < 6:
            raise ValueError(f"targets must be (n, 6) rows (image, class, x, y, w, h), got {tuple(targets.shape)}")
        h, w = float(img_hw[0]), float(img_hw[1])
        wh = targets[:, 4:6].detach() * targets.new_tensor([w, h])
        keep = (wh > 0).all(1).nonzero()[:, 0]
        return wh[keep], keep

    def target_offsets(
        self, preds: Sequence[torch.Tensor], targets: torch.Tensor, *, detach: bool = True
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """The targets' sizes and the network's predicted offsets for them, for the warm-up terms.

        Parameters
        ----------
        preds : sequence of Tensor (bs, na, ny, nx, no)
            The Detect head's raw training outputs, one per level (what ``ComputeLoss`` takes).
        targets : Tensor (n, 6)
            YOLOv5 targets ``(image, class, x, y, w, h)``, normalized to the input image.
        detach : bool
            Detach the offsets from the network (False: differentiable, so a loss on them trains
            the network's outputs too).

        Returns
        -------
        wh : Tensor (N, 2)
            The targets with positive sides, in pixels of the input image.
        delta : Tensor (N, nl * na, 2)
            For each target and each anchor (the model's level order), the offset in log
            space that the network predicts at the target's cell on that anchor's level:
            YOLOv5 regresses ``w = (2 sigmoid(t_w))^2 * a_w``, so ``D = 2 log(2 sigmoid(t))``. The
            cell is the one YOLOv5's ``build_targets`` gives the box centre (``floor(x * nx)``,
            clamped to the grid).
        """
        if len(preds) != self.nl:
            raise ValueError(f"expected {self.nl} prediction levels, got {len(preds)}")
        p0 = preds[0]
        stride0 = float(self.stride[0])
        wh, keep = self._target_rows(targets, (int(p0.shape[2] * stride0), int(p0.shape[3] * stride0)))
        rows = targets.detach()[keep]
        b = rows[:, 0].long()
        out = []
        with torch.set_grad_enabled(torch.is_grad_enabled() and not detach):
            for p in preds:
                if p.dim() != 5 or p.shape[1] != self.na or p.shape[4] < 4:
                    raise ValueError(f"each prediction level must be (bs, {self.na}, ny, nx, no), got {tuple(p.shape)}")
                ny, nx = int(p.shape[2]), int(p.shape[3])
                gi = (rows[:, 2] * nx).long().clamp_(0, nx - 1)
                gj = (rows[:, 3] * ny).long().clamp_(0, ny - 1)
                t = p[b, :, gj, gi, 2:4]  # (N, na, 2)
                out.append(2.0 * (math.log(2.0) + nn.functional.logsigmoid(t)))
        delta = torch.cat(out, 1) if out else wh.new_zeros((0, self.nl * self.na, 2))
        return wh, delta

    def wrap_loss(self, compute_loss: Callable) -> Callable:
        """YOLOv5's ``ComputeLoss`` with learned anchors: call it as the original,
        ``loss, items = wrapped(preds, targets)``; ``items`` keeps YOLOv5's three entries."""
        return _LearnedLoss(self, compute_loss)

    def write_yaml(self, path: str, template: Optional[str] = None, *, decimals: int = 0) -> str:
        """Write the current anchors (pixels, per level) into a model yaml (a copy of ``template``
        with only its ``anchors:`` block replaced) with :func:`fastanchor.export.write_anchors`."""
        return write_anchors(
            path,
            self.levels(),
            self.anchors.strides or (),
            template=template,
            decimals=decimals,
            header="anchors learned with fastanchor.torch",
        )

    def update_model_yaml(self, model: nn.Module, decimals: int = 0) -> None:
        """Set ``model.yaml["anchors"]`` (saved in checkpoints) to the current anchors, rounded."""
        lv = [np.round(level, decimals) for level in self.levels()]
        model.yaml["anchors"] = [[float(v) if decimals else int(v) for v in level.reshape(-1)] for level in lv]

    def extra_repr(self) -> str:
        return f"levels={self.nl}, anchors_per_level={self.na}, warmup_weight={self.warmup_weight}"

    @staticmethod
    def shift_free_norms(model: nn.Module) -> List[nn.Module]:
        """The :class:`~fastanchor.torch.ShiftFreeNorm` layers on the model's Detect outputs (one per
        level; empty when ``shift_free_norm`` was off)."""
        return [m.norm for m in find_detect(model).m if isinstance(m, ShiftFreeOutputs)]


class _LearnedLoss:
    """YOLOv5's ComputeLoss with differentiable anchors and the warm-up terms added."""

    def __init__(self, adapter: YOLOv5Anchors, compute_loss: Callable) -> None:
        if not hasattr(compute_loss, "anchors") or not hasattr(compute_loss, "build_targets"):
            raise TypeError("wrap_loss expects a yolov5.utils.loss.ComputeLoss")
        self.adapter = adapter
        self.compute_loss = compute_loss
        self.last_warmup = 0.0

    def __call__(self, preds: Sequence[torch.Tensor], targets: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        ad = self.adapter
        original = self.compute_loss.anchors
        self.compute_loss.anchors = ad.grid_anchors(ad.anchors.hard_gradient_scale()).to(original)
        try:
            loss, items = self.compute_loss(preds, targets)
        finally:
            self.compute_loss.anchors = original
        p0 = preds[0]
        if ad.anchors.schedule.soft_weight(ad.step) > 0:
            wh, delta = ad.target_offsets(preds, targets, detach=not ad.train_offsets)
            warm = ad.anchors.warmup_loss(wh, delta=delta)
        else:  # the clustering term uses the anchors only
            img_hw = (int(p0.shape[2] * float(ad.stride[0])), int(p0.shape[3] * float(ad.stride[0])))
            warm = ad.anchors.warmup_loss(ad.target_wh(targets, img_hw))
        self.last_warmup = float(warm.detach())
        return loss + (ad.warmup_weight * p0.shape[0]) * warm.to(loss), items
