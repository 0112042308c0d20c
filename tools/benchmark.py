#!/usr/bin/env python
"""``autoseg benchmark`` in a checkout: see :mod:`autoseg.tools.benchmark` (``--help`` for the options)."""
from autoseg.cli import run_tool
from autoseg.tools.benchmark import main

if __name__ == "__main__":
    run_tool(main)
