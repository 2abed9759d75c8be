"""The common behaviour of the result objects (``KMeansResult``, ``FitnessResult``, ...), the rules
:class:`fastanchor.datasets.Boxes` follows too:

- they are frozen dataclasses; those that hold arrays are compared by identity (``eq=False``),
  so they are hashable and ``r == s`` is a plain bool (a value comparison of their arrays would
  be ambiguous), while those of numbers only (``FitnessResult``, ``CheckResult``) keep their
  value comparison and hash (``anchor_fitness(a, wh) == anchor_fitness(a, wh)``);
- the arrays they hold are read-only, so a result cannot be changed after it was returned;
- their ``repr`` shows the shape and dtype of the arrays with one entry per box (or per
  generation) instead of their values.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, ClassVar, Dict, Tuple

import numpy as np

__all__ = ["Result", "readonly"]


def readonly(a: np.ndarray) -> np.ndarray:
    """``a`` made read-only: in place when it owns its memory (as every array the library makes
    does), else a read-only copy (a view could still be written through its base)."""
    if a.flags.writeable:
        if not a.flags.owndata:
            a = a.copy()
        a.flags.writeable = False
    return a


class Result:
    """Base of the result dataclasses (declared ``@dataclass(frozen=True, eq=False, repr=False)``, or
    ``eq=True`` when every field is a number).

    ``__post_init__`` makes every array field read-only (the arrays of a list field, as the per-level
    anchors of ``ReadAnchors``, go into a new list); ``__repr__`` summarizes the fields named in
    ``_summarized`` as ``<ndarray (shape) dtype>``; ``__setstate__`` keeps the arrays read-only
    through a pickle.
    """

    #: Array fields shown by shape and dtype in the repr (one entry per box or per generation).
    _summarized: ClassVar[Tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]  # subclasses are dataclasses
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                object.__setattr__(self, f.name, readonly(value))
            elif isinstance(value, list) and any(isinstance(item, np.ndarray) for item in value):
                frozen = [readonly(item) if isinstance(item, np.ndarray) else item for item in value]
                object.__setattr__(self, f.name, frozen)

    def __setstate__(self, state: Dict[str, Any]) -> None:
        """Unpickling: numpy does not keep the read-only flag, so the arrays are frozen again."""
        for name, value in state.items():
            object.__setattr__(self, name, value)
        self.__post_init__()

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):  # type: ignore[arg-type]
            if not f.repr:
                continue
            value: Any = getattr(self, f.name)
            if f.name in self._summarized and isinstance(value, np.ndarray):
                parts.append(f"{f.name}=<ndarray {value.shape} {value.dtype}>")
            else:
                parts.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"
