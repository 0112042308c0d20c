#!/usr/bin/env python
"""``autoseg profile_model`` in a checkout: see :mod:`autoseg.tools.profile_model` (``--help`` for the options)."""
from autoseg.cli import run_tool
from autoseg.tools.profile_model import main

if __name__ == "__main__":
    run_tool(main)
