"""``import fastanchor`` gives the lazy submodules and imports no framework."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CODE = """
import sys
import fastanchor
exp = fastanchor.export
assert exp.read_anchors is fastanchor.export.read_anchors
integ = fastanchor.integrations
assert set(integ.SUBMODULES) <= set(dir(integ))
assert "export" in dir(fastanchor) and "integrations" in dir(fastanchor) and "plot" in dir(fastanchor)
y = fastanchor.integrations.yolov5
t = fastanchor.integrations.torchvision
m = fastanchor.integrations.mmdet
heavy = sorted(name for name in ("torch", "torchvision", "yolov5", "mmengine", "mmdet", "mmyolo", "matplotlib")
               if name in sys.modules)
print(",".join(heavy))
"""


def test_lazy_submodules_import_no_framework():
    import fastanchor

    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(Path(fastanchor.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    )
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=False, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"importing the adapters imported {out.stdout.strip()}"


def test_unknown_attribute():
    import fastanchor

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        fastanchor.nope
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        fastanchor.integrations.nope
