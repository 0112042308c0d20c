#!/usr/bin/env python
"""``autoseg export`` in a checkout: see :mod:`autoseg.tools.export` (``--help`` for the options)."""
from autoseg.cli import run_tool
from autoseg.tools.export import main

if __name__ == "__main__":
    run_tool(main)
