#!/usr/bin/env python
"""``autoseg benchmark_search`` in a checkout: see :mod:`autoseg.tools.benchmark_search` (``--help`` for the
options)."""
from autoseg.cli import run_tool
from autoseg.tools.benchmark_search import main

if __name__ == "__main__":
    run_tool(main)
