"""A run owns its directory: created exclusively, and locked for as long as the run lives.

Two processes writing one run directory would mix their checkpoints, histories and TensorBoard
logs. A new run therefore creates its directory with ``os.mkdir`` (an existing one is taken only
when it is empty), and every run, new or resumed, then holds an exclusive ``flock`` on
``RUN/.run.lock`` until it ends. The lock file names its holder (process id, host, start time)
for the message that refuses a second process. The kernel drops the lock when its process dies,
however it dies, so the lock of a killed run is stale by construction and the next run takes it
over; the file stays in the directory, holding the last holder's name.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import IO

from autoseg.utils.errors import UserError

LOCK_NAME = ".run.lock"


class RunLock:
    """The exclusive lock of one run directory, held by this process until :meth:`release`."""

    def __init__(self, run_dir: Path, file: IO[str]) -> None:
        self.run_dir = run_dir
        self._file: IO[str] | None = file

    @classmethod
    def take(cls, run_dir: Path) -> RunLock:
        """Lock ``run_dir`` (which must exist) for this process; a directory that another live
        process holds is a UserError naming that process."""
        path = run_dir / LOCK_NAME
        try:
            file = open(path, "a+")
        except OSError as exc:
            raise UserError(f"cannot lock the run directory {run_dir} ({exc.strerror or exc}): make it "
                            "writable") from None
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read()
            file.close()
            raise UserError(f"run directory {run_dir} is in use by {_describe(holder)}: a second process would mix "
                            "its checkpoints and logs into that run's; wait until it ends (or stop it), or choose "
                            "another --out") from None
        file.seek(0)
        file.truncate()
        file.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                               "since": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
        file.flush()
        return cls(run_dir, file)

    def release(self) -> None:
        """Let other processes have the directory (again a no-op once released)."""
        if self._file is not None:
            self._file.close()  # closing the file drops the flock
            self._file = None


def _describe(holder: str) -> str:
    """``process 1234 on host h (since ...)`` from a lock file's text."""
    try:
        fields = json.loads(holder)
        return f"process {fields['pid']} on host {fields['host']} (since {fields['since']})"
    except (ValueError, KeyError, TypeError):
        return "another process"


def claim_new_run_dir(run_dir: Path) -> RunLock:
    """Create ``run_dir`` exclusively (its parents as needed) and lock it. An existing directory
    is taken only when it is empty (it may hold a lock file left by no live process); one that
    another process created and filled or holds meanwhile is a UserError."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(run_dir)
    except FileExistsError:
        if not run_dir.is_dir():
            raise UserError(f"{run_dir} is a file: choose another --out") from None
    lock = RunLock.take(run_dir)
    if any(path.name != LOCK_NAME for path in run_dir.iterdir()):
        lock.release()
        raise UserError(f"run directory {run_dir} already exists and is not empty (another process created it "
                        f"meanwhile?); pass --resume {run_dir} to continue it, or choose another --out")
    return lock
