"""Files written so that a reader never sees half of one: write beside, then rename."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from autoseg.utils.errors import UserError


def atomic_write(path: str | Path, write: Callable[[str], Any]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path`` (named ``.<name>.<random>``),
    flush it to disk, then rename it into place, so that ``path`` is always either the old or the
    new complete file, even if the process is killed or the machine stops. The file gets the
    permissions of any new file (0666 less the umask), not the temporary file's private 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's umask (read by setting it, then setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_interrupted_writes(directory: str | Path, names: list[str]) -> None:
    """Delete the temporary files that :func:`atomic_write` left in ``directory`` for the files
    ``names`` when a process was killed while writing them."""
    for name in names:
        for leftover in Path(directory).glob(f".{name}.*"):
            leftover.unlink(missing_ok=True)


def write_json(data: Any, path: str | Path) -> None:
    """Write pretty JSON atomically."""
    text = json.dumps(data, indent=2) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def read_json(path: str | Path, what: str) -> Any:
    """The JSON content of ``path``; a missing or malformed file is a UserError naming ``what``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise UserError(f"{path} is not valid JSON ({exc})") from exc


def require_writable_folder(folder: str | Path, what: str) -> None:
    """Create ``folder`` (with its parents) if needed and prove that a file can be written in it,
    before any work whose result would go there; a UserError naming ``what`` (e.g. ``--out``)
    otherwise (a read-only place, a path under a file)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UserError(f"{what} {folder} cannot be written ({exc.strerror or exc}): choose a writable folder") \
            from None
