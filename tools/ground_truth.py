#!/usr/bin/env python
"""``autoseg ground_truth`` in a checkout: see :mod:`autoseg.tools.ground_truth` (``--help`` for the options)."""
from autoseg.cli import run_tool
from autoseg.tools.ground_truth import main

if __name__ == "__main__":
    run_tool(main)
