#!/usr/bin/env python
"""``autoseg search`` in a checkout: see :mod:`autoseg.tools.search` (``--help`` for the options)."""
from autoseg.cli import run_tool
from autoseg.tools.search import main

if __name__ == "__main__":
    run_tool(main)
