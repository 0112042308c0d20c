#!/usr/bin/env python
"""``autoseg retrain`` in a checkout: see :mod:`autoseg.tools.retrain` (``--help`` for the options)."""
from autoseg.cli import run_tool
from autoseg.tools.retrain import main

if __name__ == "__main__":
    run_tool(main)
