"""Learnable anchors in log space: the parameters, the assignments, the two warm-up terms, the schedule
and the shift-free normalization layer."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .._evolve import AutoAnchorResult
from .._fitness import CheckResult, check_anchors, split_levels
from .._kmeans import KMeansResult
from .._validation import as_wh
from ..export import write_anchors

__all__ = [
    "LearnedAnchors",
    "ShiftFreeNorm",
    "ShiftFreeOutputs",
    "WarmupSchedule",
    "clustering_loss",
    "hard_assignment",
    "log_sq_distance",
    "regression_loss",
    "soft_assignment",
]

_METRICS = ("log", "iou")


# --- the pieces, as functions of log-space tensors -------------------------------------------------


def _check_log(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] != 2:
        raise ValueError(f"{name} must have shape (n, 2) (log width, log height), got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).any(1).nonzero()[0, 0])
        raise ValueError(f"{name} row {bad} is not finite: {x[bad].tolist()} (boxes must have positive sides)")


def log_sq_distance(log_anchors: torch.Tensor, log_gt: torch.Tensor) -> torch.Tensor:
    """The paper's ``T_ij``: squared distance in log space between every box and every anchor.

    Parameters
    ----------
    log_anchors : Tensor (A, 2)
        ``(log w, log h)`` of the anchors.
    log_gt : Tensor (N, 2)
        ``(log w, log h)`` of the ground-truth boxes.

    Returns
    -------
    Tensor (N, A)
        ``(log g_w - log a_w)^2 + (log g_h - log a_h)^2``.
    """
    d = log_gt[:, None, :] - log_anchors[None, :, :]
    return (d * d).sum(-1)


def _distance(log_anchors: torch.Tensor, log_gt: torch.Tensor, metric: str) -> torch.Tensor:
    if metric == "log":
        return log_sq_distance(log_anchors, log_gt)
    if metric == "iou":  # 1 - IoU of corner-aligned boxes
        a, g = log_anchors.exp(), log_gt.exp()
        inter = torch.minimum(g[:, None, 0], a[None, :, 0]) * torch.minimum(g[:, None, 1], a[None, :, 1])
        union = (g[:, 0] * g[:, 1])[:, None] + (a[:, 0] * a[:, 1])[None, :] - inter
        return 1.0 - inter / union
    raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")


def soft_assignment(
    log_anchors: torch.Tensor, log_gt: torch.Tensor, temperature: float = 0.5, metric: str = "log"
) -> torch.Tensor:
    """The soft assignment ``delta_ij = softmax_i(-dist(a_i, g_j) / T)`` over the anchors.

    The result is detached: an assignment is a constant of the step, as a detector's own matching
    is, so the anchors' gradient is the paper's closed form ``sum_j delta_ij (... - g_j)``.

    Parameters
    ----------
    log_anchors : Tensor (A, 2)
        Anchors, log sides.
    log_gt : Tensor (N, 2)
        Ground-truth boxes, log sides.
    temperature : float
        ``T > 0``; the smaller, the closer to the hard assignment.
    metric : {"log", "iou"}
        ``dist``: the squared distance in log space, or ``1 - IoU`` of the corner-aligned shapes.

    Returns
    -------
    Tensor (N, A)
        Rows sum to 1.
    """
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    with torch.no_grad():
        return torch.softmax(-_distance(log_anchors, log_gt, metric) / temperature, dim=1)


def hard_assignment(log_anchors: torch.Tensor, log_gt: torch.Tensor, metric: str = "log") -> torch.Tensor:
    """The hard assignment: ``delta_ij = 1`` for the nearest anchor of each box (lowest index on a tie).

    With ``metric="log"`` this is k-means' assignment in log space. Detached (see
    :func:`soft_assignment`). Returns an (N, A) one-hot tensor in ``log_anchors``' dtype.
    """
    with torch.no_grad():
        d = _distance(log_anchors, log_gt, metric)
        out = torch.zeros_like(d)
        if d.shape[0]:
            out.scatter_(1, d.argmin(1, keepdim=True), 1.0)
        return out


def _check_assignment(assignment: torch.Tensor, n: int, a: int) -> None:
    if assignment.shape != (n, a):
        raise ValueError(f"assignment must have shape (N, A) = ({n}, {a}), got {tuple(assignment.shape)}")


def regression_loss(
    log_anchors: torch.Tensor,
    log_gt: torch.Tensor,
    assignment: torch.Tensor,
    delta: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The paper's width/height regression term, averaged over the ground-truth boxes.

    ``L = (1/N) sum_j sum_i delta_ij ((D_ij^w + a_i^w - g_j^w)^2 + (D_ij^h + a_i^h - g_j^h)^2)``
    (all in log space). Its gradient on anchor k is ``(2/N) sum_j delta_kj (D_kj + a_k - g_j)``.

    Parameters
    ----------
    log_anchors : Tensor (A, 2)
        Anchors, log sides (the parameters).
    log_gt : Tensor (N, 2)
        Ground-truth boxes, log sides.
    assignment : Tensor (N, A)
        ``delta_ij`` (e.g. :func:`soft_assignment` or :func:`hard_assignment`).
    delta : Tensor (N, A, 2), optional
        The network's predicted offsets ``(D^w, D^h)`` for box j with anchor i. None: held at zero.

    Returns
    -------
    Tensor ()
        0 when there are no boxes.
    """
    n, a = log_gt.shape[0], log_anchors.shape[0]
    _check_assignment(assignment, n, a)
    if n == 0:
        return log_anchors.sum() * 0.0
    pred = log_anchors[None, :, :].expand(n, a, 2)
    if delta is not None:
        if delta.shape != (n, a, 2):
            raise ValueError(f"delta must have shape (N, A, 2) = ({n}, {a}, 2), got {tuple(delta.shape)}")
        pred = pred + delta
    r = pred - log_gt[:, None, :]
    return (assignment * (r * r).sum(-1)).sum() / n


