#!/usr/bin/env python
"""``autoseg score_search`` in a checkout: see :mod:`autoseg.tools.score_search` (``--help`` for the options)."""
from autoseg.cli import run_tool
from autoseg.tools.score_search import main

if __name__ == "__main__":
    run_tool(main)
