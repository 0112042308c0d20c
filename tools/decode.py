#!/usr/bin/env python
"""``autoseg decode`` in a checkout: see :mod:`autoseg.tools.decode` (``--help`` for the options)."""
from autoseg.cli import run_tool
from autoseg.tools.decode import main

if __name__ == "__main__":
    run_tool(main)
