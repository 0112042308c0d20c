"""Where a measurement came from: the command, the code version, the machine, torch and the date,
recorded beside the figures a tool writes (a ground-truth table's parts, a scoring's results)."""
from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

import autoseg


def git_version() -> str | None:
    """``git describe --always --dirty`` of the checkout autoseg runs from, or None outside one."""
    try:
        done = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=Path(autoseg.__file__).parent,
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(command: list[str], torch_threads: int, jobs: int = 1) -> dict[str, Any]:
    """The record of a measurement made now by ``command`` (the words of the command line, tool
    name included) with ``jobs`` processes of ``torch_threads`` torch threads each: ``command``,
    ``autoseg`` (package version), ``code_version`` (:func:`git_version`), ``date`` (UTC), ``machine``
    (CPU, cores, threads, jobs, GPU, platform), ``torch`` and ``python`` versions."""
    return {"command": shlex.join(command), "autoseg": autoseg.__version__, "code_version": git_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch_threads, "jobs": jobs,
                        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                        "platform": platform.platform()},
            "torch": torch.__version__, "python": sys.version.split()[0]}
