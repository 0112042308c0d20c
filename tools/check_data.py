#!/usr/bin/env python
"""``autoseg check_data`` in a checkout: see :mod:`autoseg.tools.check_data` (``--help`` for the options)."""
from autoseg.cli import run_tool
from autoseg.tools.check_data import main

if __name__ == "__main__":
    run_tool(main)
