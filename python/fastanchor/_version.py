"""The package version: the single source (pyproject.toml and CMakeLists.txt read it from here)."""

from __future__ import annotations

__version__ = "0.1.0"
