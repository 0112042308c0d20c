#!/usr/bin/env python
"""``autoseg predict`` in a checkout: see :mod:`autoseg.tools.predict` (``--help`` for the options)."""
from autoseg.cli import run_tool
from autoseg.tools.predict import main

if __name__ == "__main__":
    run_tool(main)
