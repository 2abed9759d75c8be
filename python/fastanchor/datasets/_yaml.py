"""Reading YAML files that someone else wrote (Ultralytics ``data.yaml``, YOLOv5 model files),
with bounds on what a small hostile file can make the reader build.

YAML aliases let a file of a few hundred bytes describe a structure of billions of nodes (each
alias repeats a whole subtree). PyYAML shares the aliased objects, so loading succeeds, and the
blow-up comes later, when the value is walked or printed. Here the document is first composed
into its node graph, which is the size of the file, and the graph is measured before any Python
value is built: its depth, and its size with every alias expanded. A document over the limits,
with a recursive alias, or nested too deeply to compose is refused with an
:class:`AnnotationError` naming the file.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import yaml

from .._fileio import read_text, sanitize
from ._boxes import AnnotationError

__all__ = ["load_yaml_file", "load_yaml_text", "MAX_YAML_BYTES", "MAX_YAML_DEPTH", "MAX_YAML_SIZE"]

#: Largest YAML file read (a data.yaml naming 20,000 classes is about 300 kB).
MAX_YAML_BYTES = 4 << 20
#: Deepest nesting of collections, with aliases expanded.
MAX_YAML_DEPTH = 64
#: Largest size of a document with every alias expanded: one per node plus the characters of
#: every scalar. Bounds what any consumer walking or printing the value can have to do.
MAX_YAML_SIZE = 20_000_000


class _TooDeep(Exception):
    pass


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that stops composing beyond :data:`MAX_YAML_DEPTH` levels (before
    the recursion of the composer can overflow the stack)."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:  # type: ignore[override]
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise _TooDeep(mark.line + 1 if mark is not None else None)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _measure(root: yaml.Node, path: str) -> None:
    """Refuse a node graph that is recursive, or too deep or too large once aliases are expanded.

    Iterative post-order walk with one memo per distinct node, so a graph of n nodes costs O(n)
    however much its aliases would expand.
    """
    size: Dict[int, int] = {}
    depth: Dict[int, int] = {}
    on_path = set()
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            if isinstance(node, yaml.ScalarNode):
                size[key], depth[key] = 1 + len(node.value), 0
                continue
            children = _children(node)
            size[key] = 1 + sum(size[id(c)] for c in children)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            line = node.start_mark.line + 1 if node.start_mark is not None else None
            if size[key] > MAX_YAML_SIZE:
                raise AnnotationError(
                    path,
                    line,
                    f"the YAML expands to more than {MAX_YAML_SIZE:,} nodes and characters (through its "
                    f"aliases): refused",
                )
            if depth[key] > MAX_YAML_DEPTH:
                raise AnnotationError(path, line, f"the YAML nests deeper than {MAX_YAML_DEPTH} levels: refused")
            continue
        if key in size:
            continue
        if key in on_path:
            line = node.start_mark.line + 1 if node.start_mark is not None else None
            raise AnnotationError(path, line, "the YAML holds a recursive alias (a value that contains itself)")
        on_path.add(key)
        stack.append((node, True))
        if not isinstance(node, yaml.ScalarNode):
            stack.extend((c, False) for c in _children(node) if id(c) not in size)


def _children(node: yaml.Node) -> List[Any]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return [item for pair in node.value for item in pair]  # a mapping: keys and values


def load_yaml_text(text: str, path: str) -> Any:
    """The value of the YAML document ``text`` (read from ``path``, named in errors), within the
    bounds above. Raises :class:`AnnotationError` naming the file (and line when known)."""
    loader = None
    try:
        loader = _BoundedLoader(text)  # the reader checks the characters here
        try:
            node = loader.get_single_node()
        except _TooDeep as exc:
            raise AnnotationError(
                path, exc.args[0], f"the YAML nests deeper than {MAX_YAML_DEPTH} levels: refused"
            ) from None
        if node is None:
            return None
        _measure(node, path)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        line = mark.line + 1 if mark is not None else None
        raise AnnotationError(path, line, f"not valid YAML ({sanitize(str(problem), 120)})") from None
    except (ValueError, OverflowError, RecursionError, MemoryError, TypeError) as exc:
        # a 5,000-digit integer (ValueError: int max str digits), a value no constructor takes
        if isinstance(exc, AnnotationError):
            raise
        raise AnnotationError(
            path, None, f"not a readable YAML value ({type(exc).__name__}: {sanitize(str(exc), 100)})"
        ) from None
    finally:
        if loader is not None:
            loader.dispose()


def load_yaml_file(path: str, limit: Optional[int] = None) -> Any:
    """The parsed content of a YAML file of at most ``limit`` bytes (:data:`MAX_YAML_BYTES`).

    Raises
    ------
    AnnotationError
        Naming the file (and line when known) when it is not UTF-8, not valid YAML, or beyond
        the bounds above.
    OSError
        It cannot be read, is not a regular file, or is larger than the limit.
    """
    try:
        text = read_text(path, MAX_YAML_BYTES if limit is None else limit)
    except UnicodeDecodeError as exc:
        raise AnnotationError(path, None, f"not a UTF-8 text file ({exc.reason})") from None
    return load_yaml_text(text, path)
