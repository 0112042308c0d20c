"""Run directories, atomic checkpoints and RNG state, so that a killed run resumes."""
from __future__ import annotations

import pickle
import random
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from autoseg.utils.errors import UserError
from autoseg.engine.run_lock import LOCK_NAME
from autoseg.utils.files import atomic_write

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(state: dict[str, Any], path: str | Path,
                    beside: Callable[[Path], None] | None = None) -> None:
    """``torch.save`` the state atomically (see :func:`~autoseg.utils.files.atomic_write`).

    ``beside(new_file)`` is called with the complete new checkpoint before it replaces ``path``,
    to write the files that go with it (an architecture, a copy as ``best.pt``): a process killed
    at any moment leaves them matching either the old checkpoint or the new one, which a resumed
    run then writes again. A failed write (a full disk, a directory without write permission)
    leaves the previous checkpoint intact and is a UserError that says so.
    """
    path = Path(path)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as file:  # through a Python file, so that a failed write is an OSError
            torch.save(state, file)
        if beside is not None:
            beside(Path(tmp))

    try:
        atomic_write(path, write)
    except OSError as exc:
        kept = "the previous checkpoint there is intact" if path.is_file() else "no checkpoint was written"
        raise UserError(f"could not write {path} ({exc.strerror or exc}): {kept}; free disk space or make "
                        f"{path.parent} writable, then continue with --resume {path.parent}") from exc


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint file, or ``checkpoint.pt`` inside a run directory.

    Only tensors and plain Python data are unpickled (``torch.load(weights_only=True)``): a file
    that needs anything else, which could run code when loaded, is refused with a UserError.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}; pass a run directory of a finished epoch or a .pt file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise _unloadable(path, exc) from None


def _unloadable(path: Path, exc: Exception) -> UserError:
    """The one-line error for a checkpoint that did not load; one that needs more than tensors and
    plain data (a pickled global, which could run code) is refused as unsafe."""
    text = str(exc)
    needed = re.search(r"GLOBAL (\S+)", text)
    if isinstance(exc, pickle.UnpicklingError) and needed:
        return UserError(f"refused to load {path}: it needs {needed.group(1)}, and loading it could run arbitrary "
                         "code (autoseg checkpoints hold only tensors and plain data); use only checkpoints "
                         "written by autoseg, or by a source you trust")
    unpickler = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    reason = unpickler.group(1) if unpickler else (text.splitlines() or [""])[0]
    return UserError(f"{path} is not a readable autoseg checkpoint ({type(exc).__name__}: {reason.strip()})")


def check_run_dir(out: str | Path, resume: bool) -> Path:
    """The run directory to write, checked: a resumed one must hold the run's ``config.yaml`` (and
    usually a checkpoint, see :func:`resumed_state`), a new one must not exist or be empty (a run
    directory is never overwritten). Creates nothing."""
    out = Path(out)
    if resume:
        if not (out / "config.yaml").is_file():
            raise UserError(f"cannot resume: {out / 'config.yaml'} does not exist; pass the directory a search or "
                            "retrain run wrote")
        return out
    if out.exists() and (not out.is_dir() or any(path.name != LOCK_NAME for path in out.iterdir())):
        raise UserError(f"run directory {out} already exists and is not empty; pass --resume {out} to continue "
                        "it, or choose another --out")
    return out


def resumed_state(run_dir: Path) -> dict[str, Any] | None:
    """The checkpoint a resumed run continues from; None when the run was stopped before it wrote
    its first checkpoint, which then starts over from its saved config."""
    return load_checkpoint(run_dir) if (run_dir / CHECKPOINT_NAME).is_file() else None


def rng_state() -> dict[str, Any]:
    """The state of every random number generator the loops use."""
    numpy_state = np.random.get_state(legacy=False)  # stored as plain data, which loads under weights_only
    numpy_state["state"]["key"] = numpy_state["state"]["key"].tolist()
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else CPU; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise UserError(f"--device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)
