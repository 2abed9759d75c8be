"""Learned anchors for torchvision's detection models, without editing torchvision's source.

Faster R-CNN and RetinaNet take their anchors from an ``AnchorGenerator``, SSD and SSDlite from a
``DefaultBoxGenerator``. :func:`learn_anchors` swaps the model's generator for a subclass whose
anchor sizes are log-space parameters (:class:`LearnableAnchorGenerator`,
:class:`LearnableDefaultBoxGenerator`), built every forward from the parameters:

>>> from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn
>>> from fastanchor.torch.torchvision import learn_anchors
>>> model = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=3)
>>> gen = learn_anchors(model)
>>> others = [p for n, p in model.named_parameters() if not n.endswith("log_wh")]
>>> optimizer = torch.optim.SGD([{"params": others, "weight_decay": 1e-4},
...                              {"params": gen.parameters(), "weight_decay": 0.0}], lr=0.01)
>>> losses = model(images, targets)
>>> loss = sum(losses.values()) + gen.warmup_loss()   # warm-up terms from this batch's targets and offsets
>>> loss.backward(); optimizer.step(); gen.advance()

Where the gradient comes from: torchvision's box coder regresses ``log(g_w / a_w)`` against the
anchors it is given and never detaches them, so the RPN's (Faster R-CNN), the head's
(RetinaNet) or SSD's box loss reaches the parameters exactly as in the method. One path is cut:
Faster R-CNN decodes its proposals from the anchors (with detached offsets), and the second
stage's regression targets would then pull the anchors too, a path the original Faster R-CNN
does not have (proposals are constants there). :func:`learn_anchors` detaches the RPN's
proposals with a forward hook on the RPN (``detach_proposals=True``).
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator

from ._anchors import LearnedAnchors, ShiftFreeOutputs, WarmupSchedule, _normalize_channels, _offset_channels, _Wrapper

__all__ = ["LearnableAnchorGenerator", "LearnableDefaultBoxGenerator", "learn_anchors"]


class _Learnable:
    """What both learnable generators share: the parameters, the level split, the warm-up terms."""

    learned: LearnedAnchors
    counts: List[int]
    _gt_wh: Optional[torch.Tensor]
    _gt: Optional[Tuple[torch.Tensor, torch.Tensor]]  # (image index, centre x y) per box, pixels
    _grid: Optional[Tuple[List[Tuple[int, int]], Tuple[int, int]]]  # per-level (H, W), image tensor (H, W)
    _reg: Optional[torch.Tensor]  # the head's regression output, (B, total, 4), detached
    _coder_weights: Tuple[float, float]  # the box coder's weights of dw, dh

    def _setup(
        self, initial: np.ndarray, counts: List[int], init: Any, schedule: Optional[WarmupSchedule], **kwargs: Any
    ) -> None:
        self.learned = LearnedAnchors(initial if init is None else init, schedule=schedule, **kwargs)
        if self.learned.num_anchors != sum(counts):
            raise ValueError(
                f"the generator has {sum(counts)} anchors ({counts} per level) but "
                f"{self.learned.num_anchors} initial anchors were given"
            )
        self.counts = counts
        self._gt_wh = None
        self._gt = None
        self._grid = None
        self._reg = None
        self._coder_weights = (1.0, 1.0)

    def current(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """(A, 2) sizes, differentiable; the gradient scaled by the schedule's hard share."""
        return self.learned.scaled(self.learned.hard_gradient_scale()).to(dtype=dtype, device=device)

    def numpy(self) -> np.ndarray:
        """The current sizes (A, 2) float64, levels one after the other."""
        return self.learned.numpy()

    def levels(self) -> List[np.ndarray]:
        """The current sizes of each level."""
        return list(np.split(self.numpy(), np.cumsum(self.counts)[:-1]))

    def advance(self, steps: int = 1) -> None:
        """Count optimizer steps on the warm-up schedule."""
        self.learned.advance(steps)

    def set_targets_wh(self, wh: Optional[torch.Tensor]) -> None:
        """The (N, 2) ground-truth sizes (in the anchors' units) the warm-up terms use."""
        self._gt_wh = wh
        self._gt = None

    def _cell(self, centre: torch.Tensor, level: int, grid: Tuple[int, int], image: Tuple[int, int]) -> torch.Tensor:
        """(N, 2) integer (x, y) of the anchor location nearest each centre (pixels of the image tensor)."""
        raise NotImplementedError

    def offsets(self) -> Optional[torch.Tensor]:
        """The network's predicted log-space offsets ``(D_w, D_h)`` (N, A, 2) for the ground truth
        of the last training forward: for each box and each anchor (levels one after the other), the
        head's regression output at the anchor location nearest the box centre on that anchor's
        level, divided by the box coder's weights (the coder regresses ``weight * log(g / a)``).
        Detached unless :func:`learn_anchors` was given ``train_offsets=True``. None when the
        forward recorded no regression output (e.g. in evaluation)."""
        if self._gt is None or self._grid is None or self._reg is None or self._gt_wh is None:
            return None
        image_idx, centre = self._gt
        grids, image = self._grid
        if len(grids) != len(self.counts):
            raise ValueError(
                f"the generator has {len(self.counts)} levels but the forward had {len(grids)} feature maps"
            )
        parts = []
        start = 0
        for level, ((h, w), a) in enumerate(zip(grids, self.counts)):
            xy = self._cell(centre, level, (h, w), image)
            loc = start + (xy[:, 1] * w + xy[:, 0]) * a  # the head's order: level, y, x, anchor
            idx = loc[:, None] + torch.arange(a, device=loc.device)[None, :]
            parts.append(self._reg[image_idx[:, None], idx, 2:4])
            start += h * w * a
        if start != self._reg.shape[1]:
            raise ValueError(f"the head predicted {self._reg.shape[1]} boxes per image, the anchors number {start}")
        weights = self._reg.new_tensor(self._coder_weights)
        return torch.cat(parts, 1) / weights

    def warmup_loss(self, weight: float = 1.0) -> torch.Tensor:
        """``weight`` times the warm-up terms for the ground truth of the last training forward
        (recorded by :func:`learn_anchors`' hooks on the model's transform and head); 0 when there
        is none. The soft-assignment term uses the network's predicted offsets (:meth:`offsets`)."""
        if self._gt_wh is None or self._gt_wh.shape[0] == 0:
            return self.learned.log_wh.sum() * 0.0
        delta = self.offsets() if self.learned.schedule.soft_weight(self.learned.step) > 0 else None
        return weight * self.learned.warmup_loss(self._gt_wh, delta=delta)

    def export(
        self,
        path: str,
        strides: Sequence[float],
        *,
        template: Optional[str] = None,
        decimals: int = 0,
        scale: float = 1.0,
    ) -> str:
        """Write the current sizes (times ``scale``, e.g. the image size for SSD's relative sizes),
        one level per stride, with :func:`fastanchor.export.write_anchors`."""
        from ..export import write_anchors

        lv = [level * scale for level in self.levels()]
        return write_anchors(
            path, lv, strides, template=template, decimals=decimals, header="anchors learned with fastanchor.torch"
        )


