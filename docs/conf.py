"""Sphinx configuration of the fastanchor documentation (``sphinx-build -W -b html docs docs/_build/html``)."""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

import fastanchor  # noqa: E402  (the installed package: the docs describe what users get)

project = "fastanchor"
author = "The fastanchor developers"
copyright = "2026, The fastanchor developers"
release = fastanchor.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "fastanchor_figures",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "_generated/*.txt", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []

# Pages written by other contributors (docs/guides/*, docs/design.md) are picked up by toctree
# globs in index.md; fastanchor_figures drops a glob that matches no page yet.

myst_enable_extensions = ["colon_fence", "deflist", "dollarmath", "fieldlist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "none"  # numpydoc's Parameters sections say it, in words
autodoc_default_options = {"members": False}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()

# Only the examples marked as doctests run (every page's ```{doctest} blocks); docstrings'
# illustrative `>>>` lines with placeholder data are shown, not run.
doctest_test_doctest_blocks = ""
doctest_global_setup = """
import numpy as np
import fastanchor
np.set_printoptions(precision=4, suppress=True)
"""

html_theme = "alabaster"
html_static_path = ["_static"]
html_title = f"fastanchor {release}"
html_theme_options = {
    "description": "Fast, exact, reproducible anchor boxes for object detectors",
    "fixed_sidebar": True,
    "page_width": "1180px",
    "sidebar_width": "230px",
    "body_max_width": "none",
    "show_relbars": True,
}
html_sidebars = {"**": ["about.html", "navigation.html", "searchbox.html"]}
html_show_sourcelink = False
