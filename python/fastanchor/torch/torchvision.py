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
>>> loss = sum(losses.values()) + gen.warmup_loss()   # warm-up terms from this batch's targets
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

from typing import Any, List, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator

from ._anchors import LearnedAnchors, WarmupSchedule

__all__ = ["LearnableAnchorGenerator", "LearnableDefaultBoxGenerator", "learn_anchors"]


class _Learnable:
    """What both learnable generators share: the parameters, the level split, the warm-up terms."""

    learned: LearnedAnchors
    counts: List[int]
    _gt_wh: Optional[torch.Tensor]

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

    def warmup_loss(self, weight: float = 1.0) -> torch.Tensor:
        """``weight`` times the warm-up terms for the ground truth of the last training forward
        (recorded by :func:`learn_anchors`' hook on the model's transform); 0 when there is none."""
        if self._gt_wh is None or self._gt_wh.shape[0] == 0:
            return self.learned.log_wh.sum() * 0.0
        return weight * self.learned.warmup_loss(self._gt_wh)

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


def _record_targets(gen: _Learnable, relative: bool):
    def hook(module: nn.Module, args: Any, output: Any) -> None:
        images, targets = output
        if not module.training or targets is None:
            gen.set_targets_wh(None)
            return
        boxes = torch.cat([t["boxes"].detach() for t in targets]) if targets else torch.zeros(0, 4)
        wh = boxes[:, 2:] - boxes[:, :2]
        if relative:
            h, w = images.tensors.shape[-2:]
            wh = wh / wh.new_tensor([float(w), float(h)])
        gen.set_targets_wh(wh[(wh > 0).all(1)])

    return hook


def _detach_proposals(module: nn.Module, args: Any, output: Any) -> Any:
    boxes, losses = output
    return [b.detach() for b in boxes], losses


def learn_anchors(
    model: nn.Module,
    init: Any = None,
    *,
    schedule: Optional[WarmupSchedule] = None,
    detach_proposals: bool = True,
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
    **kwargs
        Passed to :class:`~fastanchor.torch.LearnedAnchors`.

    Returns
    -------
    LearnableAnchorGenerator or LearnableDefaultBoxGenerator
        Installed in the model (so ``model.parameters()`` holds its ``learned.log_wh``). A forward
        hook on ``model.transform`` records each training batch's resized ground-truth sizes for
        its :meth:`warmup_loss`.
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
    if owner is rpn and detach_proposals:
        rpn.register_forward_hook(_detach_proposals)
    return gen