def clustering_loss(log_anchors: torch.Tensor, log_gt: torch.Tensor, assignment: torch.Tensor) -> torch.Tensor:
    """The online-clustering term ``(1/(2N)) sum_ij delta_ij T_ij`` (multiply by lambda yourself).

    Its fixed point under the hard assignment is k-means in log space: each anchor at the
    geometric mean of its boxes. Returns 0 when there are no boxes.
    """
    n, a = log_gt.shape[0], log_anchors.shape[0]
    _check_assignment(assignment, n, a)
    if n == 0:
        return log_anchors.sum() * 0.0
    return (assignment * log_sq_distance(log_anchors, log_gt)).sum() / (2 * n)


# --- the schedule ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WarmupSchedule:
    """When each warm-up technique is active; every technique has its own switch.

    Parameters
    ----------
    soft : bool
        Soft-assignment warm-up: for ``soft_steps`` steps the assignment is
        :func:`soft_assignment`, then over ``handover_steps`` it hands over linearly to the hard one.
    soft_steps, handover_steps : int
        See ``soft``.
    temperature : float
        The soft assignment's temperature.
    clustering : bool
        Online-clustering warm-up: ``lambda(t) * clustering_loss`` is added, ``lambda`` falling
        linearly from ``cluster_weight`` at step 0 to 0 at ``cluster_steps``.
    cluster_weight : float
        ``lambda`` at step 0.
    cluster_steps : int
        See ``clustering``.
    metric : {"log", "iou"}
        The distance of both assignments.
    """

    soft: bool = True
    soft_steps: int = 1000
    handover_steps: int = 1000
    temperature: float = 0.5
    clustering: bool = True
    cluster_weight: float = 1.0
    cluster_steps: int = 2000
    metric: str = "log"

    def __post_init__(self) -> None:
        for name in ("soft_steps", "handover_steps", "cluster_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"WarmupSchedule.{name} must be an integer >= 0, got {v!r}")
        for name in ("temperature", "cluster_weight"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"WarmupSchedule.{name} must be a finite number >= 0, got {v!r}")
        if self.soft and self.temperature <= 0:
            raise ValueError("WarmupSchedule.temperature must be > 0 when the soft warm-up is on")
        if self.metric not in _METRICS:
            raise ValueError(f"WarmupSchedule.metric must be one of {_METRICS}, got {self.metric!r}")

    @classmethod
    def off(cls) -> WarmupSchedule:
        """No warm-up at all: hard assignment from the first step, no clustering term."""
        return cls(soft=False, clustering=False)

    def soft_weight(self, step: int) -> float:
        """The soft assignment's share in ``[0, 1]`` at ``step`` (the hard one has the rest)."""
        if not self.soft:
            return 0.0
        if step < self.soft_steps:
            return 1.0
        if self.handover_steps == 0:
            return 0.0
        return max(0.0, 1.0 - (step - self.soft_steps) / self.handover_steps)

    def cluster_lambda(self, step: int) -> float:
        """``lambda`` of the online-clustering term at ``step``."""
        if not self.clustering or self.cluster_steps == 0:
            return 0.0
        return self.cluster_weight * max(0.0, 1.0 - step / self.cluster_steps)


# --- the module ----------------------------------------------------------------------------------------


def _init_array(init: Any, k: Optional[int], wh: Any, jitter: float, seed: int) -> np.ndarray:
    if isinstance(init, (KMeansResult, AutoAnchorResult)):
        init = init.anchors
    if isinstance(init, str):
        if init not in ("identical", "uniform"):
            raise ValueError(
                f'init must be an (A, 2) array, a KMeansResult/AutoAnchorResult, "identical" or "uniform", got {init!r}'
            )
        if k is None or isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f'init="{init}" needs the number of anchors k >= 1, got k={k!r}')
        if wh is None:
            raise ValueError(f'init="{init}" needs the boxes wh (N, 2) to place the anchors')
        lg = np.log(as_wh(wh))
        rng = np.random.default_rng(seed)
        if init == "identical":
            out = np.repeat(lg.mean(0, keepdims=True), k, axis=0)
            if jitter > 0:
                out = out + rng.uniform(-jitter, jitter, size=out.shape)
        else:
            out = rng.uniform(lg.min(0), lg.max(0), size=(int(k), 2))
        return np.exp(out)
    a = np.asarray(init, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 2 or a.shape[0] < 1:
        raise ValueError(f"initial anchors must have shape (A, 2) with A >= 1, got {a.shape}")
    bad = ~(np.isfinite(a).all(1) & (a > 0).all(1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"initial anchor {i} is {a[i].tolist()}: sides must be finite and > 0")
    if k is not None and k != a.shape[0]:
        raise ValueError(f"k={k} but the initial anchors have {a.shape[0]} rows")
    return a


class LearnedAnchors(nn.Module):
    """A anchors held as trainable parameters ``(log w, log h)``, with the method's warm-ups.

    Parameters
    ----------
    init : array_like (A, 2), KMeansResult, AutoAnchorResult, "identical" or "uniform"
        The starting anchors in pixels (of the network input). "identical": all at the geometric
        mean of ``wh`` (plus a seeded jitter of at most ``jitter`` in log space: exactly equal
        anchors get equal gradients under the soft assignment and would never separate; in a
        detector the network's different offsets break that tie). "uniform": drawn uniformly
        (seeded) in log space over the range of ``wh``'s log sides.
    k : int, optional
        The number of anchors for "identical" and "uniform" (checked against an array).
    wh : array_like (N, 2), optional
        Box widths and heights for "identical" and "uniform".
    strides : sequence of float, optional
        The detection levels' strides; the anchors are then split over them in index order, A / L
        each (as YOLOv5 lays them out), for :meth:`levels` and :meth:`export`.
    schedule : WarmupSchedule, optional
        The warm-ups (default: ``WarmupSchedule()``; ``WarmupSchedule.off()`` for none).
    jitter : float
        See "identical".
    seed : int
        Seed of "identical"'s jitter and of "uniform".
    dtype : torch.dtype
        The parameters' dtype.

    Attributes
    ----------
    log_wh : nn.Parameter (A, 2)
        The parameters. ``forward()`` returns ``exp(log_wh)``.
    step : int
        The schedule's step; :meth:`advance` counts it up (saved in ``state_dict``).
    """

    def __init__(
        self,
        init: Any,
        k: Optional[int] = None,
        *,
        wh: Any = None,
        strides: Optional[Sequence[float]] = None,
        schedule: Optional[WarmupSchedule] = None,
        jitter: float = 1e-3,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        a = _init_array(init, k, wh, float(jitter), int(seed))
        self.log_wh = nn.Parameter(torch.as_tensor(np.log(a), dtype=dtype))
        if strides is not None:
            st = [float(s) for s in strides]
            if not st or any(not (math.isfinite(s) and s > 0) for s in st):
                raise ValueError(f"strides must be finite positive numbers, got {list(strides)}")
            if a.shape[0] % len(st):
                raise ValueError(f"{a.shape[0]} anchors cannot be split evenly over {len(st)} strides")
            self.strides: Optional[Tuple[float, ...]] = tuple(st)
        else:
            self.strides = None
        self.schedule = schedule if schedule is not None else WarmupSchedule()
        if not isinstance(self.schedule, WarmupSchedule):
            raise TypeError(f"schedule must be a WarmupSchedule, got {type(self.schedule).__name__}")
        self.register_buffer("_step", torch.zeros((), dtype=torch.int64))

    # -- values
    @property
    def num_anchors(self) -> int:
        return int(self.log_wh.shape[0])

    @property
    def step(self) -> int:
        return int(self._step)

    def advance(self, steps: int = 1) -> None:
        """Count ``steps`` training steps on the schedule (call once per optimizer step)."""
        self._step += int(steps)

    def forward(self) -> torch.Tensor:
        """The anchors' widths and heights ``exp(log_wh)`` (A, 2), differentiable."""
        return self.log_wh.exp()

    def numpy(self) -> np.ndarray:
        """The current anchors in pixels, (A, 2) float64, in index order."""
        return self.log_wh.detach().double().exp().cpu().numpy()

    def levels(self) -> List[np.ndarray]:
        """The current anchors split over the levels in index order (needs ``strides``)."""
        if self.strides is None:
            raise ValueError("these anchors have no strides: pass strides=... to LearnedAnchors")
        return list(np.split(self.numpy(), len(self.strides)))

    # -- the warm-up terms
    def _log_gt(self, gt_wh: Any) -> torch.Tensor:
        if isinstance(gt_wh, torch.Tensor):
            g = gt_wh.detach().to(self.log_wh.device, self.log_wh.dtype).reshape(-1, 2)
            if g.shape[0] and not bool(((g > 0) & torch.isfinite(g)).all()):
                bad = int((~((g > 0) & torch.isfinite(g)).all(1)).nonzero()[0, 0])
                raise ValueError(f"gt_wh row {bad} is {g[bad].tolist()}: box sides must be finite and > 0")
            return g.log()
        g = np.asarray(gt_wh, dtype=np.float64).reshape(-1, 2)
        if g.shape[0]:
            g = as_wh(g, "gt_wh")
        return torch.as_tensor(np.log(g), dtype=self.log_wh.dtype, device=self.log_wh.device)

    def assignment(self, gt_wh: Any, step: Optional[int] = None) -> torch.Tensor:
        """``delta`` (N, A) at ``step`` (default: the current step): the schedule's blend
        ``s * soft + (1 - s) * hard``."""
        return self._assign(self._log_gt(gt_wh), self.step if step is None else step)

    def _assign(self, lg: torch.Tensor, t: int) -> torch.Tensor:
        s = self.schedule.soft_weight(t)
        hard = hard_assignment(self.log_wh, lg, self.schedule.metric)
        if s == 0.0:
            return hard
        soft = soft_assignment(self.log_wh, lg, self.schedule.temperature, self.schedule.metric)
        return soft if s == 1.0 else s * soft + (1.0 - s) * hard

    def loss(self, gt_wh: Any, delta: Optional[torch.Tensor] = None, step: Optional[int] = None) -> torch.Tensor:
        """The anchors' loss for a plain loop: ``L(delta) + lambda(t) * clustering_loss(delta)``.

        Parameters
        ----------
        gt_wh : array_like or Tensor (N, 2)
            The batch's ground-truth widths and heights, in the anchors' units (pixels).
        delta : Tensor (N, A, 2), optional
            The network's log-space offsets for box j with anchor i (None: zero).
        step : int, optional
            The schedule step (default: :attr:`step`).
        """
        t = self.step if step is None else step
        lg = self._log_gt(gt_wh)
        d = self._assign(lg, t)
        out = regression_loss(self.log_wh, lg, d, delta)
        lam = self.schedule.cluster_lambda(t)
        if lam > 0:
            out = out + lam * clustering_loss(self.log_wh, lg, d)
        return out

    def warmup_loss(self, gt_wh: Any, step: Optional[int] = None, delta: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The warm-up terms to add to a detector's own loss (its matching is the hard part):
        ``s(t) * L(soft delta, D) + lambda(t) * clustering_loss(delta(t))``. 0 (still
        differentiable) once both warm-ups are over.

        Parameters
        ----------
        gt_wh : array_like or Tensor (N, 2)
            The batch's ground-truth widths and heights, in the anchors' units.
        step : int, optional
            The schedule step (default: :attr:`step`).
        delta : Tensor (N, A, 2), optional
            The network's predicted log-space offsets ``D_ij`` for box j with anchor i (at the
            box's cell), used by the soft-assignment term ``L_ij = (D_ij + a_i - g_j)^2``; the
            clustering term ``T_ij`` uses the anchors only. None: offsets taken as zero. Pass
            them detached to leave the network's training to the detector's own loss (the
            adapters do).
        """
        t = self.step if step is None else step
        s = self.schedule.soft_weight(t)
        lam = self.schedule.cluster_lambda(t)
        out = self.log_wh.sum() * 0.0
        if s == 0.0 and lam == 0.0:
            return out
        lg = self._log_gt(gt_wh)
        if lg.shape[0] == 0:
            return out
        if delta is not None:
            delta = delta.to(self.log_wh.dtype)
        if s > 0:
            soft = soft_assignment(self.log_wh, lg, self.schedule.temperature, self.schedule.metric)
            out = out + s * regression_loss(self.log_wh, lg, soft, delta)
        if lam > 0:
            out = out + lam * clustering_loss(self.log_wh, lg, self._assign(lg, t))
        return out

    def hard_gradient_scale(self, step: Optional[int] = None) -> float:
        """The share of the detector's own (hard-assignment) gradient the anchors receive: ``1 - s(t)``."""
        return 1.0 - self.schedule.soft_weight(self.step if step is None else step)

    def scaled(self, scale: float) -> torch.Tensor:
        """``exp(log_wh)`` whose gradient to ``log_wh`` is multiplied by ``scale`` (value unchanged)."""
        a = self.log_wh
        if scale == 1.0:
            return a.exp()
        return (a.detach() + scale * (a - a.detach())).exp()

    # -- export and checks
    def export(
        self,
        path: str,
        *,
        strides: Optional[Sequence[float]] = None,
        template: Optional[str] = None,
        decimals: int = 0,
        header: str = "",
    ) -> str:
        """Write the current anchors with :func:`fastanchor.export.write_anchors`; returns the format.

        With this module's ``strides`` the levels are its own (index order, as the model uses
        them); otherwise ``strides`` must be given and the anchors are split by area
        (:func:`fastanchor.split_levels`).
        """
        if strides is None:
            if self.strides is None:
                raise ValueError("pass strides=... (these anchors have none)")
            return write_anchors(path, self.levels(), self.strides, template=template, decimals=decimals, header=header)
        return write_anchors(
            path, split_levels(self.numpy(), strides), strides, template=template, decimals=decimals, header=header
        )

    def check(self, wh: Any, *, thr: float = 4.0, bpr_threshold: float = 0.98) -> CheckResult:
        """:func:`fastanchor.check_anchors` of the current anchors against boxes ``wh`` (same units)."""
        return check_anchors(self.numpy(), wh, thr=thr, bpr_threshold=bpr_threshold)

    def extra_repr(self) -> str:
        return f"num_anchors={self.num_anchors}, strides={self.strides}, step={self.step}"


# --- the shift-free normalization --------------------------------------------------------------------


class ShiftFreeNorm(nn.Module):
    """Batch normalization without the shift, for the network's ``(D^w, D^h)`` outputs.

    ``y = gamma * (x - mean) / sqrt(var + eps)`` per channel, with batch statistics in training and
    running ones in evaluation, as :class:`torch.nn.BatchNorm1d`, but without the learnable shift
    ``beta``: a shift would duplicate the anchors (both add a constant to the log side), so the
    anchors alone carry the mean offset and learn faster.

    Parameters
    ----------
    num_features : int
        Channels (2 for ``D^w, D^h``).
    dim : int
        The axis of ``x`` that holds the channels (default -1: ``x`` is ``(..., 2)``).
    eps, momentum
        As in :class:`torch.nn.BatchNorm1d`.
    """

    def __init__(self, num_features: int = 2, *, dim: int = -1, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.num_features = int(num_features)
        self.dim = int(dim)
        self.eps, self.momentum = float(eps), float(momentum)
        self.weight = nn.Parameter(torch.ones(self.num_features))
        self.register_buffer("running_mean", torch.zeros(self.num_features))
        self.register_buffer("running_var", torch.ones(self.num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[self.dim] != self.num_features:
            raise ValueError(
                f"ShiftFreeNorm expects {self.num_features} channels on axis {self.dim}, got shape {tuple(x.shape)}"
            )
        moved = x.movedim(self.dim, -1)
        flat = moved.reshape(-1, self.num_features)
        if self.training and flat.shape[0] < 2:
            raise ValueError("ShiftFreeNorm needs at least 2 values per channel in training")
        y = nn.functional.batch_norm(
            flat, self.running_mean, self.running_var, self.weight, None, self.training, self.momentum, self.eps
        )
        return y.reshape(moved.shape).movedim(-1, self.dim)

    def extra_repr(self) -> str:
        return f"{self.num_features}, dim={self.dim}, eps={self.eps}, momentum={self.momentum}"


# --- putting the normalization on a detector's offset outputs ------------------------------------------


def _normalize_channels(norm: ShiftFreeNorm, ys: Sequence[torch.Tensor], channels: torch.Tensor, dim: int) -> list:
    """``ys`` with their ``channels`` (on axis ``dim``) normalized by ``norm``, with statistics over
    every position of every tensor of ``ys`` together (e.g. all levels of a shared head)."""
    c = int(channels.numel())
    idx = channels.to(ys[0].device)
    parts = [y.index_select(dim, idx).movedim(dim, -1) for y in ys]
    flat = torch.cat([p.reshape(-1, c) for p in parts])
    normed = norm(flat).split([p.numel() // c for p in parts])
    return [y.index_copy(dim, idx, n.reshape(p.shape).movedim(-1, dim)) for y, p, n in zip(ys, parts, normed)]


class _Wrapper(nn.Module):
    """A detector's layer with a :class:`ShiftFreeNorm` on the offset channels of its output.
    Attributes it does not have are read from the wrapped layer (``bias``, ``compute_loss``...),
    so the framework's code that reaches into the layer keeps working."""

    def __init__(self, inner: nn.Module, channels: Sequence[int]) -> None:
        super().__init__()
        self.inner = inner
        self.norm = ShiftFreeNorm(len(channels))
        self.register_buffer("channels", torch.as_tensor(list(channels), dtype=torch.long), persistent=False)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__.get("_modules", {}).get("inner")
            if inner is None or name.startswith("__"):
                raise
            return getattr(inner, name)


def _offset_channels(anchors: int, per_anchor: int, first: int) -> List[int]:
    """The channels ``(D_w, D_h)`` of every anchor in an output laid out (anchor, per_anchor)."""
    return [a * per_anchor + first + j for a in range(anchors) for j in (0, 1)]


class ShiftFreeOutputs(_Wrapper):
    """A layer whose output ``(B, C, ...)`` has its offset channels normalized without shift (one
    :class:`ShiftFreeNorm` over the 2 x anchors channels ``channels`` on axis ``dim``).

    Parameters
    ----------
    layer : nn.Module
        E.g. a YOLOv5 ``Detect.m[i]`` convolution or one level of SSD's regression head.
    channels : sequence of int
        The output channels holding ``D_w, D_h`` (e.g. ``a * (5 + nc) + 2, + 3`` for YOLOv5).
    dim : int
        The channel axis of the output.
    """

    def __init__(self, layer: nn.Module, channels: Sequence[int], dim: int = 1) -> None:
        super().__init__(layer, channels)
        self.dim = int(dim)

    def forward(self, *args: Any) -> torch.Tensor:
        return _normalize_channels(self.norm, [self.inner(*args)], self.channels, self.dim)[0]
