"""Sphinx configuration of the autoseg documentation site.

Build it with ``pip install -e ".[docs]"`` and ``sphinx-build -W -b html docs docs/_build/html``.
The tool pages, the configuration reference, the dataset list, the API pages and the figures are
generated from the code at build time by ``_ext/autoseg_docs.py``.
"""
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path[:0] = [str(DOCS / "_ext"), str(DOCS.parent)]

project = "autoseg"
author = "autoseg contributors"
copyright = "autoseg contributors"

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "autoseg_docs"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "_generated/*.md", "tools/prose", "README.md"]

myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 4

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_inherit_docstrings = False  # torch's docstrings are not ours to build
autodoc_default_options = {"members": True}
napoleon_numpy_docstring = False

html_theme = "furo"
html_title = "autoseg"
