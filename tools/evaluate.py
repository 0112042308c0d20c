#!/usr/bin/env python
"""``autoseg evaluate`` in a checkout: see :mod:`autoseg.tools.evaluate` (``--help`` for the options)."""
from autoseg.cli import run_tool
from autoseg.tools.evaluate import main

if __name__ == "__main__":
    run_tool(main)