class LearnableAnchorGenerator(_Learnable, AnchorGenerator):
    """torchvision's ``AnchorGenerator`` with learnable anchor sizes (pixels of the resized image).

    Parameters
    ----------
    generator : AnchorGenerator
        The generator to replace; its sizes and aspect ratios give the start and the layout.
    init : optional
        Other starting sizes (A, 2), in the generator's anchor order, or anything
        :class:`~fastanchor.torch.LearnedAnchors` takes.
    schedule : WarmupSchedule, optional
        The warm-ups (default ``WarmupSchedule()``).
    **kwargs
        Passed to :class:`~fastanchor.torch.LearnedAnchors`.
    """

    def __init__(
        self, generator: AnchorGenerator, init: Any = None, *, schedule: Optional[WarmupSchedule] = None, **kwargs: Any
    ) -> None:
        if not isinstance(generator, AnchorGenerator):
            raise TypeError(f"expected a torchvision AnchorGenerator, got {type(generator).__name__}")
        AnchorGenerator.__init__(self, generator.sizes, generator.aspect_ratios)
        cells = [c.detach().double().cpu() for c in generator.cell_anchors]
        initial = torch.cat([torch.stack([c[:, 2] - c[:, 0], c[:, 3] - c[:, 1]], 1) for c in cells]).numpy()
        self._setup(initial, [len(c) for c in cells], init, schedule, **kwargs)

    def set_cell_anchors(self, dtype: torch.dtype, device: torch.device) -> None:
        half = self.current(dtype, device) / 2
        self.cell_anchors = list(torch.cat([-half, half], 1).split(self.counts))

    def forward(self, image_list: Any, feature_maps: List[torch.Tensor]) -> List[torch.Tensor]:
        self._grid = ([tuple(f.shape[-2:]) for f in feature_maps], tuple(image_list.tensors.shape[-2:]))
        return AnchorGenerator.forward(self, image_list, feature_maps)

    def _cell(self, centre: torch.Tensor, level: int, grid: Tuple[int, int], image: Tuple[int, int]) -> torch.Tensor:
        # anchors centred on (x * stride_w, y * stride_h), stride = image // grid, as torchvision places them
        h, w = grid
        stride = centre.new_tensor([image[1] // w, image[0] // h])
        xy = torch.floor(centre / stride + 0.5).long()
        return torch.stack([xy[:, 0].clamp(0, w - 1), xy[:, 1].clamp(0, h - 1)], 1)


class LearnableDefaultBoxGenerator(_Learnable, DefaultBoxGenerator):
    """torchvision's ``DefaultBoxGenerator`` (SSD) with learnable default-box sizes (fractions of
    the image side, as SSD's ``_wh_pairs``).

    Parameters are those of :class:`LearnableAnchorGenerator`, for a ``DefaultBoxGenerator``.
    """

    def __init__(
        self,
        generator: DefaultBoxGenerator,
        init: Any = None,
        *,
        schedule: Optional[WarmupSchedule] = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(generator, DefaultBoxGenerator):
            raise TypeError(f"expected a torchvision DefaultBoxGenerator, got {type(generator).__name__}")
        DefaultBoxGenerator.__init__(
            self, generator.aspect_ratios, scales=list(generator.scales), steps=generator.steps, clip=generator.clip
        )
        pairs = [p.detach().double().cpu() for p in generator._wh_pairs]
        self._setup(torch.cat(pairs).numpy(), [len(p) for p in pairs], init, schedule, **kwargs)

    def _grid_default_boxes(
        self, grid_sizes: List[List[int]], image_size: List[int], dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        # on the CPU, as torchvision builds the grid there and moves it to the features' device
        self._wh_pairs = list(self.current(dtype, torch.device("cpu")).split(self.counts))
        return DefaultBoxGenerator._grid_default_boxes(self, grid_sizes, image_size, dtype)

    def forward(self, image_list: Any, feature_maps: List[torch.Tensor]) -> List[torch.Tensor]:
        self._grid = ([tuple(f.shape[-2:]) for f in feature_maps], tuple(image_list.tensors.shape[-2:]))
        return DefaultBoxGenerator.forward(self, image_list, feature_maps)

    def _cell(self, centre: torch.Tensor, level: int, grid: Tuple[int, int], image: Tuple[int, int]) -> torch.Tensor:
        # default boxes centred on ((x + 0.5) / f_x, (y + 0.5) / f_y) of the image, as SSD places them
        h, w = grid
        if self.steps is not None:
            f = centre.new_tensor([image[1] / self.steps[level], image[0] / self.steps[level]])
        else:
            f = centre.new_tensor([float(w), float(h)])
        xy = torch.floor(centre / centre.new_tensor([float(image[1]), float(image[0])]) * f).long()
        return torch.stack([xy[:, 0].clamp(0, w - 1), xy[:, 1].clamp(0, h - 1)], 1)


def _record_targets(gen: _Learnable, relative: bool):
    def hook(module: nn.Module, args: Any, output: Any) -> None:
        images, targets = output
        if not module.training or targets is None:
            gen.set_targets_wh(None)
            gen._reg = None
            return
        boxes = torch.cat([t["boxes"].detach() for t in targets]) if targets else torch.zeros(0, 4)
        image_idx = torch.cat([torch.full((len(t["boxes"]),), i, dtype=torch.long) for i, t in enumerate(targets)])
        wh = boxes[:, 2:] - boxes[:, :2]
        keep = (wh > 0).all(1)
        if relative:
            h, w = images.tensors.shape[-2:]
            wh = wh / wh.new_tensor([float(w), float(h)])
        gen.set_targets_wh(wh[keep])
        gen._gt = (image_idx[keep.cpu()].to(boxes.device), ((boxes[:, :2] + boxes[:, 2:]) / 2)[keep])

    return hook


def _record_regression(gen: _Learnable, keep_graph: bool):
    """A forward hook on the detection head: keeps its box regression output, (B, total, 4) in the
    anchors' order (levels, then y, x, anchor), detached unless ``keep_graph``."""

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        if not module.training:
            gen._reg = None
            return
        if isinstance(output, dict):  # RetinaNet, SSD: already flat
            reg = output["bbox_regression"]
        else:  # the RPN head: per level (B, A * 4, H, W)
            per_level = []
            for r in output[1]:
                b, c, h, w = r.shape
                per_level.append(r.view(b, c // 4, 4, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, 4))
            reg = torch.cat(per_level, 1)
        gen._reg = reg if keep_graph else reg.detach()

    return hook


def _detach_proposals(module: nn.Module, args: Any, output: Any) -> Any:
    boxes, losses = output
    return [b.detach() for b in boxes], losses


class _ShiftFreeRPNHead(_Wrapper):
    """The RPN head with its offset channels normalized over all levels together (its convolutions
    are shared by the levels)."""

    def forward(self, x: List[torch.Tensor]) -> Any:
        logits, regs = self.inner(x)
        return logits, _normalize_channels(self.norm, regs, self.channels, 1)


class _ShiftFreeFlatHead(_Wrapper):
    """RetinaNet's regression head, whose output is (B, positions * A, 4) over all levels: the offset
    channels of each of the A anchors normalized over every position of every level."""

    def __init__(self, inner: nn.Module, anchors: int) -> None:
        super().__init__(inner, _offset_channels(anchors, 4, 2))
        self.anchors = int(anchors)

    def forward(self, x: List[torch.Tensor]) -> torch.Tensor:
        out = self.inner(x)
        b, n, _ = out.shape
        grouped = out.reshape(b, n // self.anchors, self.anchors * 4)
        return _normalize_channels(self.norm, [grouped], self.channels, 2)[0].reshape(b, n, 4)


def _like(module: nn.Module, ref: nn.Module) -> nn.Module:
    p = next(ref.parameters())
    return module.to(device=p.device, dtype=p.dtype)


def _insert_shift_free_norm(owner: nn.Module, gen: _Learnable) -> List[nn.Module]:
    """Put ShiftFreeNorm on the head's (D_w, D_h) outputs; returns the norms."""
    head = owner.head
    if hasattr(head, "bbox_pred") and hasattr(head, "cls_logits"):  # the RPN head, shared by the levels
        a = int(head.bbox_pred.out_channels) // 4
        owner.head = _like(_ShiftFreeRPNHead(head, _offset_channels(a, 4, 2)), head)
        return [owner.head.norm]
    reg = getattr(head, "regression_head", None)
    if reg is not None and hasattr(reg, "bbox_reg"):  # RetinaNet: shared by the levels, same A on each
        a = int(reg.bbox_reg.out_channels) // 4
        if any(c != a for c in gen.counts):
            raise ValueError(
                f"RetinaNet's regression head predicts {a} anchors per location, the generator {gen.counts}"
            )
        head.regression_head = _like(_ShiftFreeFlatHead(reg, a), reg)
        return [head.regression_head.norm]
    if reg is not None and hasattr(reg, "module_list"):  # SSD: one module per level
        if len(reg.module_list) != len(gen.counts):
            raise ValueError(f"SSD's regression head has {len(reg.module_list)} levels, the generator {gen.counts}")
        for i, (m, a) in enumerate(zip(list(reg.module_list), gen.counts)):
            reg.module_list[i] = _like(ShiftFreeOutputs(m, _offset_channels(a, 4, 2)), m)
        return [m.norm for m in reg.module_list]
    raise ValueError(f"shift_free_norm: no known regression head in {type(head).__name__}")


def learn_anchors(
    model: nn.Module,
    init: Any = None,
    *,
    schedule: Optional[WarmupSchedule] = None,
    detach_proposals: bool = True,
    shift_free_norm: bool = False,
    train_offsets: bool = False,
    **kwargs: Any,
) -> _Learnable:
    """Make a torchvision detection model's anchors learnable; returns the new generator.

    Parameters
    ----------
    model : torchvision detection model
        Faster R-CNN (``model.rpn.anchor_generator``), RetinaNet or SSD/SSDlite
        (``model.anchor_generator``); Mask/Keypoint R-CNN work as Faster R-CNN.
    init : optional
        Other starting sizes for the generator (see :class:`LearnableAnchorGenerator`).
    schedule : WarmupSchedule, optional
        The warm-ups (default ``WarmupSchedule()``).
    detach_proposals : bool
        Faster R-CNN only: detach the RPN's proposals (see the module docstring).
    shift_free_norm : bool
        Put batch normalization without shift (:class:`~fastanchor.torch.ShiftFreeNorm`) on the
        predicted ``D_w, D_h`` of the head that regresses the anchors: the RPN head's (Faster
        R-CNN, statistics over all levels, whose convolutions it shares), RetinaNet's regression
        head (likewise) or each level of SSD's. The norms become part of the model: switch this on
        before building the optimizer. It changes a trained head's outputs, so it is meant for
        training from scratch.
    train_offsets : bool
        The soft-assignment warm-up term takes the head's predicted offsets at each box's anchor
        locations. False (default): detached, so the term moves the anchors only. True: it trains
        those predictions too, as in the method (where the soft assignment replaces the
        detector's own during the warm-up; here it is added to it).
    **kwargs
        Passed to :class:`~fastanchor.torch.LearnedAnchors`.

    Returns
    -------
    LearnableAnchorGenerator or LearnableDefaultBoxGenerator
        Installed in the model (so ``model.parameters()`` holds its ``learned.log_wh``). Forward
        hooks on ``model.transform`` and on the head that regresses the anchors (the RPN's head,
        RetinaNet's or SSD's) record each training batch's resized ground truth and the predicted
        offsets for its :meth:`warmup_loss`.
    """
    rpn = getattr(model, "rpn", None)
    owner = rpn if rpn is not None and hasattr(rpn, "anchor_generator") else model
    old = getattr(owner, "anchor_generator", None)
    if isinstance(old, _Learnable):
        raise ValueError("this model's anchors are learnable already")
    if isinstance(old, AnchorGenerator):
        gen: _Learnable = LearnableAnchorGenerator(old, init, schedule=schedule, **kwargs)
    elif isinstance(old, DefaultBoxGenerator):
        gen = LearnableDefaultBoxGenerator(old, init, schedule=schedule, **kwargs)
    else:
        raise ValueError(
            f"{type(model).__name__} has no torchvision AnchorGenerator or DefaultBoxGenerator "
            f"(looked at {'model.rpn' if owner is rpn else 'model'}.anchor_generator)"
        )
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    gen.to(device)
    owner.anchor_generator = gen
    if hasattr(model, "transform"):
        model.transform.register_forward_hook(_record_targets(gen, isinstance(gen, DefaultBoxGenerator)))
    if shift_free_norm:
        _insert_shift_free_norm(owner, gen)
    head = getattr(owner, "head", None)
    coder = getattr(owner, "box_coder", None)
    if head is not None and coder is not None:
        model_weights = tuple(float(v) for v in coder.weights)
        gen._coder_weights = (model_weights[2], model_weights[3])
        head.register_forward_hook(_record_regression(gen, bool(train_offsets)))
    if owner is rpn and detach_proposals:
        rpn.register_forward_hook(_detach_proposals)
    return gen
