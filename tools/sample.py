#!/usr/bin/env python
"""``autoseg sample`` in a checkout: see :mod:`autoseg.tools.sample` (``--help`` for the options)."""
from autoseg.cli import run_tool
from autoseg.tools.sample import main

if __name__ == "__main__":
    run_tool(main)
