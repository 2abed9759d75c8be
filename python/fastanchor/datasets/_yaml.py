"""Reading dataset YAML files (Ultralytics ``data.yaml``) with PyYAML."""

from __future__ import annotations

from typing import Any

import yaml

from ._boxes import AnnotationError

__all__ = ["load_yaml_file"]


def load_yaml_file(path: str) -> Any:
    """The parsed content of a YAML file. Raises AnnotationError with the file (and line) when
    it cannot be parsed."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as exc:
        raise AnnotationError(path, None, f"not a UTF-8 text file ({exc.reason})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise AnnotationError(path, mark.line + 1 if mark is not None else None, f"not valid YAML ({problem})") from None
