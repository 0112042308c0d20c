#!/usr/bin/env python
"""``autoseg gpu_check`` in a checkout: see :mod:`autoseg.tools.gpu_check` (``--help`` for the options)."""
from autoseg.cli import run_tool
from autoseg.tools.gpu_check import main

if __name__ == "__main__":
    run_tool(main)
